//! [`H2Connection`]: one HTTP/2 connection's two directions, its streams and their events.

use std::collections::BTreeMap;

use super::event::{
    ConnStats, DesyncReason, Dir, DirStats, H2Event, Request, Response, StreamEnd, StreamEndKind,
};
use super::fields::{Fields, is_grpc};
use super::frame::{
    CONTINUATION, DATA, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY,
    Frame, FrameHeader, FrameReader, GOAWAY, HEADER_LEN, HEADERS, HeaderCheck, MAX_SETTINGS_LEN,
    PING, PRIORITY, PUSH_PROMISE, RST_STREAM, SETTINGS, WINDOW_UPDATE,
};
use super::hpack::{HeaderDecoder, HpackError};
use super::{MAX_FRAME_SIZE, MAX_HEADER_BLOCK, MAX_STREAMS, PREFACE};

mod blocks;

/// SETTINGS_HEADER_TABLE_SIZE.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
/// SETTINGS_MAX_FRAME_SIZE.
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
/// The protocol's initial SETTINGS_MAX_FRAME_SIZE.
const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 14;

/// Where a direction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Matching the client preface; this many bytes matched.
    Preface(usize),
    /// The next frame must be a SETTINGS frame (the rest of either side's preface).
    FirstSettings,
    /// Frames.
    Frames,
    /// Framing lost: nothing more is parsed.
    Lost,
}

/// A header block being gathered from HEADERS or PUSH_PROMISE and CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    /// `Some(promised stream)` for PUSH_PROMISE.
    promised: Option<u32>,
    end_stream: bool,
    buf: Vec<u8>,
    /// Why it cannot be decoded, if it cannot.
    lost: Option<DesyncReason>,
}

/// One direction.
#[derive(Debug)]
struct Side {
    reader: FrameReader,
    phase: Phase,
    hpack: HeaderDecoder,
    /// Header blocks are still decoded.
    headers_ok: bool,
    block: Option<Block>,
    /// Largest frame this direction may carry (set by the other side's SETTINGS).
    max_frame_size: u32,
    stats: DirStats,
}

impl Side {
    fn new(phase: Phase) -> Side {
        Side {
            reader: FrameReader::default(),
            phase,
            hpack: HeaderDecoder::default(),
            headers_ok: true,
            block: None,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            stats: DirStats::default(),
        }
    }

    fn pending(&self) -> u64 {
        match self.phase {
            Phase::Preface(matched) => matched as u64,
            Phase::Lost => 0,
            _ => self.reader.pending(),
        }
    }
}

/// A tracked stream.
#[derive(Debug, Default)]
struct Stream {
    request_ended: bool,
    response_ended: bool,
    request_bytes: u64,
    response_bytes: u64,
    is_grpc: bool,
    /// The final response header block was seen.
    final_seen: bool,
    /// A gRPC response waiting for its trailers.
    pending: Option<Response>,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(s.try_into().ok()?))
}

/// One HTTP/2 connection as seen from outside: feed each direction's bytes with
/// [`H2Connection::feed`], report lost bytes with [`H2Connection::gap`], end with
/// [`H2Connection::finish`]; events come out in the order their last byte was fed.
#[derive(Debug)]
pub struct H2Connection {
    sides: [Side; 2],
    streams: BTreeMap<u32, Stream>,
    /// Highest stream id the client opened.
    last_client_stream: u32,
    stats: ConnStats,
}

impl Default for H2Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl H2Connection {
    /// A connection with prior knowledge (h2c, or h2 inside a TLS session someone else
    /// decrypted): the client's bytes start with the connection preface, the server's with a
    /// SETTINGS frame.
    pub fn new() -> Self {
        H2Connection {
            sides: [
                Side::new(Phase::Preface(0)),
                Side::new(Phase::FirstSettings),
            ],
            streams: BTreeMap::new(),
            last_client_stream: 0,
            stats: ConnStats::default(),
        }
    }

    /// A connection the HTTP/1 layer saw upgraded (`Upgrade: h2c`, then `101 Switching
    /// Protocols`): feed the client's bytes after its HTTP/1 request (starting with the client
    /// preface) and the server's after the 101 response (starting with its SETTINGS). The
    /// upgraded request is stream 1, already sent (the HTTP/1 layer reported it): its response
    /// and end are reported here. The request's `HTTP2-Settings` header is not applied: a
    /// server that sizes its HPACK table past 4096 on its strength alone desyncs the server's
    /// direction (`hpack-error`) rather than being guessed at.
    pub fn after_upgrade() -> Self {
        let mut conn = Self::new();
        conn.streams.insert(
            1,
            Stream {
                request_ended: true,
                ..Stream::default()
            },
        );
        conn.last_client_stream = 1;
        conn.stats.streams = 1;
        conn.stats.max_concurrent = 1;
        conn
    }

