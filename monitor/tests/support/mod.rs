//! What the `policy suggest` and `report --html` tests share: captures written with a packet
//! library (etherparse frames in a pcap-file writer, Ethernet, hand-set timestamps), the
//! Vantage incident of `monitor/tests/analyze.rs` (same traffic, same timestamps), and
//! `monitor analyze` of a capture into a collector store. Nothing is sent anywhere: the
//! packets only exist in the files.

use std::{
    fs::File,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use etherparse::PacketBuilder;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};

pub const MONITOR: &str = env!("CARGO_BIN_EXE_monitor");
pub const NS: u64 = 1_000_000_000;
/// 2026-11-02T00:00:00Z.
pub const DAY0: u64 = 1_793_577_600 * NS;
pub const DAY: u64 = 86_400 * NS;

pub const REC: [&str; 4] = ["10.77.1.1", "10.77.1.2", "10.77.1.3", "10.77.1.4"];
pub const PROFILE: &str = "10.77.0.10";
pub const LOOKUP: &str = "/internal/admin/v0/users/lookup";
const STATES: [&str; 3] = ["CA", "NY", "TX"];

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A file of the Vantage example.
pub fn vantage(file: &str) -> PathBuf {
    repo().join("deploy/examples/vantage").join(file)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub type Addr = (IpAddr, u16);

/// A capture being built: Ethernet frames with their timestamps.
#[derive(Default)]
pub struct Capture {
    frames: Vec<(u64, Vec<u8>)>,
}

#[derive(Clone, Copy)]
struct Flags {
    syn: bool,
    ack: bool,
    fin: bool,
}

const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
};
const SYN_ACK: Flags = Flags {
    syn: true,
    ack: true,
    fin: false,
};
const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
};
const FIN: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
};

impl Capture {
    #[expect(clippy::too_many_arguments, reason = "one frame's fields")]
    fn frame(
        &mut self,
        ts: u64,
        src: Addr,
        dst: Addr,
        seq: u32,
        ack: u32,
        f: Flags,
        payload: &[u8],
    ) {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.0, dst.0) else {
            panic!("IPv4 only here");
        };
        let mut tcp = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
            .ipv4(s.octets(), d.octets(), 64)
            .tcp(src.1, dst.1, seq, 65535);
        if f.syn {
            tcp = tcp.syn();
        }
        if f.ack {
            tcp = tcp.ack(ack);
        }
        if f.fin {
            tcp = tcp.fin();
        }
        let mut bytes = Vec::new();
        tcp.write(&mut bytes, payload).unwrap();
        self.frames.push((ts, bytes));
    }

    /// Writes a nanosecond pcap.
    pub fn write(&self, path: &Path) {
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(File::create(path).unwrap(), header).unwrap();
        let mut frames: Vec<&(u64, Vec<u8>)> = self.frames.iter().collect();
        frames.sort_by_key(|f| f.0);
        for (ts, bytes) in frames {
            w.write_packet(&PcapPacket::new(
                std::time::Duration::from_nanos(*ts),
                bytes.len() as u32,
                bytes,
            ))
            .unwrap();
        }
    }

    /// One connection carrying `exchanges` (request, response) in order, opened at `ts`.
    pub fn exchange(&mut self, ts: u64, client: Addr, server: Addr, exchanges: &[(&[u8], &[u8])]) {
        let mut c = Conn::open(self, client, server, ts);
        for (req, resp) in exchanges {
            c.send(self, true, req, false);
            if !resp.is_empty() {
                c.send(self, false, resp, false);
            }
        }
        c.close(self);
    }
}

/// One TCP connection: both ends' next sequence numbers and a clock.
pub struct Conn {
    client: Addr,
    server: Addr,
    cseq: u32,
    sseq: u32,
    ts: u64,
}

impl Conn {
    pub fn open(cap: &mut Capture, client: Addr, server: Addr, ts: u64) -> Self {
        let mut c = Self {
            client,
            server,
            cseq: 1_000,
            sseq: 4_000_000_000,
            ts,
        };
        cap.frame(c.ts, client, server, c.cseq, 0, SYN, &[]);
        cap.frame(
            c.ts + 50_000,
            server,
            client,
            c.sseq,
            c.cseq + 1,
            SYN_ACK,
            &[],
        );
        cap.frame(
            c.ts + 100_000,
            client,
            server,
            c.cseq + 1,
            c.sseq.wrapping_add(1),
            ACK,
            &[],
        );
        c.cseq += 1;
        c.sseq = c.sseq.wrapping_add(1);
        c.ts += 200_000;
        c
    }

