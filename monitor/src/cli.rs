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
}

/// `monitor agent` options.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Inventory YAML listing this node's pods (name, namespace, service, IPs, cgroup path).
    #[arg(long, value_name = "FILE")]
    pub inventory: PathBuf,

    /// cgroup v2 directory whose sockets are monitored (every cgroup below it too).
    /// On Kubernetes nodes usually /sys/fs/cgroup (or its kubepods slice).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup: PathBuf,

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
