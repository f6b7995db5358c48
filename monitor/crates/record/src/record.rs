//! The records the agent emits, one JSON object per line (NDJSON): `http` (one per exchange),
//! `flow` (one per closed flow) and `loss` (anything not captured or not reconstructed).
//!
//! Field names follow ECS/OCSF usage (`source`, `destination`, `http.request.method` maps from
//! `http.method`, ...). The schema is documented in `docs/records.md`; keep them in step.

use serde::Serialize;

pub use crate::endpoint::{ATTESTED_BY_MESH, Endpoint, EndpointKind, Nat};
use crate::{exchange::Completion, exchange::Observer, violation::Violation};

/// One output line.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// An HTTP request and its response.
    Http(Box<HttpRecord>),
    /// A TCP flow that ended.
    Flow(Box<FlowRecord>),
    /// Data that was lost, with how much and when.
    Loss(LossRecord),
    /// A policy violation (docs/design.md#record-contract).
    Violation(Box<Violation>),
    /// The policy was (re)loaded, or a reload failed and the last good policy stays.
    Policy(PolicyEvent),
    /// Attestation of a quarantine: since when, what was blocked, what escaped.
    Quarantine(QuarantineAttestation),
}

/// Periodic attestation of one quarantined pod (every 10 s and when the agent stops).
#[derive(Debug, Serialize)]
pub struct QuarantineAttestation {
    /// When (RFC 3339).
    pub time: String,
    /// Node.
    pub node: String,
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// `enforce` (dropped in the kernel) or `observe` (reported only).
    pub mode: &'static str,
    /// Why it is quarantined (policy entry or NetworkPolicy).
    pub reason: String,
    /// Since when (RFC 3339; when this agent first saw it quarantined).
    pub since: String,
    /// Connection attempts blocked in the kernel (SYNs; retransmissions count again).
    pub attempts_blocked: u64,
    /// Packets dropped in the kernel.
    pub packets_dropped: u64,
    /// Bytes dropped in the kernel.
    pub bytes_dropped: u64,
    /// HTTP exchanges or flows of the pod seen after enforcement began (0 when enforced).
    pub escaped: u64,
}

impl Record {
    /// The `kind` written for this record.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Flow(_) => "flow",
            Self::Loss(_) => "loss",
            Self::Violation(_) => "violation",
            Self::Policy(_) => "policy",
            Self::Quarantine(_) => "quarantine",
        }
    }
}

/// A policy (re)load event.
#[derive(Debug, Serialize)]
pub struct PolicyEvent {
    /// When (RFC 3339).
    pub time: String,
    /// Node.
    pub node: String,
    /// `reloaded` or `reload-failed`.
    pub event: &'static str,
    /// The policy file.
    pub file: String,
    /// Reload failures since the agent started (the metric `policy_reload_failures`).
    pub reload_failures: u64,
    /// The problems, for `reload-failed` (`file:line:column: error: ...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl PolicyEvent {
    /// A successful reload.
    pub fn reloaded(node: &str, file: &std::path::Path, failures: u64) -> Self {
        Self {
            time: String::new(),
            node: node.to_owned(),
            event: "reloaded",
            file: file.display().to_string(),
            reload_failures: failures,
            errors: Vec::new(),
        }
    }

    /// A failed reload; the last good policy stays in force. `errs` are the diagnostics
    /// (`file:line:column: error: ...`).
    pub fn failed<E: std::fmt::Display>(
        node: &str,
        file: &std::path::Path,
        failures: u64,
        errs: &[E],
    ) -> Self {
        Self {
            time: String::new(),
            node: node.to_owned(),
            event: "reload-failed",
            file: file.display().to_string(),
            reload_failures: failures,
            errors: errs.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The HTTP part of an [`HttpRecord`].
#[derive(Debug, Serialize)]
pub struct HttpFields {
    /// Request method.
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    /// Path part of the target.
    pub path: String,
    /// Query part of the target, without `?`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// `Host` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `1.1` or `1.0`.
    pub version: String,
    /// Response status, if a response was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Request body bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body_bytes: Option<u64>,
    /// Response bytes, head included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
    /// Response body bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body_bytes: Option<u64>,
    /// The request head was larger than the capture; only its first line is certain.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub request_head_truncated: bool,
    /// The response head was larger than the capture.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub response_head_truncated: bool,
}

/// One HTTP exchange.
#[derive(Debug, Serialize)]
pub struct HttpRecord {
    /// When the request was sent (RFC 3339).
    pub time: String,
    /// Node that observed it.
    pub node: String,
    /// Which end observed it.
    pub observer: Observer,
    /// Socket cookie of the observing socket.
    pub flow_id: u64,
    /// The client.
    pub source: Endpoint,
    /// The server.
    pub destination: Endpoint,
    /// Request and response.
    pub http: HttpFields,
    /// Request start to response start, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Whether the response was seen to its end.
    pub completion: Completion,
}

/// One ended TCP flow.
#[derive(Debug, Serialize)]
pub struct FlowRecord {
    /// First packet (RFC 3339).
    pub time: String,
    /// Last packet (RFC 3339).
    pub end_time: String,
    /// Node that observed it.
    pub node: String,
    /// Which end observed it.
    pub observer: Observer,
    /// Socket cookie.
    pub flow_id: u64,
    /// The client.
    pub source: Endpoint,
    /// The server.
    pub destination: Endpoint,
    /// Always `tcp` for now.
    pub transport: &'static str,
    /// IP bytes client → server.
    pub bytes_to_server: u64,
    /// IP bytes server → client.
    pub bytes_to_client: u64,
    /// Packets client → server (a GSO super-packet counts once).
    pub packets_to_server: u64,
    /// Packets server → client.
    pub packets_to_client: u64,
    /// How it ended: `fin`, `rst`, `idle`, `agent-stopped`.
    pub close: &'static str,
    /// HTTP exchanges reported on it (0 on a proxy's leg: they are reported on the
    /// application's own leg).
    pub http_exchanges: u64,
    /// A service mesh proxy's own connection (a sidecar's mTLS leg, or its forward to the
    /// application): its bytes are counted here, its exchanges are reported (and checked
    /// against the policy) on the application's leg instead.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub proxy: bool,
}

/// A count of lost data.
#[derive(Debug, Serialize)]
pub struct LossRecord {
    /// End of the window (RFC 3339).
    pub time: String,
    /// Node.
    pub node: String,
    /// Where it was lost: `kernel` or `agent`.
    pub stage: &'static str,
    /// Stable kebab-case reason, e.g. `ringbuf-full`.
    pub reason: &'static str,
    /// How many were lost in the window.
    pub count: u64,
    /// Start of the window (RFC 3339).
    pub window_start: String,
}

/// Splits a request target into path and query.
pub fn split_target(target: &str) -> (String, Option<String>) {
    match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    }
}
