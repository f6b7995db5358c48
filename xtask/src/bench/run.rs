//! The bench from start to end: checks, the lab (with iperf3's server), the interleaved
//! rounds of A1/K/F/P1/P2/A2 (each: the pinned open-loop phase for CPU per request, wrk,
//! iperf3), the zero-loss step-down where wrk lost records, bpf_stats and detection latency
//! with the full agent, then the JSON report and the table.

use std::cell::Cell;
use std::collections::HashSet;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::agent::BenchAgent;
use super::cpu::{Counters, CpuUse, LabCgroups, Pinning, allowed_cpus, pin_process};
use super::measure::{
    AgentUse, BpfStats, Detection, KernelCost, PROGRAMS, Run, Step, Wrk, loadavg, machine_facts,
    monitor_program_ids, prog_stats,
};
use super::peers::{PROXY_PORT, Peer, haproxy_config};
use super::present::{run_line, table};
use super::scenario::{CLIENT, IPERF_PORT, POLICY, ROUTE, SERVER, Traffic, nginx_pid};
use super::stats::summarize;
use super::{BenchOptions, OpenLoopReport, Variant, client};
use crate::lab::{Lab, LabOptions};
use crate::util;

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
    let mut tools = vec!["wrk", "iperf3", "bpftool", "curl", "python3", "nsenter"];
    if opts.peers {
        tools.extend(["haproxy", "tcpdump"]);
    }
    for tool in tools {
        if util::output(
            std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]),
        )
        .is_err()
        {
            bail!("{tool} is not installed (`cargo xtask setup` installs it)");
        }
    }
    let out_path = opts
        .out
        .clone()
        .unwrap_or_else(|| target.join("bench/bench.json"));
    let peers_dir = target.join("bench/peers");
    let mut machine = machine_facts();
    machine.pinning = if opts.pin {
        Pinning::plan(&allowed_cpus()?)
    } else {
        None
    };
    crate::outln!(
        "bench: {} ({} cores, {}, {} MiB), load {:.2}; monitor {}; {}",
        machine.kernel,
        machine.cores,
        machine.cpu,
        machine.memory_mib,
        machine.load_start,
        bin.display(),
        machine.pinning.as_ref().map_or_else(
            || "open-loop phase not pinned".to_owned(),
            |p| format!(
                "open-loop phase pinned: lab on CPU {}, observer on CPU {}",
                p.lab, p.observer
            )
        )
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
    // One binary for the whole run, even if someone rebuilds the release binary meanwhile.
    let agent_bin = lab.run_dir().join("monitor");
    std::fs::copy(&bin, &agent_bin)
        .with_context(|| format!("cannot copy {} to {}", bin.display(), agent_bin.display()))?;
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
    if opts.peers {
        std::fs::create_dir_all(&peers_dir)
            .with_context(|| format!("cannot create {}", peers_dir.display()))?;
    }
    let pod_cgroup = |pod: &str| -> Result<PathBuf> {
        lab.member(pod)?
            .cgroup
            .clone()
            .with_context(|| format!("pod {pod} has no cgroup"))
    };
    let cgroups = LabCgroups {
        root: lab.attach_cgroup().to_path_buf(),
        client: pod_cgroup(CLIENT)?,
        server: pod_cgroup(SERVER)?,
    };
    let mut ctx = Ctx {
        cgroups,
        nginx_pid: nginx_pid(&lab)?,
        web_veth: lab.member(SERVER)?.host_veth.clone(),
        lab,
        server_ip,
        bin: &agent_bin,
        policy: &policy,
        opts,
        pinning: machine.pinning.clone(),
        peers_dir: &peers_dir,
        gating: Cell::new(opts.quiet.is_finite()),
    };
    // Warm-up: nginx, the page cache, the CPU frequency, the open-loop client.
    ctx.traffic(80).wrk(Duration::from_secs(1))?;
    ctx.cpu_attempt(ctx.traffic(80), None, &[], Duration::from_secs(1))?;
    let idle = ctx.idle_lab_cpu()?;
    crate::outln!("  lab idle: {idle:.0} µs of CPU per second (no traffic)");

    let mut runs = Vec::new();
    let mut rounds_done = 0;
    let forward: &[Variant] = if opts.peers {
        &[
            Variant::A1,
            Variant::K,
            Variant::F,
            Variant::P1,
            Variant::P2,
            Variant::A2,
        ]
    } else {
        &[Variant::A1, Variant::K, Variant::F, Variant::A2]
    };
    let backward: Vec<Variant> = forward.iter().rev().copied().collect();
    // A failure (or Ctrl-C) after the lab is up ends the measuring, not the report: the runs
    // so far are written, then the error is returned.
    let mut aborted: Option<anyhow::Error> = None;
    'rounds: for round in 1..=opts.rounds.max(1) {
        if round > 1 {
            let per_round = started.elapsed().as_secs_f64() / f64::from(round - 1);
            let tail = 20.0 + opts.phase.as_secs_f64() * 2.0;
            if started.elapsed().as_secs_f64() + per_round + tail > opts.budget.as_secs_f64() {
                crate::outln!(
                    "round {round} skipped: it would take the bench past {}s",
                    opts.budget.as_secs()
                );
                break;
            }
        }
        let order = if round % 2 == 1 {
            forward
        } else {
            &backward[..]
        };
        for &v in order {
            match util::check_interrupted().and_then(|()| ctx.run_variant(round, v)) {
                Ok(r) => {
                    crate::outln!("{}", run_line(&r));
                    runs.push(r);
                }
                Err(e) => {
                    aborted = Some(e.context(format!("round {round}, {}", v.label())));
                    break 'rounds;
                }
            }
        }
        rounds_done = round;
    }
    let mut steps = Vec::new();
    let mut after = None;
    if aborted.is_none() {
        match ctx.after_rounds(&runs, started) {
            Ok((s, kernel, detection)) => {
                steps = s;
                after = Some((kernel, detection));
            }
            Err(e) => aborted = Some(e),
        }
    }
    let (kernel, detection) = after.unzip();
    drop(iperf_server);
    ctx.lab.down()?;
    if opts.peers {
        let _ = std::fs::remove_dir(&peers_dir);
    }
    machine.load_end = loadavg();
    let wall = started.elapsed();

    let summary = summarize(&runs);
    let report = json!({
        "command": "cargo xtask bench",
        "machine": machine,
        "settings": {
            "rounds": rounds_done,
            "order": [forward, backward],
            "phase_s": opts.phase.as_secs_f64(),
            "open_loop_s": opts.open_loop.as_secs_f64(),
            "open_loop_rate": opts.rate,
            "open_loop_conns": opts.conns,
            "wrk": format!("wrk -t1 -c16 -d{}s http://{server_ip}:80{ROUTE} (P1: port {PROXY_PORT})", opts.phase.as_secs()),
            "iperf3": format!("iperf3 -c {server_ip} -t {} (A, K, F)", opts.phase.as_secs()),
            "cpu_per_request": "open-loop phase: Δ usage_usec of the lab's root cgroup (cgroup v2 cpu.stat) + Δ on-CPU ns of the observer's threads (agent or tcpdump, /proc/<pid>/task/*/schedstat), over requests completed; node: wall × CPUs − Δ idle (cpuidle residency, else /proc/stat idle + iowait) − Δ steal; other = node − lab − observer − bench",
            "interval": "mean of per-round ratios to the round's A mean ± t(0.975, n-1)·s/√n",
            "band": "A2/A1 over the rounds: |mean - 1| + t(0.975, n-1)·s/√n",
            "quiet_cores": opts.quiet,
            "quiet_wait_s": opts.quiet_wait.as_secs_f64(),
            "quiet_gating_given_up": opts.quiet.is_finite() && !ctx.gating.get(),
            "p1": haproxy_config(server_ip),
            "p2": format!("tcpdump -i {} -s 0 -n -Z root -w <target>/bench/peers/p2-capture.pcap (node netns)", ctx.web_veth),
            "lookups": opts.lookups,
        },
        "lab_idle_cpu_us_per_s": idle,
        "aborted": aborted.as_ref().map(|e| format!("{e:#}")),
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
            opts,
            &summary,
            kernel.as_ref(),
            detection.as_ref(),
            &runs,
            &steps,
            rounds_done,
            opts.quiet.is_finite() && !ctx.gating.get(),
            wall
        )
    );
    crate::outln!("results: {}", out_path.display());
    match aborted {
        Some(e) => Err(e.context(format!(
            "the bench stopped early; the runs so far are in {}",
            out_path.display()
        ))),
        None => Ok(()),
    }
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

