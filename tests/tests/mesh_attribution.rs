//! Tier-3 lab tests of the agent inside an Istio-like mesh (the lab's mesh mode,
//! `xtask::lab::mesh`): every app connection goes through its pod's haproxy sidecar (uid 1337,
//! in the pod's cgroup), pods talk mTLS, and the plaintext HTTP the kernel programs can read
//! only exists on each pod's `lo` (app → 127.0.0.1:15001 in the client pod, 127.0.0.6 or
//! 127.0.0.1 → the app in the server pod). These tests state what the agent must report there:
//! the same as without the mesh. One `http` record per request, from the client pod to the
//! server pod's service on port 80, and the policy applied to that pair; the proxies' own legs
//! (15001, 15006, 127.0.0.6, the mTLS connection) give no `http` record and no violation.
//!
//! NOT IN CI YET: they fail until mesh attribution lands in the agent. The target is built only
//! with the `mesh-attribution` feature (tests/Cargo.toml), so `cargo xtask test` (and vm-test)
//! skip it; it becomes part of CI, by removing `required-features` from its `[[test]]` entry,
//! when the agent passes it. Run it with:
//!
//! ```sh
//! cargo build --release -p monitor
//! MONITOR_BIN=$PWD/target/release/monitor cargo test --release -p monitor-tests \
//!     --features mesh-attribution --test mesh_attribution -- --test-threads=1 --nocapture
//! ```
//!
//! Run as root. Each test prints every `http`, `flow` and `violation` record the agent wrote,
//! compactly, before asserting.

use monitor_tests::{Agent, of_kind, require_root, run_in, vantage};
use serde_json::Value;
use xtask::lab::{Lab, LabOptions, Mesh};

const CLIENT: &str = "svc-recommendation-engine-04";
const SERVER: &str = "svc-user-profile-service-0";
/// Documented and allowed for the recommendation engines (the Vantage policy), 1,044 bytes.
const DOCUMENTED: &str = "/api/v2/users/preferences";
const DOCUMENTED_TARGET: &str = "/api/v2/users/preferences?user_id=1049";
/// The backdoor's undocumented lookup (docs/design.md#the-problem), 9,612 bytes.
const LOOKUP: &str = "/internal/admin/v0/users/lookup";
const LOOKUP_TARGET: &str =
    "/internal/admin/v0/users/lookup?fields=ssn_last4,email,phone,address_*&state=CA&limit=48";

fn mesh_lab(prefix: &str, mesh: Mesh) -> Lab {
    require_root();
    let _ = xtask::lab::down_from_state(prefix);
    Lab::up_with_mesh(
        &LabOptions {
            inventory: vantage("inventory.yaml"),
            prefix: prefix.to_owned(),
            cgroup_mount: None,
        },
        Some(mesh),
    )
    .unwrap_or_else(|e| panic!("mesh lab {prefix} ({mesh}) failed to start: {e:#}"))
}

/// `namespace/pod(service) ip:port`, or the endpoint's kind and note when it is not a pod.
fn endpoint(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
    let who = if e["pod"].is_string() {
        format!("{}/{}({})", s("namespace"), s("pod"), s("service"))
    } else {
        format!(
            "[{}{}]",
            s("kind"),
            e["note"]
                .as_str()
                .map_or(String::new(), |n| format!(": {n}"))
        )
    };
    format!("{who} {}:{}", s("ip"), e["port"])
}

/// One line per http, flow and violation record.
fn summary(records: &[Value]) -> String {
    let mut out = String::new();
    for r in records {
        let kind = r["kind"].as_str().unwrap_or("?");
        let what = match kind {
            "http" => format!(
                "observer={} {} {} → {}",
                r["observer"].as_str().unwrap_or("-"),
                r["http"]["method"].as_str().unwrap_or("-"),
                r["http"]["target"].as_str().unwrap_or("-"),
                r["http"]["status"]
            ),
            "flow" => format!(
                "observer={} close={} http_exchanges={}",
                r["observer"].as_str().unwrap_or("-"),
                r["close"].as_str().unwrap_or("-"),
                r["http_exchanges"]
            ),
            "violation" => format!(
                "{} ({}) route={}",
                r["rule"].as_str().unwrap_or("-"),
                r["severity"].as_str().unwrap_or("-"),
                r["route"].as_str().unwrap_or("-")
            ),
            _ => continue,
        };
        out.push_str(&format!(
            "  {kind:<9} {} ⇒ {}  {what}\n",
            endpoint(&r["source"]),
            endpoint(&r["destination"])
        ));
    }
    out
}

