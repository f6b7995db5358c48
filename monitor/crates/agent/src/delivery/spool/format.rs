//! Byte layout of segment files: the checksummed header and the frames (see the module doc of
//! [`super`] for the table). Pure encoding and decoding, no I/O.

/// First bytes of every segment file.
pub(super) const MAGIC: [u8; 4] = *b"MSPL";
/// Segment format version written by this code; others are rejected as corrupt.
pub(super) const VERSION: u16 = 1;
/// Header bytes before the boot id: magic, version, boot id length, first seq.
const HEADER_FIXED: usize = 16;
/// Longest boot id a header can hold.
pub(super) const MAX_BOOT_ID: usize = 255;
/// Longest record kind a frame can hold.
pub(super) const MAX_KIND: usize = 255;
/// Frame prefix: body length and body checksum.
pub(super) const FRAME_PREFIX: usize = 8;
/// Smallest body: seq, time and the kind length byte.
pub(super) const MIN_BODY: usize = 17;
/// Smallest frame: prefix and smallest body.
pub(super) const MIN_FRAME: usize = FRAME_PREFIX + MIN_BODY;
/// Longest header: the fixed part, the longest boot id and the checksum.
pub(super) const MAX_HEADER: usize = HEADER_FIXED + MAX_BOOT_ID + 4;
/// Largest body accepted; a longer length field is corruption.
pub(super) const MAX_BODY: usize = 16 << 20;

/// Why a header is bad: the file ends inside it (a crash while creating the segment).
pub(super) const HEADER_CUT: &str = "header cut short";
/// Why a header is bad: only zero bytes where it should be (written, never reached the disk).
pub(super) const HEADER_ZEROED: &str = "zeroed header";

/// A segment header, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    /// The boot (agent incarnation) every record of the segment belongs to.
    pub boot_id: String,
    /// The seq of the segment's first record.
    pub first_seq: u64,
    /// Header length in bytes: where the first frame starts.
    pub len: usize,
}

/// Bytes the header of a segment of `boot_id` takes.
pub(super) fn header_len(boot_id: &str) -> u64 {
    (HEADER_FIXED + boot_id.len() + 4) as u64
}

/// Appends the header of a new segment to `out`.
pub(super) fn encode_header(out: &mut Vec<u8>, boot_id: &str, first_seq: u64) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    // begin_boot rejects longer ids, so the length fits.
    out.extend_from_slice(&(boot_id.len().min(MAX_BOOT_ID) as u16).to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&boot_id.as_bytes()[..boot_id.len().min(MAX_BOOT_ID)]);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The outcome of decoding the start of a buffer.
