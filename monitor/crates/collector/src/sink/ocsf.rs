//! The OCSF sink: each stored record mapped to one event of the Open Cybersecurity Schema
//! Framework, **version 1.3.0** (pinned: [`OCSF_VERSION`]), one JSON object per line.
//!
//! Every event carries `metadata` {`version` "1.3.0", `product` {`name` "monitor",
//! `vendor_name` (configurable), `version`}, `uid` `<node>:<boot_id>:<seq>` (read back after a
//! crash), `original_time` (the record's `time`), `sequence` (`seq`), `log_name` (the kind),
//! `profiles` ["host"], `correlation_uid` `<node>:flow:<flow_id>` when the record has a flow},
//! `device` {`hostname` node, `type_id` 99, `type` "Kubernetes node"} (the observer), `time`
//! in ms, and `observables` for the endpoint IPs and host names. Whatever OCSF 1.3.0 has no
//! attribute for goes under `unmapped`, named as in the record.
//!
//! | record | OCSF class | mapping |
//! |---|---|---|
//! | `violation` | Detection Finding (`class_uid` 2004, `category_uid` 2) | `activity_id` 1 Create (first occurrence) or 2 Update (`aggregated` summary of repeats); `type_uid` 200401/200402; `severity_id` low→2, medium→3, high→4, critical→5; `message`; `count`; `status_id` 1 New; `start_time`/`end_time` = `first_seen`/`last_seen`; `finding_info` {`uid` `<node>:<rule>:<source>:<route>:<first_seen>` (equal for a first occurrence and its summary), `title` (from the rule), `desc` = `message`, `types` = \[rule\], `first_seen_time`, `last_seen_time`, `analytic` {`name` rule, `uid` `<policy file>:<policy rule>`, `type_id` 1 Rule}}; `evidences` [{`src_endpoint`, `dst_endpoint`, `connection_info`, `url` {`path`, `query_string`}}]; `unmapped`: `rule`, `route`, `policy`, `http` (1.3.0 evidences have no `http_request`), `aggregated`, `flow_id` |
//! | `http` | HTTP Activity (4002, category 4) | `activity_id` from the method (Connect 1, Delete 2, Get 3, Head 4, Options 5, Post 6, Put 7, Trace 8, else 99 Other with `activity_name` = method); `severity_id` 1; `http_request` {`http_method`, `version`, `url` {`hostname`, `port`, `path`, `query_string`, `scheme` "http", `url_string`}}; `http_response` {`code` = status, `length` = `response_bytes`, `latency` = `latency_ms` rounded}; `connection_info` {`protocol_name` "tcp", `protocol_num` 6}; `unmapped`: `observer`, `flow_id`, `completion`, `latency_ms`, `request_body_bytes`, `response_body_bytes`, `*_head_truncated` |
//! | `flow` | Network Activity (4001, category 4) | `activity_id` 2 Close (`close` fin), 3 Reset (rst), 6 Traffic (idle, agent-stopped); `severity_id` 1; `start_time`/`end_time`; `traffic` {`bytes_out` = `bytes_to_server`, `bytes_in` = `bytes_to_client`, `packets_out`, `packets_in`, `bytes`, `packets`}; `connection_info` {`protocol_name` "tcp", `protocol_num` 6}; `unmapped`: `observer`, `flow_id`, `close`, `http_exchanges` |
//! | `loss`, `policy`, `quarantine` | Base Event (`class_uid` 0, `category_uid` 0) | `activity_id` 99 Other, `activity_name` the kind, `type_uid` 99; `severity_id` loss 3, policy reload-failed 3 (else 1), quarantine with `escaped` > 0 4 (else 1); `message` a sentence; `count` (loss); `start_time`/`end_time` (loss window); `unmapped` the whole record |
//! | (a record that is not valid JSON) | Base Event | `raw_data` the stored text, `unmapped` {`node`, `boot_id`, `seq`, `kind`} |
//!
//! Endpoints (`source` → `src_endpoint`, `destination` → `dst_endpoint`, Network Endpoint
//! object): `ip`, `port`; the pod (or Service, or node) name → `name`, an external host's
//! name → `hostname`; the Service a pod backs → `svc_name`. Kubernetes identity with no 1.3.0
//! attribute (`namespace`, `service_account`, `labels`, `kind`, `isolated_by`, `cgroup_id`,
//! `note`) goes to `unmapped.source` / `unmapped.destination` (the endpoint's `container` and
//! `namespace_pid` describe a container runtime and a PID namespace, not a Kubernetes
//! namespace).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    RecordKey, Sink, SinkError,
    file::{FileOptions, LineFile, Output},
    rule_title, uid_of,
};
use monitor_record::stored::StoredRecord;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// Default `metadata.product.vendor_name`.
pub const DEFAULT_VENDOR: &str = "monitor";

