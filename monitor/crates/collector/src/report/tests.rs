//! A hand-built incident over three UTC days with exact expected figures.

use serde_json::{Value as Json, json};

use super::*;
use crate::{store::Store, store::StoreOptions};

const S: i64 = 1_000_000_000;
const H: i64 = 3600 * S;
const M: i64 = 60 * S;
/// 2026-11-20T00:00:00Z.
const D0: i64 = 1_795_132_800 * S;
const DAY: i64 = 24 * H;

const LOOKUP: &str = "/internal/admin/v0/users/lookup";
const PREFS: &str = "/api/v2/users/preferences";
const AVATAR: &str = "/api/v2/users/avatar";

fn pod(name: &str) -> Json {
    json!({"kind": "pod", "ip": "10.77.0.24", "port": 53202, "namespace": "vantage", "pod": name,
           "service": "svc-recommendation-engine"})
}

fn profile() -> Json {
    json!({"kind": "pod", "ip": "10.77.0.10", "port": 80, "namespace": "vantage",
           "pod": "svc-user-profile-service-0", "service": "svc-user-profile-service"})
}

fn http(
    t: i64,
    source: Json,
    dest: Json,
    path: &str,
    query: Option<&str>,
    status: Option<u16>,
    body: Option<u64>,
) -> Json {
    let mut h = json!({"method": "GET", "path": path, "version": "1.1"});
    if let Some(q) = query {
        h["query"] = json!(q);
        h["target"] = json!(format!("{path}?{q}"));
    }
    if let Some(s) = status {
        h["status"] = json!(s);
    }
    if let Some(b) = body {
        h["response_body_bytes"] = json!(b);
        h["response_bytes"] = json!(b + 238);
    }
    json!({"kind": "http", "time": format_rfc3339(t).unwrap(), "node": "vantage-node-1",
           "observer": "client", "source": source, "destination": dest, "http": h,
           "completion": "complete"})
}

#[expect(
    clippy::too_many_arguments,
    reason = "one line per violation in the dataset"
)]
fn violation(
    t: i64,
    rule: &str,
    source: Json,
    path: Option<&str>,
    query: &str,
    status: u16,
    body: u64,
    count: u64,
) -> Json {
    let mut v = json!({"kind": "violation", "time": format_rfc3339(t).unwrap(), "node": "vantage-node-1",
        "rule": rule, "severity": "high", "message": "m", "source": source, "destination": profile(),
        "route": path.unwrap_or("tcp/80"), "count": count, "aggregated": count > 1,
        "first_seen": format_rfc3339(t).unwrap(), "last_seen": format_rfc3339(t + M).unwrap(),
        "policy": {"file": "policy.yaml", "rule": "protected_prefixes[0]"}});
    if let Some(p) = path {
        v["http"] = json!({"method": "GET", "path": p, "normalized_path": p, "query": query,
            "query_keys": [], "status": status, "response_body_bytes": body});
    }
    v
}

