//! Violations: the record SIEMs receive (DESIGN §3), query redaction, and aggregation of
//! repeats. The first occurrence of each (source, rule, route) in a window is reported at once;
//! repeats within the window are counted and reported as one record when it closes. A new
//! combination is never held back by an older one.

use std::collections::HashMap;

use serde::Serialize;

use crate::record::Endpoint;

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

/// Placeholder for redacted query values.
pub const REDACTED: &str = "REDACTED";

/// Splits a query into (key, value) pairs, percent-decoding keys for matching. Values stay raw.
pub fn query_pairs(query: &str) -> Vec<(String, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(k), v)
        })
        .collect()
}

/// Percent-decodes a query component (and `+` as space).
pub fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
            {
                let hexval = |c: u8| match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    _ => c - b'A' + 10,
                };
                out.push(hexval(b[i + 1]) * 16 + hexval(b[i + 2]));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Redacts a query: every value is replaced by [`REDACTED`] except those of `keep` keys
/// (compared case-insensitively after decoding). Keys are kept as sent.
pub fn redact_query(query: &str, keep: &[String]) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => {
                let name = decode_component(k);
                if keep.iter().any(|kk| kk.eq_ignore_ascii_case(&name)) {
                    format!("{k}={v}")
                } else {
                    format!("{k}={REDACTED}")
                }
            }
            None => p.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Distinct query keys in order.
pub fn query_keys(query: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in query_pairs(query) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// Aggregation key: (source, rule, route).
type Key = (String, Rule, String);

#[derive(Debug)]
struct Window {
    start_ns: u64,
    repeats: u64,
    last_ns: u64,
    /// The first occurrence, re-emitted with the count at window end.
    sample: Violation,
    first_time: String,
}

/// Aggregates repeats of violations per (source, rule, route) and window.
#[derive(Debug)]
pub struct Aggregator {
    window_ns: u64,
    open: HashMap<Key, Window>,
}

impl Aggregator {
    /// Windows of `window_ns`.
    pub fn new(window_ns: u64) -> Self {
        Self {
            window_ns: window_ns.max(1),
            open: HashMap::new(),
        }
    }

    /// Changes the window length (policy reload); open windows keep their start.
    pub fn set_window(&mut self, window_ns: u64) {
        self.window_ns = window_ns.max(1);
    }

    /// Takes one occurrence at `now_ns` (its `time` already set); returns it if it must be
    /// reported now (the first of its key in the window), or `None` if it was counted.
    pub fn offer(&mut self, source: &str, v: Violation, now_ns: u64) -> Option<Violation> {
        let key = (source.to_owned(), v.rule, v.route.clone());
        match self.open.get_mut(&key) {
            Some(w) if now_ns.saturating_sub(w.start_ns) < self.window_ns => {
                w.repeats += 1;
                w.last_ns = now_ns;
                w.sample.last_seen = v.time.clone();
                None
            }
            _ => {
                self.open.insert(
                    key,
                    Window {
                        start_ns: now_ns,
                        repeats: 0,
                        last_ns: now_ns,
                        first_time: v.time.clone(),
                        sample: v.clone(),
                    },
                );
                Some(v)
            }
        }
    }

    /// Closes windows older than the window length at `now_ns` (or all with `flush`) and
    /// returns one summary per window that saw repeats.
    pub fn close_windows(&mut self, now_ns: u64, flush: bool) -> Vec<Violation> {
        let mut out = Vec::new();
        let window_ns = self.window_ns;
        self.open.retain(|_, w| {
            let expired = flush || now_ns.saturating_sub(w.start_ns) >= window_ns;
            if expired && w.repeats > 0 {
                let mut s = w.sample.clone();
                s.count = w.repeats;
                s.aggregated = true;
                s.first_seen = w.first_time.clone();
                s.time = s.last_seen.clone();
                s.message = format!(
                    "{} (repeated {} more time{} in this window)",
                    s.message,
                    w.repeats,
                    if w.repeats == 1 { "" } else { "s" }
                );
                out.push(s);
            }
            !expired
        });
        out.sort_by(|a, b| a.first_seen.cmp(&b.first_seen));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Endpoint;

    fn v(rule: Rule, route: &str, time: &str) -> Violation {
        Violation {
            rule,
            severity: Severity::High,
            time: time.into(),
            node: "n".into(),
            source: Endpoint::new(None, None, 0),
            destination: Endpoint::new(None, None, 0),
            http: None,
            route: route.into(),
            policy: PolicyRef {
                file: "p.yaml".into(),
                rule: "x".into(),
                line: None,
            },
            message: "m".into(),
            count: 1,
            aggregated: false,
            first_seen: time.into(),
            last_seen: time.into(),
            flow_id: None,
        }
    }

    #[test]
    fn redaction_keeps_keys_and_kept_values_only() {
        let keep = vec!["state".to_owned(), "fields".to_owned()];
        assert_eq!(
            redact_query("fields=ssn_last4,email&state=CA&user_id=1049&flag", &keep),
            "fields=ssn_last4,email&state=CA&user_id=REDACTED&flag"
        );
        assert_eq!(
            redact_query("%73tate=NY&STATE=TX", &keep),
            "%73tate=NY&STATE=TX"
        );
        assert_eq!(redact_query("a=1&b=2", &[]), "a=REDACTED&b=REDACTED");
        assert_eq!(query_keys("a=1&b=2&a=3&%63=4"), ["a", "b", "c"]);
    }

    #[test]
    fn first_occurrence_now_repeats_counted_new_combinations_never_held() {
        let mut a = Aggregator::new(60);
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/x", "t1"), 0)
                .is_some()
        );
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/x", "t2"), 10)
                .is_none()
        );
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/x", "t3"), 20)
                .is_none()
        );
        // Another rule, route or source: reported at once.
        assert!(
            a.offer("p", v(Rule::UndocumentedEndpoint, "/x", "t4"), 21)
                .is_some()
        );
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/y", "t5"), 22)
                .is_some()
        );
        assert!(
            a.offer("q", v(Rule::SensitiveFields, "/x", "t6"), 23)
                .is_some()
        );
        assert!(a.close_windows(59, false).is_empty());
        let sums = a.close_windows(60, false);
        assert_eq!(sums.len(), 1, "{sums:?}");
        assert_eq!((sums[0].count, sums[0].aggregated), (2, true));
        assert_eq!(
            (sums[0].first_seen.as_str(), sums[0].last_seen.as_str()),
            ("t1", "t3")
        );
        // Next window: first occurrence reported at once again.
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/x", "t7"), 70)
                .is_some()
        );
    }
}
