//! Tier-3 lab test of `monitor analyze`: tcpdump captures of real curl traffic in the Vantage
//! lab, analysed offline, must give what the live agent wrote about the same traffic: the same
//! exchanges (who, what, status, sizes) and the same violations. One capture is taken on the
//! victim pod's `eth0` (Ethernet), one with `-i any` in the same pod (Linux cooked SLL2); the
//! traffic includes keep-alive connections, IPv6 and the backdoor's lookups.
//!
//! Run as root (`cargo xtask test` runs lab tests one at a time).

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use monitor_tests::{
    Agent, Collector, in_netns, lab, make_certs, monitor_bin, of_kind, run_in, vantage,
};
use serde_json::Value;
use xtask::demo::{BACKDOOR_POD, lookup_target};

const USER_PROFILE: &str = "svc-user-profile-service-0";

/// What must match between the live agent and the analysis, per exchange.
fn exchanges(records: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = of_kind(records, "http")
        .into_iter()
        .map(|r| {
            format!(
                "{} -> {} {} {} {} {} {} {}",
                r["source"]["pod"],
                r["destination"]["pod"],
                r["destination"]["port"],
                r["http"]["method"],
                r["http"]["target"],
                r["http"]["status"],
                r["http"]["response_bytes"],
                r["http"]["response_body_bytes"],
            )
        })
        .collect();
    v.sort();
    v
}

/// Per violation: rule, source, route, count, aggregated.
fn violations(records: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = of_kind(records, "violation")
        .into_iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r["rule"], r["source"]["pod"], r["route"], r["count"], r["aggregated"]
            )
        })
        .collect();
    v.sort();
    v
}

/// A tcpdump we started: stopped when dropped, so a failing test leaves none behind.
struct Dump {
    child: Option<std::process::Child>,
    /// Its stderr after the start-up line (read on a thread so it never blocks).
    said: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Dump {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by its PID.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}

/// Starts tcpdump in `netns` writing `file`; returns once it is capturing.
fn tcpdump(netns: &str, iface: &str, file: &Path) -> Dump {
    let child = in_netns(Some(netns), Path::new("tcpdump"))
        .args([
            "-i",
            iface,
            "--immediate-mode",
            "-B",
            "16384",
            "-U",
            "-n",
            "-w",
        ])
        .arg(file)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump starts (cargo xtask setup installs it)");
    let mut dump = Dump {
        child: Some(child),
        said: None,
    };
    let stderr = dump.child.as_mut().and_then(|c| c.stderr.take()).unwrap();
    let mut err = BufReader::new(stderr);
    // `-i any` first says which link type it writes (LINUX_SLL2), then that it listens.
    let mut said = String::new();
    for _ in 0..3 {
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        said.push_str(&line);
        if line.contains("listening on") {
            break;
        }
    }
    assert!(said.contains("listening on"), "tcpdump: {said}");
    dump.said = Some(std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    }));
    dump
}

