//! `cargo xtask bench`: the performance contract of DESIGN §6, measured as ratios in one run.
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

pub mod client;

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::lab::{Lab, LabOptions};
use crate::util;

pub use client::OpenLoopReport;

/// Lab prefix of the bench.
pub const BENCH_PREFIX: &str = "bnch";
/// The pod that drives the load.
const CLIENT: &str = "client-a";
/// The pod whose lookups are the detection-latency probe.
const PROBE: &str = "client-b";
/// The server pod (nginx on :80).
const SERVER: &str = "web";
/// The external host that reads nginx's counters (not monitored).
const OUTSIDE: &str = "ext";
/// nginx route used by the load (100-byte body).
const ROUTE: &str = "/small";
/// iperf3 port in the server pod.
const IPERF_PORT: u16 = 5201;
/// Wall-time budget: a round is skipped if it would end after this.
const BUDGET: Duration = Duration::from_secs(280);
/// What the bench policy makes of the probe's lookups: each one an immediate violation.
const LOOKUP: &str = "/internal/lookup";
/// The full agent's policy: `/internal/` is protected and nothing under it is documented, so
/// every lookup there is an `undocumented-endpoint` violation; the load's `/small` is outside
/// it and goes through the whole policy evaluation without a finding.
const POLICY: &str = "version: 1\nprotected_prefixes: [/internal/]\n";
/// Names of the monitor's programs (monitor-ebpf/src/main.rs), as bpftool shows them.
const PROGRAMS: [&str; 2] = ["monitor_egress", "monitor_ingress"];

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
    fn label(self) -> &'static str {
        match self {
            Self::A1 => "A1 (no program)",
            Self::A2 => "A2 (no program)",
            Self::K => "K (kernel side only)",
            Self::F => "F (full agent)",
        }
    }
}

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
    /// wrk.
    pub wrk: Wrk,
    /// Open-loop latency.
    pub open_loop: OpenLoopReport,
    /// iperf3 throughput, Gbit/s (received).
    pub iperf_gbps: f64,
    /// The agent's cost (K, F).
    pub agent: Option<AgentUse>,
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

