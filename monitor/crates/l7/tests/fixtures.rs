//! The parsers on bytes recorded from real clients and servers (see `fixtures/README.md`):
//! what they report, and that it does not depend on where segments were cut.

use monitor_l7::h2::{Dir, H2Connection, H2Event, Request, Response, StreamEndKind};
use monitor_l7::tls::{IstioSni, TlsError, TlsRecordScanner, parse_client_hello};

/// One recorded connection: `(direction, segment)` in capture order.
fn load(name: &str) -> Vec<(Dir, Vec<u8>)> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (d, hex) = l.split_once(' ').expect("direction and hex");
            let dir = match d {
                "c" => Dir::ClientToServer,
                "s" => Dir::ServerToClient,
                other => panic!("bad direction {other}"),
            };
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            (dir, bytes)
        })
        .collect()
}

fn direction(segments: &[(Dir, Vec<u8>)], dir: Dir) -> Vec<u8> {
    segments
        .iter()
        .filter(|(d, _)| *d == dir)
        .flat_map(|(_, b)| b.iter().copied())
        .collect()
}

fn decode(segments: &[(Dir, Vec<u8>)]) -> (Vec<H2Event>, H2Connection) {
    let mut conn = H2Connection::new();
    let mut events = Vec::new();
    for (dir, bytes) in segments {
        conn.feed(*dir, bytes, &mut events);
    }
    conn.finish(&mut events);
    (events, conn)
}

/// Whether each byte of the capture lies deep inside a DATA payload (3 bytes or more from
/// either end of it), where every cut takes the same code path (DATA is counted, not kept).
fn deep_in_data(segments: &[(Dir, Vec<u8>)]) -> Vec<bool> {
    let mut marks = Vec::new();
    for dir in [Dir::ClientToServer, Dir::ServerToClient] {
        let bytes = direction(segments, dir);
        let mut deep = vec![false; bytes.len()];
        let mut at = if dir == Dir::ClientToServer { 24 } else { 0 };
        while at + 9 <= bytes.len() {
            let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
            let start = at + 9;
            if bytes[at + 3] == 0 && len > 6 {
                for d in deep
                    .iter_mut()
                    .take((start + len - 3).min(bytes.len()))
                    .skip(start + 3)
                {
                    *d = true;
                }
            }
            at = start + len;
        }
        marks.push(deep);
    }
    let mut pos = [0usize; 2];
    let mut out = Vec::new();
    for (dir, bytes) in segments {
        let i = usize::from(*dir == Dir::ServerToClient);
        out.extend_from_slice(&marks[i][pos[i]..pos[i] + bytes.len()]);
        pos[i] += bytes.len();
    }
    out
}

/// The same events whatever the segmentation: one byte at a time, and each byte offset of the
/// capture as an extra cut. `every_offset: false` cuts at every offset except those deep
/// inside DATA payloads (see [`deep_in_data`]), where it takes every 499th; the ignored test
/// `every_offset_of_every_fixture` cuts at all of them (run it in release mode: the HPACK
/// crate's Huffman decoding is slow unoptimised).
fn assert_segmentation_independent(segments: &[(Dir, Vec<u8>)], expected: &[H2Event]) {
    assert_cuts(segments, expected, false);
}

