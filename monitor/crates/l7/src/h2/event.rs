//! What the HTTP/2 decoder reports: per-stream events, desyncs with stable reason codes, and
//! per-direction byte and frame counts.

/// A direction of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Bytes the client (the side that opened the connection) sent.
    ClientToServer,
    /// Bytes the server sent.
    ServerToClient,
}

impl Dir {
    /// The other direction.
    pub fn other(self) -> Dir {
        match self {
            Dir::ClientToServer => Dir::ServerToClient,
            Dir::ServerToClient => Dir::ClientToServer,
        }
    }
}

/// A header other than a pseudo-header, as reported in [`Request::headers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name (lower case on the wire in HTTP/2), escaped and cut as [`super::MAX_NAME_LEN`] says.
    pub name: String,
    /// Value, only for names in [`super::KEPT_VALUES`]; `None` for every other header.
    pub value: Option<String>,
}

/// A request's header block. Text fields are the bytes as sent, with anything not printable
/// ASCII escaped as `\xNN`, cut at the lengths in [`super`]'s `MAX_*` constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Stream id (odd: client-initiated).
    pub stream_id: u32,
    /// `:method`.
    pub method: Option<String>,
    /// `:path`; `None` when the header block could not be decoded (after a desync).
    pub path: Option<String>,
    /// `:authority`.
    pub authority: Option<String>,
    /// `:scheme`.
    pub scheme: Option<String>,
    /// `content-type`.
    pub content_type: Option<String>,
    /// Other headers in the order sent, at most [`super::MAX_REPORTED_HEADERS`].
    pub headers: Vec<Header>,
    /// Headers left out of `headers` for the cap.
    pub headers_omitted: usize,
    /// Some value or name was cut to its cap.
    pub truncated: bool,
    /// A pseudo-header appeared more than once (the first value is reported) or after a
    /// regular header (not reported): a malformed request a server must reject.
    pub malformed: bool,
    /// `content-type` is `application/grpc` or `application/grpc+…`/`;…`.
    pub is_grpc: bool,
    /// The block was decoded; `false` after a header-level desync of the client's direction:
    /// the request exists (a HEADERS frame opened the stream) but nothing of it is known.
    pub decoded: bool,
    /// The HEADERS frame ended the request (no body).
    pub end_stream: bool,
}

/// A response: its final (non-1xx) header block, and for gRPC its trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Stream id.
    pub stream_id: u32,
    /// `:status`.
    pub status: Option<u16>,
    /// `content-type`.
    pub content_type: Option<String>,
    /// `grpc-status`, from the trailers (or from a trailers-only response).
    pub grpc_status: Option<u32>,
    /// `grpc-message` (percent-encoded as sent), escaped and cut.
    pub grpc_message: Option<String>,
    /// The header block(s) were decoded (see [`Request::decoded`]).
    pub decoded: bool,
    /// Trailers (a second header block ending the stream) were seen.
    pub trailers: bool,
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEndKind {
    /// Both sides sent END_STREAM.
    Complete,
    /// RST_STREAM from `by` with `error_code`.
    Reset {
        /// Who reset it.
        by: Dir,
        /// RST_STREAM error code (0 NO_ERROR, 8 CANCEL, …).
        error_code: u32,
    },
    /// The connection ended ([`super::H2Connection::finish`]) with the stream still open.
    ConnectionEnd,
}

/// A stream's end and what it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    /// Stream id.
    pub stream_id: u32,
    /// DATA payload bytes the client sent on it (padding excluded).
    pub request_bytes: u64,
    /// DATA payload bytes the server sent on it (padding excluded).
    pub response_bytes: u64,
    /// How it ended.
    pub kind: StreamEndKind,
}

/// Why a direction lost sync; [`DesyncReason::code`] is stable, in the `h2-desync` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}/{}", DESYNC_FAMILY, self.code())]
pub enum DesyncReason {
    /// The client's bytes do not start with the connection preface, or the server's first
    /// frame is not SETTINGS (attached mid-connection, or not HTTP/2).
    NoPreface,
    /// The HPACK decoder rejected a header block.
    HpackError,
    /// A header block needs more HPACK work than allowed (Huffman strings or bytes, table size
    /// updates), see `hpack.rs`.
    HpackLimit,
    /// A header block has more than [`super::MAX_HEADERS_PER_BLOCK`] fields.
    TooManyHeaders,
    /// A header block (HEADERS or PUSH_PROMISE plus CONTINUATIONs) over
    /// [`super::MAX_HEADER_BLOCK`] bytes.
    HeaderBlockTooLarge,
    /// CONTINUATION without a header block in progress, or another frame inside one.
    BadContinuation,
    /// A frame longer than the peer's SETTINGS_MAX_FRAME_SIZE or [`super::MAX_FRAME_SIZE`].
    FrameTooLarge,
    /// Pad length not smaller than what it pads.
    BadPadding,
    /// A frame whose length, stream id or direction is impossible for its type.
    BadFrame,
    /// The caller reported missing bytes ([`super::H2Connection::gap`]).
    Gap,
}

