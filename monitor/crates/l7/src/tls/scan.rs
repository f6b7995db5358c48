//! A streaming walk over one direction's TLS record layer, for byte accounting.

use super::MAX_RECORD_LEN;

/// Why a [`TlsRecordScanner`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStop {
    /// A record header with a content type outside 20-24.
    ContentType(u8),
    /// A record header whose version is not 0x0300-0x0304.
    Version(u16),
    /// A record header with a length over [`super::MAX_RECORD_LEN`].
    Length(u16),
    /// The caller reported missing bytes ([`TlsRecordScanner::gap`]).
    Gap,
}

impl ScanStop {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            ScanStop::ContentType(_) => "content-type",
            ScanStop::Version(_) => "record-version",
            ScanStop::Length(_) => "record-length",
            ScanStop::Gap => "gap",
        }
    }
}

/// Walks one direction's bytes, fed in order with arbitrary segment boundaries, as TLS
/// records: counts bytes in well-formed records (content types 20-24, versions 3.0-3.4,
/// lengths up to 2^14 + 2048) and, from the first byte where a record header is not
/// well-formed, counts every later byte as not TLS. Constant memory.
#[derive(Debug, Clone, Default)]
pub struct TlsRecordScanner {
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes left in the current record.
    remaining: usize,
    offset: u64,
    tls_bytes: u64,
    non_tls_bytes: u64,
    missing_bytes: u64,
    records: u64,
    by_type: [u64; 5],
    stop: Option<(u64, ScanStop)>,
}

impl TlsRecordScanner {
    /// A scanner at the start of a direction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the direction.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.stop.is_some() {
                self.non_tls_bytes += bytes.len() as u64;
                self.offset += bytes.len() as u64;
                return;
            }
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                self.remaining -= n;
                self.tls_bytes += n as u64;
                self.offset += n as u64;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            // Inside a record header.
            let n = (5 - self.header_len).min(bytes.len());
            if let (Some(dst), Some(src)) = (
                self.header.get_mut(self.header_len..self.header_len + n),
                bytes.get(..n),
            ) {
                dst.copy_from_slice(src);
            }
            self.header_len += n;
            self.offset += n as u64;
            bytes = bytes.get(n..).unwrap_or_default();
            if self.header_len == 5 {
                self.header_len = 0;
                self.check_header();
            }
        }
    }

    fn check_header(&mut self) {
        let [ctype, major, minor, l0, l1] = self.header;
        let version = u16::from_be_bytes([major, minor]);
        let len = u16::from_be_bytes([l0, l1]);
        let start = self.offset - 5;
        let stop = if !(20..=24).contains(&ctype) {
            Some(ScanStop::ContentType(ctype))
        } else if !(0x0300..=0x0304).contains(&version) {
            Some(ScanStop::Version(version))
        } else if usize::from(len) > MAX_RECORD_LEN {
            Some(ScanStop::Length(len))
        } else {
            None
        };
        match stop {
            Some(s) => {
                self.stop = Some((start, s));
                self.non_tls_bytes += 5;
            }
            None => {
                self.tls_bytes += 5;
                self.records += 1;
                if let Some(c) = self.by_type.get_mut(usize::from(ctype - 20)) {
                    *c += 1;
                }
                self.remaining = usize::from(len);
            }
        }
    }

    /// Reports `missing` bytes the capture lost at this point: record boundaries are no longer
    /// known, so the scanner stops here.
    pub fn gap(&mut self, missing: u64) {
        if self.stop.is_none() {
            self.non_tls_bytes += self.header_len as u64;
            self.header_len = 0;
            self.remaining = 0;
            self.stop = Some((self.offset, ScanStop::Gap));
        }
        self.missing_bytes += missing;
        self.offset += missing;
    }

    /// Bytes in well-formed records (headers and payloads) so far.
    pub fn tls_bytes(&self) -> u64 {
        self.tls_bytes
    }

    /// Bytes from the first byte that did not start a well-formed record on.
    pub fn non_tls_bytes(&self) -> u64 {
        self.non_tls_bytes
    }

    /// Bytes of a record header not yet complete (neither counted as TLS nor as not TLS).
    pub fn pending_bytes(&self) -> u64 {
        self.header_len as u64
    }

    /// Bytes reported missing with [`TlsRecordScanner::gap`].
    pub fn missing_bytes(&self) -> u64 {
        self.missing_bytes
    }

    /// Well-formed record headers seen.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Records seen of content type `20 + i` for `i` in 0..5 (change_cipher_spec, alert,
    /// handshake, application_data, heartbeat).
    pub fn records_by_type(&self) -> [u64; 5] {
        self.by_type
    }

    /// Where the scanner stopped (offset of the first byte not counted as TLS, from the start
    /// of the direction) and why; `None` while every byte was TLS.
    pub fn stopped(&self) -> Option<(u64, ScanStop)> {
        self.stop
    }

    /// Whether the scanner is between records (not inside a header or payload).
    pub fn at_record_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(segments: &[&[u8]]) -> TlsRecordScanner {
        let mut s = TlsRecordScanner::new();
        for seg in segments {
            s.feed(seg);
        }
        s
    }

    #[test]
    fn counts_records_across_any_split() {
        let mut stream = vec![22, 3, 1, 0, 3, 1, 2, 3, 20, 3, 3, 0, 1, 1];
        stream.extend_from_slice(&[23, 3, 3, 0, 4, 9, 9, 9, 9]);
        for cut in 0..=stream.len() {
            let s = scan(&[&stream[..cut], &stream[cut..]]);
            assert_eq!((s.tls_bytes(), s.non_tls_bytes(), s.records()), (23, 0, 3));
            assert_eq!(s.records_by_type(), [1, 0, 1, 1, 0]);
            assert!(s.at_record_boundary() && s.stopped().is_none());
        }
    }

    #[test]
    fn stops_at_first_non_tls_byte() {
        let mut stream = vec![23, 3, 3, 0, 2, 1, 1];
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let s = scan(&[&stream]);
        assert_eq!(s.stopped(), Some((7, ScanStop::ContentType(b'G'))));
        assert_eq!((s.tls_bytes(), s.non_tls_bytes()), (7, 16));
        let s = scan(&[&[23, 3, 9, 0, 1, 0]]);
        assert_eq!(s.stopped(), Some((0, ScanStop::Version(0x0309))));
        let s = scan(&[&[23, 3, 3, 0x48, 0x01, 0]]);
        assert_eq!(s.stopped().map(|s| s.1.code()), Some("record-length"));
        assert_eq!(s.non_tls_bytes(), 6);
    }

    #[test]
    fn gap_stops() {
        let mut s = scan(&[&[23, 3, 3, 0, 4, 1]]);
        s.gap(10);
        s.feed(&[1, 2, 3]);
        assert_eq!(s.stopped(), Some((6, ScanStop::Gap)));
        assert_eq!(
            (s.tls_bytes(), s.non_tls_bytes(), s.missing_bytes()),
            (6, 3, 10)
        );
    }

    proptest::proptest! {
        #[test]
        fn accounting_adds_up(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), cut in 0usize..300) {
            let cut = cut.min(bytes.len());
            let s = scan(&[&bytes[..cut], &bytes[cut..]]);
            let whole = scan(&[&bytes]);
            proptest::prop_assert_eq!(s.tls_bytes() + s.non_tls_bytes() + s.pending_bytes(), bytes.len() as u64);
            proptest::prop_assert_eq!((s.tls_bytes(), s.non_tls_bytes(), s.stopped()), (whole.tls_bytes(), whole.non_tls_bytes(), whole.stopped()));
        }
    }
}
