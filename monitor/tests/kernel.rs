//! Tier-2 tests: the real kernel programs run on hand-built packets with `BPF_PROG_TEST_RUN`;
//! the ring-buffer records, the flow table and the counters are checked byte for byte.
//!
//! What the kernel does for a `cgroup_skb` test run (`bpf_prog_test_run_skb` in
//! `net/bpf/test_run.c`): `data_in` is an Ethernet frame; the kernel builds an skb on the
//! loopback device, allocates a dummy socket for it, and pulls the Ethernet header, so the
//! program sees the packet from the IP header on, as on a real cgroup hook. The dummy socket is
//! new for every call, so every call has a new socket cookie and is its own flow; `repeat` runs
//! the same skb (same socket, same cookie) again. The socket belongs to the calling thread's
//! cgroup v2, which is what `bpf_skb_cgroup_id` reports. The programs need no attachment.
//! The kernel refuses (EINVAL) a frame larger than a page minus the skb's head and tail room
//! (3,712 bytes on x86-64), and an IPv4 or IPv6 ethertype followed by less than a whole fixed
//! IP header.
//!
//! The socket-level programs (`cgroup/connect4`, `cgroup/connect6`, `sock_ops`) have no test
//! run for real sockets; they are exercised by real `connect()` and `accept()` calls of a child
//! process in a cgroup of its own (and a network namespace of its own, so its loopback traffic
//! stays there), with every program attached to that cgroup.
//!
//! These tests need root and the real object (not an `AYA_BUILD_SKIP` stub); they check both
//! first and fail with a message saying what is missing. They never skip.

use monitor_agent::clock::Clock;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use aya::{
    EbpfLoader,
    maps::{Map, MapType},
    programs::{Program, TestRun as _, TestRunOptions},
};
use monitor_agent::{capture::Capture, capture::CaptureError, capture::cgroup2_mount};
use monitor_common::{
    Direction, PROG_EGRESS, PROG_INGRESS,
    counter::{Counter, MAP_COUNTERS},
    flow::{
        CloseReason, DIR_FIN, DIR_RST, DIR_SEQ_VALID, DirStats, FAMILY_V4, FAMILY_V6,
        FLOW_MIRRORED, FLOWS_MAX, FlowClose, FlowOpen, FlowState, FlowTuple, Initiator,
        LOCAL_PEERS_MAX, MAP_FLOWS, MAP_LOCAL_PEERS, PeerKey,
    },
    http::{
        CONT_SEGMENTS, ChunkKind, HTTP_CAPTURE, HttpChunk, HttpChunkMeta, MAP_CHUNK_SCRATCH,
        REQUEST_PREFIXES,
    },
    quarantine::{
        MAP_QUARANTINE, MAP_QUARANTINE_ON, MAP_QUARANTINE_STATS, MODE_ENFORCE, QUARANTINE_MAX,
        QuarantineDirStats, QuarantineDrop, QuarantineEntry, QuarantineStats,
    },
    record::{MAP_EVENTS, RECORD_VERSION, RING_BYTES, RecordHeader, RecordKind, user},
    sock::{
        MAP_SOCK_ORIGIN, ORIGIN_CONNECT, ORIGIN_PASSIVE, PROG_CONNECT4, PROG_CONNECT6,
        PROG_SOCKOPS, SOCK_ORIGIN_MAX, SockOrigin,
    },
};

/// `enum bpf_prog_type` value of `cgroup_skb` programs (uapi).
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
/// `enum bpf_prog_type` value of `sock_ops` programs (uapi).
const BPF_PROG_TYPE_SOCK_OPS: u32 = 13;
/// `enum bpf_prog_type` value of `cgroup/connect*` programs (uapi).
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;

/// `cgroup_skb` verdict "pass": the monitor never drops, except quarantined cgroups' packets.
const PASS: u32 = 1;
/// `cgroup_skb` verdict "drop": only for a cgroup quarantined in enforce mode.
const DROP: u32 = 0;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPV6_HOPOPTS: u8 = 0;

/// IEEE 802 local experimental ethertype: a frame the kernel passes on as is.
const ETH_P_EXPERIMENTAL: u16 = 0x88b5;

/// IPv4 "don't fragment": set on real TCP packets, and must not look like a fragment.
const IP_DF: u16 = 0x4000;
/// IPv4 "more fragments".
const IP_MF: u16 = 0x2000;

const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 21);
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x21);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x10);
const CLIENT_PORT: u16 = 40_000;
const SERVER_PORT: u16 = 8080;

const GET_LOOKUP: &[u8] = b"GET /internal/admin/v0/users/lookup?fields=ssn_last4,email&state=CA \
HTTP/1.1\r\nHost: svc-user-profile-service\r\n\r\n";
const RESPONSE_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

// ---------------------------------------------------------------------------------------------
// Preconditions and loading.

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel tests need root: run `cargo xtask test` as root"
    );
}

// The object the agent crate embedded (the same bytes `Capture::load` uses).
use monitor_agent::capture::OBJECT;

fn require_object() {
    assert!(
        !OBJECT.is_empty(),
        "kernel tests need the real eBPF object, but this build embedded the AYA_BUILD_SKIP stub: \
         rebuild without AYA_BUILD_SKIP (`cargo xtask test` does)"
    );
}

fn load() -> Capture {
    require_root();
    require_object();
    match Capture::load() {
        Ok(c) => c,
        Err(e @ CaptureError::NoObject) => panic!("kernel tests cannot run: {e}"),
        Err(e) => panic!("loading the kernel programs failed: {e}"),
    }
}

/// The cgroup v2 id of this thread's cgroup (the inode number of its cgroup v2 directory), which
/// the dummy socket of a test run inherits. `None` if cgroup v2 is not mounted here.
fn own_cgroup_id() -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mount = cgroup2_mount()?;
    let own = std::fs::read_to_string("/proc/thread-self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir: PathBuf = mount.join(rel.trim_start_matches('/'));
    Some(std::fs::metadata(dir).ok()?.ino())
}

// ---------------------------------------------------------------------------------------------
// Packet builder.

/// One IPv4 or IPv6 packet with a TCP header (or raw layer-4 bytes), wrapped in Ethernet.
/// Checksums stay zero: the programs do not check them, and neither does a test run.
#[derive(Clone, Debug)]
struct Pkt {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack_seq: u32,
    flags: u8,
    /// TCP data offset in 32-bit words; options past 20 bytes are NOPs.
    doff: u8,
    /// IPv4 header length in 32-bit words; options past 20 bytes are NOPs.
    ihl: u8,
    /// IPv4 flags and fragment offset.
    frag: u16,
    /// IPv4 protocol / IPv6 next header.
    proto: u8,
    /// IPv4 `tot_len` / IPv6 `payload_len`; `None` computes the right value.
    ip_len: Option<u16>,
    /// Layer-4 bytes used instead of the TCP header and payload.
    l4: Option<Vec<u8>>,
    payload: Vec<u8>,
    /// Bytes after the IP packet (Ethernet padding).
    trailer: usize,
}

impl Pkt {
    fn tcp(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, sport: u16, dport: u16) -> Self {
        Self {
            src: src.into(),
            dst: dst.into(),
            sport,
            dport,
            seq: 1,
            ack_seq: 0,
            flags: ACK,
            doff: 5,
            ihl: 5,
            frag: IP_DF,
            proto: IPPROTO_TCP,
            ip_len: None,
            l4: None,
            payload: Vec::new(),
            trailer: 0,
        }
    }

    /// Client to server over IPv4 (egress on the client's socket).
    fn v4_out() -> Self {
        Self::tcp(CLIENT_V4, SERVER_V4, CLIENT_PORT, SERVER_PORT)
    }

    /// Server to client over IPv4 (ingress on the client's socket).
    fn v4_in() -> Self {
        Self::tcp(SERVER_V4, CLIENT_V4, SERVER_PORT, CLIENT_PORT)
    }

    /// Client to server over IPv6.
    fn v6_out() -> Self {
        Self::tcp(CLIENT_V6, SERVER_V6, CLIENT_PORT, SERVER_PORT)
    }

    fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    /// A segment as Linux sends it: 12 bytes of options (timestamps).
    fn with_timestamps(mut self) -> Self {
        self.doff = 8;
        self
    }

    fn l4_bytes(&self) -> Vec<u8> {
        if let Some(l4) = &self.l4 {
            return l4.clone();
        }
        let mut t = Vec::new();
        t.extend_from_slice(&self.sport.to_be_bytes());
        t.extend_from_slice(&self.dport.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack_seq.to_be_bytes());
        t.push(self.doff << 4);
        t.push(self.flags);
        t.extend_from_slice(&0xffffu16.to_be_bytes()); // window
        t.extend_from_slice(&[0; 4]); // checksum, urgent pointer
        let opts = (usize::from(self.doff) * 4).saturating_sub(20);
        t.extend(std::iter::repeat_n(1u8, opts)); // NOP options
        t.extend_from_slice(&self.payload);
        t
    }