/// Family of [`DesyncReason`] codes.
pub const DESYNC_FAMILY: &str = "h2-desync";

impl DesyncReason {
    /// Stable reason code (kebab-case) within [`DESYNC_FAMILY`].
    pub fn code(self) -> &'static str {
        match self {
            DesyncReason::NoPreface => "no-preface",
            DesyncReason::HpackError => "hpack-error",
            DesyncReason::HpackLimit => "hpack-limit",
            DesyncReason::TooManyHeaders => "too-many-headers",
            DesyncReason::HeaderBlockTooLarge => "header-block-too-large",
            DesyncReason::BadContinuation => "bad-continuation",
            DesyncReason::FrameTooLarge => "frame-too-large",
            DesyncReason::BadPadding => "bad-padding",
            DesyncReason::BadFrame => "bad-frame",
            DesyncReason::Gap => "gap",
        }
    }
}

/// Something the decoder saw, in the order the bytes were fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H2Event {
    /// A client opened a stream with a header block.
    Request(Request),
    /// A stream's response (for gRPC: once its trailers, or the end of the stream, arrived).
    Response(Response),
    /// A stream ended; follows its [`H2Event::Reset`] if it was reset.
    StreamEnd(StreamEnd),
    /// RST_STREAM.
    Reset {
        /// Who sent it.
        dir: Dir,
        /// Stream id.
        stream_id: u32,
        /// Error code.
        error_code: u32,
    },
    /// GOAWAY.
    GoAway {
        /// Who sent it.
        dir: Dir,
        /// Last stream id the sender will process.
        last_stream_id: u32,
        /// Error code.
        error_code: u32,
    },
    /// The server promised a pushed stream (PUSH_PROMISE); the pushed stream is not tracked.
    PushPromise {
        /// Stream the promise was sent on.
        stream_id: u32,
        /// The promised (even) stream id.
        promised_stream_id: u32,
    },
    /// A new stream while [`super::MAX_STREAMS`] streams were tracked: it is counted
    /// ([`ConnStats::untracked_streams`]) but produces no other event.
    StreamNotTracked {
        /// Stream id.
        stream_id: u32,
    },
    /// A direction lost sync. With `frames_continue` the frame layer still holds (only header
    /// blocks are no longer decoded: later requests and responses have `decoded: false`);
    /// without it nothing more of that direction is parsed and every later byte counts as
    /// unparsed.
    Desync {
        /// Direction.
        dir: Dir,
        /// Why.
        reason: DesyncReason,
        /// Frames are still delimited.
        frames_continue: bool,
    },
}

/// Per-direction counts. `parsed_bytes + unparsed_bytes + pending_bytes` is every byte fed;
/// `missing_bytes` were reported by [`super::H2Connection::gap`] and never fed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Bytes of the preface and of complete frames.
    pub parsed_bytes: u64,
    /// Bytes from the point the direction lost its framing on.
    pub unparsed_bytes: u64,
    /// Bytes of a frame not yet complete.
    pub pending_bytes: u64,
    /// Bytes reported missing.
    pub missing_bytes: u64,
    /// Complete frames.
    pub frames: u64,
    /// DATA frames.
    pub data_frames: u64,
    /// HEADERS frames.
    pub headers_frames: u64,
    /// CONTINUATION frames.
    pub continuation_frames: u64,
    /// SETTINGS frames (ACKs included).
    pub settings_frames: u64,
    /// PING frames (ACKs included).
    pub ping_frames: u64,
    /// WINDOW_UPDATE frames.
    pub window_update_frames: u64,
    /// PRIORITY frames.
    pub priority_frames: u64,
    /// RST_STREAM frames.
    pub rst_stream_frames: u64,
    /// GOAWAY frames.
    pub goaway_frames: u64,
    /// PUSH_PROMISE frames.
    pub push_promise_frames: u64,
    /// Frames of types this decoder does not know (ignored, as RFC 9113 §4.1 requires).
    pub unknown_frames: u64,
    /// Header blocks decoded.
    pub header_blocks: u64,
    /// Header blocks not decoded (after a header-level desync).
    pub header_blocks_skipped: u64,
    /// Frames on streams that are not tracked (closed, untracked, pushed or never opened).
    pub frames_on_untracked_streams: u64,
}

/// Connection-wide counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Streams the client opened and the decoder tracked.
    pub streams: u64,
    /// Streams opened while [`super::MAX_STREAMS`] were tracked.
    pub untracked_streams: u64,
    /// Most streams tracked at once.
    pub max_concurrent: usize,
}
