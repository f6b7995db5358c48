//! The bench's figures and how they are read: the result types (what `bench.json` holds),
//! the agent's CPU and peak RSS from `/proc/<pid>`, the programs' run counts and times from
//! bpftool with `kernel.bpf_stats_enabled`, and the machine's facts. The ratios, intervals
//! and verdicts are [`super::stats`]'s; the CPU counters [`super::cpu`]'s.

use std::process::Command;

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::Value;

use super::cpu::{CpuUse, Pinning, process_ns};
use super::peers::PeerUse;
use super::{OpenLoopReport, Variant};
use crate::util;

/// Names of the monitor's programs (monitor-ebpf/src/main.rs), as bpftool shows them.
pub(super) const PROGRAMS: [&str; 2] = ["monitor_egress", "monitor_ingress"];

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// CPU model name.
    pub cpu: String,
    /// CPUs available.
    pub cores: usize,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// 1-minute load average at the start and at the end of the bench.
    pub load_start: f64,
    /// See `load_start`.
    pub load_end: f64,
    /// The CPU pinning of the open-loop phase (`None`: not pinned).
    pub pinning: Option<Pinning>,
}

/// wrk's result.
#[derive(Debug, Clone, Serialize)]
pub struct Wrk {
    /// Requests per second (wrk's figure).
    pub rps: f64,
    /// Requests completed.
    pub requests: u64,
    /// Requests nginx served meanwhile (its stub_status counter).
    pub served: u64,
}

/// The agent's cost and completeness over the wrk phase.
#[derive(Debug, Clone, Serialize)]
pub struct AgentUse {
    /// CPU time (user + system) over the phase, % of one core.
    pub cpu_pct: f64,
    /// Records over the phase: ring-buffer records (K) or `http` records of the load (F).
    pub records: u64,
    /// `records` per second of the phase.
    pub records_per_s: f64,
    /// `cpu_pct` per 10k records/s.
    pub cpu_pct_per_10k: f64,
    /// Peak RSS (VmHWM) at the end of the phase, MiB.
    pub rss_peak_mib: f64,
    /// Losses over the phase: kernel loss counters (K) or `loss` records' counts (F).
    pub losses: u64,
    /// F: served requests without a record (0 when complete).
    pub missing: i64,
}

/// One variant's run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Round (1-based).
    pub round: u32,
    /// Which variant.
    pub variant: Variant,
    /// CPU of the open-loop phase at the fixed rate (the headline).
    pub cpu: CpuUse,
    /// The open-loop phase's latency.
    pub open_loop: OpenLoopReport,
    /// wrk.
    pub wrk: Wrk,
    /// iperf3 throughput, Gbit/s (received; not run under P1 and P2).
    pub iperf_gbps: Option<f64>,
    /// The agent's cost (K, F).
    pub agent: Option<AgentUse>,
    /// What the peer did (P1, P2).
    pub peer: Option<PeerUse>,
}

/// One step of the zero-loss search (open loop at a fixed rate).
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// K or F.
    pub variant: Variant,
    /// Open-loop rate, requests/s.
    pub rate: f64,
    /// Records per second (ring records for K, `http` records for F).
    pub records_per_s: f64,
    /// Losses (kernel counters for K, `loss` records for F).
    pub losses: u64,
    /// F: requests served without a record.
    pub missing: i64,
}

/// Kernel cost from bpf_stats.
#[derive(Debug, Clone, Serialize)]
pub struct KernelCost {
    /// Program runs over the phase (both programs).
    pub runs: u64,
    /// Mean ns per run (= per packet through a hook).
    pub ns_per_run: f64,
    /// Runs per HTTP exchange of the phase.
    pub runs_per_request: f64,
    /// Per program: name, runs, ns per run.
    pub programs: Vec<(String, u64, f64)>,
    /// wrk requests/s during the phase (bpf_stats on: not comparable with the rounds).
    pub rps: f64,
}

/// Detection latency.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// Lookups sent.
    pub sent: usize,
    /// Lookups whose violation arrived.
    pub detected: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

/// (CPU seconds, peak RSS KiB) of a process.
pub(super) fn proc_usage(pid: u32) -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the agent (pid {pid}) is gone"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3; utime and stime are fields 14 and 15.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // On-CPU time in ns per thread (schedstat) is exact; clock ticks are 10 ms steps.
    let cpu_s = process_ns(pid).map_or(ticks as f64 / hz, |ns| ns as f64 * 1e-9);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((cpu_s, hwm))
}

/// IDs of loaded programs named like the monitor's; with `pid`, only those that process holds.
pub(super) fn monitor_program_ids(pid: Option<u32>) -> Result<Vec<u64>> {
    let progs = bpftool_progs()?;
    Ok(progs
        .iter()
        .filter(|p| PROGRAMS.contains(&p["name"].as_str().unwrap_or_default()))
        .filter(|p| {
            pid.is_none_or(|pid| {
                p["pids"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["pid"].as_u64() == Some(u64::from(pid))))
            })
        })
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

/// `bpftool prog show --json`.
fn bpftool_progs() -> Result<Vec<Value>> {
    let out = util::output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    serde_json::from_str::<Vec<Value>>(&out).context("bpftool prog show --json")
}

/// (name, run_cnt, run_time_ns) of the programs `ids`.
pub(super) fn prog_stats(ids: &[u64]) -> Result<Vec<(String, u64, u64)>> {
    let progs = bpftool_progs()?;
    ids.iter()
        .map(|id| {
            let p = progs
                .iter()
                .find(|p| p["id"].as_u64() == Some(*id))
                .with_context(|| format!("program {id} is gone"))?;
            Ok((
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["run_cnt"].as_u64().unwrap_or(0),
                p["run_time_ns"].as_u64().unwrap_or(0),
            ))
        })
        .collect()
}

/// `kernel.bpf_stats_enabled` on while this lives; the previous value is restored on drop.
#[derive(Debug)]
pub(super) struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    /// Turns the statistics on, remembering the previous setting.
    pub(super) fn enable() -> Result<Self> {
        let previous = std::fs::read_to_string(BPF_STATS)
            .with_context(|| format!("cannot read {BPF_STATS}"))?
            .trim()
            .to_owned();
        std::fs::write(BPF_STATS, "1").with_context(|| format!("cannot write {BPF_STATS}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.previous) {
            crate::errln!(
                "cannot restore {BPF_STATS} to {}: {e} (run `sysctl kernel.bpf_stats_enabled={}`)",
                self.previous,
                self.previous
            );
        }
    }
}

/// The 1-minute load average (NaN if unreadable).
pub(super) fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The machine's kernel, CPU, cores, memory and load now.
pub(super) fn machine_facts() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let memory_mib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    let load = loadavg();
    Machine {
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        cpu,
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        memory_mib,
        load_start: load,
        load_end: load,
        pinning: None,
    }
}
