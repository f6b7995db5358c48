//! The store read into what a draft needs: per destination the routes seen (templated as the
//! baselines group them), their callers, methods, statuses and response sizes; the review items
//! (requests under a protected prefix that the base does not document or does not allow); the
//! egress graph (edges and external destinations, with ports); and, for NetworkPolicies, each
//! workload's labels and the connections arriving from outside the cluster.
//!
//! Whether a request is documented, and whether a connection is allowed, is decided by the
//! policy engine itself ([`Engine`]) on the base's catalog and egress sections only, so the
//! draft agrees with `monitor policy dry-run` by construction.
//!
//! Memory is bounded whatever the store's size: at most [`MAX_ROUTES`] routes and
//! [`MAX_REVIEW`] review items per destination (the rest are counted together), at most
//! [`MAX_CALLERS`] callers per route, a few example paths each.

use crate::stored::{StoredFlow, StoredHttp};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use monitor_collector::store::StoreReader;
use monitor_policy::{
    Policy,
    engine::{Engine, HttpInput, who},
    path,
    schema::{Aggregation, PolicyFile, Redaction},
};
use monitor_record::{
    query::query_keys,
    record::{Endpoint, EndpointKind},
    violation::Rule,
};

use super::SuggestError;
use crate::dry_run::Range;

/// The protected prefix assumed without a base policy.
pub const DEFAULT_PREFIX: &str = "/internal/";
/// Routes listed per destination; more are counted in [`Destination::overflow`].
pub const MAX_ROUTES: usize = 300;
/// Review items listed per destination; more are counted in [`Destination::review_overflow`].
pub const MAX_REVIEW: usize = 200;
/// Callers kept per route; more are counted in [`RouteStats::other_callers`].
pub const MAX_CALLERS: usize = 50;
/// Pods shown per caller (one more is kept, to tell that there are more).
pub const MAX_EXAMPLES: usize = 3;
/// Distinct paths counted exactly per route (past it: "at least").
const MAX_DISTINCT: usize = 1000;
/// Query keys kept per route.
const MAX_KEYS: usize = 20;

/// A pod's workload: its namespace and what the policy names it by (service, else pod name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    /// Namespace (empty when unknown).
    pub namespace: String,
    /// Service, else pod name, else address ([`who`]).
    pub name: String,
}

impl Workload {
    fn of(e: &Endpoint) -> Self {
        Self {
            namespace: e.namespace().unwrap_or_default().to_owned(),
            name: who(e),
        }
    }
}

/// Who called, as the policy's caller syntax names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallerKey {
    /// Pods of the destination's own service: `self`.
    SameService,
    /// The node (host network): `node`.
    Node,
    /// Pods of a service: `{service: NAME}`.
    Service(String),
    /// A pod without a service: `{pod: namespace/name}`.
    Pod(String),
    /// Not a pod (an outside client, an unattributed socket): no caller syntax names it.
    Outside(String),
}

impl CallerKey {
    fn of(src: &Endpoint, dst: &Endpoint) -> Self {
        match src.kind {
            EndpointKind::Node => Self::Node,
            EndpointKind::Pod => match src.service() {
                Some(s) if dst.service() == Some(s) => Self::SameService,
                Some(s) => Self::Service(s.to_owned()),
                None => Self::Pod(pod_name(src)),
            },
            _ => Self::Outside(match (src.pod(), src.ip) {
                (Some(name), Some(ip)) => format!("{name} ({ip})"),
                (Some(name), None) => name.to_owned(),
                (None, Some(ip)) => ip.to_string(),
                (None, None) => "unknown".to_owned(),
            }),
        }
    }
}

/// `namespace/name` of a pod endpoint, or its name.
fn pod_name(e: &Endpoint) -> String {
    match (e.namespace(), e.pod()) {
        (Some(ns), Some(p)) => format!("{ns}/{p}"),
        (None, Some(p)) => p.to_owned(),
        _ => e.ip.map_or_else(|| "unknown".to_owned(), |i| i.to_string()),
    }
}

