//! The draft policy as YAML text: the sections the traffic justifies, the base policy's
//! decisions kept as they were, and everything that needs a person as comments.
//!
//! Layout (the order of `docs/policy.md`): a header saying where the draft comes from and how to
//! check it; `protected_prefixes`; `endpoints` (the base's entries, each with what was seen of
//! it); **"Seen, not documented: review"** (requests under a protected prefix that the base does
//! not document, or not for that method or caller: comments with first and last seen, callers
//! and counts, never entries); the routes seen outside the protected prefixes (comments:
//! methods, callers in the policy's caller syntax, statuses, response sizes); the base's
//! `sensitive_fields` and `redaction`; `egress` (the observed graph, or the base's allowlist
//! with the observed connections it does not allow as review comments); the base's
//! `quarantine`, `baselines` and `aggregation`.

use std::{collections::BTreeMap, fmt::Write as _};

use monitor_policy::{
    Policy,
    pattern::cidr_contains,
    schema::{Edge, Egress, ExternalDestination},
};

use super::{
    collect::{
        CallerKey, DEFAULT_PREFIX, Destination, ExternalKey, MAX_EXAMPLES, MAX_REVIEW, MAX_ROUTES,
        Observed, PortStats, ReviewKind, RouteStats, Workload,
    },
    yaml::{self, comment, scalar},
};
use crate::client::rfc3339_secs;

/// Callers listed per route in comments.
const SHOWN_CALLERS: usize = 10;

/// Where the draft comes from, for its header.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// The store, as given.
    pub store: &'a str,
    /// The base policy, as given.
    pub base: Option<&'a str>,
    /// The range, as given (`--since 14d`).
    pub range: &'a str,
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `{service: NAME}`, `self`, ... with the pods seen, for a comment.
fn caller_text(k: &CallerKey, pods: &std::collections::BTreeSet<String>) -> String {
    let name = match k {
        CallerKey::SameService => "self".to_owned(),
        CallerKey::Node => "node".to_owned(),
        CallerKey::Service(s) => format!("{{service: {}}}", scalar(s)),
        CallerKey::Pod(p) => format!("{{pod: {}}}", scalar(p)),
        CallerKey::Outside(a) => format!("{a} (not a pod: no caller names it)"),
    };
    if pods.is_empty() || matches!(k, CallerKey::Pod(_)) {
        name
    } else {
        // One more pod than shown is kept, to say that there are more.
        let mut shown: Vec<&str> = pods.iter().take(MAX_EXAMPLES).map(String::as_str).collect();
        if pods.len() > MAX_EXAMPLES {
            shown.push("...");
        }
        format!("{name} ({})", shown.join(", "))
    }
}

