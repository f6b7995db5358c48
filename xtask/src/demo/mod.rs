//! `cargo xtask demo`: replays the Vantage incident (docs/design.md#the-problem) on this machine.
//!
//! setup (fast path) → release build of `monitor` → lab up (Vantage inventory) → a copy of the
//! Vantage policy in the lab's run directory → the agent (root cgroup, the lab's node netns), attached
//! to the lab's root cgroup, with that copy → real curl traffic from the pods, in four phases:
//!
//! 1. background: the recommendation engines 01-03 read user preferences (enough calls for the
//!    response-size baseline), checkout reads them too, the gateway lists products, the scraper
//!    probes `/internal/health` and scrapes `/internal/metrics` on every service, the catalog
//!    flushes its own cache, checkout calls the partner API — all documented and allowed;
//! 2. the backdoor: `svc-recommendation-engine-04` calls the undocumented
//!    `GET /internal/admin/v0/users/lookup` with the seed's fields, one state after another;
//! 3. the response: the policy copy is rewritten to quarantine -04 in enforce mode; the agent
//!    reloads it (a `policy` record says so) and puts -04's cgroup in the kernel's drop set;
//! 4. -04 keeps trying: its connections hang (SYNs dropped) and time out.
//!
//! The agent runs in the lab's node netns and delivers over mTLS (certificates from `monitor
//! certs init`) to a collector there (`target/demo/collector.db`, NDJSON sink
//! `target/demo/collector-records.ndjson`); it also prints its records.
//!
//! → agent stopped with SIGINT → every record in `target/demo/records.ndjson`, and on screen the
//! violations table, the quarantine attestation and a checklist of what the incident must
//! produce (the command fails if an item is not met); then `monitor observe` and `monitor
//! report` on the collector's copy → lab down. A guard tears everything down
//! on error and on Ctrl-C.
//!
//! Its parts, one step each: `scenario` (the pods, the calls of each phase, the quarantine
//! edit), `run` (start to end: lab, collector, agent, teardown), `phases` (the four phases
//! played with curl), `agent` (the agent and collector processes on [`crate::harness`]),
//! `checks` (the checklist against the records) and `present` (tables and lines).

mod agent;
mod checks;
mod phases;
mod present;
mod run;
mod scenario;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use agent::COLLECTOR_URL;
pub use checks::{Check, checklist, collector_check, reload_check};
pub use phases::{QUARANTINE_SETTLE, RELOAD_TIMEOUT};
pub use present::{attestation, describe_record, violations_table};
pub use run::run;
pub use scenario::{
    BACKDOOR_POD, BASELINE_CALLS, BLOCKED_ATTEMPTS, BLOCKED_TIMEOUT_S, LOOKUP_FIELDS, LOOKUP_LIMIT,
    LOOKUP_ROUTE, LOOKUP_STATES, QUARANTINED, lookup_target, quarantine_policy, replace_file,
};

/// Options of `cargo xtask demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Inventory (must contain the Vantage pods).
    pub inventory: PathBuf,
    /// Lab prefix.
    pub prefix: String,
    /// cgroup2 mount override.
    pub cgroup_mount: Option<PathBuf>,
    /// Use an existing `monitor` binary instead of building it.
    pub no_build: bool,
    /// The agent binary (default `<target>/release/monitor`).
    pub monitor_bin: Option<PathBuf>,
    /// Extra arguments for `monitor agent`. A `--policy FILE` among them replaces the policy
    /// the demo copies (default: `policy.yaml` next to the inventory); the agent always runs
    /// with the copy, which the demo rewrites to quarantine the backdoored pod.
    pub agent_args: Vec<String>,
    /// Echo the agent's stderr (logs) live.
    pub agent_logs: bool,
}

/// Lab prefix the demo uses by default (distinct from `lab up`'s, so both can coexist).
pub const DEMO_PREFIX: &str = "mdemo";

/// How long to wait for the agent's (and the collector's) ready file.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
