//! Unit tests of the HTTP/2 decoder, on frames built here with a real HPACK encoder
//! (`loona_hpack::Encoder`). Recorded client traffic is in `tests/fixtures.rs`.

use super::frame::tests::frame;
use super::frame::*;
use super::*;

const C: Dir = Dir::ClientToServer;
const S: Dir = Dir::ServerToClient;

fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

fn client_start() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend(settings(&[(3, 100)]));
    b
}

struct Peer {
    enc: loona_hpack::Encoder<'static>,
}

impl Peer {
    fn new() -> Self {
        Peer {
            enc: loona_hpack::Encoder::new(),
        }
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.enc
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn headers(&mut self, stream: u32, flags: u8, fields: &[(&str, &str)]) -> Vec<u8> {
        let b = self.block(fields);
        frame(HEADERS, flags | FLAG_END_HEADERS, stream, &b)
    }
}

fn get(path: &str) -> Vec<(&'static str, &str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "svc.prod:8080"),
        (":path", path),
    ]
}

fn run(conn: &mut H2Connection, steps: &[(Dir, Vec<u8>)]) -> Vec<H2Event> {
    let mut ev = Vec::new();
    for (dir, bytes) in steps {
        conn.feed(*dir, bytes, &mut ev);
    }
    ev
}

