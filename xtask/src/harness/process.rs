//! [`Process`]: a child started by a [`super::Spawn`]: waiting until it is ready, its output,
//! signals by PID, stopping it, and what dropping it does.

use std::fmt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::{Lines, Log, POLL};
use crate::util;

/// Why [`Process::wait_ready`] or [`Process::wait_until`] gave up.
#[derive(Debug)]
pub enum NotReady {
    /// The process exited first (its stderr reader has been joined: the log is complete).
    Exited(ExitStatus),
    /// The time limit passed first.
    TimedOut(Duration),
    /// Ctrl-C (when [`super::Spawn::interactive`]), or the process could not be waited for.
    Failed(anyhow::Error),
}

impl NotReady {
    /// The error to report: `exited`'s or `timed_out`'s message, or the failure as it is.
    pub fn into_error(
        self,
        exited: impl FnOnce(ExitStatus) -> String,
        timed_out: impl FnOnce(Duration) -> String,
    ) -> anyhow::Error {
        match self {
            Self::Exited(status) => anyhow::anyhow!(exited(status)),
            Self::TimedOut(limit) => anyhow::anyhow!(timed_out(limit)),
            Self::Failed(e) => e,
        }
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(status) => write!(f, "the process exited ({status}) before it was ready"),
            Self::TimedOut(limit) => write!(f, "the process was not ready within {limit:?}"),
            Self::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for NotReady {}

/// A running child started by [`super::Spawn::spawn`]; stopped as [`super::Spawn::on_drop`] says when
/// dropped while it still runs.
pub struct Process {
    /// The child itself.
    pub(super) child: Child,
    /// Its PID (what every signal goes to).
    pub(super) pid: u32,
    /// When it was started.
    pub(super) started: Instant,
    /// The file that says it is ready.
    pub(super) ready_file: Option<PathBuf>,
    /// How long [`Process::wait_ready`] waits.
    pub(super) ready_timeout: Duration,
    /// Whether the waits give up on Ctrl-C.
    pub(super) interruptible: bool,
    /// Stdout lines stored by the reader thread.
    pub(super) lines: Lines,
    /// Stderr lines collected by the reader thread.
    pub(super) stderr: Log,
    /// The stdout reader thread, until joined.
    pub(super) stdout_reader: Option<JoinHandle<()>>,
    /// The stderr reader thread, until joined.
    pub(super) stderr_reader: Option<JoinHandle<()>>,
    /// What a drop sends first.
    pub(super) drop_signal: libc::c_int,
    /// How long a drop waits before SIGKILL.
    pub(super) drop_grace: Duration,
    /// What a drop prints first, if the child still runs.
    pub(super) drop_message: Option<String>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("ready_file", &self.ready_file)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("cannot wait for pid {}", self.pid))
    }

    /// Waits until the ready file exists ([`super::Spawn::ready_file`]; at once without one).
    pub fn wait_ready(&mut self) -> Result<(), NotReady> {
        let Some(ready) = self.ready_file.clone() else {
            return Ok(());
        };
        self.wait_until(self.ready_timeout, || ready.exists())
    }

    /// Waits up to `timeout` for `cond`, checked first and then every 20 ms; gives up when
    /// the process exits (then joins its stderr reader, so its log is complete) or, if
    /// [`super::Spawn::interactive`], on Ctrl-C.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return Ok(());
            }
            if let Some(status) = self.exited().map_err(NotReady::Failed)? {
                self.join_stderr();
                return Err(NotReady::Exited(status));
            }
            if self.interruptible {
                util::check_interrupted().map_err(NotReady::Failed)?;
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut(timeout));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The stdout lines stored since the last call ([`super::Spawn::stdout_lines`]), in order, each
    /// with its arrival time ([`util::monotonic_s`]).
    pub fn take_lines(&self) -> Vec<(f64, String)> {
        self.lines
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// The stderr lines collected so far ([`super::Spawn::stderr_lines`]; empty otherwise).
    pub fn stderr(&self) -> &Log {
        &self.stderr
    }

    /// Sends `sig` to the child's PID (nothing if it is gone).
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        util::signal(self.pid, sig)
    }

    /// Waits for the exit, however long it takes.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.child
            .wait()
            .with_context(|| format!("cannot wait for pid {}", self.pid))
    }

    /// `sig` to its PID, then SIGKILL if it has not exited within `grace` (calling
    /// `before_kill` first, to say so); returns its exit status.
    pub fn stop(
        &mut self,
        sig: libc::c_int,
        grace: Duration,
        before_kill: impl FnOnce(),
    ) -> Result<ExitStatus> {
        util::stop_child_then(&mut self.child, sig, grace, before_kill)
            .with_context(|| format!("cannot wait for pid {}", self.pid))
    }

    /// Waits for the reader threads to reach the end of stdout and stderr (call it after the
    /// exit: then every line has been read).
    pub fn join_output(&mut self) {
        if let Some(h) = self.stdout_reader.take() {
            let _ = h.join();
        }
        self.join_stderr();
    }

    fn join_stderr(&mut self) {
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(message) = &self.drop_message
            && matches!(self.child.try_wait(), Ok(None))
        {
            crate::errln!("{message} (pid {})", self.pid);
        }
        util::stop_child(&mut self.child, self.drop_signal, self.drop_grace);
    }
}
