//! Tier-3 lab tests of the incident (docs/design.md#the-problem) as `cargo xtask demo` replays it, with exact
//! counts: the Vantage inventory, a copy of the Vantage policy in the lab's run directory (the
//! tests edit it, as an operator would), real curl clients in the pods, the real agent.
//!
//! The agent reports the first occurrence of each (source pod, rule, route) at once and the
//! repeats within its 60 s window as one `aggregated` record with their `count` when it stops
//! (every test here is shorter than a window).
//!
//! Run as root (`cargo xtask test` runs lab tests one at a time).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use monitor_tests::{Agent, lab, of_kind, rawclient, run_in, vantage};
use serde_json::Value;
use xtask::{
    demo::{
        BACKDOOR_POD, LOOKUP_FIELDS, LOOKUP_LIMIT, LOOKUP_ROUTE, QUARANTINED, lookup_target,
        quarantine_policy, replace_file,
    },
    inventory::ServerKind,
    lab::Lab,
};

const RECO: [&str; 3] = [
    "svc-recommendation-engine-01",
    "svc-recommendation-engine-02",
    "svc-recommendation-engine-03",
];
const USER_PROFILE: &str = "svc-user-profile-service-0";
const CATALOG: &str = "svc-product-catalog-0";
const CHECKOUT: &str = "svc-checkout-0";
const GATEWAY: &str = "svc-api-gateway-0";
const SCRAPER: &str = "monitoring-scraper-0";
const PARTNER: &str = "partner-api";
/// curl's exit code for "operation timed out".
const CURL_TIMEOUT: i32 = 28;
/// How long the agent may take to report a policy edit (it checks the file every second).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// After the `reloaded` record, the kernel's quarantine set is updated within the next tick.
const QUARANTINE_SETTLE: Duration = Duration::from_millis(1500);

/// A Vantage lab and the path of its policy copy (in the lab's run dir, removed with the lab).
fn vantage_lab(prefix: &str) -> (Lab, PathBuf, String) {
    let lab = lab(prefix, &vantage("inventory.yaml"));
    let text = std::fs::read_to_string(vantage("policy.yaml")).unwrap();
    let policy = lab.run_dir().join("policy.yaml");
    std::fs::write(&policy, &text).unwrap();
    (lab, policy, text)
}

fn start(lab: &Lab, policy: &Path) -> Agent {
    Agent::start_with(lab, &["--policy", policy.to_str().unwrap()]).unwrap()
}

fn url(lab: &Lab, to: &str, target: &str) -> String {
    format!("http://{}{target}", lab.pod_ip(to).unwrap())
}

/// One curl from `from` over `urls` (one connection per host, kept alive); returns
/// `status bytes` per transfer and asserts every status is 200.
fn curl_ok(lab: &Lab, from: &str, extra: &[&str], urls: &[String]) -> Vec<String> {
    let mut args = vec!["-sS", "--max-time", "10"];
    args.extend(extra);
    for u in urls {
        args.extend([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}\\n",
            u,
        ]);
    }
    let out = run_in(lab, from, "curl", &args);
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), urls.len(), "{from}: {urls:?} → {out}");
    for (l, u) in lines.iter().zip(urls) {
        assert!(l.starts_with("200 "), "{from}: {u} → {l}");
    }
    lines
}

/// The backdoor's lookup for `state`, on its own connection; asserts what it got.
fn lookup(lab: &Lab, state: &str) {
    let got = curl_ok(
        lab,
        BACKDOOR_POD,
        &[],
        &[url(lab, USER_PROFILE, &lookup_target(state))],
    );
    assert_eq!(got, ["200 9612"]);
}

