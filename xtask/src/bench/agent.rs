//! The bench's `monitor agent` on [`crate::harness`] (K: `--drain-only`; F: full, with the
//! bench policy), in the root netns, and what its stdout is counted for: `http` records of the
//! load, `loss` records, the drain-only agent's count lines, violations with their arrival
//! times.
//!
//! The reader thread does as little as possible per line: an `http` record is only counted (a
//! prefix and a substring test, no parsing: at wrk's full rate a parsing reader is the slowest
//! stage, and the agent would block on its pipe and lose ring-buffer records); every other
//! line is kept raw with its arrival time and parsed on the bench's thread when it asks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use super::Variant;
use super::measure::proc_usage;
use super::scenario::ROUTE;
use crate::harness::{self, Process};
use crate::lab::Lab;
use crate::util;

/// What the stdout reader thread hands over.
#[derive(Debug, Default)]
struct Shared {
    /// `http` records of the load's route.
    http_load: AtomicU64,
    /// Lines that are not `http` records, raw, with their `CLOCK_MONOTONIC` arrival time.
    pending: Mutex<Vec<(f64, String)>>,
}

/// What the other lines said, parsed on the bench's thread.
#[derive(Debug, Default)]
struct Parsed {
    /// Sum of `count` over `loss` records.
    losses: u64,
    /// Latest drain-only line: (line number, ring records, kernel losses).
    drain: (u64, u64, u64),
    /// Violations: (CLOCK_MONOTONIC arrival, route).
    violations: Vec<(f64, String)>,
}

/// Counts at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    /// The agent's CPU time so far, s.
    pub(super) cpu_s: f64,
    /// Its peak RSS, KiB.
    pub(super) rss_peak_kib: u64,
    /// Ring-buffer records drained (drain-only agent).
    pub(super) ring_records: u64,
    /// `http` records of the load.
    pub(super) http_load: u64,
    /// `loss` records' counts plus the drain-only agent's kernel losses.
    pub(super) losses: u64,
    /// How many drain-only count lines have arrived.
    pub(super) drain_line: u64,
}

/// A running `monitor agent`; stopped (SIGINT, then SIGKILL after 5 s) on drop.
#[derive(Debug)]
pub(super) struct BenchAgent {
    process: Process,
    variant: Variant,
    shared: Arc<Shared>,
    parsed: Parsed,
    log: PathBuf,
}

