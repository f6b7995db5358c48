//! Realistic stored records for the sink tests, built from the agent's own record types (the
//! docs/records.md example) plus the collector's `seq`, `boot_id` and `node`.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;

use monitor_record::{
    exchange::Completion, exchange::Observer, peer::PeerKind, peer::Pod, record::Endpoint,
    record::FlowRecord, record::HttpFields, record::HttpRecord, record::LossRecord, record::Record,
    stored::StoredRecord, violation::PolicyRef, violation::Rule, violation::Severity,
    violation::Violation, violation::ViolationHttp,
};

pub const NODE: &str = "vantage-node-1";
pub const BOOT: &str = "5f0c2a9e-77d1-4c1e-9b55-0d6f1e2a3b4c";
pub const T0: &str = "2026-11-22T06:22:52.775828885Z";
/// [`T0`] in Unix ns.
pub const T0_NS: i64 = 1_795_328_572_775_828_885;

fn source() -> Endpoint {
    let mut p = Pod::named("svc-recommendation-engine-04", PeerKind::Pod);
    p.namespace = "vantage".into();
    p.service = Some("svc-recommendation-engine".into());
    p.service_account = Some("recommender".into());
    p.labels = BTreeMap::from([("app".into(), "recommendation-engine".into())]);
    let mut e = Endpoint::new(
        Some(&Arc::new(p)),
        Some("10.77.0.24".parse().unwrap()),
        53202,
    );
    e.cgroup_id = Some(9921);
    e
}

fn destination() -> Endpoint {
    let mut p = Pod::named("svc-user-profile-service-0", PeerKind::Pod);
    p.namespace = "vantage".into();
    p.service = Some("svc-user-profile-service".into());
    Endpoint::new(Some(&Arc::new(p)), Some("10.77.0.10".parse().unwrap()), 80)
}

/// The stored form of `rec`: its JSON with `seq` and `boot_id` added.
pub fn stored(rec: &Record, id: i64, seq: u64) -> StoredRecord {
    let mut v = serde_json::to_value(rec).unwrap();
    let m = v.as_object_mut().unwrap();
    m.insert("seq".into(), seq.into());
    m.insert("boot_id".into(), BOOT.into());
    m.entry("node").or_insert_with(|| NODE.into());
    let time = m["time"].as_str().unwrap();
    let t =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).unwrap();
    StoredRecord {
        id,
        node: NODE.into(),
        boot_id: BOOT.into(),
        seq,
        kind: rec.kind().into(),
        time_ns: i64::try_from(t.unix_timestamp_nanos()).unwrap(),
        json: serde_json::to_string(&Value::Object(m.clone())).unwrap(),
    }
}

/// A first-occurrence `sensitive-fields` violation (high) with `message` as given.
pub fn violation_with(message: &str) -> Record {
    Record::Violation(Box::new(Violation {
        rule: Rule::SensitiveFields,
        severity: Severity::High,
        time: T0.into(),
        node: NODE.into(),
        source: source(),
        destination: destination(),
        http: Some(ViolationHttp {
            method: "GET".into(),
            path: "/internal/admin/v0/users/lookup".into(),
            normalized_path: "/internal/admin/v0/users/lookup".into(),
            query: Some("fields=ssn_last4,email&state=REDACTED".into()),
            query_keys: vec!["fields".into(), "state".into()],
            status: Some(200),
            request_body_bytes: Some(0),
            response_body_bytes: Some(9612),
        }),
        route: "GET /internal/admin/v0/users/lookup".into(),
        policy: PolicyRef {
            file: "/etc/monitor/policy.yaml".into(),
            rule: "sensitive_fields[0]".into(),
            line: Some(42),
        },
        message: message.into(),
        count: 1,
        aggregated: false,
        first_seen: T0.into(),
        last_seen: T0.into(),
        flow_id: Some(8812),
    }))
}

/// The usual violation.
pub fn violation() -> Record {
    violation_with(
        "svc-recommendation-engine-04 asked svc-user-profile-service-0 for sensitive fields \
         ssn_last4, email",
    )
}

/// The docs/records.md `http` example.
pub fn http() -> Record {
    Record::Http(Box::new(HttpRecord {
        time: T0.into(),
        node: NODE.into(),
        observer: Observer::Client,
        flow_id: 8812,
        source: source(),
        destination: destination(),
        http: HttpFields {
            method: "GET".into(),
            target: "/internal/admin/v0/users/lookup?fields=ssn_last4,email&state=CA".into(),
            path: "/internal/admin/v0/users/lookup".into(),
            query: Some("fields=ssn_last4,email&state=CA".into()),
            host: Some("10.77.0.10".into()),
            version: "1.1".into(),
            status: Some(200),
            request_body_bytes: Some(0),
            response_bytes: Some(9850),
            response_body_bytes: Some(9612),
            request_head_truncated: false,
            response_head_truncated: false,
        },
        latency_ms: Some(0.41),
        completion: Completion::Complete,
    }))
}

/// The flow the `http` example was seen on.
pub fn flow() -> Record {
    Record::Flow(Box::new(FlowRecord {
        time: T0.into(),
        end_time: "2026-11-22T06:22:53.001000000Z".into(),
        node: NODE.into(),
        observer: Observer::Client,
        flow_id: 8812,
        source: source(),
        destination: destination(),
        transport: "tcp",
        bytes_to_server: 512,
        bytes_to_client: 10_402,
        packets_to_server: 6,
        packets_to_client: 9,
        close: "fin",
        http_exchanges: 1,
        proxy: false,
    }))
}

/// A kernel ring-buffer loss.
pub fn loss() -> Record {
    Record::Loss(LossRecord {
        time: T0.into(),
        node: NODE.into(),
        stage: "kernel",
        reason: "ringbuf-full",
        count: 17,
        window_start: "2026-11-22T06:22:51.775828885Z".into(),
    })
}

/// `n` stored records with ids and seqs from `first`, cycling through the kinds.
pub fn batch(first: u64, n: u64) -> Vec<StoredRecord> {
    (first..first + n)
        .map(|i| {
            let rec = match i % 4 {
                0 => violation(),
                1 => http(),
                2 => flow(),
                _ => loss(),
            };
            stored(&rec, i as i64, i)
        })
        .collect()
}