fn dataset() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
    let r04 = pod("svc-recommendation-engine-04");
    let r01 = pod("svc-recommendation-engine-01");
    let anon = json!({"kind": "unknown", "ip": "10.9.9.9", "port": 40000});
    let other_svc = json!({"kind": "pod", "ip": "10.77.0.30", "port": 80, "namespace": "vantage",
                           "pod": "svc-other-0", "service": "svc-other"});
    let p = profile();
    let docs = vec![
        // The subject path: 7 requests in range, 1 before it.
        http(
            D0 + 6 * H + 10 * M,
            r04.clone(),
            p.clone(),
            LOOKUP,
            Some("fields=REDACTED&state=CA"),
            Some(200),
            Some(9000),
        ),
        http(
            D0 + 6 * H + 20 * M,
            r04.clone(),
            p.clone(),
            LOOKUP,
            Some("fields=REDACTED&state=NY"),
            Some(200),
            Some(9600),
        ),
        http(
            D0 + 7 * H + 5 * M,
            r01.clone(),
            p.clone(),
            LOOKUP,
            Some("fields=REDACTED"),
            Some(403),
            Some(100),
        ),
        http(
            D0 + DAY + 6 * H + 30 * M,
            r04.clone(),
            p.clone(),
            LOOKUP,
            Some("fields=REDACTED&state=CA&state=CA"),
            Some(200),
            Some(9800),
        ),
        http(
            D0 + DAY + 23 * H + 59 * M,
            anon,
            p.clone(),
            LOOKUP,
            Some("state="),
            None,
            None,
        ),
        http(
            D0 + 2 * DAY + 6 * H,
            r04.clone(),
            p.clone(),
            LOOKUP,
            Some("fields=REDACTED&state=TX&limit=48"),
            Some(200),
            Some(9999),
        ),
        http(
            D0 + 2 * DAY + 6 * H + 45 * M,
            r04.clone(),
            p.clone(),
            LOOKUP,
            None,
            Some(200),
            Some(9003),
        ),
        http(
            D0 - 10 * DAY,
            r04.clone(),
            p.clone(),
            LOOKUP,
            Some("fields=REDACTED&state=WA"),
            Some(200),
            Some(50_000),
        ),
        // Other routes of the same service (smaller), and of another service.
        http(
            D0 + 8 * H,
            r01.clone(),
            p.clone(),
            PREFS,
            Some("user_id=REDACTED"),
            Some(200),
            Some(1000),
        ),
        http(
            D0 + DAY + 8 * H,
            r01.clone(),
            p.clone(),
            PREFS,
            None,
            Some(200),
            Some(1100),
        ),
        http(
            D0 + 2 * DAY + 8 * H,
            r01.clone(),
            p.clone(),
            PREFS,
            None,
            Some(200),
            Some(1200),
        ),
        http(
            D0 + 2 * DAY + 9 * H,
            r01.clone(),
            p.clone(),
            PREFS,
            None,
            None,
            None,
        ),
        http(
            D0 - 10 * DAY,
            r01.clone(),
            p.clone(),
            PREFS,
            None,
            Some(200),
            Some(99_999),
        ),
        http(
            D0 + 9 * H,
            r01.clone(),
            p.clone(),
            AVATAR,
            None,
            Some(200),
            Some(500),
        ),
        http(
            D0 + 9 * H,
            r01.clone(),
            other_svc.clone(),
            "/healthz",
            None,
            Some(200),
            Some(2),
        ),
        http(
            D0 + 9 * H,
            r01.clone(),
            other_svc,
            "/internal/metrics",
            None,
            Some(200),
            Some(7),
        ),
        // Violations: on the path (1 + an aggregate of 5; an aggregate of 5 of another rule),
        // on another path, and a flow-level one.
        violation(
            D0 + 6 * H + 10 * M,
            "undocumented-endpoint",
            r04.clone(),
            Some(LOOKUP),
            "fields=REDACTED&state=CA",
            200,
            9000,
            1,
        ),
        violation(
            D0 + 6 * H + 20 * M,
            "undocumented-endpoint",
            r04.clone(),
            Some(LOOKUP),
            "fields=REDACTED&state=CA",
            403,
            120,
            5,
        ),
        violation(
            D0 + DAY + 6 * H + 30 * M,
            "sensitive-fields",
            r04.clone(),
            Some(LOOKUP),
            "fields=REDACTED",
            200,
            9800,
            5,
        ),
        violation(
            D0 + 8 * H,
            "cross-service-internal",
            r01,
            Some(PREFS),
            "",
            200,
            1000,
            1,
        ),
        violation(D0 + 3 * H, "new-edge", r04, None, "", 0, 0, 1),
    ];
    let records: Vec<proto::Record> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| proto::Record {
            seq: i as u64 + 1,
            kind: d["kind"].as_str().unwrap().to_owned(),
            time_unix_nano: 0,
            json: d.to_string(),
        })
        .collect();
    store
        .insert_batch("vantage-node-1", "boot", &records, &[])
        .unwrap();
    (dir, store)
}

fn req(subject: Subject) -> proto::ReportRequest {
    proto::ReportRequest {
        subject: Some(subject),
        since_unix_nano: D0,
        until_unix_nano: D0 + 3 * DAY,
        top: 0,
    }
}

fn b(rows: &[(&str, u64)]) -> Vec<proto::Bucket> {
    rows.iter()
        .map(|(k, n)| proto::Bucket {
            key: (*k).to_owned(),
            count: *n,
        })
        .collect()
}

fn bytes(route: &str, requests: u64, mean: f64, max: u64) -> proto::ByteStats {
    proto::ByteStats {
        route: route.to_owned(),
        requests,
        mean_bytes: mean,
        max_bytes: max,
    }
}

fn hours(set: &[(usize, u64)]) -> Vec<proto::Bucket> {
    (0..24)
        .map(|h| proto::Bucket {
            key: format!("{h:02}"),
            count: set.iter().find(|(x, _)| *x == h).map_or(0, |(_, n)| *n),
        })
        .collect()
}

fn fv(key: &str, value: &str, count: u64) -> proto::FilterValue {
    proto::FilterValue {
        key: key.to_owned(),
        value: value.to_owned(),
        count,
    }
}