/// Writes stored records as OCSF events, one per line.
#[derive(Debug)]
pub struct OcsfSink {
    name: String,
    vendor: String,
    out: Output,
}

impl OcsfSink {
    /// To stdout.
    pub fn stdout(vendor: &str) -> Self {
        Self {
            name: "ocsf:stdout".to_owned(),
            vendor: vendor.to_owned(),
            out: Output::Stdout,
        }
    }

    /// To a file, recovering it (see [`LineFile::open`]).
    pub fn file(opts: FileOptions, vendor: &str) -> Result<Self, SinkError> {
        let name = format!("ocsf:{}", opts.path.display());
        let f = LineFile::open(opts, key_of_line).map_err(|e| SinkError::new(&name, 0, e))?;
        Ok(Self {
            name,
            vendor: vendor.to_owned(),
            out: Output::File(f),
        })
    }
}

impl Sink for OcsfSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, records: &[StoredRecord]) -> Result<(), SinkError> {
        let vendor = &self.vendor;
        self.out
            .write(records, &mut |r, buf| {
                // Serialising a Value into a Vec cannot fail (string keys, no I/O).
                let _ = serde_json::to_writer(&mut *buf, &to_ocsf(r, vendor));
            })
            .map_err(|(n, e)| SinkError::new(&self.name, n, e))
    }

    fn last_delivered(&mut self) -> Result<Option<RecordKey>, SinkError> {
        self.out
            .last_delivered()
            .map_err(|e| SinkError::new(&self.name, 0, e))
    }
}

#[derive(Deserialize)]
struct UidOnly {
    metadata: UidMeta,
}

#[derive(Deserialize)]
struct UidMeta {
    uid: String,
}

/// The key of one OCSF line: its `metadata.uid`.
pub fn key_of_line(line: &[u8]) -> Result<RecordKey, String> {
    let e: UidOnly = serde_json::from_slice(line)
        .map_err(|e| format!("expected an OCSF event with metadata.uid: {e}"))?;
    RecordKey::parse_uid(&e.metadata.uid).ok_or_else(|| {
        format!(
            "metadata.uid `{}` is not <node>:<boot_id>:<seq>",
            e.metadata.uid
        )
    })
}

/// Unix ns → ms (OCSF `timestamp_t`).
fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

/// An RFC 3339 time → Unix ms.
fn rfc3339_ms(v: &Value) -> Option<i64> {
    monitor_record::time::parse_rfc3339_ns(v.as_str()?).map(|ns| ns.div_euclid(1_000_000))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Inserts `key` if `value` is not null.
fn put(m: &mut Map<String, Value>, key: &str, value: Value) {
    if !value.is_null() {
        m.insert(key.to_owned(), value);
    }
}

/// Copies the listed fields of `from` (when present) into `to`.
fn copy(to: &mut Map<String, Value>, from: &Value, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k) {
            to.insert((*k).to_owned(), v.clone());
        }
    }
}

/// A record endpoint → (OCSF Network Endpoint, what has no OCSF attribute).
fn endpoint(e: &Value) -> (Value, Value) {
    let mut o = Map::new();
    put(&mut o, "ip", e.get("ip").cloned().unwrap_or(Value::Null));
    put(
        &mut o,
        "port",
        e.get("port").cloned().unwrap_or(Value::Null),
    );
    if let Some(name) = str_of(e, "pod") {
        let key = if str_of(e, "kind") == Some("external") {
            "hostname"
        } else {
            "name"
        };
        o.insert(key.to_owned(), json!(name));
    }
    if let Some(svc) = str_of(e, "service") {
        o.insert("svc_name".to_owned(), json!(svc));
    }
    let mut rest = Map::new();
    copy(
        &mut rest,
        e,
        &[
            "kind",
            "namespace",
            "service_account",
            "labels",
            "isolated_by",
            "cgroup_id",
            "note",
        ],
    );
    (Value::Object(o), Value::Object(rest))
}

