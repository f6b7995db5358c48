//! Property tests of the agent's pure logic, through the library's public API: the HTTP head
//! parsers and the connection tracker never panic on any input, and the tracker reconstructs
//! keep-alive traffic exactly however TCP cut it into segments.

use monitor_agent::{
    conn::AgentLoss, conn::Exchange, conn::Output, conn::Tracker, http, http::Parsed,
};

use monitor_common::{
    Direction,
    flow::{CloseReason, DIR_FIN, DIR_SEQ_VALID, DirStats, FAMILY_V4, FlowTuple, Initiator},
    http::{CONT_SEGMENTS, ChunkKind, HTTP_CAPTURE, classify},
    sock::SockOrigin,
};
use monitor_record::{exchange::Completion, exchange::Observer};
use proptest::{collection::vec, prelude::*, sample::select};

/// A flow open record's socket-level part when the socket-level programs saw nothing.
const NO_ORIGIN: (SockOrigin, Option<u32>) = (SockOrigin::NONE, None);

// ---------------------------------------------------------------------------------------------
// Inputs.

/// Little-endian first eight bytes, as the kernel reads them.
fn first8(p: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = p.len().min(8);
    b[..n].copy_from_slice(&p[..n]);
    u64::from_le_bytes(b)
}

/// Content-Length values that stress arithmetic: small, around 2^32 and 2^64.
fn content_length() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100_000).prop_map(|n| n.to_string()),
        select(vec![
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
            u64::MAX - 1,
            u64::MAX - 40,
            u64::MAX / 2,
        ])
        .prop_map(|n| n.to_string()),
        // Not a number, or larger than any u64.
        select(vec!["-1", "1e3", " 12 ", "99999999999999999999999", "",]).prop_map(str::to_owned),
    ]
}

/// Pieces of HTTP heads, to reach the parsers' deeper states more often than random bytes do.
fn head_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(vec![
            &b"GET /a HTTP/1.1\r\n"[..],
            b"HEAD /h HTTP/1.1\r\n",
            b"POST /p?q=1 HTTP/1.0\r\n",
            b"CONNECT host:443 HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 204 No Content\r\n",
            b"HTTP/1.1 100 Continue\r\n",
            b"HTTP/1.0 304 Not Modified\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n",
            b"Host: web\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: gzip, CHUNKED\r\n",
            b"Cookie: secret\r\n",
            b"Bad Header\r\n",
            b"\r\n",
            b"\r\n\r\n",
            b"\n",
            b"GET ",
            b"HTTP/1.",
            b": ",
        ])
        .prop_map(<[u8]>::to_vec),
        content_length().prop_map(|n| format!("Content-Length: {n}\r\n").into_bytes()),
        vec(any::<u8>(), 0..24),
        vec(select(vec![b'x', b' ', b'\r', b'\n', b':', b'/']), 0..40),
    ]
}

/// Bytes that are often almost an HTTP head, sometimes one, sometimes anything.
fn heady_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(head_piece(), 0..10).prop_map(|v| v.concat()),
        1 => vec(any::<u8>(), 0..300),
    ]
}

fn tuple(local_port: u16, remote_port: u16, initiator: Initiator) -> FlowTuple {
    FlowTuple {
        family: FAMILY_V4,
        initiator: initiator as u8,
        _pad: [0; 2],
        local_port,
        remote_port,
        local_addr: [10, 77, 0, 21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        remote_addr: [10, 77, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Egress), Just(Direction::Ingress)]
}

fn dir_stats() -> impl Strategy<Value = DirStats> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        0u32..8,
    )
        .prop_map(|(bytes, packets, payload_bytes, end_seq, flags)| DirStats {
            bytes,
            packets,
            payload_bytes,
            end_seq,
            flags,
        })
}

/// One call on the tracker, with the kernel's guarantees on chunks only (`data` at most
/// `payload_len` and at most [`HTTP_CAPTURE`] bytes).
#[derive(Debug, Clone)]
enum Event {
    Open {
        cookie: u64,
        tuple: FlowTuple,
        ns: u64,
    },
    Chunk {
        cookie: u64,
        dir: Direction,
        kind: ChunkKind,
        seq: u32,
        payload_len: u32,
        data: Vec<u8>,
        ns: u64,
    },
    Progress {
        cookie: u64,
        dir: [DirStats; 2],
        ns: u64,
    },
    Close {
        cookie: u64,
        dir: [DirStats; 2],
        ns: u64,
        reason: CloseReason,
    },
    ExpireQuiet {
        now: u64,
        quiet: u64,
    },
    Flush,
    Drain,
}

