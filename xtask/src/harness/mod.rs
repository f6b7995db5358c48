//! The one child-process harness for `monitor agent` and `monitor collector`, shared by the
//! demo, the bench and the lab tests (`tests/src/lib.rs`).
//!
//! A [`Spawn`] (builder) says what to run and how: the binary and its arguments, the network
//! namespace to run it in (entered with nsenter, which execs the program, so the child's PID
//! is the program's), a wrapper command, the ready file that says it is up, where its stdout
//! and stderr go, and how it is stopped when its [`Process`] is dropped. [`agent`] and
//! [`collector`] start a `Spawn` with the arguments every caller gives those two commands.
//!
//! Stdout is read on a thread that does as little as possible per line: it either stores the
//! raw line with its arrival time ([`Spawn::stdout_lines`], parsed later by whoever asks) or
//! hands it to a cheap callback ([`Spawn::stdout_each`]). A reader that parses every line (a
//! `serde_json::Value` each) is the slowest stage at wrk's full rate on 2 cores: it falls
//! behind, the pipe fills, the agent blocks on its write and the kernel ring buffer overflows,
//! a loss caused by the harness rather than by the agent.
//!
//! Processes are only ever signalled by their own PID ([`util::signal`], [`util::stop_child`]).

pub mod agent;
pub mod collector;

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

pub use agent::agent;
pub use collector::collector;

use crate::util;

/// How long [`Process::wait_ready`] waits unless [`Spawn::ready_timeout`] says otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the waits poll the process and the ready file.
const POLL: Duration = Duration::from_millis(20);

/// A line handler run on the stdout reader thread; see [`Spawn::stdout_each`].
pub type LineHandler = Box<dyn FnMut(&str) + Send>;

/// Lines a reader thread collected (stderr), shared with whoever reads them. Cloning shares
/// the same lines, so one `Log` can collect several runs of a restarted process.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(line);
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Every line so far, each followed by a newline.
    pub fn text(&self) -> String {
        self.lines().iter().fold(String::new(), |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        })
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }
}

/// Stdout lines stored raw by the reader thread, each with its arrival time
/// ([`util::monotonic_s`]).
type Lines = Arc<Mutex<Vec<(f64, String)>>>;

/// Where the child's stdout goes.
enum StdoutTo {
    Null,
    Lines,
    Each(LineHandler),
}

/// Where the child's stderr goes.
enum StderrTo {
    Null,
    File(PathBuf),
    Lines {
        log: Log,
        copy: Option<PathBuf>,
        echo: Option<String>,
    },
}

/// What to run and how (a builder); [`Spawn::spawn`] starts it.
pub struct Spawn {
    program: PathBuf,
    args: Vec<OsString>,
    netns: Option<String>,
    wrapper: Vec<OsString>,
    ready_file: Option<PathBuf>,
    ready_timeout: Duration,
    interruptible: bool,
    own_group: bool,
    show_command: bool,
    stdout: StdoutTo,
    stderr: StderrTo,
    drop_signal: libc::c_int,
    drop_grace: Duration,
    drop_message: Option<String>,
}

impl fmt::Debug for Spawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawn")
            .field("command", &util::display_cmd(&self.command()))
            .field("ready_file", &self.ready_file)
            .finish_non_exhaustive()
    }
}

