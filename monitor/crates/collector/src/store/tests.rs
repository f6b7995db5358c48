use std::path::PathBuf;

use proptest::strategy::Strategy;
use serde_json::json;

use super::*;
use monitor_record::time::format_rfc3339;

const S: i64 = 1_000_000_000;
/// 2026-11-20T00:00:00Z.
const DAY0: i64 = 1_795_132_800 * S;

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    (dir, path)
}

fn open(path: &Path) -> Store {
    Store::open(path, StoreOptions::default()).unwrap()
}

fn rec(seq: u64, v: serde_json::Value) -> proto::Record {
    proto::Record {
        seq,
        kind: v["kind"].as_str().unwrap_or("http").to_owned(),
        time_unix_nano: 0,
        json: v.to_string(),
    }
}

/// An http record from `src` (pod in `ns`) to svc-b at `t`.
fn http(seq: u64, t: i64, ns: &str, src: &str, path: &str) -> proto::Record {
    rec(
        seq,
        json!({"seq": seq, "kind": "http", "time": format_rfc3339(t).unwrap(), "node": "n1",
            "source": {"kind": "pod", "ip": "10.0.0.1", "port": 4000, "namespace": ns, "pod": src,
                       "service": format!("svc-{src}")},
            "destination": {"kind": "pod", "ip": "10.0.0.2", "port": 80, "namespace": "other",
                            "pod": "b-0", "service": "svc-b"},
            "http": {"method": "GET", "path": path, "status": 200, "response_body_bytes": 10}}),
    )
}

fn violation(seq: u64, t: i64, rule: &str, severity: &str) -> proto::Record {
    rec(
        seq,
        json!({"seq": seq, "kind": "violation", "time": format_rfc3339(t).unwrap(), "node": "n1",
            "rule": rule, "severity": severity, "message": "m",
            "source": {"kind": "pod", "namespace": "vantage", "pod": "a-1"},
            "destination": {"kind": "pod", "namespace": "vantage", "pod": "b-0", "service": "svc-b"},
            "count": 1, "aggregated": false}),
    )
}