fn event() -> impl Strategy<Value = Event> {
    let cookie = 0u64..3;
    // Sequence numbers near a few bases (so chunks meet, overlap and leave gaps), near the
    // wrap, or anywhere.
    let seq = prop_oneof![
        (select(vec![0u32, 1000, 5000, u32::MAX - 100]), 0u32..400)
            .prop_map(|(b, o)| b.wrapping_add(o)),
        any::<u32>(),
    ];
    let kind = select(vec![
        ChunkKind::RequestStart,
        ChunkKind::ResponseStart,
        ChunkKind::Continuation,
    ]);
    let chunk = (
        cookie.clone(),
        direction(),
        kind,
        seq,
        heady_bytes(),
        prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
        0u64..1000,
    )
        .prop_map(|(cookie, dir, kind, seq, mut data, extra, ns)| {
            data.truncate(HTTP_CAPTURE);
            let payload_len = u32::try_from(data.len())
                .expect("capture size fits")
                .saturating_add(extra);
            Event::Chunk {
                cookie,
                dir,
                kind,
                seq,
                payload_len,
                data,
                ns,
            }
        });
    let reason = select(vec![
        CloseReason::Fin,
        CloseReason::Rst,
        CloseReason::Idle,
        CloseReason::AgentStopped,
    ]);
    prop_oneof![
        2 => (cookie.clone(), any::<u16>(), any::<u16>(), any::<bool>(), 0u64..1000).prop_map(
            |(cookie, l, r, local, ns)| Event::Open {
                cookie,
                tuple: tuple(l, r, if local { Initiator::Local } else { Initiator::Unknown }),
                ns,
            }
        ),
        8 => chunk,
        1 => (cookie.clone(), dir_stats(), dir_stats(), 0u64..1000).prop_map(|(cookie, a, b, ns)| {
            Event::Progress { cookie, dir: [a, b], ns }
        }),
        1 => (cookie, dir_stats(), dir_stats(), 0u64..1000, reason).prop_map(
            |(cookie, a, b, ns, reason)| Event::Close { cookie, dir: [a, b], ns, reason }
        ),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(now, quiet)| Event::ExpireQuiet { now, quiet }),
        1 => Just(Event::Flush),
        1 => Just(Event::Drain),
    ]
}

// ---------------------------------------------------------------------------------------------
// Parsers and tracker never panic.

proptest! {
    #[test]
    fn http_parsers_never_panic_on_any_bytes(buf in vec(any::<u8>(), 0..600)) {
        let _ = http::parse_request(&buf);
        let _ = http::parse_response(&buf);
        let _ = http::parse_truncated_request(&buf);
        let _ = http::parse_truncated_response(&buf);
    }

    #[test]
    fn http_parsers_never_panic_on_head_like_bytes(buf in heady_bytes()) {
        // A complete head reports a length within the input.
        if let Ok(Parsed::Complete(h)) = http::parse_request(&buf) {
            prop_assert!(h.head_len.is_some_and(|n| n <= buf.len()));
        }
        if let Ok(Parsed::Complete(h)) = http::parse_response(&buf) {
            prop_assert!(h.head_len.is_some_and(|n| n <= buf.len()));
        }
        if let Some(h) = http::parse_truncated_request(&buf) {
            prop_assert_eq!(h.head_len, None);
        }
        if let Some(h) = http::parse_truncated_response(&buf) {
            prop_assert_eq!(h.head_len, None);
        }
    }

    #[test]
    fn tracker_never_panics_on_any_event_sequence(events in vec(event(), 0..60)) {
        let mut t = Tracker::new();
        let mut closes = 0usize;
        let mut flows = 0usize;
        for e in events {
            match e {
                Event::Open { cookie, tuple, ns } => t.on_open(cookie, 1, tuple, NO_ORIGIN, ns),
                Event::Chunk { cookie, dir, kind, seq, payload_len, data, ns } => {
                    t.on_chunk(cookie, 1, dir, kind, seq, payload_len, &data, ns);
                }
                Event::Progress { cookie, dir, ns } => t.on_progress(cookie, dir, ns),
                Event::Close { cookie, dir, ns, reason } => {
                    closes += 1;
                    t.on_close(cookie, 1, tuple(1, 2, Initiator::Unknown), dir, ns, reason);
                }
                Event::ExpireQuiet { now, quiet } => t.expire_quiet(now, quiet),
                Event::Flush => t.flush_pending(),
                Event::Drain => {
                    flows += t.drain().filter(|o| matches!(o, Output::Flow(_))).count();
                }
            }
            let _ = t.awaiting_body().count();
        }
        t.flush_pending();
        flows += t.drain().filter(|o| matches!(o, Output::Flow(_))).count();
        // Every close yields exactly one flow summary.
        prop_assert_eq!(flows, closes);
    }
}

