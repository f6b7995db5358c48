//! ClientHello parsing (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2, RFC 6066 §3, RFC 7301 §3.1).

use super::{CONTENT_HANDSHAKE, MAX_CLIENT_HELLO_LEN, MAX_HELLO_RECORDS, MAX_RECORD_LEN};

/// Handshake message type of a ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Extension types read here.
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
/// Extensions kept per ClientHello; more is [`Malformed::TooManyExtensions`].
const MAX_EXTENSIONS: usize = 128;
/// ALPN protocols kept per ClientHello; more is [`Malformed::Alpn`].
const MAX_ALPN: usize = 32;

/// What a ClientHello says in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Version in the first record's header (often 0x0301 for compatibility).
    pub record_version: u16,
    /// `legacy_version` in the ClientHello body (0x0303 for TLS 1.2 and 1.3 clients).
    pub client_version: u16,
    /// Highest version offered: the largest non-GREASE entry of `supported_versions` if the
    /// extension is present (TLS 1.3 = 0x0304), else `client_version`.
    pub highest_version: u16,
    /// `supported_versions` as sent (GREASE included), empty if absent.
    pub supported_versions: Vec<u16>,
    /// The `host_name` of the `server_name` extension, if present.
    pub sni: Option<String>,
    /// ALPN protocol names in the client's order (GREASE values left out), empty if absent.
    pub alpn: Vec<String>,
    /// Cipher suites as sent (GREASE included).
    pub cipher_suites: Vec<u16>,
    /// Extension types in the order sent (GREASE included).
    pub extensions: Vec<u16>,
    /// Length of the session id (32 for TLS 1.3 middlebox compatibility mode).
    pub session_id_len: u8,
    /// Records the ClientHello was spread over.
    pub records: usize,
    /// Bytes of the input up to the last byte of the ClientHello message (at most the input's
    /// length; its last record may hold more, or not be complete).
    pub consumed: usize,
}

/// Why the first bytes of a flow are not a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// Not a TLS handshake record: the first byte is not 0x16, or the record version is not 3.x.
    #[error("not a TLS handshake")]
    NotTls,
    /// A prefix of what could be a ClientHello: `need` is a lower bound of the input length
    /// that could complete it (the caller may wait for more bytes).
    #[error("incomplete ClientHello: have {have} bytes, need at least {need}")]
    Incomplete {
        /// Bytes given.
        have: usize,
        /// At least this many bytes are needed.
        need: usize,
    },
    /// A TLS handshake, but not a well-formed ClientHello.
    #[error("malformed ClientHello: {0}")]
    Malformed(Malformed),
}

/// What is wrong with a ClientHello; [`Malformed::code`] is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.code())]
pub enum Malformed {
    /// A record of length 0 or over [`super::MAX_RECORD_LEN`].
    RecordLength,
    /// A later record's version is not 3.x.
    RecordVersion,
    /// A non-handshake record before the ClientHello was complete.
    InterleavedRecord,
    /// More than [`super::MAX_HELLO_RECORDS`] records.
    TooManyRecords,
    /// The first handshake message is not a ClientHello.
    NotClientHello,
    /// The handshake length is over [`super::MAX_CLIENT_HELLO_LEN`].
    HandshakeLength,
    /// A length field runs past the end of what contains it.
    Truncated,
    /// `legacy_version` is not 3.x.
    ClientVersion,
    /// Session id over 32 bytes.
    SessionId,
    /// Cipher suite list empty or of odd length.
    CipherSuites,
    /// Compression method list empty.
    Compression,
    /// The extensions length does not match the bytes left in the ClientHello.
    ExtensionsLength,
    /// The same extension type twice.
    DuplicateExtension,
    /// More than 128 extensions.
    TooManyExtensions,
    /// `server_name` malformed, not exactly one `host_name`, or a name that is not a DNS name
    /// (1 to 255 bytes of letters, digits, `-`, `_`, `.`).
    ServerName,
    /// ALPN list malformed, an empty or non-printable protocol name, or more than 32 names.
    Alpn,
    /// `supported_versions` malformed or offering only GREASE.
    SupportedVersions,
}