/// The comment lines describing one route's traffic, each starting with `indent`.
fn route_lines(out: &mut String, indent: &str, s: &RouteStats, normalised: Option<&str>) {
    let _ = writeln!(
        out,
        "{indent}{}, first seen {}, last seen {}",
        plural(s.requests, "request", "requests"),
        rfc3339_secs(s.first_ns),
        rfc3339_secs(s.last_ns)
    );
    let mut callers: Vec<(&CallerKey, &super::collect::CallerStats)> = s.callers.iter().collect();
    callers.sort_by_key(|(_, c)| std::cmp::Reverse(c.requests));
    let mut parts: Vec<String> = callers
        .iter()
        .take(SHOWN_CALLERS)
        .map(|(k, c)| format!("{} {}", caller_text(k, &c.pods), c.requests))
        .collect();
    let rest: u64 = callers
        .iter()
        .skip(SHOWN_CALLERS)
        .map(|(_, c)| c.requests)
        .sum::<u64>()
        + s.other_callers;
    if rest > 0 {
        parts.push(format!("and others {rest}"));
    }
    let _ = writeln!(out, "{indent}callers: {}", comment(&parts.join(", ")));
    let mut statuses: Vec<(&String, &u64)> = s.statuses.iter().collect();
    statuses.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    let statuses: Vec<String> = statuses
        .iter()
        .map(|(k, n)| format!("{} x{n}", comment(k)))
        .collect();
    let sizes = s.mean_bytes().map_or_else(
        || "no response seen".to_owned(),
        |m| format!("response body bytes mean {m:.0}, max {}", s.max_bytes),
    );
    let _ = writeln!(out, "{indent}status {}; {sizes}", statuses.join(", "));
    if !s.query_keys.is_empty() {
        let keys: Vec<&str> = s.query_keys.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{indent}query keys: {}", comment(&keys.join(", ")));
    }
    // Paths as sent that differ from the route (templated ids, or evasions of a protected one).
    let sent: Vec<&str> = s
        .distinct_paths
        .iter()
        .map(String::as_str)
        .filter(|p| Some(*p) != normalised)
        .take(3)
        .collect();
    if !sent.is_empty() {
        let n = s.distinct_paths.len();
        let count = if n >= 1000 {
            "1000+".to_owned()
        } else {
            n.to_string()
        };
        let _ = writeln!(
            out,
            "{indent}sent as {count} distinct path{}, e.g. {}",
            if n == 1 { "" } else { "s" },
            comment(&sent.join(", "))
        );
    }
}

fn dest_title(name: &str, d: &Destination, o: &Observed) -> String {
    let ns = o
        .workloads
        .keys()
        .find(|w| w.name == name && !w.namespace.is_empty())
        .map(|w| format!(" (namespace {})", w.namespace));
    let kind = if d.in_cluster {
        ""
    } else {
        " (outside the cluster)"
    };
    comment(&format!("{name}{}{kind}", ns.unwrap_or_default()))
}

fn header(out: &mut String, o: &Observed, h: &Header<'_>) {
    let span = o.span_ns.map_or_else(
        || "no records in the range".to_owned(),
        |(a, b)| format!("records from {} to {}", rfc3339_secs(a), rfc3339_secs(b)),
    );
    let without: u64 = o
        .edges
        .values()
        .flat_map(|p| p.values())
        .chain(o.externals.values().flat_map(|p| p.values()))
        .map(|s| s.without_http)
        .sum();
    let _ = writeln!(
        out,
        "# Draft policy from observed traffic: monitor policy suggest."
    );
    let _ = writeln!(out, "#");
    let _ = writeln!(
        out,
        "# Store {} ({}), {span}:",
        comment(h.store),
        comment(h.range)
    );
    let _ = writeln!(
        out,
        "# {}, {} ({without} without HTTP){}.",
        plural(o.http_records, "HTTP exchange", "HTTP exchanges"),
        plural(o.flow_records, "flow", "flows"),
        if o.unreadable > 0 {
            format!(", {} unreadable and skipped", o.unreadable)
        } else {
            String::new()
        }
    );
    match h.base {
        Some(b) => {
            let _ = writeln!(
                out,
                "# Base policy: {} (its prefixes, catalog and other decisions are kept).",
                comment(b)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# Base policy: none (the protected prefix {DEFAULT_PREFIX} is assumed)."
            );
        }
    }
    for line in [
        "#",
        "# Review it before deploying: it allows what was seen, including anything an intruder did",
        "# in that time. Requests under the protected prefixes are never documented from traffic:",
        "# they are listed under \"Seen, not documented: review\" and stay violations until you add",
        "# them to `endpoints` yourself. Check the draft with `monitor policy lint` and replay the",
        "# same history with `monitor policy dry-run --policy DRAFT --store STORE`: only the review",
        "# items fire. Reference: docs/policy.md.",
        "version: 1",
        "",
    ] {
        let _ = writeln!(out, "{line}");
    }
}

