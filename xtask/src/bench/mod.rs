//! `cargo xtask bench`: the performance contract of docs/design.md#performance-contract, measured as ratios in one run.
//!
//! In the lab of `tests/fixtures/lab.yaml` (prefix `bnch`), with the release `monitor` binary,
//! it runs the same phases under six variants, interleaved within each round:
//!
//! - **A**: no program attached (twice per round: **A1** and **A2**, the A/A pair whose ratio
//!   is the noise band);
//! - **K**: kernel side only: `monitor agent --drain-only` (programs attached, ring buffer
//!   drained and counted, no pipeline);
//! - **F**: the full agent (`monitor agent --policy <bench policy>`, records on a pipe read by
//!   the bench);
//! - **P1**, **P2**: the peers of [`peers`]: an L7 proxy with access logs in front of nginx,
//!   and tcpdump writing the server pod's traffic to disk.
//!
//! Each variant runs, from pod `client-a` to nginx in pod `web` (through the proxy for P1):
//! first the open-loop client of [`client`] at a fixed, non-saturating rate, over which the
//! headline is measured, **CPU per request** of the lab's pods and the observer ([`cpu`];
//! the phase is CPU-pinned), with p50/p99 from the scheduled send time; then wrk (closed loop,
//! requests/s) and iperf3 (bulk throughput; A, K, F only). Even rounds run the variants in the
//! reverse order, so a drift of the machine during the run does not favour one of them. Then,
//! once, with the full agent: kernel ns per program run from bpf_stats (enabled only for that
//! phase, then restored), and detection latency (`tests/clients/lookups.py` from `client-b`:
//! request written → its `undocumented-endpoint` violation line on the agent's stdout).
//!
//! Each figure is a ratio to the round's A mean, averaged over the rounds with a 95%
//! confidence interval; a ratio within the A/A band, or whose interval contains 1, is
//! inconclusive ([`stats`]). Completeness comes from the wrk phases: for K, ring-buffer
//! records drained versus the kernel's loss counters; for F, `http` records versus the
//! requests nginx served, and `loss` records. The agent's CPU and peak RSS are read from
//! `/proc/<pid>` around the wrk phase. Results go to a JSON file (default
//! `<target>/bench/bench.json`) and a table on stdout.
//!
//! Its parts, one step each: `scenario` (the lab traffic: wrk, the open-loop client, iperf3,
//! nginx's counter, the detection probe), `run` (start to end: the lab, the interleaved
//! rounds, the zero-loss steps, bpf_stats and detection), `agent` (the agent on
//! [`crate::harness`] and what its stdout is counted for), [`peers`] (P1 and P2), [`cpu`]
//! (the CPU counters and the pinning), `measure` (the other figures and how they are read:
//! /proc, bpftool), [`stats`] (ratios, intervals, verdicts), `present` (the table) and
//! [`client`] (the open-loop HTTP client).

mod agent;
pub mod client;
pub mod cpu;
mod measure;
pub mod peers;
mod present;
mod run;
mod scenario;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use client::OpenLoopReport;
pub use cpu::{CpuUse, Pinning};
pub use measure::{AgentUse, Detection, KernelCost, Machine, Run, Step, Wrk};
pub use peers::PeerUse;
pub use run::run;
pub use stats::{Compared, Interval, Metric};

/// Lab prefix of the bench.
pub const BENCH_PREFIX: &str = "bnch";
/// How to run the bench.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The release `monitor` binary (default `<target>/release/monitor`).
    pub monitor_bin: Option<PathBuf>,
    /// JSON output (default `<target>/bench/bench.json`).
    pub out: Option<PathBuf>,
    /// Lab prefix.
    pub prefix: String,
    /// Rounds of A1/K/F/P1/P2/A2.
    pub rounds: u32,
    /// Length of each wrk and iperf3 phase.
    pub phase: Duration,
    /// Length of the open-loop phase (CPU per request, p50/p99).
    pub open_loop: Duration,
    /// Open-loop request rate (requests/s): fixed, below saturation.
    pub rate: u32,
    /// Open-loop connections.
    pub conns: usize,
    /// Detection-latency lookups.
    pub lookups: u32,
    /// cgroup v2 mount (default: found in /proc/self/mountinfo).
    pub cgroup_mount: Option<PathBuf>,
    /// Pin the open-loop phase's processes to CPUs ([`cpu::Pinning`]).
    pub pin: bool,
    /// Run the peers P1 and P2.
    pub peers: bool,
    /// Wall-time budget: a round that would end after it is skipped.
    pub budget: Duration,
    /// Other load (node − lab − observer − bench), in cores, above which an open-loop phase
    /// is disturbed ([`cpu`]).
    pub quiet: f64,
    /// How long to wait for the node to be quiet before running a disturbed phase again.
    pub quiet_wait: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            monitor_bin: None,
            out: None,
            prefix: BENCH_PREFIX.to_owned(),
            rounds: 10,
            phase: Duration::from_secs(3),
            open_loop: Duration::from_secs(5),
            rate: 2000,
            conns: 8,
            lookups: 100,
            cgroup_mount: None,
            pin: true,
            peers: true,
            budget: Duration::from_secs(20 * 60),
            quiet: 0.15,
            quiet_wait: Duration::from_secs(60),
        }
    }
}

/// One of the interleaved configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Variant {
    /// No program attached (first of the A/A pair).
    A1,
    /// No program attached (second of the A/A pair).
    A2,
    /// Kernel side only (`monitor agent --drain-only`).
    K,
    /// The full agent.
    F,
    /// Peer: an L7 proxy with access logs in front of the server.
    P1,
    /// Peer: tcpdump writing the server pod's traffic to disk.
    P2,
}

impl Variant {
    /// How the table and the progress lines name it.
    fn label(self) -> &'static str {
        match self {
            Self::A1 => "A1 (no program)",
            Self::A2 => "A2 (no program)",
            Self::K => "K (kernel side only)",
            Self::F => "F (full agent)",
            Self::P1 => "P1 (L7 proxy + log)",
            Self::P2 => "P2 (tcpdump -w)",
        }
    }
}
