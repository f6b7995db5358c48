//! What the store pulls out of a record's JSON into indexed columns, RFC 3339 times to Unix
//! nanoseconds and back, and the JSON of the `loss` records the collector makes from an
//! in-band `LostRecords` message.
//!
//! Extraction never fails: a field that is missing or of the wrong type is a NULL column, and a
//! document that does not parse is flagged `malformed` (it is still stored as sent).

use monitor_record::time::{format_rfc3339, parse_rfc3339_ns};
use serde::Serialize;
use serde_json::Value;

use monitor_wire::proto;

/// One endpoint's indexed columns.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PeerCols<'a> {
    pub kind: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub pod: Option<&'a str>,
    pub service: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub port: Option<i64>,
}

/// The indexed columns of one record, borrowed from its parsed JSON.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Columns<'a> {
    pub kind: Option<&'a str>,
    pub time_ns: Option<i64>,
    pub rule: Option<&'a str>,
    pub severity: Option<&'a str>,
    pub message: Option<&'a str>,
    pub source: PeerCols<'a>,
    pub destination: PeerCols<'a>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub status: Option<i64>,
    pub query: Option<&'a str>,
    pub response_body_bytes: Option<i64>,
    pub count: Option<i64>,
    /// The JSON did not parse as an object, or lacks `kind` or a parseable `time`.
    pub malformed: bool,
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Integers as SQLite stores them; values beyond `i64` are not indexable and count as absent.
fn int_of(v: &Value, key: &str) -> Option<i64> {
    let f = v.get(key)?;
    f.as_i64()
        .or_else(|| f.as_u64().and_then(|u| i64::try_from(u).ok()))
}

fn peer(v: Option<&Value>) -> PeerCols<'_> {
    let Some(v) = v.filter(|v| v.is_object()) else {
        return PeerCols::default();
    };
    PeerCols {
        kind: str_of(v, "kind"),
        namespace: str_of(v, "namespace"),
        pod: str_of(v, "pod"),
        service: str_of(v, "service"),
        ip: str_of(v, "ip"),
        port: int_of(v, "port"),
    }
}

/// Parses `json` into a [`Value`]; `None` when it is not JSON (the record is still stored).
pub(crate) fn parse(json: &str) -> Option<Value> {
    serde_json::from_str(json).ok()
}

/// The indexed columns of a parsed record (`None`: it did not parse).
pub(crate) fn columns(doc: Option<&Value>) -> Columns<'_> {
    let Some(v) = doc.filter(|v| v.is_object()) else {
        return Columns {
            malformed: true,
            ..Columns::default()
        };
    };
    let http = v.get("http").filter(|h| h.is_object());
    let kind = str_of(v, "kind");
    let time_ns = str_of(v, "time").and_then(parse_rfc3339_ns);
    let path = http.and_then(|h| {
        str_of(h, "path").or_else(|| str_of(h, "target").map(|t| t.split('?').next().unwrap_or(t)))
    });
    let query = http.and_then(|h| {
        str_of(h, "query")
            .or_else(|| str_of(h, "target").and_then(|t| t.split_once('?').map(|(_, q)| q)))
    });
    Columns {
        kind,
        time_ns,
        rule: str_of(v, "rule"),
        severity: str_of(v, "severity"),
        message: str_of(v, "message"),
        source: peer(v.get("source")),
        destination: peer(v.get("destination")),
        method: http.and_then(|h| str_of(h, "method")),
        path,
        status: http.and_then(|h| int_of(h, "status")),
        query,
        response_body_bytes: http.and_then(|h| int_of(h, "response_body_bytes")),
        count: int_of(v, "count"),
        malformed: kind.is_none() || time_ns.is_none(),
    }
}

/// Rank of a violation severity (low 1 .. critical 4), for `min_severity`.
pub(crate) fn severity_rank(s: &str) -> Option<i64> {
    match s {
        "low" => Some(1),
        "medium" => Some(2),
        "high" => Some(3),
        "critical" => Some(4),
        _ => None,
    }
}

/// The `loss` record the collector writes for an in-band `LostRecords` (docs/records.md,
/// "Loss reported by the agent's spool"). Field order is the one sinks see.
#[derive(Debug, Serialize)]
struct SpoolLoss<'a> {
    kind: &'static str,
    time: String,
    node: &'a str,
    boot_id: &'a str,
    stage: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window_start: Option<String>,
    source: &'a str,
}

