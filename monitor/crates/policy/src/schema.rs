//! The policy file's schema (YAML), as serde types. Documented for users in `docs/policy.md`;
//! keep the two in step. Structural errors come from serde with their position; semantic checks
//! live in [`crate::load`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// A whole policy file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Schema version; only `1` exists.
    pub version: u32,
    /// Path prefixes that only documented endpoints may use (e.g. `/internal/`). Each starts and
    /// ends with `/` and is lowercase (matching is case-insensitive).
    #[serde(default)]
    pub protected_prefixes: Vec<String>,
    /// The catalog of documented endpoints under the protected prefixes.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Sensitive field names in queries.
    #[serde(default)]
    pub sensitive_fields: Option<SensitiveFields>,
    /// Which query values may be written in records; all others are redacted.
    #[serde(default)]
    pub redaction: Redaction,
    /// Allowed service-to-service edges and external destinations.
    #[serde(default)]
    pub egress: Option<Egress>,
    /// Quarantined pods.
    #[serde(default)]
    pub quarantine: Option<Quarantine>,
    /// Baselines: response size, request rate, new edges.
    #[serde(default)]
    pub baselines: Option<Baselines>,
    /// Violation aggregation.
    #[serde(default)]
    pub aggregation: Aggregation,
}

/// One documented endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Exact path (after normalisation), or a prefix when it ends with `/**`. Written as
    /// requests are matched (lowercase, no `//`, `.`/`..`, `%`, `?`), under a protected prefix.
    pub path: String,
    /// Services that serve it; `["*"]` for every service.
    pub services: Vec<String>,
    /// Methods allowed; empty for any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Who may call it.
    pub callers: Vec<Caller>,
    /// Free text shown in violations ("runbook: ...").
    #[serde(default)]
    pub description: Option<String>,
}

/// An allowed caller of a documented endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Caller {
    /// `self`: the destination's own service; `node`: the node itself (kubelet probes).
    Keyword(CallerKeyword),
    /// A service, a namespace or a pod by name.
    Selector(CallerSelector),
}

/// Caller keywords.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CallerKeyword {
    /// The destination's own service (pods of one service calling each other or themselves).
    #[serde(rename = "self")]
    SelfService,
    /// The node itself (host network, e.g. kubelet probes).
    Node,
}

/// A caller named by one field (the linter refuses none or several).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CallerSelector {
    /// Pods of this service.
    #[serde(default)]
    pub service: Option<String>,
    /// Pods in this namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// This pod.
    #[serde(default)]
    pub pod: Option<String>,
}

/// Sensitive field names.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensitiveFields {
    /// Glob patterns (`*` and `?`), matched case-insensitively against query keys and against
    /// the comma-separated values of `selector_keys`.
    pub names: Vec<String>,
    /// Query keys whose values list field names (`fields=ssn_last4,email`).
    #[serde(default = "default_selector_keys")]
    pub selector_keys: Vec<String>,
    /// At this many distinct sensitive names in one request the severity rises to `critical`
    /// (at least 2).
    #[serde(default = "default_combination")]
    pub critical_at: usize,
}

fn default_selector_keys() -> Vec<String> {
    ["fields", "select", "include", "columns", "attributes"]
        .map(String::from)
        .to_vec()
}

fn default_combination() -> usize {
    3
}

/// Query redaction.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    /// Query keys whose values are kept (filters such as `state`, selectors such as `fields`).
    /// Every other value is replaced by `REDACTED`; keys are always kept.
    #[serde(default)]
    pub keep_values: Vec<String>,
}

/// The egress allowlist.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// Allowed service-to-service edges.
    #[serde(default)]
    pub edges: Vec<Edge>,
    /// Approved destinations outside the cluster.
    #[serde(default)]
    pub external: Vec<ExternalDestination>,
}

/// An allowed edge: pods of `from` may call `to`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Calling service (or `*`).
    pub from: String,
    /// Called service (or `*`).
    pub to: String,
    /// Ports allowed; empty for any.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// An approved external destination.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExternalDestination {
    /// Name shown in records and violations.
    pub name: String,
    /// Address ranges (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
    pub cidrs: Vec<String>,
    /// Ports allowed; empty for any.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Services allowed to call it; empty for any.
    #[serde(default)]
    pub from: Vec<String>,
}