/// One round of the demo's documented, allowed traffic; returns the number of requests.
/// `prefs` preference calls from each of replicas 01-03 (one connection each), plus one over
/// IPv6 from 02; checkout reads preferences and calls the partner API; the gateway lists
/// products; the scraper probes and scrapes every service; every service probes itself; the
/// catalog flushes its own cache.
fn legit_round(lab: &Lab, round: usize, prefs: usize) -> usize {
    let mut n = 0;
    for (r, from) in RECO.iter().enumerate() {
        let urls: Vec<String> = (0..prefs)
            .map(|i| {
                url(
                    lab,
                    USER_PROFILE,
                    &format!(
                        "/api/v2/users/preferences?user_id={}",
                        1000 * r + 10 * round + i
                    ),
                )
            })
            .collect();
        n += curl_ok(lab, from, &[], &urls).len();
    }
    let v6 = lab
        .pod_ipv6(USER_PROFILE)
        .unwrap()
        .expect("user-profile has IPv6");
    let u = format!("http://[{v6}]/api/v2/users/preferences?user_id={round}");
    n += curl_ok(lab, RECO[1], &[], &[u]).len();

    let mut urls: Vec<String> = (0..4)
        .map(|i| {
            url(
                lab,
                USER_PROFILE,
                &format!("/api/v2/users/preferences?user_id={}", 4000 + i),
            )
        })
        .collect();
    urls.extend((0..2).map(|_| url(lab, PARTNER, "/v1/ping")));
    n += curl_ok(lab, CHECKOUT, &[], &urls).len();

    let urls: Vec<String> = (1..=2)
        .map(|p| url(lab, CATALOG, &format!("/api/v1/products?page={p}")))
        .collect();
    n += curl_ok(lab, GATEWAY, &[], &urls).len();

    let servers = [USER_PROFILE, CATALOG, CHECKOUT, GATEWAY];
    let urls: Vec<String> = servers
        .iter()
        .flat_map(|s| {
            [
                url(lab, s, "/internal/health"),
                url(lab, s, "/internal/metrics"),
            ]
        })
        .collect();
    n += curl_ok(lab, SCRAPER, &[], &urls).len();
    for s in servers {
        n += curl_ok(lab, s, &[], &[url(lab, s, "/internal/health")]).len();
    }

    let flush = url(lab, CATALOG, "/internal/admin/cache/flush");
    let got = curl_ok(lab, CATALOG, &["--data", ""], &[flush.clone(), flush]);
    assert_eq!(got, ["200 16", "200 16"]);
    n + got.len()
}

fn violations(records: &[Value]) -> Vec<&Value> {
    of_kind(records, "violation")
}