fn endpoints(out: &mut String, o: &Observed, base: Option<&Policy>) {
    let _ = writeln!(out, "protected_prefixes:");
    for p in &o.prefixes {
        let _ = writeln!(out, "  - {}", scalar(p));
    }
    let _ = writeln!(out);
    let entries = base.map_or(&[][..], |b| b.spec.endpoints.as_slice());
    if entries.is_empty() {
        let _ = writeln!(
            out,
            "# The catalog: only a base policy's entries are kept (none here)."
        );
        let _ = writeln!(out, "endpoints: []");
    } else {
        let _ = writeln!(
            out,
            "# The catalog, as in the base policy, with what was seen of each entry."
        );
        let _ = writeln!(out, "endpoints:");
        for (i, e) in entries.iter().enumerate() {
            match o.endpoint_use.get(&i) {
                Some(s) => route_lines(out, "  # ", s, Some(&e.path)),
                None => {
                    let _ = writeln!(out, "  # not seen in the range");
                }
            }
            yaml::endpoint(out, e);
        }
    }
    let _ = writeln!(out);
}

fn review(out: &mut String, o: &Observed, base: Option<&Policy>) {
    let items: usize = o.destinations.values().map(|d| d.review.len()).sum();
    let _ = writeln!(
        out,
        "# ---------------------------------------------------------------------------------------"
    );
    let _ = writeln!(out, "# Seen, not documented: review ({items}).");
    if items == 0 {
        let _ = writeln!(
            out,
            "# Nothing: every request under the protected prefixes was documented and allowed."
        );
        let _ = writeln!(out);
        return;
    }
    for line in [
        "# Requests under a protected prefix that the base policy does not document (or not for",
        "# that method or caller). They are not in `endpoints`: each is a violation under this",
        "# draft (`undocumented-endpoint`, or `cross-service-internal` for a caller). Document one",
        "# only once you know who needs it and why.",
        "#",
    ] {
        let _ = writeln!(out, "{line}");
    }
    let entry = |i: usize| {
        base.and_then(|b| b.spec.endpoints.get(i))
            .map_or_else(String::new, |e| comment(&e.path))
    };
    for (name, d) in &o.destinations {
        for ((method, path, kind), s) in &d.review {
            let why = match kind {
                ReviewKind::Undocumented => "not documented".to_owned(),
                ReviewKind::MethodNotDocumented(i) => format!(
                    "endpoints[{i}] ({}) documents other methods only",
                    entry(*i)
                ),
                ReviewKind::CallerNotAllowed(i) => format!(
                    "endpoints[{i}] ({}) does not allow these callers",
                    entry(*i)
                ),
            };
            let _ = writeln!(
                out,
                "# - {} {} on {}: {why}",
                comment(method),
                comment(path),
                dest_title(name, d, o)
            );
            route_lines(out, "#     ", s, Some(path));
        }
        if d.review_overflow.requests > 0 {
            let _ = writeln!(
                out,
                "# - more undocumented paths on {} (past the first {MAX_REVIEW} listed):",
                dest_title(name, d, o)
            );
            route_lines(out, "#     ", &d.review_overflow, None);
        }
    }
    let _ = writeln!(out);
}

fn routes(out: &mut String, o: &Observed) {
    let listed = o.destinations.values().any(|d| !d.routes.is_empty());
    if !listed {
        return;
    }
    for line in [
        "# ---------------------------------------------------------------------------------------",
        "# Routes seen outside the protected prefixes. The catalog does not check them; they are",
        "# listed for review and because the baselines learn per route. Numeric, UUID and long",
        "# hexadecimal segments are shown as {id}, as the baselines group them. The catalog itself",
        "# has no per-segment patterns: once a route's prefix is protected, document it path by",
        "# path or as a subtree ending in `/**`.",
        "#",
    ] {
        let _ = writeln!(out, "{line}");
    }
    for (name, d) in &o.destinations {
        if d.routes.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "# {}: {}",
            dest_title(name, d, o),
            plural(d.routes.len() as u64, "route", "routes")
        );
        for ((method, route), s) in &d.routes {
            let _ = writeln!(out, "#   {} {}", comment(method), comment(route));
            route_lines(out, "#     ", s, Some(route));
        }
        if d.overflow.0 > 0 {
            let _ = writeln!(
                out,
                "#   and {} to {} more routes (past the first {MAX_ROUTES})",
                plural(d.overflow.0, "request", "requests"),
                d.overflow.1.len()
            );
        }
    }
    let _ = writeln!(out);
}