fn assert_cuts(segments: &[(Dir, Vec<u8>)], expected: &[H2Event], every_offset: bool) {
    let deep = deep_in_data(segments);
    let total: usize = segments.iter().map(|(_, b)| b.len()).sum();
    let mut seg = 0;
    let mut seg_start = 0;
    let mut skipped = 0usize;
    for (offset, &is_deep) in deep.iter().enumerate().take(total) {
        while offset >= seg_start + segments[seg].1.len() {
            seg_start += segments[seg].1.len();
            seg += 1;
        }
        let cut = offset - seg_start;
        if cut == 0 {
            continue; // already a boundary
        }
        if !every_offset && is_deep {
            skipped += 1;
            if !skipped.is_multiple_of(499) {
                continue;
            }
        }
        let mut conn = H2Connection::new();
        let mut events = Vec::new();
        for (i, (dir, bytes)) in segments.iter().enumerate() {
            if i == seg {
                conn.feed(*dir, &bytes[..cut], &mut events);
                conn.feed(*dir, &bytes[cut..], &mut events);
            } else {
                conn.feed(*dir, bytes, &mut events);
            }
        }
        conn.finish(&mut events);
        assert_eq!(events, expected, "cut at capture offset {offset}");
    }
    let mut conn = H2Connection::new();
    let mut events = Vec::new();
    for (dir, bytes) in segments {
        for b in bytes {
            conn.feed(*dir, std::slice::from_ref(b), &mut events);
        }
    }
    conn.finish(&mut events);
    assert_eq!(events, expected, "one byte at a time");
}

#[test]
#[ignore = "minutes in debug builds; run with cargo test --release -p monitor-l7 -- --ignored"]
fn every_offset_of_every_fixture() {
    for name in [
        "h2c_curl_get.segments",
        "h2c_curl_post.segments",
        "h2c_python_concurrent.segments",
        "grpc_users_lookup.segments",
    ] {
        let segs = load(name);
        let (ev, _) = decode(&segs);
        assert_cuts(&segs, &ev, true);
    }
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

fn no_desync(ev: &[H2Event]) {
    let d: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, H2Event::Desync { .. }))
        .collect();
    assert!(d.is_empty(), "{d:?}");
}

/// Every byte of both directions was parsed as the preface or frames.
fn all_parsed(segments: &[(Dir, Vec<u8>)], conn: &H2Connection) {
    for dir in [Dir::ClientToServer, Dir::ServerToClient] {
        let s = conn.dir_stats(dir);
        assert_eq!(
            s.parsed_bytes,
            direction(segments, dir).len() as u64,
            "{dir:?}"
        );
        assert_eq!((s.unparsed_bytes, s.pending_bytes), (0, 0));
    }
}

#[test]
fn curl_get_against_nginx_h2c() {
    let segs = load("h2c_curl_get.segments");
    let (ev, conn) = decode(&segs);
    no_desync(&ev);
    all_parsed(&segs, &conn);
    let r = requests(&ev);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].method.as_deref(), Some("GET"));
    assert_eq!(r[0].path.as_deref(), Some("/"));
    assert_eq!(r[0].authority.as_deref(), Some("127.0.0.1:18080"));
    assert_eq!(r[0].scheme.as_deref(), Some("http"));
    let names: Vec<_> = r[0].headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["user-agent", "accept", "authorization"]);
    let auth = r[0].headers.iter().find(|h| h.name == "authorization");
    assert_eq!(auth.map(|h| h.value.clone()), Some(None), "value not kept");
    assert_eq!(r[0].headers[0].value.as_deref(), Some("curl/7.88.1"));
    let resp = responses(&ev);
    assert_eq!(resp[0].status, Some(200));
    assert_eq!(resp[0].content_type.as_deref(), Some("text/html"));
    let end = ev.iter().find_map(|e| match e {
        H2Event::StreamEnd(s) => Some(*s),
        _ => None,
    });
    let end = end.expect("stream end");
    assert_eq!(
        (end.response_bytes, end.kind),
        (23, StreamEndKind::Complete)
    );
    assert_segmentation_independent(&segs, &ev);
}