// ---------------------------------------------------------------------------------------------
// Keep-alive reconstruction.

/// How one message is delimited on the wire.
#[derive(Debug, Clone)]
enum Body {
    /// No body, no header (a GET, or a HEAD's response).
    None,
    /// `Content-Length: n` and `n` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked` with chunks of these sizes and the last chunk.
    Chunked(Vec<usize>),
    /// The response to a HEAD: declares a length, sends no body.
    HeadResponse(usize),
}

impl Body {
    fn header(&self) -> String {
        match self {
            Self::None => String::new(),
            Self::Length(n) | Self::HeadResponse(n) => format!("Content-Length: {n}\r\n"),
            Self::Chunked(_) => "Transfer-Encoding: chunked\r\n".to_owned(),
        }
    }

    /// The body bytes on the wire.
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::None | Self::HeadResponse(_) => Vec::new(),
            Self::Length(n) => vec![b'x'; *n],
            Self::Chunked(sizes) => {
                let mut v = Vec::new();
                for &n in sizes.iter().filter(|&&n| n > 0) {
                    v.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    v.extend(std::iter::repeat_n(b'y', n));
                    v.extend_from_slice(b"\r\n");
                }
                v.extend_from_slice(b"0\r\n\r\n");
                v
            }
        }
    }
}

/// One request/response pair and how TCP cut it up.
#[derive(Debug, Clone)]
struct Pair {
    method: &'static str,
    target: String,
    req_body: Body,
    status: u16,
    resp_body: Body,
    /// Fractions (per mille) at which each head is cut: 0 to 2 cuts, so 1 to 3 segments.
    req_cuts: Vec<u16>,
    resp_cuts: Vec<u16>,
    /// Per mille of the body in the first of at most two body segments.
    body_split: u16,
    /// The first body bytes travel in the head's last segment.
    coalesce: bool,
    pad: usize,
}

impl Pair {
    fn request(&self) -> (Vec<u8>, Vec<u8>) {
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: svc-web\r\nX-Pad: {}\r\n{}\r\n",
            self.method,
            self.target,
            "p".repeat(self.pad),
            self.req_body.header()
        );
        (head.into_bytes(), self.req_body.bytes())
    }

    fn response(&self) -> (Vec<u8>, Vec<u8>) {
        let head = format!(
            "HTTP/1.1 {} Whatever\r\nServer: t\r\n{}\r\n",
            self.status,
            self.resp_body.header()
        );
        (head.into_bytes(), self.resp_body.bytes())
    }

    fn expected_req_body(&self) -> u64 {
        self.req_body.bytes().len() as u64
    }

    fn expected_resp_body(&self) -> u64 {
        self.resp_body.bytes().len() as u64
    }
}

fn pair() -> impl Strategy<Value = Pair> {
    let request = prop_oneof![
        Just(("GET", Body::None)),
        Just(("DELETE", Body::None)),
        (0usize..20_000).prop_map(|n| ("POST", Body::Length(n))),
        vec(1usize..5000, 0..4).prop_map(|c| ("PUT", Body::Chunked(c))),
    ];
    let response = prop_oneof![
        (select(vec![200u16, 201, 404, 500]), 0usize..100_000)
            .prop_map(|(s, n)| (s, Body::Length(n))),
        (select(vec![200u16, 206]), vec(0usize..5000, 0..5))
            .prop_map(|(s, c)| (s, Body::Chunked(c))),
        select(vec![204u16, 304]).prop_map(|s| (s, Body::None)),
    ];
    let cuts = vec(1u16..1000, 0..=2);
    (
        request,
        response,
        "[a-z0-9]{1,12}",
        any::<bool>(),
        cuts.clone(),
        cuts,
        0u16..=1000,
        any::<bool>(),
        0usize..300,
    )
        .prop_map(
            |(
                (method, req_body),
                (status, resp_body),
                name,
                head,
                req_cuts,
                resp_cuts,
                body_split,
                coalesce,
                pad,
            )| {
                // Some requests are HEADs: their responses declare a length and send nothing.
                let (method, req_body, resp_body) = if head && matches!(resp_body, Body::Length(_))
                {
                    let Body::Length(n) = resp_body else {
                        unreachable!()
                    };
                    ("HEAD", Body::None, Body::HeadResponse(n))
                } else {
                    (method, req_body, resp_body)
                };
                Pair {
                    method,
                    target: format!("/api/{name}?page={pad}"),
                    req_body,
                    status,
                    resp_body,
                    req_cuts,
                    resp_cuts,
                    body_split,
                    coalesce,
                    pad,
                }
            },
        )
}

