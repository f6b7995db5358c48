//! The lab's state file, `/run/monitor-lab/<prefix>.json`, and teardown from it.
//!
//! Everything the lab creates is recorded here *before* it is created (processes right after
//! spawn, with their start time), so that `Lab::down`, `Drop`, a failed `up` and
//! `cargo xtask lab down` after a crash all remove exactly what was created, and nothing else:
//! a PID is only signalled if its start time still matches (no PID reuse accidents).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::util;

/// Directory holding the state files and the per-lab run directories.
pub const STATE_DIR: &str = "/run/monitor-lab";

/// Version of the state file format.
const STATE_VERSION: u32 = 1;

/// What a lab created, in creation order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Lab name prefix.
    pub prefix: String,
    /// Inventory the lab was built from.
    pub inventory: PathBuf,
    /// cgroup2 mount the lab used.
    pub cgroup_mount: PathBuf,
    /// The lab's root cgroup (what the agent attaches to).
    pub root_cgroup: PathBuf,
    /// Run directory (configs, logs, static files).
    pub run_dir: PathBuf,
    /// Process that owns the lab and tears it down on exit; `None` once detached
    /// (`cargo xtask lab up`), or when that process has gone.
    pub owner: Option<ProcessId>,
    /// Network namespaces, in creation order.
    pub netns: Vec<String>,
    /// Cgroup directories we created, in creation order (parents first).
    pub cgroups: Vec<PathBuf>,
    /// Long-running processes started in the lab.
    pub processes: Vec<LabProcess>,
}

/// A PID together with its start time: identifies one process across PID reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// PID.
    pub pid: u32,
    /// Start time (clock ticks after boot, `/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl ProcessId {
    /// Identity of a running process; `None` if it does not exist.
    pub fn of(pid: u32) -> Option<Self> {
        util::process_start_time(pid).map(|start_time| Self { pid, start_time })
    }

    /// Whether this very process is still running (same PID *and* start time, not a zombie).
    pub fn running(&self) -> bool {
        util::process_start_time(self.pid) == Some(self.start_time)
            && util::process_running(self.pid)
    }
}

/// A process started in the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabProcess {
    /// Identity.
    pub id: ProcessId,
    /// Pod (or external) it runs in.
    pub pod: String,
    /// What it is, for messages (e.g. `nginx:80`).
    pub what: String,
}

impl State {
    /// A fresh state for a lab about to be built.
    pub fn new(prefix: &str, inventory: &Path, cgroup_mount: &Path) -> Self {
        Self {
            version: STATE_VERSION,
            prefix: prefix.to_string(),
            inventory: inventory.to_path_buf(),
            cgroup_mount: cgroup_mount.to_path_buf(),
            root_cgroup: cgroup_mount.join(prefix),
            run_dir: Path::new(STATE_DIR).join(prefix),
            owner: ProcessId::of(std::process::id()),
            netns: Vec::new(),
            cgroups: Vec::new(),
            processes: Vec::new(),
        }
    }

    /// Path of the state file of lab `prefix`.
    pub fn path(prefix: &str) -> PathBuf {
        Path::new(STATE_DIR).join(format!("{prefix}.json"))
    }

    /// Loads the state of lab `prefix`; `Ok(None)` if there is none.
    pub fn load(prefix: &str) -> Result<Option<Self>> {
        let path = Self::path(prefix);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let state: Self = serde_json::from_str(&text)
            .with_context(|| format!("corrupt lab state file {}", path.display()))?;
        if state.version != STATE_VERSION {
            bail!(
                "{}: state format version {} (this xtask understands {STATE_VERSION})",
                path.display(),
                state.version
            );
        }
        Ok(Some(state))
    }