/// The CPU pinning of one open-loop phase; every pinned process gets every CPU back on drop.
struct Pinned<'a> {
    plan: &'a Pinning,
    /// The processes pinned (this one, the observer, the lab's).
    pids: Vec<u32>,
}

impl<'a> Pinned<'a> {
    /// This process and `observer` on the observer's CPU, `lab` on the lab's.
    fn apply(plan: &'a Pinning, observer: Option<u32>, lab: &[u32]) -> Result<Self> {
        let mut pinned = Self {
            plan,
            pids: Vec::new(),
        };
        let me = std::process::id();
        for pid in std::iter::once(me).chain(observer) {
            pinned.pids.push(pid);
            pin_process(pid, &[plan.observer])?;
        }
        for &pid in lab {
            pinned.pids.push(pid);
            pin_process(pid, &[plan.lab])?;
        }
        Ok(pinned)
    }
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if let Err(e) = pin_process(pid, &self.plan.all) {
                crate::errln!("bench: cannot give pid {pid} every CPU back: {e:#}");
            }
        }
    }
}

/// The running bench: the lab and its traffic, the agent binary and policy, the options.
struct Ctx<'a> {
    lab: Lab,
    /// The cgroups whose CPU is counted.
    cgroups: LabCgroups,
    server_ip: std::net::IpAddr,
    /// nginx in the server pod.
    nginx_pid: u32,
    /// The server pod's veth on the node's bridge (P2 captures there).
    web_veth: String,
    bin: &'a Path,
    policy: &'a Path,
    opts: &'a BenchOptions,
    pinning: Option<Pinning>,
    /// Where P1 and P2 write.
    peers_dir: &'a PathBuf,
    /// Whether disturbed open-loop phases are still run again (until the node is found not
    /// to get quiet within `--quiet-wait-secs`).
    gating: Cell<bool>,
}

