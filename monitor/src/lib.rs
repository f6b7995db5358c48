//! The monitor's userspace: the node agent, and (later) the collector and CLI tools.
//!
//! Map of the modules (one concept each):
//! - [`capture`]: load the kernel programs, attach them to the cgroup root, read their maps.
//! - [`http`]: HTTP/1.x head parsing (httparse).
//! - [`conn`]: per-connection reassembly and request/response matching.
//! - [`identity`]: who a cgroup id or an IP address is (static inventory for now).
//! - [`policy`]: the policy file, its evaluation, and violation records.
//! - [`record`]: the NDJSON records the agent emits (the contract with consumers).
//! - [`metrics`]: Prometheus metrics and the `/metrics` + `/healthz` endpoint.
//! - [`clock`]: kernel boot-time nanoseconds to wall-clock time.
//! - [`agent`]: the drain loop tying the above together.
//! - [`cli`]: command-line definitions.
pub mod agent;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod conn;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod record;
