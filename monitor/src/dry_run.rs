//! `monitor policy dry-run`: the stored history (a collector store) replayed through a candidate
//! policy, and compared with the violations stored for the same time range.
//!
//! The stored HTTP exchanges and flows are fed, in time order, to the same [`Engine`] the agent
//! uses (rules, baselines, rates, new edges all run on the records' own times). What "fired" is
//! the stored violations, counted by occurrences (an aggregated record counts its `count`).
//! Blocked connection attempts of an enforced quarantine are not flows; their stored
//! violations are re-checked against the candidate's quarantine directly.
//! Both sides are counted per (rule, source, destination, route) and listed grouped by rule and
//! source; an entry that fires on one side only is a change.

use crate::stored::{StoredFlow, StoredHttp};
use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use monitor_collector::{store::StoreError, store::StoreReader};

use monitor_agent::pipeline::source_key;

use monitor_policy::{Policy, PolicyErrors, engine::Engine, engine::HttpInput, engine::who};

use monitor_record::{record::Endpoint, violation::Rule};

/// Why a dry run failed.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    /// The candidate policy is invalid.
    #[error("the candidate policy is invalid:\n{0}")]
    Policy(#[from] PolicyErrors),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct Range {
    /// Start, Unix ns (inclusive).
    pub since_ns: i64,
    /// End, Unix ns (exclusive).
    pub until_ns: i64,
    /// Only this node's records.
    pub node: Option<String>,
}

/// Occurrences of one (rule, source, destination, route) on each side.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Group {
    /// Rule id.
    pub rule: String,
    /// The source (`namespace/pod`, else its address).
    pub source: String,
    /// The destination (service, else pod, else address).
    pub destination: String,
    /// The route (`GET /internal/admin/v0/users/lookup`, `tcp/443`).
    pub route: String,
    /// Occurrences under the stored history (the violations that fired).
    pub fired: u64,
    /// Occurrences under the candidate policy.
    pub would_fire: u64,
}

/// The outcome of a dry run.
#[derive(Debug, Default, Serialize)]
pub struct DryRun {
    /// HTTP exchanges replayed.
    pub http_records: u64,
    /// Flows replayed (those without HTTP: the rules on flows).
    pub flow_records: u64,
    /// Stored violations in the range.
    pub stored_violations: u64,
    /// Stored records that could not be read back (counted, skipped).
    pub unreadable: u64,
    /// First and last record time replayed, Unix ns.
    pub span_ns: Option<(i64, i64)>,
    /// Fire under the candidate, did not fire.
    pub new: Vec<Group>,
    /// Fired, would no longer fire under the candidate.
    pub gone: Vec<Group>,
    /// Fire on both sides (counts may differ).
    pub both: Vec<Group>,
}

#[derive(Deserialize)]
struct StoredViolation {
    rule: String,
    source: Endpoint,
    destination: Endpoint,
    route: String,
    count: u64,
    flow_id: Option<u64>,
}