/// Observed traffic on one edge or external destination, for a comment.
fn traffic(stats: &[&PortStats]) -> String {
    let requests: u64 = stats.iter().map(|s| s.requests).sum();
    let connections: u64 = stats.iter().map(|s| s.connections).sum();
    let without: u64 = stats.iter().map(|s| s.without_http).sum();
    let first = stats.iter().map(|s| s.first_ns).min().unwrap_or(0);
    let mut t = if requests == 0 {
        format!(
            "{} without HTTP",
            plural(connections, "connection", "connections")
        )
    } else {
        format!(
            "{} over {}",
            plural(requests, "request", "requests"),
            plural(connections, "connection", "connections")
        )
    };
    if without > 0 && requests > 0 {
        let _ = write!(t, " ({without} without HTTP)");
    }
    let _ = write!(t, ", first seen {}", rfc3339_secs(first));
    t
}

/// The observed edges between different services: (from, to) → port → stats.
type Graph<'a> = BTreeMap<(&'a str, &'a str), BTreeMap<u16, Vec<&'a PortStats>>>;

fn graph(o: &Observed) -> Graph<'_> {
    let mut g: Graph<'_> = BTreeMap::new();
    for ((from, to), ports) in &o.edges {
        if from.name == to.name {
            continue;
        }
        let e = g.entry((from.name.as_str(), to.name.as_str())).or_default();
        for (port, s) in ports {
            e.entry(*port).or_default().push(s);
        }
    }
    g
}

/// External destinations as the draft writes them, with their traffic and allowed flag.
fn drafted_externals(o: &Observed) -> Vec<(ExternalDestination, &ExternalKey, Vec<&PortStats>)> {
    o.externals
        .iter()
        .map(|(key, uses)| {
            let mut cidrs: Vec<String> = uses
                .keys()
                .map(|(_, ip, _)| match ip {
                    std::net::IpAddr::V4(_) => format!("{ip}/32"),
                    std::net::IpAddr::V6(_) => format!("{ip}/128"),
                })
                .collect();
            cidrs.sort();
            cidrs.dedup();
            let mut ports: Vec<u16> = uses.keys().map(|(_, _, p)| *p).collect();
            ports.sort_unstable();
            ports.dedup();
            let mut from: Vec<String> = uses.keys().map(|(w, _, _)| w.name.clone()).collect();
            from.sort();
            from.dedup();
            (
                ExternalDestination {
                    name: key.name.clone(),
                    cidrs,
                    ports,
                    from,
                },
                key,
                uses.values().collect(),
            )
        })
        .collect()
}

fn external_note(key: &ExternalKey, stats: &[&PortStats], from: &[String]) -> String {
    let what = if key.named {
        format!("{} (named in the inventory)", key.name)
    } else {
        format!(
            "{}: not named in the inventory, find out who owns it",
            key.name
        )
    };
    comment(&format!(
        "{what}; {} from {}",
        traffic(stats),
        from.join(", ")
    ))
}

fn egress(out: &mut String, o: &Observed, base: Option<&Egress>) {
    match base {
        None => drafted_egress(out, o),
        Some(b) => kept_egress(out, o, b),
    }
}