    /// Sends `msg` in 1,448-byte segments; `reordered`: the segments after the first in
    /// reverse order, the second one sent twice.
    pub fn send(&mut self, cap: &mut Capture, from_client: bool, msg: &[u8], reordered: bool) {
        let (src, dst, seq, ack) = if from_client {
            (self.client, self.server, self.cseq, self.sseq)
        } else {
            (self.server, self.client, self.sseq, self.cseq)
        };
        let segs: Vec<(u32, &[u8])> = msg
            .chunks(1448)
            .enumerate()
            .map(|(i, c)| (seq.wrapping_add((i * 1448) as u32), c))
            .collect();
        let mut order: Vec<usize> = (0..segs.len()).collect();
        if reordered {
            order[1..].reverse();
            if segs.len() > 2 {
                order.push(1);
            }
        }
        for j in order {
            let (s, data) = segs[j];
            cap.frame(self.ts, src, dst, s, ack, ACK, data);
            self.ts += 20_000;
        }
        let next = seq.wrapping_add(msg.len() as u32);
        if from_client {
            self.cseq = next;
        } else {
            self.sseq = next;
        }
        self.ts += 500_000;
    }

    pub fn close(self, cap: &mut Capture) {
        let (c, s) = (self.client, self.server);
        cap.frame(self.ts, c, s, self.cseq, self.sseq, FIN, &[]);
        cap.frame(self.ts + 50_000, s, c, self.sseq, self.cseq + 1, FIN, &[]);
        cap.frame(
            self.ts + 100_000,
            c,
            s,
            self.cseq + 1,
            self.sseq.wrapping_add(1),
            ACK,
            &[],
        );
    }
}

/// An HTTP/1.1 request head (no body) for `target`.
pub fn request(method: &str, target: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} ").into_bytes();
    r.extend_from_slice(target);
    r.extend_from_slice(
        b" HTTP/1.1\r\nHost: svc\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n",
    );
    r
}

/// A response with a `body`-byte body.
pub fn response(status: u16, body: usize) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', body));
    r
}

/// The incident of `monitor/tests/analyze.rs` over three days: each day from 09:00 UTC, every
/// engine (-01..-04) reads preferences 25 times (1,044-byte responses, one connection each);
/// at 14:00, -04 calls the undocumented lookup once (state CA, NY, TX), 9,612 bytes back, day
/// 2's response out of order with a retransmission.
pub fn incident() -> Capture {
    let mut cap = Capture::default();
    for day in 0..3u64 {
        let mut ts = DAY0 + day * DAY + 9 * 3600 * NS;
        for i in 0..25u16 {
            for (r, rec) in REC.iter().enumerate() {
                let port = 40_000 + (day as u16) * 1000 + i * 4 + r as u16;
                let mut c = Conn::open(&mut cap, (ip(rec), port), (ip(PROFILE), 80), ts);
                let req = incident_request("/api/v2/users/preferences?user=42");
                c.send(&mut cap, true, &req, false);
                c.send(&mut cap, false, &incident_response(1044), false);
                c.close(&mut cap);
                ts += 7 * NS;
            }
        }
        let ts = DAY0 + day * DAY + 14 * 3600 * NS;
        let target = format!(
            "{LOOKUP}?fields=ssn_last4,email,phone,address_*&state={}&limit=48",
            STATES[day as usize]
        );
        let mut c = Conn::open(
            &mut cap,
            (ip(REC[3]), 50_000 + day as u16),
            (ip(PROFILE), 80),
            ts,
        );
        c.send(&mut cap, true, &incident_request(&target), false);
        c.send(&mut cap, false, &incident_response(9612), day == 1);
        c.close(&mut cap);
    }
    cap
}

/// The incident's requests, byte for byte as in `monitor/tests/analyze.rs`.
fn incident_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: svc-user-profile-service\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")
        .into_bytes()
}

fn incident_response(body: usize) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', body));
    r
}

/// `monitor analyze` of `pcap` with the Vantage inventory and policy, every record into
/// `store`.
pub fn analyze_into(pcap: &Path, store: &Path) {
    let out = Command::new(MONITOR)
        .arg("analyze")
        .arg(pcap)
        .arg("--inventory")
        .arg(vantage("inventory.yaml"))
        .arg("--policy")
        .arg(vantage("policy.yaml"))
        .args(["--kinds", "violation", "--sink", "ndjson:stdout", "--store"])
        .arg(store)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run monitor analyze");
    assert!(
        out.status.success(),
        "monitor analyze: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
