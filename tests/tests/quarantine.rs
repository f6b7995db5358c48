//! Tier-3 test of quarantine enforcement: the real kernel programs, loaded in this process and
//! attached to the lab's cgroup root, drop all traffic of a quarantined pod (client-a) while
//! the other pods keep working; the drop statistics and the blocked-attempt records read back
//! from the kernel say what was blocked, and that nothing of client-a's passed. Lifting the
//! quarantine restores the traffic. Run as root (`cargo xtask test` runs lab tests one at a
//! time).
//!
//! What a quarantined pod sees: a dropped datagram fails at once (`sendto` returns EPERM, the
//! verdict of a `cgroup_skb` egress drop). A TCP `connect` does not: the kernel ignores the
//! error of a SYN's transmission (`tcp_connect` only gives up on `ECONNREFUSED`) and keeps
//! retransmitting it, so the connection times out, as it would behind a deny-all
//! NetworkPolicy. Every retransmitted SYN is dropped and recorded as another attempt.
//!
//! Fixture: `tests/fixtures/lab.yaml` (client-a, client-b; `web` serving nginx on 80).

use monitor_agent::clock::Clock;
use std::{
    path::Path,
    time::{Duration, Instant},
};

use monitor_agent::{capture::Capture, capture::cgroup_id};
use monitor_common::{
    Direction,
    flow::{FlowTuple, Initiator},
    quarantine::{QuarantineDirStats, QuarantineDrop, QuarantineEntry},
    record::{
        RecordKind,
        user::{Record, decode},
    },
};
use monitor_tests::{fixture, lab, run_in};
use xtask::lab::Lab;

/// curl's exit code for "operation timed out".
const CURL_TIMEOUT: i32 = 28;
/// Port of the listener started inside the quarantined pod.
const LISTEN_PORT: u16 = 8081;
/// Sends one UDP datagram to `argv[1]` port 9 (discard) and prints `sent` or `EPERM`.
const UDP_SEND: &str = "import socket, sys\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
try:\n    s.sendto(b'x', (sys.argv[1], 9)); print('sent')\n\
except PermissionError:\n    print('EPERM')\n";

/// What one curl run did.
#[derive(Debug)]
struct Curl {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// `curl` from inside `pod`, printing the HTTP status; never retries.
fn curl(lab: &Lab, pod: &str, url: &str, connect_timeout_s: u32) -> Curl {
    let mut cmd = lab.command(pod, "curl").expect("pod exists");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--connect-timeout",
        &connect_timeout_s.to_string(),
        "--max-time",
        "10",
        url,
    ]);
    let t0 = Instant::now();
    let out = cmd.output().expect("curl starts");
    Curl {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: t0.elapsed(),
    }
}

fn assert_ok(c: &Curl, what: &str) {
    assert!(
        c.code == Some(0) && c.stdout == "200",
        "{what}: expected HTTP 200, got exit {:?}, status {:?} after {:?}: {}",
        c.code,
        c.stdout,
        c.elapsed,
        c.stderr
    );
}

/// A ring-buffer record, owned: its kind, header and, where it has one, its tuple.
#[derive(Debug)]
struct Rec {
    kind: RecordKind,
    ts_ns: u64,
    cgroup_id: u64,
    tuple: Option<FlowTuple>,
    drop: Option<QuarantineDrop>,
}

/// Everything waiting in the ring buffer, decoded with the agent's checked decoder.
fn drain(cap: &mut Capture) -> Vec<Rec> {
    let mut out = Vec::new();
    while let Some(item) = cap.ring.next() {
        let rec = match decode(&item) {
            Ok(Record::FlowOpen(r)) => Rec {
                kind: RecordKind::FlowOpen,
                ts_ns: r.hdr.ts_ns,
                cgroup_id: r.hdr.cgroup_id,
                tuple: Some(r.tuple),
                drop: None,
            },
            Ok(Record::FlowClose(r)) => Rec {
                kind: RecordKind::FlowClose,
                ts_ns: r.hdr.ts_ns,
                cgroup_id: r.hdr.cgroup_id,
                tuple: Some(r.tuple),
                drop: None,
            },
            Ok(Record::HttpChunk(c)) => Rec {
                kind: RecordKind::HttpChunk,
                ts_ns: c.meta.hdr.ts_ns,
                cgroup_id: c.meta.hdr.cgroup_id,
                tuple: None,
                drop: None,
            },
            Ok(Record::QuarantineDrop(d)) => Rec {
                kind: RecordKind::QuarantineDrop,
                ts_ns: d.hdr.ts_ns,
                cgroup_id: d.hdr.cgroup_id,
                tuple: Some(d.tuple),
                drop: Some(d),
            },
            Err(e) => panic!("the kernel wrote an undecodable record: {e}"),
        };
        out.push(rec);
    }
    out
}