/// Observables for the endpoints' IPs and host names.
fn observables(src: &Value, dst: &Value) -> Value {
    let mut out = Vec::new();
    for (side, e) in [("src_endpoint", src), ("dst_endpoint", dst)] {
        if let Some(ip) = str_of(e, "ip") {
            out.push(json!({"name": format!("{side}.ip"), "type_id": 2, "type": "IP Address", "value": ip}));
        }
        if let Some(h) = str_of(e, "hostname") {
            out.push(json!({"name": format!("{side}.hostname"), "type_id": 1, "type": "Hostname", "value": h}));
        }
    }
    Value::Array(out)
}

const fn severity_name(id: u8) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        6 => "Fatal",
        99 => "Other",
        _ => "Unknown",
    }
}

/// The OCSF `severity_id` of a violation severity.
pub fn severity_id(severity: &str) -> u8 {
    match severity {
        "low" => 2,
        "medium" => 3,
        "high" => 4,
        "critical" => 5,
        _ => 0,
    }
}

struct Class {
    uid: u32,
    name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

const DETECTION_FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
};
const HTTP_ACTIVITY: Class = Class {
    uid: 4002,
    name: "HTTP Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const BASE_EVENT: Class = Class {
    uid: 0,
    name: "Base Event",
    category_uid: 0,
    category_name: "Uncategorized",
};

/// The attributes every event has.
fn envelope(
    r: &StoredRecord,
    v: &Value,
    vendor: &str,
    class: &Class,
    activity: (u32, &str),
    severity: u8,
) -> Map<String, Value> {
    let (activity_id, activity_name) = activity;
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {"name": "monitor", "vendor_name": vendor, "version": env!("CARGO_PKG_VERSION")},
        "uid": uid_of(r),
        "sequence": r.seq,
        "log_name": r.kind,
        "profiles": ["host"],
    });
    if let (Some(m), Some(t)) = (metadata.as_object_mut(), str_of(v, "time")) {
        m.insert("original_time".to_owned(), json!(t));
    }
    if let (Some(m), Some(flow)) = (metadata.as_object_mut(), v.get("flow_id")) {
        m.insert(
            "correlation_uid".to_owned(),
            json!(format!("{}:flow:{}", r.node, flow)),
        );
    }
    let mut e = Map::new();
    e.insert("class_uid".into(), json!(class.uid));
    e.insert("class_name".into(), json!(class.name));
    e.insert("category_uid".into(), json!(class.category_uid));
    e.insert("category_name".into(), json!(class.category_name));
    e.insert("activity_id".into(), json!(activity_id));
    e.insert("activity_name".into(), json!(activity_name));
    e.insert("type_uid".into(), json!(class.uid * 100 + activity_id));
    e.insert(
        "type_name".into(),
        json!(format!("{}: {activity_name}", class.name)),
    );
    e.insert("severity_id".into(), json!(severity));
    e.insert("severity".into(), json!(severity_name(severity)));
    e.insert("time".into(), json!(ms(r.time_ns)));
    e.insert("metadata".into(), metadata);
    e.insert(
        "device".into(),
        json!({"hostname": r.node, "type_id": 99, "type": "Kubernetes node"}),
    );
    e
}

/// `unmapped` with the record's identity.
fn unmapped_base(r: &StoredRecord) -> Map<String, Value> {
    let mut u = Map::new();
    u.insert("node".into(), json!(r.node));
    u.insert("boot_id".into(), json!(r.boot_id));
    u.insert("seq".into(), json!(r.seq));
    u
}

