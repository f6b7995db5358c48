//! The HTTP/2 decoder on two arbitrary byte streams.
//!
//! Input: a first byte of options (bit 0: `after_upgrade`; bit 1: prepend the client preface
//! and an empty SETTINGS; bit 2: start the server with an empty SETTINGS), then chunks: a
//! chunk byte (bit 7: 0 client → server, 1 server → client; bits 0-6: length, 0 meaning "a
//! gap of as many bytes as the next byte says") and that many bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor_l7::h2::{Dir, H2Connection, MAX_HEADER_BLOCK, MAX_STREAMS};

const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const SETTINGS: &[u8] = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fuzz_target!(|data: &[u8]| {
    let Some((&options, mut rest)) = data.split_first() else {
        return;
    };
    let mut conn = if options & 1 != 0 {
        H2Connection::after_upgrade()
    } else {
        H2Connection::new()
    };
    let mut events = Vec::new();
    let mut fed = [0u64; 2];
    if options & 2 != 0 {
        conn.feed(Dir::ClientToServer, PREFACE_AND_SETTINGS, &mut events);
        fed[0] += PREFACE_AND_SETTINGS.len() as u64;
    }
    if options & 4 != 0 {
        conn.feed(Dir::ServerToClient, SETTINGS, &mut events);
        fed[1] += SETTINGS.len() as u64;
    }
    while let Some((&chunk, tail)) = rest.split_first() {
        let dir = if chunk & 0x80 == 0 {
            Dir::ClientToServer
        } else {
            Dir::ServerToClient
        };
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
        assert!(conn.open_streams() <= MAX_STREAMS);
        assert!(conn.buffered_bytes() <= 2 * (2 * MAX_HEADER_BLOCK));
        // Events are bounded by the input: at most a few per frame.
        assert!(events.len() as u64 <= 4 * (fed[0] + fed[1]) / 9 + 8 + MAX_STREAMS as u64);
    }
    conn.finish(&mut events);
    for (i, dir) in [Dir::ClientToServer, Dir::ServerToClient].into_iter().enumerate() {
        let s = conn.dir_stats(dir);
        assert_eq!(s.parsed_bytes + s.unparsed_bytes + s.pending_bytes, fed[i]);
    }
});
