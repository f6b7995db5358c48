//! The monitor's userspace: the node agent, the collector and the CLI tools.
//!
//! Map of the modules (one concept each):
//! - [`capture`]: load the kernel programs, attach them to the cgroup root, read their maps.
//! - [`http`]: HTTP/1.x head parsing (httparse).
//! - [`conn`]: per-connection reassembly and request/response matching.
//! - [`identity`]: who a cgroup id or an IP address is (static inventory for now).
//! - [`policy`]: the policy file, its evaluation, and violation records.
//! - [`record`]: the NDJSON records the agent emits (the contract with consumers).
//! - [`probe`]: what the running kernel offers (required, degrading and optional features).
//! - [`metrics`]: Prometheus metrics and the `/metrics` + `/healthz` endpoint.
//! - [`clock`]: kernel boot-time nanoseconds to wall-clock time.
//! - [`pipeline`]: records in, records out: reassembly, identity, policy, redaction, losses;
//!   one code path for the live agent and for capture files.
//! - [`agent`]: the live node agent: the kernel programs feeding the pipeline.
//! - [`analyze`]: packet captures through the same pipeline (`monitor analyze`).
//! - [`dry_run`]: the stored history under a candidate policy (`monitor policy dry-run`).
//! - [`delivery`]: the agent's spool and gRPC sender to the collector.
//! - [`collector`]: the collector: gRPC ingest over mTLS, store, Observe and Report.
//! - [`sink`]: SIEM sinks fed by the collector (NDJSON, OCSF, syslog/CEF over TLS).
//! - [`tls`]: mTLS: certificates for the lab and users, reloading server config, client config.
//! - [`proto`]: the gRPC contract generated from `proto/monitor.proto`.
//! - [`cli`]: command-line definitions; [`cmd`]: each subcommand's edge (anyhow errors);
//!   [`client`]: the CLI's connection to the collector and its output.
pub mod agent;
pub mod analyze;
pub mod capture;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cmd;
pub mod collector;
pub mod conn;
pub mod delivery;
pub mod dry_run;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod probe;
pub mod proto;
pub mod record;
pub mod sink;
pub mod tls;
