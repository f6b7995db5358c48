//! Harness for the lab tests: start a lab from an inventory, run the real `monitor agent`
//! (and `monitor collector`) against it through xtask's child-process harness
//! ([`xtask::harness`], shared with the demo and the bench), drive real clients inside pods,
//! and collect the agent's NDJSON records.
//!
//! These tests need root and a kernel with cgroup v2 and BPF; they check that first and fail
//! with a message saying what is missing. They never skip.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use xtask::harness::{self, Log, Process, collector::CollectorFiles};
use xtask::lab::{Lab, LabOptions};

/// Fails loudly unless the test can do what lab tests need.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "lab tests need root (network namespaces, cgroups, BPF): run `cargo xtask test` as root"
    );
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "lab tests need a kernel with BTF (/sys/kernel/btf/vmlinux is missing)"
    );
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The `monitor` binary under test: `$MONITOR_BIN`, else `target/release/monitor`.
pub fn monitor_bin() -> PathBuf {
    let p = std::env::var_os("MONITOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/monitor"));
    assert!(
        p.exists(),
        "monitor binary {} not found: build it with `cargo build --release -p monitor` or set \
         MONITOR_BIN (`cargo xtask test` does both)",
        p.display()
    );
    p
}

/// The test lab inventory.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// Brings up a lab with a prefix unique to the test (so a leftover from a crashed run of one
/// test cannot collide with another).
pub fn lab(prefix: &str, inventory: &Path) -> Lab {
    require_root();
    // A previous crashed run may have left this prefix behind.
    let _ = xtask::lab::down_from_state(prefix);
    Lab::up(&LabOptions {
        inventory: inventory.to_owned(),
        prefix: prefix.to_owned(),
        cgroup_mount: None,
    })
    .unwrap_or_else(|e| panic!("lab {prefix} failed to start: {e:#}"))
}

/// A running `monitor agent` (on [`xtask::harness`]). Its stdout reader only stores each line
/// with its arrival time, and lines are parsed, outside the reader's lock, when a test asks
/// for records. Parsing in the reader (a `serde_json::Value` per line) made it the slowest
/// stage under load: at wrk's full rate on 2 cores it could fall behind, the pipe filled, the
/// agent blocked on its write and the kernel ring buffer overflowed: a loss caused by the
/// harness, not by the agent. Killed (SIGKILL by PID) on drop if still running.
#[derive(Debug)]
pub struct Agent {
    process: Process,
    /// Parsed records, in order, each with its arrival time ([`monotonic_s`]).
    parsed: Mutex<Vec<(f64, Value)>>,
}

impl Agent {
    /// Starts the agent on `lab` (root netns, root cgroup) and waits until it is attached.
    pub fn start(lab: &Lab) -> Result<Self> {
        Self::start_with(lab, &[])
    }

    /// Like [`Agent::start`] with extra arguments. Without a `--policy` among them, the lab
    /// tests' policy (`tests/fixtures/lab-policy.yaml`: redaction settings only) is used.
    pub fn start_with(lab: &Lab, extra: &[&str]) -> Result<Self> {
        Self::start_with_inventory(lab, lab.inventory_path(), extra)
    }

    /// Like [`Agent::start_with`] with another inventory file.
    pub fn start_with_inventory(lab: &Lab, inventory: &Path, extra: &[&str]) -> Result<Self> {
        Self::spawn(lab, inventory, extra, None, &[])
    }

    /// Like [`Agent::start_with`], in the lab's node network namespace (entered with nsenter,
    /// which keeps this mount namespace and so the cgroup tree): its connections to a test
    /// [`Collector`] on 127.0.0.1 stay inside the lab.
    pub fn start_in_node(lab: &Lab, extra: &[&str]) -> Result<Self> {
        Self::spawn(
            lab,
            lab.inventory_path(),
            extra,
            Some(lab.node_netns()),
            &[],
        )
    }

    /// Like [`Agent::start_in_node`], with the agent started through `wrapper` (a command that
    /// execs the rest of its arguments, e.g. `setpriv --bounding-set=...`), entered after the
    /// netns switch.
    pub fn start_wrapped(lab: &Lab, wrapper: &[&str], extra: &[&str]) -> Result<Self> {
        Self::spawn(
            lab,
            lab.inventory_path(),
            extra,
            Some(lab.node_netns()),
            wrapper,
        )
    }

