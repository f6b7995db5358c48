//! The pipeline on hand-made kernel records, where the lab cannot go: the server side of a
//! mesh exchange whose client is on another node (the caller named by
//! `x-forwarded-client-cert`), the same exchange without the header, and the kernel-told
//! direction of a flow whose client port is the lower one.

use std::time::Duration;

use monitor_common::{
    Direction,
    flow::{
        CloseReason, DIR_FIN, DIR_SEQ_VALID, DirStats, FAMILY_V4, FlowClose, FlowOpen, FlowState,
        FlowTuple, Initiator,
    },
    http::{ChunkKind, HttpChunk, HttpChunkMeta, classify},
    record::{
        RecordHeader, RecordKind,
        user::{DecodeError, Record as Raw, decode},
    },
    sock::{ORIGIN_CONNECT, ORIGIN_PASSIVE, SockOrigin},
};
use serde_json::Value;

use super::*;
use crate::{identity::fake::Fake, mesh::MeshConfig};

const PROFILE_CG: u64 = 10;
const ENGINE_CG: u64 = 4;

/// Kernel records as the ring buffer would hold them.
#[derive(Default)]
struct Records(Vec<Vec<u8>>);

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: test-only view of a `#[repr(C)]` record without implicit padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn addr(ip: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    if let Ok(IpAddr::V4(v4)) = ip.parse::<IpAddr>() {
        b[..4].copy_from_slice(&v4.octets());
    }
    b
}

fn tuple(local: (&str, u16), remote: (&str, u16), initiator: Initiator) -> FlowTuple {
    FlowTuple {
        family: FAMILY_V4,
        initiator: initiator as u8,
        _pad: [0; 2],
        local_port: local.1,
        remote_port: remote.1,
        local_addr: addr(local.0),
        remote_addr: addr(remote.0),
    }
}

fn connected(to: (&str, u16), uid: u32) -> SockOrigin {
    SockOrigin {
        flags: ORIGIN_CONNECT,
        family: FAMILY_V4,
        port: to.1,
        uid,
        gid: uid,
        addr: addr(to.0),
    }
}

fn accepted() -> SockOrigin {
    SockOrigin {
        flags: ORIGIN_PASSIVE,
        ..SockOrigin::NONE
    }
}

impl Records {
    fn open(&mut self, cookie: u64, cg: u64, t: FlowTuple, origin: SockOrigin, uid: u32, ns: u64) {
        self.0.push(bytes_of(&FlowOpen {
            hdr: RecordHeader::new::<FlowOpen>(RecordKind::FlowOpen, ns, cookie, cg),
            tuple: t,
            origin,
            uid,
        }));
    }

    /// One captured segment starting at `seq`.
    fn chunk(&mut self, cookie: u64, cg: u64, dir: Direction, seq: u32, data: &[u8], ns: u64) {
        let mut first = [0u8; 8];
        first[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        let kind = classify(u64::from_le_bytes(first)).unwrap_or(ChunkKind::Continuation);
        let n = data.len() as u32;
        let meta = HttpChunkMeta {
            hdr: RecordHeader {
                len: HttpChunk::wire_len(n),
                ..RecordHeader::new::<HttpChunk>(RecordKind::HttpChunk, ns, cookie, cg)
            },
            dir: dir as u8,
            chunk_kind: kind as u8,
            _pad: [0; 2],
            seq,
            payload_len: n,
            captured: n,
        };
        let mut b = bytes_of(&meta);
        b.extend_from_slice(data);
        self.0.push(b);
    }

    fn close(&mut self, cookie: u64, cg: u64, t: FlowTuple, end: [u32; 2], ns: u64) {
        let d = |e| DirStats {
            bytes: 100,
            packets: 2,
            payload_bytes: 50,
            end_seq: e,
            flags: DIR_SEQ_VALID | DIR_FIN,
        };
        self.0.push(bytes_of(&FlowClose {
            hdr: RecordHeader::new::<FlowClose>(RecordKind::FlowClose, ns, cookie, cg),
            tuple: t,
            first_ns: 1,
            last_ns: ns,
            dir: [d(end[0]), d(end[1])],
            reason: CloseReason::Fin as u8,
            _pad: [0; 7],
        }));
    }

    /// A whole request/response over flow `cookie`: the request in `req_dir`.
    #[expect(clippy::too_many_arguments, reason = "one exchange's parts")]
    fn exchange(
        &mut self,
        cookie: u64,
        cg: u64,
        t: FlowTuple,
        req_dir: Direction,
        req: &[u8],
        resp: &[u8],
        ns: u64,
    ) {
        self.chunk(cookie, cg, req_dir, 1000, req, ns);
        self.chunk(cookie, cg, req_dir.opposite(), 5000, resp, ns + 1);
        let mut end = [0u32; 2];
        end[req_dir.index()] = 1000 + req.len() as u32;
        end[req_dir.opposite().index()] = 5000 + resp.len() as u32;
        self.close(cookie, cg, t, end, ns + 2);
    }
}

impl Source for Records {
    fn drain(&mut self, f: &mut dyn for<'a> FnMut(Result<Raw<'a>, DecodeError>)) {
        for r in std::mem::take(&mut self.0) {
            f(decode(&r));
        }
    }
    fn flow(&self, _: u64) -> Option<FlowState> {
        None
    }
    fn flows(&self) -> Vec<(u64, FlowState)> {
        Vec::new()
    }
    fn remove_flow(&mut self, _: u64) {}
    fn losses(&self) -> Result<Vec<LossCount>, SourceError> {
        Ok(Vec::new())
    }
}