    /// The IP packet (what the program sees).
    fn ip(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let mut p = Vec::new();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let hdr_len = usize::from(self.ihl) * 4;
                let tot = u16::try_from(hdr_len.max(20) + l4.len()).expect("packet fits");
                p.push(0x40 | self.ihl);
                p.push(0); // tos
                p.extend_from_slice(&self.ip_len.unwrap_or(tot).to_be_bytes());
                p.extend_from_slice(&0x1234u16.to_be_bytes()); // id
                p.extend_from_slice(&self.frag.to_be_bytes());
                p.push(64); // ttl
                p.push(self.proto);
                p.extend_from_slice(&[0; 2]); // checksum
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend(std::iter::repeat_n(1u8, hdr_len.saturating_sub(20)));
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let pl = u16::try_from(l4.len()).expect("packet fits");
                p.extend_from_slice(&[0x60, 0, 0, 0]);
                p.extend_from_slice(&self.ip_len.unwrap_or(pl).to_be_bytes());
                p.push(self.proto);
                p.push(64); // hop limit
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed address families"),
        }
        p.extend_from_slice(&l4);
        p.extend(std::iter::repeat_n(0u8, self.trailer));
        p
    }

    /// The Ethernet frame given to the test run.
    fn frame(&self) -> Vec<u8> {
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        eth(ethertype, &self.ip())
    }
}

/// An Ethernet frame around `l3`.
fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// A 16-byte record address from an IP address (IPv4 in the first four bytes).
fn raw(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut r = [0; 16];
            r[..4].copy_from_slice(&a.octets());
            r
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// The tuple the kernel should record for `pkt` seen in `dir`.
fn tuple_of(pkt: &Pkt, dir: Direction, initiator: Initiator) -> FlowTuple {
    let (local, remote, lport, rport) = match dir {
        Direction::Egress => (pkt.src, pkt.dst, pkt.sport, pkt.dport),
        Direction::Ingress => (pkt.dst, pkt.src, pkt.dport, pkt.sport),
    };
    FlowTuple {
        family: if local.is_ipv4() {
            FAMILY_V4
        } else {
            FAMILY_V6
        },
        initiator: initiator as u8,
        _pad: [0; 2],
        local_port: lport,
        remote_port: rport,
        local_addr: raw(local),
        remote_addr: raw(remote),
    }
}

// ---------------------------------------------------------------------------------------------
// Running a program and collecting what it wrote.

/// A decoded record, owned.
#[derive(Debug)]
enum Rec {
    Open(FlowOpen),
    Close(FlowClose),
    Chunk(Chunk),
    Drop(QuarantineDrop),
}

#[derive(Debug)]
struct Chunk {
    meta: HttpChunkMeta,
    dir: Direction,
    kind: ChunkKind,
    data: Vec<u8>,
}

impl Rec {
    fn hdr(&self) -> &RecordHeader {
        match self {
            Self::Open(r) => &r.hdr,
            Self::Close(r) => &r.hdr,
            Self::Chunk(c) => &c.meta.hdr,
            Self::Drop(d) => &d.hdr,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Open(_) => "open",
            Self::Close(_) => "close",
            Self::Chunk(_) => "chunk",
            Self::Drop(_) => "quarantine-drop",
        }
    }
}

/// What one test run produced.
#[derive(Debug)]
struct Outcome {
    records: Vec<Rec>,
    /// Counter increments during the run, indexed like [`Counter::ALL`].
    delta: [u64; Counter::COUNT as usize],
    /// `CLOCK_BOOTTIME` just before and just after the run.
    window: (u64, u64),
}

impl Outcome {
    fn kinds(&self) -> Vec<&'static str> {
        self.records.iter().map(Rec::name).collect()
    }

    /// Asserts the counter increments: those listed, and zero for every other counter.
    fn assert_counters(&self, expected: &[(Counter, u64)]) {
        for c in Counter::ALL {
            let want = expected
                .iter()
                .find(|(e, _)| *e == c)
                .map_or(0, |(_, n)| *n);
            assert_eq!(
                self.delta[c as usize],
                want,
                "counter {} moved by {}, expected {want} (all deltas: {:?})",
                c.name(),
                self.delta[c as usize],
                self.delta
            );
        }
    }

    /// The only cookie in the records (every record of one run has the same one).
    fn cookie(&self) -> u64 {
        let c = self.records.first().expect("a record").hdr().cookie;
        assert!(self.records.iter().all(|r| r.hdr().cookie == c));
        c
    }
}

struct Harness {
    cap: Capture,
    cgroup_id: Option<u64>,
}

impl Harness {
    fn new() -> Self {
        Self {
            cap: load(),
            cgroup_id: own_cgroup_id(),
        }
    }

    fn run(&mut self, dir: Direction, frame: &[u8]) -> Outcome {
        self.run_repeat(dir, frame, 1)
    }

    /// Runs the program of `dir` on `frame` (`repeat` times on the same skb), asserts the pass
    /// verdict, and drains and checks every record written.
    fn run_repeat(&mut self, dir: Direction, frame: &[u8], repeat: u32) -> Outcome {
        let name = match dir {
            Direction::Egress => PROG_EGRESS,
            Direction::Ingress => PROG_INGRESS,
        };
        let (verdict, out) = self.run_verdict(dir, frame, repeat);
        assert_eq!(
            verdict, PASS,
            "{name} must pass every packet (frame {frame:02x?})"
        );
        out
    }

    /// Runs the program of `dir` on `frame` once, asserts the verdict, and drains and checks
    /// every record written.
    fn run_expect(&mut self, dir: Direction, frame: &[u8], verdict: u32) -> Outcome {
        let (got, out) = self.run_verdict(dir, frame, 1);
        assert_eq!(got, verdict, "verdict of {dir:?} (frame {frame:02x?})");
        out
    }

    /// Runs the program of `dir` on `frame` (`repeat` times on the same skb) and returns its
    /// verdict with every record written (drained and checked).
    fn run_verdict(&mut self, dir: Direction, frame: &[u8], repeat: u32) -> (u32, Outcome) {
        let name = match dir {
            Direction::Egress => PROG_EGRESS,
            Direction::Ingress => PROG_INGRESS,
        };
        let before = self.cap.counters().expect("counters readable");
        let t0 = Clock::boot_ns();
        let res = self
            .cap
            .program(name)
            .unwrap_or_else(|| panic!("program {name} not loaded"))
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| {
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                panic!("BPF_PROG_TEST_RUN of {name} failed: {e}: {cause:?} (frame {frame:02x?})")
            });
        let t1 = Clock::boot_ns();
        let after = self.cap.counters().expect("counters readable");
        let mut delta = [0; Counter::COUNT as usize];
        for (i, d) in delta.iter_mut().enumerate() {
            *d = after[i] - before[i];
        }
        let mut records = Vec::new();
        while let Some(item) = self.cap.ring.next() {
            let rec = match user::decode(&item) {
                Ok(user::Record::FlowOpen(r)) => Rec::Open(r),
                Ok(user::Record::FlowClose(r)) => Rec::Close(r),
                Ok(user::Record::HttpChunk(c)) => Rec::Chunk(Chunk {
                    meta: c.meta,
                    dir: c.dir,
                    kind: c.chunk_kind,
                    data: c.data.to_vec(),
                }),
                Ok(user::Record::QuarantineDrop(d)) => Rec::Drop(d),
                Err(e) => panic!("the kernel wrote an undecodable record: {e}"),
            };
            records.push(rec);
        }
        let out = Outcome {
            records,
            delta,
            window: (t0, t1),
        };
        for r in &out.records {
            self.check_header(r, &out);
        }
        (res.return_value, out)
    }

    /// Header fields every record must have right.
    fn check_header(&self, r: &Rec, out: &Outcome) {
        let h = r.hdr();
        let (kind, len) = match r {
            Rec::Open(_) => (RecordKind::FlowOpen, size_of::<FlowOpen>()),
            Rec::Close(_) => (RecordKind::FlowClose, size_of::<FlowClose>()),
            // The fixed part and the captured bytes only.
            Rec::Chunk(c) => (
                RecordKind::HttpChunk,
                size_of::<HttpChunkMeta>() + c.data.len(),
            ),
            Rec::Drop(_) => (RecordKind::QuarantineDrop, size_of::<QuarantineDrop>()),
        };
        assert_eq!(h.version, RECORD_VERSION);
        assert_eq!(h.kind, kind as u8);
        assert_eq!(h._pad, [0; 2]);
        assert_eq!(h.len as usize, len);
        assert_ne!(h.cookie, 0, "a test run's dummy socket has a cookie");
        assert!(
            (out.window.0..=out.window.1).contains(&h.ts_ns),
            "record time {} outside the run {:?}",
            h.ts_ns,
            out.window
        );
        self.check_cgroup(h.cgroup_id);
    }

    fn check_cgroup(&self, id: u64) {
        match self.cgroup_id {
            Some(own) => assert_eq!(id, own, "cgroup id is the test thread's cgroup v2"),
            // Without a cgroup v2 mount the expected id cannot be computed here.
            None => assert_ne!(id, 0),
        }
    }

    fn flows(&self) -> Vec<(u64, FlowState)> {
        self.cap.flows()
    }

    /// The single flow table entry, which must belong to `cookie`.
    fn only_flow(&self, cookie: u64) -> FlowState {
        let flows = self.flows();
        assert_eq!(flows.len(), 1, "one flow entry expected, got {flows:?}");
        assert_eq!(flows[0].0, cookie);
        let st = self.cap.flow(cookie).expect("flow entry by cookie");
        self.check_cgroup(st.cgroup_id);
        st
    }
}