/// (rule, severity, source pod, count, aggregated) of each violation, sorted.
fn summary(records: &[Value]) -> Vec<(String, String, String, u64, bool)> {
    let mut v: Vec<_> = violations(records)
        .iter()
        .map(|v| {
            (
                v["rule"].as_str().unwrap_or("?").to_owned(),
                v["severity"].as_str().unwrap_or("?").to_owned(),
                v["source"]["pod"].as_str().unwrap_or("?").to_owned(),
                v["count"].as_u64().unwrap_or(0),
                v["aggregated"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(
    rule: &str,
    severity: &str,
    count: u64,
    aggregated: bool,
) -> (String, String, String, u64, bool) {
    (
        rule.to_owned(),
        severity.to_owned(),
        BACKDOOR_POD.to_owned(),
        count,
        aggregated,
    )
}

fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap()
}

fn compact(vs: &[&Value]) -> String {
    vs.iter()
        .map(|v| serde_json::to_string(v).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits for the `policy` record of an edit made after `records_before` records.
fn policy_event(agent: &mut Agent, records_before: usize) -> Value {
    agent
        .wait_for(
            "`policy` record for the edit",
            records_before,
            RELOAD_TIMEOUT,
            |v| v["kind"] == "policy",
        )
        .unwrap()
}

/// The demo's scenario, with exact counts: 2 lookups before the size baseline exists, 4 after,
/// then the quarantine (enforce) and 3 blocked attempts.
#[test]
fn incident_replay_gives_exactly_the_expected_violations() {
    let (lab, policy, text) = vantage_lab("mli1");
    let mut agent = start(&lab, &policy);

    // 13 preference calls from the recommendation engines: fewer than min_samples (20).
    legit_round(&lab, 0, 4);
    for state in ["CA", "NY"] {
        lookup(&lab, state);
    }
    // 13 more: the caller's baseline (1,044 B) exists now; 9,612 B is 9.2x it.
    legit_round(&lab, 1, 4);
    for state in ["TX", "FL", "IL", "PA"] {
        lookup(&lab, state);
    }

    let before = agent.records().len();
    replace_file(&policy, &quarantine_policy(&text, QUARANTINED)).unwrap();
    let reloaded = policy_event(&mut agent, before);
    assert_eq!(reloaded["event"], "reloaded", "{reloaded}");
    assert_eq!(reloaded["reload_failures"], 0);
    assert_eq!(reloaded["file"], policy.display().to_string());
    std::thread::sleep(QUARANTINE_SETTLE);

    // The quarantined pod keeps trying: its SYN and the retransmission 1 s later are dropped,
    // and curl gives up at 2 s. Two blocked attempts each.
    for state in ["CA", "NY", "TX"] {
        let mut cmd = lab.command(BACKDOOR_POD, "curl").unwrap();
        cmd.args(["-sS", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(url(&lab, USER_PROFILE, &lookup_target(state)));
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(CURL_TIMEOUT),
            "the quarantined pod's lookup must time out: {out:?}"
        );
    }
    let records = agent.stop().unwrap();
    let vs = violations(&records);
    let reloaded_seq = seq(records
        .iter()
        .find(|r| r["kind"] == "policy")
        .expect("the policy record"));

    // The exact set of violations.
    let mut want = vec![
        row("undocumented-endpoint", "critical", 1, false),
        row("undocumented-endpoint", "critical", 5, true),
        row("sensitive-fields", "critical", 1, false),
        row("sensitive-fields", "critical", 5, true),
        row("response-size-anomaly", "high", 1, false),
        row("response-size-anomaly", "high", 3, true),
        row("quarantine-breach", "critical", 1, false),
        row("quarantine-breach", "critical", 5, true),
    ];
    want.sort();
    assert_eq!(summary(&records), want, "violations:\n{}", compact(&vs));
    assert_eq!(
        of_kind(&records, "policy").len(),
        1,
        "one policy event: {:#?}",
        of_kind(&records, "policy")
    );

    // The lookups' evidence: six exchanges of -04, all before the quarantine, none after.
    let lookups: Vec<&Value> = of_kind(&records, "http")
        .into_iter()
        .filter(|r| r["http"]["path"] == LOOKUP_ROUTE)
        .collect();
    assert_eq!(lookups.len(), 6, "{}", compact(&lookups));
    for (r, state) in lookups.iter().zip(["CA", "NY", "TX", "FL", "IL", "PA"]) {
        assert_eq!(r["source"]["pod"], BACKDOOR_POD);
        assert_eq!(r["source"]["kind"], "pod");
        assert_eq!(r["destination"]["pod"], USER_PROFILE);
        assert_eq!(r["http"]["status"], 200);
        assert_eq!(r["http"]["response_body_bytes"], 9612);
        // The policy keeps the values of fields, state and limit; nothing else was sent.
        assert_eq!(
            r["http"]["query"],
            format!("fields={LOOKUP_FIELDS}&state={state}&limit={LOOKUP_LIMIT}")
        );
        assert!(seq(r) < reloaded_seq);
    }
    let after: Vec<&Value> = records
        .iter()
        .filter(|r| matches!(r["kind"].as_str(), Some("http" | "flow")))
        .filter(|r| r["source"]["pod"] == BACKDOOR_POD && seq(r) > reloaded_seq)
        .collect();
    assert!(
        after.is_empty(),
        "traffic of the quarantined pod got through: {}",
        compact(&after)
    );

    // The immediate records: on the first lookup (CA) for undocumented-endpoint and
    // sensitive-fields, on the first lookup after the baseline (TX) for response-size-anomaly.
    let immediate = |rule: &str| -> &Value {
        vs.iter()
            .find(|v| v["rule"] == rule && v["aggregated"] == false)
            .unwrap()
    };
    for (rule, lookup, policy_rule) in [
        ("undocumented-endpoint", 0, "protected_prefixes[0]"),
        ("sensitive-fields", 0, "sensitive_fields"),
        ("response-size-anomaly", 2, "baselines.response_size"),
    ] {
        let v = immediate(rule);
        assert_eq!(v["flow_id"], lookups[lookup]["flow_id"], "{rule}: {v}");
        assert!(
            seq(v) < seq(lookups[lookup]),
            "the alert precedes the evidence: {v}"
        );
        assert_eq!(v["route"], LOOKUP_ROUTE);
        assert_eq!(v["destination"]["pod"], USER_PROFILE);
        assert_eq!(v["http"]["status"], 200);
        assert_eq!(v["http"]["response_body_bytes"], 9612);
        assert_eq!(v["policy"]["file"], policy.display().to_string());
        assert_eq!(v["policy"]["rule"], policy_rule);
    }
    assert!(
        immediate("response-size-anomaly")["message"]
            .as_str()
            .unwrap()
            .contains("baseline of 1044 bytes"),
        "{}",
        immediate("response-size-anomaly")
    );
    // Aggregates stand for the repeats after the first, on the same route.
    for v in vs.iter().filter(|v| v["aggregated"] == true) {
        let first = immediate(v["rule"].as_str().unwrap());
        assert_eq!(v["route"], first["route"], "{v}");
        assert_eq!(v["first_seen"], first["time"], "{v}");
    }

    // The breach: after the reload, from -04 to user-profile's port 80, blocked in the kernel.
    let breach = immediate("quarantine-breach");
    assert!(seq(breach) > reloaded_seq, "{breach}");
    assert_eq!(breach["route"], "tcp/80");
    assert_eq!(breach["destination"]["pod"], USER_PROFILE);
    assert_eq!(breach["policy"]["rule"], "quarantine.pods[0]");
    assert!(
        breach["message"]
            .as_str()
            .unwrap()
            .ends_with("blocked in the kernel"),
        "{breach}"
    );

    // The attestation written at stop: enforced, every attempt blocked, nothing escaped.
    let att = *of_kind(&records, "quarantine")
        .last()
        .expect("an attestation");
    assert_eq!(att["pod"], BACKDOOR_POD);
    assert_eq!(att["namespace"], "vantage");
    assert_eq!(att["mode"], "enforce");
    assert_eq!(att["escaped"], 0, "{att}");
    let blocked = att["attempts_blocked"].as_u64().unwrap();
    assert!(blocked >= 3, "{att}");
    assert_eq!(blocked, 6, "two SYNs per timed-out attempt: {att}");

    let others: Vec<&Value> = vs
        .iter()
        .copied()
        .filter(|v| v["source"]["pod"] != BACKDOOR_POD)
        .collect();
    assert!(
        others.is_empty(),
        "violations from other sources: {}",
        compact(&others)
    );
    assert!(
        of_kind(&records, "loss").is_empty(),
        "{:#?}",
        of_kind(&records, "loss")
    );
}

/// A bad edit of the policy is refused with its position, and the last good policy stays in
/// force: the lookup is still undocumented. Fixing the file is picked up again.
#[test]
fn a_bad_policy_edit_is_refused_and_the_old_policy_keeps_firing() {
    let (lab, policy, text) = vantage_lab("mli2");
    let mut agent = start(&lab, &policy);
    lookup(&lab, "CA");

    // The bad edit would document the lookup for the recommendation engines (which would
    // silence it), but has a mistake: a lowercase method.
    let entry = "  - path: /internal/admin/v0/users/lookup\n    services: [svc-user-profile-service]\n    methods: [get]\n    callers: [{service: svc-recommendation-engine}]\n";
    let bad = text.replacen("\nendpoints:\n", &format!("\nendpoints:\n{entry}"), 1);
    assert_ne!(bad, text);
    let line = bad.lines().position(|l| l == "    methods: [get]").unwrap() + 1;
    let col = "    methods: [".len() + 1;
    let before = agent.records().len();
    replace_file(&policy, &bad).unwrap();
    let failed = policy_event(&mut agent, before);
    assert_eq!(failed["event"], "reload-failed", "{failed}");
    assert_eq!(failed["reload_failures"], 1);
    let errors: Vec<&str> = failed["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let at = format!("{}:{line}:{col}: error: ", policy.display());
    assert!(
        errors.iter().any(|e| e.starts_with(&at)),
        "an error at {at}…, got {errors:#?}"
    );

    // The old policy still fires: the same lookup again (a repeat, counted in the window), and
    // another undocumented path (a new route, reported at once).
    lookup(&lab, "NY");
    let search = url(
        &lab,
        USER_PROFILE,
        "/internal/admin/v0/users/search?state=CA",
    );
    let mut cmd = lab.command(BACKDOOR_POD, "curl").unwrap();
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &search]);
    assert_eq!(
        String::from_utf8(cmd.output().unwrap().stdout).unwrap(),
        "404"
    );
    let v = agent
        .wait_for(
            "undocumented-endpoint for /internal/admin/v0/users/search",
            0,
            Duration::from_secs(5),
            |v| v["kind"] == "violation" && v["route"] == "/internal/admin/v0/users/search",
        )
        .unwrap();
    assert!(seq(&v) > seq(&failed));
    assert_eq!(v["rule"], "undocumented-endpoint");
    assert_eq!(v["source"]["pod"], BACKDOOR_POD);

    // Fixed: reloaded, the failure still counted.
    let before = agent.records().len();
    replace_file(&policy, &text).unwrap();
    let fixed = policy_event(&mut agent, before);
    assert_eq!(fixed["event"], "reloaded", "{fixed}");
    assert_eq!(fixed["reload_failures"], 1);

    let records = agent.stop().unwrap();
    let mut want = vec![
        row("undocumented-endpoint", "critical", 1, false),
        row("undocumented-endpoint", "critical", 1, true),
        row("undocumented-endpoint", "critical", 1, false),
        row("sensitive-fields", "critical", 1, false),
        row("sensitive-fields", "critical", 1, true),
    ];
    want.sort();
    assert_eq!(
        summary(&records),
        want,
        "violations:\n{}",
        compact(&violations(&records))
    );
    let events: Vec<&str> = of_kind(&records, "policy")
        .iter()
        .map(|p| p["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["reload-failed", "reloaded"]);
}

/// Over a thousand documented, allowed requests across every legitimate flow of the demo
/// raise no violation at all.
#[test]
fn a_long_stretch_of_legit_traffic_raises_no_violation() {
    const ROUNDS: usize = 25;
    let (lab, policy, _) = vantage_lab("mli3");
    let agent = start(&lab, &policy);
    let mut requests = 0;
    for round in 0..ROUNDS {
        requests += legit_round(&lab, round, 6);
    }
    // Probes far outnumber scrapes on real nodes: 30 probes of a service, then a scrape whose
    // response is 450x a probe's. A documented, allowed endpoint is judged by its own size
    // history, so this must stay quiet.
    let mut urls: Vec<String> = (0..30)
        .map(|_| url(&lab, USER_PROFILE, "/internal/health"))
        .collect();
    urls.push(url(&lab, USER_PROFILE, "/internal/metrics"));
    requests += curl_ok(&lab, SCRAPER, &[], &urls).len();
    // Non-HTTP flows, where the inventory has a TCP echo server: its own pod talks to it (same
    // service, always allowed).
    let echo: Vec<(String, u16)> = lab
        .inventory()
        .pods
        .iter()
        .flat_map(|p| {
            p.lab
                .serve
                .iter()
                .filter(|s| s.kind == ServerKind::TcpEcho)
                .map(|s| (p.name.clone(), s.port))
        })
        .collect();
    let mut tcp_flows = 0;
    for (pod, port) in &echo {
        let ip = lab.pod_ip(pod).unwrap().to_string();
        for i in 0..3 {
            let msg = format!("not http {i}");
            let out = run_in(
                &lab,
                pod,
                "python3",
                &[&rawclient(), "tcp", &ip, &port.to_string(), &msg],
            );
            assert_eq!(out.trim(), msg.len().to_string());
            tcp_flows += 1;
        }
    }
    if echo.is_empty() {
        eprintln!("non-HTTP flows: not driven, the Vantage inventory has no tcp-echo server");
    }
    let records = agent.stop().unwrap();
    let http = of_kind(&records, "http");
    let mut by_edge: BTreeMap<String, usize> = BTreeMap::new();
    for r in &http {
        let to = r["destination"]["pod"]
            .as_str()
            .or_else(|| r["destination"]["name"].as_str())
            .unwrap_or("?");
        *by_edge
            .entry(format!(
                "{} → {to} {} {}",
                r["source"]["pod"].as_str().unwrap_or("?"),
                r["http"]["method"].as_str().unwrap_or("?"),
                r["http"]["path"].as_str().unwrap_or("?")
            ))
            .or_default() += 1;
    }
    eprintln!(
        "{requests} requests, {} http records, {tcp_flows} non-HTTP flows:\n  {}",
        http.len(),
        by_edge
            .iter()
            .map(|(k, n)| format!("{n:>4}  {k}"))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let vs = violations(&records);
    assert!(
        vs.is_empty(),
        "{} violation(s) on legitimate traffic:\n{}",
        vs.len(),
        compact(&vs)
    );
    assert!(requests >= 1000, "{requests}");
    assert_eq!(
        http.len(),
        requests,
        "every request was seen (so the silence means something)"
    );
    let not_ok: Vec<&&Value> = http.iter().filter(|r| r["http"]["status"] != 200).collect();
    assert!(not_ok.is_empty(), "{not_ok:#?}");
    assert!(
        of_kind(&records, "loss").is_empty(),
        "{:#?}",
        of_kind(&records, "loss")
    );
}