#[derive(Default)]
struct Lines(Vec<Value>);

impl RecordOut for Lines {
    fn record(&mut self, _: u64, _: &'static str, line: &[u8]) -> std::io::Result<()> {
        self.0
            .push(serde_json::from_slice(line).map_err(std::io::Error::other)?);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `records` through a live-agent pipeline with identities `id`; returns what it wrote.
fn run(records: Records, id: &mut Fake) -> Vec<Value> {
    let mut source = records;
    let settings = Settings {
        node: "test-node".into(),
        boot_id: "b".into(),
        attribution: Attribution::Cgroup,
        idle_timeout: Duration::from_secs(300),
        body_quiet: Duration::from_secs(1),
        progress_every: Duration::from_millis(20),
        period: Duration::from_secs(1),
        mesh: MeshConfig::default(),
    };
    let mut pipe = Pipeline::new(
        settings,
        None,
        None,
        &source,
        Clock::new(),
        Metrics::new(),
        0,
    )
    .expect("pipeline");
    pipe.set_local_pods(&id.monitored_pod_ips());
    let mut out = Lines::default();
    pipe.drain(&mut source);
    pipe.emit(id, &mut out).expect("emit");
    out.0
}

fn of_kind<'a>(r: &'a [Value], kind: &str) -> Vec<&'a Value> {
    r.iter().filter(|v| v["kind"] == kind).collect()
}

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

