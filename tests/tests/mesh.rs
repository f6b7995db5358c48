//! Tier-3 lab tests of the lab's mesh mode (`cargo xtask lab up --mesh istio|istio-legacy`,
//! `xtask::lab::mesh`): the emulated Istio really carries traffic the way Istio does, so the
//! agent's tests in the mesh (`mesh_attribution.rs`) test against the real thing. Real curl,
//! nginx and a small header-echo server in the pods, real haproxy sidecars, real iptables
//! REDIRECTs, real TLS on the wire (tcpdump). No agent here.
//!
//! Run as root (`cargo xtask test` runs lab tests one at a time).

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use monitor_tests::{require_root, run_in, vantage};
use xtask::lab::{Lab, LabOptions, Mesh, mesh};

/// The client pod (the Vantage incident's backdoored replica) and the server pod.
const CLIENT: &str = "svc-recommendation-engine-04";
const SERVER: &str = "svc-user-profile-service-0";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/vantage/sa/recommendation-engine";
const SERVER_ID: &str = "spiffe://cluster.local/ns/vantage/sa/user-profile";
/// The documented route, 1,044 bytes from nginx on port 80.
const ROUTE: &str = "/api/v2/users/preferences";
const ROUTE_BYTES: usize = 1044;
/// Port of the header-echo server the test starts in the server pod (not in the inventory:
/// the sidecars handle any port).
const ECHO_PORT: u16 = 8099;
/// The SNI the client's sidecar must send for port 80.
const SNI: &str = "outbound_.80_._.svc-user-profile-service.vantage.svc.cluster.local";

/// Answers every GET with what the app sees: the peer and local addresses of its socket and
/// the request's headers, one per line.
const ECHO_HEADERS_PY: &str = r#"
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        local = self.connection.getsockname()
        lines = ["peer=%s" % self.client_address[0], "local=%s:%d" % (local[0], local[1])]
        lines += ["%s: %s" % (k.lower(), v) for k, v in self.headers.items()]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"#;

/// Brings up the Vantage lab with `mesh` under `prefix` (after removing a leftover of a crashed
/// run).
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

/// The lab servers' body of `n` bytes (`xtask::lab` serves a repeating alphabet).
fn filler(n: usize) -> Vec<u8> {
    const LINE: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.\n";
    LINE.iter().copied().cycle().take(n).collect()
}