/// Runs the bench.
pub fn run(opts: &BenchOptions) -> Result<()> {
    let started = Instant::now();
    util::require_root("the bench")?;
    let target = util::target_dir()?;
    let bin = opts
        .monitor_bin
        .clone()
        .unwrap_or_else(|| target.join("release/monitor"));
    if !bin.is_file() {
        bail!(
            "monitor binary {} not found: build it with `cargo build --release -p monitor` (or \
             pass --monitor-bin)",
            bin.display()
        );
    }
    for tool in ["wrk", "iperf3", "bpftool", "curl", "python3", "nsenter"] {
        if util::output(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            bail!("{tool} is not installed (`cargo xtask setup` installs it)");
        }
    }
    let out_path = opts
        .out
        .clone()
        .unwrap_or_else(|| target.join("bench/bench.json"));
    let mut machine = machine_facts();
    crate::outln!(
        "bench: {} ({} cores, {}, {} MiB), load {:.2}; monitor {}",
        machine.kernel,
        machine.cores,
        machine.cpu,
        machine.memory_mib,
        machine.load_start,
        bin.display()
    );
    // A previous bench that crashed may have left its lab behind.
    let _ = crate::lab::down_from_state(&opts.prefix);
    let mut lab = Lab::up(&LabOptions {
        inventory: crate::repo_root().join("tests/fixtures/lab.yaml"),
        prefix: opts.prefix.clone(),
        cgroup_mount: opts.cgroup_mount.clone(),
    })?;
    let policy = lab.run_dir().join("bench-policy.yaml");
    std::fs::write(&policy, POLICY)?;
    let server_ip = lab.pod_ip(SERVER)?;
    let mut iperf_cmd = lab.command(SERVER, "iperf3")?;
    iperf_cmd
        .args([
            "-s",
            "-B",
            &server_ip.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let iperf_server = ChildGuard(lab.spawn(SERVER, iperf_cmd)?);
    lab.wait_tcp(CLIENT, server_ip, IPERF_PORT, Duration::from_secs(10))?;
    let ctx = Ctx {
        lab: &lab,
        bin: &bin,
        policy: &policy,
        server_ip,
        opts,
    };
    // Warm-up: nginx, the page cache, the CPU frequency.
    ctx.wrk(Duration::from_secs(1))?;

    let mut runs = Vec::new();
    let mut rounds_done = 0;
    let orders = [
        [Variant::A1, Variant::K, Variant::F, Variant::A2],
        [Variant::A2, Variant::F, Variant::K, Variant::A1],
    ];
    for round in 1..=opts.rounds.max(1) {
        if round > 1 {
            let per_round = started.elapsed().as_secs_f64() / f64::from(round - 1);
            let tail = 15.0 + opts.phase.as_secs_f64() * 2.0;
            if started.elapsed().as_secs_f64() + per_round + tail > BUDGET.as_secs_f64() {
                crate::outln!(
                    "round {round} skipped: it would take the bench past {}s",
                    BUDGET.as_secs()
                );
                break;
            }
        }
        for v in orders[(round as usize - 1) % 2] {
            util::check_interrupted()?;
            let r = ctx.run_variant(round, v)?;
            crate::outln!(
                "  round {round} {:<22} wrk {:>8.0} req/s  open-loop p50 {:>6.0} µs p99 {:>7.0} µs  iperf3 {:>6.2} Gbit/s{}",
                v.label(),
                r.wrk.rps,
                r.open_loop.p50_us,
                r.open_loop.p99_us,
                r.iperf_gbps,
                r.agent
                    .as_ref()
                    .map(|a| format!(
                        "  agent {:.1}% CPU, {:.0} rec/s, {:.1} MiB, losses {}, missing {}",
                        a.cpu_pct, a.records_per_s, a.rss_peak_mib, a.losses, a.missing
                    ))
                    .unwrap_or_default()
            );
            runs.push(r);
        }
        rounds_done = round;
    }
    util::check_interrupted()?;
    // Where wrk at full rate lost records, step an open-loop rate down to the highest one
    // without loss (K and F separately).
    let mut steps = Vec::new();
    for v in [Variant::K, Variant::F] {
        let lossy = runs
            .iter()
            .filter_map(|r| r.agent.as_ref().filter(|_| r.variant == v))
            .any(|a| a.losses > 0 || a.missing > 0);
        if lossy && started.elapsed() + Duration::from_secs(40) < BUDGET {
            steps.extend(ctx.step_down(v, runs.iter().map(|r| r.wrk.rps).fold(0.0, f64::max))?);
        }
    }
    let (kernel, detection) = ctx.kernel_and_detection()?;
    drop(iperf_server);
    lab.down()?;
    machine.load_end = loadavg();
    let wall = started.elapsed();

    let summary = summarize(&runs);
    let report = json!({
        "command": "cargo xtask bench",
        "machine": machine,
        "settings": {
            "rounds": rounds_done,
            "phase_s": opts.phase.as_secs_f64(),
            "wrk": format!("wrk -t1 -c16 -d{}s http://{server_ip}{ROUTE}", opts.phase.as_secs()),
            "open_loop_rate": opts.rate,
            "open_loop_conns": opts.conns,
            "iperf3": format!("iperf3 -c {server_ip} -t {}", opts.phase.as_secs()),
            "lookups": opts.lookups,
        },
        "wall_s": wall.as_secs_f64(),
        "summary": summary,
        "kernel": kernel,
        "detection": detection,
        "zero_loss_steps": steps,
        "runs": runs,
    });
    if let Some(dir) = out_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&out_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out_path.display()))?;
    crate::outln!();
    crate::outln!(
        "{}",
        table(
            &machine,
            &summary,
            &kernel,
            &detection,
            &runs,
            &steps,
            rounds_done,
            wall
        )
    );
    crate::outln!("results: {}", out_path.display());
    Ok(())
}

/// Kills and reaps a child we started (by PID) when dropped.
#[derive(Debug)]
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

struct Ctx<'a> {
    lab: &'a Lab,
    bin: &'a Path,
    policy: &'a Path,
    server_ip: IpAddr,
    opts: &'a BenchOptions,
}