fn pod_cgroup(lab: &Lab, pod: &str) -> u64 {
    let m = lab.member(pod).expect("pod exists");
    let dir: &Path = m.cgroup.as_deref().expect("a pod has a cgroup");
    cgroup_id(dir).unwrap_or_else(|e| panic!("cgroup id of {}: {e}", dir.display()))
}

#[test]
fn quarantined_pod_is_cut_off_and_the_rest_keep_working() {
    let mut lab = lab("mlq1", &fixture("lab.yaml"));
    let web = lab.pod_ip("web").unwrap();
    let a_ip = lab.pod_ip("client-a").unwrap();
    let b_ip = lab.pod_ip("client-b").unwrap();
    let (id_a, id_b, id_web) = (
        pod_cgroup(&lab, "client-a"),
        pod_cgroup(&lab, "client-b"),
        pod_cgroup(&lab, "web"),
    );
    let mut cap = Capture::load().unwrap_or_else(|e| panic!("loading the programs: {e}"));
    cap.attach(lab.attach_cgroup())
        .unwrap_or_else(|e| panic!("attaching: {e}"));

    // A listener inside the pod about to be quarantined (for blocked incoming attempts).
    let mut server = lab.command("client-a", "python3").unwrap();
    server
        .args([
            "-m",
            "http.server",
            &LISTEN_PORT.to_string(),
            "--bind",
            "0.0.0.0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut server = lab.spawn("client-a", server).unwrap();
    lab.wait_tcp("client-b", a_ip, LISTEN_PORT, Duration::from_secs(10))
        .unwrap();
    let web_url = format!("http://{web}/small");
    let a_url = format!("http://{a_ip}:{LISTEN_PORT}/");

    // Before: client-a works and is observed under its cgroup id.
    assert_ok(&curl(&lab, "client-a", &web_url, 5), "client-a before");
    assert_ok(
        &curl(&lab, "client-b", &a_url, 5),
        "client-b to client-a before",
    );
    std::thread::sleep(Duration::from_millis(200));
    let before = drain(&mut cap);
    assert!(
        before
            .iter()
            .any(|r| r.kind == RecordKind::FlowOpen && r.cgroup_id == id_a),
        "client-a's traffic is seen under cgroup id {id_a}: {before:?}"
    );
    assert!(before.iter().all(|r| r.kind != RecordKind::QuarantineDrop));

    // Quarantine client-a.
    let since = Clock::boot_ns();
    cap.set_quarantine(&[(id_a, since)]).unwrap();
    assert_eq!(
        cap.quarantine().unwrap(),
        [(id_a, QuarantineEntry::enforce(since))].into()
    );

    // Its outgoing connection never gets an answer: every SYN (the first and the one
    // retransmitted after 1 s) is dropped, and curl's 2-second connect timeout ends it.
    let blocked = curl(&lab, "client-a", &web_url, 2);
    assert_eq!(
        blocked.code,
        Some(CURL_TIMEOUT),
        "client-a's curl must fail to connect: {blocked:?}"
    );
    assert!(
        blocked.elapsed < Duration::from_secs(4),
        "client-a's curl must give up at its connect timeout: {blocked:?}"
    );
    // A datagram fails at once with EPERM.
    let udp = run_in(
        &lab,
        "client-a",
        "python3",
        &["-c", UDP_SEND, &web.to_string()],
    );
    assert_eq!(udp.trim(), "EPERM", "client-a's datagram must be refused");
    // Other pods are untouched.
    assert_ok(&curl(&lab, "client-b", &web_url, 5), "client-b during");
    // Incoming connections to it are dropped on its ingress: the caller times out.
    let inbound = curl(&lab, "client-b", &a_url, 2);
    assert_eq!(
        inbound.code,
        Some(CURL_TIMEOUT),
        "client-b's connection to quarantined client-a must time out: {inbound:?}"
    );

    let stats = cap.quarantine_stats().unwrap();
    assert_eq!(
        stats.keys().copied().collect::<Vec<_>>(),
        [id_a],
        "{stats:?}"
    );
    let st = stats[&id_a];
    eprintln!("client-a quarantined: {st:?}");
    let (eg, ing): (QuarantineDirStats, QuarantineDirStats) = (st.dir[0], st.dir[1]);
    assert!(
        eg.attempts >= 2,
        "blocked outgoing attempts (SYN and its retransmission) counted: {st:?}"
    );
    assert!(
        eg.packets > eg.attempts,
        "the datagram is dropped and counted too: {st:?}"
    );
    assert!(
        ing.attempts >= 1,
        "blocked incoming attempts counted: {st:?}"
    );
    assert!(eg.packets >= eg.attempts && ing.packets >= ing.attempts);
    assert!(eg.bytes >= 40 * eg.packets && ing.bytes >= 40 * ing.packets);

    let during = drain(&mut cap);
    let drops: Vec<&QuarantineDrop> = during.iter().filter_map(|r| r.drop.as_ref()).collect();
    let out: Vec<&&QuarantineDrop> = drops
        .iter()
        .filter(|d| d.dir == Direction::Egress as u8)
        .collect();
    let inc: Vec<&&QuarantineDrop> = drops
        .iter()
        .filter(|d| d.dir == Direction::Ingress as u8)
        .collect();
    assert_eq!(
        out.len() as u64,
        eg.attempts,
        "one record per attempt: {drops:?}"
    );
    assert_eq!(
        inc.len() as u64,
        ing.attempts,
        "one record per attempt: {drops:?}"
    );
    for d in &drops {
        assert_eq!(d.hdr.cgroup_id, id_a);
        assert!(d.hdr.ts_ns >= since);
    }
    for d in out {
        assert_eq!(d.tuple.initiator, Initiator::Local as u8);
        assert_eq!(d.tuple.local_ip(), a_ip);
        assert_eq!(d.tuple.remote_ip(), web);
        assert_eq!(d.tuple.remote_port, 80);
    }
    for d in inc {
        assert_eq!(d.tuple.initiator, Initiator::Unknown as u8);
        assert_eq!(d.tuple.local_ip(), a_ip);
        assert_eq!(d.tuple.local_port, LISTEN_PORT);
        assert_eq!(d.tuple.remote_ip(), b_ip);
    }
    // Zero escaped: since the quarantine began nothing of client-a's sockets was seen passing,
    // and web (which only ever answers) saw no packet from client-a. (client-b's own SYNs to
    // client-a leave client-b and are observed there; they die at client-a's ingress.)
    let escaped: Vec<&Rec> = during
        .iter()
        .filter(|r| r.kind != RecordKind::QuarantineDrop && r.ts_ns >= since)
        .filter(|r| {
            r.cgroup_id == id_a
                || (r.cgroup_id == id_web && r.tuple.is_some_and(|t| t.remote_ip() == a_ip))
        })
        .collect();
    assert!(escaped.is_empty(), "client-a traffic passed: {escaped:?}");
    // client-b's exchange with web was seen as usual, at both ends.
    for (id, who) in [(id_b, "client-b"), (id_web, "web")] {
        assert!(
            during
                .iter()
                .any(|r| r.kind == RecordKind::FlowOpen && r.cgroup_id == id),
            "{who}'s flow with the other pod is still observed: {during:?}"
        );
    }

    // Lifted: client-a works again, in both directions, and the kernel holds nothing.
    cap.set_quarantine(&[]).unwrap();
    assert!(cap.quarantine().unwrap().is_empty());
    assert!(cap.quarantine_stats().unwrap().is_empty());
    assert_ok(&curl(&lab, "client-a", &web_url, 5), "client-a after");
    assert_ok(
        &curl(&lab, "client-b", &a_url, 5),
        "client-b to client-a after",
    );
    std::thread::sleep(Duration::from_millis(200));
    let after = drain(&mut cap);
    assert!(after.iter().all(|r| r.kind != RecordKind::QuarantineDrop));
    assert!(
        after
            .iter()
            .any(|r| r.kind == RecordKind::FlowOpen && r.cgroup_id == id_a),
        "client-a's traffic is observed again: {after:?}"
    );
    let b_to_a = after.iter().any(|r| {
        r.kind == RecordKind::FlowOpen
            && r.cgroup_id == id_b
            && r.tuple
                .is_some_and(|t| t.remote_ip() == a_ip && t.remote_port == LISTEN_PORT)
    });
    assert!(
        b_to_a,
        "client-b reaches client-a's listener again: {after:?}"
    );

    // Dropping the capture detaches the programs; the listener is stopped by its PID.
    drop(cap);
    let _ = server.kill();
    let _ = server.wait();
    lab.down().unwrap();
}
