//! Tier-3 lab tests: real curl / python clients in network namespaces and cgroups, real nginx and
//! python servers, the real kernel programs, the real agent binary. Each test asserts the exact
//! records the agent wrote. Run as root (`cargo xtask test` runs them one at a time).
//!
//! Fixture: `tests/fixtures/lab.yaml` (client-a, client-b; `web` serving nginx on 80, the
//! python server on 8080 and a TCP echo on 9000).

use monitor_tests::{Agent, fixture, lab, of_kind, rawclient, run_in};
use serde_json::Value;

fn http_from<'a>(records: &'a [Value], pod: &str) -> Vec<&'a Value> {
    of_kind(records, "http")
        .into_iter()
        .filter(|r| r["source"]["pod"] == pod)
        .collect()
}

fn no_losses(records: &[Value]) {
    let losses = of_kind(records, "loss");
    assert!(losses.is_empty(), "unexpected loss records: {losses:#?}");
}

#[test]
fn one_get_with_query_string() {
    let lab = lab("mlt1", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap();
    let agent = Agent::start(&lab).unwrap();
    let url = format!("http://{web}/lookup?fields=ssn_last4,email,phone&state=CA&limit=48");
    let got = run_in(
        &lab,
        "client-a",
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &url,
        ],
    );
    assert_eq!(got, "200 9612");
    let records = agent.stop().unwrap();
    let http = of_kind(&records, "http");
    assert_eq!(
        http.len(),
        1,
        "exactly one exchange, reported once: {http:#?}"
    );
    let r = http[0];
    assert_eq!(r["observer"], "client");
    assert_eq!(r["source"]["pod"], "client-a");
    assert_eq!(r["source"]["kind"], "pod");
    assert_eq!(r["destination"]["pod"], "web");
    assert_eq!(r["destination"]["service"], "web");
    assert_eq!(r["destination"]["port"], 80);
    assert_eq!(r["http"]["method"], "GET");
    assert_eq!(r["http"]["path"], "/lookup");
    assert_eq!(
        r["http"]["query"],
        "fields=ssn_last4,email,phone&state=CA&limit=48"
    );
    assert_eq!(r["http"]["host"], web.to_string());
    assert_eq!(r["http"]["status"], 200);
    assert_eq!(r["http"]["response_body_bytes"], 9612);
    assert_eq!(r["completion"], "complete");
    let flows = of_kind(&records, "flow");
    assert_eq!(flows.len(), 1, "{flows:#?}");
    assert_eq!(flows[0]["source"]["pod"], "client-a");
    assert_eq!(flows[0]["destination"]["port"], 80);
    assert_eq!(flows[0]["close"], "fin");
    assert_eq!(flows[0]["http_exchanges"], 1);
    assert_eq!(flows[0]["flow_id"], r["flow_id"]);
    no_losses(&records);
}

#[test]
fn twenty_requests_on_one_keep_alive_connection() {
    let lab = lab("mlt2", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap();
    let agent = Agent::start(&lab).unwrap();
    let urls: Vec<String> = (0..20)
        .map(|i| format!("http://{web}/small?i={i}"))
        .collect();
    let mut args = vec!["-sS"];
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    run_in(&lab, "client-a", "curl", &args);
    let records = agent.stop().unwrap();
    let http = of_kind(&records, "http");
    assert_eq!(http.len(), 20, "{http:#?}");
    let flow_id = &http[0]["flow_id"];
    for (i, r) in http.iter().enumerate() {
        assert_eq!(r["flow_id"], *flow_id, "curl reuses one connection");
        assert_eq!(r["http"]["target"], format!("/small?i={i}"), "in order");
        assert_eq!(r["http"]["status"], 200);
        assert_eq!(r["http"]["response_body_bytes"], 100);
    }
    let flows = of_kind(&records, "flow");
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0]["http_exchanges"], 20);
    no_losses(&records);
}