/// Replays `range` of the store at `store` under `policy`.
pub fn run(store: &Path, policy: Policy, range: &Range) -> Result<DryRun, DryRunError> {
    let reader = StoreReader::open(store)?;
    let mut engine: Option<Engine> = None;
    let mut policy = Some(policy);
    let mut out = DryRun::default();
    // (rule, source, destination, route) → counts.
    let mut groups: BTreeMap<(String, String, String, String), Group> = BTreeMap::new();
    let mut note = |rule: &str, src: &Endpoint, dst: &Endpoint, route: &str, fired, would| {
        let key = (rule.to_owned(), source_key(src), who(dst), route.to_owned());
        let g = groups.entry(key).or_insert_with_key(|k| Group {
            rule: k.0.clone(),
            source: k.1.clone(),
            destination: k.2.clone(),
            route: k.3.clone(),
            ..Group::default()
        });
        g.fired += fired;
        g.would_fire += would;
    };
    reader.for_each_in_time_order::<DryRunError>(
        &["http", "flow", "violation"],
        (range.since_ns, range.until_ns),
        range.node.as_deref(),
        |r| {
            let ns = u64::try_from(r.time_ns).unwrap_or(0);
            let span = out.span_ns.get_or_insert((r.time_ns, r.time_ns));
            span.1 = span.1.max(r.time_ns);
            let e =
                engine.get_or_insert_with(|| Engine::new(policy.take().expect("taken once"), ns));
            match r.kind.as_str() {
                "http" => {
                    let Ok(h) = serde_json::from_str::<StoredHttp>(&r.json) else {
                        out.unreadable += 1;
                        return Ok(());
                    };
                    out.http_records += 1;
                    let input = HttpInput {
                        method: &h.http.method,
                        target: &h.http.target,
                        status: h.http.status,
                        request_body_bytes: h.http.request_body_bytes,
                        response_body_bytes: h.http.response_body_bytes,
                    };
                    let v = e.evaluate_http(&h.source, &h.destination, input, ns);
                    for f in &v.findings {
                        note(f.rule.id(), &h.source, &h.destination, &v.route, 0, 1);
                    }
                }
                "flow" => {
                    let Ok(fl) = serde_json::from_str::<StoredFlow>(&r.json) else {
                        out.unreadable += 1;
                        return Ok(());
                    };
                    if fl.http_exchanges > 0 {
                        return Ok(());
                    }
                    out.flow_records += 1;
                    let route = format!("tcp/{}", fl.destination.port);
                    for f in e.evaluate_flow(&fl.source, &fl.destination) {
                        note(f.rule.id(), &fl.source, &fl.destination, &route, 0, 1);
                    }
                }
                _ => {
                    let Ok(v) = serde_json::from_str::<StoredViolation>(&r.json) else {
                        out.unreadable += 1;
                        return Ok(());
                    };
                    out.stored_violations += 1;
                    note(&v.rule, &v.source, &v.destination, &v.route, v.count, 0);
                    // A blocked attempt (no flow): re-checked against the candidate directly.
                    if v.rule == Rule::QuarantineBreach.id()
                        && v.flow_id.is_none()
                        && e.quarantine_finding(&v.source, &v.destination).is_some()
                    {
                        note(&v.rule, &v.source, &v.destination, &v.route, 0, v.count);
                    }
                }
            }
            Ok(())
        },
    )?;
    for (_, g) in groups {
        match (g.fired > 0, g.would_fire > 0) {
            (false, true) => out.new.push(g),
            (true, false) => out.gone.push(g),
            (true, true) => out.both.push(g),
            (false, false) => {}
        }
    }
    Ok(out)
}

/// The report as text: the changes grouped by rule, then source.
pub fn render(d: &DryRun, policy: &str, store: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let span = d.span_ns.map_or_else(
        || "no records in the range".to_owned(),
        |(a, b)| {
            let f = |ns| monitor_record::time::format_rfc3339(ns).unwrap_or_default();
            format!("{} .. {}", f(a), f(b))
        },
    );
    let _ = writeln!(
        s,
        "dry-run of {policy} over {store}: {} HTTP exchanges and {} flows without HTTP replayed, \
         {} stored violations ({span})",
        d.http_records, d.flow_records, d.stored_violations
    );
    if d.unreadable > 0 {
        let _ = writeln!(
            s,
            "  {} stored records could not be read back and were skipped",
            d.unreadable
        );
    }
    let table = |s: &mut String, title: &str, groups: &[Group], count: fn(&Group) -> u64| {
        let _ = writeln!(
            s,
            "\n{title}: {}",
            if groups.is_empty() { "none" } else { "" }
        );
        if groups.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "  {:<24} {:<40} {:>7}  DESTINATION / ROUTE",
            "RULE", "SOURCE", "COUNT"
        );
        let mut last: Option<(&str, &str)> = None;
        for g in groups {
            // Grouped: the rule and source are written once for their rows.
            let same = last == Some((g.rule.as_str(), g.source.as_str()));
            last = Some((&g.rule, &g.source));
            let _ = writeln!(
                s,
                "  {:<24} {:<40} {:>7}  {} {}",
                if same { "" } else { &g.rule },
                if same { "" } else { &g.source },
                count(g),
                g.destination,
                g.route
            );
        }
    };
    table(
        &mut s,
        "Would fire under the candidate, did not fire",
        &d.new,
        |g| g.would_fire,
    );
    table(&mut s, "Fired, would no longer fire", &d.gone, |g| g.fired);
    let _ = writeln!(
        s,
        "\nUnchanged: {} (rule, source, destination, route) fire under both ({} occurrences stored, {} under the candidate)",
        d.both.len(),
        d.both.iter().map(|g| g.fired).sum::<u64>(),
        d.both.iter().map(|g| g.would_fire).sum::<u64>()
    );
    s
}