/// A tcpdump writing a pcap file, in a pod's netns (not its cgroup).
struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    /// Starts capturing `filter` on `eth0` of `pod` and waits until tcpdump says it listens.
    fn start(lab: &Lab, pod: &str, filter: &str) -> Capture {
        let file = lab.run_dir().join(format!("{pod}.pcap"));
        let mut child = xtask::lab::nsenter(lab.netns(pod).unwrap(), Path::new("tcpdump"))
            // -Z root: tcpdump would drop to its own user, which cannot write the run dir.
            .args([
                "-i",
                "eth0",
                "--immediate-mode",
                "-n",
                "-U",
                "-s",
                "0",
                "-Z",
                "root",
                "-w",
            ])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump starts");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("listening on") => break,
                Ok(l) => said.push(l),
                Err(_) => panic!("tcpdump in {pod} did not start: {said:?}"),
            }
        }
        Capture { child, file }
    }

    /// Stops tcpdump (SIGINT: it flushes the file) and returns the captured TCP segments.
    fn stop(mut self) -> Vec<Segment> {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().expect("tcpdump exits");
        read_pcap(&std::fs::read(&self.file).expect("pcap written"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One TCP segment of a capture.
#[derive(Debug)]
struct Segment {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
}

/// The IPv4 TCP segments of a pcap file (Ethernet link type), in order.
fn read_pcap(bytes: &[u8]) -> Vec<Segment> {
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    assert!(bytes.len() >= 24, "pcap too short");
    let magic = u32_at(bytes, 0);
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "not a little-endian pcap: {magic:#x}"
    );
    assert_eq!(u32_at(bytes, 20), 1, "link type is Ethernet");
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= bytes.len() {
        let caplen = u32_at(bytes, i + 8) as usize;
        let frame = &bytes[i + 16..(i + 16 + caplen).min(bytes.len())];
        i += 16 + caplen;
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        if ip[9] != 6 || total < ihl + 20 {
            continue;
        }
        let tcp = &ip[ihl..total];
        let off = usize::from(tcp[12] >> 4) * 4;
        out.push(Segment {
            src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            sport: u16::from_be_bytes([tcp[0], tcp[1]]),
            dport: u16::from_be_bytes([tcp[2], tcp[3]]),
            payload: tcp[off.min(tcp.len())..].to_vec(),
        });
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => panic!("{v6} is not IPv4"),
    }
}

/// The sidecar of `pod` runs haproxy as uid/gid 1337, in the pod's cgroup and netns.
fn check_sidecar_process(lab: &Lab, pod: &str) {
    let s = lab.sidecar(pod).unwrap();
    let proc = |f: &str| {
        std::fs::read_to_string(format!("/proc/{}/{f}", s.pid))
            .unwrap_or_else(|e| panic!("{pod}: sidecar pid {} /proc/.../{f}: {e}", s.pid))
    };
    assert_eq!(proc("comm").trim(), "haproxy", "{pod}");
    let status = proc("status");
    for key in ["Uid:", "Gid:"] {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        let ids: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(
            ids, ["1337"; 4],
            "{pod}: sidecar {key} real/effective/saved/fs: {line}"
        );
    }
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(groups.trim(), "Groups:", "{pod}: no supplementary groups");
    let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(
        cap_eff.ends_with("0000000000000000"),
        "{pod}: no capabilities: {cap_eff}"
    );
    let cg = lab.member(pod).unwrap().cgroup.clone().unwrap();
    let mount = lab.attach_cgroup().parent().unwrap();
    let want = format!("0::/{}", cg.strip_prefix(mount).unwrap().display());
    // The cgroup v2 line (on a hybrid machine the v1 hierarchies are listed too).
    let cgroups = proc("cgroup");
    let v2 = cgroups.lines().find(|l| l.starts_with("0::"));
    assert_eq!(
        v2,
        Some(want.as_str()),
        "{pod}: the sidecar is in the pod's cgroup: {cgroups}"
    );
    let ino = |p: &str| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&format!("/proc/{}/ns/net", s.pid)),
        ino(&format!("/run/netns/{}", lab.netns(pod).unwrap())),
        "{pod}: the sidecar is in the pod's netns"
    );
}