impl BenchAgent {
    /// Starts the agent of `variant` on the lab's root cgroup and waits until it is attached
    /// (and, drain-only, until its first count line).
    pub(super) fn start(bin: &Path, lab: &Lab, policy: &Path, variant: Variant) -> Result<Self> {
        let ready = lab.run_dir().join("agent-ready");
        let log = lab.run_dir().join("agent.log");
        let spawn = harness::agent(bin, lab.inventory_path(), lab.attach_cgroup(), &ready);
        let spawn = match variant {
            Variant::K => spawn.arg("--drain-only"),
            _ => spawn.arg("--policy").arg(policy),
        };
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let load = format!("\"path\":\"{ROUTE}\"");
        let process = spawn
            .stdout_each(move |line| {
                if record_kind(line) == Some("http") {
                    if line.contains(&load) {
                        s.http_load.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                let arrived = util::monotonic_s();
                if let Ok(mut p) = s.pending.lock() {
                    p.push((arrived, line.to_owned()));
                }
            })
            .stderr_file(&log)
            .interactive()
            .on_drop(libc::SIGINT, Duration::from_secs(5), None)
            .spawn()?;
        let mut agent = Self {
            process,
            variant,
            shared,
            parsed: Parsed::default(),
            log,
        };
        if let Err(e) = agent.process.wait_ready() {
            let log = util::tail_file(&agent.log, 30);
            return Err(e.into_error(
                |st| format!("the agent exited ({st}) before attaching:\n{log}"),
                |t| format!("the agent did not attach within {} s:\n{log}", t.as_secs()),
            ));
        }
        // A drain-only agent prints its first count line right away.
        if variant == Variant::K {
            agent.settle(Duration::ZERO)?;
        }
        Ok(agent)
    }

    /// Its PID.
    pub(super) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Parses the lines the reader has kept since the last call.
    fn digest(&mut self) {
        let pending = self
            .shared
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        let p = &mut self.parsed;
        for (arrived, line) in pending {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match v["kind"].as_str() {
                Some("violation") => {
                    let route = v["route"].as_str().unwrap_or_default().to_owned();
                    p.violations.push((arrived, route));
                }
                Some("loss") => p.losses += v["count"].as_u64().unwrap_or(1),
                Some("drain-stats") => {
                    let k = &v["kernel"];
                    let losses = ["ringbuf-full", "flow-table-full", "capture-failed"]
                        .iter()
                        .map(|n| k[n].as_u64().unwrap_or(0))
                        .sum();
                    p.drain = (p.drain.0 + 1, v["records"].as_u64().unwrap_or(0), losses);
                }
                _ => {}
            }
        }
    }

    /// The counts now (the agent's CPU time and RSS are read first).
    pub(super) fn snapshot(&mut self) -> Result<Snapshot> {
        let (cpu_s, rss_peak_kib) = proc_usage(self.pid())?;
        self.digest();
        let drain = self.parsed.drain;
        Ok(Snapshot {
            cpu_s,
            rss_peak_kib,
            ring_records: drain.1,
            http_load: self.shared.http_load.load(Ordering::Relaxed),
            losses: self.parsed.losses + drain.2,
            drain_line: drain.0,
        })
    }

    /// The violations so far: (arrival, route).
    pub(super) fn violations(&mut self) -> &[(f64, String)] {
        self.digest();
        &self.parsed.violations
    }

    /// Waits `d`, then (drain-only) for a count line printed after that; returns the counts.
    pub(super) fn settle(&mut self, d: Duration) -> Result<Snapshot> {
        std::thread::sleep(d);
        let seen = self.snapshot()?.drain_line;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let s = self.snapshot()?;
            if self.variant != Variant::K || s.drain_line > seen || (seen == 0 && s.drain_line > 0)
            {
                return Ok(s);
            }
            if let Some(st) = self.process.exited()? {
                bail!(
                    "the agent exited ({st}):\n{}",
                    util::tail_file(&self.log, 30)
                );
            }
            if Instant::now() > deadline {
                bail!("the drain-only agent printed no count line for 3 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, wait (SIGKILL after 10 s); fails if it did not exit cleanly.
    pub(super) fn stop(mut self) -> Result<()> {
        let status = self
            .process
            .stop(libc::SIGINT, Duration::from_secs(10), || {})?;
        self.process.join_output();
        if !status.success() {
            bail!(
                "the agent exited with {status}:\n{}",
                util::tail_file(&self.log, 30)
            );
        }
        Ok(())
    }
}

/// The record's `kind` without parsing the line: the first `"kind":"..."` (records start
/// with `seq`, `boot_id`, `kind`; nested `kind`s come later). std's `find`, not a loop of our
/// own: xtask is a debug build, and this runs for every line the agent writes.
fn record_kind(line: &str) -> Option<&str> {
    const KEY: &str = "\"kind\":\"";
    let rest = &line[line.find(KEY)? + KEY.len()..];
    Some(&rest[..rest.find('"')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let http = r#"{"seq":2,"boot_id":"c750f8c6bfb94bcfac4278b5b47a106b","kind":"http","time":"t","source":{"kind":"pod"}}"#;
        assert_eq!(record_kind(http), Some("http"));
        assert_eq!(
            record_kind(r#"{"kind":"drain-stats","records":1}"#),
            Some("drain-stats")
        );
        assert_eq!(record_kind("{}"), None);
    }
}
