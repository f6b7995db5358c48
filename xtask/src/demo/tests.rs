//! Unit tests of the demo's pure parts: record lines, the policy edit, the checklist, the
//! violations table.

use std::path::PathBuf;

use serde_json::Value;

use super::run::take_policy_arg;
use super::*;

#[test]
fn describes_nested_http_record() {
    let v: Value = serde_json::from_str(
        r#"{"kind":"http","source":{"pod":"svc-recommendation-engine-04","ip":"10.77.0.24"},
            "destination":{"pod":"svc-user-profile-service-0","port":80},
            "http":{"method":"GET","path":"/internal/admin/v0/users/lookup","query":"state=CA",
                    "status":200,"response_bytes":9612}}"#,
    )
    .unwrap();
    assert_eq!(
        describe_record(&v),
        "http   svc-recommendation-engine-04 → svc-user-profile-service-0:80  GET \
         /internal/admin/v0/users/lookup?state=CA  200  9612 B"
    );
}

#[test]
fn describes_flat_and_loss_records() {
    let v: Value = serde_json::from_str(
        r#"{"kind":"flow","src":"10.77.0.1:5000","dst":"10.77.0.2:80","bytes":10}"#,
    )
    .unwrap();
    assert_eq!(
        describe_record(&v),
        "flow   10.77.0.1:5000 → 10.77.0.2:80  10 B"
    );
    let v: Value = serde_json::from_str(
        r#"{"kind":"flow","observer":"client","source":{"kind":"pod","pod":"a","port":4000},
            "destination":{"kind":"external","pod":"partner-api","port":80},
            "bytes_to_server":120,"bytes_to_client":900,"close":"fin"}"#,
    )
    .unwrap();
    assert_eq!(
        describe_record(&v),
        "flow   (client) a:4000 → partner-api:80  120 B → / ← 900 B  (fin)"
    );
    let v: Value = serde_json::from_str(r#"{"kind":"loss","stage":"ringbuf","count":3}"#).unwrap();
    assert!(describe_record(&v).starts_with("loss   {"));
}

#[test]
fn quarantine_edit_replaces_only_the_section_and_keeps_line_numbers() {
    let policy =
        std::fs::read_to_string(crate::repo_root().join("deploy/examples/vantage/policy.yaml"))
            .unwrap();
    let edited = quarantine_policy(&policy, QUARANTINED);
    assert_eq!(edited.lines().count(), policy.lines().count());
    assert!(edited.contains(
        "quarantine:\n  mode: enforce\n  pods: [vantage/svc-recommendation-engine-04]\n  network_policies: true\n\n"
    ));
    let changed: Vec<(&str, &str)> = policy
        .lines()
        .zip(edited.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        [
            ("  mode: observe", "  mode: enforce"),
            (
                "  pods: []",
                "  pods: [vantage/svc-recommendation-engine-04]"
            )
        ]
    );
    // No section: appended. A flow mapping: replaced.
    assert_eq!(
        quarantine_policy("version: 1", "a/b"),
        "version: 1\nquarantine:\n  mode: enforce\n  pods: [a/b]\n  network_policies: true\n"
    );
    assert_eq!(
        quarantine_policy(
            "version: 1\nquarantine: {pods: [x]}\naggregation: {}\n",
            "a/b"
        ),
        "version: 1\nquarantine:\n  mode: enforce\n  pods: [a/b]\n  network_policies: true\naggregation: {}\n"
    );
}

#[test]
fn policy_argument_is_taken_out_of_the_agent_arguments() {
    let args = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        take_policy_arg(&args(&["--policy", "p.yaml", "--idle-timeout", "5s"])),
        (
            Some(PathBuf::from("p.yaml")),
            args(&["--idle-timeout", "5s"])
        )
    );
    assert_eq!(
        take_policy_arg(&args(&["--policy=q.yaml"])),
        (Some(PathBuf::from("q.yaml")), vec![])
    );
    assert_eq!(take_policy_arg(&args(&["-v"])), (None, args(&["-v"])));
}

fn rec(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn checklist_passes_on_the_incident_and_names_what_is_missing() {
    let src = r#"{"kind":"pod","pod":"svc-recommendation-engine-04","service":"svc-recommendation-engine"}"#;
    let viol = |seq: u32, rule: &str, flow: u32, agg: bool| {
        rec(&format!(
            r#"{{"seq":{seq},"kind":"violation","rule":"{rule}","severity":"critical","source":{src},
               "destination":{{"pod":"svc-user-profile-service-0"}},"flow_id":{flow},"count":1,
               "aggregated":{agg},"route":"{LOOKUP_ROUTE}","message":"m"}}"#
        ))
    };
    let mut records = vec![
        viol(1, "undocumented-endpoint", 7, false),
        viol(2, "sensitive-fields", 7, false),
        viol(3, "response-size-anomaly", 7, false),
        rec(&format!(
            r#"{{"seq":4,"kind":"http","source":{src},"flow_id":7,
               "http":{{"path":"{LOOKUP_ROUTE}","query":"fields=ssn_last4&state=CA"}}}}"#
        )),
        rec(r#"{"seq":5,"kind":"policy","event":"reloaded"}"#),
        viol(6, "quarantine-breach", 0, false),
        rec(
            r#"{"seq":7,"kind":"quarantine","namespace":"vantage","pod":"svc-recommendation-engine-04",
                "mode":"enforce","attempts_blocked":6,"escaped":0}"#,
        ),
    ];
    let checks = checklist(&records);
    assert_eq!(checks.len(), 5);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    assert!(checks[0].text.contains("?state=CA"), "{}", checks[0].text);

    // A violation from another pod, and a lookup that got through after the quarantine.
    records.push(rec(
        r#"{"seq":8,"kind":"violation","rule":"egress-not-allowed","source":{"pod":"svc-checkout-0"}}"#,
    ));
    records.push(rec(&format!(
        r#"{{"seq":9,"kind":"http","source":{src},"flow_id":9,"http":{{"path":"{LOOKUP_ROUTE}"}}}}"#
    )));
    let checks = checklist(&records);
    let failed: Vec<usize> = (0..checks.len()).filter(|&i| !checks[i].ok).collect();
    assert_eq!(failed, [3, 4], "{checks:#?}");
    assert!(
        checks[3]
            .text
            .contains("seq 8 egress-not-allowed from svc-checkout-0")
    );
}

#[test]
fn violations_table_shortens_messages() {
    let v = rec(
        r#"{"seq":12,"kind":"violation","rule":"quarantine-breach","severity":"critical","count":5,
            "aggregated":true,"route":"tcp/80",
            "source":{"pod":"svc-recommendation-engine-04","service":"svc-recommendation-engine"},
            "destination":{"pod":"svc-user-profile-service-0"},
            "message":"traffic from a quarantined pod (pod vantage/svc-recommendation-engine-04 is listed; mode enforce): svc-recommendation-engine-04 (svc-recommendation-engine) → svc-user-profile-service-0 (svc-user-profile-service): connection attempt to port 80 blocked in the kernel (repeated 5 more times in this window)"}"#,
    );
    let t = violations_table(&[v]);
    let row = t.lines().nth(1).unwrap();
    assert!(row.starts_with("  12  quarantine-breach  critical  +5 (agg.)  svc-recommendation-engine-04 → svc-user-profile-service-0  tcp/80"), "{t}");
    assert!(
        row.ends_with("connection attempt to port 80 blocked in the kernel"),
        "{t}"
    );
}