/// SHA-256 (hex) of the first certificate in `pem`, and its subject alternative names.
fn cert_facts(pem: &Path) -> (String, String) {
    let out = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .arg("-in")
            .arg(pem)
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl {args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let fp = out(&["x509", "-noout", "-fingerprint", "-sha256"]);
    let hash = fp
        .trim()
        .split_once('=')
        .unwrap()
        .1
        .replace(':', "")
        .to_lowercase();
    (hash, out(&["x509", "-noout", "-ext", "subjectAltName"]))
}

/// One style end to end: curl from the client pod to the server pod's IP:80 gets nginx's 200
/// and body; the app behind the server's sidecar sees the request from 127.0.0.6 (new) or
/// 127.0.0.1 (legacy) with the client's SPIFFE ID in `x-forwarded-client-cert`; between the
/// pods the bytes are TLS with Istio's SNI and ALPN, and no HTTP.
fn carries_traffic(prefix: &str, style: Mesh) {
    let mut lab = mesh_lab(prefix, style);
    assert_eq!(lab.mesh(), Some(style));
    let client_ip = v4(lab.pod_ip(CLIENT).unwrap());
    let server_ip = v4(lab.pod_ip(SERVER).unwrap());
    for pod in [CLIENT, SERVER] {
        check_sidecar_process(&lab, pod);
    }
    assert_eq!(lab.sidecar(CLIENT).unwrap().spiffe_id, CLIENT_ID);
    assert_eq!(lab.sidecar(SERVER).unwrap().spiffe_id, SERVER_ID);

    // The header-echo app in the server pod (its cgroup and netns, like the lab's servers).
    let script = lab.run_dir().join("echo-headers.py");
    std::fs::write(&script, ECHO_HEADERS_PY).unwrap();
    let mut cmd = lab.command(SERVER, "python3").unwrap();
    cmd.arg(&script)
        .arg(ECHO_PORT.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut echo = lab.spawn(SERVER, cmd).unwrap();
    lab.wait_tcp(
        SERVER,
        IpAddr::V4(server_ip),
        ECHO_PORT,
        Duration::from_secs(10),
    )
    .unwrap();

    // 1. The app's plaintext request to nginx on the server pod's IP:80, captured between
    // the pods.
    let capture = Capture::start(&lab, SERVER, "tcp port 80");
    let url = format!("http://{server_ip}{ROUTE}");
    let out = run_in(
        &lab,
        CLIENT,
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{size_download}",
            &url,
        ],
    );
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, format!("200 {ROUTE_BYTES}"), "{style}: {url}");
    assert_eq!(
        body.as_bytes(),
        filler(ROUTE_BYTES),
        "{style}: nginx's body"
    );
    let segments = capture.stop();

    let to_server: Vec<u8> = segments
        .iter()
        .filter(|s| s.dport == 80)
        .flat_map(|s| s.payload.clone())
        .collect();
    let to_client: Vec<u8> = segments
        .iter()
        .filter(|s| s.sport == 80)
        .flat_map(|s| s.payload.clone())
        .collect();
    for s in &segments {
        let ends = [(s.src, s.dst), (s.dst, s.src)];
        assert!(
            ends.contains(&(client_ip, server_ip)),
            "{style}: only the two pods' addresses on the wire: {s:?}"
        );
    }
    assert!(
        !to_server.is_empty() && !to_client.is_empty(),
        "{style}: nothing captured"
    );
    assert_eq!(to_server[0], 0x16, "{style}: a TLS handshake record first");
    assert_eq!(to_client[0], 0x16, "{style}: the server answers with TLS");
    assert!(
        contains(&to_server, SNI.as_bytes()),
        "{style}: Istio's SNI {SNI} in the ClientHello"
    );
    assert!(
        contains(&to_server, b"istio-http/1.1"),
        "{style}: Istio's ALPN"
    );
    for plain in [ROUTE.as_bytes(), b"HTTP/1.1", b"curl/"] {
        assert!(
            !contains(&to_server, plain) && !contains(&to_client, plain),
            "{style}: {:?} travelled in clear",
            String::from_utf8_lossy(plain)
        );
    }
    assert!(
        !contains(&to_client, &filler(64)),
        "{style}: the body travelled in clear"
    );

    // 2. What the app behind the server's sidecar sees.
    let echoed = run_in(
        &lab,
        CLIENT,
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            &format!("http://{server_ip}:{ECHO_PORT}/whoami"),
        ],
    );
    let field = |name: &str| -> String {
        echoed
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{style}: no {name} in {echoed}"))
            .to_owned()
    };
    let (peer, local) = match style {
        Mesh::Istio => (
            mesh::INBOUND_SOURCE.to_string(),
            format!("{server_ip}:{ECHO_PORT}"),
        ),
        Mesh::IstioLegacy => ("127.0.0.1".to_owned(), format!("127.0.0.1:{ECHO_PORT}")),
    };
    assert_eq!(field("peer="), peer, "{style}: {echoed}");
    assert_eq!(field("local="), local, "{style}: {echoed}");
    assert_eq!(
        field("host: "),
        format!("{server_ip}:{ECHO_PORT}"),
        "{style}: headers pass unchanged"
    );
    let (hash, sans) = cert_facts(&lab.sidecar(CLIENT).unwrap().cert);
    assert!(
        sans.contains(&format!("URI:{CLIENT_ID}")),
        "the client's certificate carries its SPIFFE ID as URI SAN: {sans}"
    );
    assert_eq!(
        field("x-forwarded-client-cert: "),
        format!("By={SERVER_ID};Hash={hash};Subject=\"\";URI={CLIENT_ID}"),
        "{style}: {echoed}"
    );

    // Both requests went through both sidecars (haproxy logs a connection when it closes).
    for (pod, line) in [
        (CLIENT, " outbound outbound_http/original_dst "),
        (SERVER, " inbound~ inbound_http/app "),
    ] {
        let path = &lab.sidecar(pod).unwrap().log;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = std::fs::read_to_string(path).unwrap();
            if log.matches(line).count() == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{style}: {pod}'s sidecar log should show 2 {line:?} connections:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Teardown stops the sidecars (by PID) and removes what the mesh made.
    let pids: Vec<u32> = lab.sidecars().iter().map(|s| s.pid).collect();
    let run_dir = lab.run_dir().to_owned();
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(echo.id() as i32, libc::SIGTERM) };
    let _ = echo.wait();
    lab.down().unwrap();
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() != "haproxy"),
            "{style}: sidecar pid {pid} still running after down"
        );
    }
    assert!(
        !run_dir.exists(),
        "{style}: certificates removed with the run dir"
    );
}