fn open(r: &Rec) -> &FlowOpen {
    match r {
        Rec::Open(o) => o,
        other => panic!("expected a flow open record, got {other:?}"),
    }
}

fn close(r: &Rec) -> &FlowClose {
    match r {
        Rec::Close(c) => c,
        other => panic!("expected a flow close record, got {other:?}"),
    }
}

fn chunk(r: &Rec) -> &Chunk {
    match r {
        Rec::Chunk(c) => c,
        other => panic!("expected an HTTP chunk record, got {other:?}"),
    }
}

/// Asserts a start chunk that holds the whole payload of `pkt`.
fn assert_whole_chunk(c: &Chunk, pkt: &Pkt, dir: Direction, kind: ChunkKind) {
    let len = u32::try_from(pkt.payload.len()).expect("small payload");
    assert_eq!(c.dir, dir);
    assert_eq!(c.kind, kind);
    assert_eq!(c.meta.dir, dir as u8);
    assert_eq!(c.meta.chunk_kind, kind as u8);
    assert_eq!(c.meta._pad, [0; 2]);
    assert_eq!(c.meta.seq, pkt.seq);
    assert_eq!(c.meta.payload_len, len);
    assert_eq!(c.meta.captured, len);
    assert_eq!(c.data, pkt.payload, "captured bytes are the payload");
}

/// Per-direction stats after one data packet.
fn one_packet(pkt: &Pkt, flags: u32) -> DirStats {
    let payload = u32::try_from(pkt.payload.len()).expect("small payload");
    DirStats {
        bytes: pkt.ip().len() as u64,
        packets: 1,
        payload_bytes: u64::from(payload),
        end_seq: if payload > 0 {
            pkt.seq.wrapping_add(payload)
        } else {
            0
        },
        flags,
    }
}

fn stats(dir: Direction, s: DirStats) -> [DirStats; 2] {
    let mut d = [DirStats::default(); 2];
    d[dir.index()] = s;
    d
}

// ---------------------------------------------------------------------------------------------
// Layout: programs and maps as the kernel sees them.

#[test]
fn object_has_every_program_and_map_with_the_shared_layout() {
    require_root();
    require_object();
    // Capture::load fails when a program or map is missing; this also checks what the kernel
    // made of them: program types, map types, key and value sizes against the shared types.
    let _capture = load();
    let mut ebpf = EbpfLoader::new()
        .load(OBJECT)
        .unwrap_or_else(|e| panic!("object does not load: {e}"));
    for name in [PROG_EGRESS, PROG_INGRESS] {
        let prog = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program {name} missing from the object"));
        let Program::CgroupSkb(p) = prog else {
            panic!("{name} is not a cgroup_skb program: {prog:?}");
        };
        p.load()
            .unwrap_or_else(|e| panic!("verifier rejected {name}: {e}"));
    }
    for name in [PROG_CONNECT4, PROG_CONNECT6] {
        let prog = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program {name} missing from the object"));
        let Program::CgroupSockAddr(p) = prog else {
            panic!("{name} is not a cgroup sock_addr program: {prog:?}");
        };
        p.load()
            .unwrap_or_else(|e| panic!("verifier rejected {name}: {e}"));
    }
    let prog = ebpf
        .program_mut(PROG_SOCKOPS)
        .expect("program monitor_sockops missing from the object");
    let Program::SockOps(p) = prog else {
        panic!("{PROG_SOCKOPS} is not a sock_ops program: {prog:?}");
    };
    p.load()
        .unwrap_or_else(|e| panic!("verifier rejected {PROG_SOCKOPS}: {e}"));
    let mut map_ids = Vec::new();
    for (name, ty, key, value, max) in [
        (MAP_EVENTS, MapType::RingBuf, 0, 0, RING_BYTES),
        (
            MAP_FLOWS,
            MapType::Hash,
            size_of::<u64>(),
            size_of::<FlowState>(),
            FLOWS_MAX,
        ),
        (
            MAP_COUNTERS,
            MapType::PerCpuArray,
            size_of::<u32>(),
            size_of::<u64>(),
            Counter::COUNT,
        ),
        (
            MAP_CHUNK_SCRATCH,
            MapType::PerCpuArray,
            size_of::<u32>(),
            size_of::<HttpChunk>(),
            1,
        ),
        (
            MAP_QUARANTINE_ON,
            MapType::Array,
            size_of::<u32>(),
            size_of::<u32>(),
            1,
        ),
        (
            MAP_QUARANTINE,
            MapType::Hash,
            size_of::<u64>(),
            size_of::<QuarantineEntry>(),
            QUARANTINE_MAX,
        ),
        (
            MAP_QUARANTINE_STATS,
            MapType::PerCpuHash,
            size_of::<u64>(),
            size_of::<QuarantineStats>(),
            QUARANTINE_MAX,
        ),
        (
            MAP_SOCK_ORIGIN,
            MapType::LruHash,
            size_of::<u64>(),
            size_of::<SockOrigin>(),
            SOCK_ORIGIN_MAX,
        ),
        // Last: the one map only ingress uses.
        (
            MAP_LOCAL_PEERS,
            MapType::Hash,
            size_of::<PeerKey>(),
            size_of::<u8>(),
            LOCAL_PEERS_MAX,
        ),
    ] {
        let map = ebpf
            .map(name)
            .unwrap_or_else(|| panic!("map {name} missing from the object"));
        let data = match (map, ty) {
            (Map::RingBuf(d), MapType::RingBuf)
            | (Map::HashMap(d), MapType::Hash)
            | (Map::PerCpuArray(d), MapType::PerCpuArray)
            | (Map::Array(d), MapType::Array)
            | (Map::PerCpuHashMap(d), MapType::PerCpuHash)
            | (Map::LruHashMap(d), MapType::LruHash) => d,
            (other, _) => panic!("map {name} has the wrong type: {other:?}"),
        };
        let info = data.info().expect("map info");
        assert_eq!(info.map_type().expect("known map type"), ty, "{name}");
        assert_eq!(info.key_size() as usize, key, "{name} key size");
        assert_eq!(info.value_size() as usize, value, "{name} value size");
        assert_eq!(info.max_entries(), max, "{name} max entries");
        assert_eq!(info.name_as_str(), Some(name), "{name} kernel name");
        map_ids.push(info.id());
    }
    // Ingress uses every map; egress never looks up LOCAL_PEERS (only incoming requests are
    // mirrored), so the compiler drops that lookup there.
    let egress_maps: Vec<u32> = map_ids[..map_ids.len() - 1].to_vec();
    for (name, mut want) in [(PROG_EGRESS, egress_maps), (PROG_INGRESS, map_ids.clone())] {
        let info = ebpf
            .program(name)
            .expect("program present")
            .info()
            .expect("program info");
        assert_eq!(
            info.program_type() as u32,
            BPF_PROG_TYPE_CGROUP_SKB,
            "{name}"
        );
        assert_eq!(info.name_as_str(), Some(name));
        let mut used = info
            .map_ids()
            .expect("map ids readable")
            .expect("kernel reports map ids");
        used.sort_unstable();
        want.sort_unstable();
        assert_eq!(used, want, "{name} uses exactly the expected maps");
    }
    // The socket-level programs only write SOCK_ORIGIN.
    let origin_id = map_ids[map_ids.len() - 2];
    for (name, ty) in [
        (PROG_CONNECT4, BPF_PROG_TYPE_CGROUP_SOCK_ADDR),
        (PROG_CONNECT6, BPF_PROG_TYPE_CGROUP_SOCK_ADDR),
        (PROG_SOCKOPS, BPF_PROG_TYPE_SOCK_OPS),
    ] {
        let info = ebpf
            .program(name)
            .expect("program present")
            .info()
            .expect("program info");
        assert_eq!(info.program_type() as u32, ty, "{name}");
        assert_eq!(info.name_as_str(), Some(name));
        let used = info
            .map_ids()
            .expect("map ids readable")
            .expect("kernel reports map ids");
        assert_eq!(used, [origin_id], "{name} uses SOCK_ORIGIN only");
    }
}

// ---------------------------------------------------------------------------------------------
// Flows.