/// Segments of one message: the head cut at `cuts` (per mille), then the body in at most two
/// segments, the first body bytes possibly riding in the head's last segment.
fn segments(
    head: &[u8],
    body: &[u8],
    cuts: &[u16],
    body_split: u16,
    coalesce: bool,
) -> Vec<Vec<u8>> {
    // The kernel recognises a start from its first eight bytes, and a segment that starts like
    // a request or status line is a start: so the first cut keeps eight bytes and no segment
    // after it starts with one (a request line cut just before "HTTP/1.1" would be taken for a
    // response).
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| head.len() * usize::from(c) / 1000)
        .filter(|&p| p >= 8 && p < head.len() && classify(first8(&head[p..])).is_none())
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut segs = Vec::new();
    let mut from = 0;
    for p in points {
        segs.push(head[from..p].to_vec());
        from = p;
    }
    segs.push(head[from..].to_vec());
    let split = body.len() * usize::from(body_split) / 1000;
    let (a, b) = body.split_at(split);
    let mut rest = Vec::new();
    if coalesce {
        segs.last_mut()
            .expect("a head segment")
            .extend_from_slice(a);
    } else if !a.is_empty() {
        rest.push(a.to_vec());
    }
    if !b.is_empty() {
        rest.push(b.to_vec());
    }
    segs.extend(rest);
    segs
}

/// One direction of a socket as the kernel sees it: sequence numbers, and the capture rule of
/// `monitor-ebpf/src/http.rs` (start chunks, then continuation chunks while a head may still be
/// open), feeding the tracker what the ring buffer would carry.
struct KernelDir {
    seq: u32,
    budget: u8,
}

impl KernelDir {
    fn send(&mut self, t: &mut Tracker, cookie: u64, dir: Direction, seg: &[u8], ns: u64) {
        let seq = self.seq;
        let len = u32::try_from(seg.len()).expect("segment fits");
        self.seq = seq.wrapping_add(len);
        let first = if seg.len() >= 8 { first8(seg) } else { 0 };
        let kind = match classify(first) {
            Some(k) => k,
            None if self.budget > 0 => {
                self.budget -= 1;
                ChunkKind::Continuation
            }
            None => return,
        };
        if seg.ends_with(b"\r\n\r\n") {
            self.budget = 0;
        } else if kind != ChunkKind::Continuation {
            self.budget = CONT_SEGMENTS;
        }
        let n = seg.len().min(HTTP_CAPTURE);
        t.on_chunk(cookie, 7, dir, kind, seq, len, &seg[..n], ns);
    }
}

fn run_keep_alive(pairs: &[Pair], seqs: (u32, u32), server_side: bool) -> Vec<Output> {
    const COOKIE: u64 = 42;
    let (req_dir, local, initiator) = if server_side {
        (Direction::Ingress, (8080, 51_000), Initiator::Unknown)
    } else {
        (Direction::Egress, (51_000, 8080), Initiator::Local)
    };
    let resp_dir = req_dir.opposite();
    let tup = tuple(local.0, local.1, initiator);
    let mut t = Tracker::new();
    t.on_open(COOKIE, 7, tup, NO_ORIGIN, 1);
    let mut k = [
        KernelDir {
            seq: seqs.0,
            budget: 0,
        },
        KernelDir {
            seq: seqs.1,
            budget: 0,
        },
    ];
    let mut ns = 1;
    for p in pairs {
        let (head, body) = p.request();
        for s in segments(&head, &body, &p.req_cuts, p.body_split, p.coalesce) {
            ns += 1;
            k[req_dir.index()].send(&mut t, COOKIE, req_dir, &s, ns);
        }
        let (head, body) = p.response();
        for s in segments(&head, &body, &p.resp_cuts, p.body_split, p.coalesce) {
            ns += 1;
            k[resp_dir.index()].send(&mut t, COOKIE, resp_dir, &s, ns);
        }
    }
    let mut dir = [DirStats::default(); 2];
    for (d, kd) in dir.iter_mut().zip(&k) {
        d.end_seq = kd.seq;
        d.flags = DIR_SEQ_VALID | DIR_FIN;
    }
    t.on_close(COOKIE, 7, tup, dir, ns + 1, CloseReason::Fin);
    let outs: Vec<Output> = t.drain().collect();
    assert!(t.is_empty(), "a closed flow is forgotten");
    outs
}