#[derive(Debug)]
pub(super) enum Parsed<T> {
    /// A valid item and the bytes it took.
    Ok(T, usize),
    /// The buffer ends before the item does (a torn write, or a short read).
    Incomplete,
    /// The bytes cannot be a valid item: what is wrong.
    Bad(&'static str),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes a segment header from the start of `b`.
pub(super) fn parse_header(b: &[u8]) -> Parsed<Header> {
    if b.len() < HEADER_FIXED {
        return Parsed::Incomplete;
    }
    if b[..4] != MAGIC {
        return Parsed::Bad("bad magic");
    }
    if u16_at(b, 4) != VERSION {
        return Parsed::Bad("unknown format version");
    }
    let n = usize::from(u16_at(b, 6));
    if n == 0 || n > MAX_BOOT_ID {
        return Parsed::Bad("bad boot id length");
    }
    let len = HEADER_FIXED + n + 4;
    if b.len() < len {
        return Parsed::Incomplete;
    }
    if crc32fast::hash(&b[..len - 4]) != u32_at(b, len - 4) {
        return Parsed::Bad("header checksum mismatch");
    }
    let Ok(boot_id) = std::str::from_utf8(&b[HEADER_FIXED..HEADER_FIXED + n]) else {
        return Parsed::Bad("boot id is not UTF-8");
    };
    let header = Header {
        boot_id: boot_id.to_owned(),
        first_seq: u64_at(b, 8),
        len,
    };
    Parsed::Ok(header, len)
}

/// The boot id and first seq a damaged header still shows: its magic, version and boot id
/// length are right and the boot id is UTF-8, whatever its checksum says. A hint for loss
/// notes, never trusted for delivery.
pub(super) fn header_hint(b: &[u8]) -> Option<(String, u64)> {
    if b.len() < HEADER_FIXED || b[..4] != MAGIC || u16_at(b, 4) != VERSION {
        return None;
    }
    let n = usize::from(u16_at(b, 6));
    if n == 0 || n > MAX_BOOT_ID || b.len() < HEADER_FIXED + n {
        return None;
    }
    let boot = std::str::from_utf8(&b[HEADER_FIXED..HEADER_FIXED + n]).ok()?;
    Some((boot.to_owned(), u64_at(b, 8)))
}

/// Whether `b` starts with what could be a frame of a record after seq `prev` (its length in
/// range, its seq above `prev` by at most `max_step`, its kind inside it), without checking
/// its checksum: the cheap filter of a search for intact frames past damage. The frame's
/// length when it could.
pub(super) fn plausible_frame(b: &[u8], prev: u64, max_step: u64) -> Option<usize> {
    if b.len() < MIN_FRAME {
        return None;
    }
    let body_len = u32_at(b, 0) as usize;
    if !(MIN_BODY..=MAX_BODY).contains(&body_len) {
        return None;
    }
    let seq = u64_at(b, FRAME_PREFIX);
    if seq <= prev || seq - prev > max_step {
        return None;
    }
    let kind_len = usize::from(b[FRAME_PREFIX + 16]);
    (MIN_BODY + kind_len <= body_len).then_some(FRAME_PREFIX + body_len)
}

/// Bytes a frame takes on disk.
pub(super) fn frame_len(kind: &str, payload: &[u8]) -> usize {
    FRAME_PREFIX + MIN_BODY + kind.len() + payload.len()
}

/// Appends one frame to `out`. The caller checked the kind and body limits.
pub(super) fn encode_frame(out: &mut Vec<u8>, seq: u64, time_ns: i64, kind: &str, payload: &[u8]) {
    let start = out.len();
    let body_len = MIN_BODY + kind.len() + payload.len();
    out.reserve(FRAME_PREFIX + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ns.to_le_bytes());
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + FRAME_PREFIX..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded frame, borrowing from the read buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame<'a> {
    /// Record sequence number.
    pub seq: u64,
    /// When the agent wrote the record (Unix ns).
    pub time_ns: i64,
    /// Record kind.
    pub kind: &'a str,
    /// The record's JSON.
    pub payload: &'a [u8],
}

/// Decodes one frame from the start of `b`.
pub(super) fn parse_frame(b: &[u8]) -> Parsed<Frame<'_>> {
    if b.len() < FRAME_PREFIX {
        return Parsed::Incomplete;
    }
    let body_len = u32_at(b, 0) as usize;
    if !(MIN_BODY..=MAX_BODY).contains(&body_len) {
        return Parsed::Bad("frame length out of range");
    }
    let end = FRAME_PREFIX + body_len;
    if b.len() < end {
        return Parsed::Incomplete;
    }
    let body = &b[FRAME_PREFIX..end];
    if crc32fast::hash(body) != u32_at(b, 4) {
        return Parsed::Bad("frame checksum mismatch");
    }
    let kind_len = usize::from(body[16]);
    if MIN_BODY + kind_len > body_len {
        return Parsed::Bad("kind longer than the frame");
    }
    let Ok(kind) = std::str::from_utf8(&body[MIN_BODY..MIN_BODY + kind_len]) else {
        return Parsed::Bad("kind is not UTF-8");
    };
    let frame = Frame {
        seq: u64_at(body, 0),
        time_ns: u64_at(body, 8) as i64,
        kind,
        payload: &body[MIN_BODY + kind_len..],
    };
    Parsed::Ok(frame, end)
}

/// The frame length announced at the start of `b`, if `b` holds a frame prefix: lets a reader
/// fetch a frame larger than its read chunk.
pub(super) fn announced_len(b: &[u8]) -> Option<usize> {
    (b.len() >= FRAME_PREFIX).then(|| FRAME_PREFIX + u32_at(b, 0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_frame_round_trip() {
        let mut b = Vec::new();
        encode_header(&mut b, "boot-1", 42);
        let Parsed::Ok(h, n) = parse_header(&b) else {
            panic!("header did not parse")
        };
        assert_eq!(
            (h.boot_id.as_str(), h.first_seq, h.len, n),
            ("boot-1", 42, b.len(), b.len())
        );
        let mut f = Vec::new();
        encode_frame(&mut f, 7, -3, "http", b"{}");
        assert_eq!(f.len(), frame_len("http", b"{}"));
        let Parsed::Ok(fr, n) = parse_frame(&f) else {
            panic!("frame did not parse")
        };
        assert_eq!(
            (fr.seq, fr.time_ns, fr.kind, fr.payload, n),
            (7, -3, "http", &b"{}"[..], f.len())
        );
        assert!(matches!(parse_frame(&f[..f.len() - 1]), Parsed::Incomplete));
        f[10] ^= 1;
        assert!(matches!(parse_frame(&f), Parsed::Bad(_)));
        b[17] ^= 1;
        assert!(matches!(parse_header(&b), Parsed::Bad(_)));
        assert!(matches!(parse_frame(&[0; 8]), Parsed::Bad(_)));
        let huge = ((MAX_BODY + 1) as u32).to_le_bytes();
        assert!(matches!(
            parse_frame(&[huge[0], huge[1], huge[2], huge[3], 0, 0, 0, 0]),
            Parsed::Bad(_)
        ));
    }
}