/// The JSON of the loss record made from `lost`, and the time it is stored under: the end of
/// the window, else its start, else `now_ns` (when the agent could not tell).
pub(crate) fn loss_json(
    node: &str,
    boot_id: &str,
    lost: &proto::LostRecords,
    now_ns: i64,
) -> (String, i64) {
    let time_ns = [
        lost.window_end_unix_nano,
        lost.window_start_unix_nano,
        now_ns,
    ]
    .into_iter()
    .find(|t| *t != 0)
    .unwrap_or(0);
    let (stage, reason) = lost
        .source
        .split_once('/')
        .unwrap_or(("spool", &lost.source));
    let nonzero = |v: u64| (v != 0).then_some(v);
    let rec = SpoolLoss {
        kind: "loss",
        time: format_rfc3339(time_ns).unwrap_or_default(),
        node,
        boot_id,
        stage,
        reason,
        count: nonzero(lost.count),
        first_seq: nonzero(lost.first_seq),
        last_seq: nonzero(lost.last_seq),
        window_start: (lost.window_start_unix_nano != 0)
            .then(|| format_rfc3339(lost.window_start_unix_nano))
            .flatten(),
        source: &lost.source,
    };
    // Serializing a struct of strings and integers cannot fail; fall back to a minimal object
    // rather than panic if it ever did.
    let json = serde_json::to_string(&rec)
        .unwrap_or_else(|_| format!(r#"{{"kind":"loss","node":{node:?},"stage":"spool"}}"#));
    (json, time_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_record::time::NS_PER_SEC;

    #[test]
    fn columns_of_violation_and_garbage() {
        let v = parse(
            r#"{"kind":"violation","time":"1970-01-01T00:00:01Z","rule":"undocumented-endpoint","severity":"high","message":"m","source":{"kind":"pod","namespace":"ns","pod":"a","ip":"10.0.0.1","port":5},"destination":{"service":"s"},"http":{"method":"GET","path":"/p","query":"a=1","status":403,"response_body_bytes":12},"count":5}"#,
        );
        let c = columns(v.as_ref());
        assert!(!c.malformed);
        assert_eq!(c.time_ns, Some(NS_PER_SEC));
        assert_eq!(
            (c.rule, c.severity, c.count),
            (Some("undocumented-endpoint"), Some("high"), Some(5))
        );
        assert_eq!(c.source.pod, Some("a"));
        assert_eq!(c.source.port, Some(5));
        assert_eq!(c.destination.service, Some("s"));
        assert_eq!(
            (c.path, c.query, c.status),
            (Some("/p"), Some("a=1"), Some(403))
        );
        assert!(columns(parse("not json").as_ref()).malformed);
        assert!(columns(parse("[1,2]").as_ref()).malformed);
        let no_time = parse(r#"{"kind":"http","http":{"target":"/x?y=1","path":7}}"#);
        let c = columns(no_time.as_ref());
        assert!(c.malformed);
        assert_eq!((c.path, c.query), (Some("/x"), Some("y=1")));
    }

    #[test]
    fn loss_json_from_lost_records() {
        let lost = proto::LostRecords {
            boot_id: String::new(),
            source: "spool/cap".into(),
            count: 10,
            first_seq: 5,
            last_seq: 14,
            window_start_unix_nano: NS_PER_SEC,
            window_end_unix_nano: 2 * NS_PER_SEC,
        };
        let (json, t) = loss_json("n1", "b1", &lost, 99);
        assert_eq!(t, 2 * NS_PER_SEC);
        assert_eq!(
            json,
            r#"{"kind":"loss","time":"1970-01-01T00:00:02Z","node":"n1","boot_id":"b1","stage":"spool","reason":"cap","count":10,"first_seq":5,"last_seq":14,"window_start":"1970-01-01T00:00:01Z","source":"spool/cap"}"#
        );
        let unknown = proto::LostRecords {
            source: "spool/corrupt".into(),
            ..proto::LostRecords::default()
        };
        let (json, t) = loss_json("n1", "b1", &unknown, 7 * NS_PER_SEC);
        assert_eq!(t, 7 * NS_PER_SEC);
        assert_eq!(
            json,
            r#"{"kind":"loss","time":"1970-01-01T00:00:07Z","node":"n1","boot_id":"b1","stage":"spool","reason":"corrupt","source":"spool/corrupt"}"#
        );
    }
}