/// Stops tcpdump (SIGINT: it flushes its file); returns the packets it says it dropped.
fn stop(mut dump: Dump) -> u64 {
    let mut c = dump.child.take().unwrap();
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let status = c.wait().unwrap();
    assert!(status.success(), "tcpdump: {status}");
    let said = dump.said.take().unwrap().join().unwrap();
    eprintln!("tcpdump: {said}");
    // "N packets dropped by kernel"
    said.lines()
        .find(|l| l.contains("dropped by kernel"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("tcpdump reports its drops")
}

fn analyze(file: &Path, policy: &Path, extra: &[&str]) -> (Vec<Value>, String) {
    let out = Command::new(monitor_bin())
        .arg("analyze")
        .arg(file)
        .arg("--inventory")
        .arg(vantage("inventory.yaml"))
        .arg("--policy")
        .arg(policy)
        .args(["--kinds", "all"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {stderr}", file.display());
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (recs, stderr)
}

#[test]
fn a_tcpdump_capture_gives_what_the_live_agent_saw() {
    let lab = lab("man1", &vantage("inventory.yaml"));
    let policy = lab.run_dir().join("policy.yaml");
    std::fs::copy(vantage("policy.yaml"), &policy).unwrap();
    let agent = Agent::start_with(&lab, &["--policy", policy.to_str().unwrap()]).unwrap();
    let netns = lab.netns(USER_PROFILE).unwrap().to_owned();
    let eth = lab.run_dir().join("eth0.pcap");
    let any = lab.run_dir().join("any.pcap");
    let dumps = [tcpdump(&netns, "eth0", &eth), tcpdump(&netns, "any", &any)];

    let profile = lab.pod_ip(USER_PROFILE).unwrap();
    let profile6 = lab
        .pod_ipv6(USER_PROFILE)
        .unwrap()
        .expect("an IPv6 address");
    let pref = |i: usize| format!("http://{profile}/api/v2/users/preferences?user={i}");
    // Engine 01: 22 preference calls on one keep-alive connection.
    let urls: Vec<String> = (0..22).map(pref).collect();
    let mut args = vec!["-sS", "--max-time", "10"];
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    run_in(&lab, "svc-recommendation-engine-01", "curl", &args);
    // Engine 02: three calls over IPv6, one connection each.
    for i in 0..3 {
        let u = format!("http://[{profile6}]/api/v2/users/preferences?user={i}");
        run_in(
            &lab,
            "svc-recommendation-engine-02",
            "curl",
            &["-sS", "-g", "-o", "/dev/null", &u],
        );
    }
    // The backdoor: 21 ordinary calls (its size baseline), then three lookups.
    let urls: Vec<String> = (0..21).map(pref).collect();
    let mut args = vec!["-sS", "--max-time", "10"];
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    run_in(&lab, BACKDOOR_POD, "curl", &args);
    for state in ["CA", "NY", "TX"] {
        let u = format!("http://{profile}{}", lookup_target(state));
        let got = run_in(
            &lab,
            BACKDOOR_POD,
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
                &u,
            ],
        );
        assert_eq!(got, "200 9612");
    }
    std::thread::sleep(Duration::from_millis(300));
    let [d_eth, d_any] = dumps;
    let dropped = [stop(d_eth), stop(d_any)];
    let live = agent.stop().unwrap();
    assert!(
        of_kind(&live, "loss").is_empty(),
        "{:?}",
        of_kind(&live, "loss")
    );
    let want_x = exchanges(&live);
    let want_v = violations(&live);
    assert_eq!(want_x.len(), 22 + 3 + 21 + 3, "{want_x:#?}");
    assert!(
        want_v.iter().any(|v| v.contains("undocumented-endpoint")),
        "{want_v:#?}"
    );
    assert!(
        want_v.iter().any(|v| v.contains("response-size-anomaly")),
        "{want_v:#?}"
    );

    let store_dir = lab.run_dir().join("collector");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store = store_dir.join("collector.db");
    for (file, dropped) in [(&eth, dropped[0]), (&any, dropped[1])] {
        // The first analysis also fills a collector store.
        let extra: &[&str] = if file == &eth {
            &["--store", store.to_str().unwrap()]
        } else {
            &[]
        };
        let (recs, stderr) = analyze(file, &policy, extra);
        eprintln!("{}: {stderr}", file.display());
        if dropped > 0 {
            // tcpdump itself lost packets (a starved capture): the comparison cannot hold, but
            // the analysis must say that data is missing rather than pass over it.
            eprintln!("{}: tcpdump dropped {dropped} packets", file.display());
            let loss = of_kind(&recs, "loss");
            assert!(
                loss.iter().any(|l| l["reason"] == "missing-segment"),
                "{}: tcpdump dropped {dropped} packets and the analysis reported no gap: {loss:?}",
                file.display()
            );
            assert!(
                file != &eth,
                "the eth0 capture (feeding the store) must be complete"
            );
            continue;
        }
        assert_eq!(exchanges(&recs), want_x, "{}", file.display());
        assert_eq!(violations(&recs), want_v, "{}", file.display());
        assert!(
            of_kind(&recs, "loss").is_empty(),
            "{:?}",
            of_kind(&recs, "loss")
        );
        // One flow record per connection, each closed by FIN, as the agent saw them.
        let closes = |r: &[Value]| {
            let mut v: Vec<String> = of_kind(r, "flow")
                .into_iter()
                .map(|f| {
                    format!(
                        "{} {} {}",
                        f["source"]["pod"], f["close"], f["http_exchanges"]
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(closes(&recs), closes(&live), "{}", file.display());
        assert!(stderr.contains(" 0 gaps missing"), "{stderr}");
    }

    // A real collector on that store answers `monitor report` and `monitor observe`.
    let certs = make_certs(&lab.run_dir().join("certs"));
    let collector =
        Collector::start(&lab, &store_dir, &certs, 7443, &["--retention-days", "0"]).unwrap();
    let cli = |args: &[&str]| {
        let out = in_netns(Some(lab.node_netns()), &monitor_bin())
            .args(args)
            .arg("--collector")
            .arg(collector.url())
            .arg("--tls-dir")
            .arg(&certs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report: Value = serde_json::from_str(&cli(&[
        "report",
        "--path",
        "/internal/admin/v0/users/lookup",
        "--since",
        "1h",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(report["requests"], 3, "{report:#}");
    assert_eq!(
        report["by_source"][0]["key"], "vantage/svc-recommendation-engine-04",
        "{report:#}"
    );
    let mut states: Vec<&str> = report["filter_values"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["key"] == "state")
        .map(|f| f["value"].as_str().unwrap())
        .collect();
    states.sort_unstable();
    assert_eq!(states, ["CA", "NY", "TX"], "{report:#}");
    let observed = cli(&[
        "observe",
        "--kind",
        "violation",
        "--since",
        "1h",
        "-o",
        "json",
    ]);
    assert_eq!(observed.lines().count(), want_v.len(), "{observed}");
}
