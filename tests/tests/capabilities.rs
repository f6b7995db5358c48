//! The agent runs with exactly the capabilities the DaemonSet grants, and needs each of them.
//!
//! Reads `deploy/kubernetes/50-agent.yaml` (the container `agent`: `capabilities.drop: [ALL]`,
//! `capabilities.add: [...]`) and starts the real agent as root with its bounding set cut to
//! that list (`setpriv --bounding-set=-all,+... --inh-caps=-all`), which is what a container
//! runtime does with `drop: [ALL]` + `add`. The agent then attaches, captures curl traffic and
//! delivers it to a collector over mTLS, as on a node. Then each capability is removed in turn:
//! the agent must refuse to start and name the missing capability, which shows that every one
//! of them is needed.

use std::{path::PathBuf, process::Stdio, time::Duration};

use monitor_tests::{Agent, Collector, fixture, lab, make_certs, repo_root};
use serde_json::Value;

/// Capability bit numbers (linux/capability.h) of the names a DaemonSet may add.
fn cap_bit(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} is not known to this test; add its bit number"),
    }
}

/// The manifest under test (`MONITOR_DAEMONSET` overrides it, to try a change).
fn daemonset_path() -> PathBuf {
    std::env::var_os("MONITOR_DAEMONSET")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("deploy/kubernetes/50-agent.yaml"))
}

/// The `agent` container's (drop, add) capability lists.
fn daemonset_caps() -> (Vec<String>, Vec<String>) {
    let path = daemonset_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not one YAML document: {e}", path.display()));
    assert_eq!(doc["kind"], "DaemonSet", "{}", path.display());
    let containers = doc["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("the DaemonSet has containers");
    let agent = containers
        .iter()
        .find(|c| c["name"] == "agent")
        .expect("a container named agent");
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().expect("capability names are strings").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let caps = &agent["securityContext"]["capabilities"];
    (list(&caps["drop"]), list(&caps["add"]))
}

/// `setpriv` arguments giving the process exactly `caps`.
fn setpriv(caps: &[String]) -> Vec<String> {
    let mut bounding = "-all".to_owned();
    for c in caps {
        bounding.push_str(",+");
        bounding.push_str(&c.to_lowercase());
    }
    vec![
        "setpriv".into(),
        format!("--bounding-set={bounding}"),
        "--inh-caps=-all".into(),
        "--".into(),
    ]
}

/// A field of /proc/PID/status as a hex mask.
fn cap_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn the_agent_works_with_exactly_the_daemonsets_capabilities_and_needs_each() {
    let (dropped, add) = daemonset_caps();
    assert_eq!(
        dropped,
        ["ALL"],
        "the DaemonSet drops every capability first"
    );
    assert!(!add.is_empty(), "the DaemonSet adds capabilities");
    eprintln!("DaemonSet capabilities: drop {dropped:?}, add {add:?}");

    let mut lab = lab("capb", &fixture("lab.yaml"));
    let certs = make_certs(&lab.run_dir().join("certs"));
    let collector =
        Collector::start(&lab, &lab.run_dir().join("collector"), &certs, 17461, &[]).unwrap();
    let spool = lab.run_dir().join("spool");
    let mut args = collector.agent_args(&spool);
    args.push("--stdout".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let wrapper = setpriv(&add);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut agent = Agent::start_wrapped(&lab, &wrapper, &args).unwrap();
    let want: u64 = add.iter().map(|c| 1u64 << cap_bit(c)).sum();
    for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(
            cap_mask(agent.pid(), field),
            want,
            "{field} of the agent is exactly {add:?}"
        );
    }
    assert_eq!(cap_mask(agent.pid(), "CapInh:"), 0);
    assert_eq!(cap_mask(agent.pid(), "CapAmb:"), 0);

    let mut curl = lab.command("client-a", "curl").unwrap();
    curl.args(["-s", "http://10.77.0.10/small"])
        .stdout(Stdio::null());
    assert!(curl.status().unwrap().success());
    agent
        .wait_for("the curl's http record", 0, Duration::from_secs(10), |v| {
            v["kind"] == "http" && v["http"]["path"] == "/small"
        })
        .unwrap();
    collector
        .wait_sink(
            "the http record at the collector",
            Duration::from_secs(10),
            |r| r.iter().any(|v| v["kind"] == "http"),
        )
        .unwrap();
    agent.stop().unwrap();

    // Each capability is needed: without it the agent refuses to start, naming capabilities.
    for missing in &add {
        let fewer: Vec<String> = add.iter().filter(|c| *c != missing).cloned().collect();
        let wrapper = setpriv(&fewer);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let err = Agent::start_wrapped(&lab, &wrapper, &args)
            .err()
            .unwrap_or_else(|| panic!("the agent started without CAP_{missing}"))
            .to_string();
        assert!(
            err.contains("CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"),
            "without CAP_{missing} the agent says which capabilities it needs:\n{err}"
        );
        eprintln!(
            "without CAP_{missing}: refused ({})",
            err.lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or_default()
        );
    }
    drop(collector);
    lab.down().unwrap();
}
