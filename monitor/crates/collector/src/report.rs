//! Forensic figures for `monitor report` (the `Report` service), computed from the store, and
//! their plain-text rendering.
//!
//! What each subject matches (time range on the record's `time`, since inclusive, until
//! exclusive):
//! - `path`: `http` records with that `http.path` (a trailing `*` matches a prefix);
//! - `pod`: `http` records whose source is that pod (`namespace/name`, or `name` in any
//!   namespace);
//! - `rule`: `violation` records of that rule, each weighing its `count` (an aggregated summary
//!   stands for `count` occurrences; its status, query and sizes are those of its sample).
//!
//! Other routes: the paths that the matched records' destination services served in the range
//! (every caller's `http` records), without the subject's own paths (for a pod: every path, to
//! compare the pod's figures with). Violations by rule: for a path, violations with that
//! `http.path`; for a pod, violations whose source is that pod; for a rule, that rule.
//!
//! `top` (default 20) cuts by_source, by_destination, query_keys, filter_values and other
//! routes; by_day, by_status, hours_of_day and by_rule are always complete. Ties are listed in
//! key order. Filter values are percent-decoded for display.
//!
//! Grouping and counting run in SQL; query strings are parsed here, once per distinct query.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use rusqlite::types::Value;

use super::store::{StoreError, StoreReader};
use monitor_record::time::format_rfc3339;
use monitor_record::{query::REDACTED, query::decode_component, query::query_pairs};
use monitor_wire::{proto, proto::report_request::Subject};

const NS_PER_HOUR: i64 = 3_600_000_000_000;
const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;
/// Rows per table when the request says 0.
const DEFAULT_TOP: usize = 20;
/// Destination services considered for other routes (a pod may call many).
const MAX_SERVICES: i64 = 100;

/// `namespace/pod` of the source, or its IP when the pod is unknown.
const SOURCE_KEY: &str = "CASE WHEN src_pod IS NOT NULL THEN coalesce(src_ns || '/', '') || src_pod
    ELSE coalesce(src_ip, 'unknown') END";
/// `namespace/service` of the destination, else its pod, else its IP.
const DESTINATION_KEY: &str = "CASE
    WHEN dst_svc IS NOT NULL THEN coalesce(dst_ns || '/', '') || dst_svc
    WHEN dst_pod IS NOT NULL THEN coalesce(dst_ns || '/', '') || dst_pod
    ELSE coalesce(dst_ip, 'unknown') END";
const STATUS_KEY: &str = "coalesce(CAST(status AS TEXT), 'none')";

/// `floor(time_ns / unit)` (SQLite's integer division truncates toward zero).
fn floor_div(unit: i64) -> String {
    format!(
        "(CASE WHEN time_ns >= 0 THEN time_ns / {unit} ELSE (time_ns - {unit} + 1) / {unit} END)"
    )
}

/// A conjunction of SQL conditions with their parameters.
#[derive(Debug, Clone, Default)]
struct Filter {
    sql: String,
    args: Vec<Value>,
}

impl Filter {
    fn and(mut self, clause: &str, args: impl IntoIterator<Item = Value>) -> Self {
        if clause.is_empty() {
            return self;
        }
        if !self.sql.is_empty() {
            self.sql.push_str(" AND ");
        }
        self.sql.push('(');
        self.sql.push_str(clause);
        self.sql.push(')');
        self.args.extend(args);
        self
    }

