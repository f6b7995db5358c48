//! `monitor policy suggest` on collector stores written by `monitor analyze` from captures
//! (the honest source of agent records: the agent's own pipeline): the exact draft (golden
//! files in `tests/fixtures/suggest/`; `UPDATE_GOLDEN=1` rewrites them), `monitor policy lint`
//! clean, and `monitor policy dry-run` of the draft over the same history firing on the review
//! items only. The second store has templated ids, a base policy, external destinations, calls
//! the base does not allow, and paths made to break out of YAML comments; its NetworkPolicies
//! are parsed back into `k8s_openapi` types.

mod support;

use std::{collections::BTreeMap, path::Path, process::Command};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize as _;
use serde_json::Value;

use support::{
    Capture, DAY0, LOOKUP, MONITOR, NS, PROFILE, analyze_into, incident, ip, repo, request,
    response, vantage,
};

const SINCE: &str = "2026-11-01T00:00:00Z";

/// Runs the binary; panics with its stderr unless it succeeds.
fn monitor(args: &[&str]) -> String {
    let out = Command::new(MONITOR)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run monitor");
    assert!(
        out.status.success(),
        "monitor {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compares `got` with the golden file `name` (rewritten with `UPDATE_GOLDEN=1`).
fn golden(name: &str, got: &str) {
    let path = repo().join("monitor/tests/fixtures/suggest").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if want != got {
        let first = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{} differs from the output at line {}:\n  want: {:?}\n  got:  {:?}\n--- whole output ---\n{got}",
            path.display(),
            first + 1,
            want.lines().nth(first),
            got.lines().nth(first)
        );
    }
}

/// The draft with the temporary paths replaced (`STORE`, `REPO`).
fn normalised(text: &str, store: &Path) -> String {
    text.replace(store.to_str().unwrap(), "STORE")
        .replace(repo().to_str().unwrap(), "REPO")
}

/// What fires under `policy` over `store`: (rule, source, destination, route, occurrences).
fn would_fire(policy: &Path, store: &Path) -> Vec<(String, String, String, String, u64)> {
    let out = monitor(&[
        "policy",
        "dry-run",
        "--policy",
        policy.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--since",
        SINCE,
        "--output",
        "json",
    ]);
    let d: Value = serde_json::from_str(&out).unwrap();
    let mut v: Vec<_> = ["new", "both"]
        .iter()
        .flat_map(|k| d[k].as_array().unwrap().clone())
        .map(|g| {
            (
                g["rule"].as_str().unwrap().to_owned(),
                g["source"].as_str().unwrap().to_owned(),
                g["destination"].as_str().unwrap().to_owned(),
                g["route"].as_str().unwrap().to_owned(),
                g["would_fire"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(
    rule: &str,
    src: &str,
    dst: &str,
    route: &str,
    n: u64,
) -> (String, String, String, String, u64) {
    (rule.into(), src.into(), dst.into(), route.into(), n)
}

fn lint(file: &Path) {
    let out = monitor(&["policy", "lint", file.to_str().unwrap()]);
    assert!(out.contains(": ok ("), "{out}");
}

#[test]
fn the_incident_gives_a_draft_that_lints_and_fires_only_on_its_review_items() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, store) = (
        dir.path().join("incident.pcap"),
        dir.path().join("store.db"),
    );
    incident().write(&pcap);
    analyze_into(&pcap, &store);
    let draft = dir.path().join("draft.yaml");
    let stdout = monitor(&[
        "policy",
        "suggest",
        "--store",
        store.to_str().unwrap(),
        "--since",
        SINCE,
        "-o",
        draft.to_str().unwrap(),
    ]);
    assert!(stdout.is_empty(), "the draft went to the file: {stdout}");
    let text = std::fs::read_to_string(&draft).unwrap();
    golden("incident.yaml", &normalised(&text, &store));
    // The same draft on stdout without -o.
    let again = monitor(&[
        "policy",
        "suggest",
        "--store",
        store.to_str().unwrap(),
        "--since",
        SINCE,
    ]);
    assert_eq!(again, text);
    lint(&draft);
    // The backdoor's lookup is the one review item; under the draft it is undocumented (the
    // draft has no sensitive fields or baselines: those are not drafted without a base), and
    // nothing else fires: the engines' preference calls are an allowed edge.
    assert_eq!(
        would_fire(&draft, &store),
        [row(
            "undocumented-endpoint",
            "vantage/svc-recommendation-engine-04",
            "svc-user-profile-service",
            LOOKUP,
            3
        )]
    );
}

/// Checkout, the API gateway and the monitoring stack over nine minutes of one day: normal
/// traffic in the first 300 s (the new-edge learning period), then what the base policy does
/// not document or allow.
fn second_capture() -> Capture {
    let mut cap = Capture::default();
    let t0 = DAY0 + 10 * 3600 * NS;
    let (checkout, gateway, scraper) = (ip("10.77.0.30"), ip("10.77.0.40"), ip("10.77.0.50"));
    let (profile, catalog, partner) = (ip(PROFILE), ip("10.77.0.20"), ip("10.77.200.1"));
    let mut port = 30_000u16;
    let mut at = |cap: &mut Capture, secs: u64, from, to, ex: &[(&[u8], &[u8])]| {
        port += 1;
        cap.exchange(t0 + secs * NS, (from, port), (to, 80), ex);
    };
    let ok = |n| response(200, n);
    // Two user ids, one route: /api/v2/users/{id}/preferences.
    for i in 0..10 {
        let (a, b) = (ok(1044), ok(1044));
        at(
            &mut cap,
            10 * i,
            checkout,
            profile,
            &[(&request("GET", b"/api/v2/users/1049/preferences"), &a)],
        );
        at(
            &mut cap,
            10 * i + 5,
            checkout,
            profile,
            &[(
                &request("GET", b"/api/v2/users/7/preferences?fields=theme"),
                &b,
            )],
        );
    }
    // The monitoring stack scrapes two services (documented for namespace monitoring).
    for i in 0..2 {
        at(
            &mut cap,
            20 + 60 * i,
            scraper,
            profile,
            &[(&request("GET", b"/internal/metrics"), &ok(900))],
        );
        at(
            &mut cap,
            22 + 60 * i,
            scraper,
            checkout,
            &[(&request("GET", b"/internal/metrics"), &ok(700))],
        );
    }
    // Checkout calls the partner API (an approved external), three times on one connection.
    let ping = request("GET", b"/v1/ping");
    let pong = ok(20);
    at(
        &mut cap,
        30,
        checkout,
        partner,
        &[(&ping, &pong), (&ping, &pong), (&ping, &pong)],
    );
    // The gateway lists products.
    for i in 0..3 {
        at(
            &mut cap,
            40 + 30 * i,
            gateway,
            catalog,
            &[(&request("GET", b"/api/v1/products?page=1"), &ok(4096))],
        );
    }
    // Strings made to break out of a YAML comment: percent-encoded newline and U+2028 in
    // paths (decoded by normalisation), a newline in a query key. (A raw U+2028 in the head
    // does not get this far: the agent's parser refuses it.)
    at(
        &mut cap,
        150,
        checkout,
        profile,
        &[(
            &request("GET", b"/api/v2/x%0Aversion:%202"),
            &response(404, 9),
        )],
    );
    at(
        &mut cap,
        160,
        checkout,
        profile,
        &[(
            &request("GET", b"/api/v2/y%E2%80%A8-%20x?%0Aversion:%203=1"),
            &response(404, 9),
        )],
    );
    // After the learning period: an undocumented internal path, a documented one the gateway
    // may not call, an edge the base does not allow, and a TLS flow to an unknown address.
    for i in 0..2 {
        at(
            &mut cap,
            400 + 10 * i,
            checkout,
            profile,
            &[(&request("GET", b"/internal/debug/vars"), &ok(300))],
        );
    }
    at(
        &mut cap,
        430,
        gateway,
        catalog,
        &[(&request("POST", b"/internal/admin/cache/flush"), &ok(16))],
    );
    at(
        &mut cap,
        440,
        gateway,
        profile,
        &[(&request("GET", b"/api/v2/users/7/preferences"), &ok(1044))],
    );
    let hello = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00];
    port += 1;
    cap.exchange(
        t0 + 450 * NS,
        (checkout, port),
        (ip("203.0.113.9"), 443),
        &[(&hello, &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])],
    );
    cap
}

#[test]
fn ids_are_templated_the_base_is_kept_and_network_policies_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, store) = (dir.path().join("second.pcap"), dir.path().join("store.db"));
    second_capture().write(&pcap);
    analyze_into(&pcap, &store);
    let (draft, netpol) = (
        dir.path().join("draft.yaml"),
        dir.path().join("netpol.yaml"),
    );
    let base = vantage("policy.yaml");
    monitor(&[
        "policy",
        "suggest",
        "--store",
        store.to_str().unwrap(),
        "--since",
        SINCE,
        "--base",
        base.to_str().unwrap(),
        "-o",
        draft.to_str().unwrap(),
        "--networkpolicy",
        netpol.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&draft).unwrap();
    golden("second.yaml", &normalised(&text, &store));
    // Both user ids are one route, with its two paths as examples.
    let templated: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("/api/v2/users/{id}/preferences"))
        .collect();
    assert_eq!(templated.len(), 1, "{templated:?}");
    assert!(
        text.contains("/api/v2/users/1049/preferences, /api/v2/users/7/preferences"),
        "{text}"
    );
    // No recorded string ended a comment: every non-comment line is the policy's own.
    for line in text.lines() {
        assert!(line.is_ascii(), "{line:?}");
        assert!(
            !line.starts_with("version: 2") && !line.starts_with("- x"),
            "{line}"
        );
    }
    assert!(text.contains("/api/v2/x\\u{a}version: 2"), "{text}");
    assert!(text.contains("/api/v2/y\\u{2028}- x"), "{text}");
    assert!(text.contains("query keys: \\u{a}version: 3"), "{text}");
    lint(&draft);
    // Under the draft only the review items fire: the undocumented path, the documented one
    // called by a caller the base does not allow, the edge and the external address the base
    // does not allow, and the base's new-edge baseline on those same (caller, route)s.
    assert_eq!(
        would_fire(&draft, &store),
        [
            row(
                "cross-service-internal",
                "vantage/svc-api-gateway-0",
                "svc-product-catalog",
                "/internal/admin/cache/flush",
                1
            ),
            row(
                "egress-not-allowed",
                "vantage/svc-api-gateway-0",
                "svc-user-profile-service",
                "/api/v2/users/{id}/preferences",
                1
            ),
            row(
                "egress-not-allowed",
                "vantage/svc-checkout-0",
                "203.0.113.9",
                "tcp/443",
                1
            ),
            row(
                "new-edge",
                "vantage/svc-api-gateway-0",
                "svc-product-catalog",
                "/internal/admin/cache/flush",
                1
            ),
            row(
                "new-edge",
                "vantage/svc-api-gateway-0",
                "svc-user-profile-service",
                "/api/v2/users/{id}/preferences",
                1
            ),
            row(
                "new-edge",
                "vantage/svc-checkout-0",
                "svc-user-profile-service",
                "/internal/debug/vars",
                1
            ),
            row(
                "undocumented-endpoint",
                "vantage/svc-checkout-0",
                "svc-user-profile-service",
                "/internal/debug/vars",
                2
            ),
        ]
    );

    // The NetworkPolicies: exact text, and every document a NetworkPolicy.
    let np = std::fs::read_to_string(&netpol).unwrap();
    golden("second-netpol.yaml", &np);
    let docs: Vec<NetworkPolicy> = serde_yaml_ng::Deserializer::from_str(&np)
        .map(|d| NetworkPolicy::deserialize(d).unwrap())
        .collect();
    let names: Vec<(String, String)> = docs
        .iter()
        .map(|p| {
            (
                p.metadata.namespace.clone().unwrap(),
                p.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("monitoring", "default-deny-ingress"),
        ("monitoring", "default-deny-egress"),
        ("monitoring", "allow-dns"),
        ("vantage", "default-deny-ingress"),
        ("vantage", "default-deny-egress"),
        ("vantage", "allow-dns"),
        ("monitoring", "allow-prometheus-to-svc-checkout-egress"),
        ("vantage", "allow-prometheus-to-svc-checkout-ingress"),
        (
            "monitoring",
            "allow-prometheus-to-svc-user-profile-service-egress",
        ),
        (
            "vantage",
            "allow-prometheus-to-svc-user-profile-service-ingress",
        ),
        (
            "vantage",
            "allow-svc-api-gateway-to-svc-product-catalog-egress",
        ),
        (
            "vantage",
            "allow-svc-api-gateway-to-svc-product-catalog-ingress",
        ),
        (
            "vantage",
            "allow-svc-checkout-to-svc-user-profile-service-egress",
        ),
        (
            "vantage",
            "allow-svc-checkout-to-svc-user-profile-service-ingress",
        ),
        ("vantage", "allow-svc-checkout-to-partner-api-egress"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .to_vec();
    assert_eq!(names, want);
    let by_name: BTreeMap<&str, &NetworkPolicy> = docs
        .iter()
        .skip(6)
        .map(|p| (p.metadata.name.as_deref().unwrap(), p))
        .collect();
    // No default deny is a quarantine for the agent: none denies both directions at once.
    for p in &docs[..6] {
        let types = p.spec.as_ref().unwrap().policy_types.clone().unwrap();
        assert_eq!(types.len(), 1, "{p:?}");
    }
    let e = by_name["allow-svc-checkout-to-svc-user-profile-service-egress"]
        .spec
        .as_ref()
        .unwrap();
    let labels = |l: &[(&str, &str)]| -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        e.pod_selector.as_ref().unwrap().match_labels,
        Some(labels(&[("app", "svc-checkout"), ("tier", "frontend-api")]))
    );
    let rule = &e.egress.as_ref().unwrap()[0];
    let peer = &rule.to.as_ref().unwrap()[0];
    assert_eq!(
        peer.pod_selector.as_ref().unwrap().match_labels,
        Some(labels(&[
            ("app", "svc-user-profile-service"),
            ("data", "pii"),
            ("tier", "backend")
        ]))
    );
    assert_eq!(
        peer.namespace_selector.as_ref().unwrap().match_labels,
        Some(labels(&[("kubernetes.io/metadata.name", "vantage")]))
    );
    let ports = rule.ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        ports[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );
    let x = by_name["allow-svc-checkout-to-partner-api-egress"]
        .spec
        .as_ref()
        .unwrap();
    let block = x.egress.as_ref().unwrap()[0].to.as_ref().unwrap()[0]
        .ip_block
        .as_ref()
        .unwrap();
    assert_eq!(block.cidr, "10.77.200.1/32");
}