#[test]
fn egress_syn_opens_a_flow_initiated_locally() {
    let mut h = Harness::new();
    // A SYN as Linux sends it: 20 bytes of options.
    let mut pkt = Pkt::v4_out().flags(SYN).seq(0x8000_0001);
    pkt.doff = 10;
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open"]);
    let o = open(&out.records[0]);
    let want = FlowTuple {
        family: FAMILY_V4,
        initiator: Initiator::Local as u8,
        _pad: [0; 2],
        local_port: CLIENT_PORT,
        remote_port: SERVER_PORT,
        local_addr: raw(CLIENT_V4.into()),
        remote_addr: raw(SERVER_V4.into()),
    };
    assert_eq!(o.tuple, want);
    assert_eq!(o.tuple.local_ip(), IpAddr::from(CLIENT_V4));
    assert_eq!(o.tuple.remote_ip(), IpAddr::from(SERVER_V4));
    // No connect hook ran for the test run's dummy socket, which root owns.
    assert_eq!(o.origin, SockOrigin::NONE);
    assert_eq!(o.uid, 0);
    out.assert_counters(&[(Counter::Packets, 1)]);

    let st = h.only_flow(out.cookie());
    assert_eq!(st.tuple, want);
    assert_eq!(st.first_ns, o.hdr.ts_ns);
    assert_eq!(st.last_ns, o.hdr.ts_ns);
    assert_eq!(
        st.dir,
        stats(
            Direction::Egress,
            DirStats {
                bytes: 60,
                packets: 1,
                ..DirStats::default()
            }
        )
    );
    assert_eq!(st.cont_budget, [0, 0]);
    assert_eq!(st.flags, 0);
    assert_eq!(st._pad, [0; 5]);
}

#[test]
fn syn_with_data_counts_the_syn_before_the_payload() {
    // TCP Fast Open: the SYN carries data, whose first byte is ISN + 1.
    let mut h = Harness::new();
    let pkt = Pkt::v4_out()
        .flags(SYN)
        .seq(1000)
        .payload(b"GET /tfo HTTP/1.1\r\n\r\n");
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    assert_eq!(
        open(&out.records[0]).tuple,
        tuple_of(&pkt, Direction::Egress, Initiator::Local)
    );
    let c = chunk(&out.records[1]);
    assert_eq!(c.meta.seq, 1001);
    assert_eq!(c.data, pkt.payload);
    let st = h.only_flow(out.cookie());
    assert_eq!(st.dir[0].end_seq, 1001 + pkt.payload.len() as u32);
    out.assert_counters(&[(Counter::Packets, 1), (Counter::Chunks, 1)]);
}

#[test]
fn every_test_run_is_a_new_socket_and_repeat_reuses_it() {
    let mut h = Harness::new();
    let syn = Pkt::v4_out().flags(SYN).frame();
    let a = h.run(Direction::Egress, &syn);
    let b = h.run(Direction::Egress, &syn);
    assert_eq!((a.kinds(), b.kinds()), (vec!["open"], vec!["open"]));
    assert_ne!(
        a.cookie(),
        b.cookie(),
        "each test run has its own dummy socket"
    );
    assert_eq!(h.flows().len(), 2);

    // `repeat` runs the same skb, so the same socket: one flow, three packets.
    let mut h = Harness::new();
    let pkt = Pkt::v4_out()
        .flags(ACK | PSH)
        .seq(1000)
        .payload(GET_LOOKUP)
        .with_timestamps();
    let out = h.run_repeat(Direction::Egress, &pkt.frame(), 3);
    assert_eq!(out.kinds(), ["open", "chunk", "chunk", "chunk"]);
    for r in &out.records[1..] {
        assert_whole_chunk(chunk(r), &pkt, Direction::Egress, ChunkKind::RequestStart);
    }
    out.assert_counters(&[(Counter::Packets, 3), (Counter::Chunks, 3)]);
    let st = h.only_flow(out.cookie());
    let one = one_packet(&pkt, DIR_SEQ_VALID);
    // The same segment three times is a retransmission: the end sequence does not move.
    assert_eq!(
        st.dir,
        stats(
            Direction::Egress,
            DirStats {
                bytes: 3 * one.bytes,
                packets: 3,
                payload_bytes: 3 * one.payload_bytes,
                ..one
            }
        )
    );
}

#[test]
fn packets_that_do_not_start_a_flow_leave_no_trace() {
    let mut h = Harness::new();
    let cases = [
        ("pure ACK", Direction::Egress, Pkt::v4_out().flags(ACK)),
        ("pure ACK in", Direction::Ingress, Pkt::v4_in().flags(ACK)),
        // A listening socket's SYN and SYN-ACK: the accepted socket has its own cookie.
        ("SYN received", Direction::Ingress, Pkt::v4_in().flags(SYN)),
        (
            "SYN-ACK sent",
            Direction::Egress,
            Pkt::v4_out().flags(SYN | ACK),
        ),
        (
            "SYN-ACK received",
            Direction::Ingress,
            Pkt::v4_in().flags(SYN | ACK),
        ),
        (
            "FIN of no flow",
            Direction::Egress,
            Pkt::v4_out().flags(FIN | ACK),
        ),
        (
            "RST of no flow",
            Direction::Ingress,
            Pkt::v4_in().flags(RST),
        ),
        ("IPv6 pure ACK", Direction::Egress, Pkt::v6_out().flags(ACK)),
    ];
    for (what, dir, pkt) in cases {
        let out = h.run(dir, &pkt.frame());
        assert!(out.records.is_empty(), "{what}: {:?}", out.records);
        out.assert_counters(&[(Counter::Packets, 1)]);
        assert!(h.flows().is_empty(), "{what} created a flow");
    }
}

#[test]
fn rst_with_http_payload_opens_captures_and_closes() {
    let mut h = Harness::new();
    let pkt = Pkt::v4_out()
        .flags(ACK | PSH | RST)
        .seq(1000)
        .payload(GET_LOOKUP);
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk", "close"]);
    let o = open(&out.records[0]);
    let want = tuple_of(&pkt, Direction::Egress, Initiator::Unknown);
    assert_eq!(o.tuple, want);
    assert_whole_chunk(
        chunk(&out.records[1]),
        &pkt,
        Direction::Egress,
        ChunkKind::RequestStart,
    );
    let c = close(&out.records[2]);
    assert_eq!(c.tuple, want);
    assert_eq!(CloseReason::from_u8(c.reason), Some(CloseReason::Rst));
    assert_eq!(c._pad, [0; 7]);
    assert_eq!(c.first_ns, o.hdr.ts_ns);
    assert_eq!(c.last_ns, o.hdr.ts_ns);
    assert_eq!(
        c.dir,
        stats(
            Direction::Egress,
            DirStats {
                bytes: 40 + GET_LOOKUP.len() as u64,
                packets: 1,
                payload_bytes: GET_LOOKUP.len() as u64,
                end_seq: 1000 + GET_LOOKUP.len() as u32,
                flags: DIR_SEQ_VALID | DIR_RST,
            }
        )
    );
    out.assert_counters(&[(Counter::Packets, 1), (Counter::Chunks, 1)]);
    assert!(h.flows().is_empty(), "a closed flow leaves the table");
}

#[test]
fn rst_with_non_http_payload_on_ingress_opens_and_closes() {
    let mut h = Harness::new();
    let pkt = Pkt::v4_in()
        .flags(ACK | RST)
        .seq(77)
        .payload(b"hello world, not http");
    let out = h.run(Direction::Ingress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "close"]);
    let want = tuple_of(&pkt, Direction::Ingress, Initiator::Unknown);
    assert_eq!(open(&out.records[0]).tuple, want);
    let c = close(&out.records[1]);
    assert_eq!(c.tuple, want);
    assert_eq!(CloseReason::from_u8(c.reason), Some(CloseReason::Rst));
    assert_eq!(
        c.dir,
        stats(
            Direction::Ingress,
            one_packet(&pkt, DIR_SEQ_VALID | DIR_RST)
        )
    );
    out.assert_counters(&[(Counter::Packets, 1)]);
    assert!(h.flows().is_empty());
}

#[test]
fn fin_in_one_direction_does_not_close() {
    // FIN both ways would need two packets on one socket: egress and ingress are separate test
    // runs, hence separate sockets. One FIN is marked and the flow stays.
    let mut h = Harness::new();
    let pkt = Pkt::v4_out()
        .flags(ACK | FIN)
        .seq(5)
        .payload(b"last bytes, not http");
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open"]);
    let st = h.only_flow(out.cookie());
    assert_eq!(
        st.dir,
        stats(Direction::Egress, one_packet(&pkt, DIR_SEQ_VALID | DIR_FIN))
    );
    out.assert_counters(&[(Counter::Packets, 1)]);
}

#[test]
fn non_http_payload_opens_a_flow_without_a_chunk() {
    let mut h = Harness::new();
    let pkt = Pkt::v4_out()
        .flags(ACK | PSH)
        .seq(1)
        .payload(b"hello world, not http");
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open"]);
    assert_eq!(
        open(&out.records[0]).tuple,
        tuple_of(&pkt, Direction::Egress, Initiator::Unknown)
    );
    out.assert_counters(&[(Counter::Packets, 1)]);
    let st = h.only_flow(out.cookie());
    assert_eq!(
        st.dir,
        stats(Direction::Egress, one_packet(&pkt, DIR_SEQ_VALID))
    );
    assert_eq!(st.cont_budget, [0, 0]);
}

// ---------------------------------------------------------------------------------------------
// HTTP capture.