    /// Creates the state file, failing if it already exists: claims the prefix.
    pub fn claim(&self) -> Result<()> {
        let path = Self::path(&self.prefix);
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("cannot create {STATE_DIR}"))?;
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "lab {:?} is already up or being built (state file {} exists); remove it with \
                 `cargo xtask lab down --prefix {}`",
                self.prefix,
                path.display(),
                self.prefix
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        };
        std::io::Write::write_all(&mut f, serde_json::to_string_pretty(self)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Writes the state file atomically (temp file + rename).
    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.prefix);
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("cannot create {STATE_DIR}"))?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Whether nothing is left to remove.
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty() && self.cgroups.is_empty() && self.processes.is_empty()
    }

    /// Removes everything recorded, in order: processes (SIGTERM, then SIGKILL after a grace
    /// period; only if PID and start time match), network namespaces (newest first), cgroups
    /// (deepest first), the run directory, and finally the state file. Items that could not be
    /// removed stay in the state file and are listed in the error. `children` are `Child`
    /// handles we own for some of the processes, reaped here so they do not linger as zombies.
    pub fn teardown(&mut self, children: &mut Vec<Child>) -> Result<()> {
        let mut errors = Vec::new();

        if let Err(e) = self.stop_processes(children) {
            errors.push(format!("{e:#}"));
        }

        let mut kept = Vec::new();
        for ns in self.netns.drain(..).rev() {
            if !Path::new("/run/netns").join(&ns).exists() {
                continue;
            }
            let out =
                util::output_raw(std::process::Command::new("ip").args(["netns", "del", &ns]));
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    errors.push(format!(
                        "`ip netns del {ns}` failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ));
                    kept.push(ns);
                }
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    kept.push(ns);
                }
            }
        }
        kept.reverse();
        self.netns = kept;

        let mut kept = Vec::new();
        for cg in self.cgroups.drain(..).rev() {
            if let Err(e) = remove_cgroup(&cg) {
                errors.push(format!("{e:#}"));
                kept.push(cg);
            }
        }
        kept.reverse();
        self.cgroups = kept;

        if self.run_dir.starts_with(STATE_DIR) && self.run_dir != Path::new(STATE_DIR) {
            match std::fs::remove_dir_all(&self.run_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("cannot remove {}: {e}", self.run_dir.display())),
            }
        }

        if errors.is_empty() {
            match std::fs::remove_file(Self::path(&self.prefix)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => bail!("cannot remove {}: {e}", Self::path(&self.prefix).display()),
            }
        } else {
            let saved = self.save();
            bail!(
                "lab {:?} was not fully removed:\n  - {}\n{}",
                self.prefix,
                errors.join("\n  - "),
                match saved {
                    Ok(()) => format!(
                        "what is left is recorded in {}; retry with `cargo xtask lab down --prefix {}`",
                        Self::path(&self.prefix).display(),
                        self.prefix
                    ),
                    Err(e) => format!("and the state file could not be updated: {e:#}"),
                }
            )
        }
    }

    fn stop_processes(&mut self, children: &mut Vec<Child>) -> Result<()> {
        let live: Vec<LabProcess> = self
            .processes
            .iter()
            .filter(|p| p.id.running())
            .cloned()
            .collect();
        for p in &live {
            util::signal(p.id.pid, libc::SIGTERM)?;
        }
        let wait_all = |deadline: Instant, children: &mut Vec<Child>| {
            loop {
                children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
                if live.iter().all(|p| !p.id.running()) || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_all(Instant::now() + Duration::from_secs(3), children);
        for p in live.iter().filter(|p| p.id.running()) {
            crate::errln!(
                "lab {}: {} in {} (pid {}) ignored SIGTERM, sending SIGKILL",
                self.prefix,
                p.what,
                p.pod,
                p.id.pid
            );
            util::signal(p.id.pid, libc::SIGKILL)?;
        }
        wait_all(Instant::now() + Duration::from_secs(3), children);
        // Children we own are reaped (wait) so no zombie is left behind.
        for c in children.iter_mut() {
            let _ = c.wait();
        }
        children.clear();
        let survivors: Vec<String> = live
            .iter()
            .filter(|p| p.id.running())
            .map(|p| format!("{} in {} (pid {})", p.what, p.pod, p.id.pid))
            .collect();
        self.processes.retain(|p| p.id.running());
        if !survivors.is_empty() {
            bail!(
                "processes still running after SIGKILL: {}",
                survivors.join(", ")
            );
        }
        Ok(())
    }
}

/// Removes one (empty) cgroup directory. A cgroup whose last process just exited can be busy
/// for a moment, so EBUSY is retried briefly; then the error lists who is still inside.
fn remove_cgroup(cg: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(cg) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
                let procs: Vec<String> = procs
                    .split_whitespace()
                    .map(|pid| {
                        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .unwrap_or_default();
                        format!("{pid} ({})", comm.trim())
                    })
                    .collect();
                if procs.is_empty() {
                    bail!("cannot remove cgroup {}: {e}", cg.display());
                }
                bail!(
                    "cannot remove cgroup {}: {e}; processes still in it, not tracked by the lab \
                     (stop them, then run `cargo xtask lab down`): {}",
                    cg.display(),
                    procs.join(", ")
                );
            }
        }
    }
}