fn requests(ev: &[H2Event]) -> Vec<&Request> {
    ev.iter()
        .filter_map(|e| match e {
            H2Event::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn responses(ev: &[H2Event]) -> Vec<&Response> {
    ev.iter()
        .filter_map(|e| match e {
            H2Event::Response(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn desyncs(ev: &[H2Event]) -> Vec<(Dir, &'static str, bool)> {
    ev.iter()
        .filter_map(|e| match e {
            H2Event::Desync {
                dir,
                reason,
                frames_continue,
            } => Some((*dir, reason.code(), *frames_continue)),
            _ => None,
        })
        .collect()
}

fn ends(ev: &[H2Event]) -> Vec<StreamEnd> {
    ev.iter()
        .filter_map(|e| match e {
            H2Event::StreamEnd(s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn assert_accounting(conn: &H2Connection, fed: [u64; 2]) {
    for (dir, fed) in [(C, fed[0]), (S, fed[1])] {
        let s = conn.dir_stats(dir);
        assert_eq!(
            s.parsed_bytes + s.unparsed_bytes + s.pending_bytes,
            fed,
            "{dir:?} {s:?}"
        );
    }
}

#[test]
fn get_request_response_and_end() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut req = get("/api/users?id=7");
    req.push(("authorization", "Bearer s3cret"));
    req.push(("user-agent", "test/1"));
    let steps = vec![
        (C, client_start()),
        (S, settings(&[])),
        (C, c.headers(1, FLAG_END_STREAM, &req)),
        (
            S,
            s.headers(
                1,
                0,
                &[(":status", "200"), ("content-type", "application/json")],
            ),
        ),
        (S, frame(DATA, 0, 1, b"{\"a\":")),
        (S, frame(DATA, FLAG_END_STREAM, 1, b"1}")),
    ];
    let mut conn = H2Connection::new();
    let ev = run(&mut conn, &steps);
    let r = requests(&ev);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].method.as_deref(), Some("GET"));
    assert_eq!(r[0].path.as_deref(), Some("/api/users?id=7"));
    assert_eq!(r[0].authority.as_deref(), Some("svc.prod:8080"));
    assert_eq!(r[0].scheme.as_deref(), Some("http"));
    assert!(r[0].decoded && r[0].end_stream && !r[0].is_grpc && !r[0].malformed);
    assert_eq!(
        r[0].headers[0],
        Header {
            name: "authorization".into(),
            value: None
        }
    );
    assert_eq!(r[0].headers[1].value.as_deref(), Some("test/1"));
    let resp = responses(&ev);
    assert_eq!(resp[0].status, Some(200));
    assert_eq!(resp[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        ends(&ev),
        [StreamEnd {
            stream_id: 1,
            request_bytes: 0,
            response_bytes: 7,
            kind: StreamEndKind::Complete
        }]
    );
    assert!(desyncs(&ev).is_empty());
    assert_eq!(conn.open_streams(), 0);
    let fed = |d: Dir| {
        steps
            .iter()
            .filter(|(x, _)| *x == d)
            .map(|(_, b)| b.len() as u64)
            .sum()
    };
    assert_accounting(&conn, [fed(C), fed(S)]);
    assert_eq!(conn.dir_stats(C).parsed_bytes, fed(C));
    assert_eq!(conn.dir_stats(S).data_frames, 2);
}

#[test]
fn padded_and_priority_headers_and_padded_data() {
    let mut c = Peer::new();
    let block = c.block(&get("/p"));
    let mut payload = vec![3]; // pad length
    payload.extend_from_slice(&[0x80, 0, 0, 1, 16]); // exclusive dependency on 1, weight 16
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0; 3]);
    let headers = frame(
        HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS,
        1,
        &payload,
    );
    let data = frame(
        DATA,
        FLAG_PADDED | FLAG_END_STREAM,
        1,
        &[4, b'a', b'b', 0, 0, 0, 0],
    );
    let mut conn = H2Connection::new();
    let ev = run(&mut conn, &[(C, client_start()), (C, headers), (C, data)]);
    assert_eq!(requests(&ev)[0].path.as_deref(), Some("/p"));
    conn.finish(&mut Vec::new());
    let mut ev = Vec::new();
    let mut conn2 = H2Connection::new();
    let mut c = Peer::new();
    conn2.feed(C, &client_start(), &mut ev);
    conn2.feed(C, &c.headers(1, 0, &get("/p")), &mut ev);
    conn2.feed(
        C,
        &frame(DATA, FLAG_PADDED | FLAG_END_STREAM, 1, &[2, b'a', 0, 0]),
        &mut ev,
    );
    conn2.finish(&mut ev);
    assert_eq!(ends(&ev)[0].request_bytes, 1);
    // Pad length over the payload: the frame is impossible.
    let ev = run(
        &mut H2Connection::new(),
        &[
            (C, client_start()),
            (C, frame(DATA, FLAG_PADDED, 1, &[9, 1])),
        ],
    );
    assert_eq!(desyncs(&ev), [(C, "bad-padding", false)]);
}

#[test]
fn continuation_spans_frames() {
    let mut c = Peer::new();
    let mut fields = get("/cont");
    let long = "x".repeat(300);
    fields.push(("x-long", &long));
    let block = c.block(&fields);
    let (a, rest) = block.split_at(5);
    let (b, d) = rest.split_at(rest.len() / 2);
    let steps = vec![
        (C, client_start()),
        (C, frame(HEADERS, FLAG_END_STREAM, 1, a)),
        (C, frame(CONTINUATION, 0, 1, b)),
        (C, frame(CONTINUATION, FLAG_END_HEADERS, 1, d)),
    ];
    let mut conn = H2Connection::new();
    let ev = run(&mut conn, &steps);
    let r = requests(&ev);
    assert_eq!(r[0].path.as_deref(), Some("/cont"));
    assert!(r[0].end_stream);
    assert_eq!(conn.dir_stats(C).continuation_frames, 2);
}

#[test]
fn bad_continuation_desyncs_headers_and_later_requests_have_no_path() {
    let mut c = Peer::new();
    let block = c.block(&get("/a"));
    let steps = vec![
        (C, client_start()),
        (C, frame(HEADERS, 0, 1, &block)),
        (C, frame(PING, 0, 0, &[0; 8])),
        (C, c.headers(3, FLAG_END_STREAM, &get("/b"))),
        (C, frame(CONTINUATION, FLAG_END_HEADERS, 5, b"zz")),
    ];
    let mut conn = H2Connection::new();
    let ev = run(&mut conn, &steps);
    assert_eq!(desyncs(&ev), [(C, "bad-continuation", true)]);
    let r = requests(&ev);
    assert_eq!(r.len(), 2);
    assert!(
        r.iter()
            .all(|r| !r.decoded && r.path.is_none() && r.method.is_none())
    );
    assert_eq!(conn.dir_stats(C).ping_frames, 1);
    assert_eq!(conn.dir_stats(C).header_blocks_skipped, 2);
    assert!(!conn.headers_decoded(C) && !conn.is_lost(C));
}

#[test]
fn header_block_over_the_cap() {
    let mut c = Peer::new();
    let big = "v".repeat(MAX_HEADER_BLOCK / 2 + 10);
    let block = c.block(&[(":method", "GET"), ("x-a", &big), ("x-b", &big)]);
    let (a, b) = block.split_at(block.len() / 2);
    let steps = vec![
        (C, client_start()),
        (C, settings(&[(SETTINGS_MAX_FRAME_SIZE_ID, 1 << 20)])),
        (S, settings(&[(SETTINGS_MAX_FRAME_SIZE_ID, 1 << 20)])),
        (C, frame(HEADERS, 0, 1, a)),
        (C, frame(CONTINUATION, FLAG_END_HEADERS, 1, b)),
    ];
    let mut conn = H2Connection::new();
    let ev = run(&mut conn, &steps);
    assert_eq!(desyncs(&ev), [(C, "header-block-too-large", true)]);
    assert!(!requests(&ev)[0].decoded);
    assert!(conn.buffered_bytes() <= 2 * MAX_HEADER_BLOCK);
}

const SETTINGS_MAX_FRAME_SIZE_ID: u16 = 5;

#[test]
fn too_many_headers() {
    let mut c = Peer::new();
    let names: Vec<String> = (0..MAX_HEADERS_PER_BLOCK)
        .map(|i| format!("x-{i}"))
        .collect();
    let mut fields = get("/");
    fields.extend(names.iter().map(|n| (n.as_str(), "1")));
    let ev = run(
        &mut H2Connection::new(),
        &[
            (C, client_start()),
            (C, c.headers(1, FLAG_END_STREAM, &fields)),
        ],
    );
    assert_eq!(desyncs(&ev), [(C, "too-many-headers", true)]);
}

#[test]
fn reported_headers_are_bounded() {
    let mut c = Peer::new();
    let names: Vec<String> = (0..40).map(|i| format!("x-{i}")).collect();
    let long_path = format!("/{}", "p".repeat(MAX_PATH_LEN + 5));
    let mut fields = get(&long_path);
    fields.extend(names.iter().map(|n| (n.as_str(), "1")));
    let ev = run(
        &mut H2Connection::new(),
        &[
            (C, client_start()),
            (C, c.headers(1, FLAG_END_STREAM, &fields)),
        ],
    );
    let r = requests(&ev)[0];
    assert_eq!(
        (r.headers.len(), r.headers_omitted),
        (MAX_REPORTED_HEADERS, 8)
    );
    assert_eq!(r.path.as_ref().map(String::len), Some(MAX_PATH_LEN));
    assert!(r.truncated);
}

#[test]
fn repeated_pseudo_header_is_malformed_first_kept() {
    let mut c = Peer::new();
    let mut fields = get("/public");
    fields.push((":path", "/admin"));
    let ev = run(
        &mut H2Connection::new(),
        &[
            (C, client_start()),
            (C, c.headers(1, FLAG_END_STREAM, &fields)),
        ],
    );
    let r = requests(&ev)[0];
    assert!(r.malformed);
    assert_eq!(r.path.as_deref(), Some("/public"));
}

#[test]
fn rst_stream_goaway_ping_window_priority_unknown() {
    let mut c = Peer::new();
    let steps = vec![
        (C, client_start()),
        (S, settings(&[])),
        (C, c.headers(1, 0, &get("/upload"))),
        (C, frame(DATA, 0, 1, &[0; 10])),
        (C, frame(RST_STREAM, 0, 1, &8u32.to_be_bytes())),
        (C, frame(WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes())),
        (C, frame(PRIORITY, 0, 3, &[0, 0, 0, 0, 1])),
        (C, frame(0xfa, 0x3, 7, b"whatever")),
        (S, frame(PING, FLAG_ACK, 0, &[1; 8])),
        (
            S,
            frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0, b'b', b'y', b'e']),
        ),
    ];
    let mut conn = H2Connection::new();
    let ev = run(&mut conn, &steps);
    assert!(ev.contains(&H2Event::Reset {
        dir: C,
        stream_id: 1,
        error_code: 8
    }));
    assert_eq!(
        ends(&ev),
        [StreamEnd {
            stream_id: 1,
            request_bytes: 10,
            response_bytes: 0,
            kind: StreamEndKind::Reset {
                by: C,
                error_code: 8
            }
        }]
    );
    assert!(ev.contains(&H2Event::GoAway {
        dir: S,
        last_stream_id: 1,
        error_code: 0
    }));
    let cs = conn.dir_stats(C);
    assert_eq!(
        (
            cs.window_update_frames,
            cs.priority_frames,
            cs.unknown_frames
        ),
        (1, 1, 1)
    );
    assert_eq!(conn.dir_stats(S).ping_frames, 1);
    assert!(desyncs(&ev).is_empty());
    // Wrong sizes for fixed-size frames are impossible frames.
    let ev = run(
        &mut H2Connection::new(),
        &[(C, client_start()), (C, frame(PING, 0, 0, &[0; 7]))],
    );
    assert_eq!(desyncs(&ev), [(C, "bad-frame", false)]);
}

#[test]
fn settings_header_table_size_applies_to_the_other_direction() {
    // The client's encoder grows its table to 8192: only valid once the server allowed it.
    let block = |c: &mut Peer| {
        let mut b = vec![0x3f, 0xe1, 0x3f]; // size update 8192
        b.extend(c.block(&get("/big-table")));
        frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &b)
    };
    let ev = run(
        &mut H2Connection::new(),
        &[
            (C, client_start()),
            (S, settings(&[])),
            (C, block(&mut Peer::new())),
        ],
    );
    assert_eq!(desyncs(&ev), [(C, "hpack-error", true)]);
    assert_eq!(requests(&ev)[0].path, None);
    let ev = run(
        &mut H2Connection::new(),
        &[
            (C, client_start()),
            (S, settings(&[(1, 8192)])),
            (C, block(&mut Peer::new())),
        ],
    );
    assert!(desyncs(&ev).is_empty());
    assert_eq!(requests(&ev)[0].path.as_deref(), Some("/big-table"));
    // The client's own SETTINGS do not change what the client may send.
    let mut start = client_start();
    start.extend(settings(&[(1, 8192)]));
    let ev = run(
        &mut H2Connection::new(),
        &[(C, start), (C, block(&mut Peer::new()))],
    );
    assert_eq!(desyncs(&ev), [(C, "hpack-error", true)]);
}

#[test]
fn max_frame_size_from_the_peer() {
    let big = frame(DATA, 0, 1, &vec![0; 20_000]);
    let mut c = Peer::new();
    let open = c.headers(1, 0, &get("/up"));
    let ev = run(
        &mut H2Connection::new(),
        &[(C, client_start()), (C, open.clone()), (C, big.clone())],
    );
    assert_eq!(desyncs(&ev), [(C, "frame-too-large", false)]);
    let mut conn = H2Connection::new();
    let ev = run(
        &mut conn,
        &[
            (C, client_start()),
            (S, settings(&[(SETTINGS_MAX_FRAME_SIZE_ID, 32_768)])),
            (C, open),
            (C, big),
        ],
    );
    assert!(desyncs(&ev).is_empty());
    // Never over the absolute cap, whatever the peer allows; and an impossible value is a
    // bad frame.
    let ev = run(
        &mut H2Connection::new(),
        &[
            (C, client_start()),
            (S, settings(&[(SETTINGS_MAX_FRAME_SIZE_ID, 100)])),
        ],
    );
    assert_eq!(desyncs(&ev), [(S, "bad-frame", false)]);
    let mut conn = H2Connection::new();
    let mut huge_header = (MAX_FRAME_SIZE + 1).to_be_bytes()[1..].to_vec();
    huge_header.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
    let ev = run(
        &mut conn,
        &[
            (C, client_start()),
            (S, settings(&[(SETTINGS_MAX_FRAME_SIZE_ID, (1 << 24) - 1)])),
            (C, huge_header),
        ],
    );
    assert_eq!(desyncs(&ev), [(C, "frame-too-large", false)]);
}

#[test]
fn no_preface() {
    // Attached mid-connection: the client's bytes are a frame, not the preface.
    let mut c = Peer::new();
    let mid = c.headers(5, FLAG_END_STREAM, &get("/x"));
    let mut conn = H2Connection::new();
    let ev = run(&mut conn, &[(C, mid.clone())]);
    assert_eq!(desyncs(&ev), [(C, "no-preface", false)]);
    assert!(requests(&ev).is_empty());
    assert_accounting(&conn, [mid.len() as u64, 0]);
    assert_eq!(conn.dir_stats(C).unparsed_bytes, mid.len() as u64);
    // HTTP/1 where HTTP/2 was expected.
    let ev = run(
        &mut H2Connection::new(),
        &[(C, b"GET / HTTP/1.1\r\n".to_vec())],
    );
    assert_eq!(desyncs(&ev), [(C, "no-preface", false)]);
    // The server's first frame must be SETTINGS.
    let ev = run(&mut H2Connection::new(), &[(S, frame(PING, 0, 0, &[0; 8]))]);
    assert_eq!(desyncs(&ev), [(S, "no-preface", false)]);
    // Nor may the client's first frame after the magic be anything else.
    let mut start = PREFACE.to_vec();
    start.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
    let ev = run(&mut H2Connection::new(), &[(C, start)]);
    assert_eq!(desyncs(&ev), [(C, "no-preface", false)]);
}

#[test]
fn gaps() {
    let mut c = Peer::new();
    let mut conn = H2Connection::new();
    let mut ev = run(
        &mut conn,
        &[(C, client_start()), (C, c.headers(1, 0, &get("/a")))],
    );
    // A gap inside a DATA payload: framing holds, header decoding stops.
    let data = frame(DATA, FLAG_END_STREAM, 1, &[7; 100]);
    conn.feed(C, &data[..30], &mut ev);
    conn.gap(C, 50, &mut ev);
    let fed_so_far =
        (client_start().len() + Peer::new().headers(1, 0, &get("/a")).len() + 30) as u64;
    assert_accounting(&conn, [fed_so_far, 0]);
    assert_eq!(conn.dir_stats(C).pending_bytes, 30);
    conn.feed(C, &data[80..], &mut ev);
    conn.feed(C, &c.headers(3, FLAG_END_STREAM, &get("/b")), &mut ev);
    assert_eq!(desyncs(&ev), [(C, "gap", true)]);
    let r = requests(&ev);
    assert_eq!(r[0].path.as_deref(), Some("/a"));
    assert_eq!(
        (r[1].stream_id, r[1].path.as_deref(), r[1].decoded),
        (3, None, false)
    );
    assert_eq!(conn.dir_stats(C).missing_bytes, 50);
    // A gap that ends exactly at the frame's end completes it.
    let mut conn = H2Connection::new();
    let mut ev = run(
        &mut conn,
        &[
            (C, client_start()),
            (C, Peer::new().headers(1, 0, &get("/a"))),
        ],
    );
    conn.feed(C, &data[..30], &mut ev);
    conn.gap(C, 79, &mut ev);
    conn.finish(&mut ev);
    assert_eq!(conn.dir_stats(C).data_frames, 1);
    assert_eq!(ends(&ev)[0].request_bytes, 100);
    // A gap at a frame boundary loses the framing: every later byte is unparsed.
    let mut conn = H2Connection::new();
    let mut ev = run(&mut conn, &[(C, client_start())]);
    conn.gap(C, 10, &mut ev);
    conn.feed(C, &[1, 2, 3], &mut ev);
    assert_eq!(desyncs(&ev), [(C, "gap", false)]);
    assert_eq!(conn.dir_stats(C).unparsed_bytes, 3);
    assert!(conn.is_lost(C));
}

#[test]
fn push_promise() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut pp = vec![0, 0, 0, 2];
    pp.extend(s.block(&get("/style.css")));
    let steps = vec![
        (C, client_start()),
        (S, settings(&[])),
        (C, c.headers(1, FLAG_END_STREAM, &get("/"))),
        (S, frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, &pp)),
        (S, s.headers(1, FLAG_END_STREAM, &[(":status", "204")])),
        (S, s.headers(2, FLAG_END_STREAM, &[(":status", "200")])),
    ];
    let mut conn = H2Connection::new();
    let ev = run(&mut conn, &steps);
    assert!(ev.contains(&H2Event::PushPromise {
        stream_id: 1,
        promised_stream_id: 2
    }));
    assert_eq!(responses(&ev).len(), 1, "the pushed stream is not tracked");
    assert_eq!(responses(&ev)[0].status, Some(204));
    assert_eq!(conn.dir_stats(S).push_promise_frames, 1);
    assert_eq!(conn.dir_stats(S).frames_on_untracked_streams, 1);
    assert!(
        desyncs(&ev).is_empty(),
        "the promise's block kept HPACK in step"
    );
    // A client may not push.
    let ev = run(
        &mut H2Connection::new(),
        &[
            (C, client_start()),
            (C, frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, &pp)),
        ],
    );
    assert_eq!(desyncs(&ev), [(C, "bad-frame", false)]);
}

#[test]
fn stream_limit() {
    let mut c = Peer::new();
    let mut conn = H2Connection::new();
    let mut ev = run(&mut conn, &[(C, client_start())]);
    let n = MAX_STREAMS as u32 + 44;
    for i in 0..n {
        conn.feed(C, &c.headers(2 * i + 1, 0, &get("/s")), &mut ev);
    }
    assert_eq!(requests(&ev).len(), MAX_STREAMS);
    let not_tracked = ev
        .iter()
        .filter(|e| matches!(e, H2Event::StreamNotTracked { .. }))
        .count();
    assert_eq!(not_tracked, 44);
    assert_eq!(conn.stats().untracked_streams, 44);
    assert_eq!(conn.stats().max_concurrent, MAX_STREAMS);
    assert_eq!(conn.open_streams(), MAX_STREAMS);
    assert!(desyncs(&ev).is_empty());
    conn.finish(&mut ev);
    assert_eq!(ends(&ev).len(), MAX_STREAMS);
    assert!(
        ends(&ev)
            .iter()
            .all(|e| e.kind == StreamEndKind::ConnectionEnd)
    );
}

fn grpc_request(c: &mut Peer, stream: u32) -> Vec<u8> {
    c.headers(
        stream,
        0,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/admin.v0.Users/Lookup"),
            (":authority", "users:50051"),
            ("content-type", "application/grpc+proto"),
            ("te", "trailers"),
            ("grpc-timeout", "5S"),
        ],
    )
}