fn exchanges(outs: &[Output]) -> Vec<&Exchange> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Exchange(e) => Some(&**e),
            _ => None,
        })
        .collect()
}

fn losses(outs: &[Output]) -> Vec<AgentLoss> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Loss(l) => Some(*l),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn keep_alive_pairs_are_reconstructed_exactly(
        pairs in vec(pair(), 1..8),
        seqs in (any::<u32>(), any::<u32>()),
        server_side in any::<bool>(),
    ) {
        let outs = run_keep_alive(&pairs, seqs, server_side);
        prop_assert_eq!(losses(&outs), Vec::<AgentLoss>::new());
        let ex = exchanges(&outs);
        prop_assert_eq!(ex.len(), pairs.len(), "{:#?}", outs);
        for (i, (e, p)) in ex.iter().zip(&pairs).enumerate() {
            let observer = if server_side { Observer::Server } else { Observer::Client };
            prop_assert_eq!(e.observer, observer, "#{}", i);
            prop_assert_eq!(&e.request.method, p.method, "#{}", i);
            prop_assert_eq!(&e.request.target, &p.target, "#{}", i);
            prop_assert_eq!(e.request.host.as_deref(), Some("svc-web"), "#{}", i);
            prop_assert!(!e.request_truncated, "#{}", i);
            prop_assert_eq!(e.request_body_bytes, Some(p.expected_req_body()), "#{}", i);
            prop_assert_eq!(e.completion, Completion::Complete, "#{}", i);
            let r = e.response.as_ref().expect("every request was answered");
            prop_assert_eq!(r.head.status, p.status, "#{}", i);
            prop_assert!(!r.truncated, "#{}", i);
            prop_assert_eq!(r.body_bytes, Some(p.expected_resp_body()), "#{} {:?}", i, p);
        }
        match outs.last() {
            Some(Output::Flow(f)) => prop_assert_eq!(f.http_exchanges, pairs.len() as u64),
            other => prop_assert!(false, "the flow summary comes last, got {:?}", other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by the properties above.

/// A Content-Length near `usize::MAX` made the end-of-message offset overflow: a panic in debug
/// builds, and in release an endless loop re-dispatching the same head (the offset wrapped back
/// to the head's own start, which "starts a message").
#[test]
fn content_length_near_the_top_of_usize_does_not_overflow() {
    for (dir, kind, line) in [
        (
            Direction::Egress,
            ChunkKind::RequestStart,
            "POST /x HTTP/1.1",
        ),
        (
            Direction::Ingress,
            ChunkKind::ResponseStart,
            "HTTP/1.1 200 OK",
        ),
    ] {
        for back in [0u64, 1, 8, 100] {
            let mut t = Tracker::new();
            t.on_open(1, 1, tuple(51_000, 80, Initiator::Local), NO_ORIGIN, 1);
            // The head's length with a 20-digit Content-Length value.
            let probe = format!("{line}\r\nContent-Length: {}\r\n\r\n", u64::MAX);
            let n = u64::MAX - probe.len() as u64 + 1 - back;
            let head = format!("{line}\r\nContent-Length: {n}\r\n\r\n");
            assert_eq!(head.len(), probe.len());
            let mut seg = head.into_bytes();
            seg.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let len = u32::try_from(seg.len()).expect("small");
            t.on_chunk(1, 1, dir, kind, 0, len, &seg, 2);
            let outs: Vec<Output> = t.drain().collect();
            assert!(outs.len() <= 2, "{outs:?}");
        }
    }
}

/// A chunked request body whose end the kernel did not capture must not be measured from the
/// head alone when the response completes at once (no body, or a small body in its first
/// segment): the exchange waits for a flow-table read after the response, or the close. Found
/// by `keep_alive_pairs_are_reconstructed_exactly` (it used to report 0 bytes).
#[test]
fn chunked_request_body_is_measured_when_the_response_completes_first() {
    let pair = Pair {
        method: "PUT",
        target: "/upload".to_owned(),
        req_body: Body::Chunked(vec![5]),
        status: 204,
        resp_body: Body::None,
        req_cuts: Vec::new(),
        resp_cuts: Vec::new(),
        body_split: 0,
        coalesce: false,
        pad: 0,
    };
    let outs = run_keep_alive(std::slice::from_ref(&pair), (1000, 9000), false);
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 1, "{outs:?}");
    assert_eq!(ex[0].response.as_ref().and_then(|r| r.body_bytes), Some(0));
    assert_eq!(ex[0].request_body_bytes, Some(pair.expected_req_body()));
}
