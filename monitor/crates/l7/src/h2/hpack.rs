//! HPACK (RFC 7541) for one direction: the `loona-hpack` decoder behind a structural
//! pre-scan that bounds the work a hostile header block can cause.
//!
//! # Why `loona-hpack`
//!
//! Candidates checked (sources read, then each decoder run on 600,000 generated hostile
//! blocks with overflow checks and debug assertions on, and timed on worst-case blocks):
//!
//! - `hpack` 0.3.0: last release 2015, unmaintained. Panics on hostile input: a dynamic table
//!   size update of `3f ff ff 7f` overflows (209 panics in the run). Rejected.
//! - `httlib-hpack` 0.1.3: last release 2020. Fast table-driven Huffman, but indexes its input
//!   without checks: 6,149 panics in the run (for example on a truncated literal). Rejected.
//! - `h2`'s decoder: `h2::hpack` is a private module, not public API even with h2's `unstable`
//!   feature. Not usable.
//! - `fluke-hpack` 0.3.1: the fork of `hpack` by the fluke project, renamed `loona-hpack`.
//! - `loona-hpack` 0.4.3 (chosen): the maintained successor (last release 2024-11, which fixed
//!   a panic on a failing integer decode). Huffman decoding, dynamic table size updates with a
//!   caller-set upper bound ([`loona_hpack::Decoder::set_max_allowed_table_size`]; an update
//!   over it is an error, not a panic), errors as values, a callback API that lends indexed
//!   fields from the table instead of copying them (an indexed-field flood costs no
//!   allocation). No panics in the run, nor in this crate's proptests and fuzzing
//!   (`fuzz/`, target `h2_decoder`).
//!
//! Its weakness is time: it rebuilds a 257-entry `HashMap` Huffman table for every Huffman
//! string and walks the code bit by bit through hash lookups. Unbounded, a 16 KiB block of
//! one-byte Huffman strings took 400 ms (release with overflow checks). Hence the pre-scan
//! below, which walks the block's representations (integers and string lengths only, no
//! decoding) and rejects, before the decoder runs, a block with more than
//! [`super::MAX_HEADERS_PER_BLOCK`] fields, more than [`MAX_HUFFMAN_STRINGS`] Huffman strings,
//! more than [`MAX_HUFFMAN_BYTES`] Huffman-coded bytes, more than two table size updates or
//! one after a field (RFC 7541 §4.2), an update over the allowed size, index 0, or a length
//! past the block's end. The slowest blocks it lets through (test
//! `worst_case_block_is_bounded`, release build on the 2-core dev machine): 64 one-byte
//! Huffman strings (160 bytes) in about 1 ms, one 8 KiB Huffman value in about 1.5 ms; so a
//! block costs at most a few milliseconds, and the worst case per input byte is about 6 µs
//! (tiny Huffman strings), which the capture's per-flow byte budget bounds in total. Real
//! clients are far from it: the recorded curl, python-h2 and grpcio connections decode in
//! 30 µs to 2 ms each in a debug build.
//!
//! Memory: the dynamic table is capped at the size the other side advertised in
//! SETTINGS_HEADER_TABLE_SIZE (default 4096), never over [`MAX_TABLE_SIZE`]; decoded Huffman
//! strings are at most 8/5 of their encoded length, and a block is at most
//! [`super::MAX_HEADER_BLOCK`] bytes.

use super::MAX_HEADERS_PER_BLOCK;

/// Largest dynamic table accepted, whatever the peer advertised (HPACK size: entry bytes plus
/// 32 per entry).
pub const MAX_TABLE_SIZE: usize = 64 * 1024;
/// Huffman-coded strings per header block.
pub const MAX_HUFFMAN_STRINGS: usize = 64;
/// Huffman-coded bytes per header block.
pub const MAX_HUFFMAN_BYTES: usize = 8 * 1024;
/// The protocol's initial dynamic table size (RFC 9113 §6.5.2).
const DEFAULT_TABLE_SIZE: usize = 4096;

