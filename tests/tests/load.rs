//! Capture completeness at the highest rate this machine can drive: wrk against nginx in the
//! lab for 10 s, then every request nginx served must be one `http` record, with no loss.
//! Throughput figures are printed for information only; they are measured as ratios by the
//! benchmark, never asserted here.

use monitor_tests::{Agent, fixture, lab, of_kind, run_in};

/// wrk's connections.
const CONNECTIONS: usize = 32;

/// nginx's served-request counter, read from outside the monitored pods.
fn served(lab: &xtask::lab::Lab, web: &str) -> u64 {
    let status = run_in(
        lab,
        "ext",
        "curl",
        &["-sS", &format!("http://{web}/nginx_status")],
    );
    // "Active connections: 1 \nserver accepts handled requests\n 5 5 7 \n..."
    let counts = status
        .lines()
        .nth(2)
        .expect("stub_status has a counts line");
    counts
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected stub_status output: {status}"))
}

#[test]
fn wrk_at_full_rate_every_served_request_is_one_record() {
    let lab = lab("mlt12", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap().to_string();
    let agent = Agent::start(&lab).unwrap();
    let before = served(&lab, &web);
    let out = run_in(
        &lab,
        "client-a",
        "wrk",
        &[
            "-t2",
            &format!("-c{CONNECTIONS}"),
            "-d10s",
            &format!("http://{web}/small"),
        ],
    );
    // Connections are closed when wrk exits; the status read below is the only other request.
    let after = served(&lab, &web);
    let records = agent.stop().unwrap();
    let served_by_nginx = after - before - 1;
    let http: Vec<_> = of_kind(&records, "http")
        .into_iter()
        .filter(|r| r["source"]["pod"] == "client-a" && r["http"]["path"] == "/small")
        .collect();
    let complete = http
        .iter()
        .filter(|r| r["completion"] == "complete")
        .count() as u64;
    let losses = of_kind(&records, "loss");
    eprintln!(
        "wrk: {}\nnginx served {served_by_nginx}; http records {} ({complete} complete); loss records {}",
        out.lines()
            .filter(|l| l.contains("Requests/sec") || l.contains("requests in"))
            .collect::<Vec<_>>()
            .join(" | "),
        http.len(),
        losses.len()
    );
    assert!(losses.is_empty(), "losses under load: {losses:#?}");
    assert_eq!(
        http.len() as u64,
        served_by_nginx,
        "one record per served request"
    );
    // wrk closes its connections when its time is up, possibly with a response in flight:
    // such a response is cut off, and reported as partial with the bytes that arrived. Every
    // other exchange is seen to its end, with the exact size and status.
    let partial: Vec<_> = http
        .iter()
        .filter(|r| r["completion"] == "partial")
        .collect();
    assert_eq!(
        complete + partial.len() as u64,
        http.len() as u64,
        "{http:?}"
    );
    assert!(
        partial.len() <= CONNECTIONS,
        "more cut-off responses than wrk connections: {partial:#?}"
    );
    assert!(
        partial
            .iter()
            .all(|r| r["http"]["response_body_bytes"].as_u64().unwrap_or(0) < 100),
        "a partial response is shorter than the body: {partial:#?}"
    );
    let wrong: Vec<_> = http
        .iter()
        .filter(|r| r["completion"] == "complete")
        .filter(|r| r["http"]["response_body_bytes"] != 100 || r["http"]["status"] != 200)
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "sizes and statuses must be exact: {wrong:#?}"
    );
}