/// Requests of one caller.
#[derive(Debug, Clone, Default)]
pub struct CallerStats {
    /// Requests.
    pub requests: u64,
    /// A few of the calling pods (`namespace/name`).
    pub pods: BTreeSet<String>,
}

/// What was seen of one route (or one review item).
#[derive(Debug, Clone, Default)]
pub struct RouteStats {
    /// Requests.
    pub requests: u64,
    /// First and last request, Unix ns.
    pub first_ns: i64,
    /// Last request, Unix ns.
    pub last_ns: i64,
    /// Requests per caller.
    pub callers: BTreeMap<CallerKey, CallerStats>,
    /// Requests of callers past [`MAX_CALLERS`].
    pub other_callers: u64,
    /// Requests per response status (`200`, `none`).
    pub statuses: BTreeMap<String, u64>,
    /// Responses with a body size, their sum and the largest.
    pub answered: u64,
    /// Sum of response body bytes.
    pub bytes: u64,
    /// Largest response body.
    pub max_bytes: u64,
    /// Distinct paths as sent (up to [`MAX_DISTINCT`]).
    pub distinct_paths: BTreeSet<String>,
    /// Query keys seen (up to [`MAX_KEYS`]).
    pub query_keys: BTreeSet<String>,
}

impl RouteStats {
    fn add(&mut self, r: &Exchange<'_>, caller: CallerKey, src: &Endpoint) {
        if self.requests == 0 {
            self.first_ns = r.time_ns;
        }
        self.requests += 1;
        self.last_ns = self.last_ns.max(r.time_ns);
        if self.callers.len() < MAX_CALLERS || self.callers.contains_key(&caller) {
            let c = self.callers.entry(caller).or_default();
            c.requests += 1;
            if src.kind == EndpointKind::Pod && c.pods.len() <= MAX_EXAMPLES {
                c.pods.insert(pod_name(src));
            }
        } else {
            self.other_callers += 1;
        }
        let status = r
            .status
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        *self.statuses.entry(status).or_default() += 1;
        if let Some(b) = r.response_body_bytes {
            self.answered += 1;
            self.bytes = self.bytes.saturating_add(b);
            self.max_bytes = self.max_bytes.max(b);
        }
        if self.distinct_paths.len() < MAX_DISTINCT {
            self.distinct_paths.insert(r.path.to_owned());
        }
        if let Some((_, q)) = r.target.split_once('?') {
            for k in query_keys(q) {
                if self.query_keys.len() >= MAX_KEYS {
                    break;
                }
                self.query_keys.insert(k);
            }
        }
    }

    /// Mean response body bytes over the responses seen.
    pub fn mean_bytes(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.bytes as f64 / self.answered as f64)
    }
}

/// Why a request under a protected prefix is a review item.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReviewKind {
    /// No catalog entry of the destination documents the path.
    Undocumented,
    /// The base's entry `endpoints[N]` documents the path for other methods only.
    MethodNotDocumented(usize),
    /// The base's entry `endpoints[N]` does not allow this caller.
    CallerNotAllowed(usize),
}

/// One destination (a service, a pod without one, an external host or address).
#[derive(Debug, Clone, Default)]
pub struct Destination {
    /// Its service, when it backs one (what the catalog's `services` names).
    pub service: Option<String>,
    /// In the cluster (a pod or a Service): the catalog applies to it.
    pub in_cluster: bool,
    /// (method, route) → what was seen, outside the protected prefixes (and every route of a
    /// destination outside the cluster).
    pub routes: BTreeMap<(String, String), RouteStats>,
    /// Requests to routes past [`MAX_ROUTES`], and how many distinct such routes (up to
    /// [`MAX_DISTINCT`]).
    pub overflow: (u64, BTreeSet<String>),
    /// (method, normalised path, why) → what was seen, under the protected prefixes.
    pub review: BTreeMap<(String, String, ReviewKind), RouteStats>,
    /// Requests to review items past [`MAX_REVIEW`], and a few of their paths.
    pub review_overflow: RouteStats,
}