#[test]
fn curl_post_against_nginx_h2c() {
    let segs = load("h2c_curl_post.segments");
    let (ev, conn) = decode(&segs);
    no_desync(&ev);
    all_parsed(&segs, &conn);
    let r = requests(&ev);
    assert_eq!(r[0].method.as_deref(), Some("POST"));
    assert_eq!(r[0].path.as_deref(), Some("/api/notes"));
    assert_eq!(r[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(responses(&ev)[0].status, Some(200));
    let end = ev.iter().find_map(|e| match e {
        H2Event::StreamEnd(s) => Some(*s),
        _ => None,
    });
    let end = end.expect("stream end");
    assert_eq!((end.request_bytes, end.response_bytes), (31, 11));
    assert_segmentation_independent(&segs, &ev);
}

#[test]
fn python_h2_concurrent_streams_against_nginx() {
    let segs = load("h2c_python_concurrent.segments");
    let (ev, conn) = decode(&segs);
    no_desync(&ev);
    all_parsed(&segs, &conn);
    let r = requests(&ev);
    let paths: Vec<_> = r.iter().map(|r| (r.stream_id, r.path.as_deref())).collect();
    assert_eq!(
        paths,
        [
            (1, Some("/big.txt")),
            (3, Some("/api/a?x=1")),
            (5, Some("/api/b"))
        ]
    );
    assert_eq!(conn.stats().max_concurrent, 3);
    let x_secret = r[0].headers.iter().find(|h| h.name == "x-secret-token");
    assert_eq!(x_secret.map(|h| h.value.is_none()), Some(true));
    let resp: Vec<_> = responses(&ev)
        .iter()
        .map(|r| (r.stream_id, r.status))
        .collect();
    assert_eq!(resp.len(), 3);
    assert!(resp.iter().all(|(_, s)| *s == Some(200)));
    let ends: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            H2Event::StreamEnd(s) => Some((s.stream_id, s.request_bytes, s.response_bytes)),
            _ => None,
        })
        .collect();
    assert!(ends.contains(&(1, 0, 40_000)));
    assert!(ends.contains(&(5, 9, 11)));
    assert!(ev.iter().any(|e| matches!(
        e,
        H2Event::GoAway {
            dir: Dir::ClientToServer,
            ..
        }
    )));
    let c = conn.dir_stats(Dir::ClientToServer);
    assert!(c.ping_frames >= 1 && c.window_update_frames >= 1);
    assert_segmentation_independent(&segs, &ev);
}

#[test]
fn grpcio_users_lookup() {
    let segs = load("grpc_users_lookup.segments");
    let (ev, conn) = decode(&segs);
    no_desync(&ev);
    all_parsed(&segs, &conn);
    let r = requests(&ev);
    assert_eq!(r.len(), 2);
    for req in &r {
        assert_eq!(req.method.as_deref(), Some("POST"));
        assert_eq!(req.path.as_deref(), Some("/admin.v0.Users/Lookup"));
        assert!(req.is_grpc);
        assert_eq!(req.content_type.as_deref(), Some("application/grpc"));
    }
    let resp = responses(&ev);
    assert_eq!(resp.len(), 2);
    assert_eq!(
        (resp[0].status, resp[0].grpc_status, resp[0].trailers),
        (Some(200), Some(0), true)
    );
    assert_eq!(resp[1].grpc_status, Some(5));
    assert_eq!(resp[1].grpc_message.as_deref(), Some("no such user"));
    assert_segmentation_independent(&segs, &ev);
}

#[test]
fn h2_decoder_on_tls_bytes_reports_no_preface() {
    let segs = load("tls13_s_client_stripe.segments");
    let (ev, conn) = decode(&segs);
    assert!(ev.iter().any(|e| matches!(
        e,
        H2Event::Desync { dir: Dir::ClientToServer, reason, frames_continue: false }
            if reason.code() == "no-preface"
    )));
    assert!(requests(&ev).is_empty());
    let c = direction(&segs, Dir::ClientToServer).len() as u64;
    assert_eq!(conn.dir_stats(Dir::ClientToServer).unparsed_bytes, c);
}

fn hello_of(name: &str) -> (Vec<(Dir, Vec<u8>)>, monitor_l7::tls::ClientHello) {
    let segs = load(name);
    let c = direction(&segs, Dir::ClientToServer);
    let hello = parse_client_hello(&c).expect("ClientHello");
    (segs, hello)
}

