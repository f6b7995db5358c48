//! `monitor analyze` and `monitor policy dry-run` on captures written here with a packet
//! library (etherparse frames in pcap-file writers) and hand-set timestamps spanning several
//! days: the Vantage incident replayed offline, with exact expected violations and report
//! figures; reordered, retransmitted and missing segments; pcap and pcapng; Ethernet, Linux
//! cooked SLL2 and raw IP; IPv4 and IPv6; truncated, corrupt and empty files. No root needed:
//! nothing is sent anywhere, the packets only exist in the files. (Captures of real curl
//! traffic taken with tcpdump in the lab are in tests/tests/analyze.rs.)

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use etherparse::PacketBuilder;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
    },
};
use serde_json::Value;

const MONITOR: &str = env!("CARGO_BIN_EXE_monitor");
const NS: u64 = 1_000_000_000;
/// 2026-11-02T00:00:00Z.
const DAY0: u64 = 1_793_577_600 * NS;
const DAY: u64 = 86_400 * NS;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn vantage(file: &str) -> PathBuf {
    repo().join("deploy/examples/vantage").join(file)
}

/// How frames are written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    PcapEthernet,
    PcapRawIp,
    PcapNgSll2,
}

/// One frame to write.
struct Frame {
    ts: u64,
    bytes: Vec<u8>,
}

/// A capture being built: frames with their timestamps.
struct Capture {
    format: Format,
    frames: Vec<Frame>,
}

#[derive(Clone, Copy)]
struct Flags {
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
}

const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
const SYN_ACK: Flags = Flags {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};
const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
const FIN: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};

type Addr = (std::net::IpAddr, u16);

impl Capture {
    fn new(format: Format) -> Self {
        Self {
            format,
            frames: Vec::new(),
        }
    }

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
        use std::net::IpAddr;
        let ip = match (src.0, dst.0) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ip(etherparse::IpHeaders::Ipv4(
                etherparse::Ipv4Header::new(
                    0,
                    64,
                    etherparse::IpNumber::TCP,
                    s.octets(),
                    d.octets(),
                )
                .unwrap(),
                Default::default(),
            )),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ip(etherparse::IpHeaders::Ipv6(
                etherparse::Ipv6Header {
                    hop_limit: 64,
                    source: s.octets(),
                    destination: d.octets(),
                    ..Default::default()
                },
                Default::default(),
            )),
            _ => panic!("mixed families"),
        };
        let mut tcp = ip.tcp(src.1, dst.1, seq, 65535);
        if f.syn {
            tcp = tcp.syn();
        }
        if f.ack {
            tcp = tcp.ack(ack);
        }
        if f.fin {
            tcp = tcp.fin();
        }
        if f.rst {
            tcp = tcp.rst();
        }
        let mut ipbytes = Vec::new();
        tcp.write(&mut ipbytes, payload).unwrap();
        let bytes = match self.format {
            Format::PcapRawIp => ipbytes,
            Format::PcapEthernet => {
                let ethertype: u16 = if src.0.is_ipv4() { 0x0800 } else { 0x86dd };
                let mut e = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
                e.extend_from_slice(&ethertype.to_be_bytes());
                e.extend_from_slice(&ipbytes);
                e
            }
            Format::PcapNgSll2 => {
                let ethertype: u16 = if src.0.is_ipv4() { 0x0800 } else { 0x86dd };
                let mut e = ethertype.to_be_bytes().to_vec();
                e.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                e.extend_from_slice(&ipbytes);
                e
            }
        };
        self.frames.push(Frame { ts, bytes });
    }

    fn write(&self, path: &Path) {
        let file = File::create(path).unwrap();
        match self.format {
            Format::PcapEthernet | Format::PcapRawIp => {
                let header = PcapHeader {
                    datalink: if self.format == Format::PcapEthernet {
                        DataLink::ETHERNET
                    } else {
                        DataLink::RAW
                    },
                    ts_resolution: pcap_file::TsResolution::NanoSecond,
                    ..Default::default()
                };
                let mut w = PcapWriter::with_header(file, header).unwrap();
                for f in &self.frames {
                    w.write_packet(&PcapPacket::new(
                        std::time::Duration::from_nanos(f.ts),
                        f.bytes.len() as u32,
                        &f.bytes,
                    ))
                    .unwrap();
                }
            }
            Format::PcapNgSll2 => {
                let mut w = PcapNgWriter::new(file).unwrap();
                w.write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: DataLink::LINUX_SLL2,
                    snaplen: 0xffff,
                    options: vec![],
                })
                .unwrap();
                for f in &self.frames {
                    w.write_pcapng_block(EnhancedPacketBlock {
                        interface_id: 0,
                        // pcapng's default resolution is microseconds; pcap-file writes the
                        // duration's nanosecond count as the raw timestamp.
                        timestamp: std::time::Duration::from_nanos(f.ts / 1000),
                        original_len: f.bytes.len() as u32,
                        data: f.bytes.as_slice().into(),
                        options: vec![],
                    })
                    .unwrap();
                }
            }
        }
    }
}