/// Connections and requests on one (edge or external destination, port).
#[derive(Debug, Clone, Default)]
pub struct PortStats {
    /// HTTP exchanges.
    pub requests: u64,
    /// Connections (flow records).
    pub connections: u64,
    /// Connections that carried no HTTP.
    pub without_http: u64,
    /// First seen, Unix ns.
    pub first_ns: i64,
    /// The base allows it (always true without a base egress section).
    pub allowed: bool,
}

impl PortStats {
    fn new(time_ns: i64, allowed: bool) -> Self {
        Self {
            first_ns: time_ns,
            allowed,
            ..Self::default()
        }
    }
}

/// A destination outside the cluster (or an address nobody knows).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExternalKey {
    /// The inventory's name for it, else its address.
    pub name: String,
    /// Named in the inventory (`external` endpoint), not a bare address.
    pub named: bool,
}

/// One workload's identity as seen in records.
#[derive(Debug, Clone, Default)]
pub struct WorkloadInfo {
    /// Labels every observed pod of it carries (`None` until a pod was seen).
    pub labels: Option<BTreeMap<String, String>>,
    /// A few of its pods.
    pub pods: BTreeSet<String>,
}

/// Everything read from the store.
#[derive(Debug, Default)]
pub struct Observed {
    /// The protected prefixes (the base's, or [`DEFAULT_PREFIX`]).
    pub prefixes: Vec<String>,
    /// HTTP exchanges read.
    pub http_records: u64,
    /// Flows read.
    pub flow_records: u64,
    /// Records that did not parse (skipped).
    pub unreadable: u64,
    /// First and last record time, Unix ns.
    pub span_ns: Option<(i64, i64)>,
    /// Per destination, by [`who`] name.
    pub destinations: BTreeMap<String, Destination>,
    /// Requests to each base catalog entry that were documented and allowed, by index.
    pub endpoint_use: BTreeMap<usize, RouteStats>,
    /// Pod → cluster connections, per (from, to) workload and port (calls within one service
    /// included: the egress section skips them, NetworkPolicies need them).
    pub edges: BTreeMap<(Workload, Workload), BTreeMap<u16, PortStats>>,
    /// Pod → outside connections: per destination, per (from workload, address, port).
    pub externals: BTreeMap<ExternalKey, BTreeMap<(Workload, IpAddr, u16), PortStats>>,
    /// Connections into pods from outside the pods (node, outside clients): per (source
    /// address, destination workload, port), how many.
    pub inbound: BTreeMap<(IpAddr, String, Workload, u16), u64>,
    /// Labels and pods of each workload seen.
    pub workloads: BTreeMap<Workload, WorkloadInfo>,
}

/// One HTTP exchange's facts, borrowed from its record.
struct Exchange<'a> {
    time_ns: i64,
    target: &'a str,
    path: &'a str,
    status: Option<u16>,
    response_body_bytes: Option<u64>,
}

/// The policy the engine classifies with: the base's prefixes, catalog and egress (or the
/// default prefix alone), nothing that learns or depends on query values.
fn classifier(base: Option<&Policy>) -> Policy {
    let spec = match base {
        Some(b) => PolicyFile {
            sensitive_fields: None,
            quarantine: None,
            baselines: None,
            ..b.spec.clone()
        },
        None => PolicyFile {
            version: 1,
            protected_prefixes: vec![DEFAULT_PREFIX.to_owned()],
            endpoints: Vec::new(),
            sensitive_fields: None,
            redaction: Redaction::default(),
            egress: None,
            quarantine: None,
            baselines: None,
            aggregation: Aggregation::default(),
        },
    };
    Policy {
        file: base.map_or_else(|| PathBuf::from("(suggest)"), |b| b.file.clone()),
        spec,
        lines: BTreeMap::new(),
    }
}

/// Progress is reported every this many records.
const PROGRESS_EVERY: u64 = 4096;