    /// Counts for one direction.
    pub fn dir_stats(&self, dir: Dir) -> DirStats {
        let side = self.side(dir);
        DirStats {
            pending_bytes: side.pending(),
            ..side.stats
        }
    }

    /// Connection-wide counts.
    pub fn stats(&self) -> ConnStats {
        self.stats
    }

    /// Whether `dir` lost its framing (every later byte is unparsed).
    pub fn is_lost(&self, dir: Dir) -> bool {
        self.side(dir).phase == Phase::Lost
    }

    /// Whether `dir`'s header blocks are still decoded.
    pub fn headers_decoded(&self, dir: Dir) -> bool {
        self.side(dir).headers_ok && !self.is_lost(dir)
    }

    /// Streams tracked now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes held in buffers now (frame payloads and header blocks being gathered, by
    /// capacity): at most 2 × (2 × [`MAX_HEADER_BLOCK`]). Not counted: HPACK tables (at most
    /// `hpack::MAX_TABLE_SIZE` each) and stream state (at most [`MAX_STREAMS`] entries).
    pub fn buffered_bytes(&self) -> usize {
        self.sides
            .iter()
            .map(|s| s.reader.buffered() + s.block.as_ref().map_or(0, |b| b.buf.capacity()))
            .sum()
    }

    fn side(&self, dir: Dir) -> &Side {
        let [c, s] = &self.sides;
        if dir == Dir::ClientToServer { c } else { s }
    }

    fn side_mut(&mut self, dir: Dir) -> &mut Side {
        let [c, s] = &mut self.sides;
        if dir == Dir::ClientToServer { c } else { s }
    }

    /// Feeds the next bytes of `dir`, appending what they complete to `events`.
    pub fn feed(&mut self, dir: Dir, bytes: &[u8], events: &mut Vec<H2Event>) {
        let mut input = bytes;
        while !input.is_empty() {
            let side = self.side_mut(dir);
            match side.phase {
                Phase::Lost => {
                    side.stats.unparsed_bytes += input.len() as u64;
                    return;
                }
                Phase::Preface(matched) => {
                    let want = PREFACE.get(matched..).unwrap_or_default();
                    let n = want.len().min(input.len());
                    let (head, rest) = input.split_at_checked(n).unwrap_or((input, &[]));
                    if want.get(..n) != Some(head) {
                        self.lose(dir, DesyncReason::NoPreface, events);
                        continue;
                    }
                    input = rest;
                    side.phase = if matched + n == PREFACE.len() {
                        side.stats.parsed_bytes += PREFACE.len() as u64;
                        Phase::FirstSettings
                    } else {
                        Phase::Preface(matched + n)
                    };
                }
                Phase::FirstSettings | Phase::Frames => {
                    let first = side.phase == Phase::FirstSettings;
                    let max = side.max_frame_size;
                    let check = |h: &FrameHeader| {
                        if header_problem(h, first, max).is_some() {
                            HeaderCheck::Reject
                        } else {
                            HeaderCheck::Accept
                        }
                    };
                    match side.reader.next(&mut input, check) {
                        Ok(None) => return,
                        Ok(Some(frame)) => self.complete(dir, frame, events),
                        Err(h) => {
                            let reason =
                                header_problem(&h, first, max).unwrap_or(DesyncReason::BadFrame);
                            self.lose(dir, reason, events);
                        }
                    }
                }
            }
        }
    }

    /// Reports `missing` bytes of `dir` lost at this point (the capture dropped them): `dir`
    /// desyncs. If they fall inside one frame's payload the frame layer survives and only
    /// header decoding stops; otherwise the direction is lost.
    pub fn gap(&mut self, dir: Dir, missing: u64, events: &mut Vec<H2Event>) {
        let side = self.side_mut(dir);
        side.stats.missing_bytes += missing;
        match side.phase {
            Phase::Lost => {}
            Phase::Preface(_) => self.lose(dir, DesyncReason::Gap, events),
            Phase::FirstSettings | Phase::Frames => {
                if side.reader.gap(missing).is_err() {
                    self.lose(dir, DesyncReason::Gap, events);
                    return;
                }
                self.header_desync(dir, DesyncReason::Gap, events);
                if let Some(frame) = self.side_mut(dir).reader.take_completed() {
                    self.complete(dir, frame, events);
                }
            }
        }
    }