    fn and_filter(self, other: &Filter) -> Self {
        self.and(&other.sql, other.args.iter().cloned())
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// The path condition: exact, or a prefix as a range the `path` index serves. HTTP paths are
/// ASCII (anything else is percent-encoded), so U+10FFFF bounds every continuation.
fn path_filter(pattern: &str) -> Filter {
    match pattern.strip_suffix('*') {
        Some("") => Filter::default().and("path IS NOT NULL", []),
        Some(prefix) => Filter::default().and(
            "path >= ? AND path < ?",
            [text(prefix), Value::Text(format!("{prefix}\u{10FFFF}"))],
        ),
        None => Filter::default().and("path = ?", [text(pattern)]),
    }
}

/// The source-pod condition for `namespace/name` or `name`.
fn pod_filter(pod: &str) -> Filter {
    match pod.split_once('/') {
        Some((ns, name)) => {
            Filter::default().and("src_pod = ? AND src_ns = ?", [text(name), text(ns)])
        }
        None => Filter::default().and("src_pod = ?", [text(pod)]),
    }
}

fn time_filter(req: &proto::ReportRequest) -> Filter {
    let mut f = Filter::default();
    if req.since_unix_nano != 0 {
        f = f.and("time_ns >= ?", [Value::Integer(req.since_unix_nano)]);
    }
    if req.until_unix_nano != 0 {
        f = f.and("time_ns < ?", [Value::Integer(req.until_unix_nano)]);
    }
    f
}

/// Runs a query, mapping each row.
fn rows<T>(
    reader: &StoreReader,
    sql: &str,
    args: &[Value],
    what: &'static str,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let err = |source| StoreError::Sql {
        path: reader.path().to_path_buf(),
        what,
        source,
    };
    let mut stmt = reader.conn().prepare(sql).map_err(err)?;
    stmt.query_map(rusqlite::params_from_iter(args), map)
        .and_then(Iterator::collect)
        .map_err(err)
}

fn count_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `SUM(weight)` per `key` over `filter`, most first (ties by key), at most `top` rows.
fn buckets(
    reader: &StoreReader,
    key: &str,
    filter: &Filter,
    weight: &str,
    top: Option<usize>,
    what: &'static str,
) -> Result<Vec<proto::Bucket>, StoreError> {
    let limit = top.map_or(-1, |t| i64::try_from(t).unwrap_or(i64::MAX));
    let sql = format!(
        "SELECT {key} AS k, sum({weight}) AS n FROM records WHERE {} GROUP BY k
         ORDER BY n DESC, k LIMIT {limit}",
        filter.sql
    );
    rows(reader, &sql, &filter.args, what, |r| {
        Ok(proto::Bucket {
            key: r.get(0)?,
            count: count_of(r.get(1)?),
        })
    })
}

/// The response-bytes figures of `filter`'s records under the name `route`.
fn byte_stats(
    reader: &StoreReader,
    route: String,
    filter: &Filter,
    weight: &str,
) -> Result<proto::ByteStats, StoreError> {
    let sql = format!(
        "SELECT coalesce(sum({weight}), 0),
                total(CASE WHEN response_body_bytes IS NOT NULL THEN {weight} END),
                total(CAST(response_body_bytes AS REAL) * {weight}),
                coalesce(max(response_body_bytes), 0)
         FROM records WHERE {}",
        filter.sql
    );
    let mut out = rows(
        reader,
        &sql,
        &filter.args,
        "computing response bytes",
        |r| {
            let (requests, answered, bytes, max): (i64, f64, f64, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            Ok(proto::ByteStats {
                route: route.clone(),
                requests: count_of(requests),
                mean_bytes: if answered > 0.0 {
                    bytes / answered
                } else {
                    0.0
                },
                max_bytes: count_of(max),
            })
        },
    )?;
    Ok(out.pop().unwrap_or_default())
}

/// Query keys (requests containing each) and kept filter values, from the distinct queries.
fn query_figures(
    reader: &StoreReader,
    filter: &Filter,
    weight: &str,
    top: usize,
) -> Result<(Vec<proto::Bucket>, Vec<proto::FilterValue>), StoreError> {
    let sql = format!(
        "SELECT query, sum({weight}) FROM records
         WHERE {} AND query IS NOT NULL AND query <> '' GROUP BY query",
        filter.sql
    );
    let queries = rows(reader, &sql, &filter.args, "reading query strings", |r| {
        Ok((r.get::<_, String>(0)?, count_of(r.get(1)?)))
    })?;
    let mut keys: BTreeMap<String, u64> = BTreeMap::new();
    let mut values: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (query, n) in &queries {
        let pairs = query_pairs(query);
        // Each request counts once per key and per value, however often they repeat in it.
        let distinct_keys: BTreeSet<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        for k in distinct_keys {
            *keys.entry(k.to_owned()).or_default() += n;
        }
        let kept: BTreeSet<(&str, String)> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty() && *v != REDACTED)
            .map(|(k, v)| (k.as_str(), decode_component(v)))
            .collect();
        for (k, v) in kept {
            *values.entry((k.to_owned(), v)).or_default() += n;
        }
    }
    let mut keys: Vec<proto::Bucket> = keys
        .into_iter()
        .map(|(key, count)| proto::Bucket { key, count })
        .collect();
    // Stable sorts over key-ordered maps: most first, ties in key (then value) order.
    keys.sort_by_key(|b| std::cmp::Reverse(b.count));
    keys.truncate(top);
    let mut values: Vec<proto::FilterValue> = values
        .into_iter()
        .map(|((key, value), count)| proto::FilterValue { key, value, count })
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.count));
    values.truncate(top);
    Ok((keys, values))
}