impl Malformed {
    /// Stable reason code (kebab-case), for records and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Malformed::RecordLength => "record-length",
            Malformed::RecordVersion => "record-version",
            Malformed::InterleavedRecord => "interleaved-record",
            Malformed::TooManyRecords => "too-many-records",
            Malformed::NotClientHello => "not-client-hello",
            Malformed::HandshakeLength => "handshake-length",
            Malformed::Truncated => "truncated-field",
            Malformed::ClientVersion => "client-version",
            Malformed::SessionId => "session-id",
            Malformed::CipherSuites => "cipher-suites",
            Malformed::Compression => "compression",
            Malformed::ExtensionsLength => "extensions-length",
            Malformed::DuplicateExtension => "duplicate-extension",
            Malformed::TooManyExtensions => "too-many-extensions",
            Malformed::ServerName => "server-name",
            Malformed::Alpn => "alpn",
            Malformed::SupportedVersions => "supported-versions",
        }
    }
}

impl From<Malformed> for TlsError {
    fn from(m: Malformed) -> Self {
        TlsError::Malformed(m)
    }
}

/// GREASE values (RFC 8701): 0x0a0a, 0x1a1a, … 0xfafa, used in cipher suites, extension
/// types, versions and groups.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 12) == ((v >> 4) & 0x0f)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

/// Parses the ClientHello at the start of `first_bytes`, the first bytes a client sent on a
/// flow. `first_bytes` may be a prefix ([`TlsError::Incomplete`]); bytes after the ClientHello
/// are ignored.
pub fn parse_client_hello(first_bytes: &[u8]) -> Result<ClientHello, TlsError> {
    let have = first_bytes.len();
    match first_bytes.first() {
        None => return Err(TlsError::Incomplete { have, need: 1 }),
        Some(&CONTENT_HANDSHAKE) => {}
        Some(_) => return Err(TlsError::NotTls),
    }
    if first_bytes.get(1).is_some_and(|&major| major != 3) {
        return Err(TlsError::NotTls);
    }
    // The handshake message, gathered from the records' payloads. Borrowed when one record
    // holds it (the usual case), copied when it spans records.
    let mut gathered: Vec<u8> = Vec::new();
    let mut single: Option<&[u8]> = None;
    let mut off = 0usize;
    let mut records = 0usize;
    let mut record_version = 0u16;
    loop {
        let Some(header) = first_bytes.get(off..off + 5) else {
            return Err(TlsError::Incomplete {
                have,
                need: off + 5,
            });
        };
        let (ctype, version, len) = match (header.first(), be16(header, 1), be16(header, 3)) {
            (Some(&c), Some(v), Some(l)) => (c, v, usize::from(l)),
            _ => return Err(Malformed::Truncated.into()),
        };
        if ctype != CONTENT_HANDSHAKE {
            return Err(Malformed::InterleavedRecord.into());
        }
        if version >> 8 != 3 {
            return Err(Malformed::RecordVersion.into());
        }
        if len == 0 || len > MAX_RECORD_LEN {
            return Err(Malformed::RecordLength.into());
        }
        records += 1;
        if records > MAX_HELLO_RECORDS {
            return Err(Malformed::TooManyRecords.into());
        }
        if records == 1 {
            record_version = version;
        }
        let start = off + 5;
        let end = start + len;
        let avail = first_bytes.get(start..end.min(have)).unwrap_or_default();
        // Bytes of the handshake message so far, including this record's.
        let so_far = if records == 1 && avail.len() == len {
            single = Some(avail);
            avail
        } else {
            if let Some(s) = single.take() {
                gathered.extend_from_slice(s);
            }
            gathered.extend_from_slice(avail);
            gathered.as_slice()
        };
        if let Some(&t) = so_far.first()
            && t != HANDSHAKE_CLIENT_HELLO
        {
            return Err(Malformed::NotClientHello.into());
        }
        let total = match so_far.get(1..4) {
            Some(&[a, b, c]) => {
                let body = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                if body > MAX_CLIENT_HELLO_LEN {
                    return Err(Malformed::HandshakeLength.into());
                }
                Some(4 + body)
            }
            _ => None,
        };
        if let Some(total) = total
            && so_far.len() >= total
        {
            let body = so_far.get(4..total).ok_or(Malformed::Truncated)?;
            let mut hello = parse_body(body)?;
            hello.record_version = record_version;
            hello.records = records;
            // Where the message ends in this record (the record itself may go on, and may
            // not even be complete in the input).
            let before_this_record = so_far.len() - avail.len();
            hello.consumed = start + (total - before_this_record);
            return Ok(hello);
        }
        if have < end {
            // Mid-record: the rest of this record, and of the message, is still to come.
            let missing_here = end - have;
            let remaining = total.map_or(4 - so_far.len().min(4), |t| t - so_far.len());
            let need = if remaining <= missing_here {
                have + remaining
            } else {
                end + 5 + (remaining - missing_here)
            };
            return Err(TlsError::Incomplete { have, need });
        }
        // The record is complete but the message is not: it continues in the next record.
        if gathered.len() > MAX_CLIENT_HELLO_LEN + 4 {
            return Err(Malformed::HandshakeLength.into());
        }
        off = end;
    }
}

