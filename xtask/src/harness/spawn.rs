//! [`Spawn`]: what to run and how (program, arguments, netns, wrapper, ready file, where
//! stdout and stderr go, what a drop does), and starting it with its reader threads.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::process::Process;
use super::{DEFAULT_READY_TIMEOUT, LineHandler, Lines, Log};
use crate::util;

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

    /// An option with its value: `name value`.
    #[must_use]
    pub fn opt(self, name: &str, value: impl Into<OsString>) -> Self {
        self.arg(name).arg(value)
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

    /// For an xtask command run from a terminal: the child gets its own process group, so
    /// Ctrl-C reaches only xtask, which stops it in order; and the waits of
    /// [`Process::wait_ready`] and [`Process::wait_until`] give up on Ctrl-C
    /// ([`util::check_interrupted`]).
    #[must_use]
    pub fn interactive(mut self) -> Self {
        self.own_group = true;
        self.interruptible = true;
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