/// The client pod and the server pod's service on port 80, as the records must name them.
fn assert_pair(r: &Value, lab: &Lab, what: &str) {
    let src = &r["source"];
    let dst = &r["destination"];
    let ctx = || format!("{what}: {}", serde_json::to_string(r).unwrap_or_default());
    assert_eq!(src["kind"], "pod", "{}", ctx());
    assert_eq!(src["namespace"], "vantage", "{}", ctx());
    assert_eq!(src["pod"], CLIENT, "{}", ctx());
    assert_eq!(src["service"], "svc-recommendation-engine", "{}", ctx());
    assert_eq!(
        src["ip"],
        lab.pod_ip(CLIENT).unwrap().to_string(),
        "{}",
        ctx()
    );
    assert_eq!(dst["kind"], "pod", "{}", ctx());
    assert_eq!(dst["namespace"], "vantage", "{}", ctx());
    assert_eq!(dst["pod"], SERVER, "{}", ctx());
    assert_eq!(dst["service"], "svc-user-profile-service", "{}", ctx());
    assert_eq!(
        dst["ip"],
        lab.pod_ip(SERVER).unwrap().to_string(),
        "{}",
        ctx()
    );
    assert_eq!(dst["port"], 80, "{}", ctx());
}

/// Both requests from the client pod through the mesh, with the Vantage policy; the exact
/// records expected.
fn attribution(prefix: &str, style: Mesh) {
    let lab = mesh_lab(prefix, style);
    let policy = vantage("policy.yaml");
    let agent = Agent::start_with(&lab, &["--policy", policy.to_str().unwrap()]).unwrap();
    let server = lab.pod_ip(SERVER).unwrap();
    for (target, bytes) in [(DOCUMENTED_TARGET, "1044"), (LOOKUP_TARGET, "9612")] {
        let got = run_in(
            &lab,
            CLIENT,
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
                &format!("http://{server}{target}"),
            ],
        );
        assert_eq!(got, format!("200 {bytes}"), "{style}: {target}");
    }
    let records = agent.stop().unwrap();
    let summary = summary(&records);
    println!("mesh {style}: what the agent wrote (source ⇒ destination):\n{summary}");

    let http = of_kind(&records, "http");
    assert_eq!(
        http.len(),
        2,
        "{style}: exactly one http record per request, none for the proxies' legs:\n{summary}"
    );
    for (r, (path, bytes)) in http.iter().zip([(DOCUMENTED, 1044), (LOOKUP, 9612)]) {
        assert_pair(r, &lab, "http");
        assert_eq!(r["http"]["path"], path, "{style}:\n{summary}");
        assert_eq!(r["http"]["status"], 200, "{style}:\n{summary}");
        assert_eq!(
            r["http"]["response_body_bytes"], bytes,
            "{style}:\n{summary}"
        );
    }

    // The lookup raises what it raises without a mesh (tests/tests/incident.rs): undocumented
    // and sensitive fields, from the client pod to the server; the documented call nothing.
    let violations = of_kind(&records, "violation");
    let mut rules: Vec<&str> = violations
        .iter()
        .filter_map(|v| v["rule"].as_str())
        .collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        ["sensitive-fields", "undocumented-endpoint"],
        "{style}: the violations, and only those:\n{summary}"
    );
    for v in &violations {
        assert_pair(v, &lab, "violation");
        assert_eq!(v["route"], LOOKUP, "{style}:\n{summary}");
        assert_eq!(v["http"]["path"], LOOKUP, "{style}:\n{summary}");
    }
    let losses = of_kind(&records, "loss");
    assert!(losses.is_empty(), "{style}: losses {losses:?}");
}

#[test]
fn mesh_attribution_istio() {
    attribution("mshat1", Mesh::Istio);
}

#[test]
fn mesh_attribution_istio_legacy() {
    attribution("mshat2", Mesh::IstioLegacy);
}