#[test]
fn egress_get_is_captured_whole() {
    let mut h = Harness::new();
    let pkt = Pkt::v4_out()
        .flags(ACK | PSH)
        .seq(1000)
        .payload(GET_LOOKUP)
        .with_timestamps();
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    assert_eq!(
        open(&out.records[0]).tuple,
        tuple_of(&pkt, Direction::Egress, Initiator::Unknown)
    );
    let c = chunk(&out.records[1]);
    assert_whole_chunk(c, &pkt, Direction::Egress, ChunkKind::RequestStart);
    assert_eq!(c.meta.seq, 1000);
    out.assert_counters(&[(Counter::Packets, 1), (Counter::Chunks, 1)]);

    let st = h.only_flow(out.cookie());
    assert_eq!(
        st.dir,
        stats(
            Direction::Egress,
            DirStats {
                bytes: (20 + 32 + GET_LOOKUP.len()) as u64,
                packets: 1,
                payload_bytes: GET_LOOKUP.len() as u64,
                end_seq: 1000 + GET_LOOKUP.len() as u32,
                flags: DIR_SEQ_VALID,
            }
        )
    );
    // The head ended in this segment: no continuation expected.
    assert_eq!(st.cont_budget, [0, 0]);
}

#[test]
fn ingress_response_is_captured_with_local_as_destination() {
    let mut h = Harness::new();
    let pkt = Pkt::v4_in()
        .flags(ACK | PSH)
        .seq(0xffff_fff0)
        .payload(RESPONSE_HELLO)
        .with_timestamps();
    let out = h.run(Direction::Ingress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    let o = open(&out.records[0]);
    assert_eq!(o.tuple.local_ip(), IpAddr::from(CLIENT_V4));
    assert_eq!(o.tuple.remote_ip(), IpAddr::from(SERVER_V4));
    assert_eq!(
        (o.tuple.local_port, o.tuple.remote_port),
        (CLIENT_PORT, SERVER_PORT)
    );
    assert_eq!(
        o.tuple,
        tuple_of(&pkt, Direction::Ingress, Initiator::Unknown)
    );
    assert_whole_chunk(
        chunk(&out.records[1]),
        &pkt,
        Direction::Ingress,
        ChunkKind::ResponseStart,
    );
    out.assert_counters(&[(Counter::Packets, 1), (Counter::Chunks, 1)]);
    let st = h.only_flow(out.cookie());
    // The end sequence number wraps past 2^32.
    assert_eq!(
        st.dir,
        stats(Direction::Ingress, one_packet(&pkt, DIR_SEQ_VALID))
    );
    assert_eq!(
        st.dir[1].end_seq,
        0xffff_fff0u32.wrapping_add(RESPONSE_HELLO.len() as u32)
    );
    // The segment ends in body bytes, not CRLFCRLF, so the kernel cannot see that the head
    // ended: it keeps capturing the next segments of this direction.
    assert_eq!(st.cont_budget, [0, CONT_SEGMENTS]);
}

#[test]
fn ipv6_get_is_captured_with_v6_addresses() {
    let mut h = Harness::new();
    let pkt = Pkt::v6_out()
        .flags(ACK | PSH)
        .seq(1000)
        .payload(GET_LOOKUP)
        .with_timestamps();
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    let o = open(&out.records[0]);
    assert_eq!(o.tuple.family, FAMILY_V6);
    assert_eq!(o.tuple.local_addr, CLIENT_V6.octets());
    assert_eq!(o.tuple.remote_addr, SERVER_V6.octets());
    assert_eq!(o.tuple.local_ip(), IpAddr::from(CLIENT_V6));
    assert_eq!(
        o.tuple,
        tuple_of(&pkt, Direction::Egress, Initiator::Unknown)
    );
    assert_whole_chunk(
        chunk(&out.records[1]),
        &pkt,
        Direction::Egress,
        ChunkKind::RequestStart,
    );
    out.assert_counters(&[(Counter::Packets, 1), (Counter::Chunks, 1)]);
    let st = h.only_flow(out.cookie());
    assert_eq!(st.dir[0].bytes, (40 + 32 + GET_LOOKUP.len()) as u64);
    assert_eq!(st.dir[0].end_seq, 1000 + GET_LOOKUP.len() as u32);
}

#[test]
fn ipv6_syn_opens_a_flow() {
    let mut h = Harness::new();
    let pkt = Pkt::v6_out().flags(SYN).seq(9);
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open"]);
    assert_eq!(
        open(&out.records[0]).tuple,
        tuple_of(&pkt, Direction::Egress, Initiator::Local)
    );
    out.assert_counters(&[(Counter::Packets, 1)]);
}

#[test]
fn head_without_crlfcrlf_is_captured_and_arms_continuations() {
    // The continuation chunks themselves cannot be tested here: each test run is a new socket,
    // so a second segment would be another flow. What is checked is the chunk and the budget the
    // flow entry keeps for the next segments.
    let mut h = Harness::new();
    let pkt = Pkt::v4_out()
        .flags(ACK | PSH)
        .seq(4242)
        .payload(b"GET /a HTTP/1.1\r\nHo");
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    assert_whole_chunk(
        chunk(&out.records[1]),
        &pkt,
        Direction::Egress,
        ChunkKind::RequestStart,
    );
    out.assert_counters(&[(Counter::Packets, 1), (Counter::Chunks, 1)]);
    assert_eq!(h.only_flow(out.cookie()).cont_budget, [CONT_SEGMENTS, 0]);
}

#[test]
fn oversized_start_segment_is_truncated_to_the_capture_size() {
    let mut h = Harness::new();
    let mut payload = b"GET /big HTTP/1.1\r\nHost: web\r\nCookie: ".to_vec();
    while payload.len() < 2600 {
        payload.extend_from_slice(b"0123456789abcdef");
    }
    payload.extend_from_slice(b"\r\n\r\n");
    let pkt = Pkt::v4_out().flags(ACK | PSH).seq(1).payload(&payload);
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    let c = chunk(&out.records[1]);
    assert_eq!(c.kind, ChunkKind::RequestStart);
    assert_eq!(c.meta.payload_len as usize, payload.len());
    assert_eq!(c.meta.captured as usize, HTTP_CAPTURE);
    assert_eq!(c.data, payload[..HTTP_CAPTURE]);
    out.assert_counters(&[
        (Counter::Packets, 1),
        (Counter::Chunks, 1),
        (Counter::ChunkTruncated, 1),
    ]);
    // The end of the payload (past the capture) was read: the head ended there.
    assert_eq!(h.only_flow(out.cookie()).cont_budget, [0, 0]);

    // Longer than the capture and not ending the head (head plus body in one super-packet):
    // no continuation is armed, since the agent cannot join one to a cut-off head.
    let mut body_follows = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n".to_vec();
    body_follows.extend(std::iter::repeat_n(b'x', 3000));
    let pkt = Pkt::v4_out().flags(ACK | PSH).seq(1).payload(&body_follows);
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    let st = h.cap.flow(out.cookie()).expect("flow entry by cookie");
    assert_eq!(st.cont_budget, [0, 0]);
}

#[test]
fn every_request_method_and_only_those_start_a_chunk() {
    let mut h = Harness::new();
    for prefix in REQUEST_PREFIXES {
        let mut payload = prefix.to_vec();
        payload.extend_from_slice(b"/x HTTP/1.1\r\n\r\n");
        let pkt = Pkt::v4_out().flags(ACK | PSH).seq(3).payload(&payload);
        let out = h.run(Direction::Egress, &pkt.frame());
        let what = String::from_utf8_lossy(prefix);
        assert_eq!(out.kinds(), ["open", "chunk"], "{what}");
        assert_whole_chunk(
            chunk(&out.records[1]),
            &pkt,
            Direction::Egress,
            ChunkKind::RequestStart,
        );
    }
    for near_miss in [
        &b"get / HTTP/1.1\r\n\r\n"[..],
        b"GETX / HTTP/1.1\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // TLS ClientHello
        b"GET /\r\n",                                    // 7 bytes: too short to classify
    ] {
        let pkt = Pkt::v4_out().flags(ACK | PSH).seq(3).payload(near_miss);
        let out = h.run(Direction::Egress, &pkt.frame());
        assert_eq!(out.kinds(), ["open"], "{near_miss:?}");
    }
    // Eight bytes are enough.
    let pkt = Pkt::v4_in().flags(ACK).seq(3).payload(b"HTTP/1.0");
    let out = h.run(Direction::Ingress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    assert_whole_chunk(
        chunk(&out.records[1]),
        &pkt,
        Direction::Ingress,
        ChunkKind::ResponseStart,
    );
}

#[test]
fn ethernet_padding_is_not_payload() {
    // The IP length, not the skb length, bounds the payload.
    let mut h = Harness::new();
    for mut pkt in [Pkt::v4_out(), Pkt::v6_out()] {
        pkt = pkt
            .flags(ACK | PSH)
            .seq(10)
            .payload(b"GET /p HTTP/1.1\r\n\r\n");
        pkt.trailer = 9;
        let out = h.run(Direction::Egress, &pkt.frame());
        assert_eq!(out.kinds(), ["open", "chunk"], "{pkt:?}");
        assert_whole_chunk(
            chunk(&out.records[1]),
            &pkt,
            Direction::Egress,
            ChunkKind::RequestStart,
        );
    }
}

#[test]
fn ipv4_without_total_length_uses_the_skb_length() {
    // BIG TCP super-packets carry tot_len 0.
    let mut h = Harness::new();
    let mut pkt = Pkt::v4_out()
        .flags(ACK | PSH)
        .seq(10)
        .payload(b"GET /big-tcp HTTP/1.1\r\n\r\n");
    pkt.ip_len = Some(0);
    let out = h.run(Direction::Egress, &pkt.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    assert_whole_chunk(
        chunk(&out.records[1]),
        &pkt,
        Direction::Egress,
        ChunkKind::RequestStart,
    );
}

#[test]
fn ip_options_and_first_fragments_are_parsed() {
    let mut h = Harness::new();
    let mut with_options = Pkt::v4_out()
        .flags(ACK)
        .seq(8)
        .payload(b"GET /o HTTP/1.1\r\n\r\n");
    with_options.ihl = 7;
    // A first fragment (offset 0, more fragments) still carries the TCP header.
    let mut first_fragment = with_options.clone();
    first_fragment.ihl = 5;
    first_fragment.frag = IP_MF;
    for pkt in [with_options, first_fragment] {
        let out = h.run(Direction::Egress, &pkt.frame());
        assert_eq!(out.kinds(), ["open", "chunk"], "{pkt:?}");
        assert_whole_chunk(
            chunk(&out.records[1]),
            &pkt,
            Direction::Egress,
            ChunkKind::RequestStart,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Not TCP, or not parseable: passed, counted, untracked.

#[test]
fn packets_that_are_not_tcp_pass_untracked() {
    let mut h = Harness::new();
    let get = Pkt::v4_out()
        .flags(ACK | PSH)
        .payload(b"GET / HTTP/1.1\r\n\r\n");
    let udp = |mut p: Pkt| {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&[0x9c, 0x40, 0x00, 0x35, 0x00, 0x10, 0x00, 0x00]);
        l4.extend_from_slice(b"GET / HTTP/1.1\r\n");
        p.proto = IPPROTO_UDP;
        p.l4 = Some(l4);
        p
    };
    let mut icmp = Pkt::v4_out();
    icmp.proto = IPPROTO_ICMP;
    icmp.l4 = Some(vec![8, 0, 0, 0, 0, 1, 0, 1]);
    let mut ihl4 = get.clone();
    ihl4.ihl = 4;
    let mut doff4 = get.clone();
    doff4.doff = 4;
    let mut doff0 = get.clone();
    doff0.doff = 0;
    let mut fragment = get.clone();
    fragment.frag = IP_MF | 185; // offset 1480
    let mut last_fragment = get.clone();
    last_fragment.frag = 185;
    let mut v6_hopopts = Pkt::v6_out()
        .flags(ACK | PSH)
        .payload(b"GET / HTTP/1.1\r\n\r\n");
    v6_hopopts.proto = IPV6_HOPOPTS;
    let v4 = get.ip();
    let v6 = Pkt::v6_out().flags(ACK | PSH).payload(b"x").ip();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("UDP over IPv4", udp(get.clone()).frame()),
        ("UDP over IPv6", udp(Pkt::v6_out()).frame()),
        ("ICMP", icmp.frame()),
        // A test run refuses (EINVAL) an IPv4 or IPv6 ethertype with less than a whole fixed
        // IP header; the program never looks at the ethertype, so cut headers go in under
        // the local experimental one.
        (
            "IPv4 header cut at 10 bytes",
            eth(ETH_P_EXPERIMENTAL, &v4[..10]),
        ),
        (
            "IPv4 header cut at 19 bytes",
            eth(ETH_P_EXPERIMENTAL, &v4[..19]),
        ),
        (
            "IPv6 header cut at 30 bytes",
            eth(ETH_P_EXPERIMENTAL, &v6[..30]),
        ),
        (
            "IPv6 header cut at 39 bytes",
            eth(ETH_P_EXPERIMENTAL, &v6[..39]),
        ),
        ("empty IP packet", eth(ETH_P_EXPERIMENTAL, &[])),
        ("one byte", eth(ETH_P_EXPERIMENTAL, &[0x45])),
        ("TCP header cut at 10 bytes", eth(0x0800, &v4[..30])),
        ("TCP header cut at 19 bytes", eth(0x0800, &v4[..39])),
        ("IPv6 TCP header cut at 10 bytes", eth(0x86dd, &v6[..50])),
        (
            "garbage",
            eth(0x0800, b"\xde\xad\xbe\xef garbage, not an IP packet"),
        ),
        (
            "IP version 5",
            eth(0x0800, &[&[0x55][..], &v4[1..]].concat()),
        ),
        ("ARP", eth(0x0806, &[0, 1, 8, 0, 6, 4, 0, 1])),
        ("IPv4 IHL 4", ihl4.frame()),
        ("TCP doff 4", doff4.frame()),
        ("TCP doff 0", doff0.frame()),
        ("non-first IPv4 fragment", fragment.frame()),
        ("last IPv4 fragment", last_fragment.frame()),
        ("IPv6 with a hop-by-hop header", v6_hopopts.frame()),
    ];
    for (what, frame) in cases {
        for dir in [Direction::Egress, Direction::Ingress] {
            let out = h.run(dir, &frame);
            assert!(
                out.records.is_empty(),
                "{what} ({dir:?}): {:?}",
                out.records
            );
            out.assert_counters(&[(Counter::Packets, 1), (Counter::NotTcp, 1)]);
        }
    }
    assert!(h.flows().is_empty());
}

/// A request arriving from a local monitored pod (in `LOCAL_PEERS`) is the server end of an
/// exchange the client's own socket reports: counted, tracked, but no records.
#[test]
fn request_from_a_local_peer_is_mirrored_not_reported() {
    let mut h = Harness::new();
    h.cap
        .set_local_peers(&[IpAddr::from(CLIENT_V4)])
        .expect("LOCAL_PEERS is writable");
    let get = b"GET /x HTTP/1.1\r\nHost: web\r\n\r\n";
    // On the server's socket the client's request arrives on ingress, from CLIENT_V4.
    let req = Pkt::v4_out().flags(ACK | PSH).seq(1).payload(get);
    let out = h.run(Direction::Ingress, &req.frame());
    assert!(out.records.is_empty(), "mirrored: {:?}", out.kinds());
    out.assert_counters(&[(Counter::Packets, 1), (Counter::Mirrored, 1)]);
    let flows = h.flows();
    assert_eq!(flows.len(), 1, "still tracked: {flows:?}");
    let st = flows[0].1;
    assert_eq!(st.flags, FLOW_MIRRORED);
    assert_eq!(
        st.dir[Direction::Ingress.index()].payload_bytes,
        get.len() as u64
    );

    // Near misses are reported as usual: a response (not a request) from a local peer...
    let resp = Pkt::v4_out()
        .flags(ACK | PSH)
        .seq(1)
        .payload(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let out = h.run(Direction::Ingress, &resp.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    // ...a request sent (egress) to a local peer (the client side itself)...
    let out = h.run(
        Direction::Egress,
        &Pkt::v4_in().flags(ACK | PSH).seq(1).payload(get).frame(),
    );
    assert_eq!(out.kinds(), ["open", "chunk"]);
    // ...and a request from an address that is no local pod.
    h.cap.set_local_peers(&[]).expect("LOCAL_PEERS is writable");
    let out = h.run(Direction::Ingress, &req.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
}

// ---------------------------------------------------------------------------------------------
// Quarantine: the test thread's own cgroup (the dummy socket's) is put in quarantine.

/// The test thread's cgroup id; quarantine tests cannot target the dummy socket without it.
fn require_own_cgroup(h: &Harness) -> u64 {
    h.cgroup_id.expect(
        "quarantine tests need the test thread's cgroup v2 id, but no cgroup v2 file system is \
         mounted here (see /proc/self/mountinfo)",
    )
}

/// Drop statistics of one direction.
fn qdir(packets: u64, bytes: u64, attempts: u64) -> QuarantineDirStats {
    QuarantineDirStats {
        packets,
        bytes,
        attempts,
    }
}

fn qstats(egress: QuarantineDirStats, ingress: QuarantineDirStats) -> QuarantineStats {
    QuarantineStats {
        dir: [egress, ingress],
    }
}

fn quarantine_drop(r: &Rec) -> &QuarantineDrop {
    match r {
        Rec::Drop(d) => d,
        other => panic!("expected a quarantine drop record, got {other:?}"),
    }
}

impl Harness {
    /// The drop statistics of `id` (summed over CPUs); panics if there is no entry.
    fn qstats(&self, id: u64) -> QuarantineStats {
        let all = self.cap.quarantine_stats().expect("stats readable");
        *all.get(&id)
            .unwrap_or_else(|| panic!("no stats for cgroup {id}: {all:?}"))
    }
}

#[test]
fn quarantined_egress_syn_is_dropped_counted_and_recorded() {
    let mut h = Harness::new();
    let own = require_own_cgroup(&h);
    let since = Clock::boot_ns();
    h.cap
        .set_quarantine(&[(own, since)])
        .expect("quarantine set");
    let set = h.cap.quarantine().expect("quarantine readable");
    assert_eq!(set.len(), 1);
    assert_eq!(set[&own], QuarantineEntry::enforce(since));
    assert_eq!(set[&own].mode, MODE_ENFORCE);
    assert_eq!(h.qstats(own), QuarantineStats::default(), "starts at zero");

    // A SYN as Linux sends it: 20 bytes of options.
    let mut syn = Pkt::v4_out().flags(SYN).seq(0x8000_0001);
    syn.doff = 10;
    let out = h.run_expect(Direction::Egress, &syn.frame(), DROP);
    assert_eq!(out.kinds(), ["quarantine-drop"]);
    let d = quarantine_drop(&out.records[0]);
    assert_eq!(d.tuple, tuple_of(&syn, Direction::Egress, Initiator::Local));
    assert_eq!(d.tuple.local_ip(), IpAddr::from(CLIENT_V4));
    assert_eq!(d.tuple.remote_ip(), IpAddr::from(SERVER_V4));
    assert_eq!(d.dir, Direction::Egress as u8);
    assert_eq!(d._pad, [0; 7]);
    assert_eq!(d.hdr.cgroup_id, own);
    // Dropped before the flow table: no packet counted as seen, no flow.
    out.assert_counters(&[(Counter::QuarantineDropped, 1)]);
    assert!(h.flows().is_empty(), "{:?}", h.flows());
    let syn_len = syn.ip().len() as u64;
    assert_eq!(
        h.qstats(own),
        qstats(qdir(1, syn_len, 1), QuarantineDirStats::default())
    );

    // Retransmitted SYNs are attempts too, each recorded.
    let (verdict, out) = h.run_verdict(Direction::Egress, &syn.frame(), 3);
    assert_eq!(verdict, DROP);
    assert_eq!(
        out.kinds(),
        ["quarantine-drop", "quarantine-drop", "quarantine-drop"]
    );
    out.assert_counters(&[(Counter::QuarantineDropped, 3)]);
    assert_eq!(
        h.qstats(own),
        qstats(qdir(4, 4 * syn_len, 4), QuarantineDirStats::default())
    );

    // IPv6 as well.
    let syn6 = Pkt::v6_out().flags(SYN).seq(7);
    let out = h.run_expect(Direction::Egress, &syn6.frame(), DROP);
    assert_eq!(out.kinds(), ["quarantine-drop"]);
    let d = quarantine_drop(&out.records[0]);
    assert_eq!(
        d.tuple,
        tuple_of(&syn6, Direction::Egress, Initiator::Local)
    );
    assert_eq!(d.tuple.family, FAMILY_V6);
    assert_eq!(h.qstats(own).dir[0].attempts, 5);
    assert!(h.flows().is_empty());
}

#[test]
fn quarantined_data_packets_are_dropped_and_counted_without_records() {
    let mut h = Harness::new();
    let own = require_own_cgroup(&h);
    h.cap.set_quarantine(&[(own, 1)]).expect("quarantine set");

    // A request, a response, a SYN-ACK (not an attempt), a FIN and a UDP datagram: all dropped,
    // none recorded, none in the flow table.
    let get = Pkt::v4_out()
        .flags(ACK | PSH)
        .seq(1000)
        .payload(GET_LOOKUP)
        .with_timestamps();
    let resp = Pkt::v4_in()
        .flags(ACK | PSH)
        .seq(5)
        .payload(RESPONSE_HELLO)
        .with_timestamps();
    let syn_ack = Pkt::v4_in().flags(SYN | ACK).seq(9);
    let fin = Pkt::v4_out().flags(FIN | ACK).seq(10);
    let mut udp = Pkt::v4_out();
    udp.proto = IPPROTO_UDP;
    udp.l4 = Some(vec![
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4,
    ]);
    let mut want = QuarantineStats::default();
    for (pkt, dir) in [
        (&get, Direction::Egress),
        (&resp, Direction::Ingress),
        (&syn_ack, Direction::Ingress),
        (&fin, Direction::Egress),
        (&udp, Direction::Egress),
    ] {
        let out = h.run_expect(dir, &pkt.frame(), DROP);
        assert!(out.records.is_empty(), "{pkt:?}: {:?}", out.kinds());
        out.assert_counters(&[(Counter::QuarantineDropped, 1)]);
        let d = &mut want.dir[dir.index()];
        d.packets += 1;
        d.bytes += pkt.ip().len() as u64;
        assert_eq!(h.qstats(own), want, "{pkt:?}");
    }
    assert_eq!(want.attempts(), 0);
    assert_eq!(want.packets(), 5);
    assert_eq!(
        want.dir[0].bytes,
        (get.ip().len() + fin.ip().len() + udp.ip().len()) as u64
    );
    assert!(h.flows().is_empty(), "{:?}", h.flows());
}

#[test]
fn syn_for_a_quarantined_listener_is_dropped_on_ingress() {
    let mut h = Harness::new();
    let own = require_own_cgroup(&h);
    h.cap.set_quarantine(&[(own, 1)]).expect("quarantine set");
    // On the listener's socket the remote client's SYN arrives: CLIENT → SERVER (local).
    for mut syn in [Pkt::v4_out(), Pkt::v6_out()] {
        syn = syn.flags(SYN).seq(77);
        let out = h.run_expect(Direction::Ingress, &syn.frame(), DROP);
        assert_eq!(out.kinds(), ["quarantine-drop"]);
        let d = quarantine_drop(&out.records[0]);
        assert_eq!(
            d.tuple,
            tuple_of(&syn, Direction::Ingress, Initiator::Unknown)
        );
        assert_eq!(
            (d.tuple.local_port, d.tuple.remote_port),
            (SERVER_PORT, CLIENT_PORT),
            "the listener is the local end"
        );
        assert_eq!(d.dir, Direction::Ingress as u8);
        out.assert_counters(&[(Counter::QuarantineDropped, 1)]);
    }
    let st = h.qstats(own);
    assert_eq!(st.dir[Direction::Ingress.index()].attempts, 2);
    assert_eq!(st.dir[Direction::Ingress.index()].packets, 2);
    assert_eq!(
        st.dir[Direction::Egress.index()],
        QuarantineDirStats::default()
    );
    assert!(h.flows().is_empty());
}

#[test]
fn another_cgroups_quarantine_leaves_this_one_alone() {
    let mut h = Harness::new();
    let own = require_own_cgroup(&h);
    let other = own ^ 0x5555_0000_0000;
    assert_ne!(other, 0);
    h.cap.set_quarantine(&[(other, 1)]).expect("quarantine set");
    let syn = Pkt::v4_out().flags(SYN).seq(1);
    let out = h.run(Direction::Egress, &syn.frame());
    assert_eq!(out.kinds(), ["open"]);
    assert_eq!(
        open(&out.records[0]).tuple,
        tuple_of(&syn, Direction::Egress, Initiator::Local)
    );
    out.assert_counters(&[(Counter::Packets, 1)]);
    let get = Pkt::v4_out().flags(ACK | PSH).seq(1000).payload(GET_LOOKUP);
    let out = h.run(Direction::Egress, &get.frame());
    assert_eq!(out.kinds(), ["open", "chunk"]);
    let all = h.cap.quarantine_stats().expect("stats readable");
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[&other], QuarantineStats::default());
}

#[test]
fn lifting_the_quarantine_passes_traffic_again() {
    let mut h = Harness::new();
    let own = require_own_cgroup(&h);
    let syn = Pkt::v4_out().flags(SYN).seq(1);
    h.cap.set_quarantine(&[(own, 5)]).expect("quarantine set");
    let out = h.run_expect(Direction::Egress, &syn.frame(), DROP);
    assert_eq!(out.kinds(), ["quarantine-drop"]);

    // The same set again keeps the statistics; a new date restarts them.
    h.cap.set_quarantine(&[(own, 5)]).expect("quarantine set");
    assert_eq!(h.qstats(own).attempts(), 1);
    h.cap.set_quarantine(&[(own, 6)]).expect("quarantine set");
    assert_eq!(h.qstats(own), QuarantineStats::default());
    assert_eq!(
        h.cap.quarantine().expect("readable")[&own],
        QuarantineEntry::enforce(6)
    );
    h.run_expect(Direction::Egress, &syn.frame(), DROP);

    // Another cgroup joins, ours leaves: ours passes, its statistics are gone.
    let other = own ^ 0x5555_0000_0000;
    h.cap.set_quarantine(&[(other, 7)]).expect("quarantine set");
    let out = h.run(Direction::Egress, &syn.frame());
    assert_eq!(out.kinds(), ["open"]);
    let all = h.cap.quarantine_stats().expect("stats readable");
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), [other]);

    // Everything lifted: nothing left in the kernel, everything passes.
    h.cap.set_quarantine(&[]).expect("quarantine cleared");
    assert!(h.cap.quarantine().expect("readable").is_empty());
    assert!(h.cap.quarantine_stats().expect("readable").is_empty());
    let out = h.run(Direction::Egress, &syn.frame());
    assert_eq!(out.kinds(), ["open"]);
    out.assert_counters(&[(Counter::Packets, 1)]);
    let out = h.run(Direction::Ingress, &Pkt::v4_out().flags(SYN).frame());
    assert!(out.records.is_empty(), "a listener's SYN opens no flow");
    out.assert_counters(&[(Counter::Packets, 1)]);
}

#[test]
fn quarantine_set_rejects_what_the_kernel_cannot_hold() {
    let mut h = Harness::new();
    let err = h
        .cap
        .set_quarantine(&[(0, 1)])
        .expect_err("cgroup id 0 is refused");
    assert!(err.to_string().contains("cgroup id 0"), "{err}");
    let too_many: Vec<(u64, u64)> = (1..=u64::from(QUARANTINE_MAX) + 1)
        .map(|i| (i, 1))
        .collect();
    let err = h
        .cap
        .set_quarantine(&too_many)
        .expect_err("more than the map holds is refused");
    assert!(err.to_string().contains("at most"), "{err}");
    // Nothing was written by the refused calls; exactly the capacity fits.
    assert!(h.cap.quarantine().expect("readable").is_empty());
    h.cap
        .set_quarantine(&too_many[..QUARANTINE_MAX as usize])
        .expect("a full set fits");
    assert_eq!(
        h.cap.quarantine_stats().expect("readable").len(),
        QUARANTINE_MAX as usize
    );
    h.cap.set_quarantine(&[]).expect("cleared");
    assert!(h.cap.quarantine_stats().expect("readable").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Socket-level programs: real connect() and accept() in a cgroup (and netns) of their own.

/// A cgroup v2 directory for one test, removed on drop (once its processes have exited).
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(name: &str) -> Self {
        let mount = cgroup2_mount().expect(
            "socket-program tests need a cgroup v2 file system (none in /proc/self/mountinfo)",
        );
        let dir = mount.join(format!("monitor-ktest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs `script` with python3 as root in `cgroup` and in a new network namespace with `lo` up;
/// fails with its output unless it succeeds.
fn python_in_cgroup(cgroup: &TestCgroup, script: &str) {
    use std::os::unix::{ffi::OsStrExt as _, process::CommandExt as _};
    let procs = std::ffi::CString::new(cgroup.0.join("cgroup.procs").as_os_str().as_bytes())
        .expect("cgroup path has no NUL");
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        "ip link set lo up && exec python3 -c \"$1\"",
        "sh",
        script,
    ]);
    // SAFETY: the hook runs in the forked child before exec and only makes async-signal-safe
    // calls (open, write, close, unshare) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writing process.
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .output()
        .expect("sh, ip and python3 are needed for the socket-program tests");
    assert!(
        out.status.success(),
        "the test's client/server script failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects and accepts over loopback as in the docstring of the test below.
const CONNECT_SCRIPT: &str = r#"
import os, socket
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 50051))
srv.listen(8)
srv6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
srv6.bind(("::1", 50052))
srv6.listen(8)
pid = os.fork()
if pid == 0:
    os.setgid(1337)
    os.setuid(1337)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect(("127.0.0.1", 9))
    u.close()
    for family, bind, dest in [
        (socket.AF_INET, ("127.0.0.1", 40000), ("0.0.0.0", 50051)),
        (socket.AF_INET6, None, ("::1", 50052)),
        (socket.AF_INET6, None, ("::ffff:127.0.0.1", 50051)),
    ]:
        c = socket.socket(family, socket.SOCK_STREAM)
        if bind:
            c.bind(bind)
        c.connect(dest)
        c.sendall(b"ping")
        assert c.recv(4) == b"pong"
        c.close()
    os._exit(0)
for s in (srv, srv6, srv):
    a, _ = s.accept()
    assert a.recv(4) == b"ping"
    a.sendall(b"pong")
    a.close()
_, status = os.waitpid(pid, 0)
assert status == 0, status
"#;

/// A client (uid/gid 1337) connects three times: to `0.0.0.0:50051` (the kernel connects that
/// to 127.0.0.1, so the destination asked for is not the one on the wire) from the bound port
/// 40000, below the server's; to `[::1]:50052`; and from an IPv6 socket to
/// `[::ffff:127.0.0.1]:50051`; plus a UDP connect, which is not recorded. Root's listeners
/// accept each. Every flow open record says who opened the connection; the client's carry the
/// destination asked for and the caller; nothing is left in SOCK_ORIGIN.
#[test]
fn connect_and_sock_ops_tell_the_destination_asked_for_the_caller_and_the_direction() {
    let mut cap = load();
    let hooks = cap.socket_hooks().clone();
    assert!(
        hooks.connect && hooks.sock_ops,
        "socket-level programs did not load: {:?}",
        hooks.missing
    );
    let cgroup = TestCgroup::new("sock");
    cap.attach(&cgroup.0)
        .unwrap_or_else(|e| panic!("attaching to {}: {e}", cgroup.0.display()));
    assert!(
        cap.socket_hooks().missing.is_empty(),
        "{:?}",
        cap.socket_hooks().missing
    );
    python_in_cgroup(&cgroup, CONNECT_SCRIPT);

    let mut opens = Vec::new();
    while let Some(item) = cap.ring.next() {
        match user::decode(&item) {
            Ok(user::Record::FlowOpen(o)) => opens.push(o),
            Ok(_) => {}
            Err(e) => panic!("the kernel wrote an undecodable record: {e}"),
        }
    }
    let lo4 = IpAddr::from(Ipv4Addr::LOCALHOST);
    let lo6 = IpAddr::from(Ipv6Addr::LOCALHOST);
    let find = |local: (IpAddr, u16), remote_port: Option<u16>| {
        opens
            .iter()
            .filter(|o| {
                o.tuple.local_ip() == local.0
                    && o.tuple.local_port == local.1
                    && remote_port.is_none_or(|p| o.tuple.remote_port == p)
            })
            .collect::<Vec<_>>()
    };
    let summary = || {
        opens
            .iter()
            .map(|o| {
                format!(
                    "{}:{} -> {}:{} initiator {} origin {:?} uid {}",
                    o.tuple.local_ip(),
                    o.tuple.local_port,
                    o.tuple.remote_ip(),
                    o.tuple.remote_port,
                    o.tuple.initiator,
                    o.origin.destination(),
                    o.uid
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        opens.len(),
        6,
        "three clients, three servers:\n{}",
        summary()
    );

    // The v4 client: asked for 0.0.0.0:50051, went to 127.0.0.1:50051.
    let c4 = find((lo4, 40_000), Some(50_051));
    assert_eq!(c4.len(), 1, "{}", summary());
    let c4 = c4[0];
    assert_eq!(c4.tuple.initiator, Initiator::Local as u8);
    assert_eq!(c4.tuple.remote_ip(), lo4);
    assert_eq!(c4.origin.flags, ORIGIN_CONNECT);
    assert_eq!(
        c4.origin.destination(),
        Some("0.0.0.0:50051".parse().expect("address"))
    );
    assert_eq!(c4.origin.caller(), Some((1337, 1337)));
    assert_eq!(c4.uid, 1337, "socket owner");
    // Its server: accepted (the remote end opened it), though its port is the higher one.
    let s4 = find((lo4, 50_051), Some(40_000));
    assert_eq!(s4.len(), 1, "{}", summary());
    assert_eq!(s4[0].tuple.initiator, Initiator::Remote as u8);
    assert_eq!(s4[0].origin.flags, ORIGIN_PASSIVE);
    assert_eq!(s4[0].origin.destination(), None);
    assert_eq!(
        s4[0].uid, 0,
        "the accepted socket is owned like root's listener"
    );

    // IPv6, and an IPv6 socket to an IPv4-mapped address (connect6; the wire is IPv4).
    let clients: Vec<_> = opens
        .iter()
        .filter(|o| o.tuple.initiator == Initiator::Local as u8)
        .collect();
    assert_eq!(clients.len(), 3, "{}", summary());
    let c6 = clients
        .iter()
        .find(|o| o.tuple.remote_ip() == lo6)
        .expect("the IPv6 client");
    assert_eq!(o_dest(c6), Some("[::1]:50052".parse().expect("address")));
    assert_eq!(c6.origin.family, FAMILY_V6);
    let mapped = clients
        .iter()
        .find(|o| o.tuple.local_port != 40_000 && o.tuple.remote_ip() == lo4)
        .expect("the IPv4-mapped client");
    assert_eq!(mapped.tuple.family, FAMILY_V4);
    assert_eq!(mapped.origin.family, FAMILY_V6, "connect6 saw it");
    assert_eq!(
        o_dest(mapped),
        Some("127.0.0.1:50051".parse().expect("address"))
    );
    for c in &clients {
        assert_eq!(c.origin.caller(), Some((1337, 1337)));
    }
    let servers = opens
        .iter()
        .filter(|o| o.tuple.initiator == Initiator::Remote as u8)
        .count();
    assert_eq!(servers, 3, "{}", summary());

    // Every entry was consumed by its flow; the UDP connect wrote none.
    assert_eq!(cap.sock_origins(), Vec::new());
}

fn o_dest(o: &FlowOpen) -> Option<std::net::SocketAddr> {
    o.origin.destination()
}