const R04: &str = "vantage/svc-recommendation-engine-04";
const R01: &str = "vantage/svc-recommendation-engine-01";
const PROFILE: &str = "vantage/svc-user-profile-service";

#[test]
fn path_report_exact_figures() {
    let (_d, store) = dataset();
    let r = report(&store.reader().unwrap(), &req(Subject::Path(LOOKUP.into()))).unwrap();
    assert_eq!(r.subject, format!("path {LOOKUP}"));
    assert_eq!(r.requests, 7);
    assert_eq!(r.first_seen_unix_nano, D0 + 6 * H + 10 * M);
    assert_eq!(r.last_seen_unix_nano, D0 + 2 * DAY + 6 * H + 45 * M);
    assert_eq!(
        r.by_day,
        b(&[("2026-11-20", 3), ("2026-11-21", 2), ("2026-11-22", 2)])
    );
    assert_eq!(r.by_source, b(&[(R04, 5), ("10.9.9.9", 1), (R01, 1)]));
    assert_eq!(r.by_status, b(&[("200", 5), ("403", 1), ("none", 1)]));
    assert_eq!(
        r.query_keys,
        b(&[("fields", 5), ("state", 5), ("limit", 1)])
    );
    assert_eq!(
        r.filter_values,
        vec![
            fv("state", "CA", 2),
            fv("limit", "48", 1),
            fv("state", "NY", 1),
            fv("state", "TX", 1)
        ]
    );
    // (9000 + 9600 + 100 + 9800 + 9999 + 9003) / 6 answered requests.
    assert_eq!(r.response_bytes, Some(bytes(LOOKUP, 7, 7917.0, 9999)));
    assert_eq!(
        r.other_routes,
        vec![bytes(PREFS, 4, 1100.0, 1200), bytes(AVATAR, 1, 500.0, 500)]
    );
    assert_eq!(r.hours_of_day, hours(&[(6, 5), (7, 1), (23, 1)]));
    assert_eq!(
        r.by_rule,
        b(&[("undocumented-endpoint", 6), ("sensitive-fields", 5)])
    );
    assert_eq!(r.by_destination, b(&[(PROFILE, 7)]));

    // Without a range the old request counts too; `top` cuts tables.
    let mut all = req(Subject::Path(LOOKUP.into()));
    all.since_unix_nano = 0;
    all.until_unix_nano = 0;
    all.top = 1;
    let r = report(store.as_reader(), &all).unwrap();
    assert_eq!(r.requests, 8);
    assert_eq!(r.by_day.len(), 4);
    assert_eq!(r.by_source, b(&[(R04, 6)]));
    assert_eq!(r.query_keys, b(&[("fields", 6)]));
    assert_eq!(r.filter_values, vec![fv("state", "CA", 2)]);
    assert_eq!(
        r.other_routes,
        vec![bytes(PREFS, 5, (3300.0 + 99_999.0) / 4.0, 99_999)]
    );
    assert_eq!(r.response_bytes.as_ref().map(|s| s.max_bytes), Some(50_000));
}

#[test]
fn path_prefix_report() {
    let (_d, store) = dataset();
    let r = report(store.as_reader(), &req(Subject::Path("/internal/*".into()))).unwrap();
    assert_eq!(r.requests, 8);
    assert_eq!(
        r.by_destination,
        b(&[(PROFILE, 7), ("vantage/svc-other", 1)])
    );
    // Other routes: both services' paths outside the prefix.
    assert_eq!(
        r.other_routes,
        vec![
            bytes(PREFS, 4, 1100.0, 1200),
            bytes(AVATAR, 1, 500.0, 500),
            bytes("/healthz", 1, 2.0, 2)
        ]
    );
    let none = report(store.as_reader(), &req(Subject::Path("/nothing/*".into()))).unwrap();
    assert_eq!(none.requests, 0);
    assert_eq!(none.by_day, vec![]);
    assert_eq!(none.hours_of_day, hours(&[]));
    assert!(render(&none).contains("No matching records"));
}

