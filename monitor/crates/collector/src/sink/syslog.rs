//! The syslog sink: RFC 5424 messages carrying a CEF event (see [`super::cef`]), framed with
//! octet counting (`LEN SP SYSLOG-MSG`, RFC 5425 / RFC 6587) and sent over TLS (rustls) to a
//! receiver such as rsyslog, syslog-ng or a SIEM's syslog input.
//!
//! The message is `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - CEF:0|...`: PRI is
//! facility × 8 + severity (CEF severity 9-10 → 2 critical, 7-8 → 3 error, 5-6 → 4 warning,
//! 3-4 → 5 notice, else 6 informational); TIMESTAMP the record's time in UTC with microseconds
//! (RFC 5424 allows at most six fraction digits); HOSTNAME the node that observed the record;
//! APP-NAME `monitor`; PROCID the collector's PID; MSGID the record kind; no structured data.
//! Only the configured kinds are sent (default `violation` and `loss`); others count as
//! delivered.
//!
//! Connections are made lazily and re-made after any failure, with a bounded connect,
//! handshake and send timeout. Before each batch the connection is checked for a close by the
//! receiver, so a restarted receiver does not swallow a batch into a dead connection. TCP gives
//! no receipt: records written just before a connection broke can be lost or sent twice.

use std::{
    io::{self, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use super::{Sink, SinkError, SinkErrorKind, cef};
use monitor_record::stored::StoredRecord;

/// Default facility: local4.
pub const DEFAULT_FACILITY: u8 = 20;

/// Default kinds sent.
pub const DEFAULT_KINDS: &[&str] = &["violation", "loss"];

/// Default connect/handshake/send timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// APP-NAME and CEF device product.
pub const APP_NAME: &str = "monitor";

/// Syslog facility names (RFC 5424 §6.2.1 numbering).
pub const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("audit", 13),
    ("alert", 14),
    ("clock", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Where and how to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// Receiver, `host:port`.
    pub addr: String,
    /// PEM file with the CA certificate(s) the receiver's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate chain and private key (PEM), for receivers that require one.
    pub client: Option<(PathBuf, PathBuf)>,
    /// Name to verify the receiver's certificate against (default: the host of `addr`).
    pub server_name: Option<String>,
    /// Record kinds sent.
    pub kinds: Vec<String>,
    /// Facility number (0-23).
    pub facility: u8,
    /// Connect, handshake and send timeout.
    pub timeout: Duration,
    /// CEF device vendor.
    pub vendor: String,
}

impl SyslogConfig {
    /// Defaults for `addr` and `ca`: kinds violation and loss, local4, 5 s, vendor `monitor`.
    pub fn new(addr: impl Into<String>, ca: impl Into<PathBuf>) -> Self {
        Self {
            addr: addr.into(),
            ca: ca.into(),
            client: None,
            server_name: None,
            kinds: DEFAULT_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            facility: DEFAULT_FACILITY,
            timeout: DEFAULT_TIMEOUT,
            vendor: "monitor".to_owned(),
        }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn tls_file(what: &'static str, path: &Path, reason: impl ToString) -> SinkErrorKind {
    SinkErrorKind::TlsFile {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SinkErrorKind> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_file(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_file(what, path, e))?;
    if certs.is_empty() {
        return Err(tls_file(what, path, "no PEM CERTIFICATE found"));
    }
    Ok(certs)
}

/// The rustls client configuration for `cfg` (ring provider, TLS 1.2 and 1.3).
pub fn tls_config(cfg: &SyslogConfig) -> Result<ClientConfig, SinkErrorKind> {
    let mut roots = RootCertStore::empty();
    for c in load_certs("CA file", &cfg.ca)? {
        roots.add(c).map_err(|e| tls_file("CA file", &cfg.ca, e))?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(SinkErrorKind::TlsConfig)?
            .with_root_certificates(roots);
    match &cfg.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = load_certs("client certificate", cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| tls_file("client key", key, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(SinkErrorKind::TlsConfig)
        }
    }
}

/// Sends records as RFC 5424 / CEF over TLS.
pub struct SyslogSink {
    name: String,
    cfg: SyslogConfig,
    tls: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    conn: Option<StreamOwned<ClientConnection, TcpStream>>,
    procid: String,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("name", &self.name)
            .field("cfg", &self.cfg)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl SyslogSink {
    /// Loads the TLS material (failing early on a bad file); connects on the first write.
    pub fn new(cfg: SyslogConfig) -> Result<Self, SinkError> {
        let name = format!("syslog:{}", cfg.addr);
        let fail = |e| SinkError::new(&name, 0, e);
        let tls = tls_config(&cfg).map_err(fail)?;
        let sn = cfg
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(&cfg.addr).to_owned());
        let server_name =
            ServerName::try_from(sn.clone()).map_err(|_| fail(SinkErrorKind::ServerName(sn)))?;
        Ok(Self {
            name,
            cfg,
            tls: Arc::new(tls),
            server_name,
            conn: None,
            procid: std::process::id().to_string(),
        })
    }

    fn connect(&self) -> Result<StreamOwned<ClientConnection, TcpStream>, SinkErrorKind> {
        let addr = &self.cfg.addr;
        let connect_err = |source| SinkErrorKind::Connect {
            addr: addr.clone(),
            source,
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
        let mut sock = None;
        for a in addr.to_socket_addrs().map_err(connect_err)? {
            match TcpStream::connect_timeout(&a, self.cfg.timeout) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let sock = sock.ok_or_else(|| connect_err(last))?;
        let setup = sock
            .set_nodelay(true)
            .and_then(|()| sock.set_read_timeout(Some(self.cfg.timeout)))
            .and_then(|()| sock.set_write_timeout(Some(self.cfg.timeout)));
        setup.map_err(connect_err)?;
        let conn = ClientConnection::new(self.tls.clone(), self.server_name.clone())
            .map_err(SinkErrorKind::TlsConfig)?;
        let mut s = StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|source| SinkErrorKind::Handshake {
                    addr: addr.clone(),
                    source,
                })?;
        }
        Ok(s)
    }

    /// Whether the receiver has not closed the connection (it never sends us data, so
    /// anything readable means EOF, a close_notify or an alert).
    fn alive(s: &mut StreamOwned<ClientConnection, TcpStream>) -> bool {
        if s.sock.set_nonblocking(true).is_err() {
            return false;
        }
        let mut buf = [0u8; 256];
        let alive = loop {
            match s.read(&mut buf) {
                Ok(0) => break false,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(_) => break false,
            }
        };
        s.sock.set_nonblocking(false).is_ok() && alive
    }

    /// The framed message for one record.
    fn frame(&self, r: &StoredRecord) -> Vec<u8> {
        let ev = cef::event_of(r);
        let msg = rfc5424(
            self.cfg.facility,
            syslog_severity(ev.severity),
            r.time_ns,
            &r.node,
            APP_NAME,
            &self.procid,
            &r.kind,
            &ev.render(&self.cfg.vendor, APP_NAME, env!("CARGO_PKG_VERSION")),
        );
        octet_frame(&msg)
    }
}

impl Sink for SyslogSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, records: &[StoredRecord]) -> Result<(), SinkError> {
        if let Some(s) = self.conn.as_mut()
            && !Self::alive(s)
        {
            tracing::info!(sink = %self.name, "receiver closed the connection; reconnecting");
            self.conn = None;
        }
        for (i, r) in records.iter().enumerate() {
            if !self.cfg.kinds.contains(&r.kind) {
                continue;
            }
            let frame = self.frame(r);
            let s = match self.conn.as_mut() {
                Some(s) => s,
                None => {
                    let s = self
                        .connect()
                        .map_err(|e| SinkError::new(&self.name, i, e))?;
                    self.conn.insert(s)
                }
            };
            if let Err(source) = s.write_all(&frame).and_then(|()| s.flush()) {
                self.conn = None;
                let e = SinkErrorKind::Send {
                    addr: self.cfg.addr.clone(),
                    source,
                };
                return Err(SinkError::new(&self.name, i, e));
            }
        }
        Ok(())
    }
}

/// Syslog severity (RFC 5424 §6.2.1) of a CEF severity.
pub const fn syslog_severity(cef: u8) -> u8 {
    match cef {
        9.. => 2,
        7..=8 => 3,
        5..=6 => 4,
        3..=4 => 5,
        _ => 6,
    }
}

/// A header field: printable US-ASCII without spaces, at most `max` bytes; `-` if empty.
fn header_field(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// An RFC 5424 timestamp with microseconds, or `-` if out of range.
fn timestamp(time_ns: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ns))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "-".to_owned())
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG` (RFC 5424, no structured data).
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per RFC 5424 header field"
)]
pub fn rfc5424(
    facility: u8,
    severity: u8,
    time_ns: i64,
    hostname: &str,
    app_name: &str,
    procid: &str,
    msgid: &str,
    msg: &str,
) -> String {
    let pri = u16::from(facility.min(23)) * 8 + u16::from(severity.min(7));
    format!(
        "<{pri}>1 {} {} {} {} {} - {msg}",
        timestamp(time_ns),
        header_field(hostname, 255),
        header_field(app_name, 48),
        header_field(procid, 128),
        header_field(msgid, 32),
    )
}

/// Octet-counting framing (RFC 6587 §3.4.1, RFC 5425 §4.3): `LEN SP MSG`, LEN in bytes.
pub fn octet_frame(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sink::testdata, sink::testdata::BOOT, sink::testdata::stored};

    #[test]
    fn octet_counting_counts_bytes() {
        assert_eq!(
            octet_frame("<13>1 - - - - - - hi"),
            b"20 <13>1 - - - - - - hi"
        );
        assert_eq!(octet_frame("é"), "2 é".as_bytes());
    }

    #[test]
    fn loss_record_frame_is_byte_exact() {
        let r = stored(&testdata::loss(), 1, 9);
        let ev = cef::event_of(&r);
        let msg = rfc5424(
            DEFAULT_FACILITY,
            syslog_severity(ev.severity),
            r.time_ns,
            &r.node,
            APP_NAME,
            "4242",
            &r.kind,
            &ev.render("acme", APP_NAME, "0.1.0"),
        );
        let expected = format!(
            "<164>1 2026-11-22T06:22:52.775828Z vantage-node-1 monitor 4242 loss - \
             CEF:0|acme|monitor|0.1.0|loss|Records lost: ringbuf-full|5|rt=1795328572775 \
             externalId=vantage-node-1:{BOOT}:9 dvchost=vantage-node-1 cat=loss \
             cs1=ringbuf-full cs1Label=reason cs2=kernel cs2Label=stage cnt=17 \
             start=1795328571775 end=1795328572775 msg=17 lost at stage kernel (ringbuf-full)"
        );
        assert_eq!(msg, expected);
        let framed = octet_frame(&msg);
        let prefix = format!("{} ", expected.len());
        assert_eq!(&framed[..prefix.len()], prefix.as_bytes());
        assert_eq!(&framed[prefix.len()..], expected.as_bytes());
    }

    #[test]
    fn header_fields_are_printable_and_bounded() {
        let m = rfc5424(16, 7, 0, "node with space", "", "1", &"k".repeat(40), "x");
        assert_eq!(
            m,
            format!(
                "<135>1 1970-01-01T00:00:00.000000Z node_with_space - 1 {} - x",
                "k".repeat(32)
            )
        );
        assert_eq!(syslog_severity(10), 2);
        assert_eq!(syslog_severity(8), 3);
        assert_eq!(syslog_severity(5), 4);
        assert_eq!(syslog_severity(3), 5);
        assert_eq!(syslog_severity(1), 6);
    }

    #[test]
    fn bad_tls_files_fail_when_built() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let err = SyslogSink::new(SyslogConfig::new("127.0.0.1:6514", &ca)).unwrap_err();
        let text = err.kind.to_string();
        assert!(
            text.contains("CA file") && text.contains("ca.pem"),
            "{text}"
        );
        let missing = SyslogSink::new(SyslogConfig::new(
            "127.0.0.1:6514",
            dir.path().join("no.pem"),
        ))
        .unwrap_err();
        assert!(
            missing.kind.to_string().contains("no.pem"),
            "{}",
            missing.kind
        );
    }
}