/// Reads `range` of the store at `store` (see the module doc). `progress` is called every few
/// thousand records with the records read so far and the time of the last one.
pub fn observe(
    store: &Path,
    range: &Range,
    base: Option<&Policy>,
    progress: &mut dyn FnMut(u64, i64),
) -> Result<Observed, SuggestError> {
    let reader = StoreReader::open(store)?;
    let policy = classifier(base);
    let mut out = Observed {
        prefixes: policy.spec.protected_prefixes.clone(),
        ..Observed::default()
    };
    let catalog: Vec<String> = policy
        .spec
        .endpoints
        .iter()
        .map(|e| path::lower(&e.path))
        .collect();
    let mut engine = Engine::new(policy, 0);
    let mut read = 0u64;
    reader.for_each_in_time_order::<SuggestError>(
        &["http", "flow"],
        (range.since_ns, range.until_ns),
        range.node.as_deref(),
        |r| {
            read += 1;
            if read.is_multiple_of(PROGRESS_EVERY) {
                progress(read, r.time_ns);
            }
            let span = out.span_ns.get_or_insert((r.time_ns, r.time_ns));
            span.1 = span.1.max(r.time_ns);
            if r.kind == "http" {
                match serde_json::from_str::<StoredHttp>(&r.json) {
                    Ok(h) => out.http(&mut engine, &catalog, &h, r.time_ns),
                    Err(_) => out.unreadable += 1,
                }
            } else {
                match serde_json::from_str::<StoredFlow>(&r.json) {
                    Ok(f) => out.flow(&mut engine, &f, r.time_ns),
                    Err(_) => out.unreadable += 1,
                }
            }
            Ok(())
        },
    )?;
    progress(read, out.span_ns.map_or(0, |s| s.1));
    Ok(out)
}

