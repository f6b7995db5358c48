//! Evaluation: one HTTP exchange (or one non-HTTP flow) and the two identities in, the
//! findings out. The engine also keeps the baselines (response size, request rate, edges seen)
//! across policy reloads.
//!
//! Identities come from the records' endpoints; the destination is always identified by its
//! address (never by the `Host` header), so a forged `Host` cannot move a request to another
//! service's catalog.

use std::collections::{HashMap, HashSet};

use super::{
    Policy,
    path::{self, Normalized},
    pattern::{cidr_contains, glob_match},
    schema::{Caller, CallerKeyword, CallerSelector, Endpoint as CatalogEndpoint},
};
use monitor_record::record::{Endpoint, EndpointKind, HttpFields};
use monitor_record::{
    query::{decode_component, query_keys, query_pairs, redact_query},
    violation::{PolicyRef, Rule, Severity, Violation, ViolationHttp},
};

impl<'a> From<&'a HttpFields> for HttpInput<'a> {
    fn from(f: &'a HttpFields) -> Self {
        HttpInput {
            method: &f.method,
            target: &f.target,
            status: f.status,
            request_body_bytes: f.request_body_bytes,
            response_body_bytes: f.response_body_bytes,
        }
    }
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// Its severity.
    pub severity: Severity,
    /// Path of the policy rule in the file (`endpoints[2]`).
    pub policy_rule: String,
    /// A sentence for humans.
    pub message: String,
}

/// What the engine needs from an HTTP exchange.
#[derive(Debug, Clone, Copy)]
pub struct HttpInput<'a> {
    /// Method.
    pub method: &'a str,
    /// Request target as sent.
    pub target: &'a str,
    /// Response status.
    pub status: Option<u16>,
    /// Request body bytes.
    pub request_body_bytes: Option<u64>,
    /// Response body bytes.
    pub response_body_bytes: Option<u64>,
}

/// The outcome of evaluating one exchange.
#[derive(Debug, Clone)]
pub struct HttpVerdict {
    /// Rules that fired.
    pub findings: Vec<Finding>,
    /// The normalised path.
    pub normalized: Normalized,
    /// The baseline / aggregation route.
    pub route: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    n: u64,
    sum: f64,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
    }

    fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Rate {
    minute: u64,
    count: u64,
    minutes: u64,
    total: u64,
}

/// The evaluator and its learnt state.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    /// The policy's paths lowered once (see [`path::lower`]).
    lowered: Lowered,
    started_ns: u64,
    /// (caller, destination, route) → response body sizes.
    sizes: HashMap<(String, String, String), Mean>,
    /// (caller, destination) → response body sizes over every route.
    pair_sizes: HashMap<(String, String), Mean>,
    rates: HashMap<(String, String, String), Rate>,
    edges: HashSet<(String, String, String)>,
}

/// The policy's protected prefixes and catalog paths in lower case, index for index.
#[derive(Debug, Default)]
struct Lowered {
    prefixes: Vec<String>,
    catalog: Vec<String>,
}

impl Lowered {
    fn of(policy: &Policy) -> Self {
        Self {
            prefixes: policy
                .spec
                .protected_prefixes
                .iter()
                .map(|p| path::lower(p))
                .collect(),
            catalog: policy
                .spec
                .endpoints
                .iter()
                .map(|e| path::lower(&e.path))
                .collect(),
        }
    }
}

