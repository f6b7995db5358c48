//! Self-tests of the lab library (root): bring a lab up from `tests/fixtures/lab.yaml`, check
//! the servers answer with exact sizes from inside pods, that pod processes sit in their pod's
//! netns and cgroup, and that `down`, `Drop`, a failed `up` and `down_from_state` leave nothing
//! behind. Each test uses its own prefix, so they can run in parallel.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xtask::lab::{Lab, LabOptions, State, down_from_state};

fn require_root() {
    assert!(
        xtask::util::is_root(),
        "the lab self-tests need root (network namespaces, cgroups): run `cargo xtask test` as root"
    );
}

fn opts(prefix: &str, inventory: PathBuf) -> LabOptions {
    // A leftover from an earlier crashed run would make `up` refuse.
    let _ = down_from_state(prefix);
    LabOptions {
        inventory,
        prefix: prefix.to_string(),
        cgroup_mount: None,
    }
}

fn fixture() -> PathBuf {
    xtask::repo_root().join("tests/fixtures/lab.yaml")
}

/// curl from `pod` with `args`; returns (status code, downloaded bytes, body).
fn curl(lab: &Lab, pod: &str, args: &[&str]) -> (u16, u64, String) {
    let out = lab
        .command(pod, "curl")
        .unwrap()
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code} %{size_download}",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let mut it = tail.split_whitespace();
    let code = it.next().unwrap().parse().unwrap();
    let size = it.next().unwrap().parse().unwrap();
    (code, size, body.to_string())
}

fn assert_gone(prefix: &str, root_cgroup: &Path) {
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(netns.is_empty(), "netns left: {netns:?}");
    assert!(
        !root_cgroup.exists(),
        "cgroup left: {}",
        root_cgroup.display()
    );
    assert!(!State::path(prefix).exists(), "state file left");
    assert!(
        !Path::new(xtask::lab::STATE_DIR).join(prefix).exists(),
        "run dir left"
    );
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap()
}

