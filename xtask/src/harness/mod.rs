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
//! Processes are only ever signalled by their own PID ([`crate::util::signal`],
//! [`crate::util::stop_child`]).

pub mod agent;
pub mod collector;
mod process;
mod spawn;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use agent::agent;
pub use collector::collector;
pub use process::{NotReady, Process};
pub use spawn::Spawn;

/// `bin SUBCOMMAND --ready-file READY`, ready when `READY` exists: how [`agent`] and
/// [`collector`] start.
fn monitor(bin: &std::path::Path, subcommand: &str, ready: &std::path::Path) -> Spawn {
    Spawn::new(bin)
        .arg(subcommand)
        .opt("--ready-file", ready)
        .ready_file(ready)
}

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
/// ([`crate::util::monotonic_s`]).
type Lines = Arc<Mutex<Vec<(f64, String)>>>;

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::util;

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

    #[test]
    fn agent_and_collector_arguments() {
        let agent = agent(
            Path::new("/m"),
            Path::new("/i.yaml"),
            Path::new("/sys/fs/cgroup/x"),
            Path::new("/r"),
        );
        assert_eq!(
            util::display_cmd(&agent.arg("--drain-only").command()),
            "/m agent --ready-file /r --inventory /i.yaml --cgroup /sys/fs/cgroup/x --drain-only"
        );
        let files = collector::CollectorFiles {
            listen: "127.0.0.1:7443",
            certs: Path::new("/c"),
            store: Path::new("/s.db"),
            sink: Path::new("/r.ndjson"),
            ready: Path::new("/ready"),
        };
        assert_eq!(
            util::display_cmd(&collector(Path::new("/m"), files).command()),
            "/m collector --ready-file /ready --listen 127.0.0.1:7443 --tls-dir /c --store /s.db \
             --sink ndjson:file=/r.ndjson"
        );
    }
}