/// Maps one stored record to an OCSF 1.3.0 event (see the module documentation).
pub fn to_ocsf(r: &StoredRecord, vendor: &str) -> Value {
    let Ok(v) = serde_json::from_str::<Value>(&r.json) else {
        let mut e = envelope(r, &Value::Null, vendor, &BASE_EVENT, (99, &r.kind), 1);
        e.insert(
            "message".into(),
            json!("stored record is not valid JSON; see raw_data"),
        );
        e.insert("raw_data".into(), json!(r.json));
        let mut u = unmapped_base(r);
        u.insert("kind".into(), json!(r.kind));
        e.insert("unmapped".into(), Value::Object(u));
        return Value::Object(e);
    };
    Value::Object(match r.kind.as_str() {
        "violation" => violation(r, &v, vendor),
        "http" => http(r, &v, vendor),
        "flow" => flow(r, &v, vendor),
        _ => other(r, &v, vendor),
    })
}

fn endpoints(v: &Value) -> (Value, Value, Value, Value) {
    let null = Value::Null;
    let (src, src_rest) = endpoint(v.get("source").unwrap_or(&null));
    let (dst, dst_rest) = endpoint(v.get("destination").unwrap_or(&null));
    (src, dst, src_rest, dst_rest)
}

fn tcp() -> Value {
    json!({"protocol_name": "tcp", "protocol_num": 6})
}

fn violation(r: &StoredRecord, v: &Value, vendor: &str) -> Map<String, Value> {
    let rule = str_of(v, "rule").unwrap_or("unknown");
    let aggregated = v.get("aggregated").and_then(Value::as_bool) == Some(true);
    let activity = if aggregated {
        (2, "Update")
    } else {
        (1, "Create")
    };
    let sev = severity_id(str_of(v, "severity").unwrap_or(""));
    let mut e = envelope(r, v, vendor, &DETECTION_FINDING, activity, sev);
    let (src, dst, src_rest, dst_rest) = endpoints(v);
    let null = Value::Null;
    let source = v.get("source").unwrap_or(&null);
    let who = match (str_of(source, "namespace"), str_of(source, "pod")) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        (None, Some(pod)) => pod.to_owned(),
        _ => source
            .get("ip")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned(),
    };
    let route = str_of(v, "route").unwrap_or("");
    let first_seen = str_of(v, "first_seen").unwrap_or("");
    let message = str_of(v, "message").unwrap_or("");
    let mut analytic = json!({"name": rule, "type_id": 1, "type": "Rule"});
    if let (Some(a), Some(p)) = (analytic.as_object_mut(), v.get("policy")) {
        a.insert(
            "uid".into(),
            json!(format!(
                "{}:{}",
                str_of(p, "file").unwrap_or(""),
                str_of(p, "rule").unwrap_or("")
            )),
        );
    }
    let mut info = Map::new();
    info.insert(
        "uid".into(),
        json!(format!("{}:{rule}:{who}:{route}:{first_seen}", r.node)),
    );
    info.insert("title".into(), json!(rule_title(rule)));
    info.insert("desc".into(), json!(message));
    info.insert("types".into(), json!([rule]));
    put(
        &mut info,
        "first_seen_time",
        json!(v.get("first_seen").and_then(rfc3339_ms)),
    );
    put(
        &mut info,
        "last_seen_time",
        json!(v.get("last_seen").and_then(rfc3339_ms)),
    );
    info.insert("analytic".into(), analytic);
    e.insert("finding_info".into(), Value::Object(info));
    e.insert("message".into(), json!(message));
    put(
        &mut e,
        "count",
        v.get("count").cloned().unwrap_or(Value::Null),
    );
    e.insert("status_id".into(), json!(1));
    e.insert("status".into(), json!("New"));
    put(
        &mut e,
        "start_time",
        json!(v.get("first_seen").and_then(rfc3339_ms)),
    );
    put(
        &mut e,
        "end_time",
        json!(v.get("last_seen").and_then(rfc3339_ms)),
    );
    let mut evidence = Map::new();
    evidence.insert("src_endpoint".into(), src.clone());
    evidence.insert("dst_endpoint".into(), dst.clone());
    evidence.insert("connection_info".into(), tcp());
    if let Some(h) = v.get("http") {
        let mut url = Map::new();
        put(
            &mut url,
            "path",
            h.get("path").cloned().unwrap_or(Value::Null),
        );
        put(
            &mut url,
            "query_string",
            h.get("query").cloned().unwrap_or(Value::Null),
        );
        evidence.insert("url".into(), Value::Object(url));
    }
    e.insert("evidences".into(), json!([evidence]));
    e.insert("observables".into(), observables(&src, &dst));
    let mut u = unmapped_base(r);
    copy(
        &mut u,
        v,
        &["rule", "route", "policy", "http", "aggregated", "flow_id"],
    );
    u.insert("source".into(), src_rest);
    u.insert("destination".into(), dst_rest);
    e.insert("unmapped".into(), Value::Object(u));
    e
}