    fn spawn(
        lab: &Lab,
        inventory: &Path,
        extra: &[&str],
        netns: Option<&str>,
        wrapper: &[&str],
    ) -> Result<Self> {
        let ready = lab.run_dir().join("agent-ready");
        let policy = fixture("lab-policy.yaml");
        let default_policy: &[&str] =
            if extra.contains(&"--policy") || extra.contains(&"--no-policy") {
                &[]
            } else {
                &[
                    "--policy",
                    policy.to_str().context("fixture path is UTF-8")?,
                ]
            };
        let extra: Vec<&str> = extra
            .iter()
            .copied()
            .filter(|a| *a != "--no-policy")
            .collect();
        let mut process = harness::agent(&monitor_bin(), inventory, lab.attach_cgroup(), &ready)
            .args(default_policy)
            .args(&extra)
            .netns(netns)
            .wrapper(wrapper)
            // Timestamped as it arrives, for latency measurements (`timed_records`).
            .stdout_lines()
            .stderr_lines(Log::default(), None, None)
            .spawn()
            .context("cannot start monitor agent")?;
        let r = process.wait_ready();
        r.map_err(|e| {
            let log = process.stderr().text();
            e.into_error(
                |status| format!("agent exited ({status}) before attaching:\n{log}"),
                |t| format!("agent not attached after {} s:\n{log}", t.as_secs()),
            )
        })?;
        Ok(Self {
            process,
            parsed: Mutex::default(),
        })
    }