fn drafted_egress(out: &mut String, o: &Observed) {
    let _ = writeln!(
        out,
        "# The egress graph seen: each edge between two services and each destination outside the"
    );
    let _ = writeln!(
        out,
        "# cluster, with the ports used. Any other connection from a pod is `egress-not-allowed`."
    );
    let _ = writeln!(out, "egress:");
    let g = graph(o);
    if g.is_empty() {
        let _ = writeln!(out, "  edges: []");
    } else {
        let _ = writeln!(out, "  edges:");
    }
    for ((from, to), ports) in &g {
        let stats: Vec<&PortStats> = ports.values().flatten().copied().collect();
        let _ = writeln!(out, "    # {}", traffic(&stats));
        let e = Edge {
            from: (*from).to_owned(),
            to: (*to).to_owned(),
            ports: ports.keys().copied().collect(),
        };
        let _ = writeln!(out, "    - {}", yaml::edge(&e));
    }
    let xs = drafted_externals(o);
    if xs.is_empty() {
        let _ = writeln!(out, "  external: []");
    } else {
        let _ = writeln!(out, "  external:");
    }
    for (x, key, stats) in &xs {
        let _ = writeln!(out, "    # {}", external_note(key, stats, &x.from));
        yaml::external(out, "    ", x);
    }
    let _ = writeln!(out);
}

fn edge_matches(e: &Edge, from: &str, to: &str, port: u16) -> bool {
    (e.from == "*" || e.from == from)
        && (e.to == "*" || e.to == to)
        && (e.ports.is_empty() || e.ports.contains(&port))
}

fn kept_egress(out: &mut String, o: &Observed, b: &Egress) {
    let g = graph(o);
    // What each base rule let through (attributed to the first that matches), and the rest.
    let mut edge_use: BTreeMap<usize, Vec<&PortStats>> = BTreeMap::new();
    let mut denied: Vec<(Edge, Vec<&PortStats>)> = Vec::new();
    for ((from, to), ports) in &g {
        let mut refused = Edge {
            from: (*from).to_owned(),
            to: (*to).to_owned(),
            ports: Vec::new(),
        };
        let mut refused_stats = Vec::new();
        for (port, stats) in ports {
            for s in stats {
                let hit = b
                    .edges
                    .iter()
                    .position(|e| edge_matches(e, from, to, *port));
                match (s.allowed, hit) {
                    (true, Some(i)) => edge_use.entry(i).or_default().push(s),
                    (true, None) => {}
                    (false, _) => {
                        if !refused.ports.contains(port) {
                            refused.ports.push(*port);
                        }
                        refused_stats.push(*s);
                    }
                }
            }
        }
        if !refused_stats.is_empty() {
            denied.push((refused, refused_stats));
        }
    }
    let mut ext_use: BTreeMap<usize, Vec<&PortStats>> = BTreeMap::new();
    let mut ext_denied: Vec<(ExternalDestination, &ExternalKey, Vec<&PortStats>)> = Vec::new();
    for (key, uses) in &o.externals {
        let mut refused = Vec::new();
        let mut refused_keys: Vec<&(Workload, std::net::IpAddr, u16)> = Vec::new();
        for (k @ (w, ip, port), s) in uses {
            if s.allowed {
                let hit = b.external.iter().position(|x| {
                    x.cidrs.iter().any(|c| cidr_contains(c, *ip))
                        && (x.ports.is_empty() || x.ports.contains(port))
                        && (x.from.is_empty() || x.from.contains(&w.name))
                });
                if let Some(i) = hit {
                    ext_use.entry(i).or_default().push(s);
                }
            } else {
                refused.push(s);
                refused_keys.push(k);
            }
        }
        if !refused.is_empty() {
            let mut x = ExternalDestination {
                name: key.name.clone(),
                cidrs: Vec::new(),
                ports: Vec::new(),
                from: Vec::new(),
            };
            for (w, ip, port) in refused_keys {
                let cidr = match ip {
                    std::net::IpAddr::V4(_) => format!("{ip}/32"),
                    std::net::IpAddr::V6(_) => format!("{ip}/128"),
                };
                if !x.cidrs.contains(&cidr) {
                    x.cidrs.push(cidr);
                }
                if !x.ports.contains(port) {
                    x.ports.push(*port);
                }
                if !x.from.contains(&w.name) {
                    x.from.push(w.name.clone());
                }
            }
            x.cidrs.sort();
            x.ports.sort_unstable();
            x.from.sort();
            ext_denied.push((x, key, refused));
        }
    }
    let _ = writeln!(
        out,
        "# The egress allowlist, as in the base policy, with what was seen of each rule."
    );
    let _ = writeln!(out, "egress:");
    if b.edges.is_empty() {
        let _ = writeln!(out, "  edges: []");
    } else {
        let _ = writeln!(out, "  edges:");
    }
    for (i, e) in b.edges.iter().enumerate() {
        let seen = edge_use
            .get(&i)
            .map_or_else(|| "not seen in the range".to_owned(), |s| traffic(s));
        let _ = writeln!(out, "    # {seen}");
        let _ = writeln!(out, "    - {}", yaml::edge(e));
    }
    if b.external.is_empty() {
        let _ = writeln!(out, "  external: []");
    } else {
        let _ = writeln!(out, "  external:");
    }
    for (i, x) in b.external.iter().enumerate() {
        let seen = ext_use
            .get(&i)
            .map_or_else(|| "not seen in the range".to_owned(), |s| traffic(s));
        let _ = writeln!(out, "    # {seen}");
        yaml::external(out, "    ", x);
    }
    let _ = writeln!(out);
    let n = denied.len() + ext_denied.len();
    let _ = writeln!(
        out,
        "# Seen, not allowed by the base's egress: review ({n})."
    );
    if n == 0 {
        let _ = writeln!(out, "# Nothing: every connection seen is allowed.");
        let _ = writeln!(out);
        return;
    }
    let _ = writeln!(
        out,
        "# Each is an `egress-not-allowed` violation under this draft; allow one only once you"
    );
    let _ = writeln!(out, "# know why it exists.");
    for (e, stats) in &denied {
        let _ = writeln!(out, "#   {}", comment(&traffic(stats)));
        let _ = writeln!(out, "#   - {}", comment(&yaml::edge(e)));
    }
    for (x, key, stats) in &ext_denied {
        let _ = writeln!(out, "#   {}", external_note(key, stats, &x.from));
        let mut block = String::new();
        yaml::external(&mut block, "", x);
        for line in block.lines() {
            let _ = writeln!(out, "#   {}", comment(line));
        }
    }
    let _ = writeln!(out);
}

