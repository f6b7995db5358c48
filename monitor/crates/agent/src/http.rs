//! HTTP/1.x head parsing with httparse: request and status lines, the headers the monitor
//! needs, and how long the body is declared to be.
//!
//! Input is whatever the kernel captured; it may be truncated (the head did not fit the
//! capture), partial (more segments to come), or not HTTP at all. `Authorization` and
//! `Cookie` values are never kept.

/// Headers parsed per head; a head with more is reported as [`HeadError::TooManyHeaders`].
const MAX_HEADERS: usize = 64;

/// Why bytes are not an HTTP head.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    /// httparse rejected the bytes.
    #[error("invalid HTTP head: {0}")]
    Invalid(httparse::Error),
    /// More than [`MAX_HEADERS`] header lines.
    #[error("HTTP head has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// `Content-Length: n`.
    Declared(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither header (request: no body; response: until the connection closes).
    Unspecified,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, as sent.
    pub method: String,
    /// Request target (origin-form path with query, or absolute-form), as sent.
    pub target: String,
    /// Minor version: `1` for HTTP/1.1.
    pub version: u8,
    /// `Host` header, if any.
    pub host: Option<String>,
    /// `x-forwarded-client-cert` (a service mesh sidecar's account of the caller's mTLS
    /// certificate), several header lines joined with `,`, if any. Only trusted on a
    /// connection from the pod's own sidecar.
    pub xfcc: Option<String>,
    /// Body delimitation.
    pub body: BodyLength,
    /// Head length in bytes, including the final CRLFCRLF (`None` if truncated).
    pub head_len: Option<usize>,
}

/// Name of the header in which a service mesh sidecar forwards the caller's certificate.
pub const XFCC: &str = "x-forwarded-client-cert";

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Minor version.
    pub version: u8,
    /// Body delimitation.
    pub body: BodyLength,
    /// Head length in bytes, including the final CRLFCRLF (`None` if truncated).
    pub head_len: Option<usize>,
}

/// Outcome of parsing possibly incomplete bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The whole head was present.
    Complete(T),
    /// The head is not finished; more bytes may complete it.
    Partial,
}

fn body_length(headers: &[httparse::Header<'_>]) -> BodyLength {
    let mut body = BodyLength::Unspecified;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked wins over Content-Length (RFC 9112 §6.3).
            if std::str::from_utf8(h.value)
                .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
            {
                return BodyLength::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("content-length")
            && let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
        {
            body = BodyLength::Declared(n);
        }
    }
    body
}

fn header(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
}

/// Every line of header `name`, joined with `,` (RFC 9110 §5.3), if any.
fn header_joined<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let first = values.next()?;
    let mut v = String::from_utf8_lossy(first).trim().to_owned();
    for more in values {
        v.push(',');
        v.push_str(String::from_utf8_lossy(more).trim());
    }
    Some(v)
}

/// Parses a request head from `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Parsed::Complete(RequestHead {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            version: req.version.unwrap_or(1),
            host: header(req.headers, "host"),
            xfcc: header_joined(
                req.headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(XFCC))
                    .map(|h| h.value),
            ),
            body: body_length(req.headers),
            head_len: Some(n),
        })),
        Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(e) => Err(HeadError::Invalid(e)),
    }
}

/// Parses as much of a truncated request head as is there: the request line, and `Host` and
/// `x-forwarded-client-cert` if they arrived whole. `None` if not even the request line is
/// complete.
pub fn parse_truncated_request(buf: &[u8]) -> Option<RequestHead> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return None,
    };
    if method.is_empty() || target.is_empty() || parts.next().is_some() {
        return None;
    }
    // Only header lines that ended before the truncation point are trusted.
    let complete = &buf[..buf
        .windows(2)
        .rposition(|w| w == b"\r\n")
        .unwrap_or(line_end)];
    let fields = || {
        complete
            .split(|&b| b == b'\n')
            .skip(1)
            .filter_map(|l| std::str::from_utf8(l).ok())
            .filter_map(|l| l.split_once(':'))
    };
    let host =
        fields().find_map(|(k, v)| k.eq_ignore_ascii_case("host").then(|| v.trim().to_owned()));
    let xfcc = header_joined(
        fields()
            .filter(|(k, _)| k.eq_ignore_ascii_case(XFCC))
            .map(|(_, v)| v.as_bytes()),
    );
    Some(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        host,
        xfcc,
        body: BodyLength::Unspecified,
        head_len: None,
    })
}

/// Parses a response head from `buf`.
pub fn parse_response(buf: &[u8]) -> Result<Parsed<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Parsed::Complete(ResponseHead {
            status: resp.code.unwrap_or_default(),
            version: resp.version.unwrap_or(1),
            body: body_length(resp.headers),
            head_len: Some(n),
        })),
        Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(e) => Err(HeadError::Invalid(e)),
    }
}