    /// The connection ended: every stream still tracked ends ([`StreamEndKind::ConnectionEnd`],
    /// after its pending gRPC response, if any).
    pub fn finish(&mut self, events: &mut Vec<H2Event>) {
        for (stream_id, st) in std::mem::take(&mut self.streams) {
            end_stream(stream_id, st, StreamEndKind::ConnectionEnd, events);
        }
    }

    /// The direction loses its framing.
    fn lose(&mut self, dir: Dir, reason: DesyncReason, events: &mut Vec<H2Event>) {
        let side = self.side_mut(dir);
        if side.phase == Phase::Lost {
            return;
        }
        side.stats.unparsed_bytes += side.pending();
        side.reader = FrameReader::default();
        side.phase = Phase::Lost;
        side.block = None;
        events.push(H2Event::Desync {
            dir,
            reason,
            frames_continue: false,
        });
    }

    /// The direction stops decoding header blocks (frames go on).
    fn header_desync(&mut self, dir: Dir, reason: DesyncReason, events: &mut Vec<H2Event>) {
        let side = self.side_mut(dir);
        if side.headers_ok && side.phase != Phase::Lost {
            side.headers_ok = false;
            events.push(H2Event::Desync {
                dir,
                reason,
                frames_continue: true,
            });
        }
    }

    /// A complete frame: account for it, handle it, reuse its buffer.
    fn complete(&mut self, dir: Dir, frame: Frame, events: &mut Vec<H2Event>) {
        let side = self.side_mut(dir);
        side.stats.parsed_bytes += HEADER_LEN as u64 + u64::from(frame.header.len) - frame.missing;
        side.stats.frames += 1;
        if side.phase == Phase::FirstSettings {
            side.phase = Phase::Frames;
        }
        let header = frame.header;
        if self.side(dir).block.is_some() && header.ty != CONTINUATION {
            // RFC 9113 §6.10: nothing may come between a block's frames.
            self.header_desync(dir, DesyncReason::BadContinuation, events);
            if let Some(block) = self.side_mut(dir).block.take() {
                self.finish_block(dir, block, events);
            }
        }
        let payload = &frame.payload;
        let result = match header.ty {
            DATA => self.on_data(dir, &frame, events),
            HEADERS | PUSH_PROMISE => self.on_block_start(dir, &frame, events),
            CONTINUATION => {
                self.on_continuation(dir, &frame, events);
                Ok(())
            }
            PRIORITY => self.fixed(dir, &header, 5, false, |s| &mut s.priority_frames),
            WINDOW_UPDATE => self.fixed(dir, &header, 4, true, |s| &mut s.window_update_frames),
            PING => self
                .fixed(dir, &header, 8, true, |s| &mut s.ping_frames)
                .and_then(|()| {
                    (header.stream == 0)
                        .then_some(())
                        .ok_or(DesyncReason::BadFrame)
                }),
            RST_STREAM => self.on_rst(dir, &frame, events),
            SETTINGS => self.on_settings(dir, &frame),
            GOAWAY => {
                self.side_mut(dir).stats.goaway_frames += 1;
                match (header.stream, be32(payload, 0), be32(payload, 4)) {
                    (0, Some(last), Some(error_code)) if header.len >= 8 => {
                        events.push(H2Event::GoAway {
                            dir,
                            last_stream_id: last & 0x7fff_ffff,
                            error_code,
                        });
                        Ok(())
                    }
                    _ if frame.missing > 0 => Ok(()),
                    _ => Err(DesyncReason::BadFrame),
                }
            }
            _ => {
                self.side_mut(dir).stats.unknown_frames += 1;
                Ok(())
            }
        };
        if let Err(reason) = result {
            self.lose(dir, reason, events);
        }
        self.side_mut(dir).reader.recycle(frame.payload);
    }

    /// PRIORITY, WINDOW_UPDATE, PING: fixed length; counted.
    fn fixed(
        &mut self,
        dir: Dir,
        header: &FrameHeader,
        len: u32,
        stream_zero_ok: bool,
        counter: fn(&mut DirStats) -> &mut u64,
    ) -> Result<(), DesyncReason> {
        *counter(&mut self.side_mut(dir).stats) += 1;
        if header.len != len || (!stream_zero_ok && header.stream == 0) {
            return Err(DesyncReason::BadFrame);
        }
        Ok(())
    }

