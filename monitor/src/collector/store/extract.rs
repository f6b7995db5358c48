//! What the store pulls out of a record's JSON into indexed columns, RFC 3339 times to Unix
//! nanoseconds and back, and the JSON of the `loss` records the collector makes from an
//! in-band `LostRecords` message.
//!
//! Extraction never fails: a field that is missing or of the wrong type is a NULL column, and a
//! document that does not parse is flagged `malformed` (it is still stored as sent).

use serde::Serialize;
use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::proto;

const NS_PER_SEC: i64 = 1_000_000_000;

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

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 3339 time (`2026-11-22T06:22:52.775828885Z`, any fraction length, `Z` or a
/// `±HH:MM` offset) into Unix nanoseconds. Hand-written because it runs once per stored record
/// and the formats agents write are this narrow; the sinks use it too (one parser). A leap second (`:60`) counts as `:59`.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                frac = frac * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            frac *= 10;
        }
    }
    let offset_s = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_s;
    secs.checked_mul(NS_PER_SEC)?.checked_add(frac)
}

/// Formats Unix nanoseconds as RFC 3339 UTC, as agents write times (`None` out of range).
pub fn format_rfc3339(ns: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()?
        .format(&Rfc3339)
        .ok()
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

    #[test]
    fn parses_agent_times() {
        assert_eq!(
            parse_rfc3339_ns("2026-11-22T06:22:52.775828885Z"),
            Some(1_795_328_572_775_828_885)
        );
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T01:00:00.5+01:00"),
            Some(500_000_000)
        );
        assert_eq!(parse_rfc3339_ns("1969-12-31T23:59:59Z"), Some(-NS_PER_SEC));
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T00:00:00Z"),
            Some(1_709_164_800 * NS_PER_SEC)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T06:22:52",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T06:22:52.Z",
            "2026-11-22T06:22:52Zjunk",
            "２026-11-22T06:22:52Z",
        ] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad}");
        }
    }

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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Formatting then parsing gives the same instant, for every nanosecond in 1900..2200.
        #[test]
        fn rfc3339_round_trip(ns in -2_208_988_800_000_000_000i64..7_258_118_400_000_000_000i64) {
            let s = format_rfc3339(ns).unwrap_or_default();
            proptest::prop_assert_eq!(parse_rfc3339_ns(&s), Some(ns), "{}", s);
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn rfc3339_arbitrary_text(s in ".{0,40}") {
            let _ = parse_rfc3339_ns(&s);
        }
    }
}