/// OCSF 1.3.0 HTTP Activity `activity_id` of a method.
fn http_activity(method: &str) -> (u32, &str) {
    match method {
        "CONNECT" => (1, "Connect"),
        "DELETE" => (2, "Delete"),
        "GET" => (3, "Get"),
        "HEAD" => (4, "Head"),
        "OPTIONS" => (5, "Options"),
        "POST" => (6, "Post"),
        "PUT" => (7, "Put"),
        "TRACE" => (8, "Trace"),
        other => (99, other),
    }
}

/// Splits a `Host` header into host name and port (`host:8080`, `[::1]:80`).
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((h, tail)) = rest.split_once(']')
    {
        return (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.split_once(':') {
        Some((h, p)) if !p.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (host, None),
        },
        _ => (host, None),
    }
}

fn http(r: &StoredRecord, v: &Value, vendor: &str) -> Map<String, Value> {
    let null = Value::Null;
    let h = v.get("http").unwrap_or(&null);
    let method = str_of(h, "method").unwrap_or("");
    let mut e = envelope(r, v, vendor, &HTTP_ACTIVITY, http_activity(method), 1);
    let (src, dst, src_rest, dst_rest) = endpoints(v);
    let mut url = Map::new();
    if let Some(host) = str_of(h, "host") {
        let (name, port) = split_host(host);
        url.insert("hostname".into(), json!(name));
        put(&mut url, "port", json!(port));
        if let Some(target) = str_of(h, "target") {
            url.insert("url_string".into(), json!(format!("http://{host}{target}")));
        }
    }
    put(
        &mut url,
        "path",
        h.get("path").cloned().unwrap_or(Value::Null),
    );
    put(
        &mut url,
        "query_string",
        h.get("query").cloned().unwrap_or(Value::Null),
    );
    url.insert("scheme".into(), json!("http"));
    let mut request = Map::new();
    request.insert("http_method".into(), json!(method));
    request.insert("url".into(), Value::Object(url));
    put(
        &mut request,
        "version",
        h.get("version").cloned().unwrap_or(Value::Null),
    );
    e.insert("http_request".into(), Value::Object(request));
    let mut response = Map::new();
    put(
        &mut response,
        "code",
        h.get("status").cloned().unwrap_or(Value::Null),
    );
    put(
        &mut response,
        "length",
        h.get("response_bytes").cloned().unwrap_or(Value::Null),
    );
    if let Some(l) = v.get("latency_ms").and_then(Value::as_f64)
        && response.contains_key("code")
    {
        response.insert("latency".into(), json!(l.round() as i64));
    }
    if !response.is_empty() {
        e.insert("http_response".into(), Value::Object(response));
    }
    e.insert("src_endpoint".into(), src.clone());
    e.insert("dst_endpoint".into(), dst.clone());
    e.insert("connection_info".into(), tcp());
    e.insert("observables".into(), observables(&src, &dst));
    let mut u = unmapped_base(r);
    copy(
        &mut u,
        v,
        &["observer", "flow_id", "completion", "latency_ms"],
    );
    copy(
        &mut u,
        h,
        &[
            "request_body_bytes",
            "response_body_bytes",
            "request_head_truncated",
            "response_head_truncated",
        ],
    );
    u.insert("source".into(), src_rest);
    u.insert("destination".into(), dst_rest);
    e.insert("unmapped".into(), Value::Object(u));
    e
}