impl Ctx<'_> {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server_ip)
    }

    /// wrk from the client pod for `d`: (requests/s, requests).
    fn wrk(&self, d: Duration) -> Result<(f64, u64)> {
        let mut cmd = self.lab.command(CLIENT, "wrk")?;
        cmd.args(["-t1", "-c16", &format!("-d{}s", d.as_secs().max(1))])
            .arg(self.url(ROUTE));
        let out = util::output(&mut cmd)?;
        parse_wrk(&out).with_context(|| format!("unexpected wrk output:\n{out}"))
    }

    /// nginx's served-request counter, read from the unmonitored external host.
    fn served(&self) -> Result<u64> {
        let mut cmd = self.lab.command(OUTSIDE, "curl")?;
        cmd.args(["-sS", "--max-time", "5"])
            .arg(self.url("/nginx_status"));
        let status = util::output(&mut cmd)?;
        status
            .lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unexpected stub_status output: {status}"))
    }

    fn open_loop(&self, rate: u32, d: Duration) -> Result<OpenLoopReport> {
        self.open_loop_at(rate, d, self.opts.conns)
    }

    fn open_loop_at(&self, rate: u32, d: Duration, conns: usize) -> Result<OpenLoopReport> {
        let exe = std::env::current_exe().context("cannot find the xtask binary")?;
        let exe = exe
            .to_str()
            .context("the xtask binary's path is not UTF-8")?;
        let mut cmd = self.lab.command(CLIENT, exe)?;
        cmd.args([
            "bench-client",
            "--addr",
            &SocketAddr::new(self.server_ip, 80).to_string(),
            "--path",
            ROUTE,
            "--rate",
            &rate.to_string(),
            "--secs",
            &d.as_secs_f64().to_string(),
            "--conns",
            &conns.to_string(),
        ]);
        let out = util::output(&mut cmd)?;
        serde_json::from_str(out.trim())
            .with_context(|| format!("unexpected open-loop client output:\n{out}"))
    }

    fn iperf(&self, d: Duration) -> Result<f64> {
        let mut cmd = self.lab.command(CLIENT, "iperf3")?;
        cmd.args([
            "-c",
            &self.server_ip.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &d.as_secs().max(1).to_string(),
            "-J",
        ]);
        let out = util::output(&mut cmd)?;
        let v: Value = serde_json::from_str(&out)
            .with_context(|| format!("unexpected iperf3 output:\n{out:.2000}"))?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .with_context(|| format!("no end.sum_received in iperf3's output:\n{out:.2000}"))
    }

    fn start_agent(&self, mode: Variant) -> Result<BenchAgent> {
        BenchAgent::start(self.bin, self.lab, self.policy, mode)
    }

    fn run_variant(&self, round: u32, variant: Variant) -> Result<Run> {
        let phase = self.opts.phase;
        let mut agent = match variant {
            Variant::K | Variant::F => Some(self.start_agent(variant)?),
            Variant::A1 | Variant::A2 => None,
        };
        // wrk: throughput, and the agent's cost and completeness under it.
        let before = agent.as_ref().map(BenchAgent::snapshot).transpose()?;
        let served0 = self.served()?;
        let t0 = Instant::now();
        let (rps, requests) = self.wrk(phase)?;
        let wall = t0.elapsed().as_secs_f64();
        let during = agent.as_ref().map(BenchAgent::snapshot).transpose()?;
        let served1 = self.served()?;
        let served = (served1 - served0).saturating_sub(1);
        let agent_use = match (&mut agent, before, during) {
            (Some(a), Some(before), Some(during)) => {
                // Records of the last exchanges (and a drain-only agent's next count line,
                // printed once a second) arrive after wrk ends.
                let settled = a.settle(Duration::from_millis(1300))?;
                let records = match variant {
                    Variant::K => settled.ring_records - before.ring_records,
                    _ => settled.http_load - before.http_load,
                };
                let losses = settled.losses - before.losses;
                let cpu_pct = (during.cpu_s - before.cpu_s) / wall * 100.0;
                let records_per_s = records as f64 / wall;
                Some(AgentUse {
                    cpu_pct,
                    records,
                    records_per_s,
                    cpu_pct_per_10k: if records_per_s > 0.0 {
                        cpu_pct / (records_per_s / 1e4)
                    } else {
                        0.0
                    },
                    rss_peak_mib: during.rss_peak_kib as f64 / 1024.0,
                    losses,
                    missing: if variant == Variant::F {
                        served as i64 - records as i64
                    } else {
                        0
                    },
                })
            }
            _ => None,
        };
        let open_loop = self.open_loop(self.opts.rate, phase)?;
        let iperf_gbps = self.iperf(phase)?;
        if let Some(a) = agent.take() {
            a.stop()?;
        }
        Ok(Run {
            round,
            variant,
            wrk: Wrk {
                rps,
                requests,
                served,
            },
            open_loop,
            iperf_gbps,
            agent: agent_use,
        })
    }

    /// Open-loop steps at 3/4, 1/2, 1/4 of `max_rps` with one agent of `variant`, until one
    /// has no loss.
    fn step_down(&self, variant: Variant, max_rps: f64) -> Result<Vec<Step>> {
        let mut agent = self.start_agent(variant)?;
        let mut steps = Vec::new();
        let d = Duration::from_secs(3);
        for f in [0.75, 0.5, 0.25] {
            util::check_interrupted()?;
            let rate = (max_rps * f).max(100.0);
            let before = agent.settle(Duration::ZERO)?;
            let served0 = self.served()?;
            let t0 = Instant::now();
            self.open_loop_at(rate as u32, d, 16)?;
            let wall = t0.elapsed().as_secs_f64();
            let served = (self.served()? - served0).saturating_sub(1);
            let after = agent.settle(Duration::from_millis(1300))?;
            let records = match variant {
                Variant::K => after.ring_records - before.ring_records,
                _ => after.http_load - before.http_load,
            };
            let step = Step {
                variant,
                rate,
                records_per_s: records as f64 / wall,
                losses: after.losses - before.losses,
                missing: if variant == Variant::F {
                    served as i64 - records as i64
                } else {
                    0
                },
            };
            crate::outln!(
                "  zero-loss step {variant:?} at {rate:.0} req/s: {:.0} records/s, losses {}, missing {}",
                step.records_per_s,
                step.losses,
                step.missing
            );
            let clean = step.losses == 0 && step.missing <= 0;
            steps.push(step);
            if clean {
                break;
            }
        }
        agent.stop()?;
        Ok(steps)
    }

    /// bpf_stats under wrk with the full agent, then detection latency with the same agent.
    fn kernel_and_detection(&self) -> Result<(KernelCost, Detection)> {
        let before_ids = monitor_program_ids(None)?;
        let agent = self.start_agent(Variant::F)?;
        let mut ids = monitor_program_ids(Some(agent.pid))?;
        if ids.is_empty() {
            // bpftool without PID support: the programs that appeared since the agent started.
            ids = monitor_program_ids(None)?
                .into_iter()
                .filter(|i| !before_ids.contains(i))
                .collect();
        }
        if ids.len() != PROGRAMS.len() {
            bail!("cannot find the agent's two programs in `bpftool prog show` (found {ids:?})");
        }
        let (s0, s1, rps, requests) = {
            let _stats = BpfStats::enable()?;
            let s0 = prog_stats(&ids)?;
            let (rps, requests) = self.wrk(self.opts.phase)?;
            let s1 = prog_stats(&ids)?;
            (s0, s1, rps, requests)
        };
        let mut programs = Vec::new();
        let (mut runs, mut ns) = (0u64, 0u64);
        for (name, cnt1, ns1) in &s1 {
            let (_, cnt0, ns0) = s0
                .iter()
                .find(|(n, ..)| n == name)
                .context("program vanished")?;
            let (c, t) = (cnt1 - cnt0, ns1 - ns0);
            runs += c;
            ns += t;
            programs.push((name.clone(), c, t as f64 / c.max(1) as f64));
        }
        let kernel = KernelCost {
            runs,
            ns_per_run: ns as f64 / runs.max(1) as f64,
            runs_per_request: runs as f64 / requests.max(1) as f64,
            programs,
            rps,
        };
        crate::outln!(
            "  bpf_stats under wrk (full agent): {:.0} ns per program run, {:.1} runs per request",
            kernel.ns_per_run,
            kernel.runs_per_request
        );
        // Detection latency: each lookup is a new route under the protected prefix, so each is
        // written at once (never aggregated).
        let lookups = crate::repo_root().join("tests/clients/lookups.py");
        let mut cmd = self.lab.command(PROBE, "python3")?;
        cmd.arg(&lookups).args([
            &self.server_ip.to_string(),
            "80",
            LOOKUP,
            &self.opts.lookups.to_string(),
            "10",
            "20",
        ]);
        let out = util::output(&mut cmd)?;
        let mut sent = std::collections::HashMap::new();
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [i, t, _status] = f[..] {
                sent.insert(format!("{LOOKUP}/{i}"), t.parse::<f64>()?);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while agent.shared.violations.lock().map(|v| v.len()).unwrap_or(0) < sent.len()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut lat: Vec<f64> = {
            let v = agent
                .shared
                .violations
                .lock()
                .map_err(|_| anyhow::anyhow!("lock"))?;
            let mut seen = std::collections::HashSet::new();
            v.iter()
                .filter(|(_, route)| seen.insert(route.clone()))
                .filter_map(|(at, route)| sent.get(route).map(|t| (at - t) * 1e3))
                .collect()
        };
        agent.stop()?;
        lat.sort_by(f64::total_cmp);
        let detection = Detection {
            sent: sent.len(),
            detected: lat.len(),
            p50_ms: client::quantile(&lat, 0.5),
            p99_ms: client::quantile(&lat, 0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
        };
        crate::outln!(
            "  detection latency: {}/{} lookups detected, p50 {:.2} ms, p99 {:.2} ms",
            detection.detected,
            detection.sent,
            detection.p50_ms,
            detection.p99_ms
        );
        Ok((kernel, detection))
    }
}

/// `(requests/s, requests)` from wrk's output.
fn parse_wrk(out: &str) -> Option<(f64, u64)> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((rps, requests))
}

