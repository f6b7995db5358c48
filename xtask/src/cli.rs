//! The `cargo xtask` command line (clap derive) and its dispatch to the library modules.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::{bench, ci, demo, lab, setup, util, vmtest};

/// Developer and CI tasks of the monitor workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// `cargo xtask` subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Install what this machine needs to build and test the monitor (idempotent; root).
    Setup {
        /// cgroup v2 mount to check (default: found in /proc/self/mountinfo).
        #[arg(long)]
        cgroup_mount: Option<PathBuf>,
    },
    /// The local lab: network namespaces, veths and cgroups built from an inventory.
    Lab {
        /// Lab action.
        #[command(subcommand)]
        command: LabCmd,
    },
    /// Replay the Vantage incident against the lab with the real agent and curl.
    Demo(DemoArgs),
    /// Measure the monitor's overhead as ratios: no program (A, twice: the noise band) vs
    /// kernel side only (K) vs full agent (F) vs an L7 proxy with access logs (P1) vs tcpdump
    /// to disk (P2), interleaved, in the lab (root; ~15 minutes, ~1 with --quick).
    ///
    /// In the lab of tests/fixtures/lab.yaml (prefix `bnch`), with the release `monitor`
    /// binary (build it first: `cargo build --release -p monitor`), each round runs A1, K, F,
    /// P1, P2, A2 (even rounds in reverse order), each with the same phases from pod client-a
    /// to nginx in pod web: an open-loop client at a fixed, non-saturating rate (the headline:
    /// CPU per request of the lab's cgroups and the observer process, CPU-pinned; and p50/p99
    /// from the scheduled send time), wrk -t1 -c16 (requests/s) and iperf3 (A, K, F). P1 is
    /// haproxy (mode http, httplog to a file) in front of nginx in the web pod; P2 is tcpdump
    /// -s 0 -w on the web pod's veth. The agent's CPU and peak RSS, and completeness (records
    /// vs requests served, losses), come from the wrk phase. Then once, with the full agent:
    /// kernel ns per program run from bpf_stats (kernel.bpf_stats_enabled is set only for
    /// that phase, then restored), and detection latency (lookup sent → violation on the
    /// agent's stdout).
    ///
    /// Every figure is a ratio to the round's A mean, averaged over the rounds ± a 95%
    /// confidence interval (Student's t); one within the A/A band, or whose interval contains
    /// 1, is inconclusive. Prints a table and writes everything (machine facts, every run) to
    /// <target>/bench/bench.json. A round that would take the bench past --budget-secs is
    /// skipped. Not part of CI: a measurement, not a test.
    Bench(BenchArgs),
    /// The bench's open-loop HTTP client (run inside a lab pod by `cargo xtask bench`).
    #[command(hide = true)]
    BenchClient(BenchClientArgs),
    /// Run the whole test pipeline (what CI runs): setup, fmt, clippy, tests, lab tests, and
    /// the kernel and lab tests on Debian's 6.1 kernel in a VM (vm-test).
    Test {
        /// Do not run the lab tests (monitor-tests), on this kernel or in the VM.
        #[arg(long)]
        no_lab: bool,
        /// Do not run the tests on the second kernel in the VM (vm-test).
        #[arg(long)]
        no_vm: bool,
        /// cgroup v2 mount for setup's check.
        #[arg(long)]
        cgroup_mount: Option<PathBuf>,
    },
    /// Run the kernel-program and lab tests in a qemu VM (TCG) on Debian's 6.1 cloud kernel;
    /// one result per test.
    ///
    /// Fetches the kernel, busybox and (if not installed) qemu with `apt-get download` into
    /// `<target>/vm-test/cache` (nothing is installed), builds the release monitor, the lab test
    /// binaries and the kernel (BPF_PROG_TEST_RUN) tests, packs them with the tools the tests
    /// use into an initramfs, boots it, logs the agent's kernel feature probe, and
    /// reports each test: passed, failed, failed as documented (expected), excluded (with the
    /// reason), or not run. The serial console is kept in `<target>/vm-test/serial.log`, the
    /// results in `<target>/vm-test/results.json`. Fails unless every test that ran passed or
    /// failed as documented.
    VmTest(VmTestArgs),
}

/// Arguments of `cargo xtask vm-test`.
#[derive(Debug, Args)]
pub struct VmTestArgs {
    /// Run only the tests whose `binary::test` contains this (repeatable).
    #[arg(long)]
    pub filter: Vec<String>,
    /// Kernel package to boot (default: the newest cached, else the one
    /// `linux-image-cloud-amd64` depends on).
    #[arg(long, value_name = "PACKAGE")]
    pub kernel_package: Option<String>,
    /// VM memory in MiB.
    #[arg(long, default_value_t = 3072)]
    pub memory_mib: u32,
    /// VM CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Time limit of one test inside the VM, seconds.
    #[arg(long, default_value_t = 600)]
    pub test_timeout_s: u64,
    /// Time limit of the whole VM run, minutes (the VM is killed then).
    #[arg(long, default_value_t = 60)]
    pub timeout_min: u64,
    /// Echo the whole serial console (default: only results and notable lines).
    #[arg(long)]
    pub verbose: bool,
}