/// One TCP connection: both ends' next sequence numbers and a clock.
struct Conn {
    client: Addr,
    server: Addr,
    cseq: u32,
    sseq: u32,
    ts: u64,
}

/// How a message's segments are put on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    InOrder,
    /// Segments in reverse order after the first, plus the second one sent twice.
    Reordered,
    /// The segment at this index never captured.
    Missing(usize),
}

impl Conn {
    fn open(cap: &mut Capture, client: Addr, server: Addr, ts: u64) -> Self {
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

    fn send(&mut self, cap: &mut Capture, from_client: bool, msg: &[u8], wire: Wire) {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let (seq, ack) = if from_client {
            (self.cseq, self.sseq)
        } else {
            (self.sseq, self.cseq)
        };
        let segs: Vec<(u32, &[u8])> = msg
            .chunks(1448)
            .enumerate()
            .map(|(i, c)| (seq.wrapping_add((i * 1448) as u32), c))
            .collect();
        let mut order: Vec<usize> = (0..segs.len()).collect();
        match wire {
            Wire::InOrder => {}
            Wire::Reordered => {
                order[1..].reverse();
                if segs.len() > 2 {
                    order.push(1);
                }
            }
            Wire::Missing(i) => order.retain(|&j| j != i),
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

    fn close(mut self, cap: &mut Capture) {
        cap.frame(
            self.ts,
            self.client,
            self.server,
            self.cseq,
            self.sseq,
            FIN,
            &[],
        );
        cap.frame(
            self.ts + 50_000,
            self.server,
            self.client,
            self.sseq,
            self.cseq + 1,
            FIN,
            &[],
        );
        cap.frame(
            self.ts + 100_000,
            self.client,
            self.server,
            self.cseq + 1,
            self.sseq.wrapping_add(1),
            ACK,
            &[],
        );
        self.ts += 200_000;
    }
}

fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: svc-user-profile-service\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")
        .into_bytes()
}

/// The head of a response with a `body`-byte body.
fn response_head(body: usize) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n")
}

/// A response with a `body`-byte body.
fn response(body: usize) -> Vec<u8> {
    let mut r = response_head(body).into_bytes();
    r.extend(std::iter::repeat_n(b'x', body));
    r
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

const REC: [&str; 4] = ["10.77.1.1", "10.77.1.2", "10.77.1.3", "10.77.1.4"];
const PROFILE: &str = "10.77.0.10";
const LOOKUP: &str = "/internal/admin/v0/users/lookup";
const STATES: [&str; 3] = ["CA", "NY", "TX"];

/// The incident over three days: each day from 09:00 UTC, every engine (-01..-04) reads
/// preferences 25 times (1,044-byte responses, one connection each); then, from 14:00, -04
/// calls the undocumented lookup once a day (state CA, NY, TX), 9,612 bytes back. Responses of
/// the lookups on day 2 go out of order with a retransmission; day 3's lookup is in order.
fn incident(format: Format, v6: bool) -> Capture {
    let mut cap = Capture::new(format);
    let addr = |v4: &str| -> std::net::IpAddr {
        if v6 {
            // fd77::1:4 style, as in the inventory.
            let o = ip(v4).to_string();
            let parts: Vec<&str> = o.split('.').collect();
            ip(&format!("fd77::{}:{}", parts[2], parts[3]).replace("::0:", "::"))
        } else {
            ip(v4)
        }
    };
    for day in 0..3u64 {
        let mut ts = DAY0 + day * DAY + 9 * 3600 * NS;
        for i in 0..25u16 {
            for (r, rec) in REC.iter().enumerate() {
                let port = 40_000 + (day as u16) * 1000 + i * 4 + r as u16;
                let mut c = Conn::open(&mut cap, (addr(rec), port), (addr(PROFILE), 80), ts);
                c.send(
                    &mut cap,
                    true,
                    &request("/api/v2/users/preferences?user=42"),
                    Wire::InOrder,
                );
                c.send(&mut cap, false, &response(1044), Wire::InOrder);
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
            (addr(REC[3]), 50_000 + day as u16),
            (addr(PROFILE), 80),
            ts,
        );
        c.send(&mut cap, true, &request(&target), Wire::InOrder);
        let wire = if day == 1 {
            Wire::Reordered
        } else {
            Wire::InOrder
        };
        c.send(&mut cap, false, &response(9612), wire);
        c.close(&mut cap);
    }
    cap
}

fn analyze(args: &[&str]) -> Output {
    let out = Command::new(MONITOR)
        .arg("analyze")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run monitor analyze");
    eprintln!("stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn kind<'a>(recs: &'a [Value], k: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["kind"] == k).collect()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// (rule, source pod, path or route, day index, count) of every violation.
fn violation_keys(recs: &[Value]) -> Vec<(String, String, String, u64, u64)> {
    let mut v: Vec<_> = kind(recs, "violation")
        .into_iter()
        .map(|r| {
            let t = r["time"].as_str().unwrap();
            let ns = monitor_record::time::parse_rfc3339_ns(t).unwrap() as u64;
            (
                r["rule"].as_str().unwrap().to_owned(),
                r["source"]["pod"].as_str().unwrap_or("?").to_owned(),
                r["http"]["path"]
                    .as_str()
                    .map_or_else(|| r["route"].as_str().unwrap().to_owned(), str::to_owned),
                (ns - DAY0) / DAY,
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// What the Vantage policy must say about the incident, by its own rules
/// (deploy/examples/vantage/policy.yaml): each lookup is undocumented (critical) and selects
/// three or more sensitive fields (`ssn*`, `email`, `phone`, `address_*`: critical at 3); its
/// 9,612 bytes are 9.2x the caller's 1,044-byte mean over more than 20 samples
/// (response-size-anomaly, factor 9); and the (caller, destination, route) edge is new after
/// the 300 s of learning (new-edge), on day 1 only. The lookups are a day apart, so none is
/// folded into another's 60 s aggregation window. The preference calls are documented for
/// the engines: no violation.
fn expected_incident() -> Vec<(String, String, String, u64, u64)> {
    let mut v = Vec::new();
    for day in 0..3 {
        for rule in [
            "undocumented-endpoint",
            "sensitive-fields",
            "response-size-anomaly",
        ] {
            v.push((
                rule.to_owned(),
                "svc-recommendation-engine-04".to_owned(),
                LOOKUP.to_owned(),
                day,
                1,
            ));
        }
    }
    v.push((
        "new-edge".to_owned(),
        "svc-recommendation-engine-04".to_owned(),
        LOOKUP.to_owned(),
        0,
        1,
    ));
    v.sort();
    v
}

#[test]
fn a_multi_day_capture_gives_the_incident_violations_records_and_report_figures() {
    let dir = tmp();
    let pcap = dir.path().join("incident.pcap");
    incident(Format::PcapEthernet, false).write(&pcap);
    let store = dir.path().join("store.db");
    let out = analyze(&[
        pcap.to_str().unwrap(),
        "--inventory",
        vantage("inventory.yaml").to_str().unwrap(),
        "--policy",
        vantage("policy.yaml").to_str().unwrap(),
        "--kinds",
        "all",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", out.status);
    let recs = lines(&out.stdout);
    assert_eq!(violation_keys(&recs), expected_incident());
    // Every exchange is a record with the capture's time, sizes from sequence numbers.
    let http = kind(&recs, "http");
    assert_eq!(http.len(), 3 * (25 * 4 + 1), "one http record per request");
    let lookups: Vec<_> = http
        .iter()
        .filter(|r| r["http"]["path"] == LOOKUP)
        .collect();
    assert_eq!(lookups.len(), 3);
    for (day, l) in lookups.iter().enumerate() {
        assert_eq!(l["http"]["response_body_bytes"], 9612, "{l}");
        assert_eq!(
            l["http"]["response_bytes"],
            response_head(9612).len() + 9612,
            "{l}"
        );
        assert_eq!(l["http"]["status"], 200);
        assert_eq!(l["source"]["pod"], "svc-recommendation-engine-04");
        assert_eq!(l["destination"]["service"], "svc-user-profile-service");
        let t = format!("2026-11-0{}T14:00:00", 2 + day);
        assert!(l["time"].as_str().unwrap().starts_with(&t), "{}", l["time"]);
        // The policy keeps `state` and `fields`: those values survive redaction.
        assert!(
            l["http"]["query"]
                .as_str()
                .unwrap()
                .contains(&format!("state={}", STATES[day]))
        );
    }
    assert_eq!(kind(&recs, "flow").len(), 3 * (25 * 4 + 1));
    assert!(kind(&recs, "flow").iter().all(|f| f["close"] == "fin"));
    assert!(
        kind(&recs, "loss").is_empty(),
        "nothing lost: {:?}",
        kind(&recs, "loss")
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 gaps missing"), "{stderr}");
    assert!(stderr.contains("1 retransmitted"), "{stderr}");

    // The store answers the forensic report as the collector would.
    let reader = monitor_collector::store::StoreReader::open(&store).unwrap();
    let rep = monitor_collector::report::report(
        &reader,
        &monitor_wire::proto::ReportRequest {
            subject: Some(monitor_wire::proto::report_request::Subject::Path(
                LOOKUP.to_owned(),
            )),
            until_unix_nano: i64::MAX,
            ..Default::default()
        },
    )
    .unwrap();
    let text = monitor_collector::report::render(&rep);
    eprintln!("{text}");
    assert_eq!(rep.requests, 3, "{rep:?}");
    let days: Vec<(String, u64)> = rep
        .by_day
        .iter()
        .map(|d| (d.key.clone(), d.count))
        .collect();
    assert_eq!(
        days,
        [("2026-11-02", 1), ("2026-11-03", 1), ("2026-11-04", 1)].map(|(d, n)| (d.to_owned(), n))
    );
    let by = |v: &[monitor_wire::proto::Bucket]| -> BTreeMap<String, u64> {
        v.iter().map(|c| (c.key.clone(), c.count)).collect()
    };
    assert_eq!(
        by(&rep.by_source),
        BTreeMap::from([("vantage/svc-recommendation-engine-04".to_owned(), 3)])
    );
    assert_eq!(by(&rep.by_status), BTreeMap::from([("200".to_owned(), 3)]));
    let states: BTreeMap<String, u64> = rep
        .filter_values
        .iter()
        .filter(|c| c.key == "state")
        .map(|c| (c.value.clone(), c.count))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([("CA".into(), 1), ("NY".into(), 1), ("TX".into(), 1)])
    );
    let bytes = rep.response_bytes.as_ref().expect("response bytes");
    assert_eq!(
        (bytes.requests, bytes.mean_bytes.round(), bytes.max_bytes),
        (3, 9612.0, 9612)
    );
    let prefs = rep
        .other_routes
        .iter()
        .find(|r| r.route.contains("/api/v2/users/preferences"))
        .unwrap_or_else(|| panic!("{:?}", rep.other_routes));
    assert_eq!((prefs.requests, prefs.mean_bytes.round()), (300, 1044.0));
}

fn run_incident(cap: &Path, extra: &[&str]) -> Output {
    let (inv, pol) = (vantage("inventory.yaml"), vantage("policy.yaml"));
    let mut args = vec![
        cap.to_str().unwrap(),
        "--inventory",
        inv.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    analyze(&args)
}

#[test]
fn pcapng_with_linux_cooked_frames_and_raw_ipv6_give_the_same_findings() {
    let dir = tmp();
    for (format, v6) in [(Format::PcapNgSll2, false), (Format::PcapRawIp, true)] {
        let cap = dir.path().join(format!("incident-{format:?}-{v6}.cap"));
        incident(format, v6).write(&cap);
        let out = run_incident(&cap, &["--kinds", "violation,http,loss"]);
        assert!(out.status.success(), "{format:?} v6={v6}: {:?}", out.status);
        let recs = lines(&out.stdout);
        assert_eq!(
            violation_keys(&recs),
            expected_incident(),
            "{format:?} v6={v6}"
        );
        assert_eq!(kind(&recs, "http").len(), 303, "{format:?} v6={v6}");
        assert!(kind(&recs, "loss").is_empty(), "{format:?} v6={v6}");
        let lookup = kind(&recs, "http")
            .into_iter()
            .find(|r| r["http"]["path"] == LOOKUP)
            .unwrap();
        let want_ip = if v6 { "fd77::1:4" } else { "10.77.1.4" };
        assert_eq!(lookup["source"]["ip"], want_ip, "{format:?}");
        assert_eq!(lookup["source"]["pod"], "svc-recommendation-engine-04");
    }
}

#[test]
fn reordered_retransmitted_and_missing_segments() {
    let dir = tmp();
    let mut cap = Capture::new(Format::PcapEthernet);
    let (client, server) = ((ip(REC[0]), 41_000), (ip(PROFILE), 80));
    let t0 = DAY0 + 10 * 3600 * NS;
    // 1: a 9,000-byte response in reverse order after its first segment, one segment twice.
    let mut c = Conn::open(&mut cap, client, server, t0);
    c.send(
        &mut cap,
        true,
        &request("/api/v2/users/preferences"),
        Wire::InOrder,
    );
    c.send(&mut cap, false, &response(9000), Wire::Reordered);
    // 2: keep-alive, the next response's third segment never captured.
    c.send(
        &mut cap,
        true,
        &request("/api/v2/users/preferences?page=2"),
        Wire::InOrder,
    );
    c.send(&mut cap, false, &response(9000), Wire::Missing(2));
    // 3: the next exchange on the same connection is still found after the gap.
    c.send(&mut cap, true, &request("/internal/metrics"), Wire::InOrder);
    c.send(&mut cap, false, &response(10), Wire::InOrder);
    c.close(&mut cap);
    let path = dir.path().join("segments.pcap");
    cap.write(&path);
    let out = run_incident(&path, &["--kinds", "all"]);
    assert!(out.status.success());
    let recs = lines(&out.stdout);
    let http = kind(&recs, "http");
    let got: Vec<(&str, u64, u64)> = http
        .iter()
        .map(|r| {
            (
                r["http"]["target"].as_str().unwrap(),
                r["http"]["response_bytes"].as_u64().unwrap(),
                r["http"]["response_body_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let resp = |b: usize| (response_head(b).len() + b) as u64;
    // Sizes come from sequence numbers: the gap does not shorten the second response.
    assert_eq!(
        got,
        [
            ("/api/v2/users/preferences", resp(9000), 9000),
            ("/api/v2/users/preferences?page=2", resp(9000), 9000),
            ("/internal/metrics", resp(10), 10),
        ]
    );
    let loss = kind(&recs, "loss");
    assert_eq!(loss.len(), 1, "{loss:?}");
    assert_eq!(
        (
            loss[0]["stage"].as_str(),
            loss[0]["reason"].as_str(),
            loss[0]["count"].as_u64()
        ),
        (Some("capture"), Some("missing-segment"), Some(1))
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 7 segments: 5 reordered (the 6 after the first, less the last which came first... all
    // but the first and the one that filled the gap wait), 1 resent; one gap of one segment.
    assert!(
        stderr.contains("1 retransmitted, 1 gaps missing (1448 bytes)"),
        "{stderr}"
    );
    // The calling engine is not a monitoring pod: /internal/metrics is a cross-service call.
    let v = violation_keys(&recs);
    assert_eq!(
        v,
        [(
            "cross-service-internal".into(),
            "svc-recommendation-engine-01".into(),
            "/internal/metrics".into(),
            0,
            1
        )]
    );
}

/// Byte offsets of each record in a pcap file written by [`Capture::write`].
fn record_offsets(cap: &Capture) -> Vec<usize> {
    let mut at = 24;
    cap.frames
        .iter()
        .map(|f| {
            let here = at;
            at += 16 + f.bytes.len();
            here
        })
        .collect()
}

#[test]
fn truncated_corrupt_and_empty_files_give_a_clear_error_and_the_rest_is_analysed() {
    let dir = tmp();
    let cap = incident(Format::PcapEthernet, false);
    let good = dir.path().join("good.pcap");
    cap.write(&good);
    let bytes = std::fs::read(&good).unwrap();
    let offsets = record_offsets(&cap);
    // The first lookup's last frame: everything of day 1 is before it.
    let day0_end = cap.frames.iter().rposition(|f| f.ts < DAY0 + DAY).unwrap() + 1;

    // Truncated in the middle of a record, on day 2.
    let truncated = dir.path().join("truncated.pcap");
    let cut = offsets[day0_end + 100] + 20;
    std::fs::write(&truncated, &bytes[..cut]).unwrap();
    let out = run_incident(&truncated, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "truncated.pcap: the file ends in the middle of a packet record (truncated) after"
        ) && err.contains("the packets before it were analysed"),
        "{err}"
    );
    let day0: Vec<_> = expected_incident()
        .into_iter()
        .filter(|v| v.3 == 0)
        .collect();
    assert_eq!(violation_keys(&lines(&out.stdout)), day0);

    // A record header whose length is absurd, on day 2.
    let corrupt = dir.path().join("corrupt.pcap");
    let mut c = bytes.clone();
    let at = offsets[day0_end + 100] + 8;
    c[at..at + 8].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f]);
    std::fs::write(&corrupt, &c).unwrap();
    let out = run_incident(&corrupt, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt.pcap: ")
            && err.contains(&format!("after {} packets", day0_end + 100)),
        "{err}"
    );
    assert_eq!(violation_keys(&lines(&out.stdout)), day0);

    // An empty file and a file that is not a capture, next to a good one: the good one is
    // analysed in full, the others named.
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"not a capture\n").unwrap();
    let out = analyze(&[
        empty.to_str().unwrap(),
        text.to_str().unwrap(),
        good.to_str().unwrap(),
        "--inventory",
        vantage("inventory.yaml").to_str().unwrap(),
        "--policy",
        vantage("policy.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("empty.pcap: the file is empty (0 bytes)"),
        "{err}"
    );
    assert!(
        err.contains("notes.txt: not a pcap or pcapng capture (first bytes 6e 6f 74 20)"),
        "{err}"
    );
    assert_eq!(violation_keys(&lines(&out.stdout)), expected_incident());

    // Only unreadable files: an error and nothing else.
    let out = analyze(&[
        empty.to_str().unwrap(),
        "--inventory",
        vantage("inventory.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no capture could be read"));
    assert!(out.stdout.is_empty());
}

#[test]
fn policy_dry_run_over_the_stored_history() {
    let dir = tmp();
    let pcap = dir.path().join("incident.pcap");
    incident(Format::PcapEthernet, false).write(&pcap);
    let store = dir.path().join("store.db");
    // Any collector sink works: here OCSF to a file, instead of NDJSON on stdout.
    let ocsf = dir.path().join("violations.ocsf.ndjson");
    let sink = format!("ocsf:file={}", ocsf.display());
    let out = run_incident(
        &pcap,
        &["--store", store.to_str().unwrap(), "--sink", &sink],
    );
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let events = lines(&std::fs::read(&ocsf).unwrap());
    assert_eq!(events.len(), 10, "the incident's violations");
    assert!(
        events.iter().all(|e| e["class_uid"] == 2004),
        "Detection Finding"
    );
    // The candidate documents the lookup for the recommendation engines, and protects /api/
    // with only the preferences route documented, for the checkout service alone.
    let policy = std::fs::read_to_string(vantage("policy.yaml")).unwrap();
    let candidate = policy
        .replace(
            "protected_prefixes:\n  - /internal/\n",
            "protected_prefixes:\n  - /internal/\n  - /api/\n",
        )
        .replace(
            "\nendpoints:\n",
            "\nendpoints:\n  - path: /internal/admin/v0/users/lookup\n    services: [svc-user-profile-service]\n    callers:\n      - service: svc-recommendation-engine\n  - path: /api/v2/users/preferences\n    services: [svc-user-profile-service]\n    callers:\n      - service: svc-checkout\n",
        );
    assert_ne!(candidate, policy);
    let cand = dir.path().join("candidate.yaml");
    std::fs::write(&cand, candidate).unwrap();
    let run = |output: &str| {
        Command::new(MONITOR)
            .args([
                "policy",
                "dry-run",
                "--policy",
                cand.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
            ])
            .args(["--since", "2026-11-01T00:00:00Z", "--output", output])
            .output()
            .unwrap()
    };
    let out = run("json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (d["http_records"].as_u64(), d["stored_violations"].as_u64()),
        (Some(303), Some(10))
    );
    let rows = |k: &str| -> Vec<(String, String, String, u64, u64)> {
        d[k].as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["rule"].as_str().unwrap().to_owned(),
                    g["source"].as_str().unwrap().to_owned(),
                    g["route"].as_str().unwrap().to_owned(),
                    g["fired"].as_u64().unwrap(),
                    g["would_fire"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let lookup_route = rows("gone")
        .first()
        .map(|r| r.2.clone())
        .unwrap_or_default();
    assert!(lookup_route.contains(LOOKUP), "{d:#}");
    // The lookup is documented now: no longer undocumented (3 occurrences). Nor a size
    // anomaly: a documented, allowed endpoint is judged against its own size history only (no
    // fallback to the caller's other routes), and the preference calls, now violations
    // themselves, no longer teach the baseline (policy/engine.rs, evaluate_http).
    assert_eq!(
        rows("gone"),
        ["response-size-anomaly", "undocumented-endpoint"].map(|r| (
            r.into(),
            "vantage/svc-recommendation-engine-04".into(),
            lookup_route.clone(),
            3,
            0
        ))
    );
    // The engines' preference calls are now cross-service calls of a protected route.
    let new = rows("new");
    assert_eq!(new.len(), 4, "{new:?}");
    for (i, r) in new.iter().enumerate() {
        assert_eq!(r.0, "cross-service-internal");
        assert_eq!(r.1, format!("vantage/svc-recommendation-engine-0{}", i + 1));
        assert!(r.2.contains("/api/v2/users/preferences"), "{r:?}");
        assert_eq!((r.3, r.4), (0, 75), "25 calls a day for 3 days");
    }
    // Unchanged: the sensitive fields and the new edge still fire.
    let both: Vec<String> = rows("both").into_iter().map(|r| r.0).collect();
    assert_eq!(both, ["new-edge", "sensitive-fields"]);
    let text = String::from_utf8(run("text").stdout).unwrap();
    eprintln!("{text}");
    assert!(
        text.contains("Fired, would no longer fire:") && text.contains("undocumented-endpoint")
    );
}