impl Spawn {
    /// `program` with no arguments, in this network namespace; stdin, stdout and stderr are
    /// /dev/null, and dropping the process sends SIGKILL.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            netns: None,
            wrapper: Vec::new(),
            ready_file: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            interruptible: false,
            own_group: false,
            show_command: false,
            stdout: StdoutTo::Null,
            stderr: StderrTo::Null,
            drop_signal: libc::SIGKILL,
            drop_grace: Duration::ZERO,
            drop_message: None,
        }
    }

    /// One more argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs it in the network namespace `netns` (`/run/netns/NAME`), or here with `None`.
    #[must_use]
    pub fn netns(mut self, netns: Option<&str>) -> Self {
        self.netns = netns.map(str::to_owned);
        self
    }

    /// Runs it through `wrapper`, a command that execs the rest of its arguments (e.g.
    /// `setpriv --bounding-set=...`), entered after the network namespace switch.
    #[must_use]
    pub fn wrapper(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(OsString::from).collect();
        self
    }

    /// The file whose existence says the process is ready: removed before the start, waited
    /// for by [`Process::wait_ready`]. (It does not add the program's own option for it.)
    #[must_use]
    pub fn ready_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ready_file = Some(path.into());
        self
    }

    /// How long [`Process::wait_ready`] waits (default [`DEFAULT_READY_TIMEOUT`]).
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Makes the waits of [`Process::wait_ready`] and [`Process::wait_until`] give up on
    /// Ctrl-C ([`util::check_interrupted`]).
    #[must_use]
    pub fn interruptible(mut self) -> Self {
        self.interruptible = true;
        self
    }

    /// Puts the child in its own process group, so Ctrl-C reaches only us and we stop it in
    /// order.
    #[must_use]
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }

    /// Prints the command line (`$ ...`) when it starts.
    #[must_use]
    pub fn show_command(mut self) -> Self {
        self.show_command = true;
        self
    }

    /// Stores every stdout line raw, with its arrival time; see [`Process::take_lines`].
    #[must_use]
    pub fn stdout_lines(mut self) -> Self {
        self.stdout = StdoutTo::Lines;
        self
    }

    /// Hands every stdout line (without its newline) to `handler` on the reader thread, in a
    /// reused buffer. It must stay cheap (count, test a substring, keep a copy): a slow
    /// reader slows the agent into ring-buffer losses.
    #[must_use]
    pub fn stdout_each(mut self, handler: impl FnMut(&str) + Send + 'static) -> Self {
        self.stdout = StdoutTo::Each(Box::new(handler));
        self
    }

    /// Sends stderr to `path` (created, or truncated).
    #[must_use]
    pub fn stderr_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stderr = StderrTo::File(path.into());
        self
    }

    /// Collects stderr's lines in `log` (see [`Process::stderr`]); with `copy`, each is also
    /// appended to that file (created, or truncated), and with `echo`, printed on our stderr
    /// after that prefix.
    #[must_use]
    pub fn stderr_lines(mut self, log: Log, copy: Option<&Path>, echo: Option<&str>) -> Self {
        self.stderr = StderrTo::Lines {
            log,
            copy: copy.map(Path::to_owned),
            echo: echo.map(str::to_owned),
        };
        self
    }

    /// What dropping a still-running [`Process`] does: `sig`, then SIGKILL after `grace`
    /// (default: SIGKILL at once); with `message`, it first prints `message (pid N)`.
    #[must_use]
    pub fn on_drop(mut self, sig: libc::c_int, grace: Duration, message: Option<&str>) -> Self {
        self.drop_signal = sig;
        self.drop_grace = grace;
        self.drop_message = message.map(str::to_owned);
        self
    }

    /// The command that [`Spawn::spawn`] runs (netns, wrapper, program, arguments).
    pub fn command(&self) -> Command {
        let (program, rest): (PathBuf, Vec<OsString>) = match self.wrapper.split_first() {
            Some((first, more)) => {
                let mut rest = more.to_vec();
                rest.push(self.program.clone().into_os_string());
                (PathBuf::from(first), rest)
            }
            None => (self.program.clone(), Vec::new()),
        };
        let mut cmd = match &self.netns {
            Some(ns) => crate::lab::nsenter(ns, &program),
            None => Command::new(&program),
        };
        cmd.args(rest).args(&self.args);
        cmd
    }

    /// Starts the process (and its reader threads). Fails, naming the command, if it cannot
    /// be started; it does not wait for it to be ready ([`Process::wait_ready`] does).
    pub fn spawn(self) -> Result<Process> {
        let mut cmd = self.command();
        if let Some(ready) = &self.ready_file {
            let _ = std::fs::remove_file(ready);
        }
        cmd.stdin(Stdio::null());
        cmd.stdout(match self.stdout {
            StdoutTo::Null => Stdio::null(),
            StdoutTo::Lines | StdoutTo::Each(_) => Stdio::piped(),
        });
        cmd.stderr(match &self.stderr {
            StderrTo::Null => Stdio::null(),
            StderrTo::File(path) => std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?
                .into(),
            StderrTo::Lines { .. } => Stdio::piped(),
        });
        if self.own_group {
            cmd.process_group(0);
        }
        let shown = util::display_cmd(&cmd);
        if self.show_command {
            crate::outln!("$ {shown}");
        }
        let mut copy = match &self.stderr {
            StderrTo::Lines {
                copy: Some(path), ..
            } => Some(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            ),
            _ => None,
        };
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let pid = child.id();
        let lines: Lines = Arc::default();
        let stdout_reader = match (self.stdout, child.stdout.take()) {
            (StdoutTo::Lines, Some(out)) => {
                let lines = Arc::clone(&lines);
                Some(std::thread::spawn(move || {
                    for line in BufReader::with_capacity(1 << 16, out)
                        .lines()
                        .map_while(Result::ok)
                    {
                        let at = util::monotonic_s();
                        if let Ok(mut v) = lines.lock() {
                            v.push((at, line));
                        }
                    }
                }))
            }
            (StdoutTo::Each(mut handler), Some(out)) => Some(std::thread::spawn(move || {
                let mut r = BufReader::with_capacity(1 << 16, out);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => handler(line.strip_suffix('\n').unwrap_or(&line)),
                    }
                }
            })),
            _ => None,
        };
        let (stderr, stderr_reader) = match (self.stderr, child.stderr.take()) {
            (StderrTo::Lines { log, echo, .. }, Some(err)) => {
                let sink = log.clone();
                let reader = std::thread::spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        if let Some(f) = copy.as_mut() {
                            let _ = writeln!(f, "{line}");
                        }
                        if let Some(prefix) = &echo {
                            crate::errln!("{prefix}{line}");
                        }
                        sink.push(line);
                    }
                });
                (log, Some(reader))
            }
            _ => (Log::default(), None),
        };
        Ok(Process {
            child,
            pid,
            started: Instant::now(),
            ready_file: self.ready_file,
            ready_timeout: self.ready_timeout,
            interruptible: self.interruptible,
            lines,
            stderr,
            stdout_reader,
            stderr_reader,
            drop_signal: self.drop_signal,
            drop_grace: self.drop_grace,
            drop_message: self.drop_message,
        })
    }
}