#[test]
fn resent_batch_is_deduplicated() {
    let (_d, path) = temp();
    let mut s = open(&path);
    let batch: Vec<_> = (1..=3).map(|i| http(i, DAY0, "ns", "a", "/x")).collect();
    let first = s.insert_batch("n1", "b1", &batch, &[]).unwrap();
    assert_eq!((first.stored, first.duplicates, first.watermark), (3, 0, 3));
    assert_eq!(first.new_ids, Some(1..=3));
    let again = s.insert_batch("n1", "b1", &batch, &[]).unwrap();
    assert_eq!((again.stored, again.duplicates, again.watermark), (0, 3, 3));
    assert_eq!(again.new_ids, None);
    assert_eq!(s.as_reader().read_after(0, 100).unwrap().len(), 3);
    // Same seqs from another boot or another node are other records.
    assert_eq!(s.insert_batch("n1", "b2", &batch, &[]).unwrap().stored, 3);
    assert_eq!(s.insert_batch("n2", "b1", &batch, &[]).unwrap().stored, 3);
    // A partly resent batch: 2 old, 2 new.
    let mixed: Vec<_> = (2..=5).map(|i| http(i, DAY0, "ns", "a", "/x")).collect();
    let m = s.insert_batch("n1", "b1", &mixed, &[]).unwrap();
    assert_eq!((m.stored, m.duplicates, m.watermark), (2, 2, 5));
    // The new rows are exactly those with ids in `new_ids` (ignored duplicates may use ids up).
    let range = m.new_ids.unwrap();
    let after = s.as_reader().read_after(range.start() - 1, 100).unwrap();
    assert_eq!(after.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(after.last().map(|r| r.id), Some(*range.end()));
    assert_eq!(s.as_reader().max_id().unwrap(), *range.end());
}

#[test]
fn watermark_per_incarnation() {
    let (_d, path) = temp();
    let mut s = open(&path);
    assert_eq!(s.as_reader().watermark("n1", "b1").unwrap(), 0);
    s.insert_batch("n1", "b1", &[http(7, DAY0, "ns", "a", "/x")], &[])
        .unwrap();
    // An older record resent later does not lower it.
    let w = s
        .insert_batch("n1", "b1", &[http(2, DAY0, "ns", "a", "/x")], &[])
        .unwrap();
    assert_eq!(w.watermark, 7);
    // An empty batch reports the current watermark.
    assert_eq!(s.insert_batch("n1", "b1", &[], &[]).unwrap().watermark, 7);
    assert_eq!(s.as_reader().watermark("n1", "b1").unwrap(), 7);
    assert_eq!(s.as_reader().watermark("n1", "b2").unwrap(), 0);
    assert_eq!(s.as_reader().watermark("n2", "b1").unwrap(), 0);
    assert_eq!(s.as_reader().lookup_id("n1", "b1", 2).unwrap(), Some(2));
    assert_eq!(s.as_reader().lookup_id("n1", "b1", 3).unwrap(), None);
}

#[test]
fn committed_batches_survive_reopen() {
    let (_d, path) = temp();
    {
        let mut s = open(&path);
        s.insert_batch("n1", "b1", &[http(1, DAY0, "ns", "a", "/x")], &[])
            .unwrap();
        s.set_sink_cursor("ndjson", 1).unwrap();
        s.set_sink_cursor("ocsf", 0).unwrap();
        s.set_sink_cursor("ocsf", 1).unwrap();
    }
    let mut s = open(&path);
    let r = s.reader().unwrap();
    assert_eq!(r.read_after(0, 10).unwrap().len(), 1);
    assert_eq!(r.watermark("n1", "b1").unwrap(), 1);
    assert_eq!(r.sink_cursor("ndjson").unwrap(), 1);
    assert_eq!(r.sink_cursor("ocsf").unwrap(), 1);
    assert_eq!(r.sink_cursor("syslog").unwrap(), 0);
    let again = s
        .insert_batch("n1", "b1", &[http(1, DAY0, "ns", "a", "/x")], &[])
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1));
    let sync: i64 = s
        .inner
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
}