    /// Every record so far, with its arrival time (parses what is pending).
    fn parsed(&self) -> MutexGuard<'_, Vec<(f64, Value)>> {
        let mut parsed = self.parsed.lock().expect("lock");
        for (at, line) in self.process.take_lines() {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("agent printed non-JSON {line:?}: {err}"));
            parsed.push((at, v));
        }
        parsed
    }

    /// The agent's log so far.
    pub fn stderr(&self) -> String {
        self.process.stderr().text()
    }

    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The records written so far (the agent keeps running).
    pub fn records(&self) -> Vec<Value> {
        self.parsed().iter().map(|(_, v)| v.clone()).collect()
    }

    /// The records written so far, each with the [`monotonic_s`] time its line arrived.
    pub fn timed_records(&self) -> Vec<(f64, Value)> {
        self.parsed().clone()
    }

    /// Waits up to `timeout` for the first record after the first `skip` that matches `pred`;
    /// fails with the agent's log if none comes or the agent exits.
    pub fn wait_for(
        &mut self,
        what: &str,
        skip: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.parsed().iter().skip(skip).find(|(_, v)| pred(v)) {
                return Ok(v.1.clone());
            }
            if let Some(status) = self.process.exited()? {
                bail!(
                    "agent exited ({status}) while waiting for {what}:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                let since: Vec<String> = self
                    .parsed()
                    .iter()
                    .skip(skip)
                    .map(|(_, v)| format!("{:.300}", v.to_string()))
                    .collect();
                bail!(
                    "no {what} on the agent's stdout within {timeout:?}; the {} record(s) \
                     written meanwhile (first 300 characters each):\n{}\nlog:\n{}",
                    since.len(),
                    since.join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Like [`Agent::stop`], with the [`monotonic_s`] time each record's line arrived.
    pub fn stop_timed(mut self) -> Result<Vec<(f64, Value)>> {
        self.stop_and_join()?;
        Ok(std::mem::take(&mut *self.parsed()))
    }

    /// Stops the agent with SIGINT (as an operator would) and returns every record it wrote.
    pub fn stop(mut self) -> Result<Vec<Value>> {
        self.stop_and_join()?;
        Ok(std::mem::take(&mut *self.parsed())
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Signals the agent with SIGINT, waits for it and for its output to be read.
    fn stop_and_join(&mut self) -> Result<()> {
        // Give the drain timer and the body-completion poll a moment.
        std::thread::sleep(Duration::from_millis(300));
        self.process.signal(libc::SIGINT)?;
        let status = self.process.wait()?;
        self.process.join_output();
        if !status.success() {
            bail!("agent exited with {status}:\n{}", self.stderr());
        }
        Ok(())
    }
}

/// `program` as a command, run inside `netns` (with nsenter, keeping the mount namespace) if
/// given. nsenter execs the program, so the child's PID is the program's.
pub fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => xtask::lab::nsenter(ns, program),
        None => Command::new(program),
    }
}

/// Makes a CA, a collector certificate (for localhost/127.0.0.1) and `agent` and `cli` client
/// certificates in `dir` with `monitor certs init`.
pub fn make_certs(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let out = Command::new(monitor_bin())
        .args(["certs", "init", "--out"])
        .arg(dir)
        .output()
        .expect("monitor certs init runs");
    assert!(
        out.status.success(),
        "monitor certs init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_owned()
}

/// A running `monitor collector` (on [`xtask::harness`]) in the lab's node netns, listening on
/// 127.0.0.1:`port` with mTLS (certificates from [`make_certs`]) and an NDJSON file sink.
/// Killed (SIGKILL by PID) on drop if still running.
#[derive(Debug)]
pub struct Collector {
    process: Option<Process>,
    /// Every run's stderr.
    stderr: Log,
    /// The store file.
    pub store: PathBuf,
    /// The NDJSON sink file.
    pub sink: PathBuf,
    /// The certificates directory.
    pub certs: PathBuf,
    /// Listening port (127.0.0.1 in the node netns).
    pub port: u16,
    netns: String,
    extra: Vec<String>,
}

impl Collector {
    /// Starts a collector with its files under `dir` and waits until it listens.
    pub fn start(lab: &Lab, dir: &Path, certs: &Path, port: u16, extra: &[&str]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut c = Self {
            process: None,
            stderr: Log::default(),
            store: dir.join("collector.db"),
            sink: dir.join("records.ndjson"),
            certs: certs.to_owned(),
            port,
            netns: lab.node_netns().to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        c.restart()?;
        Ok(c)
    }

    /// (Re)starts the process with the same files.
    pub fn restart(&mut self) -> Result<()> {
        let ready = self.store.with_extension("ready");
        let listen = format!("127.0.0.1:{}", self.port);
        let files = CollectorFiles {
            listen: &listen,
            certs: &self.certs,
            store: &self.store,
            sink: &self.sink,
            ready: &ready,
        };
        let mut process = harness::collector(&monitor_bin(), files)
            .args(&self.extra)
            .netns(Some(&self.netns))
            .stderr_lines(self.stderr.clone(), None, None)
            .ready_timeout(Duration::from_secs(20))
            .spawn()
            .context("cannot start monitor collector")?;
        process.wait_ready().map_err(|e| {
            e.into_error(
                |status| format!("collector exited ({status}) at start:\n{}", self.stderr()),
                |t| {
                    format!(
                        "collector not listening after {} s:\n{}",
                        t.as_secs(),
                        self.stderr()
                    )
                },
            )
        })?;
        self.process = Some(process);
        Ok(())
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The agent arguments that deliver here (mTLS with the `agent` certificate).
    pub fn agent_args(&self, spool: &Path) -> Vec<String> {
        vec![
            "--collector".into(),
            self.url(),
            "--tls-dir".into(),
            self.certs.display().to_string(),
            "--spool-dir".into(),
            spool.display().to_string(),
        ]
    }

    /// The collector's log so far (all runs).
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Sends `sig` and waits for the exit.
    pub fn signal(&mut self, sig: i32) -> Result<std::process::ExitStatus> {
        let mut process = self.process.take().context("collector not running")?;
        process.signal(sig)?;
        process.wait()
    }

    /// The sink file's records (every complete line must be JSON). A last line without its
    /// newline is still being written, or was cut by a SIGKILL of the collector: not a record
    /// (yet), so it is left out. (Seen in the 6.1 VM, where a test read the sink right after
    /// killing the collector.)
    pub fn sink_records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.sink).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        complete
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("sink line is not JSON ({e}): {l:.300}"))
            })
            .collect()
    }

    /// Waits until `pred` holds for the sink's records; fails with both logs otherwise.
    pub fn wait_sink(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let recs = self.sink_records();
            if pred(&recs) {
                return Ok(recs);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not reached within {timeout:?} ({} sink records)\ncollector log:\n{}",
                    recs.len(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a short client command inside a pod; fails with its output if it fails.
pub fn run_in(lab: &Lab, pod: &str, program: &str, args: &[&str]) -> String {
    let mut cmd = lab.command(pod, program).expect("pod exists");
    cmd.args(args);
    let out = cmd.output().expect("client starts");
    assert!(
        out.status.success(),
        "{pod}: {program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The raw TCP client script.
pub fn rawclient() -> String {
    repo_root()
        .join("tests/clients/rawclient.py")
        .display()
        .to_string()
}

/// Records of one kind.
pub fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

pub use xtask::util::monotonic_s;

/// A file of the Vantage example (`deploy/examples/vantage/`): its inventory and policy.
pub fn vantage(name: &str) -> PathBuf {
    repo_root().join("deploy/examples/vantage").join(name)
}

/// A client script of `tests/clients/`.
pub fn client(name: &str) -> String {
    repo_root()
        .join("tests/clients")
        .join(name)
        .display()
        .to_string()
}
