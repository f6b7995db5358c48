//! HTTP/2 in the clear (h2c with prior knowledge, h2c after an HTTP/1 `Upgrade`, or any
//! other visible plaintext) and gRPC on top of it: a per-connection decoder fed each
//! direction's bytes separately, in order, in segments of any size.
//!
//! Owns:
//! - `frame.rs`: the frame layer (9-byte headers, types and flags, reassembly across segments
//!   keeping only what each frame's handling needs).
//! - `hpack.rs`: HPACK with the `loona-hpack` crate behind a pre-scan that bounds a block's
//!   work. Why that crate, what was checked and measured: that file's header.
//! - `conn.rs`: [`H2Connection`]: the client preface and the server's first SETTINGS, frame
//!   semantics (HEADERS with PRIORITY and PADDED, CONTINUATION, DATA with padding,
//!   RST_STREAM, GOAWAY, SETTINGS (HEADER_TABLE_SIZE and MAX_FRAME_SIZE apply to the other
//!   direction), PING, WINDOW_UPDATE, PUSH_PROMISE, unknown types), streams and their events.
//! - `fields.rs`: what a decoded header block says (pseudo-headers, kept values, bounded
//!   header list).
//! - `event.rs`: [`H2Event`], [`Request`], [`Response`], [`StreamEnd`], [`DesyncReason`]
//!   (stable codes, `h2-desync/…`), [`DirStats`] and [`ConnStats`].
//!
//! Fail closed: a direction that loses sync says so once ([`H2Event::Desync`]) and nothing is
//! guessed after. A header-level desync (HPACK error, a block over a limit, a broken
//! CONTINUATION sequence, a gap inside a frame) keeps the frame layer: streams, byte counts,
//! resets and GOAWAY are still reported, requests and responses with `decoded: false` and no
//! path or status. A frame-level desync (no preface, a frame over the size limit, impossible
//! padding or frame, a gap across a frame header) stops that direction: every later byte is
//! counted as unparsed.
//!
//! Bounds per connection: [`MAX_STREAMS`] streams tracked (more are counted and reported),
//! header blocks up to [`MAX_HEADER_BLOCK`] bytes and [`MAX_HEADERS_PER_BLOCK`] fields, HPACK
//! tables up to `hpack::MAX_TABLE_SIZE`, reported text cut at the `MAX_*_LEN` constants. DATA
//! is counted, never buffered. Work is linear in the input; an HPACK block's work is bounded
//! as `hpack.rs` says.
//!
//! Ordering: feed each direction in order; across directions, feed in the order the bytes
//! were observed (SETTINGS from one side change the limits applied to the other).

mod conn;
mod event;
mod fields;
mod frame;
mod hpack;
#[cfg(test)]
mod tests;

pub use conn::H2Connection;
pub use event::{
    ConnStats, DESYNC_FAMILY, DesyncReason, Dir, DirStats, H2Event, Header, Request, Response,
    StreamEnd, StreamEndKind,
};
pub use hpack::{MAX_HUFFMAN_BYTES, MAX_HUFFMAN_STRINGS, MAX_TABLE_SIZE};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Streams tracked at once per connection; streams opened beyond are counted, not tracked.
pub const MAX_STREAMS: usize = 256;
/// Largest header block (HEADERS or PUSH_PROMISE and its CONTINUATIONs) decoded.
pub const MAX_HEADER_BLOCK: usize = 32 * 1024;
/// Fields per header block.
pub const MAX_HEADERS_PER_BLOCK: usize = 100;
/// Largest frame accepted whatever the peer's SETTINGS_MAX_FRAME_SIZE (which defaults to
/// 16,384 and may go up to 2^24 - 1).
pub const MAX_FRAME_SIZE: u32 = 1 << 20;
/// Headers listed per request in [`Request::headers`].
pub const MAX_REPORTED_HEADERS: usize = 32;
/// `:path` bytes kept.
pub const MAX_PATH_LEN: usize = 2048;
/// Bytes kept of `:method`, `:scheme`, `:authority`, `content-type` and kept header values.
pub const MAX_VALUE_LEN: usize = 256;
/// `grpc-message` bytes kept.
pub const MAX_GRPC_MESSAGE_LEN: usize = 512;
/// Header name bytes kept.
pub const MAX_NAME_LEN: usize = 64;
/// Headers whose values [`Request::headers`] keeps; every other value (`authorization`,
/// `cookie`, tokens, …) is dropped.
pub const KEPT_VALUES: &[&str] = &[
    "accept",
    "content-length",
    "content-type",
    "grpc-accept-encoding",
    "grpc-encoding",
    "grpc-timeout",
    "host",
    "te",
    "user-agent",
];