/// The whole draft (see the module doc).
pub fn render(o: &Observed, base: Option<&Policy>, h: &Header<'_>) -> String {
    let mut out = String::new();
    header(&mut out, o, h);
    endpoints(&mut out, o, base);
    review(&mut out, o, base);
    routes(&mut out, o);
    let spec = base.map(|b| &b.spec);
    if let Some(s) = spec.and_then(|s| s.sensitive_fields.as_ref()) {
        yaml::sensitive_fields(&mut out, s);
        let _ = writeln!(out);
    }
    if let Some(s) = spec {
        let before = out.len();
        yaml::redaction(&mut out, &s.redaction);
        if out.len() > before {
            let _ = writeln!(out);
        }
    }
    egress(&mut out, o, spec.and_then(|s| s.egress.as_ref()));
    match spec {
        Some(s) => {
            if let Some(q) = &s.quarantine {
                yaml::quarantine(&mut out, q);
                let _ = writeln!(out);
            }
            if let Some(b) = &s.baselines {
                yaml::baselines(&mut out, b);
                let _ = writeln!(out);
            }
            yaml::aggregation(&mut out, &s.aggregation);
        }
        None => {
            for line in [
                "# Not drafted from traffic: sensitive_fields, redaction (every query value is",
                "# redacted), quarantine, baselines and aggregation (60 s). Copy them from your policy",
                "# (or give it as --base); docs/policy.md describes each.",
            ] {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}