/// Quarantine.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    /// `observe`: report every attempt as `quarantine-breach`; `enforce`: also drop it in the
    /// kernel.
    #[serde(default)]
    pub mode: QuarantineMode,
    /// Pods by name (`namespace/name` or `name`).
    #[serde(default)]
    pub pods: Vec<String>,
    /// Pods whose labels include all of these.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Also treat pods isolated by a deny-all NetworkPolicy as quarantined.
    #[serde(default = "yes")]
    pub network_policies: bool,
}

fn yes() -> bool {
    true
}

/// Quarantine mode.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineMode {
    /// Report only.
    #[default]
    Observe,
    /// Report and drop in the kernel.
    Enforce,
}

/// Baselines.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Baselines {
    /// Response size per (caller service, destination service, route).
    #[serde(default)]
    pub response_size: Option<SizeBaseline>,
    /// Request rate per (caller service, destination service, route).
    #[serde(default)]
    pub rate: Option<RateBaseline>,
    /// Report a (caller service, destination service, route) never seen before, once the
    /// learning period is over.
    #[serde(default)]
    pub new_edges: Option<NewEdges>,
}

/// Response-size baseline.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SizeBaseline {
    /// Fire when a response is at least this many times the baseline mean.
    pub factor: f64,
    /// Responses needed before the baseline is used.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
}

fn default_min_samples() -> u64 {
    20
}

/// Request-rate baseline.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateBaseline {
    /// Fire when a minute's request count is at least this many times the baseline.
    pub factor: f64,
    /// Minutes observed before the baseline is used.
    #[serde(default = "default_min_minutes")]
    pub min_minutes: u64,
}

fn default_min_minutes() -> u64 {
    10
}

/// New-edge detection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewEdges {
    /// Seconds after start during which edges are learnt silently.
    pub learn_seconds: u64,
}

/// Aggregation of repeated violations.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Aggregation {
    /// Repeats of one (source pod, rule, route) within this many seconds are reported as one
    /// record with a count at the end of the window. The first occurrence is always reported
    /// at once.
    #[serde(default = "default_window")]
    pub window_seconds: u64,
}

fn default_window() -> u64 {
    60
}

impl Default for Aggregation {
    fn default() -> Self {
        Self {
            window_seconds: default_window(),
        }
    }
}

impl PolicyFile {
    /// A one-line summary of a checked policy: `3 endpoints, 5 edges, 1 external, ...` (what
    /// `monitor policy lint` prints for a clean file).
    pub fn summary(&self) -> String {
        fn n(count: usize, what: &str) -> String {
            format!("{count} {what}{}", if count == 1 { "" } else { "s" })
        }
        let mut parts = vec![
            n(self.protected_prefixes.len(), "protected prefix"),
            n(self.endpoints.len(), "endpoint"),
        ];
        let (edges, external) = self
            .egress
            .as_ref()
            .map_or((0, 0), |e| (e.edges.len(), e.external.len()));
        parts.push(n(edges, "edge"));
        parts.push(format!("{external} external"));
        parts.push(n(
            self.sensitive_fields.as_ref().map_or(0, |s| s.names.len()),
            "sensitive name",
        ));
        parts.push(format!(
            "{} kept query value{}",
            self.redaction.keep_values.len(),
            if self.redaction.keep_values.len() == 1 {
                ""
            } else {
                "s"
            }
        ));
        match &self.quarantine {
            Some(q) => {
                let mut what = vec![n(q.pods.len(), "pod")];
                if !q.selector.is_empty() {
                    what.push("a label selector".into());
                }
                if q.network_policies {
                    what.push("deny-all NetworkPolicies".into());
                }
                let mode = match q.mode {
                    QuarantineMode::Observe => "observe",
                    QuarantineMode::Enforce => "enforce",
                };
                parts.push(format!("quarantine {mode}: {}", what.join(" + ")));
            }
            None => parts.push("no quarantine".into()),
        }
        let baselines: Vec<&str> = self.baselines.as_ref().map_or_else(Vec::new, |b| {
            [
                (b.response_size.is_some(), "response-size"),
                (b.rate.is_some(), "rate"),
                (b.new_edges.is_some(), "new-edges"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect()
        });
        parts.push(if baselines.is_empty() {
            "no baselines".into()
        } else {
            format!("baselines: {}", baselines.join(", "))
        });
        parts.push(format!("aggregation {}s", self.aggregation.window_seconds));
        parts.join(", ")
    }
}