/// `cargo xtask lab` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Build the lab, start its servers, and leave it running (state in /run/monitor-lab).
    Up(LabUpArgs),
    /// Remove a lab recorded in its state file (also after a crash).
    Down {
        /// Lab name prefix.
        #[arg(long, default_value = lab::DEFAULT_PREFIX)]
        prefix: String,
        /// Remove it even if the process that owns it is still running.
        #[arg(long)]
        force: bool,
    },
    /// Show what a lab created (its state file).
    Status {
        /// Lab name prefix.
        #[arg(long, default_value = lab::DEFAULT_PREFIX)]
        prefix: String,
    },
}

/// Arguments of `cargo xtask lab up`.
#[derive(Debug, Args)]
pub struct LabUpArgs {
    /// Inventory file (topology, servers).
    #[arg(long, default_value_os_t = crate::default_inventory())]
    pub inventory: PathBuf,
    /// Lab name prefix (1-8 lowercase letters/digits): names netns, interfaces, cgroups.
    #[arg(long, default_value = lab::DEFAULT_PREFIX)]
    pub prefix: String,
    /// cgroup v2 mount (default: found in /proc/self/mountinfo).
    #[arg(long)]
    pub cgroup_mount: Option<PathBuf>,
    /// Emulate an Istio mesh: istio-init's iptables rules and a real sidecar proxy (haproxy,
    /// uid 1337, in the pod's cgroup) in every pod, mTLS between pods. `istio`: inbound
    /// forwarded from 127.0.0.6 to the pod's IP (Istio >= 1.10); `istio-legacy`: from
    /// 127.0.0.1 to 127.0.0.1 (Istio < 1.10).
    #[arg(long, value_enum)]
    pub mesh: Option<lab::Mesh>,
}

/// Arguments of `cargo xtask demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Inventory file (must contain the Vantage pods).
    #[arg(long, default_value_os_t = crate::default_inventory())]
    pub inventory: PathBuf,
    /// Lab name prefix.
    #[arg(long, default_value = demo::DEMO_PREFIX)]
    pub prefix: String,
    /// cgroup v2 mount (default: found in /proc/self/mountinfo).
    #[arg(long)]
    pub cgroup_mount: Option<PathBuf>,
    /// Do not build the agent; use the existing binary.
    #[arg(long)]
    pub no_build: bool,
    /// Agent binary (default: `<target>/release/monitor`).
    #[arg(long)]
    pub monitor_bin: Option<PathBuf>,
    /// Extra argument for `monitor agent` (repeatable), e.g. `--agent-arg=--policy=p.yaml`.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
    /// Echo the agent's logs (stderr) while it runs.
    #[arg(long)]
    pub agent_logs: bool,
}

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Agent binary (default: `<target>/release/monitor`; it is not built for you).
    #[arg(long)]
    pub monitor_bin: Option<PathBuf>,
    /// JSON results file (default: `<target>/bench/bench.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Lab name prefix.
    #[arg(long, default_value = bench::BENCH_PREFIX)]
    pub prefix: String,
    /// Rounds of A1/K/F/P1/P2/A2 (a round that would take the bench past --budget-secs is
    /// skipped).
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Seconds per wrk and iperf3 phase.
    #[arg(long, default_value_t = 3)]
    pub phase_secs: u64,
    /// Seconds of the open-loop phase (CPU per request, p50/p99).
    #[arg(long, default_value_t = 5)]
    pub open_loop_secs: u64,
    /// Open-loop request rate (requests/s): fixed, below saturation.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Detection-latency lookups (10-20 ms apart).
    #[arg(long, default_value_t = 100)]
    pub lookups: u32,
    /// Do not pin the open-loop phase's processes to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Do not run the peers (P1, P2).
    #[arg(long)]
    pub no_peers: bool,
    /// Wall-time budget in seconds.
    #[arg(long, default_value_t = 1200)]
    pub budget_secs: u64,
    /// Other load on the node (besides the lab, the observer and the bench), in % of one
    /// core, above which an open-loop phase is disturbed and run again once the node is quiet.
    #[arg(long, default_value_t = 15.0)]
    pub quiet_pct: f64,
    /// Longest wait for a quiet node before running a disturbed phase again, seconds.
    #[arg(long, default_value_t = 60)]
    pub quiet_wait_secs: u64,
    /// A smoke run: one round, 2-second phases, 20 lookups, no waiting for a quiet machine
    /// (~1 minute; figures are rough, no confidence interval).
    #[arg(long)]
    pub quick: bool,
    /// cgroup v2 mount (default: found in /proc/self/mountinfo).
    #[arg(long)]
    pub cgroup_mount: Option<PathBuf>,
}

/// Arguments of the hidden `cargo xtask bench-client`.
#[derive(Debug, Args)]
pub struct BenchClientArgs {
    /// Server address (IP:PORT).
    #[arg(long)]
    pub addr: std::net::SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Requests per second.
    #[arg(long)]
    pub rate: f64,
    /// Duration in seconds.
    #[arg(long)]
    pub secs: f64,
    /// Keep-alive connections (one thread each).
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
}