/// Why [`Process::wait_ready`] or [`Process::wait_until`] gave up.
#[derive(Debug)]
pub enum NotReady {
    /// The process exited first (its stderr reader has been joined: the log is complete).
    Exited(ExitStatus),
    /// The time limit passed first.
    TimedOut(Duration),
    /// Ctrl-C (when [`Spawn::interruptible`]), or the process could not be waited for.
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

/// A running child started by [`Spawn::spawn`]; stopped as [`Spawn::on_drop`] says when
/// dropped while it still runs.
pub struct Process {
    child: Child,
    pid: u32,
    started: Instant,
    ready_file: Option<PathBuf>,
    ready_timeout: Duration,
    interruptible: bool,
    lines: Lines,
    stderr: Log,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<()>>,
    drop_signal: libc::c_int,
    drop_grace: Duration,
    drop_message: Option<String>,
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

    /// Waits until the ready file exists ([`Spawn::ready_file`]; at once without one).
    pub fn wait_ready(&mut self) -> Result<(), NotReady> {
        let Some(ready) = self.ready_file.clone() else {
            return Ok(());
        };
        self.wait_until(self.ready_timeout, || ready.exists())
    }

    /// Waits up to `timeout` for `cond`, checked first and then every 20 ms; gives up when
    /// the process exits (then joins its stderr reader, so its log is complete) or, if
    /// [`Spawn::interruptible`], on Ctrl-C.
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

    /// The stdout lines stored since the last call ([`Spawn::stdout_lines`]), in order, each
    /// with its arrival time ([`util::monotonic_s`]).
    pub fn take_lines(&self) -> Vec<(f64, String)> {
        self.lines
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// The stderr lines collected so far ([`Spawn::stderr_lines`]; empty otherwise).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_stdout_lines_and_stderr() {
        let mut p = Spawn::new("/bin/sh")
            .args(["-c", "echo one; echo two; echo err >&2"])
            .stdout_lines()
            .stderr_lines(Log::default(), None, None)
            .spawn()
            .unwrap();
        assert!(p.wait().unwrap().success());
        p.join_output();
        let lines: Vec<String> = p.take_lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines, ["one", "two"]);
        assert!(p.take_lines().is_empty());
        assert_eq!(p.stderr().text(), "err\n");
    }

    #[test]
    fn hands_lines_to_a_handler() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let mut p = Spawn::new("/bin/sh")
            .args(["-c", "printf 'a\\nb'"])
            .stdout_each(move |l| s.lock().unwrap().push(l.to_owned()))
            .spawn()
            .unwrap();
        p.wait().unwrap();
        p.join_output();
        assert_eq!(*seen.lock().unwrap(), ["a", "b"]);
    }

    #[test]
    fn ready_file_exit_and_timeout() {
        let dir = std::env::temp_dir().join(format!("xtask-harness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ready = dir.join("ready");
        std::fs::write(&ready, "stale").unwrap();
        // The stale file is removed at the start; the child makes it.
        let mut p = Spawn::new("/bin/sh")
            .args([
                "-c",
                &format!("sleep 0.2; touch {}; sleep 30", ready.display()),
            ])
            .ready_file(&ready)
            .spawn()
            .unwrap();
        assert!(!ready.exists());
        p.wait_ready().unwrap();
        let pid = p.pid();
        drop(p);
        assert!(!util::process_running(pid));

        let mut p = Spawn::new("/bin/sh")
            .args(["-c", "exit 3"])
            .ready_file(dir.join("never"))
            .spawn()
            .unwrap();
        match p.wait_ready() {
            Err(NotReady::Exited(st)) => assert_eq!(st.code(), Some(3)),
            other => panic!("{other:?}"),
        }
        let mut p = Spawn::new("/bin/sleep")
            .arg("30")
            .ready_file(dir.join("never"))
            .ready_timeout(Duration::from_millis(100))
            .spawn()
            .unwrap();
        let e = p.wait_ready().unwrap_err();
        assert!(matches!(e, NotReady::TimedOut(_)), "{e}");
        let st = p
            .stop(libc::SIGTERM, Duration::from_secs(5), || {})
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGTERM)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn command_line_has_netns_and_wrapper_first() {
        let s = Spawn::new("/m")
            .netns(Some("ns1"))
            .wrapper(&["setpriv", "--x"])
            .args(["agent", "-v"]);
        assert_eq!(
            util::display_cmd(&s.command()),
            "nsenter --net=/run/netns/ns1 setpriv --x /m agent -v"
        );
        assert_eq!(
            util::display_cmd(&Spawn::new("/m").arg("a").command()),
            "/m a"
        );
    }
}