/// Both directions are TLS records from the first byte to the last.
fn all_tls(segs: &[(Dir, Vec<u8>)]) {
    for dir in [Dir::ClientToServer, Dir::ServerToClient] {
        let mut s = TlsRecordScanner::new();
        for (d, b) in segs {
            if *d == dir {
                s.feed(b);
            }
        }
        let len = direction(segs, dir).len() as u64;
        assert_eq!((s.tls_bytes(), s.non_tls_bytes()), (len, 0), "{dir:?}");
        assert!(s.stopped().is_none() && s.at_record_boundary());
    }
}

#[test]
fn openssl_s_client_stripe() {
    let (segs, h) = hello_of("tls13_s_client_stripe.segments");
    assert_eq!(h.sni.as_deref(), Some("api.stripe.com"));
    assert_eq!(h.alpn, ["h2", "http/1.1"]);
    assert_eq!(
        (h.record_version, h.client_version, h.highest_version),
        (0x0301, 0x0303, 0x0304)
    );
    assert_eq!(h.records, 1);
    assert_eq!(h.consumed, segs[0].1.len());
    all_tls(&segs);
    // Every prefix of the ClientHello is a prefix, never an error.
    let first = &segs[0].1;
    for cut in 0..first.len() {
        match parse_client_hello(&first[..cut]) {
            Err(TlsError::Incomplete { have, need }) => assert!(have == cut && need > cut),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    // The same ClientHello spread over two records, cut at every point of the message.
    let message = &first[5..h.consumed];
    for cut in 1..message.len() {
        let mut two = vec![22, 3, 1];
        two.extend_from_slice(&(cut as u16).to_be_bytes());
        two.extend_from_slice(&message[..cut]);
        two.extend_from_slice(&[22, 3, 1]);
        two.extend_from_slice(&((message.len() - cut) as u16).to_be_bytes());
        two.extend_from_slice(&message[cut..]);
        let h2 = parse_client_hello(&two).expect("two records");
        assert_eq!((h2.records, h2.consumed), (2, two.len()));
        assert_eq!(
            (h2.sni, h2.alpn, h2.highest_version),
            (h.sni.clone(), h.alpn.clone(), h.highest_version)
        );
        // Its prefixes still ask for more.
        assert!(matches!(
            parse_client_hello(&two[..two.len() - 1]),
            Err(TlsError::Incomplete { .. })
        ));
    }
}

#[test]
fn curl_resolve_stripe() {
    let (segs, h) = hello_of("tls13_curl_resolve_stripe.segments");
    assert_eq!(h.sni.as_deref(), Some("api.stripe.com"));
    assert_eq!(h.alpn, ["h2", "http/1.1"]);
    assert_eq!(h.highest_version, 0x0304);
    all_tls(&segs);
}

#[test]
fn openssl_tls12_only() {
    let (segs, h) = hello_of("tls12_s_client_legacy.segments");
    assert_eq!(h.sni.as_deref(), Some("legacy.example.com"));
    assert_eq!(h.alpn, ["http/1.1"]);
    assert!(h.supported_versions.is_empty());
    assert_eq!((h.client_version, h.highest_version), (0x0303, 0x0303));
    all_tls(&segs);
}

#[test]
fn istio_sni() {
    let (segs, h) = hello_of("tls13_s_client_istio.segments");
    assert_eq!(h.alpn, ["istio-peer-exchange", "istio", "h2"]);
    let sni = h.sni.expect("sni");
    let istio = IstioSni::parse(&sni).expect("istio sni");
    assert_eq!((istio.port, istio.subset.as_str()), (80, ""));
    assert_eq!(istio.fqdn, "svc-user-profile.prod.svc.cluster.local");
    assert_eq!(istio.service.as_deref(), Some("svc-user-profile"));
    assert_eq!(istio.namespace.as_deref(), Some("prod"));
    all_tls(&segs);
}

#[test]
fn record_scanner_on_h2c_stops_at_once() {
    let segs = load("h2c_curl_get.segments");
    let mut s = TlsRecordScanner::new();
    s.feed(&direction(&segs, Dir::ClientToServer));
    assert_eq!(s.stopped().map(|(at, _)| at), Some(0));
    assert_eq!(s.tls_bytes(), 0);
}