/// Why a header block was not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HpackError {
    /// Invalid HPACK (bad index, truncated integer or string, bad Huffman code, table size
    /// update over the allowed size or in the wrong place).
    #[error("invalid HPACK: {0}")]
    Invalid(&'static str),
    /// More fields than [`super::MAX_HEADERS_PER_BLOCK`].
    #[error("too many header fields")]
    TooManyFields,
    /// More Huffman work than allowed.
    #[error("HPACK work over the limit: {0}")]
    Limit(&'static str),
}

/// One direction's HPACK decoding state.
pub(crate) struct HeaderDecoder {
    inner: loona_hpack::Decoder<'static>,
    max_allowed: usize,
}

impl std::fmt::Debug for HeaderDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecoder")
            .field("max_allowed", &self.max_allowed)
            .finish_non_exhaustive()
    }
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        let mut inner = loona_hpack::Decoder::new();
        inner.set_max_allowed_table_size(DEFAULT_TABLE_SIZE);
        HeaderDecoder {
            inner,
            max_allowed: DEFAULT_TABLE_SIZE,
        }
    }
}

impl HeaderDecoder {
    /// The decoding side advertised SETTINGS_HEADER_TABLE_SIZE = `advertised`: the encoder may
    /// now size the table up to it (capped at [`MAX_TABLE_SIZE`]).
    pub(crate) fn set_advertised_table_size(&mut self, advertised: u32) {
        let allowed = usize::try_from(advertised)
            .unwrap_or(MAX_TABLE_SIZE)
            .min(MAX_TABLE_SIZE);
        self.max_allowed = allowed;
        self.inner.set_max_allowed_table_size(allowed);
    }

    /// Decodes a complete header block, calling `on_field(name, value)` per field in order.
    /// On an error the table is in an unknown state: the caller stops decoding this direction.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut on_field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        prescan(block, self.max_allowed)?;
        self.inner
            .decode_with_cb(block, |name, value| on_field(&name, &value))
            .map_err(|e| HpackError::Invalid(decoder_error(e)))
    }
}

fn decoder_error(e: loona_hpack::decoder::DecoderError) -> &'static str {
    use loona_hpack::decoder::DecoderError as E;
    match e {
        E::HeaderIndexOutOfBounds => "index-out-of-bounds",
        E::IntegerDecodingError(_) => "integer",
        E::StringDecodingError(_) => "string",
        E::InvalidMaxDynamicSize => "table-size",
        E::SizeUpdateAtEnd => "size-update-at-end",
        _ => "other",
    }
}