#[test]
fn pipelined_requests() {
    let lab = lab("mlt3", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap().to_string();
    let agent = Agent::start(&lab).unwrap();
    let out = run_in(
        &lab,
        "client-a",
        "python3",
        &[
            &rawclient(),
            "pipeline",
            &web,
            "80",
            "/small?p=1",
            "/",
            "/small?p=3",
        ],
    );
    assert_eq!(out, "200 100\n200 612\n200 100\n");
    let records = agent.stop().unwrap();
    let http = of_kind(&records, "http");
    let got: Vec<(String, u64)> = http
        .iter()
        .map(|r| {
            (
                r["http"]["target"].as_str().unwrap().to_owned(),
                r["http"]["response_body_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/small?p=1".to_owned(), 100),
            ("/".to_owned(), 612),
            ("/small?p=3".to_owned(), 100)
        ]
    );
    no_losses(&records);
}

#[test]
fn post_with_a_body() {
    let lab = lab("mlt4", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap();
    let body = lab.run_dir().join("post-body");
    std::fs::write(&body, vec![b'p'; 5000]).unwrap();
    let agent = Agent::start(&lab).unwrap();
    let got = run_in(
        &lab,
        "client-b",
        "curl",
        &[
            "-sS",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", body.display()),
            &format!("http://{web}:8080/echo"),
        ],
    );
    assert_eq!(got, "received=5000");
    let records = agent.stop().unwrap();
    let http = http_from(&records, "client-b");
    assert_eq!(http.len(), 1, "{records:#?}");
    let r = http[0];
    assert_eq!(r["http"]["method"], "POST");
    assert_eq!(r["http"]["path"], "/echo");
    assert_eq!(r["http"]["request_body_bytes"], 5000);
    assert_eq!(r["http"]["status"], 200);
    assert_eq!(r["http"]["response_body_bytes"], "received=5000".len());
    no_losses(&records);
}

/// Wire size of the python server's chunked body of `n` bytes in 16 KiB chunks.
fn chunked_wire_size(n: u64) -> u64 {
    let chunk = 16 * 1024;
    let full = n / chunk;
    let rest = n % chunk;
    let framing = |len: u64| format!("{len:x}\r\n").len() as u64 + 2;
    full * (chunk + framing(chunk)) + if rest > 0 { rest + framing(rest) } else { 0 } + 5
}

#[test]
fn one_megabyte_chunked_response_attributed_to_its_request() {
    let lab = lab("mlt5", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap();
    let agent = Agent::start(&lab).unwrap();
    // Two requests on one connection: the big chunked body must be counted for the first,
    // and not leak into the second.
    run_in(
        &lab,
        "client-a",
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            &format!("http://{web}:8080/chunked?bytes=1048576"),
            "-o",
            "/dev/null",
            &format!("http://{web}:8080/any?bytes=100"),
        ],
    );
    let records = agent.stop().unwrap();
    let http = of_kind(&records, "http");
    assert_eq!(http.len(), 2, "{http:#?}");
    assert_eq!(http[0]["flow_id"], http[1]["flow_id"]);
    assert_eq!(http[0]["http"]["path"], "/chunked");
    assert_eq!(
        http[0]["http"]["response_body_bytes"],
        chunked_wire_size(1_048_576),
        "chunked body on the wire (data plus chunk framing)"
    );
    assert_eq!(http[1]["http"]["path"], "/any");
    assert_eq!(http[1]["http"]["response_body_bytes"], 100);
    no_losses(&records);
}

#[test]
fn request_head_split_across_two_segments() {
    let lab = lab("mlt6", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap().to_string();
    let agent = Agent::start(&lab).unwrap();
    let out = run_in(
        &lab,
        "client-a",
        "python3",
        &[&rawclient(), "split", &web, "80", "/small?split=1"],
    );
    assert_eq!(out, "200 100\n");
    let records = agent.stop().unwrap();
    let http = of_kind(&records, "http");
    assert_eq!(http.len(), 1, "{http:#?}");
    assert_eq!(http[0]["http"]["target"], "/small?split=1");
    assert_eq!(http[0]["http"]["host"], web);
    assert_eq!(http[0]["http"]["response_body_bytes"], 100);
    assert!(http[0]["http"].get("request_head_truncated").is_none());
    no_losses(&records);
}

#[test]
fn non_http_tcp_flow_gives_a_flow_record_only() {
    let lab = lab("mlt7", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap().to_string();
    let agent = Agent::start(&lab).unwrap();
    let msg = "hello, this is not http";
    let out = run_in(
        &lab,
        "client-b",
        "python3",
        &[&rawclient(), "tcp", &web, "9000", msg],
    );
    assert_eq!(out.trim(), msg.len().to_string());
    let records = agent.stop().unwrap();
    assert!(of_kind(&records, "http").is_empty(), "{records:#?}");
    let flows = of_kind(&records, "flow");
    assert_eq!(flows.len(), 1, "{flows:#?}");
    let f = flows[0];
    assert_eq!(f["source"]["pod"], "client-b");
    assert_eq!(f["destination"]["pod"], "web");
    assert_eq!(f["destination"]["port"], 9000);
    assert_eq!(f["http_exchanges"], 0);
    assert_eq!(f["close"], "fin");
    // Payload both ways plus headers: more than the message each way.
    assert!(f["bytes_to_server"].as_u64().unwrap() > msg.len() as u64);
    assert!(f["bytes_to_client"].as_u64().unwrap() > msg.len() as u64);
    no_losses(&records);
}

#[test]
fn two_pods_calling_concurrently() {
    let mut lab = lab("mlt8", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap();
    let agent = Agent::start(&lab).unwrap();
    let mut children = Vec::new();
    for pod in ["client-a", "client-b"] {
        let mut cmd = lab.command(pod, "curl").unwrap();
        cmd.arg("-sS");
        for i in 0..50 {
            cmd.args([
                "-o",
                "/dev/null",
                &format!("http://{web}/small?from={pod}&i={i}"),
            ]);
        }
        children.push(lab.spawn(pod, cmd).unwrap());
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let records = agent.stop().unwrap();
    for pod in ["client-a", "client-b"] {
        let http = http_from(&records, pod);
        assert_eq!(http.len(), 50, "{pod}");
        for (i, r) in http.iter().enumerate() {
            assert_eq!(r["http"]["target"], format!("/small?from={pod}&i={i}"));
            assert_eq!(r["http"]["response_body_bytes"], 100);
        }
    }
    assert_eq!(of_kind(&records, "http").len(), 100);
    no_losses(&records);
}

#[test]
fn without_a_policy_every_query_value_is_redacted() {
    let lab = lab("mlt13", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap();
    let agent = Agent::start_with(&lab, &["--no-policy"]).unwrap();
    let url = format!("http://{web}/small?user_id=1049&email=a%40b.c&flag");
    run_in(&lab, "client-a", "curl", &["-sS", "-o", "/dev/null", &url]);
    let records = agent.stop().unwrap();
    let http = of_kind(&records, "http");
    assert_eq!(http.len(), 1);
    assert_eq!(
        http[0]["http"]["query"],
        "user_id=REDACTED&email=REDACTED&flag"
    );
    assert_eq!(
        http[0]["http"]["target"],
        "/small?user_id=REDACTED&email=REDACTED&flag"
    );
    let line = serde_json::to_string(&records).unwrap();
    assert!(
        !line.contains("1049") && !line.contains("a%40b.c"),
        "values leaked: {line}"
    );
}
