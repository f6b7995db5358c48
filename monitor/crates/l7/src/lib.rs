//! Protocol parsers for the monitor's captured payload bytes: pure functions and state
//! machines, no I/O, no clocks, no threads.
//!
//! The client side of every exchange is written by the adversary (a backdoored pod), so every
//! parser here is bounded in memory and in time per input byte, never panics, and reports what
//! it could not parse as an explicit error or desync with a stable reason code rather than
//! guessing.
//!
//! - [`tls`]: ClientHello metadata (SNI, ALPN, versions) without decryption, Istio's
//!   `outbound_.<port>_.<subset>_.<fqdn>` SNI, and a streaming TLS record scanner for per-flow
//!   byte accounting.
//! - [`h2`]: HTTP/2 (h2c, prior knowledge or after an HTTP/1 `Upgrade`) and gRPC: a
//!   per-connection decoder fed each direction's bytes, emitting per-stream events.

pub mod h2;
pub mod tls;

/// Appends `bytes` to `out` as printable text: printable ASCII as is, everything else (and
/// `\`) as `\xNN`, so nothing is lost or guessed. At most `max` input bytes are rendered;
/// returns `true` if `bytes` was longer (the text was cut).
pub(crate) fn push_escaped(out: &mut String, bytes: &[u8], max: usize) -> bool {
    for &b in bytes.iter().take(max) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\x");
            for nibble in [b >> 4, b & 0x0f] {
                out.push(HEX.get(usize::from(nibble)).map_or('0', |&h| char::from(h)));
            }
        }
    }
    bytes.len() > max
}

/// [`push_escaped`] into a new string.
pub(crate) fn escaped(bytes: &[u8], max: usize) -> (String, bool) {
    let mut s = String::with_capacity(bytes.len().min(max));
    let cut = push_escaped(&mut s, bytes, max);
    (s, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_lossless_and_bounded() {
        assert_eq!(escaped(b"/a?b=1", 64), ("/a?b=1".to_owned(), false));
        assert_eq!(
            escaped(b"a\\b\x00\xff", 64),
            ("a\\x5cb\\x00\\xff".to_owned(), false)
        );
        assert_eq!(escaped(b"abcdef", 3), ("abc".to_owned(), true));
    }
}
