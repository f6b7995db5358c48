//! HTTP/2 frame layer (RFC 9113 §4.1): the 9-byte header, frame types and flags, and a
//! reassembler that turns one direction's bytes, in segments of any size, into frames.
//!
//! Only what a frame's handling needs is kept: a header-block fragment whole (up to
//! [`super::MAX_HEADER_BLOCK`]), SETTINGS whole (up to [`MAX_SETTINGS_LEN`]), the fixed-size
//! frames whole, the first 8 bytes of GOAWAY, the pad length of a padded DATA frame, nothing
//! of other DATA or of unknown types. So a frame's length (up to the 16 MiB the header allows)
//! never becomes an allocation.

use super::MAX_HEADER_BLOCK;

/// DATA.
pub(crate) const DATA: u8 = 0x0;
/// HEADERS.
pub(crate) const HEADERS: u8 = 0x1;
/// PRIORITY.
pub(crate) const PRIORITY: u8 = 0x2;
/// RST_STREAM.
pub(crate) const RST_STREAM: u8 = 0x3;
/// SETTINGS.
pub(crate) const SETTINGS: u8 = 0x4;
/// PUSH_PROMISE.
pub(crate) const PUSH_PROMISE: u8 = 0x5;
/// PING.
pub(crate) const PING: u8 = 0x6;
/// GOAWAY.
pub(crate) const GOAWAY: u8 = 0x7;
/// WINDOW_UPDATE.
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
/// CONTINUATION.
pub(crate) const CONTINUATION: u8 = 0x9;

/// END_STREAM (DATA, HEADERS).
pub(crate) const FLAG_END_STREAM: u8 = 0x1;
/// ACK (SETTINGS, PING).
pub(crate) const FLAG_ACK: u8 = 0x1;
/// END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
pub(crate) const FLAG_END_HEADERS: u8 = 0x4;
/// PADDED (DATA, HEADERS, PUSH_PROMISE).
pub(crate) const FLAG_PADDED: u8 = 0x8;
/// PRIORITY (HEADERS).
pub(crate) const FLAG_PRIORITY: u8 = 0x20;

/// Frame header length.
pub(crate) const HEADER_LEN: usize = 9;
/// SETTINGS payload kept (256 parameters); a longer SETTINGS frame is a bad frame.
pub(crate) const MAX_SETTINGS_LEN: usize = 6 * 256;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Payload length.
    pub len: u32,
    /// Type.
    pub ty: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id (reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    fn parse(h: &[u8; HEADER_LEN]) -> FrameHeader {
        let [l0, l1, l2, ty, flags, s0, s1, s2, s3] = *h;
        FrameHeader {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            ty,
            flags,
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        }
    }

    /// Whether `flag` is set.
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Payload bytes to keep for handling this frame.
    fn keep(&self) -> usize {
        let len = usize::try_from(self.len).unwrap_or(usize::MAX);
        let keep = match self.ty {
            DATA => usize::from(self.has(FLAG_PADDED)),
            // A block too large to keep: only what precedes the fragment (pad length, priority
            // or promised stream id), so END_STREAM and the stream still count.
            HEADERS | PUSH_PROMISE | CONTINUATION if len > MAX_HEADER_BLOCK => 6,
            HEADERS | PUSH_PROMISE | CONTINUATION => len,
            SETTINGS => MAX_SETTINGS_LEN + 1,
            PRIORITY | RST_STREAM | PING | WINDOW_UPDATE => 9,
            GOAWAY => 8,
            _ => 0,
        };
        keep.min(len)
    }
}

/// A complete frame.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Its header.
    pub header: FrameHeader,
    /// The kept part of its payload (see the module header).
    pub payload: Vec<u8>,
    /// Bytes of the payload the caller reported missing (a gap inside the frame).
    pub missing: u64,
}

impl Frame {
    /// The payload was kept whole.
    pub(crate) fn whole(&self) -> bool {
        self.missing == 0 && self.payload.len() as u64 == u64::from(self.header.len)
    }
}

/// What the reader wants to know before it reads a frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// Read the frame.
    Accept,
    /// Stop: the direction lost sync.
    Reject,
}

/// Reassembles one direction's frames.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// The frame whose payload is being read, with how much of it was read.
    current: Option<(FrameHeader, u64)>,
    payload: Vec<u8>,
    missing: u64,
}

impl FrameReader {
    /// Bytes of the frame in progress read so far.
    pub(crate) fn pending(&self) -> u64 {
        match self.current {
            // Bytes reported missing were never fed.
            Some((_, got)) => HEADER_LEN as u64 + got - self.missing,
            None => self.header_len as u64,
        }
    }