/// Reads an HPACK integer with an `n`-bit prefix at the start of `buf` (RFC 7541 §5.1):
/// `(value, bytes used)`. At most 4 continuation bytes (values under 2^28).
fn integer(buf: &[u8], prefix_bits: u32) -> Result<(usize, usize), HpackError> {
    let mask = (1usize << prefix_bits) - 1;
    let first = usize::from(*buf.first().ok_or(HpackError::Invalid("integer"))?) & mask;
    if first < mask {
        return Ok((first, 1));
    }
    let mut value = mask;
    for i in 1..=4 {
        let b = usize::from(*buf.get(i).ok_or(HpackError::Invalid("integer"))?);
        value += (b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(HpackError::Invalid("integer"))
}

/// Walks the block's representations without decoding them and enforces the limits in the
/// module header.
fn prescan(block: &[u8], max_table: usize) -> Result<(), HpackError> {
    let mut pos = 0usize;
    let mut fields = 0usize;
    let mut updates = 0usize;
    let mut huffman_strings = 0usize;
    let mut huffman_bytes = 0usize;
    // A string literal at `pos`: advances past it.
    let mut string = |pos: &mut usize| -> Result<(), HpackError> {
        let rest = block.get(*pos..).unwrap_or_default();
        let huffman = rest.first().is_some_and(|b| b & 0x80 != 0);
        let (len, used) = integer(rest, 7)?;
        let end = pos
            .checked_add(used)
            .and_then(|p| p.checked_add(len))
            .filter(|&e| e <= block.len())
            .ok_or(HpackError::Invalid("string"))?;
        if huffman {
            huffman_strings += 1;
            huffman_bytes += len;
            if huffman_strings > MAX_HUFFMAN_STRINGS {
                return Err(HpackError::Limit("huffman-strings"));
            }
            if huffman_bytes > MAX_HUFFMAN_BYTES {
                return Err(HpackError::Limit("huffman-bytes"));
            }
        }
        *pos = end;
        Ok(())
    };
    while let Some(&b) = block.get(pos) {
        let rest = block.get(pos..).unwrap_or_default();
        if b & 0x80 != 0 {
            // Indexed field.
            let (index, used) = integer(rest, 7)?;
            if index == 0 {
                return Err(HpackError::Invalid("index-zero"));
            }
            pos += used;
        } else if b & 0x20 != 0 && b & 0x40 == 0 {
            // Dynamic table size update: only at the start of a block, at most two.
            let (size, used) = integer(rest, 5)?;
            updates += 1;
            if fields > 0 || updates > 2 {
                return Err(HpackError::Invalid("size-update-position"));
            }
            if size > max_table {
                return Err(HpackError::Invalid("table-size"));
            }
            pos += used;
            continue;
        } else {
            // Literal: with incremental indexing (01), without (0000) or never indexed (0001).
            let prefix = if b & 0x40 != 0 { 6 } else { 4 };
            let (index, used) = integer(rest, prefix)?;
            pos += used;
            if index == 0 {
                string(&mut pos)?;
            }
            string(&mut pos)?;
        }
        fields += 1;
        if fields > MAX_HEADERS_PER_BLOCK {
            return Err(HpackError::TooManyFields);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Field = (Vec<u8>, Vec<u8>);

    fn encode(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        loona_hpack::Encoder::new().encode(fields.iter().copied())
    }

    fn decode_all(d: &mut HeaderDecoder, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut out = Vec::new();
        d.decode(block, |n, v| out.push((n.to_vec(), v.to_vec())))?;
        Ok(out)
    }

    #[test]
    fn round_trip_with_dynamic_table() {
        let mut enc = loona_hpack::Encoder::new();
        let mut d = HeaderDecoder::default();
        let fields: [(&[u8], &[u8]); 3] = [(b":method", b"GET"), (b":path", b"/x"), (b"x-a", b"1")];
        for _ in 0..3 {
            let block = enc.encode(fields.iter().copied());
            let got = decode_all(&mut d, &block).unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(got[2], (b"x-a".to_vec(), b"1".to_vec()));
        }
    }

    #[test]
    fn huffman_rfc_example() {
        // RFC 7541 C.4.1: first request with Huffman coding.
        let block = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let got = decode_all(&mut HeaderDecoder::default(), &block).unwrap();
        assert_eq!(
            got[3],
            (b":authority".to_vec(), b"www.example.com".to_vec())
        );
    }

    #[test]
    fn table_size_update_bounded_by_advertised() {
        let mut d = HeaderDecoder::default();
        // Size update to 8192 (0x3f e1 3f), then an indexed field.
        let block = [0x3f, 0xe1, 0x3f, 0x82];
        assert_eq!(
            decode_all(&mut d, &block),
            Err(HpackError::Invalid("table-size"))
        );
        let mut d = HeaderDecoder::default();
        d.set_advertised_table_size(8192);
        assert!(decode_all(&mut d, &block).is_ok());
        let mut d = HeaderDecoder::default();
        d.set_advertised_table_size(u32::MAX);
        // 2^20 is over MAX_TABLE_SIZE.
        let block = [0x3f, 0xe1, 0xff, 0x3f, 0x82];
        assert_eq!(
            decode_all(&mut d, &block),
            Err(HpackError::Invalid("table-size"))
        );
        // After a field, or three in a row: invalid.
        assert_eq!(
            decode_all(&mut HeaderDecoder::default(), &[0x82, 0x20]),
            Err(HpackError::Invalid("size-update-position"))
        );
        assert_eq!(
            decode_all(&mut HeaderDecoder::default(), &[0x20, 0x20, 0x20, 0x82]),
            Err(HpackError::Invalid("size-update-position"))
        );
    }

    #[test]
    fn limits() {
        let many: Vec<u8> = std::iter::repeat_n(0x82, MAX_HEADERS_PER_BLOCK + 1).collect();
        assert_eq!(
            decode_all(&mut HeaderDecoder::default(), &many),
            Err(HpackError::TooManyFields)
        );
        let tiny_huffman: Vec<u8> = std::iter::repeat_n([0x00, 0x81, 0x1f, 0x81, 0x1f], 40)
            .flatten()
            .collect();
        assert_eq!(
            decode_all(&mut HeaderDecoder::default(), &tiny_huffman),
            Err(HpackError::Limit("huffman-strings"))
        );
        assert_eq!(
            decode_all(&mut HeaderDecoder::default(), &[0x80]),
            Err(HpackError::Invalid("index-zero"))
        );
        assert_eq!(
            decode_all(&mut HeaderDecoder::default(), &[0x00, 0x05, b'a']),
            Err(HpackError::Invalid("string"))
        );
        assert_eq!(
            decode_all(
                &mut HeaderDecoder::default(),
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
            ),
            Err(HpackError::Invalid("integer"))
        );
    }

    /// The slowest blocks the limits let through, timed (release: a few ms; debug: slower).
    #[test]
    fn worst_case_block_is_bounded() {
        // MAX_HUFFMAN_STRINGS tiny Huffman strings.
        let strings: Vec<u8> =
            std::iter::repeat_n([0x00, 0x81, 0x1f, 0x81, 0x1f], MAX_HUFFMAN_STRINGS / 2)
                .flatten()
                .collect();
        // One value of MAX_HUFFMAN_BYTES Huffman bytes: literal name "x", value length 8192.
        let mut bytes = vec![0x00, 0x01, b'x', 0xff, 0x81, 0x3f];
        bytes.extend(std::iter::repeat_n(0x1f, MAX_HUFFMAN_BYTES));
        for block in [strings, bytes] {
            let start = std::time::Instant::now();
            let r = decode_all(&mut HeaderDecoder::default(), &block);
            let took = start.elapsed();
            eprintln!("worst-case block of {} bytes: {took:?}", block.len());
            assert!(
                r.is_ok() || matches!(r, Err(HpackError::Invalid(_))),
                "{r:?}"
            );
            assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        }
    }

    #[test]
    fn encoder_output_decodes() {
        let block = encode(&[(b"content-type", b"application/grpc"), (b"te", b"trailers")]);
        let got = decode_all(&mut HeaderDecoder::default(), &block).unwrap();
        assert_eq!(got[0].1, b"application/grpc");
    }

    proptest::proptest! {
        #[test]
        fn random_blocks_never_panic(blocks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 1..4), size in proptest::prelude::any::<u32>()) {
            let mut d = HeaderDecoder::default();
            d.set_advertised_table_size(size);
            for b in &blocks {
                let mut total = 0usize;
                let _ = d.decode(b, |n, v| total += n.len() + v.len());
                // Decoded output per block is bounded: each field is at most a table entry
                // or its literal, and there are at most MAX_HEADERS_PER_BLOCK fields.
                proptest::prop_assert!(total <= MAX_HEADERS_PER_BLOCK * (MAX_TABLE_SIZE + 2 * b.len()));
            }
        }
    }
}
