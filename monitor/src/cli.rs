//! Command-line definitions (clap derive). `main.rs` only dispatches on these.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// eBPF-backed network egress and endpoint monitor for Kubernetes nodes.
///
/// The agent watches every pod's TCP flows and HTTP/1.x messages from the kernel (cgroup_skb
/// programs on the pods' cgroup root) and prints one JSON record per HTTP exchange, per closed
/// flow and per loss.
#[derive(Debug, Parser)]
#[command(name = "monitor", version, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: attach to a cgroup v2 directory and print NDJSON records to stdout.
    ///
    /// Needs root (or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN). Stops cleanly on SIGINT/SIGTERM,
    /// reporting exchanges and flows still in flight; the kernel programs detach when the
    /// process exits, also after a crash.
    ///
    /// Example: monitor agent --inventory deploy/examples/vantage/inventory.yaml \
    ///          --cgroup /sys/fs/cgroup/kubepods.slice
    Agent(AgentArgs),

    /// Work with policy files (see docs/policy.md).
    Policy {
        /// What to do.
        #[command(subcommand)]
        cmd: PolicyCommand,
    },
}

/// `monitor policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy files: syntax, structure and every semantic rule, reporting every problem
    /// with FILE:LINE:COLUMN and a hint.
    ///
    /// Prints `FILE: ok (summary)` on stdout for each clean file and the diagnostics on stderr
    /// for the others; exits with status 1 if any file has an error.
    ///
    /// Example: monitor policy lint deploy/examples/vantage/policy.yaml
    Lint {
        /// Policy files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// `monitor agent` options.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Identity from an inventory YAML listing this node's pods (name, namespace, service,
    /// IPs, cgroup path). The lab's source; exactly one of --inventory and --kubernetes.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub inventory: Option<PathBuf>,

    /// Identity from the Kubernetes API (in-cluster config or ~/.kube/config): this node's
    /// Pods, Services, EndpointSlices and NetworkPolicies. Needs --node-name.
    #[arg(long, requires = "node_name")]
    pub kubernetes: bool,

    /// This node's name (set it from the downward API: spec.nodeName).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Policy YAML (see docs/policy.md): documented endpoints, allowed callers, egress
    /// allowlist, quarantine, baselines. Reloaded when the file changes; a bad edit keeps the
    /// last good policy. Without a policy no violations are reported and every query value is
    /// redacted.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// cgroup v2 directory whose sockets are monitored (every cgroup below it too).
    /// On Kubernetes nodes usually /sys/fs/cgroup (or its kubepods slice).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup: PathBuf,

    /// Serve Prometheus metrics on http://ADDR/metrics and a health check on /healthz
    /// (200 once attached), e.g. 0.0.0.0:9464. Off when not given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Create this file (containing the agent's PID) once the programs are attached.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,

    /// Close flows with no packet for this many seconds (FIN/RST normally close them).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub idle_timeout: u64,

    /// Ring-buffer drain period in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub drain_ms: u64,
}