/// Parses the command line and runs the command.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    util::set_cli_output();
    util::install_interrupt_handler();
    match cli.command {
        Cmd::Setup { cgroup_mount } => setup::run(&setup::SetupOptions { cgroup_mount }),
        Cmd::Lab { command } => run_lab(command),
        Cmd::Demo(a) => demo::run(&demo::DemoOptions {
            inventory: a.inventory,
            prefix: a.prefix,
            cgroup_mount: a.cgroup_mount,
            no_build: a.no_build,
            monitor_bin: a.monitor_bin,
            agent_args: a.agent_args,
            agent_logs: a.agent_logs,
        }),
        Cmd::Bench(a) => {
            let secs = std::time::Duration::from_secs;
            let mut o = bench::BenchOptions {
                monitor_bin: a.monitor_bin,
                out: a.out,
                prefix: a.prefix,
                rounds: a.rounds,
                phase: secs(a.phase_secs.max(1)),
                open_loop: secs(a.open_loop_secs.max(1)),
                rate: a.rate.max(1),
                lookups: a.lookups.max(1),
                cgroup_mount: a.cgroup_mount,
                pin: !a.no_pin,
                peers: !a.no_peers,
                budget: secs(a.budget_secs),
                quiet: a.quiet_pct / 100.0,
                quiet_wait: secs(a.quiet_wait_secs),
                ..bench::BenchOptions::default()
            };
            if a.quick {
                o.rounds = 1;
                o.phase = secs(2);
                o.open_loop = secs(2);
                o.lookups = 20;
                // No quiet gating: a smoke run does not wait for the machine.
                o.quiet = f64::INFINITY;
            }
            bench::run(&o)
        }
        Cmd::BenchClient(a) => {
            let report = bench::client::run(
                a.addr,
                &a.path,
                a.rate,
                std::time::Duration::from_secs_f64(a.secs.max(0.1)),
                a.conns,
            )?;
            crate::outln!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Cmd::Test {
            no_lab,
            no_vm,
            cgroup_mount,
        } => ci::run(&ci::TestOptions {
            no_lab,
            no_vm,
            cgroup_mount,
        }),
        Cmd::VmTest(a) => vmtest::run(&vmtest::VmTestOptions {
            kernel_package: a.kernel_package,
            filter: a.filter,
            memory_mib: a.memory_mib,
            cpus: a.cpus,
            test_timeout: std::time::Duration::from_secs(a.test_timeout_s),
            timeout: std::time::Duration::from_secs(a.timeout_min * 60),
            verbose: a.verbose,
        }),
    }
}

fn run_lab(command: LabCmd) -> Result<()> {
    match command {
        LabCmd::Up(a) => {
            let lab = lab::Lab::up_with_mesh(
                &lab::LabOptions {
                    inventory: a.inventory,
                    prefix: a.prefix.clone(),
                    cgroup_mount: a.cgroup_mount,
                },
                a.mesh,
            )?;
            crate::outln!("{}", lab.describe().trim_end());
            let attach = lab.attach_cgroup().to_path_buf();
            let example = lab.members().first().map(|m| m.netns.clone());
            let state = lab.detach()?;
            crate::outln!(
                "lab {}: left running; state in {}",
                a.prefix,
                state.display()
            );
            crate::outln!(
                "  agent:   monitor agent --inventory <inventory> --cgroup {}",
                attach.display()
            );
            if let Some(ns) = example {
                crate::outln!("  try:     ip netns exec {ns} curl -s http://<pod ip>/");
            }
            crate::outln!("  remove:  cargo xtask lab down --prefix {}", a.prefix);
            Ok(())
        }
        LabCmd::Down { prefix, force } => lab::down_from_state_opts(&prefix, force),
        LabCmd::Status { prefix } => {
            match lab::State::load(&prefix)? {
                None => crate::outln!(
                    "lab {prefix}: not up (no {})",
                    lab::State::path(&prefix).display()
                ),
                Some(st) => {
                    crate::outln!(
                        "lab {prefix}: state {}",
                        lab::State::path(&prefix).display()
                    );
                    crate::outln!("  inventory    {}", st.inventory.display());
                    crate::outln!("  root cgroup  {}", st.root_cgroup.display());
                    crate::outln!("  run dir      {}", st.run_dir.display());
                    match st.owner {
                        Some(o) if o.running() => {
                            crate::outln!("  owner        pid {} (running)", o.pid)
                        }
                        Some(o) => crate::outln!("  owner        pid {} (gone)", o.pid),
                        None => {
                            crate::outln!("  owner        none (detached: `cargo xtask lab down`)")
                        }
                    }
                    crate::outln!("  netns        {}", st.netns.join(" "));
                    for p in &st.processes {
                        let alive = if p.id.running() { "running" } else { "gone" };
                        crate::outln!(
                            "  process      {} in {} (pid {}, {alive})",
                            p.what,
                            p.pod,
                            p.id.pid
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