    /// Reads from `input` (advancing it) until a frame is complete (`Some`) or `input` is
    /// used up (`None`). `check` sees each header before its payload is read; on
    /// [`HeaderCheck::Reject`] the reader returns `Err(header)` with the header's bytes still
    /// counted in [`FrameReader::pending`].
    pub(crate) fn next(
        &mut self,
        input: &mut &[u8],
        mut check: impl FnMut(&FrameHeader) -> HeaderCheck,
    ) -> Result<Option<Frame>, FrameHeader> {
        loop {
            let Some((header, got)) = self.current else {
                if input.is_empty() {
                    return Ok(None);
                }
                let n = (HEADER_LEN - self.header_len).min(input.len());
                let (head, rest) = input.split_at_checked(n).unwrap_or((input, &[]));
                if let Some(dst) = self.header.get_mut(self.header_len..self.header_len + n) {
                    dst.copy_from_slice(head);
                }
                self.header_len += head.len();
                *input = rest;
                if self.header_len < HEADER_LEN {
                    return Ok(None);
                }
                let header = FrameHeader::parse(&self.header);
                if check(&header) == HeaderCheck::Reject {
                    return Err(header);
                }
                self.header_len = 0;
                self.current = Some((header, 0));
                self.payload.clear();
                self.payload.reserve_exact(header.keep());
                self.missing = 0;
                continue;
            };
            let remaining = u64::from(header.len) - got;
            let n = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let (body, rest) = input.split_at_checked(n).unwrap_or((input, &[]));
            // Nothing after a gap is kept: it would not be contiguous.
            let keep = if self.missing > 0 { 0 } else { header.keep() };
            let room = keep.saturating_sub(self.payload.len());
            self.payload
                .extend_from_slice(body.get(..room.min(body.len())).unwrap_or_default());
            *input = rest;
            let got = got + body.len() as u64;
            if got < u64::from(header.len) {
                self.current = Some((header, got));
                return Ok(None);
            }
            self.current = None;
            return Ok(Some(Frame {
                header,
                payload: std::mem::take(&mut self.payload),
                missing: self.missing,
            }));
        }
    }

    /// Capacity of the payload buffer.
    pub(crate) fn buffered(&self) -> usize {
        self.payload.capacity()
    }

    /// Gives back a frame's payload buffer for reuse.
    pub(crate) fn recycle(&mut self, mut payload: Vec<u8>) {
        payload.clear();
        if payload.capacity() <= MAX_HEADER_BLOCK {
            self.payload = payload;
        }
    }

    /// `missing` bytes were lost here. If they fall inside the current frame's payload the
    /// frame layer survives (`Ok`; the frame will come out with [`Frame::missing`] set and
    /// nothing kept after the gap); otherwise (inside or past a frame header) it does not.
    pub(crate) fn gap(&mut self, missing: u64) -> Result<(), ()> {
        match self.current {
            Some((header, got))
                if self.header_len == 0 && got + missing <= u64::from(header.len) =>
            {
                self.current = Some((header, got + missing));
                self.missing += missing;
                Ok(())
            }
            _ => Err(()),
        }
    }

    /// A complete frame is due without more input: the gap ended exactly at the frame's end.
    pub(crate) fn take_completed(&mut self) -> Option<Frame> {
        match self.current {
            Some((header, got)) if got == u64::from(header.len) => {
                self.current = None;
                Some(Frame {
                    header,
                    payload: std::mem::take(&mut self.payload),
                    missing: self.missing,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Serializes a frame.
    pub(crate) fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.push(ty);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn read_all(reader: &mut FrameReader, mut input: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Ok(Some(f)) = reader.next(&mut input, |_| HeaderCheck::Accept) {
            out.push(f);
        }
        out
    }

    #[test]
    fn reassembles_across_any_split() {
        let mut bytes = frame(HEADERS, FLAG_END_HEADERS, 1, b"abc");
        bytes.extend(frame(DATA, FLAG_PADDED, 1, &[2, b'x', 0, 0]));
        bytes.extend(frame(0x42, 0, 0, &[1; 40]));
        for cut in 0..=bytes.len() {
            let mut r = FrameReader::default();
            let mut frames = read_all(&mut r, &bytes[..cut]);
            frames.extend(read_all(&mut r, &bytes[cut..]));
            assert_eq!(frames.len(), 3, "cut {cut}");
            assert_eq!(frames[0].payload, b"abc");
            assert_eq!(
                frames[1].payload,
                [2],
                "only the pad length of DATA is kept"
            );
            assert!(frames[2].payload.is_empty(), "unknown types are not kept");
            assert_eq!(frames[2].header.len, 40);
            assert_eq!(r.pending(), 0);
        }
    }

    #[test]
    fn reject_keeps_header_pending() {
        let bytes = frame(HEADERS, 0, 1, b"abc");
        let mut r = FrameReader::default();
        let mut input = bytes.as_slice();
        let got = r.next(&mut input, |_| HeaderCheck::Reject);
        assert_eq!(
            got.map(|_| ()),
            Err(FrameHeader {
                len: 3,
                ty: HEADERS,
                flags: 0,
                stream: 1
            })
            .map(|_: FrameHeader| ())
        );
        assert_eq!(r.pending(), 9);
    }

    #[test]
    fn gap_inside_payload_keeps_framing() {
        let bytes = frame(DATA, 0, 1, &[0; 100]);
        let mut r = FrameReader::default();
        assert!(read_all(&mut r, &bytes[..20]).is_empty());
        assert_eq!(r.gap(30), Ok(()));
        let frames = read_all(&mut r, &bytes[50..]);
        assert_eq!((frames.len(), frames[0].missing), (1, 30));
        // A gap past the frame's end loses the framing.
        let mut r = FrameReader::default();
        assert!(read_all(&mut r, &bytes[..20]).is_empty());
        assert_eq!(r.gap(200), Err(()));
    }
}