impl Observed {
    fn http(&mut self, engine: &mut Engine, catalog: &[String], h: &StoredHttp, time_ns: i64) {
        self.http_records += 1;
        let (src, dst) = (&h.source, &h.destination);
        self.identities(src, dst);
        let input = HttpInput {
            method: &h.http.method,
            target: &h.http.target,
            status: h.http.status,
            request_body_bytes: h.http.request_body_bytes,
            response_body_bytes: h.http.response_body_bytes,
        };
        let v = engine.evaluate_http(src, dst, input, u64::try_from(time_ns).unwrap_or(0));
        let raw_path = h.http.path.as_deref().unwrap_or_else(|| {
            h.http
                .target
                .split_once('?')
                .map_or(h.http.target.as_str(), |(p, _)| p)
        });
        let x = Exchange {
            time_ns,
            target: &h.http.target,
            path: raw_path,
            status: h.http.status,
            response_body_bytes: h.http.response_body_bytes,
        };
        let egress_denied = v.findings.iter().any(|f| f.rule == Rule::EgressNotAllowed);
        self.connection(src, dst, time_ns, !egress_denied, true);
        let caller = CallerKey::of(src, dst);
        let d = self
            .destinations
            .entry(who(dst))
            .or_insert_with(|| Destination {
                service: dst.service().map(str::to_owned),
                in_cluster: matches!(dst.kind, EndpointKind::Pod | EndpointKind::Service),
                ..Destination::default()
            });
        let endpoint_of = |rule: &str| {
            rule.strip_prefix("endpoints[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<usize>().ok())
        };
        let review = v.findings.iter().find_map(|f| match f.rule {
            Rule::UndocumentedEndpoint => Some(
                endpoint_of(&f.policy_rule)
                    .map_or(ReviewKind::Undocumented, ReviewKind::MethodNotDocumented),
            ),
            Rule::CrossServiceInternal => {
                endpoint_of(&f.policy_rule).map(ReviewKind::CallerNotAllowed)
            }
            _ => None,
        });
        let protected = d.in_cluster
            && self
                .prefixes
                .iter()
                .any(|p| path::under(&v.normalized.lower, &path::lower(p)));
        if let Some(kind) = review {
            let key = (h.http.method.clone(), v.normalized.lower.clone(), kind);
            if d.review.len() < MAX_REVIEW || d.review.contains_key(&key) {
                d.review.entry(key).or_default().add(&x, caller, src);
            } else {
                d.review_overflow.add(&x, caller, src);
            }
        } else if protected {
            // Documented and allowed: the base's first entry that matches (the engine's rule).
            let hit = engine
                .policy()
                .spec
                .endpoints
                .iter()
                .zip(catalog)
                .position(|(e, lower)| {
                    path::matches_catalog(&v.normalized.lower, lower)
                        && e.services
                            .iter()
                            .any(|s| s == "*" || dst.service() == Some(s.as_str()))
                });
            if let Some(i) = hit {
                self.endpoint_use.entry(i).or_default().add(&x, caller, src);
            }
        } else {
            let key = (h.http.method.clone(), v.route.clone());
            if d.routes.len() < MAX_ROUTES || d.routes.contains_key(&key) {
                d.routes.entry(key).or_default().add(&x, caller, src);
            } else {
                d.overflow.0 += 1;
                if d.overflow.1.len() < MAX_DISTINCT {
                    d.overflow.1.insert(v.route.clone());
                }
            }
        }
    }

    fn flow(&mut self, engine: &mut Engine, f: &StoredFlow, time_ns: i64) {
        self.flow_records += 1;
        self.identities(&f.source, &f.destination);
        let denied = engine
            .evaluate_flow(&f.source, &f.destination)
            .iter()
            .any(|x| x.rule == Rule::EgressNotAllowed);
        let stats = self.connection(&f.source, &f.destination, time_ns, !denied, false);
        if let Some(s) = stats {
            s.connections += 1;
            if f.http_exchanges == 0 {
                s.without_http += 1;
            }
        }
    }

    /// Notes the connection `src` → `dst` (an HTTP exchange when `http`); returns its port
    /// statistics when it is a pod's outbound connection.
    fn connection(
        &mut self,
        src: &Endpoint,
        dst: &Endpoint,
        time_ns: i64,
        allowed: bool,
        http: bool,
    ) -> Option<&mut PortStats> {
        let port = dst.port;
        if src.kind != EndpointKind::Pod {
            if let (Some(ip), EndpointKind::Pod) = (src.ip, dst.kind)
                && !http
            {
                let what = match src.kind {
                    EndpointKind::Node => "node".to_owned(),
                    _ => src
                        .pod()
                        .map_or_else(|| "outside".to_owned(), str::to_owned),
                };
                *self
                    .inbound
                    .entry((ip, what, Workload::of(dst), port))
                    .or_default() += 1;
            }
            return None;
        }
        let from = Workload::of(src);
        let stats = match dst.kind {
            EndpointKind::Node => return None,
            EndpointKind::Pod | EndpointKind::Service => self
                .edges
                .entry((from, Workload::of(dst)))
                .or_default()
                .entry(port)
                .or_insert_with(|| PortStats::new(time_ns, allowed)),
            _ => {
                let ip = dst.ip?;
                let key = match (dst.kind, dst.pod()) {
                    (EndpointKind::External, Some(name)) => ExternalKey {
                        name: name.to_owned(),
                        named: true,
                    },
                    _ => ExternalKey {
                        name: ip.to_string(),
                        named: false,
                    },
                };
                self.externals
                    .entry(key)
                    .or_default()
                    .entry((from, ip, port))
                    .or_insert_with(|| PortStats::new(time_ns, allowed))
            }
        };
        if http {
            stats.requests += 1;
        }
        Some(stats)
    }

    /// Notes the labels of the pods at either end.
    fn identities(&mut self, src: &Endpoint, dst: &Endpoint) {
        for e in [src, dst] {
            if e.kind != EndpointKind::Pod {
                continue;
            }
            let w = self.workloads.entry(Workload::of(e)).or_default();
            let labels = e.labels();
            match &mut w.labels {
                None => w.labels = Some(labels.clone()),
                Some(common) => common.retain(|k, v| labels.get(k) == Some(v)),
            }
            if w.pods.len() < MAX_EXAMPLES {
                w.pods.insert(pod_name(e));
            }
        }
    }
}