fn flow(r: &StoredRecord, v: &Value, vendor: &str) -> Map<String, Value> {
    let activity = match str_of(v, "close") {
        Some("fin") => (2, "Close"),
        Some("rst") => (3, "Reset"),
        _ => (6, "Traffic"),
    };
    let mut e = envelope(r, v, vendor, &NETWORK_ACTIVITY, activity, 1);
    let (src, dst, src_rest, dst_rest) = endpoints(v);
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let mut traffic = Map::new();
    put(&mut traffic, "bytes_out", json!(n("bytes_to_server")));
    put(&mut traffic, "bytes_in", json!(n("bytes_to_client")));
    put(&mut traffic, "packets_out", json!(n("packets_to_server")));
    put(&mut traffic, "packets_in", json!(n("packets_to_client")));
    if let (Some(a), Some(b)) = (n("bytes_to_server"), n("bytes_to_client")) {
        traffic.insert("bytes".into(), json!(a.saturating_add(b)));
    }
    if let (Some(a), Some(b)) = (n("packets_to_server"), n("packets_to_client")) {
        traffic.insert("packets".into(), json!(a.saturating_add(b)));
    }
    e.insert("traffic".into(), Value::Object(traffic));
    e.insert("start_time".into(), json!(ms(r.time_ns)));
    put(
        &mut e,
        "end_time",
        json!(v.get("end_time").and_then(rfc3339_ms)),
    );
    e.insert("src_endpoint".into(), src.clone());
    e.insert("dst_endpoint".into(), dst.clone());
    e.insert("connection_info".into(), tcp());
    e.insert("observables".into(), observables(&src, &dst));
    let mut u = unmapped_base(r);
    copy(
        &mut u,
        v,
        &[
            "observer",
            "flow_id",
            "close",
            "http_exchanges",
            "transport",
        ],
    );
    u.insert("source".into(), src_rest);
    u.insert("destination".into(), dst_rest);
    e.insert("unmapped".into(), Value::Object(u));
    e
}