#[test]
fn mesh_lab_carries_traffic() {
    carries_traffic("mesh1", Mesh::Istio);
    carries_traffic("mesh2", Mesh::IstioLegacy);
}

/// A sidecar that cannot start (its pod's app already holds port 15001) fails `up` with the
/// sidecar's log, and everything the lab and the mesh made is gone: processes, netns, cgroups,
/// certificates, the state file.
#[test]
fn mesh_lab_that_fails_to_come_up_leaves_nothing() {
    require_root();
    let prefix = "mesh3";
    let _ = xtask::lab::down_from_state(prefix);
    let dir = std::env::temp_dir().join(format!("monitor-{prefix}-inventory"));
    std::fs::create_dir_all(&dir).unwrap();
    let inventory = dir.join("inventory.yaml");
    std::fs::write(
        &inventory,
        "node: n\npods:\n\
         \x20 - {name: client, namespace: t, ips: [\"10.77.5.1\"], cgroup: client}\n\
         \x20 - name: squatter\n\
         \x20   namespace: t\n\
         \x20   ips: [\"10.77.5.2\"]\n\
         \x20   cgroup: squatter\n\
         \x20   lab: {serve: [{kind: python, port: 15001}]}\n",
    )
    .unwrap();
    let before: Vec<u32> = haproxy_pids();
    let err = Lab::up_with_mesh(
        &LabOptions {
            inventory: inventory.clone(),
            prefix: prefix.to_owned(),
            cgroup_mount: None,
        },
        Some(Mesh::Istio),
    )
    .expect_err("the squatter's sidecar cannot bind 15001");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("pod squatter: sidecar (haproxy") && msg.contains("15001"),
        "the error names the pod and shows haproxy's complaint: {msg}"
    );
    assert!(msg.contains("everything it created was removed"), "{msg}");
    assert!(!xtask::lab::State::path(prefix).exists(), "state file left");
    assert!(
        !Path::new(xtask::lab::STATE_DIR).join(prefix).exists(),
        "run dir (certificates) left"
    );
    for ns in [
        format!("{prefix}-node"),
        format!("{prefix}-p0"),
        format!("{prefix}-p1"),
    ] {
        assert!(
            !Path::new("/run/netns").join(&ns).exists(),
            "netns {ns} left"
        );
    }
    assert_eq!(haproxy_pids(), before, "no sidecar left running");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// PIDs of running haproxy processes started for lab `mesh3` (their config is in its run dir).
fn haproxy_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("/run/monitor-lab/mesh3/"))
        })
        .collect();
    pids.sort_unstable();
    pids
}
