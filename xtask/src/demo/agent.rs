//! The demo's two processes on the [`crate::harness`]: the agent (its records read as they
//! arrive, its log in `target/demo/agent.log`) and the collector (mTLS, store and NDJSON sink
//! under `target/demo/`), each in the lab's node netns and its own process group, so Ctrl-C
//! reaches xtask, which stops them in order.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::READY_TIMEOUT;
use crate::harness::collector::CollectorFiles;
use crate::harness::{self, Log, Process};
use crate::util;

/// Where the demo's collector listens (inside the lab's node netns).
pub const COLLECTOR_URL: &str = "https://127.0.0.1:7443";

/// The demo's collector; stopped (SIGTERM, then SIGKILL) on drop.
pub(super) struct DemoCollector {
    process: Process,
    sink: PathBuf,
}

impl DemoCollector {
    /// Starts it with its log in `log` and waits until it listens.
    pub(super) fn start(
        bin: &Path,
        netns: &str,
        files: CollectorFiles<'_>,
        log: &Path,
    ) -> Result<Self> {
        let mut process = harness::collector(bin, files)
            .netns(Some(netns))
            .stderr_file(log)
            .interactive()
            .show_command()
            .ready_timeout(READY_TIMEOUT)
            .on_drop(libc::SIGTERM, Duration::from_secs(8), None)
            .spawn()
            .with_context(|| format!("cannot start the collector {}", bin.display()))?;
        process.wait_ready().map_err(|e| {
            e.into_error(
                |st| {
                    format!(
                        "the collector exited ({st}) at start; its log: {}",
                        log.display()
                    )
                },
                |t| {
                    format!(
                        "the collector is not listening after {t:?}; its log: {}",
                        log.display()
                    )
                },
            )
        })?;
        Ok(Self {
            process,
            sink: files.sink.to_owned(),
        })
    }

    /// Its PID.
    pub(super) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Waits until the sink holds `n` records (or `timeout`); returns how many it holds.
    pub(super) fn wait_records(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let have = std::fs::read_to_string(&self.sink)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if have >= n || Instant::now() >= deadline {
                return have;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the stopped agent left.
pub(super) struct Stopped {
    /// Its exit status.
    pub(super) status: ExitStatus,
    /// Every line it wrote on stdout (records).
    pub(super) stdout: Vec<String>,
    /// The end of its log, indented for the terminal.
    pub(super) stderr_tail: String,
}

/// The running agent; stopped (SIGINT, then SIGKILL after 5 s) on drop if still running.
pub(super) struct DemoAgent {
    process: Process,
    /// Lines written on stdout so far.
    lines: Vec<String>,
    /// The ones that are JSON, parsed.
    records: Vec<Value>,
}

impl DemoAgent {
    /// Starts `bin agent` in `netns` on `cgroup`, with `extra` arguments; its log goes to
    /// `log` (and to our stderr with `echo_logs`).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, every argument named there"
    )]
    pub(super) fn start(
        bin: &Path,
        netns: &str,
        inventory: &Path,
        cgroup: &Path,
        ready: &Path,
        extra: &[String],
        log: &Path,
        echo_logs: bool,
    ) -> Result<Self> {
        let process = harness::agent(bin, inventory, cgroup, ready)
            .args(extra)
            .netns(Some(netns))
            .stdout_lines()
            .stderr_lines(Log::default(), Some(log), echo_logs.then_some("agent: "))
            .interactive()
            .show_command()
            .ready_timeout(READY_TIMEOUT)
            .on_drop(
                libc::SIGINT,
                Duration::from_secs(5),
                Some("stopping the agent"),
            )
            .spawn()
            .with_context(|| format!("cannot start the agent {}", bin.display()))?;
        Ok(Self {
            process,
            lines: Vec::new(),
            records: Vec::new(),
        })
    }

    /// Its PID.
    pub(super) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// When it was started.
    pub(super) fn started(&self) -> Instant {
        self.process.started()
    }

    /// Waits for its ready file (it is attached then).
    pub(super) fn wait_ready(&mut self, ready: &Path) -> Result<()> {
        let Err(e) = self.process.wait_ready() else {
            return Ok(());
        };
        let tail = self.stderr_tail();
        let ready = ready.display();
        Err(e.into_error(
            |st| format!("the agent exited ({st}) before it was ready; its stderr:\n{tail}"),
            |t| {
                let t = t.as_secs();
                format!("the agent did not create its ready file {ready} within {t}s; its stderr so far:\n{tail}")
            },
        ))
    }

    /// The records written so far (lines that are not JSON are skipped).
    pub(super) fn records(&mut self) -> &[Value] {
        for (_, line) in self.process.take_lines() {
            if let Ok(v) = serde_json::from_str(&line) {
                self.records.push(v);
            }
            self.lines.push(line);
        }
        &self.records
    }

    /// Waits up to `timeout` for a record matching `pred`.
    pub(super) fn wait_record(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.records().iter().find(|v| pred(v)) {
                return Ok(Some(v.clone()));
            }
            if self.exited()?.is_some() || Instant::now() >= deadline {
                return Ok(None);
            }
            util::sleep_interruptible(Duration::from_millis(10))?;
        }
    }

    /// Its exit status if it has exited.
    pub(super) fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.process.exited()
    }

    /// The last 40 lines of its log, indented (`    (empty)` when there are none).
    pub(super) fn stderr_tail(&self) -> String {
        let tail = self.process.stderr().tail(40);
        if tail.is_empty() {
            "    (empty)".to_string()
        } else {
            tail.iter()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }

    /// SIGINT by PID, wait up to 10 s (then SIGKILL), collect the output.
    pub(super) fn stop(mut self) -> Result<Stopped> {
        let status = self
            .process
            .stop(libc::SIGINT, Duration::from_secs(10), || {
                crate::outln!("the agent did not stop within 10 s of SIGINT; sending SIGKILL");
            })?;
        self.process.join_output();
        self.records();
        Ok(Stopped {
            status,
            stdout: std::mem::take(&mut self.lines),
            stderr_tail: self.stderr_tail(),
        })
    }
}
