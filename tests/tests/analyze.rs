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

use monitor_tests::{Agent, in_netns, lab, monitor_bin, of_kind, run_in, vantage};
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

/// A tcpdump we started: stopped (SIGINT, which flushes its file) when dropped, so a failing
/// test leaves none behind.
struct Dump(std::process::Child);

impl Drop for Dump {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signalling our own child by its PID.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
}

/// Starts tcpdump in `netns` writing `file`; returns once it is capturing.
fn tcpdump(netns: &str, iface: &str, file: &Path) -> Dump {
    let mut child = Dump(
        in_netns(Some(netns), Path::new("tcpdump"))
            .args(["-i", iface, "--immediate-mode", "-U", "-n", "-w"])
            .arg(file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump starts (cargo xtask setup installs it)"),
    );
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
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
    // Keep draining its stderr so it never blocks.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

fn stop(dump: &mut Dump) {
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(dump.0.id() as i32, libc::SIGINT) };
    let status = dump.0.wait().unwrap();
    assert!(
        status.success() || status.code() == Some(0),
        "tcpdump: {status}"
    );
}

fn analyze(file: &Path, policy: &Path) -> (Vec<Value>, String) {
    let out = Command::new(monitor_bin())
        .arg("analyze")
        .arg(file)
        .arg("--inventory")
        .arg(vantage("inventory.yaml"))
        .arg("--policy")
        .arg(policy)
        .args(["--kinds", "all"])
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
    let mut dumps = [tcpdump(&netns, "eth0", &eth), tcpdump(&netns, "any", &any)];

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
    for d in &mut dumps {
        stop(d);
    }
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

    for file in [&eth, &any] {
        let (recs, stderr) = analyze(file, &policy);
        eprintln!("{}: {stderr}", file.display());
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
}
