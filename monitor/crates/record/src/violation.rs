//! The violation record: what SIEMs receive when a rule fires (docs/design.md#record-contract).
//! Rule ids and field names are a stable contract (docs/records.md).

use serde::Serialize;

use crate::endpoint::Endpoint;

/// Stable rule ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A path under a protected prefix that the catalog does not document for the destination.
    UndocumentedEndpoint,
    /// A documented internal endpoint called by a caller the catalog does not allow.
    CrossServiceInternal,
    /// Sensitive field names in the query.
    SensitiveFields,
    /// A destination outside the egress allowlist.
    EgressNotAllowed,
    /// Traffic to or from a quarantined pod.
    QuarantineBreach,
    /// A response far larger than the baseline.
    ResponseSizeAnomaly,
    /// A request rate far above the baseline.
    RateAnomaly,
    /// A (caller, destination, route) never seen before.
    NewEdge,
}

impl Severity {
    /// The lower-case name written in records and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl Rule {
    /// The kebab-case id.
    pub const fn id(self) -> &'static str {
        match self {
            Self::UndocumentedEndpoint => "undocumented-endpoint",
            Self::CrossServiceInternal => "cross-service-internal",
            Self::SensitiveFields => "sensitive-fields",
            Self::EgressNotAllowed => "egress-not-allowed",
            Self::QuarantineBreach => "quarantine-breach",
            Self::ResponseSizeAnomaly => "response-size-anomaly",
            Self::RateAnomaly => "rate-anomaly",
            Self::NewEdge => "new-edge",
        }
    }
}

/// Severity, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Worth knowing.
    Low,
    /// Worth a look.
    Medium,
    /// Act soon.
    High,
    /// Act now.
    Critical,
}

/// Where in the policy a violation comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    /// The policy file.
    pub file: String,
    /// Path of the rule in the file (`endpoints[2]`, `protected_prefixes[0]`).
    pub rule: String,
    /// Its line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// The HTTP part of a violation (redacted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViolationHttp {
    /// Method.
    pub method: String,
    /// The raw path as sent (no query).
    pub path: String,
    /// The normalised path the rules matched.
    pub normalized_path: String,
    /// Redacted query: keys kept, values replaced unless the policy keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Query keys, in order of first appearance.
    pub query_keys: Vec<String>,
    /// Response status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Request body bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body_bytes: Option<u64>,
    /// Response body bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body_bytes: Option<u64>,
}

/// One violation record.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// Stable rule id.
    pub rule: Rule,
    /// Severity.
    pub severity: Severity,
    /// When it (first, for aggregates) happened (RFC 3339).
    pub time: String,
    /// Node that observed it.
    pub node: String,
    /// The caller.
    pub source: Endpoint,
    /// The called side.
    pub destination: Endpoint,
    /// The exchange, when the violation is about HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<ViolationHttp>,
    /// The route the aggregation key uses.
    pub route: String,
    /// The policy rule that fired.
    pub policy: PolicyRef,
    /// A sentence for humans.
    pub message: String,
    /// Occurrences this record stands for (1 for a first occurrence).
    pub count: u64,
    /// True for the end-of-window summary of repeats.
    pub aggregated: bool,
    /// First occurrence in this record (RFC 3339).
    pub first_seen: String,
    /// Last occurrence in this record (RFC 3339).
    pub last_seen: String,
    /// Socket cookie of the flow it was seen on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<u64>,
}