/// Name used for an endpoint in baselines and edges: its service, else pod, else address.
pub fn who(e: &Endpoint) -> String {
    e.service()
        .or_else(|| e.pod())
        .map(str::to_owned)
        .or_else(|| e.ip.map(|i| i.to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// How an endpoint is named in messages: `pod (service)`, else what [`who`] gives.
fn describe(e: &Endpoint) -> String {
    match (e.pod(), e.service()) {
        (Some(p), Some(s)) if p != s => format!("{p} ({s})"),
        _ => who(e),
    }
}

impl Engine {
    /// An engine for `policy`, started at `now_ns` (the new-edge learning period starts here).
    pub fn new(policy: Policy, now_ns: u64) -> Self {
        Self {
            lowered: Lowered::of(&policy),
            policy,
            started_ns: now_ns,
            sizes: HashMap::new(),
            pair_sizes: HashMap::new(),
            rates: HashMap::new(),
            edges: HashSet::new(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the policy; learnt baselines and edges are kept.
    pub fn set_policy(&mut self, policy: Policy) {
        self.lowered = Lowered::of(&policy);
        self.policy = policy;
    }

    /// Redacts a query under the policy.
    pub fn redact(&self, query: &str) -> String {
        redact_query(query, &self.policy.spec.redaction.keep_values)
    }

    fn line(&self, rule: &str) -> Option<usize> {
        self.policy.lines.get(rule).copied()
    }

    /// Why `ep` is quarantined, if it is.
    pub fn quarantined(&self, ep: &Endpoint) -> Option<(String, String)> {
        let q = self.policy.spec.quarantine.as_ref()?;
        if ep.kind != EndpointKind::Pod {
            return None;
        }
        let name = ep.pod()?;
        let ns = ep.namespace().unwrap_or("");
        for (i, p) in q.pods.iter().enumerate() {
            let hit = match p.split_once('/') {
                Some((pns, pn)) => pns == ns && pn == name,
                None => p == name,
            };
            if hit {
                return Some((
                    format!("quarantine.pods[{i}]"),
                    format!("pod {p} is listed"),
                ));
            }
        }
        if !q.selector.is_empty()
            && q.selector
                .iter()
                .all(|(k, v)| ep.labels().get(k) == Some(v))
        {
            return Some((
                "quarantine.selector".into(),
                "its labels match the quarantine selector".into(),
            ));
        }
        if q.network_policies
            && let Some(np) = ep.isolated_by()
        {
            return Some((
                "quarantine".into(),
                format!("NetworkPolicy {np} isolates it (deny-all)"),
            ));
        }
        None
    }

    fn caller_allowed(callers: &[Caller], src: &Endpoint, dst: &Endpoint) -> bool {
        callers.iter().any(|c| match c {
            Caller::Keyword(CallerKeyword::SelfService) => {
                src.service().is_some() && src.service() == dst.service()
            }
            Caller::Keyword(CallerKeyword::Node) => src.kind == EndpointKind::Node,
            Caller::Selector(CallerSelector {
                service,
                namespace,
                pod,
            }) => {
                src.kind == EndpointKind::Pod
                    && service
                        .as_ref()
                        .is_none_or(|s| src.service() == Some(s.as_str()))
                    && namespace
                        .as_ref()
                        .is_none_or(|n| src.namespace() == Some(n.as_str()))
                    && pod.as_ref().is_none_or(|p| {
                        src.pod() == Some(p.as_str())
                            || p.split_once('/').is_some_and(|(n, name)| {
                                src.namespace() == Some(n) && src.pod() == Some(name)
                            })
                    })
            }
        })
    }

    fn serves(e: &CatalogEndpoint, dst: &Endpoint) -> bool {
        e.services
            .iter()
            .any(|s| s == "*" || dst.service() == Some(s.as_str()))
    }

    /// Catalog rules: undocumented endpoints and disallowed callers.
    fn catalog(
        &self,
        src: &Endpoint,
        dst: &Endpoint,
        method: &str,
        norm: &Normalized,
    ) -> Option<Finding> {
        let spec = &self.policy.spec;
        let pi = self
            .lowered
            .prefixes
            .iter()
            .position(|p| path::under(&norm.lower, p))?;
        let prefix = &spec.protected_prefixes[pi];
        // Only our own services have a catalog; other destinations are egress's business.
        if !matches!(dst.kind, EndpointKind::Pod | EndpointKind::Service) {
            return None;
        }
        // Message parts, built only when there is a finding.
        let dst_name = || dst.service().map_or_else(|| who(dst), str::to_owned);
        let evasion = || {
            if norm.notes.is_empty() {
                String::new()
            } else {
                format!(" (request target used: {})", norm.notes.join(", "))
            }
        };
        let documented = spec
            .endpoints
            .iter()
            .zip(&self.lowered.catalog)
            .enumerate()
            .find(|(_, (e, lower))| {
                path::matches_catalog(&norm.lower, lower) && Self::serves(e, dst)
            })
            .map(|(i, (e, _))| (i, e));
        let Some((ei, e)) = documented else {
            return Some(Finding {
                rule: Rule::UndocumentedEndpoint,
                severity: Severity::Critical,
                policy_rule: format!("protected_prefixes[{pi}]"),
                message: format!(
                    "{} called {method} {} on {}: not a documented endpoint under \
                     protected prefix {prefix}{}",
                    describe(src),
                    norm.path,
                    dst_name(),
                    evasion()
                ),
            });
        };
        if !e.methods.is_empty() && !e.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
            return Some(Finding {
                rule: Rule::UndocumentedEndpoint,
                severity: Severity::Critical,
                policy_rule: format!("endpoints[{ei}]"),
                message: format!(
                    "{} called {method} {} on {}: documented for {} only{}",
                    describe(src),
                    norm.path,
                    dst_name(),
                    e.methods.join(", "),
                    evasion()
                ),
            });
        }
        if !Self::caller_allowed(&e.callers, src, dst) {
            return Some(Finding {
                rule: Rule::CrossServiceInternal,
                severity: Severity::High,
                policy_rule: format!("endpoints[{ei}]"),
                message: format!(
                    "{} called internal endpoint {method} {} on {}, which the catalog \
                     does not allow it to call{}",
                    describe(src),
                    e.path,
                    dst_name(),
                    evasion()
                ),
            });
        }
        None
    }

    fn sensitive(&self, query: &str) -> Option<Finding> {
        let s = self.policy.spec.sensitive_fields.as_ref()?;
        let mut hits: Vec<String> = Vec::new();
        let mut note = |name: &str| {
            let lower = name.trim().to_lowercase();
            if !lower.is_empty()
                && s.names.iter().any(|p| glob_match(p, &lower))
                && !hits.contains(&lower)
            {
                hits.push(lower);
            }
        };
        for (k, v) in query_pairs(query) {
            note(&k);
            if s.selector_keys.iter().any(|sk| sk.eq_ignore_ascii_case(&k)) {
                for f in decode_component(v).split(',') {
                    note(f);
                }
            }
        }
        if hits.is_empty() {
            return None;
        }
        let severity = if hits.len() >= s.critical_at {
            Severity::Critical
        } else {
            Severity::High
        };
        Some(Finding {
            rule: Rule::SensitiveFields,
            severity,
            policy_rule: "sensitive_fields".into(),
            message: format!(
                "query asks for {} sensitive field{}: {}",
                hits.len(),
                if hits.len() == 1 { "" } else { "s" },
                hits.join(", ")
            ),
        })
    }

    /// Egress allowlist for a call from `src` to `dst`.
    fn egress(&self, src: &Endpoint, dst: &Endpoint) -> Option<Finding> {
        let eg = self.policy.spec.egress.as_ref()?;
        // Only pods are subject to egress rules (not calls arriving from outside).
        if src.kind != EndpointKind::Pod {
            return None;
        }
        let from = who(src);
        let port = dst.port;
        match dst.kind {
            EndpointKind::Pod | EndpointKind::Service => {
                let to = who(dst);
                if to == from {
                    return None;
                }
                let ok = eg.edges.iter().any(|e| {
                    (e.from == "*" || e.from == from)
                        && (e.to == "*" || e.to == to)
                        && (e.ports.is_empty() || e.ports.contains(&port))
                });
                (!ok).then(|| Finding {
                    rule: Rule::EgressNotAllowed,
                    severity: Severity::High,
                    policy_rule: "egress.edges".into(),
                    message: format!("{from} → {to}:{port} is not an allowed edge"),
                })
            }
            EndpointKind::Node => None,
            _ => {
                let ip = dst.ip?;
                let ok = eg.external.iter().any(|x| {
                    x.cidrs.iter().any(|c| cidr_contains(c, ip))
                        && (x.ports.is_empty() || x.ports.contains(&port))
                        && (x.from.is_empty() || x.from.contains(&from))
                });
                let name = dst.pod().map_or_else(|| ip.to_string(), str::to_owned);
                (!ok).then(|| Finding {
                    rule: Rule::EgressNotAllowed,
                    severity: Severity::High,
                    policy_rule: "egress.external".into(),
                    message: format!(
                        "{from} → external {name} ({ip}:{port}) is not an approved destination"
                    ),
                })
            }
        }
    }

    /// True when the policy's quarantine mode is `enforce`.
    pub fn enforcing(&self) -> bool {
        self.policy
            .spec
            .quarantine
            .as_ref()
            .is_some_and(|q| q.mode == super::schema::QuarantineMode::Enforce)
    }

    /// The quarantine-breach finding for traffic between `src` and `dst`, if either end is
    /// quarantined.
    pub fn quarantine_finding(&self, src: &Endpoint, dst: &Endpoint) -> Option<Finding> {
        let (ep, dir) = match self.quarantined(src) {
            Some(q) => (q, "from"),
            None => (self.quarantined(dst)?, "to"),
        };
        let mode = self
            .policy
            .spec
            .quarantine
            .as_ref()
            .map_or("observe", |q| match q.mode {
                super::schema::QuarantineMode::Observe => "observe",
                super::schema::QuarantineMode::Enforce => "enforce",
            });
        Some(Finding {
            rule: Rule::QuarantineBreach,
            severity: Severity::Critical,
            policy_rule: ep.0,
            message: format!(
                "traffic {dir} a quarantined pod ({}; mode {mode}): {} → {}",
                ep.1,
                describe(src),
                describe(dst)
            ),
        })
    }

    /// Evaluates an HTTP exchange at `now_ns`.
    pub fn evaluate_http(
        &mut self,
        src: &Endpoint,
        dst: &Endpoint,
        http: HttpInput<'_>,
        now_ns: u64,
    ) -> HttpVerdict {
        let norm = path::normalize(http.target);
        let protected = self
            .lowered
            .prefixes
            .iter()
            .any(|p| path::under(&norm.lower, p));
        let route = path::route(&norm, protected);
        let query = http.target.split_once('?').map_or("", |(_, q)| q);
        let catalog = self.catalog(src, dst, http.method, &norm);
        // A documented endpoint the caller may call is judged against its own size history
        // only: comparing a 900-byte /internal/metrics scrape with the same caller's 2-byte
        // health probes would be noise. Other routes (new API routes, undocumented paths)
        // fall back to the caller's usual size from this destination.
        let documented_and_allowed = protected && catalog.is_none();
        let mut findings: Vec<Finding> = [
            self.quarantine_finding(src, dst),
            catalog,
            self.sensitive(query),
            self.egress(src, dst),
        ]
        .into_iter()
        .flatten()
        .collect();
        let learn = findings.is_empty();
        findings.extend(self.baselines(
            src,
            dst,
            &route,
            http,
            now_ns,
            learn,
            !documented_and_allowed,
        ));
        HttpVerdict {
            findings,
            normalized: norm,
            route,
        }
    }

    /// Evaluates a flow that carried no HTTP (quarantine and egress only).
    pub fn evaluate_flow(&mut self, src: &Endpoint, dst: &Endpoint) -> Vec<Finding> {
        [self.quarantine_finding(src, dst), self.egress(src, dst)]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Size, rate and new-edge baselines. Exchanges that already violated something are not
    /// learnt (an attacker must not teach the baseline).
    #[expect(
        clippy::too_many_arguments,
        reason = "one exchange's facts, passed apart"
    )]
    fn baselines(
        &mut self,
        src: &Endpoint,
        dst: &Endpoint,
        route: &str,
        http: HttpInput<'_>,
        now_ns: u64,
        learn: bool,
        pair_fallback: bool,
    ) -> Vec<Finding> {
        let Some(b) = self.policy.spec.baselines.clone() else {
            return Vec::new();
        };
        let (from, to) = (who(src), who(dst));
        let key = (from.clone(), to.clone(), route.to_owned());
        let mut out = Vec::new();
        if let (Some(sb), Some(size)) = (&b.response_size, http.response_body_bytes) {
            let route_mean = self.sizes.get(&key).copied().unwrap_or_default();
            let pair_key = (from.clone(), to.clone());
            let pair_mean = self.pair_sizes.get(&pair_key).copied().unwrap_or_default();
            // The route's own baseline when it has one; else the caller's usual size from this
            // destination (a new route returning 9x the usual is the finding).
            let base = if route_mean.n >= sb.min_samples {
                Some((route_mean.mean(), "this route"))
            } else if pair_fallback && pair_mean.n >= sb.min_samples {
                Some((pair_mean.mean(), "this caller's other calls to it"))
            } else {
                None
            };
            let mut fired = false;
            if let Some((mean, basis)) = base
                && mean > 0.0
                && size as f64 >= sb.factor * mean
            {
                fired = true;
                out.push(Finding {
                    rule: Rule::ResponseSizeAnomaly,
                    severity: Severity::High,
                    policy_rule: "baselines.response_size".into(),
                    message: format!(
                        "{from} received {size} bytes from {to} {route}: {:.1}x the baseline of \
                         {mean:.0} bytes ({basis})",
                        size as f64 / mean
                    ),
                });
            }
            if learn && !fired {
                self.sizes.entry(key.clone()).or_default().add(size as f64);
                self.pair_sizes
                    .entry(pair_key)
                    .or_default()
                    .add(size as f64);
            }
        }
        if let Some(rb) = &b.rate {
            let minute = now_ns / 60_000_000_000;
            let r = self.rates.entry(key.clone()).or_default();
            if r.minute != minute {
                if r.count > 0 || r.minutes > 0 {
                    r.minutes += minute.saturating_sub(r.minute).max(1);
                    r.total += r.count;
                }
                r.minute = minute;
                r.count = 0;
            }
            r.count += 1;
            if r.minutes >= rb.min_minutes {
                let mean = r.total as f64 / r.minutes as f64;
                if r.count as f64 >= rb.factor * mean.max(1.0) {
                    out.push(Finding {
                        rule: Rule::RateAnomaly,
                        severity: Severity::Medium,
                        policy_rule: "baselines.rate".into(),
                        message: format!(
                            "{from} → {to} {route}: {} requests this minute, {:.1}x the \
                             baseline of {mean:.1}/min",
                            r.count,
                            r.count as f64 / mean.max(1.0)
                        ),
                    });
                }
            }
        }
        if let Some(ne) = &b.new_edges
            && self.edges.insert(key)
            && now_ns.saturating_sub(self.started_ns) >= ne.learn_seconds * 1_000_000_000
        {
            out.push(Finding {
                rule: Rule::NewEdge,
                severity: Severity::Low,
                policy_rule: "baselines.new_edges".into(),
                message: format!("first call seen from {from} to {to} {route}"),
            });
        }
        out
    }

    /// A violation record for `f`. `http` carries the raw target; the query is redacted here.
    #[expect(
        clippy::too_many_arguments,
        reason = "assembles one record from its parts"
    )]
    pub fn violation(
        &self,
        f: &Finding,
        src: &Endpoint,
        dst: &Endpoint,
        http: Option<(HttpInput<'_>, &Normalized)>,
        route: &str,
        time: String,
        node: &str,
        flow_id: Option<u64>,
    ) -> Violation {
        let http = http.map(|(h, norm)| {
            let (raw_path, query) = match h.target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (h.target, None),
            };
            ViolationHttp {
                method: h.method.to_owned(),
                path: raw_path.to_owned(),
                normalized_path: norm.path.clone(),
                query: query.map(|q| self.redact(q)),
                query_keys: query.map(query_keys).unwrap_or_default(),
                status: h.status,
                request_body_bytes: h.request_body_bytes,
                response_body_bytes: h.response_body_bytes,
            }
        });
        Violation {
            rule: f.rule,
            severity: f.severity,
            time: time.clone(),
            node: node.to_owned(),
            source: src.clone(),
            destination: dst.clone(),
            http,
            route: route.to_owned(),
            policy: PolicyRef {
                file: self.policy.file.display().to_string(),
                rule: f.policy_rule.clone(),
                line: self.line(&f.policy_rule),
            },
            message: f.message.clone(),
            count: 1,
            aggregated: false,
            first_seen: time.clone(),
            last_seen: time,
            flow_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use super::*;
    use monitor_record::{peer::PeerKind, peer::Pod};

    const POLICY: &str = r#"
version: 1
protected_prefixes: ["/internal/"]
endpoints:
  - path: /internal/health
    services: ["*"]
    callers: [self, node, {namespace: monitoring}]
  - path: /internal/metrics
    services: ["*"]
    callers: [self, {service: prometheus}]
  - path: /internal/admin/cache/flush
    services: [svc-product-catalog]
    methods: [POST]
    callers: [self]
sensitive_fields:
  names: ["ssn*", "email", "phone", "address_*"]
  critical_at: 3
redaction:
  keep_values: [fields, state]
egress:
  edges:
    - {from: svc-recommendation-engine, to: svc-user-profile-service}
    - {from: svc-api-gateway, to: svc-product-catalog}
    - {from: prometheus, to: "*", ports: [80]}
  external:
    - {name: partner-api, cidrs: ["10.77.200.0/24"], ports: [80], from: [svc-checkout]}
quarantine:
  mode: observe
  pods: [vantage/svc-recommendation-engine-03]
  selector: {quarantine: "true"}
baselines:
  response_size: {factor: 9, min_samples: 20}
  rate: {factor: 3, min_minutes: 2}
  new_edges: {learn_seconds: 100}
"#;

    fn engine() -> Engine {
        let p = Policy::parse(POLICY, Path::new("policy.yaml")).expect("test policy is valid");
        Engine::new(p, 0)
    }

    fn pod(name: &str, ns: &str, svc: &str, ip: &str) -> Endpoint {
        let mut p = Pod::named(name, PeerKind::Pod);
        p.namespace = ns.into();
        p.service = Some(svc.into());
        Endpoint::new(Some(&std::sync::Arc::new(p)), ip.parse().ok(), 80)
    }

    fn rec(n: u8) -> Endpoint {
        pod(
            &format!("svc-recommendation-engine-0{n}"),
            "vantage",
            "svc-recommendation-engine",
            &format!("10.77.0.2{n}"),
        )
    }

    fn profile() -> Endpoint {
        pod(
            "svc-user-profile-service-0",
            "vantage",
            "svc-user-profile-service",
            "10.77.0.10",
        )
    }

    fn catalog() -> Endpoint {
        pod(
            "svc-product-catalog-0",
            "vantage",
            "svc-product-catalog",
            "10.77.0.11",
        )
    }

    fn get(target: &str) -> HttpInput<'_> {
        HttpInput {
            method: "GET",
            target,
            status: Some(200),
            request_body_bytes: Some(0),
            response_body_bytes: Some(100),
        }
    }

    fn rules(e: &mut Engine, src: &Endpoint, dst: &Endpoint, h: HttpInput<'_>) -> Vec<Rule> {
        e.evaluate_http(src, dst, h, 1)
            .findings
            .iter()
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn undocumented_endpoint_fires_on_the_first_request() {
        let mut e = engine();
        let v = e.evaluate_http(
            &rec(4),
            &profile(),
            get("/internal/admin/v0/users/lookup?fields=ssn_last4,email,phone&state=CA"),
            1,
        );
        let got: Vec<_> = v.findings.iter().map(|f| (f.rule, f.severity)).collect();
        assert_eq!(
            got,
            [
                (Rule::UndocumentedEndpoint, Severity::Critical),
                (Rule::SensitiveFields, Severity::Critical)
            ]
        );
        assert_eq!(v.findings[0].policy_rule, "protected_prefixes[0]");
        assert!(
            v.findings[1].message.contains("ssn_last4, email, phone"),
            "{:?}",
            v.findings[1]
        );
    }

    #[test]
    fn near_misses_and_evasions_are_undocumented() {
        for target in [
            "/internal/healthz",
            "/internal/health/../admin/x",
            "/%69nternal/admin/x",
            "/internal/%2e%2e/internal/admin/x",
            "/INTERNAL/ADMIN/x",
            "http://svc-user-profile-service/internal/admin/x",
            "//internal//admin/x/",
            "/internal/health;x=1/../admin",
            // Documented, but only on svc-product-catalog: a Host header naming the catalog
            // does not change the destination (identified by address).
            "/internal/admin/cache/flush",
        ] {
            let mut e = engine();
            assert_eq!(
                rules(&mut e, &rec(1), &profile(), get(target)),
                [Rule::UndocumentedEndpoint],
                "{target}"
            );
        }
    }

    #[test]
    fn documented_and_allowed_traffic_is_quiet() {
        let mut e = engine();
        let scraper = pod("prometheus-0", "monitoring", "prometheus", "10.77.0.50");
        for (src, dst, h) in [
            (&scraper, &profile(), get("/internal/metrics")),
            (&scraper, &profile(), get("/internal/health")),
            (&scraper, &profile(), get("/internal//health/")),
            (&profile(), &profile(), get("/internal/metrics")),
            (
                &rec(1),
                &profile(),
                get("/api/v2/users/preferences?user_id=1049"),
            ),
            (
                &rec(1),
                &profile(),
                get("/api/v2/users/preferences?fields=name,page"),
            ),
        ] {
            assert!(rules(&mut e, src, dst, h).is_empty(), "{:?}", h.target);
        }
        let flush = HttpInput {
            method: "POST",
            ..get("/internal/admin/cache/flush")
        };
        assert!(rules(&mut e, &catalog(), &catalog(), flush).is_empty());
    }

    #[test]
    fn disallowed_callers_and_methods() {
        let mut e = engine();
        let gw = pod(
            "svc-api-gateway-0",
            "vantage",
            "svc-api-gateway",
            "10.77.0.12",
        );
        let flush = HttpInput {
            method: "POST",
            ..get("/internal/admin/cache/flush")
        };
        assert_eq!(
            rules(&mut e, &gw, &catalog(), flush),
            [Rule::CrossServiceInternal]
        );
        // Documented for POST only.
        assert_eq!(
            rules(
                &mut e,
                &catalog(),
                &catalog(),
                get("/internal/admin/cache/flush")
            ),
            [Rule::UndocumentedEndpoint]
        );
        // Metrics scraped by someone other than the monitoring stack.
        assert_eq!(
            rules(&mut e, &rec(1), &profile(), get("/internal/metrics")),
            [Rule::CrossServiceInternal]
        );
    }

    #[test]
    fn sensitive_fields_severity_and_near_misses() {
        let e = engine();
        let one = e.sensitive("fields=email").unwrap();
        assert_eq!(one.severity, Severity::High);
        let keys = e.sensitive("ssn=123&Phone=5").unwrap();
        assert_eq!(keys.severity, Severity::High);
        assert!(keys.message.contains("ssn, phone"), "{}", keys.message);
        let three = e.sensitive("fields=SSN_LAST4%2Cemail,address_zip").unwrap();
        assert_eq!(three.severity, Severity::Critical);
        assert!(
            e.sensitive("fields=name,emails_sent&user_id=5&state=CA")
                .is_none()
        );
        assert!(e.sensitive("").is_none());
    }

    #[test]
    fn egress_allowlist() {
        let e = engine();
        assert!(e.egress(&rec(1), &profile()).is_none());
        assert_eq!(
            e.egress(&rec(1), &catalog()).map(|f| f.rule),
            Some(Rule::EgressNotAllowed)
        );
        let checkout = pod("svc-checkout-0", "vantage", "svc-checkout", "10.77.0.13");
        let mut partner = Pod::named("partner-api", PeerKind::External);
        partner.ips = vec!["10.77.200.1".parse().unwrap()];
        let partner = Endpoint::new(
            Some(&std::sync::Arc::new(partner)),
            "10.77.200.1".parse().ok(),
            80,
        );
        assert!(e.egress(&checkout, &partner).is_none());
        // Approved destination, but not for this caller, or not on this port.
        assert!(e.egress(&rec(1), &partner).is_some());
        let mut p443 = partner.clone();
        p443.port = 443;
        assert!(e.egress(&checkout, &p443).is_some());
        let unknown = Endpoint::new(None, "192.0.2.7".parse().ok(), 443);
        let f = e.egress(&checkout, &unknown).unwrap();
        assert!(f.message.contains("192.0.2.7:443"), "{}", f.message);
        // Calls arriving from outside are not egress.
        assert!(e.egress(&unknown, &profile()).is_none());
    }

    /// The endpoint's own copy of its identity, to change in a test.
    fn identity_of(e: &mut Endpoint) -> &mut Pod {
        std::sync::Arc::make_mut(e.identity.as_mut().expect("a pod endpoint"))
    }

    #[test]
    fn quarantine_by_name_selector_and_network_policy() {
        let mut e = engine();
        let f = e.quarantine_finding(&rec(3), &profile()).unwrap();
        assert_eq!(
            (f.rule, f.severity),
            (Rule::QuarantineBreach, Severity::Critical)
        );
        assert_eq!(f.policy_rule, "quarantine.pods[0]");
        assert!(
            e.quarantine_finding(&profile(), &rec(3)).is_some(),
            "traffic to it too"
        );
        assert!(e.quarantine_finding(&rec(1), &profile()).is_none());
        let mut labelled = rec(2);
        identity_of(&mut labelled).labels = BTreeMap::from([("quarantine".into(), "true".into())]);
        assert!(e.quarantine_finding(&labelled, &profile()).is_some());
        let mut isolated = rec(2);
        identity_of(&mut isolated).isolated_by = Some("deny-all-rec-02".into());
        let f = e.quarantine_finding(&isolated, &profile()).unwrap();
        assert!(f.message.contains("deny-all-rec-02"), "{}", f.message);
        assert!(
            rules(
                &mut e,
                &rec(3),
                &profile(),
                get("/api/v2/users/preferences")
            )
            .contains(&Rule::QuarantineBreach)
        );
    }

    #[test]
    fn response_size_anomaly_once_the_baseline_allows_it() {
        let mut e = engine();
        let lookup = |n| HttpInput {
            response_body_bytes: Some(n),
            ..get("/internal/admin/v0/users/lookup")
        };
        let prefs = HttpInput {
            response_body_bytes: Some(1044),
            ..get("/api/v2/users/preferences?user_id=1")
        };
        // Too early: no baseline yet.
        assert!(
            !rules(&mut e, &rec(4), &profile(), lookup(9612)).contains(&Rule::ResponseSizeAnomaly)
        );
        for _ in 0..20 {
            assert!(rules(&mut e, &rec(1), &profile(), prefs).is_empty());
        }
        let v = e.evaluate_http(&rec(4), &profile(), lookup(9612), 2);
        let f = v
            .findings
            .iter()
            .find(|f| f.rule == Rule::ResponseSizeAnomaly)
            .unwrap();
        assert!(
            f.message.contains("9.2x the baseline of 1044 bytes"),
            "{}",
            f.message
        );
        // A normal-sized response on the usual route does not fire, and the anomaly was not learnt.
        assert!(rules(&mut e, &rec(2), &profile(), prefs).is_empty());
        assert_eq!(
            e.pair_sizes[&(
                "svc-recommendation-engine".into(),
                "svc-user-profile-service".into()
            )]
                .n,
            21
        );
    }

    #[test]
    fn documented_endpoints_use_their_own_size_history_only() {
        let mut e = engine();
        let scraper = pod("prometheus-0", "monitoring", "prometheus", "10.77.0.50");
        let health = HttpInput {
            response_body_bytes: Some(2),
            ..get("/internal/health")
        };
        let metrics = HttpInput {
            response_body_bytes: Some(900),
            ..get("/internal/metrics")
        };
        for _ in 0..40 {
            assert!(rules(&mut e, &scraper, &profile(), health).is_empty());
        }
        // 450x the caller's usual, but a documented, allowed endpoint: no finding.
        assert!(rules(&mut e, &scraper, &profile(), metrics).is_empty());
    }

    #[test]
    fn new_edges_after_learning_and_rate_anomaly() {
        let mut e = engine();
        let s = 1_000_000_000u64;
        let prefs = get("/api/v2/users/preferences");
        // Learning period: silent.
        assert!(
            e.evaluate_http(&rec(1), &profile(), prefs, 10 * s)
                .findings
                .is_empty()
        );
        let other = get("/api/v2/users/settings");
        let late = e.evaluate_http(&rec(1), &profile(), other, 200 * s);
        assert_eq!(
            late.findings.iter().map(|f| f.rule).collect::<Vec<_>>(),
            [Rule::NewEdge]
        );
        assert!(
            e.evaluate_http(&rec(1), &profile(), other, 201 * s)
                .findings
                .is_empty()
        );
        // Rate: 2/min for two minutes, then 6 in a minute (3x).
        let mut e = engine();
        let mut fired = Vec::new();
        for (minute, n) in [(0u64, 2), (1, 2), (2, 6)] {
            for _ in 0..n {
                let v = e.evaluate_http(&rec(1), &profile(), prefs, minute * 60 * s + s);
                fired.extend(
                    v.findings
                        .into_iter()
                        .filter(|f| f.rule == Rule::RateAnomaly)
                        .map(|_| minute),
                );
            }
        }
        assert_eq!(
            fired,
            [2],
            "fires in the third minute only, once the count reaches 3x"
        );
    }

    #[test]
    fn violation_record_redacts_and_cites_the_policy() {
        let mut e = engine();
        let h = get("/internal/admin/v0/users/lookup?fields=ssn_last4,email&state=CA&user_id=7");
        let v = e.evaluate_http(&rec(4), &profile(), h, 1);
        let rec4 = rec(4);
        let out = e.violation(
            &v.findings[0],
            &rec4,
            &profile(),
            Some((h, &v.normalized)),
            &v.route,
            "t".into(),
            "node-1",
            Some(9),
        );
        let http = out.http.unwrap();
        assert_eq!(
            http.query.as_deref(),
            Some("fields=ssn_last4,email&state=CA&user_id=REDACTED")
        );
        assert_eq!(http.query_keys, ["fields", "state", "user_id"]);
        assert_eq!(out.policy.rule, "protected_prefixes[0]");
        assert_eq!(out.policy.file, "policy.yaml");
        assert_eq!(out.route, "/internal/admin/v0/users/lookup");
    }
}