#[test]
fn pod_report_exact_figures() {
    let (_d, store) = dataset();
    let r = report(
        store.as_reader(),
        &req(Subject::Pod("vantage/svc-recommendation-engine-04".into())),
    )
    .unwrap();
    assert_eq!(r.subject, "pod vantage/svc-recommendation-engine-04");
    assert_eq!(r.requests, 5);
    assert_eq!(
        r.by_day,
        b(&[("2026-11-20", 2), ("2026-11-21", 1), ("2026-11-22", 2)])
    );
    assert_eq!(r.by_source, b(&[(R04, 5)]));
    assert_eq!(r.by_status, b(&[("200", 5)]));
    assert_eq!(
        r.query_keys,
        b(&[("fields", 4), ("state", 4), ("limit", 1)])
    );
    assert_eq!(
        r.by_rule,
        b(&[
            ("undocumented-endpoint", 6),
            ("sensitive-fields", 5),
            ("new-edge", 1)
        ])
    );
    assert_eq!(r.hours_of_day, hours(&[(6, 5)]));
    // The pod's destination service's routes, its own included (by every caller).
    assert_eq!(
        r.other_routes,
        vec![
            bytes(LOOKUP, 7, 7917.0, 9999),
            bytes(PREFS, 4, 1100.0, 1200),
            bytes(AVATAR, 1, 500.0, 500)
        ]
    );
    // A bare name matches in any namespace; a wrong namespace matches nothing.
    let bare = report(
        store.as_reader(),
        &req(Subject::Pod("svc-recommendation-engine-01".into())),
    )
    .unwrap();
    assert_eq!(bare.requests, 8);
    assert_eq!(bare.by_rule, b(&[("cross-service-internal", 1)]));
    assert_eq!(
        bare.by_destination,
        b(&[(PROFILE, 6), ("vantage/svc-other", 2)])
    );
    let wrong = report(
        store.as_reader(),
        &req(Subject::Pod("prod/svc-recommendation-engine-01".into())),
    )
    .unwrap();
    assert_eq!(wrong.requests, 0);
}

#[test]
fn rule_report_weighs_aggregates() {
    let (_d, store) = dataset();
    let r = report(
        store.as_reader(),
        &req(Subject::Rule("undocumented-endpoint".into())),
    )
    .unwrap();
    assert_eq!(r.subject, "rule undocumented-endpoint");
    assert_eq!(r.requests, 6);
    assert_eq!(r.by_day, b(&[("2026-11-20", 6)]));
    assert_eq!(r.by_source, b(&[(R04, 6)]));
    assert_eq!(r.by_status, b(&[("403", 5), ("200", 1)]));
    assert_eq!(r.query_keys, b(&[("fields", 6), ("state", 6)]));
    assert_eq!(r.filter_values, vec![fv("state", "CA", 6)]);
    // (9000 * 1 + 120 * 5) / 6.
    assert_eq!(
        r.response_bytes,
        Some(bytes("rule undocumented-endpoint", 6, 1600.0, 9000))
    );
    assert_eq!(
        r.other_routes,
        vec![bytes(PREFS, 4, 1100.0, 1200), bytes(AVATAR, 1, 500.0, 500)]
    );
    assert_eq!(r.hours_of_day, hours(&[(6, 6)]));
    assert_eq!(r.by_rule, b(&[("undocumented-endpoint", 6)]));
    assert_eq!(r.by_destination, b(&[(PROFILE, 6)]));
    assert!(matches!(
        report(store.as_reader(), &proto::ReportRequest::default()),
        Err(StoreError::NoSubject)
    ));
}

#[test]
fn render_shows_the_key_figures() {
    let (_d, store) = dataset();
    let r = report(store.as_reader(), &req(Subject::Path(LOOKUP.into()))).unwrap();
    let text = render(&r);
    println!("{text}");
    for want in [
        format!("Report: path {LOOKUP}"),
        "7 matched, first 2026-11-20T06:10:00Z, last 2026-11-22T06:45:00Z".to_owned(),
        "2026-11-21  2  ".to_owned(),
        format!("{R04}  5  "),
        "none  1  ".to_owned(),
        "state=CA  2".to_owned(),
        "fields  5".to_owned(),
        "  23  1  ".to_owned(),
        "undocumented-endpoint  6".to_owned(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    // The bytes table: route, requests, mean, max in aligned columns.
    let row = |route: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(route))
            .unwrap_or_default();
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(
        row(&format!("{LOOKUP} (subject)")),
        [LOOKUP, "(subject)", "7", "7917.0", "9999"]
    );
    assert_eq!(row(PREFS), [PREFS, "4", "1100.0", "1200"]);
    let header = text
        .lines()
        .position(|l| l.trim_start().starts_with("route"))
        .unwrap();
    let cols: Vec<usize> = text.lines().skip(header).take(4).map(|l| l.len()).collect();
    assert!(
        cols.windows(2).all(|w| w[0] == w[1]),
        "columns not aligned: {cols:?}"
    );
    assert!(text.is_ascii());
}
