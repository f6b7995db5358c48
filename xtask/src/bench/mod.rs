//! `cargo xtask bench`: the performance contract of docs/design.md#performance-contract, measured as ratios in one run.
//!
//! In the lab of `tests/fixtures/lab.yaml` (prefix `bnch`), with the release `monitor` binary,
//! it runs the same short phases under four variants, interleaved within each round:
//!
//! - **A**: no program attached (twice per round: **A1** and **A2**, the A/A pair whose ratio
//!   is the noise band);
//! - **K**: kernel side only: `monitor agent --drain-only` (programs attached, ring buffer
//!   drained and counted, no pipeline);
//! - **F**: the full agent (`monitor agent --policy <bench policy>`, records on a pipe read by
//!   the bench).
//!
//! Each variant runs, from pod `client-a` to nginx in pod `web`: wrk (closed loop, requests/s),
//! the open-loop client of [`client`] at a fixed rate (p50/p99 from the scheduled send time),
//! and iperf3 (bulk throughput). Even rounds run the variants in the reverse order, so a drift
//! of the machine during the run does not favour one of them. Then, once, with the full agent:
//! kernel ns per program run from bpf_stats (enabled only for that phase, then restored), and
//! detection latency (`tests/clients/lookups.py` from `client-b`: request written → its
//! `undocumented-endpoint` violation line on the agent's stdout).
//!
//! Completeness comes from the same wrk phases: for K, ring-buffer records drained versus the
//! kernel's loss counters; for F, `http` records versus the requests nginx served, and `loss`
//! records. The agent's CPU and peak RSS are read from `/proc/<pid>` around the wrk phase.
//!
//! A ratio whose distance from 1 is within the A/A noise band is reported as inconclusive.
//! Results go to a JSON file (default `<target>/bench/bench.json`) and a table on stdout.
//!
//! Its parts, one step each: `scenario` (the lab traffic: wrk, the open-loop client, iperf3,
//! nginx's counter, the detection probe), `run` (start to end: the lab, the interleaved
//! rounds, the zero-loss steps, bpf_stats and detection), `agent` (the agent on
//! [`crate::harness`] and what its stdout is counted for), `measure` (the figures and how they
//! are read: /proc, bpftool, ratios and verdicts), `present` (the table) and [`client`] (the
//! open-loop HTTP client).

mod agent;
pub mod client;
mod measure;
mod present;
mod run;
mod scenario;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use client::OpenLoopReport;
pub use measure::{AgentUse, Detection, KernelCost, Machine, Ratio, Run, Step, Wrk};
pub use run::run;

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
    /// Rounds of A1/K/F/A2.
    pub rounds: u32,
    /// Length of each wrk, open-loop and iperf3 phase.
    pub phase: Duration,
    /// Open-loop request rate (requests/s).
    pub rate: u32,
    /// Open-loop connections.
    pub conns: usize,
    /// Detection-latency lookups.
    pub lookups: u32,
    /// cgroup v2 mount (default: found in /proc/self/mountinfo).
    pub cgroup_mount: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            monitor_bin: None,
            out: None,
            prefix: BENCH_PREFIX.to_owned(),
            rounds: 3,
            phase: Duration::from_secs(5),
            rate: 2000,
            conns: 8,
            lookups: 100,
            cgroup_mount: None,
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
}

impl Variant {
    /// How the table and the progress lines name it.
    fn label(self) -> &'static str {
        match self {
            Self::A1 => "A1 (no program)",
            Self::A2 => "A2 (no program)",
            Self::K => "K (kernel side only)",
            Self::F => "F (full agent)",
        }
    }
}