    fn on_settings(&mut self, dir: Dir, frame: &Frame) -> Result<(), DesyncReason> {
        let header = frame.header;
        self.side_mut(dir).stats.settings_frames += 1;
        let len = usize::try_from(header.len).unwrap_or(usize::MAX);
        if header.stream != 0
            || (header.has(FLAG_ACK) && len != 0)
            || len % 6 != 0
            || len > MAX_SETTINGS_LEN
        {
            return Err(DesyncReason::BadFrame);
        }
        if header.has(FLAG_ACK) || !frame.whole() {
            return Ok(());
        }
        for param in frame.payload.chunks_exact(6) {
            let id = u16::from_be_bytes([
                param.first().copied().unwrap_or(0),
                param.get(1).copied().unwrap_or(0),
            ]);
            let value = be32(param, 2).unwrap_or(0);
            match id {
                // What this side decodes is what the other side encodes.
                SETTINGS_HEADER_TABLE_SIZE => self
                    .side_mut(dir.other())
                    .hpack
                    .set_advertised_table_size(value),
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(DEFAULT_MAX_FRAME_SIZE..=(1 << 24) - 1).contains(&value) {
                        return Err(DesyncReason::BadFrame);
                    }
                    self.side_mut(dir.other()).max_frame_size = value.min(MAX_FRAME_SIZE);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn on_rst(
        &mut self,
        dir: Dir,
        frame: &Frame,
        events: &mut Vec<H2Event>,
    ) -> Result<(), DesyncReason> {
        let header = frame.header;
        self.side_mut(dir).stats.rst_stream_frames += 1;
        if header.len != 4 || header.stream == 0 {
            return Err(DesyncReason::BadFrame);
        }
        let Some(error_code) = be32(&frame.payload, 0) else {
            // Lost in a gap: the stream is still reset, with an unknown code.
            return Ok(());
        };
        events.push(H2Event::Reset {
            dir,
            stream_id: header.stream,
            error_code,
        });
        if let Some(st) = self.streams.remove(&header.stream) {
            end_stream(
                header.stream,
                st,
                StreamEndKind::Reset {
                    by: dir,
                    error_code,
                },
                events,
            );
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        dir: Dir,
        frame: &Frame,
        events: &mut Vec<H2Event>,
    ) -> Result<(), DesyncReason> {
        let header = frame.header;
        self.side_mut(dir).stats.data_frames += 1;
        if header.stream == 0 {
            return Err(DesyncReason::BadFrame);
        }
        let mut bytes = u64::from(header.len);
        if header.has(FLAG_PADDED) {
            // The pad length is unknown only if a gap took it: then all is counted as data.
            if let Some(&pad) = frame.payload.first() {
                bytes = bytes
                    .checked_sub(1 + u64::from(pad))
                    .ok_or(DesyncReason::BadPadding)?;
            } else if header.len == 0 {
                return Err(DesyncReason::BadPadding);
            }
        }
        let Some(st) = self.streams.get_mut(&header.stream) else {
            self.side_mut(dir).stats.frames_on_untracked_streams += 1;
            return Ok(());
        };
        match dir {
            Dir::ClientToServer => st.request_bytes += bytes,
            Dir::ServerToClient => st.response_bytes += bytes,
        }
        if header.has(FLAG_END_STREAM) {
            self.side_ended(dir, header.stream, events);
        }
        Ok(())
    }

    /// `dir` sent END_STREAM on a tracked stream.
    fn side_ended(&mut self, dir: Dir, stream_id: u32, events: &mut Vec<H2Event>) {
        let Some(st) = self.streams.get_mut(&stream_id) else {
            return;
        };
        match dir {
            Dir::ClientToServer => st.request_ended = true,
            Dir::ServerToClient => {
                st.response_ended = true;
                if let Some(resp) = st.pending.take() {
                    events.push(H2Event::Response(resp));
                }
            }
        }
        if st.request_ended
            && st.response_ended
            && let Some(st) = self.streams.remove(&stream_id)
        {
            end_stream(stream_id, st, StreamEndKind::Complete, events);
        }
    }
}

/// Why a frame header cannot be read on, if it cannot.
fn header_problem(h: &FrameHeader, first: bool, max_frame_size: u32) -> Option<DesyncReason> {
    if first && (h.ty != SETTINGS || h.has(FLAG_ACK) || h.stream != 0) {
        Some(DesyncReason::NoPreface)
    } else if h.len > max_frame_size {
        Some(DesyncReason::FrameTooLarge)
    } else {
        None
    }
}

/// Emits a removed stream's pending response and its end.
fn end_stream(stream_id: u32, mut st: Stream, kind: StreamEndKind, events: &mut Vec<H2Event>) {
    if let Some(resp) = st.pending.take() {
        events.push(H2Event::Response(resp));
    }
    events.push(H2Event::StreamEnd(StreamEnd {
        stream_id,
        request_bytes: st.request_bytes,
        response_bytes: st.response_bytes,
        kind,
    }));
}
