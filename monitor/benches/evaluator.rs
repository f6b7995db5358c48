//! How many exchanges per second the policy evaluator handles on one core, and how many
//! violation records per second it produces, with the Vantage policy: a mix of documented
//! traffic and the incident's lookups. Run: `cargo bench -p monitor --bench evaluator`.
//! Reports measured figures only; nothing is asserted.

use std::{hint::black_box, path::Path, sync::Arc, time::Instant};

use monitor_record::{peer::PeerKind, peer::Pod, record::Endpoint};

use monitor_policy::{Policy, aggregate::Aggregator, engine::Engine, engine::HttpInput};

fn pod(name: &str, ns: &str, svc: &str, ip: &str) -> Endpoint {
    let mut p = Pod::named(name, PeerKind::Pod);
    p.namespace = ns.into();
    p.service = Some(svc.into());
    Endpoint::new(Some(&Arc::new(p)), ip.parse().ok(), 80)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/vantage/policy.yaml");
    let policy = Policy::load(&root).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = Engine::new(policy, 0);
    let mut agg = Aggregator::new(60_000_000_000);
    let rec = pod(
        "svc-recommendation-engine-01",
        "vantage",
        "svc-recommendation-engine",
        "10.77.0.21",
    );
    let bad = pod(
        "svc-recommendation-engine-04",
        "vantage",
        "svc-recommendation-engine",
        "10.77.0.24",
    );
    let profile = pod(
        "svc-user-profile-service-0",
        "vantage",
        "svc-user-profile-service",
        "10.77.0.10",
    );
    let prefs = HttpInput {
        method: "GET",
        target: "/api/v2/users/preferences?user_id=1049",
        status: Some(200),
        request_body_bytes: Some(0),
        response_body_bytes: Some(1044),
    };
    let lookup = HttpInput {
        target: "/internal/admin/v0/users/lookup?fields=ssn_last4,email,phone,address_street,address_city,address_state,address_zip&state=CA&limit=48",
        response_body_bytes: Some(9612),
        ..prefs
    };
    for (label, violating_share) in [
        ("documented traffic only", 0usize),
        ("1 in 4 exchanges violating", 4),
        ("every exchange violating", 1),
    ] {
        let n = 400_000u64;
        let mut findings = 0u64;
        let mut records = 0u64;
        let t = Instant::now();
        for i in 0..n {
            let (src, h) = if violating_share > 0 && (i as usize).is_multiple_of(violating_share) {
                (&bad, lookup)
            } else {
                (&rec, prefs)
            };
            let now = 1_000_000_000 + i * 1_000;
            let v = engine.evaluate_http(src, &profile, h, now);
            for f in &v.findings {
                findings += 1;
                let rec = engine.violation(
                    f,
                    src,
                    &profile,
                    Some((h, &v.normalized)),
                    &v.route,
                    String::from("t"),
                    "node",
                    None,
                );
                if agg.offer("src", rec, now).is_some() {
                    records += 1;
                }
            }
            black_box(&v);
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{label:32} {:>10.0} exchanges/s  {:>10.0} findings/s (violation records built)  {records} immediate records",
            n as f64 / secs,
            findings as f64 / secs
        );
    }
}