/// Computes every figure of [`proto::ReportResponse`] for `req` (see the module doc).
pub fn report(
    reader: &StoreReader,
    req: &proto::ReportRequest,
) -> Result<proto::ReportResponse, StoreError> {
    let top = match req.top {
        0 => DEFAULT_TOP,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let time = time_filter(req);
    // `+kind`: never the kind index (it would read every record of the kind in the range); the
    // subject's own index (path, source pod, rule) narrows far more.
    let http = Filter::default()
        .and("+kind = 'http'", [])
        .and_filter(&time);
    let violations = Filter::default()
        .and("+kind = 'violation'", [])
        .and_filter(&time);
    let (subject, matched, weight, rule_scope) = match &req.subject {
        None => return Err(StoreError::NoSubject),
        Some(Subject::Path(p)) => (
            format!("path {p}"),
            http.clone().and_filter(&path_filter(p)),
            "1",
            violations.clone().and_filter(&path_filter(p)),
        ),
        Some(Subject::Pod(p)) => (
            format!("pod {p}"),
            http.clone().and_filter(&pod_filter(p)),
            "1",
            violations.clone().and_filter(&pod_filter(p)),
        ),
        Some(Subject::Rule(r)) => {
            let f = violations.clone().and("rule = ?", [text(r)]);
            (format!("rule {r}"), f.clone(), "coalesce(count, 1)", f)
        }
    };

    let totals_sql = format!(
        "SELECT coalesce(sum({weight}), 0), coalesce(min(time_ns), 0), coalesce(max(time_ns), 0)
         FROM records WHERE {}",
        matched.sql
    );
    let (requests, first, last) = rows(
        reader,
        &totals_sql,
        &matched.args,
        "counting requests",
        |r| {
            Ok((
                count_of(r.get(0)?),
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )?
    .pop()
    .unwrap_or_default();

    let day_sql = format!(
        "SELECT {} AS d, sum({weight}) FROM records WHERE {} GROUP BY d ORDER BY d",
        floor_div(NS_PER_DAY),
        matched.sql
    );
    let by_day = rows(
        reader,
        &day_sql,
        &matched.args,
        "counting requests per day",
        |r| {
            let day: i64 = r.get(0)?;
            Ok(proto::Bucket {
                key: format_rfc3339(day.saturating_mul(NS_PER_DAY))
                    .and_then(|t| t.get(..10).map(str::to_owned))
                    .unwrap_or_else(|| day.to_string()),
                count: count_of(r.get(1)?),
            })
        },
    )?;

    let hour_sql = format!(
        "SELECT ({} % 24 + 24) % 24 AS h, sum({weight}) FROM records WHERE {} GROUP BY h",
        floor_div(NS_PER_HOUR),
        matched.sql
    );
    let mut hours = [0u64; 24];
    for (h, n) in rows(
        reader,
        &hour_sql,
        &matched.args,
        "counting requests per hour",
        |r| Ok((r.get::<_, i64>(0)?, count_of(r.get(1)?))),
    )? {
        if let Some(slot) = usize::try_from(h).ok().and_then(|h| hours.get_mut(h)) {
            *slot += n;
        }
    }
    let hours_of_day = hours
        .iter()
        .enumerate()
        .map(|(h, &count)| proto::Bucket {
            key: format!("{h:02}"),
            count,
        })
        .collect();

    let by_source = buckets(
        reader,
        SOURCE_KEY,
        &matched,
        weight,
        Some(top),
        "counting per source",
    )?;
    let by_status = buckets(
        reader,
        STATUS_KEY,
        &matched,
        weight,
        None,
        "counting per status",
    )?;
    let by_destination = buckets(
        reader,
        DESTINATION_KEY,
        &matched,
        weight,
        Some(top),
        "counting per destination",
    )?;
    let (query_keys, filter_values) = query_figures(reader, &matched, weight, top)?;
    let route = match &req.subject {
        Some(Subject::Path(p)) => p.clone(),
        _ => subject.clone(),
    };
    let response_bytes = byte_stats(reader, route, &matched, weight)?;
    let other_routes = other_routes(reader, req, &matched, &http, top)?;
    let by_rule = buckets(
        reader,
        "coalesce(rule, 'unknown')",
        &rule_scope,
        "coalesce(count, 1)",
        None,
        "counting violations per rule",
    )?;

    Ok(proto::ReportResponse {
        subject,
        requests,
        first_seen_unix_nano: first,
        last_seen_unix_nano: last,
        by_day,
        by_source,
        by_status,
        query_keys,
        filter_values,
        response_bytes: Some(response_bytes),
        other_routes,
        hours_of_day,
        by_rule,
        by_destination,
    })
}

/// The paths the matched records' destination services served in the range (`http` is the
/// kind and time filter), without the subject's own paths, most requested first.
fn other_routes(
    reader: &StoreReader,
    req: &proto::ReportRequest,
    matched: &Filter,
    http: &Filter,
    top: usize,
) -> Result<Vec<proto::ByteStats>, StoreError> {
    let services_sql = format!(
        "SELECT DISTINCT dst_svc, dst_ns FROM records WHERE {} AND dst_svc IS NOT NULL
         ORDER BY 1, 2 LIMIT {MAX_SERVICES}",
        matched.sql
    );
    let services = rows(
        reader,
        &services_sql,
        &matched.args,
        "finding destination services",
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
    )?;
    if services.is_empty() {
        return Ok(Vec::new());
    }
    let mut any = Filter {
        sql: vec!["(dst_svc = ? AND dst_ns IS ?)"; services.len()].join(" OR "),
        args: Vec::new(),
    };
    for (svc, ns) in services {
        any.args.push(Value::Text(svc));
        any.args.push(ns.map_or(Value::Null, Value::Text));
    }
    let mut scope = http.clone().and("path IS NOT NULL", []).and_filter(&any);
    match &req.subject {
        Some(Subject::Path(p)) => {
            let own = path_filter(p);
            scope = scope.and(&format!("NOT ({})", own.sql), own.args);
        }
        Some(Subject::Rule(_)) => {
            scope = scope.and(
                &format!(
                    "path NOT IN (SELECT path FROM records WHERE {} AND path IS NOT NULL)",
                    matched.sql
                ),
                matched.args.iter().cloned(),
            );
        }
        Some(Subject::Pod(_)) | None => {}
    }
    let sql = format!(
        "SELECT path, count(*) AS n, count(response_body_bytes), total(response_body_bytes),
                coalesce(max(response_body_bytes), 0)
         FROM records WHERE {} GROUP BY path ORDER BY n DESC, path LIMIT {}",
        scope.sql,
        i64::try_from(top).unwrap_or(i64::MAX)
    );
    rows(reader, &sql, &scope.args, "computing other routes", |r| {
        let answered: i64 = r.get(2)?;
        let bytes: f64 = r.get(3)?;
        Ok(proto::ByteStats {
            route: r.get(0)?,
            requests: count_of(r.get(1)?),
            mean_bytes: if answered > 0 {
                bytes / answered as f64
            } else {
                0.0
            },
            max_bytes: count_of(r.get(4)?),
        })
    })
}

/// Widest bar of a table, in characters.
const BAR: u64 = 40;

fn bar(count: u64, max: u64) -> String {
    if max == 0 || count == 0 {
        return String::new();
    }
    // At least one mark for any non-zero count, so small values stay visible.
    let n = (count * BAR).div_ceil(max).max(1);
    "#".repeat(usize::try_from(n).unwrap_or(0))
}

/// A titled two-column table of counts with bars.
fn table(out: &mut String, title: &str, rows: &[(String, u64)]) {
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let kw = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let nw = rows
        .iter()
        .map(|(_, n)| n.to_string().len())
        .max()
        .unwrap_or(1);
    let max = rows.iter().map(|(_, n)| *n).max().unwrap_or(0);
    for (k, n) in rows {
        let line = format!("  {k:<kw$}  {n:>nw$}  {}", bar(*n, max));
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn bucket_rows(b: &[proto::Bucket]) -> Vec<(String, u64)> {
    b.iter().map(|b| (b.key.clone(), b.count)).collect()
}

fn time_text(ns: i64) -> String {
    format_rfc3339(ns).unwrap_or_else(|| ns.to_string())
}

/// `resp` as the plain-text report `monitor report` prints: a header, then one section per
/// table with aligned columns and bars.
pub fn render(resp: &proto::ReportResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Report: {}", resp.subject);
    if resp.requests == 0 {
        let _ = writeln!(out, "No matching records in the time range.");
        return out;
    }
    let _ = writeln!(
        out,
        "{} matched, first {}, last {}",
        resp.requests,
        time_text(resp.first_seen_unix_nano),
        time_text(resp.last_seen_unix_nano)
    );
    table(&mut out, "By day (UTC)", &bucket_rows(&resp.by_day));
    table(&mut out, "By source", &bucket_rows(&resp.by_source));
    table(&mut out, "By status", &bucket_rows(&resp.by_status));
    table(
        &mut out,
        "By destination",
        &bucket_rows(&resp.by_destination),
    );
    table(
        &mut out,
        "Query keys (requests containing the key)",
        &bucket_rows(&resp.query_keys),
    );
    let values: Vec<(String, u64)> = resp
        .filter_values
        .iter()
        .map(|f| (format!("{}={}", f.key, f.value), f.count))
        .collect();
    table(&mut out, "Filter values (not redacted)", &values);

    let _ = writeln!(
        out,
        "\nResponse body bytes (mean and max over requests with a response)"
    );
    let mut stats: Vec<(String, &proto::ByteStats)> = Vec::new();
    if let Some(own) = &resp.response_bytes {
        stats.push((format!("{} (subject)", own.route), own));
    }
    stats.extend(resp.other_routes.iter().map(|s| (s.route.clone(), s)));
    let rw = stats
        .iter()
        .map(|(r, _)| r.chars().count())
        .chain([5])
        .max()
        .unwrap_or(5);
    let _ = writeln!(
        out,
        "  {:<rw$}  {:>8}  {:>12}  {:>10}",
        "route", "requests", "mean", "max"
    );
    for (route, s) in &stats {
        let _ = writeln!(
            out,
            "  {route:<rw$}  {:>8}  {:>12.1}  {:>10}",
            s.requests, s.mean_bytes, s.max_bytes
        );
    }
    if resp.other_routes.is_empty() {
        let _ = writeln!(
            out,
            "  (no other routes of the destination service in the range)"
        );
    }

    table(
        &mut out,
        "Hours of day (UTC)",
        &bucket_rows(&resp.hours_of_day),
    );
    table(&mut out, "Violations by rule", &bucket_rows(&resp.by_rule));
    out
}

#[cfg(test)]
mod tests;
