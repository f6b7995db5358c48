//! The node agent: the kernel programs feeding one pipeline, and delivery to the collector.
//!
//! - [`capture`]: load the kernel programs, attach them to the cgroup root, read their maps.
//! - [`probe`]: what the running kernel offers (required, degrading and optional features).
//! - [`http`]: HTTP/1.x head parsing (httparse).
//! - [`conn`]: per-connection reassembly and request/response matching.
//! - [`identity`]: who a cgroup id or an IP address is ([`identity::PodResolver`]: static
//!   inventory or Kubernetes).
//! - [`mesh`]: service-mesh legs (sidecar sockets, the application's legs to and from its
//!   sidecar) and the caller a sidecar names in `x-forwarded-client-cert`.
//! - [`pipeline`]: records in, records out: reassembly, identity, policy, redaction, losses;
//!   one code path for the live agent and for capture files (`monitor analyze`).
//! - [`agent`]: the live loop: drain on readiness and timer, kernel sync once a second.
//! - [`metrics`]: the agent's Prometheus metrics; [`clock`]: kernel boot time to wall time.
//! - [`delivery`]: the on-disk spool and the gRPC sender to the collector.
//!
//! Depends on the vocabulary, the policy and the wire; never on the collector.
pub mod agent;
pub mod capture;
pub mod clock;
pub mod conn;
pub mod delivery;
pub mod http;
pub mod identity;
pub mod mesh;
pub mod metrics;
pub mod pipeline;
pub mod probe;
