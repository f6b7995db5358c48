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
const MIN_BODY: usize = 17;
/// Largest body accepted; a longer length field is corruption.
pub(super) const MAX_BODY: usize = 16 << 20;

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

/// What a full read of a segment file found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// End of the last good frame.
    pub good_end: usize,
    pub records: u64,
    pub last_seq: u64,
    pub min_time: i64,
    pub max_time: i64,
    /// The bad frame's offset and what is wrong, unless the file ended cleanly.
    pub bad: Option<(usize, &'static str)>,
    /// The file ends inside a frame (at `good_end`).
    pub incomplete: bool,
}

/// Reads the frames of `data` from `start`, calling `each` on every good one.
pub(super) fn scan_frames(
    data: &[u8],
    start: usize,
    first_seq: u64,
    mut each: impl FnMut(&Frame<'_>),
) -> Scan {
    let mut s = Scan {
        good_end: start,
        ..Scan::default()
    };
    let mut prev = first_seq.saturating_sub(1);
    let mut at = start;
    while at < data.len() {
        match parse_frame(&data[at..]) {
            Parsed::Ok(f, n) => {
                if f.seq <= prev {
                    s.bad = Some((at, "seq out of order"));
                    break;
                }
                prev = f.seq;
                each(&f);
                if s.records == 0 {
                    s.min_time = f.time_ns;
                    s.max_time = f.time_ns;
                }
                s.records += 1;
                s.last_seq = f.seq;
                s.min_time = s.min_time.min(f.time_ns);
                s.max_time = s.max_time.max(f.time_ns);
                at += n;
                s.good_end = at;
            }
            Parsed::Incomplete => {
                s.incomplete = true;
                break;
            }
            Parsed::Bad(why) => {
                s.bad = Some((at, why));
                break;
            }
        }
    }
    s
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