#[test]
fn lab_serves_from_pods_and_tears_down() {
    require_root();
    let mut lab = Lab::up(&opts("xtl1", fixture())).unwrap();
    let root = lab.attach_cgroup().to_path_buf();
    let web = lab.pod_ip("web").unwrap();
    assert_eq!(web, "10.77.0.10".parse::<IpAddr>().unwrap());
    assert_eq!(
        lab.pod_ip("ext").unwrap(),
        "10.77.200.1".parse::<IpAddr>().unwrap()
    );
    assert!(lab.pod_ip("nope").is_err());

    // nginx: exact sizes, 404 elsewhere, POST answered like GET, IPv6.
    for (path, size) in [("/", 612), ("/small", 100), ("/lookup?state=CA", 9612)] {
        let (code, n, _) = curl(
            &lab,
            "client-a",
            &["-o", "/dev/null", &format!("http://{web}{path}")],
        );
        assert_eq!((code, n), (200, size), "{path}");
    }
    assert_eq!(
        curl(
            &lab,
            "client-a",
            &["-o", "/dev/null", &format!("http://{web}/missing")]
        )
        .0,
        404
    );
    assert_eq!(
        curl(
            &lab,
            "client-b",
            &[
                "-o",
                "/dev/null",
                "--data",
                "",
                &format!("http://{web}/small")
            ]
        )
        .0,
        200
    );
    assert_eq!(
        curl(
            &lab,
            "client-a",
            &["-o", "/dev/null", "http://[fd77::10]/small"]
        )
        .1,
        100
    );

    // python: chunked, sized, echo; keep-alive across two URLs.
    let (code, n, _) = curl(
        &lab,
        "client-a",
        &[
            "-o",
            "/dev/null",
            &format!("http://{web}:8080/chunked?bytes=40000"),
        ],
    );
    assert_eq!((code, n), (200, 40000));
    let (_, _, body) = curl(
        &lab,
        "client-a",
        &[
            "--data-binary",
            "hello world",
            &format!("http://{web}:8080/echo"),
        ],
    );
    assert_eq!(body, "received=11");
    let (code, n, _) = curl(
        &lab,
        "client-b",
        &[
            "-o",
            "/dev/null",
            &format!("http://{web}:8080/any?bytes=123"),
        ],
    );
    assert_eq!((code, n), (200, 123));

    // tcp-echo.
    lab.wait_tcp("client-a", web, 9000, Duration::from_secs(2))
        .unwrap();
    let out = lab
        .command("client-a", "python3")
        .unwrap()
        .args([
            "-c",
            "import socket,sys; s=socket.create_connection((sys.argv[1], 9000), 2); \
             s.sendall(b'ping'); print(s.recv(16).decode())",
            &web.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ping");

    // External reachable from a pod.
    assert_eq!(
        curl(
            &lab,
            "client-a",
            &["-o", "/dev/null", "http://10.77.200.1/v1/ping"]
        )
        .1,
        20
    );

    // A spawned long-running process lives in the pod's netns and cgroup, and down() stops it.
    let mut child = lab
        .spawn("client-b", {
            let mut c = lab.command("client-b", "sleep").unwrap();
            c.arg("600");
            c
        })
        .unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cgroup_of(pid), "/xtl1/client-b");
    let ns = Command::new("ip")
        .args(["netns", "identify", &pid.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ns.stdout).trim(),
        lab.netns("client-b").unwrap()
    );

    lab.down().unwrap();
    lab.down().unwrap(); // idempotent
    assert!(
        !xtask::util::process_running(pid),
        "spawned process survived down()"
    );
    assert!(
        !child.wait().unwrap().success(),
        "sleep 600 ended by a signal"
    );
    assert_gone("xtl1", &root);
}

#[test]
fn drop_and_failed_up_leave_nothing() {
    require_root();
    let root = {
        let lab = Lab::up(&opts("xtl2", fixture())).unwrap();
        lab.attach_cgroup().to_path_buf()
    };
    assert_gone("xtl2", &root);

    // A route whose file name is too long fails after namespaces and cgroups exist.
    let dir = std::env::temp_dir().join(format!("xtask-lab-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inv = dir.join("bad.yaml");
    std::fs::write(
        &inv,
        format!(
            "node: n\npods:\n  - name: a\n    ips: [\"10.77.0.1\"]\n    cgroup: a\n    lab:\n      serve:\n        - {{kind: python, port: 8080}}\n        - {{kind: nginx, port: 80, routes: {{\"/{}\": 5}}}}\n",
            "x".repeat(300)
        ),
    )
    .unwrap();
    let err = Lab::up(&opts("xtl3", inv.clone())).unwrap_err();
    assert!(
        format!("{err:#}").contains("everything it created was removed"),
        "{err:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_gone(
        "xtl3",
        &xtask::cgroup::cgroup2_mount(None).unwrap().join("xtl3"),
    );
}

#[test]
fn detached_lab_is_removed_from_its_state_file() {
    require_root();
    let lab = Lab::up(&opts("xtl4", fixture())).unwrap();
    let root = lab.attach_cgroup().to_path_buf();
    let pids: Vec<u32> = State::load("xtl4")
        .unwrap()
        .unwrap()
        .processes
        .iter()
        .map(|p| p.id.pid)
        .collect();
    assert_eq!(pids.len(), 4, "web: nginx, python, tcp-echo; ext: nginx");
    let state = lab.detach().unwrap();
    assert!(state.exists());
    assert!(pids.iter().all(|p| xtask::util::process_running(*p)));
    down_from_state("xtl4").unwrap();
    assert!(pids.iter().all(|p| !xtask::util::process_running(*p)));
    assert_gone("xtl4", &root);
    // Nothing recorded any more: a second down is a no-op.
    down_from_state("xtl4").unwrap();
}