#[test]
fn grpc_status_from_trailers() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let msg = [0, 0, 0, 0, 3, 1, 2, 3];
    let steps = vec![
        (C, client_start()),
        (S, settings(&[])),
        (C, grpc_request(&mut c, 1)),
        (C, frame(DATA, FLAG_END_STREAM, 1, &msg)),
        (
            S,
            s.headers(
                1,
                0,
                &[(":status", "200"), ("content-type", "application/grpc")],
            ),
        ),
        (S, frame(DATA, 0, 1, &msg)),
        (
            S,
            s.headers(
                1,
                FLAG_END_STREAM,
                &[("grpc-status", "0"), ("grpc-message", "")],
            ),
        ),
        // Trailers-only error response.
        (C, grpc_request(&mut c, 3)),
        (C, frame(DATA, FLAG_END_STREAM, 3, &msg)),
        (
            S,
            s.headers(
                3,
                FLAG_END_STREAM,
                &[
                    (":status", "200"),
                    ("content-type", "application/grpc"),
                    ("grpc-status", "5"),
                    ("grpc-message", "no%20such user"),
                ],
            ),
        ),
    ];
    let mut conn = H2Connection::new();
    let ev = run(&mut conn, &steps);
    let r = requests(&ev);
    assert!(r[0].is_grpc);
    assert_eq!(r[0].method.as_deref(), Some("POST"));
    assert_eq!(r[0].path.as_deref(), Some("/admin.v0.Users/Lookup"));
    let h: Vec<_> = r[0]
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_deref()))
        .collect();
    assert_eq!(
        h,
        [
            ("content-type", Some("application/grpc+proto")),
            ("te", Some("trailers")),
            ("grpc-timeout", Some("5S"))
        ]
    );
    let resp = responses(&ev);
    assert_eq!(resp.len(), 2);
    assert_eq!(
        (resp[0].status, resp[0].grpc_status, resp[0].trailers),
        (Some(200), Some(0), true)
    );
    assert_eq!(resp[1].grpc_status, Some(5));
    assert_eq!(resp[1].grpc_message.as_deref(), Some("no%20such user"));
    // The response comes before its stream's end, after its trailers.
    let pos = |f: &dyn Fn(&H2Event) -> bool| ev.iter().position(f);
    assert!(
        pos(&|e| matches!(e, H2Event::Response(r) if r.stream_id == 1))
            < pos(&|e| matches!(e, H2Event::StreamEnd(s) if s.stream_id == 1))
    );
    assert_eq!(ends(&ev)[0].request_bytes, 8);
    assert_eq!(ends(&ev)[0].response_bytes, 8);
}

