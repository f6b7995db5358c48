//! The agent's behaviour on bad input and bad conditions: clear errors naming the problem and
//! what to do, no panic, and nothing left attached after a crash.

use std::process::Command;

use monitor_tests::{Agent, fixture, lab, monitor_bin, require_root, run_in};

fn agent_err(args: &[&str]) -> String {
    let out = Command::new(monitor_bin())
        .arg("agent")
        .args(args)
        .output()
        .expect("monitor runs");
    assert!(!out.status.success(), "expected failure for {args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "a panic reached the user: {stderr}"
    );
    stderr
}

fn cgroup2_mount() -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.starts_with("cgroup2 ")).then(|| pre.split(' ').nth(4).unwrap().to_owned())
        })
        .expect("lab tests need cgroup v2 mounted")
}

#[test]
fn malformed_inventory_names_file_and_line() {
    require_root();
    let dir = std::env::temp_dir().join(format!("inv-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("inventory.yaml");
    std::fs::write(
        &bad,
        "node: n\npods:\n  - name: a\n    ips: [10.0.0.1, nope]\n",
    )
    .unwrap();
    let err = agent_err(&[
        "--inventory",
        bad.to_str().unwrap(),
        "--cgroup",
        &cgroup2_mount(),
    ]);
    let expect = format!("{}:4:", bad.display());
    assert!(err.contains(&expect), "want {expect} in: {err}");
    let err = agent_err(&["--inventory", "/nonexistent/inv.yaml"]);
    assert!(
        err.contains("cannot read inventory /nonexistent/inv.yaml"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_or_wrong_cgroup_root_says_what_to_do() {
    require_root();
    let inv = fixture("lab.yaml");
    let inv = inv.to_str().unwrap();
    let err = agent_err(&["--inventory", inv, "--cgroup", "/sys/fs/cgroup/no-such-dir"]);
    assert!(
        err.contains("cgroup directory /sys/fs/cgroup/no-such-dir does not exist"),
        "{err}"
    );
    assert!(err.contains("cgroup v2 is mounted at"), "{err}");
    // A directory that is not on cgroup v2.
    let err = agent_err(&["--inventory", inv, "--cgroup", "/tmp"]);
    assert!(err.contains("/tmp is not a cgroup v2 directory"), "{err}");
}

#[test]
fn missing_privilege_is_explained() {
    require_root();
    let inv = fixture("lab.yaml");
    // Drop every capability and become nobody: loading BPF must be refused, with advice.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(monitor_bin())
        .args([
            "agent",
            "--inventory",
            inv.to_str().unwrap(),
            "--cgroup",
            &cgroup2_mount(),
        ])
        .output()
        .expect("setpriv runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("run as root, or with CAP_BPF"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn attached_programs(cgroup: &std::path::Path) -> String {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("bpftool runs (installed by `cargo xtask setup`)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nothing_stays_attached_after_sigkill() {
    let lab = lab("mlt9", &fixture("lab.yaml"));
    let agent = Agent::start(&lab).unwrap();
    let shown = attached_programs(lab.attach_cgroup());
    assert!(
        shown.contains("monitor_egress") && shown.contains("monitor_ingress"),
        "attached while running: {shown}"
    );
    // SAFETY: killing our own child by PID.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    // The links close with the process's file descriptors.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let shown = attached_programs(lab.attach_cgroup());
        if !shown.contains("monitor_") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still attached after SIGKILL: {shown}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(agent);
    // And traffic still flows (nothing was left half-attached dropping packets).
    let web = lab.pod_ip("web").unwrap();
    let got = run_in(
        &lab,
        "client-a",
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{web}/small"),
        ],
    );
    assert_eq!(got, "200");
}

/// Removes a cgroup directory when dropped (also when the test fails).
struct CgroupGuard(std::path::PathBuf);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn pod_started_after_the_agent_is_attributed() {
    // A pod whose cgroup does not exist when the agent starts: the agent must see its traffic
    // (the programs sit on the root cgroup) and attribute it once the cgroup appears.
    let lab = lab("mlt10", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap();
    let inventory = lab.run_dir().join("with-late-pod.yaml");
    let mut text = std::fs::read_to_string(fixture("lab.yaml")).unwrap();
    text = text.replacen(
        "pods:\n",
        "pods:\n  - {name: late-pod, namespace: labtest, service: late, ips: [\"10.77.0.99\"], cgroup: late-pod}\n",
        1,
    );
    std::fs::write(&inventory, text).unwrap();
    let agent = Agent::start_with_inventory(&lab, &inventory, &[]).unwrap();
    let cg = lab.attach_cgroup().join("late-pod");
    assert!(
        !cg.exists(),
        "the late pod's cgroup must not exist before the agent starts"
    );
    std::fs::create_dir(&cg).unwrap();
    let _guard = CgroupGuard(cg.clone());
    let procs = cg.join("cgroup.procs");
    let netns = lab.netns("client-b").unwrap().to_owned();
    let script = format!(
        "echo $$ > {} && exec ip netns exec {netns} curl -sS -o /dev/null http://{web}/small?late=1",
        procs.display()
    );
    let st = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(st.success());
    let records = agent.stop().unwrap();
    let http = monitor_tests::of_kind(&records, "http");
    assert_eq!(http.len(), 1, "{records:#?}");
    assert_eq!(http[0]["source"]["pod"], "late-pod");
    assert_eq!(http[0]["source"]["kind"], "pod");
}

fn lint(files: &[std::path::PathBuf]) -> (bool, String, String) {
    let out = Command::new(monitor_bin())
        .args(["policy", "lint"])
        .args(files)
        .output()
        .expect("monitor runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn policy_lint_accepts_the_vantage_policy_and_reports_every_error_with_positions() {
    let vantage = monitor_tests::repo_root().join("deploy/examples/vantage/policy.yaml");
    let (ok, stdout, stderr) = lint(std::slice::from_ref(&vantage));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("policy.yaml: ok ("), "{stdout}");

    let bad = fixture("policy/multi-error.yaml");
    let (ok, _, stderr) = lint(std::slice::from_ref(&bad));
    assert!(!ok);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert!(
        errors.len() >= 20,
        "every error reported in one run: {stderr}"
    );
    for e in &errors {
        // file:line:column: error: ...
        let rest = e
            .strip_prefix(&format!("{}:", bad.display()))
            .unwrap_or_else(|| panic!("{e}"));
        let mut parts = rest.splitn(3, ':');
        let line: usize = parts
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{e}"));
        let col: usize = parts
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{e}"));
        assert!(line > 0 && col > 0, "{e}");
    }
    assert!(stderr.contains("hint: "), "{stderr}");
    // One bad file among good ones fails the run, and the good one is still reported.
    let (ok, stdout, _) = lint(&[vantage, fixture("policy/bad-cidr.yaml")]);
    assert!(!ok);
    assert!(stdout.contains("policy.yaml: ok ("), "{stdout}");
}

#[test]
fn agent_refuses_a_bad_policy_at_start_with_positions() {
    let lab = lab("mlt14", &fixture("lab.yaml"));
    let bad = fixture("policy/bad-cidr.yaml");
    let err = Agent::start_with(&lab, &["--policy", bad.to_str().unwrap()]).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(&format!("{}:", bad.display())), "{text}");
    assert!(
        text.contains("error:") && !text.contains("panicked"),
        "{text}"
    );
}

/// Runs `curl` inside `netns` (the agent's metrics port lives only there).
fn curl_in(netns: &str, url: &str) -> (String, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "curl",
            "-sS",
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_owned(), code.to_owned())
}

#[test]
fn metrics_and_health_endpoint_count_records_and_failed_reloads() {
    let lab = lab("mlt15", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap();
    // The agent runs in the lab's node namespace so its metrics port stays inside the lab.
    let node_ns = "mlt15-node";
    let policy = lab.run_dir().join("policy.yaml");
    std::fs::copy(fixture("lab-policy.yaml"), &policy).unwrap();
    let ready = lab.run_dir().join("metrics-agent-ready");
    let log = lab.run_dir().join("metrics-agent.log");
    // The node namespace has only the bridge; loopback is ours to bring up.
    let st = Command::new("ip")
        .args(["netns", "exec", node_ns, "ip", "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(st.success());
    // nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup file systems.
    let mut agent = xtask::lab::nsenter(node_ns, &monitor_bin())
        .args(["agent", "--metrics-addr", "127.0.0.1:9464", "--inventory"])
        .arg(lab.inventory_path())
        .arg("--policy")
        .arg(&policy)
        .arg("--cgroup")
        .arg(lab.attach_cgroup())
        .arg("--ready-file")
        .arg(&ready)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut agent);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready.exists() {
        if let Ok(Some(st)) = guard.0.try_wait() {
            panic!(
                "agent exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(std::time::Instant::now() < deadline, "agent not ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (body, code) = curl_in(node_ns, "http://127.0.0.1:9464/healthz");
    assert_eq!((body.as_str(), code.as_str()), ("attached\n", "200"));
    for i in 0..3 {
        run_in(
            &lab,
            "client-a",
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                &format!("http://{web}/small?i={i}"),
            ],
        );
    }
    // A bad edit: the reload fails, the metric says so, the old policy stays.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&policy, "version: 1\nredaction: {keep_values: [i, i]}\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (metrics, code) = curl_in(node_ns, "http://127.0.0.1:9464/metrics");
    assert_eq!(code, "200");
    assert!(metrics.contains("monitor_attached 1"), "{metrics}");
    assert!(
        metrics.contains("monitor_records_total{kind=\"http\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("monitor_policy_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("monitor_policy_reloads_total{result=\"ok\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("monitor_policy_last_reload_successful 0"),
        "the alert's gauge says the last reload failed: {metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    drop(guard);
}