/// A cursor over a ClientHello body; every read is checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let (head, rest) = self.buf.split_at_checked(n).ok_or(Malformed::Truncated)?;
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        self.take(1)?.first().copied().ok_or(Malformed::Truncated)
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        be16(self.take(2)?, 0).ok_or(Malformed::Truncated)
    }
    /// A vector with a 1-byte length.
    fn vec8(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a 2-byte length.
    fn vec16(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn parse_body(body: &[u8]) -> Result<ClientHello, Malformed> {
    let mut r = Reader { buf: body };
    let client_version = r.u16()?;
    if client_version >> 8 != 3 {
        return Err(Malformed::ClientVersion);
    }
    r.take(32)?; // random
    let session_id = r.vec8()?;
    if session_id.len() > 32 {
        return Err(Malformed::SessionId);
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Malformed::CipherSuites);
    }
    let cipher_suites = suites.chunks_exact(2).filter_map(|c| be16(c, 0)).collect();
    if r.vec8()?.is_empty() {
        return Err(Malformed::Compression);
    }
    let mut hello = ClientHello {
        record_version: 0,
        client_version,
        highest_version: client_version,
        supported_versions: Vec::new(),
        sni: None,
        alpn: Vec::new(),
        cipher_suites,
        extensions: Vec::new(),
        session_id_len: u8::try_from(session_id.len()).map_err(|_| Malformed::SessionId)?,
        records: 0,
        consumed: 0,
    };
    if r.is_empty() {
        // No extensions at all (SSL 3.0-style ClientHello).
        return Ok(hello);
    }
    let exts = r.vec16().map_err(|_| Malformed::ExtensionsLength)?;
    if !r.is_empty() {
        return Err(Malformed::ExtensionsLength);
    }
    let mut r = Reader { buf: exts };
    while !r.is_empty() {
        let ty = r.u16()?;
        let data = r.vec16()?;
        if hello.extensions.contains(&ty) {
            return Err(Malformed::DuplicateExtension);
        }
        if hello.extensions.len() >= MAX_EXTENSIONS {
            return Err(Malformed::TooManyExtensions);
        }
        hello.extensions.push(ty);
        match ty {
            EXT_SERVER_NAME => hello.sni = Some(server_name(data)?),
            EXT_ALPN => hello.alpn = alpn(data)?,
            EXT_SUPPORTED_VERSIONS => {
                let list = Reader { buf: data }
                    .vec8()
                    .map_err(|_| Malformed::SupportedVersions)?;
                if list.is_empty() || list.len() % 2 != 0 || list.len() + 1 != data.len() {
                    return Err(Malformed::SupportedVersions);
                }
                hello.supported_versions =
                    list.chunks_exact(2).filter_map(|c| be16(c, 0)).collect();
                hello.highest_version = hello
                    .supported_versions
                    .iter()
                    .copied()
                    .filter(|&v| !is_grease(v))
                    .max()
                    .ok_or(Malformed::SupportedVersions)?;
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// `server_name` (RFC 6066 §3): exactly one `host_name`, a DNS name.
fn server_name(data: &[u8]) -> Result<String, Malformed> {
    let mut outer = Reader { buf: data };
    let list = outer.vec16().map_err(|_| Malformed::ServerName)?;
    if !outer.is_empty() {
        return Err(Malformed::ServerName);
    }
    let mut r = Reader { buf: list };
    let name_type = r.u8().map_err(|_| Malformed::ServerName)?;
    let name = r.vec16().map_err(|_| Malformed::ServerName)?;
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if name_type != 0
        || !r.is_empty()
        || name.is_empty()
        || name.len() > 255
        || !name.iter().all(valid)
    {
        return Err(Malformed::ServerName);
    }
    // All bytes are ASCII (checked above).
    String::from_utf8(name.to_vec()).map_err(|_| Malformed::ServerName)
}

/// ALPN (RFC 7301 §3.1): non-empty printable protocol names; GREASE values are skipped.
fn alpn(data: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut outer = Reader { buf: data };
    let list = outer.vec16().map_err(|_| Malformed::Alpn)?;
    if !outer.is_empty() || list.is_empty() {
        return Err(Malformed::Alpn);
    }
    let mut r = Reader { buf: list };
    let mut out = Vec::new();
    while !r.is_empty() {
        let name = r.vec8().map_err(|_| Malformed::Alpn)?;
        if let [a, b] = name
            && is_grease(u16::from_be_bytes([*a, *b]))
        {
            continue;
        }
        if name.is_empty()
            || !name.iter().all(|b| (0x21..0x7f).contains(b))
            || out.len() >= MAX_ALPN
        {
            return Err(Malformed::Alpn);
        }
        out.push(String::from_utf8(name.to_vec()).map_err(|_| Malformed::Alpn)?);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a ClientHello handshake message (type + length + body).
    pub(crate) fn hello_message(sni: Option<&str>, alpn: &[&str], versions: &[u16]) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let n = name.as_bytes();
            let mut d = Vec::new();
            d.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
            d.push(0);
            d.extend_from_slice(&(n.len() as u16).to_be_bytes());
            d.extend_from_slice(n);
            push_ext(&mut exts, EXT_SERVER_NAME, &d);
        }
        push_ext(&mut exts, 0x0a0a, &[]); // GREASE
        if !alpn.is_empty() {
            let mut l = Vec::new();
            for p in alpn {
                l.push(p.len() as u8);
                l.extend_from_slice(p.as_bytes());
            }
            let mut d = (l.len() as u16).to_be_bytes().to_vec();
            d.extend_from_slice(&l);
            push_ext(&mut exts, EXT_ALPN, &d);
        }
        if !versions.is_empty() {
            let mut d = vec![(versions.len() * 2) as u8];
            for v in versions {
                d.extend_from_slice(&v.to_be_bytes());
            }
            push_ext(&mut exts, EXT_SUPPORTED_VERSIONS, &d);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(32);
        body.extend_from_slice(&[9; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0xca, 0xca]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend_from_slice(&body);
        msg
    }

    fn push_ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }

    /// Frames a handshake message into records of at most `max` payload bytes each.
    pub(crate) fn records(msg: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, chunk) in msg.chunks(max).enumerate() {
            out.push(22);
            out.extend_from_slice(if i == 0 { &[3, 1] } else { &[3, 3] });
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn parses_sni_alpn_versions() {
        let msg = hello_message(
            Some("api.stripe.com"),
            &["h2", "http/1.1"],
            &[0x1a1a, 0x0304, 0x0303],
        );
        let bytes = records(&msg, 1 << 14);
        let h = parse_client_hello(&bytes).unwrap();
        assert_eq!(h.sni.as_deref(), Some("api.stripe.com"));
        assert_eq!(h.alpn, ["h2", "http/1.1"]);
        assert_eq!(
            (h.record_version, h.client_version, h.highest_version),
            (0x0301, 0x0303, 0x0304)
        );
        assert_eq!(h.cipher_suites, [0x1301, 0xcaca]);
        assert_eq!(h.extensions, [0, 0x0a0a, 16, 43]);
        assert_eq!(
            (h.records, h.consumed, h.session_id_len),
            (1, bytes.len(), 32)
        );
    }

    #[test]
    fn no_supported_versions_means_client_version() {
        let bytes = records(&hello_message(None, &[], &[]), 1 << 14);
        let h = parse_client_hello(&bytes).unwrap();
        assert_eq!((h.sni, h.highest_version), (None, 0x0303));
        assert!(h.alpn.is_empty());
    }

    #[test]
    fn spans_records() {
        let msg = hello_message(Some("a.example"), &["h2"], &[0x0304]);
        for max in [1, 2, 3, 4, 5, 50, msg.len() - 1] {
            let bytes = records(&msg, max);
            if msg.len().div_ceil(max) > MAX_HELLO_RECORDS {
                assert_eq!(
                    parse_client_hello(&bytes),
                    Err(Malformed::TooManyRecords.into())
                );
                continue;
            }
            let h = parse_client_hello(&bytes).unwrap();
            assert_eq!(h.sni.as_deref(), Some("a.example"));
            assert_eq!(h.records, msg.len().div_ceil(max));
            assert_eq!(h.consumed, bytes.len());
        }
    }

    #[test]
    fn every_prefix_is_incomplete_with_a_true_lower_bound() {
        let msg = hello_message(Some("a.example"), &["h2"], &[0x0304]);
        for max in [msg.len(), msg.len() / 2 + 1, 30] {
            let bytes = records(&msg, max);
            for cut in 0..bytes.len() {
                match parse_client_hello(&bytes[..cut]) {
                    Err(TlsError::Incomplete { have, need }) => {
                        assert_eq!(have, cut);
                        assert!(need > cut && need <= bytes.len(), "cut {cut} need {need}");
                    }
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn not_tls() {
        assert_eq!(
            parse_client_hello(b"GET / HTTP/1.1\r\n"),
            Err(TlsError::NotTls)
        );
        assert_eq!(parse_client_hello(b"PRI * HTTP/2.0"), Err(TlsError::NotTls));
        assert_eq!(parse_client_hello(&[0x16, 0x04, 0]), Err(TlsError::NotTls));
        assert_eq!(
            parse_client_hello(&[]),
            Err(TlsError::Incomplete { have: 0, need: 1 })
        );
    }

    #[test]
    fn malformed_reasons() {
        let good = hello_message(Some("a.example"), &["h2"], &[0x0304]);
        let rec = |m: &[u8]| records(m, 1 << 14);
        let code = |b: &[u8]| match parse_client_hello(b) {
            Err(TlsError::Malformed(m)) => m.code(),
            other => panic!("{other:?}"),
        };
        // Not a ClientHello (ServerHello type).
        let mut m = good.clone();
        m[0] = 2;
        assert_eq!(code(&rec(&m)), "not-client-hello");
        // Handshake length over the cap.
        assert_eq!(code(&[22, 3, 1, 0, 4, 1, 0x02, 0, 0]), "handshake-length");
        // Zero-length record.
        assert_eq!(code(&[22, 3, 1, 0, 0]), "record-length");
        // Alert record in the middle.
        let mut two = records(&good, 10);
        two[15] = 21;
        assert_eq!(code(&two), "interleaved-record");
        // Bad SNI characters.
        let m = hello_message(Some("evil\u{0}.com"), &[], &[]);
        assert_eq!(code(&rec(&m)), "server-name");
        // Empty ALPN name.
        let m = hello_message(None, &[""], &[]);
        assert_eq!(code(&rec(&m)), "alpn");
        // Only GREASE versions.
        let m = hello_message(None, &[], &[0x2a2a]);
        assert_eq!(code(&rec(&m)), "supported-versions");
        // Extensions length one byte short.
        let mut m = good.clone();
        let at = 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2;
        m[at + 1] -= 1;
        assert_eq!(code(&rec(&m)), "extensions-length");
        // Duplicate extension: the GREASE extension twice.
        let mut m = good.clone();
        let ext_at = at + 2;
        let sni_len = usize::from(u16::from_be_bytes([m[ext_at + 2], m[ext_at + 3]]));
        let grease_at = ext_at + 4 + sni_len;
        m.splice(grease_at..grease_at, [0x0a, 0x0a, 0, 0]);
        let body_len = m.len() - 4;
        m[2] = (body_len >> 8) as u8;
        m[3] = body_len as u8;
        let ext_len = u16::from_be_bytes([m[at], m[at + 1]]) + 4;
        m[at..at + 2].copy_from_slice(&ext_len.to_be_bytes());
        assert_eq!(code(&rec(&m)), "duplicate-extension");
    }

    /// Fuzzing found `consumed` past the input when the ClientHello was complete but its record
    /// claimed more bytes than were there (`cargo fuzz run tls_client_hello`).
    #[test]
    fn regression_consumed_within_input() {
        let input =
            include_bytes!("../../tests/fuzz-regressions/tls_client_hello-consumed-past-input");
        if let Ok(h) = parse_client_hello(input) {
            assert!(h.consumed <= input.len());
        }
        let msg = hello_message(Some("a.example"), &[], &[]);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&((msg.len() + 100) as u16).to_be_bytes());
        rec.extend_from_slice(&msg);
        let h = parse_client_hello(&rec).unwrap();
        assert_eq!(h.consumed, rec.len());
        // Trailing bytes in the record after the message are not counted.
        let mut rec = records(&msg, 1 << 14);
        rec[4] += 3;
        rec.extend_from_slice(&[0; 3]);
        assert_eq!(parse_client_hello(&rec).unwrap().consumed, rec.len() - 3);
    }

    #[test]
    fn grease() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
        assert!(!is_grease(0x0a1a) && !is_grease(0x0304) && !is_grease(0x1301));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_client_hello(&bytes);
            let mut tls = vec![22, 3, 1];
            tls.extend_from_slice(&bytes);
            let _ = parse_client_hello(&tls);
        }

        #[test]
        fn mutated_hellos_never_panic(pos in 0usize..400, val in proptest::prelude::any::<u8>(), max in 1usize..400) {
            let mut msg = hello_message(Some("x.example"), &["h2", "http/1.1"], &[0x0304]);
            let at = pos % msg.len();
            msg[at] = val;
            let _ = parse_client_hello(&records(&msg, max));
        }
    }
}
