//! Captured HTTP head bytes.
//!
//! The kernel does not parse HTTP. It recognises a segment whose payload starts like an
//! HTTP/1.x request line or status line, copies up to [`HTTP_CAPTURE`] bytes of it, and keeps
//! copying the next few segments of that direction ([`CONT_SEGMENTS`]) while the head has not
//! visibly ended, so a head split across segments can be reassembled. The agent parses.
//! Every chunk carries the TCP sequence number of its first byte, so the agent measures message
//! sizes (and attributes response bodies to their requests) from sequence arithmetic, which
//! retransmissions do not distort.

use crate::header::RecordHeader;

/// Name of the per-CPU scratch map the kernel builds each [`HttpChunk`] in.
pub const MAP_CHUNK_SCRATCH: &str = "CHUNK_SCRATCH";

/// Payload bytes copied per chunk. Longer heads are truncated; the agent reports them.
pub const HTTP_CAPTURE: usize = 2048;

/// Segments captured after a start segment whose payload did not end with `\r\n\r\n`.
pub const CONT_SEGMENTS: u8 = 4;

/// What a chunk's bytes are.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkKind {
    /// The payload starts with an HTTP/1.x request method.
    RequestStart = 1,
    /// The payload starts with `HTTP/1.`.
    ResponseStart = 2,
    /// A segment following a start whose head may not have ended yet.
    Continuation = 3,
}

impl ChunkKind {
    /// Decodes the stored `u8`.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::RequestStart),
            2 => Some(Self::ResponseStart),
            3 => Some(Self::Continuation),
            _ => None,
        }
    }
}

/// The fixed part of an [`HttpChunk`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpChunkMeta {
    /// Common header ([`crate::header::RecordKind::HttpChunk`]).
    pub hdr: RecordHeader,
    /// A [`crate::Direction`].
    pub dir: u8,
    /// A [`ChunkKind`].
    pub chunk_kind: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
    /// TCP sequence number of the first payload byte.
    pub seq: u32,
    /// Payload bytes in the packet (may exceed `captured`).
    pub payload_len: u32,
    /// Bytes copied into `data`, at most [`HTTP_CAPTURE`].
    pub captured: u32,
}
const _: () = assert!(core::mem::size_of::<HttpChunkMeta>() == 48);

/// Record: payload bytes of a segment that starts or continues an HTTP head. Only the fixed
/// part and the `meta.captured` bytes go into the ring buffer (`meta.hdr.len` is
/// [`HttpChunk::wire_len`]): most heads are a few dozen to a few hundred bytes, and a
/// fixed-size slot would fill the buffer with padding. The kernel builds it in a per-CPU
/// scratch slot and copies out only that prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpChunk {
    /// Fixed part.
    pub meta: HttpChunkMeta,
    /// The first `meta.captured` bytes are valid.
    pub data: [u8; HTTP_CAPTURE],
}

impl HttpChunk {
    /// Bytes a chunk with `captured` payload bytes takes in the ring buffer.
    pub const fn wire_len(captured: u32) -> u32 {
        core::mem::size_of::<HttpChunkMeta>() as u32 + captured
    }
}

const _: () = assert!(core::mem::size_of::<HttpChunk>() == 48 + HTTP_CAPTURE);

/// Little-endian `u64` of the first bytes of `s` (at most eight), for masked prefix compares.
pub const fn prefix_u64(s: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < s.len() && i < 8 {
        v |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// Mask keeping the first `n` bytes of a little-endian `u64`.
pub const fn prefix_mask(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// Request-line prefixes the kernel recognises (method and the space after it).
pub const REQUEST_PREFIXES: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"PATCH ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];
/// Status-line prefix the kernel recognises.
pub const RESPONSE_PREFIX: &[u8] = b"HTTP/1.";

/// Classifies the first eight payload bytes (little-endian `u64`). Used by the kernel, and by
/// the agent's tests to check the same rule.
#[inline(always)]
pub fn classify(first8: u64) -> Option<ChunkKind> {
    // Unrolled by hand: the verifier and the optimiser both like straight-line code.
    macro_rules! is {
        ($p:expr) => {
            first8 & prefix_mask($p.len()) == prefix_u64($p)
        };
    }
    if is!(b"GET ")
        || is!(b"POST ")
        || is!(b"PUT ")
        || is!(b"HEAD ")
        || is!(b"DELETE ")
        || is!(b"PATCH ")
        || is!(b"OPTIONS ")
        || is!(b"CONNECT ")
        || is!(b"TRACE ")
    {
        Some(ChunkKind::RequestStart)
    } else if is!(RESPONSE_PREFIX) {
        Some(ChunkKind::ResponseStart)
    } else {
        None
    }
}

#[cfg(feature = "user")]
mod user {
    use super::{ChunkKind, HttpChunkMeta};
    use crate::Direction;

    /// A decoded [`super::HttpChunk`] whose bytes borrow from the ring buffer.
    #[derive(Debug)]
    pub struct HttpChunkView<'a> {
        /// The fixed part, as written by the kernel.
        pub meta: HttpChunkMeta,
        /// `meta.dir`, checked.
        pub dir: Direction,
        /// `meta.chunk_kind`, checked.
        pub chunk_kind: ChunkKind,
        /// The captured bytes (`meta.captured` of them).
        pub data: &'a [u8],
    }
}
#[cfg(feature = "user")]
pub use user::HttpChunkView;

#[cfg(test)]
mod tests {
    use super::*;

    fn first8(s: &[u8]) -> u64 {
        let mut b = [0u8; 8];
        let n = s.len().min(8);
        b[..n].copy_from_slice(&s[..n]);
        u64::from_le_bytes(b)
    }

    #[test]
    fn classifies_every_method_and_status_line() {
        for p in REQUEST_PREFIXES {
            let mut line = p.to_vec();
            line.extend_from_slice(b"/x HTTP/1.1\r\n");
            assert_eq!(
                classify(first8(&line)),
                Some(ChunkKind::RequestStart),
                "{p:?}"
            );
        }
        assert_eq!(
            classify(first8(b"HTTP/1.1 200 OK\r\n")),
            Some(ChunkKind::ResponseStart)
        );
        assert_eq!(
            classify(first8(b"HTTP/1.0 404 Not Found")),
            Some(ChunkKind::ResponseStart)
        );
    }

    #[test]
    fn rejects_near_misses() {
        for s in [
            &b"GETX /"[..],
            b"get / HTTP/1.1",
            b"POSTS /",
            b"HTTP/2 200",
            b"\x16\x03\x01\x02\x00\x01\x00\x01", // TLS ClientHello
            b"hello wo",
            b"",
        ] {
            assert_eq!(classify(first8(s)), None, "{s:?}");
        }
    }
}