impl Ctx<'_> {
    /// The lab's traffic to `port` of the server pod.
    fn traffic(&self, port: u16) -> Traffic<'_> {
        Traffic {
            lab: &self.lab,
            server_ip: self.server_ip,
            port,
        }
    }

    /// Starts the agent of `mode` (K or F) and waits until it is attached.
    fn start_agent(&self, mode: Variant) -> Result<BenchAgent> {
        BenchAgent::start(self.bin, &self.lab, self.policy, mode)
    }

    /// The lab's CPU over one second without traffic, µs.
    fn idle_lab_cpu(&self) -> Result<f64> {
        let before = Counters::read(&self.cgroups, None)?;
        util::sleep_interruptible(Duration::from_secs(1))?;
        let after = Counters::read(&self.cgroups, None)?;
        let c = CpuUse::between(&before, &after, 1);
        Ok(c.lab_us / c.wall_s.max(1e-3))
    }

    /// The open-loop phase of `d` at the fixed rate through `traffic` (pinned if planned):
    /// CPU of the lab and of `observer` per request completed, and the latencies. `lab` are
    /// the lab's processes to pin besides nginx (P1's proxy). A phase disturbed by other load
    /// is run again once the node is quiet, up to three attempts ([`super::cpu`]).
    fn cpu_phase(
        &self,
        traffic: Traffic<'_>,
        observer: Option<u32>,
        lab: &[u32],
        d: Duration,
    ) -> Result<(CpuUse, OpenLoopReport)> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            let (mut cpu, report) = self.cpu_attempt(traffic, observer, lab, d)?;
            cpu.attempts = attempt;
            let other = cpu.other_cores();
            if other <= self.opts.quiet || !self.gating.get() {
                return Ok((cpu, report));
            }
            if attempt == ATTEMPTS {
                cpu.disturbed = true;
                crate::outln!(
                    "  open-loop phase disturbed {ATTEMPTS} times (other load {:.0}% of a core): left out of the CPU figures",
                    other * 100.0
                );
                return Ok((cpu, report));
            }
            if !self.wait_quiet(observer)? {
                self.gating.set(false);
                crate::outln!(
                    "  the node was not quiet for {} s (other load {:.0}% of a core > {:.0}%): from now on every open-loop phase counts as it is (the CPU figures are disturbed)",
                    self.opts.quiet_wait.as_secs(),
                    other * 100.0,
                    self.opts.quiet * 100.0
                );
                return Ok((cpu, report));
            }
            crate::outln!(
                "  open-loop phase disturbed (other load {:.0}% of a core > {:.0}%): running it again",
                other * 100.0,
                self.opts.quiet * 100.0
            );
            attempt += 1;
        }
    }

    /// Waits (1-second samples, up to `--quiet-wait-secs`) until the node's other load is
    /// below the quiet threshold; false if it never was.
    fn wait_quiet(&self, observer: Option<u32>) -> Result<bool> {
        let t0 = Instant::now();
        while t0.elapsed() < self.opts.quiet_wait {
            let before = Counters::read(&self.cgroups, observer)?;
            util::sleep_interruptible(Duration::from_secs(1))?;
            let after = Counters::read(&self.cgroups, observer)?;
            if CpuUse::between(&before, &after, 1).other_cores() <= self.opts.quiet {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One open-loop phase with its CPU readings.
    fn cpu_attempt(
        &self,
        traffic: Traffic<'_>,
        observer: Option<u32>,
        lab: &[u32],
        d: Duration,
    ) -> Result<(CpuUse, OpenLoopReport)> {
        let mut lab_pids = vec![self.nginx_pid];
        lab_pids.extend_from_slice(lab);
        let pinned = self
            .pinning
            .as_ref()
            .map(|p| Pinned::apply(p, observer, &lab_pids))
            .transpose()?;
        let client_cpu = self.pinning.as_ref().map(|p| std::slice::from_ref(&p.lab));
        let before = Counters::read(&self.cgroups, observer)?;
        let report = traffic.open_loop(self.opts.rate, d, self.opts.conns, client_cpu)?;
        let after = Counters::read(&self.cgroups, observer)?;
        drop(pinned);
        Ok((CpuUse::between(&before, &after, report.ok), report))
    }

    /// One variant's open-loop (CPU per request), wrk and iperf3 phases, with its agent (K,
    /// F) or peer (P1, P2).
    fn run_variant(&mut self, round: u32, variant: Variant) -> Result<Run> {
        let phase = self.opts.phase;
        let mut agent = match variant {
            Variant::K | Variant::F => Some(self.start_agent(variant)?),
            _ => None,
        };
        let peer = match variant {
            Variant::P1 => Some(Peer::proxy(&mut self.lab, self.server_ip, self.peers_dir)?),
            Variant::P2 => Some(Peer::capture(
                &mut self.lab,
                &self.web_veth,
                self.peers_dir,
            )?),
            _ => None,
        };
        let port = if variant == Variant::P1 {
            PROXY_PORT
        } else {
            80
        };
        let traffic = self.traffic(port);
        // The open-loop phase at the fixed rate: CPU per request, p50/p99.
        let observer = match (&agent, &peer, variant) {
            (Some(a), ..) => Some(a.pid()),
            (_, Some(p), Variant::P2) => Some(p.pid()),
            _ => None,
        };
        let in_lab: Vec<u32> = match (&peer, variant) {
            (Some(p), Variant::P1) => vec![p.pid()],
            _ => Vec::new(),
        };
        let (cpu, open_loop) = self.cpu_phase(traffic, observer, &in_lab, self.opts.open_loop)?;
        // wrk: throughput, and the agent's cost and completeness under it.
        let before = agent.as_mut().map(BenchAgent::snapshot).transpose()?;
        let served0 = traffic.served()?;
        let t0 = Instant::now();
        let (rps, requests) = traffic.wrk(phase)?;
        let wall = t0.elapsed().as_secs_f64();
        let during = agent.as_mut().map(BenchAgent::snapshot).transpose()?;
        let served1 = traffic.served()?;
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
        let iperf_gbps = match variant {
            Variant::P1 | Variant::P2 => None,
            _ => Some(traffic.iperf(phase)?),
        };
        if let Some(a) = agent.take() {
            a.stop()?;
        }
        let peer = peer.map(Peer::stop).transpose()?;
        Ok(Run {
            round,
            variant,
            cpu,
            open_loop,
            wrk: Wrk {
                rps,
                requests,
                served,
            },
            iperf_gbps,
            agent: agent_use,
            peer,
        })
    }

    /// After the rounds: the zero-loss step-down where wrk at full rate lost records (K and F
    /// separately), then bpf_stats and detection latency.
    fn after_rounds(
        &self,
        runs: &[Run],
        started: Instant,
    ) -> Result<(Vec<Step>, KernelCost, Detection)> {
        util::check_interrupted()?;
        let mut steps = Vec::new();
        for v in [Variant::K, Variant::F] {
            let lossy = runs
                .iter()
                .filter_map(|r| r.agent.as_ref().filter(|_| r.variant == v))
                .any(|a| a.losses > 0 || a.missing > 0);
            if lossy && started.elapsed() + Duration::from_secs(40) < self.opts.budget {
                let max = runs.iter().map(|r| r.wrk.rps).fold(0.0, f64::max);
                steps.extend(self.step_down(v, max)?);
            }
        }
        let (kernel, detection) = self.kernel_and_detection()?;
        Ok((steps, kernel, detection))
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
            let served0 = self.traffic(80).served()?;
            let t0 = Instant::now();
            self.traffic(80).open_loop(rate as u32, d, 16, None)?;
            let wall = t0.elapsed().as_secs_f64();
            let served = (self.traffic(80).served()? - served0).saturating_sub(1);
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
            let (rps, requests) = self.traffic(80).wrk(self.opts.phase)?;
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
        let sent = self.traffic(80).lookups(self.opts.lookups)?;
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
