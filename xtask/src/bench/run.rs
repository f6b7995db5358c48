//! The bench from start to end: checks, the lab (with iperf3's server), the interleaved
//! rounds of A1/K/F/A2, the zero-loss step-down where wrk lost records, bpf_stats and detection
//! latency with the full agent, then the JSON report and the table.

use std::collections::HashSet;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::agent::BenchAgent;
use super::measure::{
    AgentUse, BpfStats, Detection, KernelCost, PROGRAMS, Run, Step, Wrk, loadavg, machine_facts,
    monitor_program_ids, prog_stats, summarize,
};
use super::present::{run_line, table};
use super::scenario::{CLIENT, IPERF_PORT, POLICY, ROUTE, SERVER, Traffic};
use super::{BenchOptions, Variant, client};
use crate::lab::{Lab, LabOptions};
use crate::util;

/// Wall-time budget: a round is skipped if it would end after this.
const BUDGET: Duration = Duration::from_secs(280);

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
        traffic: Traffic {
            lab: &lab,
            server_ip,
        },
        bin: &bin,
        policy: &policy,
        opts,
    };
    // Warm-up: nginx, the page cache, the CPU frequency.
    ctx.traffic.wrk(Duration::from_secs(1))?;

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
            crate::outln!("{}", run_line(&r));
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

/// The running bench: the lab's traffic, the agent binary and policy, the options.
struct Ctx<'a> {
    traffic: Traffic<'a>,
    bin: &'a Path,
    policy: &'a Path,
    opts: &'a BenchOptions,
}

impl Ctx<'_> {
    /// Starts the agent of `mode` (K or F) and waits until it is attached.
    fn start_agent(&self, mode: Variant) -> Result<BenchAgent> {
        BenchAgent::start(self.bin, self.traffic.lab, self.policy, mode)
    }

    /// One variant's wrk, open-loop and iperf3 phases (with its agent, for K and F).
    fn run_variant(&self, round: u32, variant: Variant) -> Result<Run> {
        let phase = self.opts.phase;
        let mut agent = match variant {
            Variant::K | Variant::F => Some(self.start_agent(variant)?),
            Variant::A1 | Variant::A2 => None,
        };
        // wrk: throughput, and the agent's cost and completeness under it.
        let before = agent.as_mut().map(BenchAgent::snapshot).transpose()?;
        let served0 = self.traffic.served()?;
        let t0 = Instant::now();
        let (rps, requests) = self.traffic.wrk(phase)?;
        let wall = t0.elapsed().as_secs_f64();
        let during = agent.as_mut().map(BenchAgent::snapshot).transpose()?;
        let served1 = self.traffic.served()?;
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
        let open_loop = self
            .traffic
            .open_loop(self.opts.rate, phase, self.opts.conns)?;
        let iperf_gbps = self.traffic.iperf(phase)?;
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
            let served0 = self.traffic.served()?;
            let t0 = Instant::now();
            self.traffic.open_loop(rate as u32, d, 16)?;
            let wall = t0.elapsed().as_secs_f64();
            let served = (self.traffic.served()? - served0).saturating_sub(1);
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
        let mut agent = self.start_agent(Variant::F)?;
        let mut ids = monitor_program_ids(Some(agent.pid()))?;
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
            let (rps, requests) = self.traffic.wrk(self.opts.phase)?;
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
        // Detection latency: request written → its violation line on the agent's stdout.
        let sent = self.traffic.lookups(self.opts.lookups)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while agent.violations().len() < sent.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut lat: Vec<f64> = {
            let mut seen = HashSet::new();
            agent
                .violations()
                .iter()
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