/// What the agent's stdout reader has counted.
#[derive(Debug, Default)]
struct Shared {
    /// `http` records of the load's route.
    http_load: AtomicU64,
    /// Sum of `count` over `loss` records.
    losses: AtomicU64,
    /// Latest drain-only line: (line number, ring records, kernel losses).
    drain: Mutex<(u64, u64, u64)>,
    /// Violations: (CLOCK_MONOTONIC arrival, route).
    violations: Mutex<Vec<(f64, String)>>,
}

/// Counts at one moment.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    cpu_s: f64,
    rss_peak_kib: u64,
    ring_records: u64,
    http_load: u64,
    losses: u64,
    drain_line: u64,
}

/// A running `monitor agent` (K: `--drain-only`; F: full, with the bench policy).
#[derive(Debug)]
struct BenchAgent {
    child: Child,
    pid: u32,
    variant: Variant,
    shared: Arc<Shared>,
    reader: Option<std::thread::JoinHandle<()>>,
    log: PathBuf,
}

impl BenchAgent {
    fn start(bin: &Path, lab: &Lab, policy: &Path, variant: Variant) -> Result<Self> {
        let ready = lab.run_dir().join("agent-ready");
        let log = lab.run_dir().join("agent.log");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(bin);
        cmd.arg("agent")
            .arg("--inventory")
            .arg(lab.inventory_path())
            .arg("--cgroup")
            .arg(lab.attach_cgroup())
            .arg("--ready-file")
            .arg(&ready);
        match variant {
            Variant::K => {
                cmd.arg("--drain-only");
            }
            _ => {
                cmd.arg("--policy").arg(policy);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", util::display_cmd(&cmd)))?;
        let pid = child.id();
        let shared = Arc::new(Shared::default());
        let out = child.stdout.take().context("agent stdout")?;
        let s = shared.clone();
        let reader = std::thread::spawn(move || read_agent(out, &s));
        let mut agent = Self {
            child,
            pid,
            variant,
            shared,
            reader: Some(reader),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if let Some(st) = agent.child.try_wait()? {
                bail!(
                    "the agent exited ({st}) before attaching:\n{}",
                    util::tail_file(&agent.log, 30)
                );
            }
            util::check_interrupted()?;
            if Instant::now() > deadline {
                bail!(
                    "the agent did not attach within 30 s:\n{}",
                    util::tail_file(&agent.log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A drain-only agent prints its first count line right away.
        if variant == Variant::K {
            agent.settle(Duration::ZERO)?;
        }
        Ok(agent)
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let (cpu_s, rss_peak_kib) = proc_usage(self.pid)?;
        let drain = *self
            .shared
            .drain
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?;
        Ok(Snapshot {
            cpu_s,
            rss_peak_kib,
            ring_records: drain.1,
            http_load: self.shared.http_load.load(Ordering::Relaxed),
            losses: self.shared.losses.load(Ordering::Relaxed) + drain.2,
            drain_line: drain.0,
        })
    }

    /// Waits `d`, then (drain-only) for a count line printed after that; returns the counts.
    fn settle(&mut self, d: Duration) -> Result<Snapshot> {
        std::thread::sleep(d);
        let seen = self.snapshot()?.drain_line;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let s = self.snapshot()?;
            if self.variant != Variant::K || s.drain_line > seen || (seen == 0 && s.drain_line > 0)
            {
                return Ok(s);
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "the agent exited ({st}):\n{}",
                    util::tail_file(&self.log, 30)
                );
            }
            if Instant::now() > deadline {
                bail!("the drain-only agent printed no count line for 3 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, wait (SIGKILL after 10 s); fails if it did not exit cleanly.
    fn stop(mut self) -> Result<()> {
        util::signal(self.pid, libc::SIGINT)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                util::signal(self.pid, libc::SIGKILL)?;
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if !status.success() {
            bail!(
                "the agent exited with {status}:\n{}",
                util::tail_file(&self.log, 30)
            );
        }
        Ok(())
    }
}

impl Drop for BenchAgent {
    fn drop(&mut self) {
        util::stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(5));
    }
}

/// Reads the agent's stdout with as little work as possible per line: `http` records are
/// only counted (a prefix and a substring test), other lines are parsed.
fn read_agent(out: std::process::ChildStdout, s: &Shared) {
    let mut r = BufReader::with_capacity(1 << 16, out);
    let mut line = String::new();
    let load = format!("\"path\":\"{ROUTE}\"");
    let mut drain_lines = 0u64;
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let kind = record_kind(&line);
        if kind == Some("http") {
            if line.contains(&load) {
                s.http_load.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let arrived = monotonic_s();
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match v["kind"].as_str() {
            Some("violation") => {
                let route = v["route"].as_str().unwrap_or_default().to_owned();
                if let Ok(mut vs) = s.violations.lock() {
                    vs.push((arrived, route));
                }
            }
            Some("loss") => {
                s.losses
                    .fetch_add(v["count"].as_u64().unwrap_or(1), Ordering::Relaxed);
            }
            Some("drain-stats") => {
                drain_lines += 1;
                let k = &v["kernel"];
                let losses = ["ringbuf-full", "flow-table-full", "capture-failed"]
                    .iter()
                    .map(|n| k[n].as_u64().unwrap_or(0))
                    .sum();
                if let Ok(mut d) = s.drain.lock() {
                    *d = (drain_lines, v["records"].as_u64().unwrap_or(0), losses);
                }
            }
            _ => {}
        }
    }
}

/// The record's `kind` without parsing the line: the first `"kind":"..."` (records start
/// with `seq`, `boot_id`, `kind`; nested `kind`s come later). std's `find`, not a loop of our
/// own: xtask is a debug build, and this runs for every line the agent writes.
fn record_kind(line: &str) -> Option<&str> {
    const KEY: &str = "\"kind\":\"";
    let rest = &line[line.find(KEY)? + KEY.len()..];
    Some(&rest[..rest.find('"')?])
}

/// (CPU seconds, peak RSS KiB) of a process.
fn proc_usage(pid: u32) -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the agent (pid {pid}) is gone"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3; utime and stime are fields 14 and 15.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // On-CPU time in ns per thread (schedstat) is exact; clock ticks are 10 ms steps.
    let cpu_s = schedstat_s(pid).unwrap_or(ticks as f64 / hz);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((cpu_s, hwm))
}

/// Sum over the process's threads of the on-CPU time in `/proc/<pid>/task/*/schedstat`, s.
fn schedstat_s(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

/// `CLOCK_MONOTONIC` in seconds (the clock `lookups.py` stamps its sends with).
fn monotonic_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// IDs of loaded programs named like the monitor's; with `pid`, only those that process holds.
fn monitor_program_ids(pid: Option<u32>) -> Result<Vec<u64>> {
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

fn bpftool_progs() -> Result<Vec<Value>> {
    let out = util::output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    serde_json::from_str::<Vec<Value>>(&out).context("bpftool prog show --json")
}

/// (name, run_cnt, run_time_ns) of the programs `ids`.
fn prog_stats(ids: &[u64]) -> Result<Vec<(String, u64, u64)>> {
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
struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
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

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn machine_facts() -> Machine {
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
    }
}

/// One compared metric over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Metric name.
    pub metric: &'static str,
    /// Whether a larger value is better (throughput) or worse (latency, cost).
    pub higher_is_better: bool,
    /// Mean of the A runs (the baseline), in the metric's unit.
    pub baseline: f64,
    /// K / A (mean over rounds of the per-round ratio to the round's A mean).
    pub k_over_a: f64,
    /// F / A.
    pub f_over_a: f64,
    /// A2 / A1 per round.
    pub a_over_a: Vec<f64>,
    /// Noise band: the largest |A2/A1 - 1| over the rounds.
    pub noise: f64,
    /// Verdict for K.
    pub k_verdict: String,
    /// Verdict for F.
    pub f_verdict: String,
}

fn verdict(ratio: f64, noise: f64, higher_is_better: bool) -> String {
    if !ratio.is_finite() {
        return "n/a".to_owned();
    }
    if (ratio - 1.0).abs() <= noise {
        "inconclusive".to_owned()
    } else {
        let better = (ratio > 1.0) == higher_is_better;
        format!(
            "{:+.1}% {}",
            (ratio - 1.0) * 100.0,
            if better { "better" } else { "worse" }
        )
    }
}

fn summarize(runs: &[Run]) -> Vec<Ratio> {
    type Get = fn(&Run) -> f64;
    let metrics: [(&'static str, bool, Get); 4] = [
        ("wrk requests/s", true, |r| r.wrk.rps),
        ("open-loop p50 latency (µs)", false, |r| r.open_loop.p50_us),
        ("open-loop p99 latency (µs)", false, |r| r.open_loop.p99_us),
        ("iperf3 throughput (Gbit/s)", true, |r| r.iperf_gbps),
    ];
    let rounds: Vec<u32> = {
        let mut v: Vec<u32> = runs.iter().map(|r| r.round).collect();
        v.dedup();
        v
    };
    metrics
        .into_iter()
        .map(|(metric, higher_is_better, get)| {
            let (mut k, mut f, mut aa, mut base) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for round in &rounds {
                let of = |v: Variant| {
                    runs.iter()
                        .find(|r| r.round == *round && r.variant == v)
                        .map(get)
                };
                let (Some(a1), Some(a2)) = (of(Variant::A1), of(Variant::A2)) else {
                    continue;
                };
                let a = (a1 + a2) / 2.0;
                base.push(a);
                aa.push(a2 / a1);
                if let Some(x) = of(Variant::K) {
                    k.push(x / a);
                }
                if let Some(x) = of(Variant::F) {
                    f.push(x / a);
                }
            }
            let mean = |v: &[f64]| {
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            let noise = aa.iter().map(|r| (r - 1.0).abs()).fold(0.0, f64::max);
            let (k_over_a, f_over_a) = (mean(&k), mean(&f));
            Ratio {
                metric,
                higher_is_better,
                baseline: mean(&base),
                k_over_a,
                f_over_a,
                a_over_a: aa,
                noise,
                k_verdict: verdict(k_over_a, noise, higher_is_better),
                f_verdict: verdict(f_over_a, noise, higher_is_better),
            }
        })
        .collect()
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; every part of the report named there"
)]
fn table(
    m: &Machine,
    summary: &[Ratio],
    kernel: &KernelCost,
    det: &Detection,
    runs: &[Run],
    steps: &[Step],
    rounds: u32,
    wall: Duration,
) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "machine: Linux {}, {} ({} cores), {} MiB; load (1 min) {:.2} at start, {:.2} at end",
        m.kernel, m.cpu, m.cores, m.memory_mib, m.load_start, m.load_end
    );
    let _ = writeln!(
        t,
        "{rounds} round(s) of A1/K/F/A2 interleaved; A = no program, K = kernel side only \
         (--drain-only), F = full agent"
    );
    let _ = writeln!(
        t,
        "{:<30} {:>12} {:>8} {:>8} {:>10}  {:<16} {:<16}",
        "metric", "A (mean)", "K/A", "F/A", "A/A noise", "K verdict", "F verdict"
    );
    for r in summary {
        let _ = writeln!(
            t,
            "{:<30} {:>12.2} {:>8.3} {:>8.3} {:>9.1}%  {:<16} {:<16}",
            r.metric,
            r.baseline,
            r.k_over_a,
            r.f_over_a,
            r.noise * 100.0,
            r.k_verdict,
            r.f_verdict
        );
    }
    let agent = |v: Variant| -> Vec<&AgentUse> {
        runs.iter()
            .filter(|r| r.variant == v)
            .filter_map(|r| r.agent.as_ref())
            .collect()
    };
    for (v, what) in [
        (Variant::K, "drain-only (ring records)"),
        (Variant::F, "full agent (http records)"),
    ] {
        let a = agent(v);
        if a.is_empty() {
            continue;
        }
        let zero: Vec<&&AgentUse> = a
            .iter()
            .filter(|x| x.losses == 0 && x.missing <= 0)
            .collect();
        let best = zero.iter().map(|x| x.records_per_s).fold(0.0, f64::max);
        let stepped = steps
            .iter()
            .filter(|st| st.variant == v && st.losses == 0 && st.missing <= 0)
            .map(|st| st.records_per_s)
            .fold(0.0, f64::max);
        let lossy: Vec<String> = a
            .iter()
            .filter(|x| x.losses > 0 || x.missing > 0)
            .map(|x| {
                format!(
                    "{:.0}/s lost {} missing {}",
                    x.records_per_s, x.losses, x.missing
                )
            })
            .collect();
        let _ = writeln!(
            t,
            "{what}: highest zero-loss rate {} records/s{}; CPU {} % of a core per 10k records/s; peak RSS {} MiB",
            if !zero.is_empty() {
                format!("≥ {best:.0} (wrk at full rate: no loss)")
            } else if stepped > 0.0 {
                format!("{stepped:.0} (open-loop step down)")
            } else {
                "not found".to_owned()
            },
            if lossy.is_empty() {
                String::new()
            } else {
                format!(" (loss in: {})", lossy.join(", "))
            },
            join(a.iter().map(|x| x.cpu_pct_per_10k), 1),
            join(a.iter().map(|x| x.rss_peak_mib), 1),
        );
    }
    for st in steps {
        let _ = writeln!(
            t,
            "  step-down {:?}: open loop at {:.0} req/s: {:.0} records/s, losses {}, missing {}",
            st.variant, st.rate, st.records_per_s, st.losses, st.missing
        );
    }
    let _ = writeln!(
        t,
        "kernel (bpf_stats, full agent, under wrk): {:.0} ns per program run (= per packet per hook), {:.1} runs per request; {}",
        kernel.ns_per_run,
        kernel.runs_per_request,
        kernel
            .programs
            .iter()
            .map(|(n, c, ns)| format!("{n} {c} runs {ns:.0} ns"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        t,
        "detection latency (lookup sent → violation on the agent's stdout): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({}/{} detected)",
        det.p50_ms, det.p99_ms, det.max_ms, det.detected, det.sent
    );
    let _ = write!(t, "bench wall time: {}", util::fmt_duration(wall));
    t
}

fn join(v: impl Iterator<Item = f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output() {
        let out = "Running 5s test @ http://10.77.0.10/small\n  1 threads and 16 connections\n  \
                   Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   400.00us  \
                   100.00us   2.00ms   90.00%\n  180000 requests in 5.00s, 60.00MB read\n\
                   Requests/sec:  36000.12\nTransfer/sec:     12.00MB\n";
        assert_eq!(parse_wrk(out), Some((36000.12, 180_000)));
    }

    #[test]
    fn kinds() {
        let http = r#"{"seq":2,"boot_id":"c750f8c6bfb94bcfac4278b5b47a106b","kind":"http","time":"t","source":{"kind":"pod"}}"#;
        assert_eq!(record_kind(http), Some("http"));
        assert_eq!(
            record_kind(r#"{"kind":"drain-stats","records":1}"#),
            Some("drain-stats")
        );
        assert_eq!(record_kind("{}"), None);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(0.99, 0.02, true), "inconclusive");
        assert_eq!(verdict(0.90, 0.02, true), "-10.0% worse");
        assert_eq!(verdict(1.10, 0.02, false), "+10.0% worse");
        assert_eq!(verdict(0.90, 0.02, false), "-10.0% better");
    }
}
