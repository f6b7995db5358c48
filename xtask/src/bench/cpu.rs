//! CPU per request, the bench's headline: what the CPU counters say and how they are read,
//! and the CPU pinning of the open-loop phase.
//!
//! The headline counts, over one open-loop phase at a fixed rate, the CPU time of
//!
//! - every process of the lab's pods: cgroup v2 `cpu.stat` `usage_usec` of the lab's root
//!   cgroup (the client, nginx, and P1's proxy, which runs in the server pod), and
//! - the observer, which runs outside the lab's cgroups: the agent (K, F) or tcpdump (P2), the
//!   sum of its threads' on-CPU time (`/proc/<pid>/task/*/schedstat`),
//!
//! divided by the requests completed. Both counters are the scheduler's own runtime in ns, not
//! tick samples. Softirq work is in them where it runs in a task's context, which is where
//! the lab's packets are processed: a veth transmit queues the packet on the sender's CPU and
//! the receive softirq runs when the sender re-enables bottom halves, charged to the sender
//! (with `CONFIG_IRQ_TIME_ACCOUNTING` off, as on the bench machine; with it on, that time
//! would be in neither counter, and the node-wide figure below is the one to read).
//!
//! Why not `/proc/stat`'s busy jiffies for the headline: they are tick samples
//! (`CONFIG_TICK_CPU_ACCOUNTING`, 250 Hz; with NO_HZ an idle CPU has no tick, so the ~40 µs
//! bursts of a request between idle stretches are mostly missed: in a test they showed ~5%
//! of the CPU the cgroups counted), and they count every process of the machine, including
//! the builds of whoever else uses it. The secondary node-wide figure is therefore wall ×
//! CPUs − idle − steal, with each CPU's idle time from its cpuidle residency (µs; read on that
//! CPU) or `/proc/stat`'s idle + iowait (exact NO_HZ idle time, in 10 ms units); it holds what
//! the headline leaves out (the bench's own reader of the agent's records, writeback of P1's
//! log and P2's capture, interrupts taken on an idle CPU) and everything else that ran.
//!
//! Other load: the same readings give what everything else on the node used during the
//! phase (node − lab − observer − the bench itself: kernel threads, timers, and anyone else's
//! work, such as a build). Above `--quiet-pct` of one core the phase is *disturbed*: the bench
//! waits until the node is quiet again (up to `--quiet-wait-secs`) and runs it again, up to
//! three attempts; a phase disturbed on every attempt is kept in the JSON but left out of the
//! CPU figures. Someone else's build does not only take CPU: it evicts the request path's
//! caches and preempts it, which shows in the lab's own CPU per request, so such phases are
//! not comparable with quiet ones.
//!
//! Pinning (`--no-pin` turns it off): during the open-loop phase the lab's processes (client,
//! nginx, P1's proxy) run on the last allowed CPU, the observer (agent, tcpdump) and the
//! bench itself on the first, so the observer never takes CPU from the request path and the
//! request path's wakeups stay on one CPU. Afterwards everything gets every CPU back (wrk and
//! iperf3 saturate both).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