#[test]
fn grpc_stream_reset_before_trailers_still_reports_response() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let steps = vec![
        (C, client_start()),
        (S, settings(&[])),
        (C, grpc_request(&mut c, 1)),
        (
            S,
            s.headers(
                1,
                0,
                &[(":status", "200"), ("content-type", "application/grpc")],
            ),
        ),
        (S, frame(RST_STREAM, 0, 1, &2u32.to_be_bytes())),
    ];
    let ev = run(&mut H2Connection::new(), &steps);
    let resp = responses(&ev);
    assert_eq!(
        (resp[0].status, resp[0].grpc_status, resp[0].trailers),
        (Some(200), None, false)
    );
}

#[test]
fn informational_then_final() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let steps = vec![
        (C, client_start()),
        (S, settings(&[])),
        (C, c.headers(1, 0, &get("/up"))),
        (S, s.headers(1, 0, &[(":status", "100")])),
        (C, frame(DATA, FLAG_END_STREAM, 1, b"body")),
        (S, s.headers(1, FLAG_END_STREAM, &[(":status", "201")])),
    ];
    let ev = run(&mut H2Connection::new(), &steps);
    let resp = responses(&ev);
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].status, Some(201));
    assert_eq!(ends(&ev)[0].kind, StreamEndKind::Complete);
}