/// Parses the status line of a truncated response head.
pub fn parse_truncated_response(buf: &[u8]) -> Option<ResponseHead> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = match parts.next()? {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return None,
    };
    let status = parts.next()?.parse().ok()?;
    Some(ResponseHead {
        status,
        version,
        body: BodyLength::Unspecified,
        head_len: None,
    })
}

/// True if a response with this status to this method has no body (RFC 9112 §6.3).
pub fn response_has_no_body(method: &str, status: u16) -> bool {
    method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete<T>(p: Parsed<T>) -> T {
        match p {
            Parsed::Complete(t) => t,
            Parsed::Partial => panic!("expected a complete head"),
        }
    }

    #[test]
    fn request_with_query_and_host() {
        let raw =
            b"GET /internal/admin/v0/users/lookup?fields=ssn_last4,email&state=CA HTTP/1.1\r\n\
                    Host: svc-user-profile-service\r\nAccept: */*\r\n\r\n";
        let h = complete(parse_request(raw).unwrap());
        assert_eq!(h.method, "GET");
        assert_eq!(
            h.target,
            "/internal/admin/v0/users/lookup?fields=ssn_last4,email&state=CA"
        );
        assert_eq!(h.host.as_deref(), Some("svc-user-profile-service"));
        assert_eq!(h.body, BodyLength::Unspecified);
        assert_eq!(h.head_len, Some(raw.len()));
    }

    #[test]
    fn post_with_body_reports_head_length_not_body() {
        let raw = b"POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello";
        let h = complete(parse_request(raw).unwrap());
        assert_eq!(h.body, BodyLength::Declared(5));
        assert_eq!(h.head_len, Some(raw.len() - 5));
    }

    #[test]
    fn partial_head_asks_for_more() {
        assert_eq!(
            parse_request(b"GET /a HTTP/1.1\r\nHost: x\r\n").unwrap(),
            Parsed::Partial
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n").unwrap(),
            Parsed::Partial
        );
    }

    #[test]
    fn malformed_heads_are_errors_not_panics() {
        assert!(parse_request(b"GET /a HTTP/9.9\r\n\r\n").is_err());
        assert!(parse_request(b"GET /a b c HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"\x00\x01\x02\x03 garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").is_err());
    }

    #[test]
    fn too_many_headers_is_reported() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            raw.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&raw), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn forwarded_client_certificates_are_kept_whole_and_joined() {
        let p = complete(
            parse_request(
                b"GET / HTTP/1.1\r\nX-Forwarded-Client-Cert: By=a;URI=spiffe://td/ns/n/sa/s\r\n\
                  x-forwarded-client-cert: By=b\r\n\r\n",
            )
            .unwrap(),
        );
        assert_eq!(
            p.xfcc.as_deref(),
            Some("By=a;URI=spiffe://td/ns/n/sa/s,By=b")
        );
        assert_eq!(
            complete(parse_request(b"GET / HTTP/1.1\r\n\r\n").unwrap()).xfcc,
            None
        );
        // In a truncated head only a line that ended before the cut counts.
        let cut = parse_truncated_request(
            b"GET / HTTP/1.1\r\nx-forwarded-client-cert: URI=spiffe://td/ns/n/sa/s\r\nx-forwarded-client-cert: URI=spiff",
        )
        .unwrap();
        assert_eq!(cut.xfcc.as_deref(), Some("URI=spiffe://td/ns/n/sa/s"));
    }

    #[test]
    fn truncated_oversized_head_keeps_request_line_and_complete_headers() {
        let mut raw = b"GET /big?x=1 HTTP/1.1\r\nHost: web\r\nCookie: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 4000));
        raw.truncate(2048);
        assert_eq!(parse_request(&raw).unwrap(), Parsed::Partial);
        let h = parse_truncated_request(&raw).unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/big?x=1");
        assert_eq!(h.host.as_deref(), Some("web"));
        assert_eq!(h.head_len, None);
        // A request line cut short is not guessed at.
        assert!(parse_truncated_request(b"GET /only-part-of-the-li").is_none());
    }

    #[test]
    fn response_body_rules() {
        let h =
            complete(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9612\r\n\r\n").unwrap());
        assert_eq!((h.status, h.body), (200, BodyLength::Declared(9612)));
        let h = complete(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .unwrap(),
        );
        assert_eq!(h.body, BodyLength::Chunked);
        assert!(response_has_no_body("HEAD", 200));
        assert!(response_has_no_body("GET", 304));
        assert!(response_has_no_body("GET", 100));
        assert!(!response_has_no_body("GET", 200));
        assert_eq!(
            parse_truncated_response(b"HTTP/1.1 404 Not Found\r\nServer: ng").map(|h| h.status),
            Some(404)
        );
    }
}