#[test]
fn reader_sees_committed_batches_from_another_thread() {
    let (_d, path) = temp();
    let mut s = open(&path);
    let reader = s.reader().unwrap();
    let h = std::thread::spawn(move || {
        let mut seen = 0;
        for _ in 0..2000 {
            seen = reader.max_id().unwrap();
            if seen == 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        seen
    });
    for i in 0..2 {
        let b = [
            http(2 * i + 1, DAY0, "ns", "a", "/x"),
            http(2 * i + 2, DAY0, "ns", "a", "/x"),
        ];
        s.insert_batch("n1", "b1", &b, &[]).unwrap();
    }
    assert_eq!(h.join().unwrap(), 4);
}

#[test]
fn lost_records_become_one_loss_row() {
    let (_d, path) = temp();
    let mut s = open(&path);
    let lost = proto::LostRecords {
        boot_id: String::new(),
        source: "spool/cap".into(),
        count: 10,
        first_seq: 3,
        last_seq: 12,
        window_start_unix_nano: DAY0,
        window_end_unix_nano: DAY0 + S,
    };
    let batch = [
        http(1, DAY0, "ns", "a", "/x"),
        http(2, DAY0, "ns", "a", "/x"),
    ];
    let a = s
        .insert_batch("n1", "b1", &batch, std::slice::from_ref(&lost))
        .unwrap();
    assert_eq!((a.stored, a.losses, a.watermark), (2, 1, 12));
    let b = s
        .insert_batch("n1", "b1", &batch, std::slice::from_ref(&lost))
        .unwrap();
    assert_eq!(
        (b.stored, b.duplicates, b.losses, b.watermark),
        (0, 2, 0, 12)
    );
    // A loss of an earlier incarnation, reported in a batch of the new one.
    let old = proto::LostRecords {
        boot_id: "b0".into(),
        source: "spool/corrupt".into(),
        ..lost.clone()
    };
    let c = s
        .insert_batch("n1", "b1", &[], &[old.clone(), old])
        .unwrap();
    assert_eq!((c.losses, c.watermark), (1, 12));
    // Nothing of b0 below seq 3 is held, so its note (3-12) does not move b0's watermark:
    // an Ack must never cover records the collector does not have.
    assert_eq!(s.as_reader().watermark("n1", "b0").unwrap(), 0);
    let rows = s.as_reader().read_after(0, 10).unwrap();
    let losses: Vec<_> = rows.iter().filter(|r| r.kind == "loss").collect();
    assert_eq!(losses.len(), 2);
    assert_eq!((losses[0].seq, losses[0].time_ns), (0, DAY0 + S));
    let v: serde_json::Value = serde_json::from_str(&losses[0].json).unwrap();
    assert_eq!(v["reason"], "cap");
    assert_eq!(v["stage"], "spool");
    assert_eq!(v["boot_id"], "b1");
    assert_eq!(
        (
            v["count"].as_u64(),
            v["first_seq"].as_u64(),
            v["last_seq"].as_u64()
        ),
        (Some(10), Some(3), Some(12))
    );
    assert_eq!(losses[1].boot_id, "b0");
    let v: serde_json::Value = serde_json::from_str(&losses[1].json).unwrap();
    assert_eq!(v["reason"], "corrupt");
}

#[test]
fn malformed_json_is_stored_and_counted() {
    let (_d, path) = temp();
    let mut s = open(&path);
    let bad = [
        proto::Record {
            seq: 1,
            kind: "http".into(),
            time_unix_nano: DAY0 + 5,
            json: "{not json".into(),
        },
        proto::Record {
            seq: 2,
            kind: String::new(),
            time_unix_nano: DAY0 + 6,
            json: r#"{"kind":"flow","time":"yesterday","source":7}"#.into(),
        },
        http(3, DAY0, "ns", "a", "/x"),
    ];
    let r = s.insert_batch("n1", "b1", &bad, &[]).unwrap();
    assert_eq!((r.stored, r.malformed, r.duplicates), (3, 2, 0));
    let rows = s.as_reader().read_after(0, 10).unwrap();
    assert_eq!(rows[0].json, "{not json");
    assert_eq!((rows[0].kind.as_str(), rows[0].time_ns), ("http", DAY0 + 5));
    assert_eq!((rows[1].kind.as_str(), rows[1].time_ns), ("flow", DAY0 + 6));
    assert_eq!(rows[2].time_ns, DAY0);
    // Resending a malformed record is a duplicate like any other.
    let again = s.insert_batch("n1", "b1", &bad[..1], &[]).unwrap();
    assert_eq!((again.stored, again.duplicates, again.malformed), (0, 1, 0));
}

#[test]
fn retention_deletes_only_old_rows_in_chunks() {
    let (_d, path) = temp();
    let mut s = Store::open(
        &path,
        StoreOptions {
            retention: std::time::Duration::from_secs(3600),
        },
    )
    .unwrap();
    let now = DAY0 + 10 * 3600 * S;
    let batch: Vec<_> = (0..12u64)
        .map(|i| http(i + 1, now - (i as i64) * 600 * S, "ns", "a", "/x"))
        .collect();
    s.insert_batch("n1", "b1", &batch, &[]).unwrap();
    // Ages 0, 10, ..., 110 minutes: 60 min and older than that go (60 is not older).
    assert_eq!(s.apply_retention_chunk(now, 2).unwrap(), 2);
    assert_eq!(s.apply_retention(now).unwrap(), 3);
    assert_eq!(s.apply_retention(now).unwrap(), 0);
    let left: Vec<u64> = s
        .as_reader()
        .read_after(0, 100)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(left, vec![1, 2, 3, 4, 5, 6, 7]);
    // Ids are never reused, even when the newest rows go.
    assert_eq!(s.apply_retention(now + 100 * 3600 * S).unwrap(), 7);
    assert_eq!(s.as_reader().max_id().unwrap(), 12);
    let n = s
        .insert_batch("n1", "b1", &[http(20, now, "ns", "a", "/x")], &[])
        .unwrap();
    assert_eq!(n.new_ids, Some(13..=13));
}

/// The ids Observe returns, checked to be the same whether filters use indexes or not.
fn ids(r: &StoreReader, req: &proto::ObserveRequest) -> Vec<i64> {
    let scan: Vec<i64> = r
        .observe(req, 0, 100)
        .unwrap()
        .iter()
        .map(|o| o.id)
        .collect();
    let indexed: Vec<i64> = r
        .observe_planned(req, 0, 100, -1)
        .unwrap()
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(scan, indexed, "plans disagree for {req:?}");
    scan
}

#[test]
fn observe_filters() {
    let (_d, path) = temp();
    let mut s = open(&path);
    let batch = [
        http(1, DAY0, "vantage", "a-1", "/x"),                  // id 1
        http(2, DAY0 + S, "web", "c-1", "/y"),                  // id 2
        violation(3, DAY0 + 2 * S, "new-edge", "low"),          // id 3
        violation(4, DAY0 + 3 * S, "sensitive-fields", "high"), // id 4
        violation(5, DAY0 + 4 * S, "quarantine-breach", "critical"), // id 5
    ];
    s.insert_batch("n1", "b1", &batch, &[]).unwrap();
    s.insert_batch(
        "n2",
        "b9",
        &[http(1, DAY0 + 5 * S, "web", "c-2", "/z")],
        &[],
    )
    .unwrap(); // id 6
    let r = s.reader().unwrap();
    let all = proto::ObserveRequest::default();
    assert_eq!(ids(&r, &all), vec![1, 2, 3, 4, 5, 6]);
    let q = |f: &dyn Fn(&mut proto::ObserveRequest)| {
        let mut req = proto::ObserveRequest::default();
        f(&mut req);
        ids(&r, &req)
    };
    assert_eq!(q(&|r| r.kind = vec!["violation".into()]), vec![3, 4, 5]);
    assert_eq!(
        q(&|r| r.kind = vec!["http".into(), "loss".into()]),
        vec![1, 2, 6]
    );
    assert_eq!(q(&|r| r.kind = vec!["policy".into()]), Vec::<i64>::new());
    assert_eq!(
        q(&|r| r.rule = vec!["new-edge".into(), "quarantine-breach".into()]),
        vec![3, 5]
    );
    assert_eq!(
        q(&|r| r.rule = vec!["rate-anomaly".into()]),
        Vec::<i64>::new()
    );
    // Namespace, pod and service of either side.
    assert_eq!(q(&|r| r.namespace = "web".into()), vec![2, 6]);
    assert_eq!(q(&|r| r.namespace = "other".into()), vec![1, 2, 6]);
    assert_eq!(q(&|r| r.namespace = "nope".into()), Vec::<i64>::new());
    assert_eq!(q(&|r| r.pod = "a-1".into()), vec![1, 3, 4, 5]);
    assert_eq!(q(&|r| r.pod = "b-0".into()), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(q(&|r| r.pod = "c-2".into()), vec![6]);
    assert_eq!(q(&|r| r.service = "svc-c-1".into()), vec![2]);
    assert_eq!(q(&|r| r.service = "svc-b".into()), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(q(&|r| r.service = "svc-zzz".into()), Vec::<i64>::new());
    // Severity: ordered; records without one never match.
    assert_eq!(q(&|r| r.min_severity = "low".into()), vec![3, 4, 5]);
    assert_eq!(q(&|r| r.min_severity = "medium".into()), vec![4, 5]);
    assert_eq!(q(&|r| r.min_severity = "high".into()), vec![4, 5]);
    assert_eq!(q(&|r| r.min_severity = "critical".into()), vec![5]);
    let bad = proto::ObserveRequest {
        min_severity: "urgent".into(),
        ..Default::default()
    };
    assert!(matches!(
        r.observe(&bad, 0, 10),
        Err(StoreError::UnknownSeverity(_))
    ));
    // Time: since inclusive, until exclusive.
    assert_eq!(q(&|r| r.since_unix_nano = DAY0 + 2 * S), vec![3, 4, 5, 6]);
    assert_eq!(q(&|r| r.until_unix_nano = DAY0 + 2 * S), vec![1, 2]);
    assert_eq!(
        q(&|r| {
            r.since_unix_nano = DAY0 + S;
            r.until_unix_nano = DAY0 + 3 * S;
        }),
        vec![2, 3]
    );
    assert_eq!(q(&|r| r.since_unix_nano = DAY0 + 6 * S), Vec::<i64>::new());
    assert_eq!(q(&|r| r.node = "n2".into()), vec![6]);
    assert_eq!(q(&|r| r.node = "n3".into()), Vec::<i64>::new());
    // Filters combine with AND.
    assert_eq!(
        q(&|r| {
            r.kind = vec!["violation".into()];
            r.min_severity = "high".into();
            r.pod = "a-1".into();
            r.until_unix_nano = DAY0 + 4 * S;
        }),
        vec![4]
    );
    // Paging by id, and the fields pulled out.
    let page = r.observe(&all, 0, 2).unwrap();
    assert_eq!(page.iter().map(|o| o.id).collect::<Vec<_>>(), vec![1, 2]);
    let next = r.observe(&all, page[1].id, 3).unwrap();
    assert_eq!(next.iter().map(|o| o.id).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(r.observe(&all, 6, 10).unwrap(), vec![]);
    let o = &page[0];
    assert_eq!(
        (o.node.as_str(), o.boot_id.as_str(), o.seq, o.kind.as_str()),
        ("n1", "b1", 1, "http")
    );
    assert_eq!(
        (
            o.method.as_str(),
            o.path.as_str(),
            o.status,
            o.time_unix_nano
        ),
        ("GET", "/x", 200, DAY0)
    );
    let src = o.source.as_ref().unwrap();
    assert_eq!(
        (
            src.kind.as_str(),
            src.namespace.as_str(),
            src.pod.as_str(),
            src.port
        ),
        ("pod", "vantage", "a-1", 4000)
    );
    let v = &next[1];
    assert_eq!(
        (v.rule.as_str(), v.severity.as_str(), v.message.as_str()),
        ("sensitive-fields", "high", "m")
    );
    assert_eq!(v.status, 0);
}

#[test]
fn observe_since_with_records_out_of_time_order() {
    let (_d, path) = temp();
    let mut s = open(&path);
    // Stored in this order (ids 1..=4), happened in another (a node delivering late).
    let times = [DAY0 + 20 * S, DAY0, DAY0 + 10 * S, DAY0 + 30 * S];
    let batch: Vec<_> = times
        .iter()
        .enumerate()
        .map(|(i, t)| http(i as u64 + 1, *t, "ns", "a", "/x"))
        .collect();
    s.insert_batch("n1", "b1", &batch, &[]).unwrap();
    let r = s.as_reader();
    let since = |t: i64| proto::ObserveRequest {
        since_unix_nano: t,
        pod: "a".into(),
        ..Default::default()
    };
    assert_eq!(ids(r, &since(DAY0 + 10 * S)), vec![1, 3, 4]);
    assert_eq!(ids(r, &since(DAY0 + 25 * S)), vec![4]);
    // Paging from a cursor keeps the time filter.
    let page = r.observe(&since(DAY0 + 10 * S), 1, 1).unwrap();
    assert_eq!(page.iter().map(|o| o.id).collect::<Vec<_>>(), vec![3]);
}

#[test]
fn read_after_pages_all_kinds() {
    let (_d, path) = temp();
    let mut s = open(&path);
    let batch: Vec<_> = (1..=5).map(|i| http(i, DAY0, "ns", "a", "/x")).collect();
    s.insert_batch("n1", "b1", &batch, &[]).unwrap();
    s.insert_batch("n1", "b1", &[violation(6, DAY0, "new-edge", "low")], &[])
        .unwrap();
    let r = s.as_reader();
    let a = r.read_after(0, 4).unwrap();
    assert_eq!(a.iter().map(|x| x.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let b = r.read_after(4, 4).unwrap();
    assert_eq!(b.iter().map(|x| x.id).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(b[1].kind, "violation");
    assert_eq!(
        b[1].json,
        batch_json_of(&violation(6, DAY0, "new-edge", "low"))
    );
}

fn batch_json_of(r: &proto::Record) -> String {
    r.json.clone()
}

#[test]
fn open_errors_say_what_to_do() {
    let (d, path) = temp();
    // Not a database.
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let e = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert!(matches!(e, StoreError::NotADatabase { .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    // A directory that cannot be made (its parent is a file).
    let under_file = path.join("sub/store.db");
    let e = Store::open(&under_file, StoreOptions::default()).unwrap_err();
    assert!(matches!(e, StoreError::CreateDir { .. }), "{e}");
    assert!(e.to_string().contains("writable directory"), "{e}");
    // A newer schema.
    let newer = d.path().join("newer.db");
    drop(open(&newer));
    {
        let c = Connection::open(&newer).unwrap();
        c.execute("UPDATE store_schema SET version = 99", [])
            .unwrap();
    }
    let e = Store::open(&newer, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(e, StoreError::NewerSchema { found: 99, .. }),
        "{e}"
    );
    assert!(matches!(
        StoreReader::open(&newer),
        Err(StoreError::NewerSchema { .. })
    ));
    // A reader on a file no collector made.
    let e = StoreReader::open(&d.path().join("absent.db")).unwrap_err();
    assert!(matches!(e, StoreError::Open { .. }), "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any JSON-ish value (objects with odd types in the indexed places, or text) is stored.
    #[test]
    fn arbitrary_records_are_always_stored(
        docs in proptest::collection::vec(
            proptest::prop_oneof![
                ".{0,60}",
                (proptest::option::of("[a-z]{0,8}"), proptest::option::of(0i64..10),
                 proptest::option::of(".{0,30}"), proptest::option::of(-5i64..70_000),
                 proptest::bool::ANY)
                    .prop_map(|(kind, port, path, status, weird)| {
                        let mut v = json!({});
                        if let Some(k) = kind { v["kind"] = json!(k); }
                        if weird {
                            v["time"] = json!(17);
                            v["source"] = json!("pod");
                            v["http"] = json!([status]);
                            v["count"] = json!(u64::MAX);
                        } else {
                            v["time"] = json!("2026-11-20T00:00:00Z");
                            v["source"] = json!({"pod": path, "port": port});
                            v["http"] = json!({"path": path, "status": status});
                        }
                        v.to_string()
                    }),
            ],
            1..20,
        )
    ) {
        let (_d, path) = temp();
        let mut s = open(&path);
        let records: Vec<_> = docs
            .iter()
            .enumerate()
            .map(|(i, j)| proto::Record { seq: i as u64 + 1, kind: "http".into(), time_unix_nano: 1, json: j.clone() })
            .collect();
        let r = s.insert_batch("n", "b", &records, &[]).unwrap();
        proptest::prop_assert_eq!(r.stored as usize, records.len());
        let back = s.as_reader().read_after(0, 100).unwrap();
        proptest::prop_assert_eq!(back.len(), records.len());
        for (a, b) in back.iter().zip(&records) {
            proptest::prop_assert_eq!(&a.json, &b.json);
        }
    }
}