fn other(r: &StoredRecord, v: &Value, vendor: &str) -> Map<String, Value> {
    let (severity, message) = match r.kind.as_str() {
        "loss" => (
            3,
            format!(
                "{} lost at stage {} ({})",
                v.get("count").and_then(Value::as_u64).unwrap_or(0),
                str_of(v, "stage").unwrap_or("?"),
                str_of(v, "reason").unwrap_or("?"),
            ),
        ),
        "policy" => {
            let failed = str_of(v, "event") == Some("reload-failed");
            (
                if failed { 3 } else { 1 },
                format!(
                    "policy {} {}",
                    str_of(v, "file").unwrap_or("?"),
                    if failed {
                        "failed to reload; the last good policy stays in force"
                    } else {
                        "reloaded"
                    }
                ),
            )
        }
        "quarantine" => {
            let escaped = v.get("escaped").and_then(Value::as_u64).unwrap_or(0);
            (
                if escaped > 0 { 4 } else { 1 },
                format!(
                    "pod {}/{} quarantined ({}): {} attempts blocked, {} escaped",
                    str_of(v, "namespace").unwrap_or("?"),
                    str_of(v, "pod").unwrap_or("?"),
                    str_of(v, "mode").unwrap_or("?"),
                    v.get("attempts_blocked")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                    escaped,
                ),
            )
        }
        kind => (1, format!("{kind} record")),
    };
    let mut e = envelope(r, v, vendor, &BASE_EVENT, (99, &r.kind), severity);
    e.insert("message".into(), json!(message));
    if r.kind == "loss" {
        put(
            &mut e,
            "count",
            v.get("count").cloned().unwrap_or(Value::Null),
        );
        put(
            &mut e,
            "start_time",
            json!(v.get("window_start").and_then(rfc3339_ms)),
        );
        e.insert("end_time".into(), json!(ms(r.time_ns)));
    }
    let mut u = unmapped_base(r);
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            u.insert(k.clone(), val.clone());
        }
    }
    e.insert("unmapped".into(), Value::Object(u));
    e
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        sink::testdata, sink::testdata::BOOT, sink::testdata::NODE, sink::testdata::stored,
    };
    use monitor_record::{record::Record, violation::Violation};

    const T0_MS: i64 = 1_795_328_572_775;

    fn uid(seq: u64) -> String {
        format!("{NODE}:{BOOT}:{seq}")
    }

    fn common(e: &Value, seq: u64) {
        assert_eq!(e["metadata"]["version"], "1.3.0");
        assert_eq!(e["metadata"]["product"]["name"], "monitor");
        assert_eq!(e["metadata"]["product"]["vendor_name"], "acme");
        assert_eq!(e["metadata"]["uid"], uid(seq));
        assert_eq!(e["metadata"]["original_time"], testdata::T0);
        assert_eq!(e["metadata"]["sequence"], seq);
        assert_eq!(e["time"], T0_MS);
        assert_eq!(e["device"]["hostname"], NODE);
        let class = e["class_uid"].as_u64().unwrap();
        let activity = e["activity_id"].as_u64().unwrap();
        assert_eq!(e["type_uid"], class * 100 + activity);
    }

    fn endpoints_of(e: &Value) {
        assert_eq!(
            e["src_endpoint"],
            json!({"ip": "10.77.0.24", "port": 53202, "name": "svc-recommendation-engine-04",
                   "svc_name": "svc-recommendation-engine"})
        );
        assert_eq!(
            e["dst_endpoint"],
            json!({"ip": "10.77.0.10", "port": 80, "name": "svc-user-profile-service-0",
                   "svc_name": "svc-user-profile-service"})
        );
    }

    #[test]
    fn violation_is_a_detection_finding() {
        let r = stored(&testdata::violation(), 7, 41);
        assert_eq!(r.time_ns, testdata::T0_NS);
        let e = to_ocsf(&r, "acme");
        common(&e, 41);
        assert_eq!(e["class_uid"], 2004);
        assert_eq!(e["category_uid"], 2);
        assert_eq!(e["activity_id"], 1);
        assert_eq!(e["type_uid"], 200401);
        assert_eq!(e["severity_id"], 4);
        assert_eq!(e["severity"], "High");
        assert_eq!(e["count"], 1);
        assert_eq!(e["start_time"], T0_MS);
        assert_eq!(e["end_time"], T0_MS);
        assert!(e["message"].as_str().unwrap().contains("sensitive fields"));
        let fi = &e["finding_info"];
        assert_eq!(
            fi["uid"],
            format!(
                "{NODE}:sensitive-fields:vantage/svc-recommendation-engine-04:\
                 GET /internal/admin/v0/users/lookup:{}",
                testdata::T0
            )
        );
        assert_eq!(fi["title"], "Sensitive fields in query");
        assert_eq!(fi["desc"], e["message"]);
        assert_eq!(fi["types"], json!(["sensitive-fields"]));
        assert_eq!(fi["first_seen_time"], T0_MS);
        assert_eq!(fi["last_seen_time"], T0_MS);
        assert_eq!(
            fi["analytic"]["uid"],
            "/etc/monitor/policy.yaml:sensitive_fields[0]"
        );
        let ev = &e["evidences"][0];
        endpoints_of(ev);
        assert_eq!(ev["connection_info"]["protocol_name"], "tcp");
        assert_eq!(
            ev["url"],
            json!({"path": "/internal/admin/v0/users/lookup",
                   "query_string": "fields=ssn_last4,email&state=REDACTED"})
        );
        let u = &e["unmapped"];
        assert_eq!(u["rule"], "sensitive-fields");
        assert_eq!(u["http"]["method"], "GET");
        assert_eq!(u["http"]["status"], 200);
        assert_eq!(u["source"]["namespace"], "vantage");
        assert_eq!(u["source"]["service_account"], "recommender");
        assert_eq!(u["destination"]["kind"], "pod");
        assert_eq!(
            e["observables"][0],
            json!({"name": "src_endpoint.ip", "type_id": 2, "type": "IP Address",
                   "value": "10.77.0.24"})
        );
    }

    #[test]
    fn aggregated_violation_updates_the_same_finding() {
        let Record::Violation(first) = testdata::violation() else {
            unreachable!()
        };
        let mut summary: Violation = (*first).clone();
        summary.aggregated = true;
        summary.count = 12;
        summary.last_seen = "2026-11-22T06:23:10.5Z".into();
        summary.time = summary.last_seen.clone();
        let a = to_ocsf(&stored(&Record::Violation(first), 1, 1), "acme");
        let b = to_ocsf(&stored(&Record::Violation(Box::new(summary)), 2, 2), "acme");
        assert_eq!(
            (b["activity_id"].clone(), b["type_uid"].clone()),
            (json!(2), json!(200402))
        );
        assert_eq!(b["count"], 12);
        assert_eq!(b["finding_info"]["uid"], a["finding_info"]["uid"]);
        assert_eq!(b["finding_info"]["last_seen_time"], 1_795_328_590_500_i64);
        assert_eq!(b["time"], 1_795_328_590_500_i64);
    }

    #[test]
    fn http_is_http_activity() {
        let e = to_ocsf(&stored(&testdata::http(), 1, 5), "acme");
        common(&e, 5);
        assert_eq!(e["class_uid"], 4002);
        assert_eq!(e["category_uid"], 4);
        assert_eq!(e["activity_id"], 3);
        assert_eq!(e["activity_name"], "Get");
        assert_eq!(e["type_uid"], 400203);
        assert_eq!(e["severity_id"], 1);
        endpoints_of(&e);
        assert_eq!(
            e["http_request"],
            json!({
                "http_method": "GET",
                "version": "1.1",
                "url": {
                    "hostname": "10.77.0.10",
                    "path": "/internal/admin/v0/users/lookup",
                    "query_string": "fields=ssn_last4,email&state=CA",
                    "scheme": "http",
                    "url_string": "http://10.77.0.10/internal/admin/v0/users/lookup?fields=ssn_last4,email&state=CA"
                }
            })
        );
        assert_eq!(
            e["http_response"],
            json!({"code": 200, "length": 9850, "latency": 0})
        );
        assert_eq!(
            e["metadata"]["correlation_uid"],
            format!("{NODE}:flow:8812")
        );
        assert_eq!(e["unmapped"]["completion"], "complete");
        assert_eq!(e["unmapped"]["response_body_bytes"], 9612);
        assert_eq!(e["unmapped"]["latency_ms"], 0.41);
    }

    #[test]
    fn flow_is_network_activity() {
        let e = to_ocsf(&stored(&testdata::flow(), 1, 6), "acme");
        common(&e, 6);
        assert_eq!(e["class_uid"], 4001);
        assert_eq!(e["activity_id"], 2);
        assert_eq!(e["type_uid"], 400102);
        endpoints_of(&e);
        assert_eq!(
            e["traffic"],
            json!({"bytes_out": 512, "bytes_in": 10402, "packets_out": 6, "packets_in": 9,
                   "bytes": 10914, "packets": 15})
        );
        assert_eq!(
            e["connection_info"],
            json!({"protocol_name": "tcp", "protocol_num": 6})
        );
        assert_eq!(e["start_time"], T0_MS);
        assert_eq!(e["end_time"], 1_795_328_573_001_i64);
        assert_eq!(e["unmapped"]["close"], "fin");
    }

    #[test]
    fn other_kinds_are_base_events_with_the_record_unmapped() {
        let e = to_ocsf(&stored(&testdata::loss(), 1, 9), "acme");
        common(&e, 9);
        assert_eq!(
            (e["class_uid"].clone(), e["type_uid"].clone()),
            (json!(0), json!(99))
        );
        assert_eq!(e["activity_name"], "loss");
        assert_eq!(e["severity_id"], 3);
        assert_eq!(e["count"], 17);
        assert_eq!(e["start_time"], 1_795_328_571_775_i64);
        assert_eq!(e["unmapped"]["reason"], "ringbuf-full");
        assert_eq!(e["unmapped"]["boot_id"], BOOT);
    }

    #[test]
    fn invalid_json_is_kept_as_raw_data() {
        let mut r = stored(&testdata::loss(), 1, 9);
        r.json = "{not json".into();
        let e = to_ocsf(&r, "acme");
        assert_eq!(e["class_uid"], 0);
        assert_eq!(e["raw_data"], "{not json");
        assert_eq!(e["metadata"]["uid"], uid(9));
    }

    #[test]
    fn file_output_reads_its_uid_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ocsf.ndjson");
        let mut sink = OcsfSink::file(FileOptions::new(&path), "acme").unwrap();
        sink.write(&testdata::batch(1, 5)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        for (line, seq) in text.lines().zip(1..) {
            let e: Value = serde_json::from_str(line).unwrap();
            assert_eq!(e["metadata"]["uid"], uid(seq));
        }
        let key = sink.last_delivered().unwrap().unwrap();
        assert_eq!(key.to_string(), uid(5));
    }
}