fn request(xfcc: Option<&str>) -> Vec<u8> {
    let mut r = b"GET /internal/admin/v0/users/lookup HTTP/1.1\r\nHost: profile\r\n".to_vec();
    if let Some(x) = xfcc {
        r.extend_from_slice(format!("x-forwarded-client-cert: {x}\r\n").as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// The server node of a mesh exchange from a pod on another node (10.77.9.9): the server
/// sidecar's mTLS socket (B1), its forward to the application from 127.0.0.6 (B2) and the
/// application's socket (B3).
fn server_side(xfcc: Option<&str>) -> Records {
    let mut r = Records::default();
    let (l, rem) = (Initiator::Local, Initiator::Remote);
    let b1 = tuple(("10.77.0.10", 15006), ("10.77.9.9", 50002), rem);
    let b2 = tuple(("127.0.0.6", 50004), ("10.77.0.10", 80), l);
    let b3 = tuple(("10.77.0.10", 80), ("127.0.0.6", 50004), rem);
    r.open(11, PROFILE_CG, b1, accepted(), 1337, 10);
    r.open(
        12,
        PROFILE_CG,
        b2,
        connected(("10.77.0.10", 80), 1337),
        1337,
        20,
    );
    r.open(13, PROFILE_CG, b3, accepted(), 0, 30);
    let req = request(xfcc);
    r.exchange(12, PROFILE_CG, b2, Direction::Egress, &req, RESPONSE, 40);
    r.exchange(13, PROFILE_CG, b3, Direction::Ingress, &req, RESPONSE, 41);
    r.close(11, PROFILE_CG, b1, [9000, 9000], 60);
    r
}

fn identities() -> Fake {
    let mut id = Fake::default();
    id.pod(
        "profile",
        "svc-profile",
        "user-profile",
        "10.77.0.10",
        Some(PROFILE_CG),
    );
    id.pod(
        "engine-remote",
        "svc-engine",
        "recommendation-engine",
        "10.77.9.9",
        None,
    );
    id
}

const XFCC: &str = "By=spiffe://cluster.local/ns/vantage/sa/user-profile;Hash=ab;Subject=\"\";\
                    URI=spiffe://cluster.local/ns/vantage/sa/recommendation-engine";

#[test]
fn a_remote_mesh_caller_is_the_one_the_sidecar_names() {
    let mut id = identities();
    let out = run(server_side(Some(XFCC)), &mut id);
    let http = of_kind(&out, "http");
    assert_eq!(http.len(), 1, "{out:#?}");
    let h = http[0];
    assert_eq!(h["observer"], "server");
    let src = &h["source"];
    assert_eq!(src["kind"], "pod");
    assert_eq!(src["pod"], "engine-remote");
    assert_eq!(src["service"], "svc-engine");
    assert_eq!(src["attested_by"], "mesh");
    assert_eq!(
        src["spiffe_id"],
        "spiffe://cluster.local/ns/vantage/sa/recommendation-engine"
    );
    assert_eq!(
        src["nat"],
        serde_json::json!({"ip": "127.0.0.6", "port": 50004})
    );
    assert!(
        src["ip"].is_null(),
        "the mesh names the account, not the address: {src}"
    );
    let dst = &h["destination"];
    assert_eq!(
        (dst["pod"].as_str(), dst["port"].as_u64()),
        (Some("profile"), Some(80))
    );
    assert_eq!(dst["ip"], "10.77.0.10");

    // The sidecar's two sockets are proxy flows; the application's connection is the
    // sidecar's (B2 reports it).
    let flows = of_kind(&out, "flow");
    let ids: Vec<u64> = flows.iter().filter_map(|f| f["flow_id"].as_u64()).collect();
    assert_eq!(ids, [12, 11], "{flows:#?}");
    for f in &flows {
        assert_eq!(f["proxy"], true, "{f}");
        assert_eq!(f["http_exchanges"], 0, "{f}");
    }
    assert_eq!(
        flows[1]["observer"], "server",
        "accepted: the kernel says so"
    );
    assert_eq!(flows[1]["source"]["pod"], "engine-remote");
}

#[test]
fn without_the_header_the_note_says_why_the_caller_is_unknown() {
    let mut id = identities();
    let out = run(server_side(None), &mut id);
    let http = of_kind(&out, "http");
    assert_eq!(http.len(), 1, "{out:#?}");
    let src = &http[0]["source"];
    assert_eq!(src["kind"], "unknown");
    assert!(
        src["note"]
            .as_str()
            .is_some_and(|n| n.contains("without x-forwarded-client-cert")),
        "{src}"
    );
    assert!(src.get("attested_by").is_none());
}

#[test]
fn a_service_account_of_several_pods_names_their_service() {
    let mut id = identities();
    id.pod(
        "engine-remote-2",
        "svc-engine",
        "recommendation-engine",
        "10.77.9.10",
        None,
    );
    let out = run(server_side(Some(XFCC)), &mut id);
    let src = &of_kind(&out, "http")[0]["source"];
    assert_eq!(src["kind"], "service");
    assert_eq!(src["service"], "svc-engine");
    assert_eq!(src["service_account"], "recommendation-engine");
    assert!(
        src["note"].as_str().is_some_and(|n| n.contains("2 pods")),
        "{src}"
    );
}

#[test]
fn a_local_caller_reports_the_exchange_and_the_server_side_is_not_repeated() {
    let mut id = identities();
    id.pod(
        "engine",
        "svc-engine",
        "recommendation-engine",
        "10.77.1.4",
        Some(ENGINE_CG),
    );
    let mut r = Records::default();
    // The local client's application leg, redirected to its sidecar, open around the exchange.
    let a1 = tuple(("10.77.1.4", 50000), ("127.0.0.1", 15001), Initiator::Local);
    r.open(1, ENGINE_CG, a1, connected(("10.77.0.10", 80), 0), 0, 5);
    r.0.extend(server_side(Some(XFCC)).0);
    let req = request(None);
    r.exchange(1, ENGINE_CG, a1, Direction::Egress, &req, RESPONSE, 70);
    let out = run(r, &mut id);
    let http = of_kind(&out, "http");
    assert_eq!(http.len(), 1, "{out:#?}");
    assert_eq!(http[0]["observer"], "client");
    assert_eq!(http[0]["source"]["pod"], "engine");
    assert_eq!(http[0]["destination"]["pod"], "profile");
    assert_eq!(
        http[0]["destination"]["nat"],
        serde_json::json!({"ip": "127.0.0.1", "port": 15001})
    );
}

#[test]
fn the_kernel_tells_the_direction_whatever_the_port_order() {
    let mut id = identities();
    let mut r = Records::default();
    // An accepted connection on port 50051 from client port 40000 (lower): the server's view.
    let t = tuple(
        ("10.77.0.10", 50051),
        ("10.77.9.9", 40000),
        Initiator::Remote,
    );
    r.open(21, PROFILE_CG, t, accepted(), 0, 1);
    r.close(21, PROFILE_CG, t, [1, 1], 2);
    // The same without the kernel's word: port order, a guess (the lower port serves).
    let u = tuple(
        ("10.77.0.10", 50051),
        ("10.77.9.9", 40000),
        Initiator::Unknown,
    );
    r.open(22, PROFILE_CG, u, SockOrigin::NONE, 0, 1);
    r.close(22, PROFILE_CG, u, [1, 1], 2);
    let out = run(r, &mut id);
    let flows = of_kind(&out, "flow");
    assert_eq!(flows.len(), 2, "{out:#?}");
    assert_eq!(flows[0]["observer"], "server");
    assert_eq!(flows[0]["source"]["pod"], "engine-remote");
    assert_eq!(flows[0]["source"]["port"], 40000);
    assert_eq!(flows[0]["destination"]["port"], 50051);
    assert_eq!(flows[1]["observer"], "client", "the guess is wrong here");
}
