//! Progress of a long analysis on a terminal: bytes and packets read, flows open, violations
//! so far, rewritten in place a few times a second on stderr. Silent when stderr is not a
//! terminal (a pipe, a file, CI) or when turned off.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use monitor_agent::pipeline::Pipeline;

/// How often the line is rewritten.
const EVERY: Duration = Duration::from_millis(250);

/// The progress line.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
    shown: bool,
    calls: u32,
}

impl Progress {
    /// Shown when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        use std::io::IsTerminal as _;
        let now = Instant::now();
        Self {
            enabled: enabled && std::io::stderr().is_terminal(),
            started: now,
            last: now,
            shown: false,
            calls: 0,
        }
    }

    /// Called once per packet: true when the line is due for a rewrite ([`Progress::show`]).
    pub fn due(&mut self) -> bool {
        if !self.enabled {
            return false;
        }
        // Looking at the clock on every packet would cost more than the rest of this.
        self.calls = self.calls.wrapping_add(1);
        self.calls.is_multiple_of(1024) && self.last.elapsed() >= EVERY
    }

    /// Rewrites the line with where the analysis is.
    pub fn show(&mut self, read: u64, total: u64, packets: u64, flows: usize, p: &Pipeline) {
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let pct = if total > 0 {
            read as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[Kanalyze: {:.1}% ({:.0} of {:.0} MB, {:.0} MB/s), {} packets, {} flows open, {} violations",
            pct,
            read as f64 / 1e6,
            total as f64 / 1e6,
            read as f64 / secs / 1e6,
            packets,
            flows,
            p.violations_written()
        );
        let _ = err.flush();
        self.shown = true;
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }
}