#[test]
fn after_upgrade_reports_stream_one() {
    let mut s = Peer::new();
    let mut conn = H2Connection::after_upgrade();
    let steps = vec![
        (S, settings(&[])),
        (S, s.headers(1, 0, &[(":status", "200")])),
        (C, client_start()),
        (S, frame(DATA, FLAG_END_STREAM, 1, b"hello")),
    ];
    let ev = run(&mut conn, &steps);
    assert_eq!(responses(&ev)[0].status, Some(200));
    assert_eq!(ends(&ev)[0].response_bytes, 5);
    assert!(
        requests(&ev).is_empty(),
        "the HTTP/1 layer reported the upgraded request"
    );
    assert!(desyncs(&ev).is_empty());
}

#[test]
fn desync_codes_are_stable() {
    assert_eq!(DesyncReason::NoPreface.to_string(), "h2-desync/no-preface");
    assert_eq!(DesyncReason::HpackError.code(), "hpack-error");
    assert_eq!(DesyncReason::FrameTooLarge.code(), "frame-too-large");
    assert_eq!(DesyncReason::BadContinuation.code(), "bad-continuation");
    assert_eq!(DesyncReason::Gap.code(), "gap");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// A frame from a generator: any type (known and unknown), flags, small stream ids,
    /// payloads that are real HPACK blocks or random bytes.
    fn frame_strategy() -> impl Strategy<Value = (u8, u8, u32, Vec<u8>, bool)> {
        (
            prop_oneof![
                Just(DATA),
                Just(HEADERS),
                Just(CONTINUATION),
                Just(SETTINGS),
                Just(RST_STREAM),
                Just(PING),
                Just(GOAWAY),
                Just(WINDOW_UPDATE),
                Just(PRIORITY),
                Just(PUSH_PROMISE),
                any::<u8>()
            ],
            any::<u8>(),
            0u32..12,
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(c in proptest::collection::vec(any::<u8>(), 0..400), s in proptest::collection::vec(any::<u8>(), 0..400), with_preface in any::<bool>(), cut in 0usize..400) {
            let mut conn = H2Connection::new();
            let mut ev = Vec::new();
            let mut cbytes = if with_preface { client_start() } else { Vec::new() };
            cbytes.extend_from_slice(&c);
            let cut = cut.min(cbytes.len());
            conn.feed(C, &cbytes[..cut], &mut ev);
            conn.feed(S, &s, &mut ev);
            conn.gap(S, 3, &mut ev);
            assert_accounting(&conn, [cut as u64, s.len() as u64]);
            conn.feed(C, &cbytes[cut..], &mut ev);
            conn.finish(&mut ev);
            assert_accounting(&conn, [cbytes.len() as u64, s.len() as u64]);
        }

        #[test]
        fn generated_frame_sequences_stay_bounded(frames in proptest::collection::vec(frame_strategy(), 0..40), split in 1usize..50) {
            let mut c = Peer::new();
            let mut bytes = client_start();
            for (ty, flags, stream, payload, hpack) in frames {
                let payload = if hpack && matches!(ty, HEADERS | CONTINUATION) {
                    c.block(&get(&format!("/{}", payload.len())))
                } else {
                    payload
                };
                bytes.extend(frame(ty, flags, stream, &payload));
            }
            let mut conn = H2Connection::new();
            let mut whole = Vec::new();
            conn.feed(C, &bytes, &mut whole);
            let mut split_conn = H2Connection::new();
            let mut parts = Vec::new();
            for chunk in bytes.chunks(split) {
                split_conn.feed(C, chunk, &mut parts);
                prop_assert!(split_conn.buffered_bytes() <= 2 * (MAX_HEADER_BLOCK + MAX_SETTINGS_LEN + 1));
                prop_assert!(split_conn.open_streams() <= MAX_STREAMS);
            }
            prop_assert_eq!(&whole, &parts);
            assert_accounting(&split_conn, [bytes.len() as u64, 0]);
        }
    }
}

/// The `h2_decoder` fuzz target's driver (see `fuzz/fuzz_targets/h2_decoder.rs`), for
/// regression inputs: returns the events and the bytes fed per direction.
fn fuzz_drive(data: &[u8]) -> (H2Connection, Vec<H2Event>, [u64; 2]) {
    let (&options, mut rest) = data.split_first().unwrap_or((&0, &[]));
    let mut conn = if options & 1 != 0 {
        H2Connection::after_upgrade()
    } else {
        H2Connection::new()
    };
    let mut events = Vec::new();
    let mut fed = [0u64; 2];
    if options & 2 != 0 {
        let start = client_start();
        conn.feed(C, &start, &mut events);
        fed[0] += start.len() as u64;
    }
    if options & 4 != 0 {
        let s = settings(&[]);
        conn.feed(S, &s, &mut events);
        fed[1] += s.len() as u64;
    }
    while let Some((&chunk, tail)) = rest.split_first() {
        let dir = if chunk & 0x80 == 0 { C } else { S };
        let len = usize::from(chunk & 0x7f);
        if len == 0 {
            let Some((&missing, tail)) = tail.split_first() else {
                break;
            };
            conn.gap(dir, u64::from(missing), &mut events);
            rest = tail;
            continue;
        }
        let (bytes, tail) = tail.split_at(len.min(tail.len()));
        conn.feed(dir, bytes, &mut events);
        fed[usize::from(chunk & 0x80 != 0)] += bytes.len() as u64;
        rest = tail;
    }
    conn.finish(&mut events);
    (conn, events, fed)
}

/// Inputs `cargo fuzz run h2_decoder` found failing, kept as regressions.
#[test]
fn fuzz_regressions() {
    let inputs: [&[u8]; 1] = [include_bytes!(
        "../../tests/fuzz-regressions/h2_decoder-accounting"
    )];
    for input in inputs {
        let (conn, _, fed) = fuzz_drive(input);
        assert_accounting(&conn, fed);
        assert!(conn.buffered_bytes() <= 4 * MAX_HEADER_BLOCK);
    }
}