/// The `cpu` (all CPUs) line of `/proc/stat`, in clock ticks (`USER_HZ`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ProcStat {
    /// user (includes guest).
    pub(super) user: u64,
    /// nice (includes guest_nice).
    pub(super) nice: u64,
    /// system.
    pub(super) system: u64,
    /// idle.
    pub(super) idle: u64,
    /// iowait (idle with I/O pending).
    pub(super) iowait: u64,
    /// Hard interrupts.
    pub(super) irq: u64,
    /// Softirqs.
    pub(super) softirq: u64,
    /// Time the hypervisor gave this VM's CPUs to someone else.
    pub(super) steal: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat` (missing trailing fields count as 0, as
/// on old kernels).
pub(super) fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if f.len() < 4 {
        return None;
    }
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(ProcStat {
        user: at(0),
        nice: at(1),
        system: at(2),
        idle: at(3),
        iowait: at(4),
        irq: at(5),
        softirq: at(6),
        steal: at(7),
    })
}

/// `usage_usec` from a cgroup v2 `cpu.stat`.
pub(super) fn parse_usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// On-CPU ns, the first field of a `/proc/<pid>/task/<tid>/schedstat`.
pub(super) fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Sum over the process's threads of their on-CPU time, ns (`None` if it is gone or the
/// kernel has no schedstat).
pub(super) fn process_ns(pid: u32) -> Option<u64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        ns += parse_schedstat_ns(&text)?;
    }
    Some(ns)
}

/// Clock ticks per second of `/proc/stat`.
fn user_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// The lab's cgroups whose CPU is counted: the root (everything in the pods) and, for the
/// breakdown, the client's and the server's.
#[derive(Debug, Clone)]
pub(super) struct LabCgroups {
    /// The lab's root cgroup.
    pub(super) root: PathBuf,
    /// The client pod's.
    pub(super) client: PathBuf,
    /// The server pod's.
    pub(super) server: PathBuf,
}

/// `usage_usec` of the cgroup directory `dir`.
fn usage_usec(dir: &Path) -> Result<u64> {
    let stat = dir.join("cpu.stat");
    let text = std::fs::read_to_string(&stat)
        .with_context(|| format!("cannot read {}", stat.display()))?;
    parse_usage_usec(&text).with_context(|| format!("no usage_usec in {}:\n{text}", stat.display()))
}

/// Idle time of every CPU, µs: the cpuidle states' residency where the kernel has cpuidle,
/// each CPU's read while this thread runs on it (a CPU's residency is only added up when it
/// leaves idle, so a CPU in the middle of an idle stretch would be behind); else `/proc/stat`'s
/// idle + iowait (tracked exactly by NO_HZ, but shown in 10 ms units).
#[derive(Debug, Clone, Copy)]
struct NodeIdle {
    /// Sum over the CPUs, µs.
    idle_us: f64,
    /// How many CPUs.
    cpus: usize,
    /// `/proc/stat` steal, µs (in 10 ms units): time the host ran something else.
    steal_us: f64,
}

/// The CPUs that have a cpuidle directory, with it.
fn cpuidle_dirs() -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/sys/devices/system/cpu") else {
        return Vec::new();
    };
    let mut dirs: Vec<(usize, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("cpu")?.parse().ok()?;
            let dir = e.path().join("cpuidle");
            dir.is_dir().then_some((n, dir))
        })
        .collect();
    dirs.sort();
    dirs
}

/// Sum of `state*/time` (µs) under one CPU's cpuidle directory.
fn cpuidle_us(dir: &Path) -> Option<u64> {
    let mut us = 0;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("state"))
        {
            us += std::fs::read_to_string(e.path().join("time"))
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()?;
        }
    }
    Some(us)
}

impl NodeIdle {
    fn read() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        let stat = parse_proc_stat(&text).context("no cpu line in /proc/stat")?;
        let tick_us = 1e6 / user_hz();
        let steal_us = stat.steal as f64 * tick_us;
        let dirs = cpuidle_dirs();
        if !dirs.is_empty() {
            let mine = allowed_thread_cpus();
            let mut idle = Some(0u64);
            for (cpu, dir) in &dirs {
                let _ = set_thread_affinity(0, &cpu_set(&[*cpu]));
                idle = idle.zip(cpuidle_us(dir)).map(|(a, b)| a + b);
            }
            if let Ok(mine) = mine {
                let _ = set_thread_affinity(0, &mine);
            }
            if let Some(idle) = idle {
                return Ok(Self {
                    idle_us: idle as f64,
                    cpus: dirs.len(),
                    steal_us,
                });
            }
        }
        let cpus = text
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count();
        Ok(Self {
            idle_us: (stat.idle + stat.iowait) as f64 * tick_us,
            cpus,
            steal_us,
        })
    }
}

/// The calling thread's CPU mask.
fn allowed_thread_cpus() -> Result<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    Ok(set)
}

/// The CPU counters at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counters {
    /// The lab's root cgroup, the client's, the server's, µs.
    lab_us: [u64; 3],
    /// The observer's threads, ns (0 without one).
    observer_ns: u64,
    /// This process's threads (the bench, with its reader of the agent's records), ns.
    self_ns: u64,
    /// Every CPU's idle time.
    node: NodeIdle,
    /// When they were read.
    at: Instant,
}

impl Counters {
    /// Reads the lab's cgroups, the observer `observer` (the agent or tcpdump) and every
    /// CPU's idle time.
    pub(super) fn read(lab: &LabCgroups, observer: Option<u32>) -> Result<Self> {
        let at = Instant::now();
        let node = NodeIdle::read()?;
        let lab_us = [
            usage_usec(&lab.root)?,
            usage_usec(&lab.client)?,
            usage_usec(&lab.server)?,
        ];
        let observer_ns = match observer {
            Some(pid) => process_ns(pid).with_context(|| {
                format!("cannot read the on-CPU time of pid {pid} (/proc/{pid}/task/*/schedstat)")
            })?,
            None => 0,
        };
        let self_ns = process_ns(std::process::id()).unwrap_or(0);
        Ok(Self {
            lab_us,
            observer_ns,
            self_ns,
            node,
            at,
        })
    }
}

/// The CPU an open-loop phase took.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    /// The lab's pods (client, server, P1's proxy), µs.
    pub lab_us: f64,
    /// Of which the client pod, µs.
    pub client_us: f64,
    /// Of which the server pod (nginx, P1's proxy), µs.
    pub server_us: f64,
    /// The observer outside the pods (agent, tcpdump), µs.
    pub observer_us: f64,
    /// Requests completed in the phase.
    pub requests: u64,
    /// (lab + observer) / requests, µs: the headline.
    pub per_request_us: f64,
    /// Node-wide busy CPU (wall × CPUs − idle − steal; all processes), µs.
    pub node_us: f64,
    /// `node_us` / requests.
    pub node_per_request_us: f64,
    /// The bench's own threads, µs.
    pub self_us: f64,
    /// Everything else the node ran meanwhile (node − lab − observer − bench): the machine's
    /// own kernel threads and timers, and whatever else someone runs on it, µs.
    pub other_us: f64,
    /// Wall time between the two readings, s.
    pub wall_s: f64,
    /// Whether `other_us` exceeded the quiet threshold on every attempt (the phase is then
    /// left out of the CPU figures).
    pub disturbed: bool,
    /// Attempts made (a disturbed phase is run again after the machine is quiet).
    pub attempts: u32,
}

impl CpuUse {
    /// The CPU between `before` and `after` for `requests` completed requests.
    pub(super) fn between(before: &Counters, after: &Counters, requests: u64) -> Self {
        let d = |i: usize| after.lab_us[i].saturating_sub(before.lab_us[i]) as f64;
        let lab_us = d(0);
        let observer_us = after.observer_ns.saturating_sub(before.observer_ns) as f64 / 1e3;
        let wall_s = after.at.duration_since(before.at).as_secs_f64();
        let node_us = (wall_s * 1e6 * after.node.cpus as f64
            - (after.node.idle_us - before.node.idle_us)
            - (after.node.steal_us - before.node.steal_us))
            .max(0.0);
        let self_us = after.self_ns.saturating_sub(before.self_ns) as f64 / 1e3;
        let n = requests.max(1) as f64;
        Self {
            lab_us,
            client_us: d(1),
            server_us: d(2),
            observer_us,
            requests,
            per_request_us: (lab_us + observer_us) / n,
            node_us,
            node_per_request_us: node_us / n,
            self_us,
            other_us: (node_us - lab_us - observer_us - self_us).max(0.0),
            wall_s,
            disturbed: false,
            attempts: 1,
        }
    }

    /// The CPU of everything else, in cores (1.0 = one CPU busy all the time).
    pub(super) fn other_cores(&self) -> f64 {
        self.other_us / (self.wall_s * 1e6).max(1.0)
    }
}

/// Which CPUs the open-loop phase pins what to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pinning {
    /// The lab's processes (client, nginx, P1's proxy).
    pub lab: usize,
    /// The observer (agent, tcpdump) and the bench itself.
    pub observer: usize,
    /// Every CPU this process may run on (restored after the phase).
    pub all: Vec<usize>,
}

impl Pinning {
    /// From the CPUs allowed: the last for the lab, the first for the observer; `None` with
    /// fewer than two.
    pub(super) fn plan(allowed: &[usize]) -> Option<Self> {
        match allowed {
            [first, .., last] => Some(Self {
                lab: *last,
                observer: *first,
                all: allowed.to_vec(),
            }),
            _ => None,
        }
    }
}

/// The CPUs this process may run on.
pub(super) fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    let max = 8 * size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads `set` at an index below its size in bits.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// A cpu_set_t holding `cpus`.
pub(super) fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET ignores indexes beyond the set's size.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Sets the affinity of thread `tid` (0: the calling thread). Async-signal-safe: one system
/// call, no allocation (used in a `pre_exec` hook).
pub(super) fn set_thread_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; the call only reads it.
    let rc = unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets the affinity of every thread of process `pid` (threads it creates later inherit
/// their creator's).
pub(super) fn pin_process(pid: u32, cpus: &[usize]) -> Result<()> {
    let set = cpu_set(cpus);
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("pid {pid} is gone"))?;
    let mut pinned = 0;
    for t in tasks {
        let Ok(t) = t else { continue };
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A thread that exited meanwhile is not an error.
        match set_thread_affinity(tid, &set) {
            Ok(()) => pinned += 1,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e).with_context(|| format!("sched_setaffinity({tid})")),
        }
    }
    if pinned == 0 {
        bail!("pid {pid} has no thread left to pin");
    }
    Ok(())
}

/// The PID in a pid file (nginx's).
pub(super) fn read_pid_file(path: &Path) -> Result<u32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a PID: {text:?}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat() {
        let text = "cpu  435466 83586 77296 237236 2209 10 2602 959 7 0\n\
                    cpu0 212563 44001 35693 124895 620 0 1312 480 0 0\n\
                    intr 1 2 3\nctxt 99\n";
        let s = parse_proc_stat(text).unwrap();
        assert_eq!(
            s,
            ProcStat {
                user: 435_466,
                nice: 83_586,
                system: 77_296,
                idle: 237_236,
                iowait: 2209,
                irq: 10,
                softirq: 2602,
                steal: 959,
            }
        );
        // An old kernel's four fields; no aggregate line; garbage.
        let old = parse_proc_stat("cpu  1 2 3 4\n").unwrap();
        assert_eq!((old.idle, old.iowait, old.steal), (4, 0, 0));
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 x 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2\n"), None);
    }

    #[test]
    fn cgroup_and_schedstat() {
        let text = "usage_usec 6056190719\nuser_usec 5216208999\nsystem_usec 839981720\n";
        assert_eq!(parse_usage_usec(text), Some(6_056_190_719));
        assert_eq!(parse_usage_usec("user_usec 5\n"), None);
        assert_eq!(
            parse_schedstat_ns("123456789 2257732 17\n"),
            Some(123_456_789)
        );
        assert_eq!(parse_schedstat_ns(""), None);
    }

    #[test]
    fn cpu_between_readings() {
        let at = Instant::now();
        let node = |idle_us, steal_us| NodeIdle {
            idle_us,
            cpus: 2,
            steal_us,
        };
        let before = Counters {
            lab_us: [1_000_000, 600_000, 400_000],
            observer_ns: 5_000_000_000,
            self_ns: 1_000_000,
            node: node(1e9, 0.0),
            at,
        };
        let after = Counters {
            lab_us: [1_400_000, 850_000, 550_000],
            observer_ns: 5_100_000_000,
            self_ns: 51_000_000,
            // 5 s on 2 CPUs: 10 s, of which 8.99 s idle and 10 ms stolen.
            node: node(1e9 + 8.99e6, 1e4),
            at: at + std::time::Duration::from_secs(5),
        };
        let c = CpuUse::between(&before, &after, 10_000);
        assert_eq!(c.lab_us, 400_000.0);
        assert_eq!((c.client_us, c.server_us), (250_000.0, 150_000.0));
        assert_eq!(c.observer_us, 100_000.0);
        assert_eq!(c.per_request_us, 50.0);
        assert!((c.node_us - 1e6).abs() < 1e-6, "{}", c.node_us);
        assert!((c.node_per_request_us - 100.0).abs() < 1e-9);
        assert_eq!(c.wall_s, 5.0);
        // 1 s busy = 0.4 lab + 0.1 observer + 0.05 bench + 0.45 everything else.
        assert!((c.other_us - 450_000.0).abs() < 1e-6, "{}", c.other_us);
        assert!((c.other_cores() - 0.09).abs() < 1e-9);
    }

    #[test]
    fn pinning_plan() {
        assert_eq!(Pinning::plan(&[0]), None);
        assert_eq!(
            Pinning::plan(&[0, 1]),
            Some(Pinning {
                lab: 1,
                observer: 0,
                all: vec![0, 1]
            })
        );
        assert_eq!(
            Pinning::plan(&[2, 3, 5]).map(|p| (p.lab, p.observer)),
            Some((5, 2))
        );
        let set = cpu_set(&[0, 3]);
        // SAFETY: indexes below the set's size.
        assert!(unsafe { libc::CPU_ISSET(3, &set) && !libc::CPU_ISSET(1, &set) });
    }
}
