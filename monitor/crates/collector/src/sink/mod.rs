//! SIEM sinks: where the collector forwards the records it stored. Each sink is a thin mapping
//! of the same stored record (docs/records.md) to one destination format; a runner (in
//! [`crate`]) feeds every configured sink from the store in id order, on its own
//! thread, retrying from the first record a sink reports as not delivered.
//!
//! # Sink specifications (`--sink SPEC`, repeatable)
//!
//! A spec is `TYPE:OPTIONS`, options separated by `,` (so paths cannot contain `,`):
//!
//! | spec | what it writes |
//! |---|---|
//! | `ndjson:stdout` | each record's JSON as stored, one per line, on stdout |
//! | `ndjson:file=PATH[,max-bytes=SIZE][,keep=N][,fsync=on\|off]` | the same, appended to `PATH` |
//! | `ocsf:stdout` | each record mapped to an OCSF 1.3.0 event (see [`ocsf`]), one per line |
//! | `ocsf:file=PATH[,max-bytes=SIZE][,keep=N][,fsync=on\|off][,vendor=NAME]` | the same, to `PATH` |
//! | `syslog:tls=HOST:PORT,ca=PEM[,cert=PEM,key=PEM][,server-name=NAME][,kinds=K+K\|all][,facility=NAME][,timeout=DUR][,vendor=NAME]` | RFC 5424 messages carrying CEF over TLS, octet-counted (RFC 5425) |
//!
//! File options: `max-bytes` rotates the file before a line would make it larger than `SIZE`
//! (bytes, or with a `K`, `M` or `G` suffix, powers of 1024; default: never rotate); `keep` is how
//! many rotated files are kept (`PATH.1` newest ... `PATH.N`; default 5); `fsync=off` skips the
//! `fsync` done before a batch is reported written (default on).
//!
//! Syslog options: `ca` is the PEM file of the CA(s) that sign the receiver's certificate; `cert`
//! and `key` (both or neither) a client certificate chain and its private key for receivers that
//! require one; `server-name` the name checked against the receiver's certificate (default: the
//! host of `tls=`); `kinds` the record kinds sent, joined with `+` (`http`, `flow`, `loss`,
//! `violation`, `policy`, `quarantine`, or `all`; default `violation+loss`); `facility` the
//! syslog facility (`kern`, `user`, ..., `local0`..`local7`; default `local4`); `timeout` the
//! connect, handshake and send timeout (`500ms`, `5s`; default `5s`); `vendor` the CEF device
//! vendor (default `monitor`).
//!
//! Examples:
//! ```text
//! --sink ndjson:file=/var/log/monitor/records.ndjson,max-bytes=100M,keep=5
//! --sink ocsf:stdout
//! --sink syslog:tls=siem.example.com:6514,ca=/etc/monitor/siem-ca.pem,kinds=violation+loss+quarantine
//! ```
//!
//! # Delivery
//!
//! [`Sink::write`] returns `Ok` only once every record is handed over: written and flushed (and
//! `fsync`ed) for files, written to the TLS connection for syslog. On failure it says how many
//! records (a prefix of the batch) were delivered. File sinks deliver exactly once across
//! collector crashes: when opened they cut a torn partial last line, and
//! [`Sink::last_delivered`] reads the key of the last complete line, so the runner resumes after
//! it; a batch that starts at or before that record is trimmed of what the file already holds.
//! Syslog is at least once: TCP gives no receipt, so records written just before a connection
//! broke may be lost or, after a reconnect, sent again.
//!
//! Modules: [`spec`] (parsing and building specs), [`file`](mod@file) (line files with rotation and
//! recovery), [`ndjson`], [`ocsf`], [`cef`] (CEF events), [`syslog`] (RFC 5424 over TLS).

pub mod cef;
pub mod file;
pub mod ndjson;
pub mod ocsf;
pub mod spec;
pub mod syslog;
#[cfg(test)]
mod testdata;

use std::{fmt, io, path::PathBuf};

use monitor_record::stored::StoredRecord;

pub use spec::{SinkSpec, SinkSpecError};

/// A destination for stored records.
pub trait Sink: Send + fmt::Debug {
    /// What and where, e.g. `ndjson:/var/log/monitor/records.ndjson` (for logs and metrics).
    fn name(&self) -> &str;

    /// Delivers `records` in order. `Ok(())` means all were handed over (written and flushed,
    /// or sent). On `Err`, [`SinkError::delivered`] is how many of them (a prefix) were, so
    /// the caller retries from the first one that was not.
    fn write(&mut self, records: &[StoredRecord]) -> Result<(), SinkError>;

    /// The last record the destination already holds, if the sink can tell (file sinks: the
    /// key of the last complete line, after cutting a torn partial last line). Used after a
    /// crash so that nothing is written twice.
    fn last_delivered(&mut self) -> Result<Option<RecordKey>, SinkError> {
        Ok(None)
    }
}

/// Identity of a record across the system: agent incarnation and its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    /// Node that sent it.
    pub node: String,
    /// Agent incarnation.
    pub boot_id: String,
    /// Sequence number within (node, boot_id).
    pub seq: u64,
}

impl RecordKey {
    /// The key of a stored record.
    pub fn of(r: &StoredRecord) -> Self {
        Self {
            node: r.node.clone(),
            boot_id: r.boot_id.clone(),
            seq: r.seq,
        }
    }

    /// Whether `r` has this key (without allocating). Seq 0 is not a key: it is what every
    /// collector-made loss record has, so it matches nothing (a sink whose last line is one
    /// resumes from its saved cursor instead).
    pub fn matches(&self, r: &StoredRecord) -> bool {
        self.seq != 0 && self.seq == r.seq && self.node == r.node && self.boot_id == r.boot_id
    }

    /// Parses `<node>:<boot_id>:<seq>` (the form [`fmt::Display`] writes). The node may
    /// contain `:`; the boot id may not.
    pub fn parse_uid(s: &str) -> Option<Self> {
        let mut it = s.rsplitn(3, ':');
        let seq = it.next()?.parse().ok()?;
        let boot_id = it.next()?;
        let node = it.next()?;
        Some(Self {
            node: node.to_owned(),
            boot_id: boot_id.to_owned(),
            seq,
        })
    }
}

impl fmt::Display for RecordKey {
    /// `<node>:<boot_id>:<seq>`: the OCSF `metadata.uid` and CEF `externalId`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.node, self.boot_id, self.seq)
    }
}

/// `<node>:<boot_id>:<seq>` of a stored record.
pub(crate) fn uid_of(r: &StoredRecord) -> String {
    format!("{}:{}:{}", r.node, r.boot_id, r.seq)
}

/// A sink failed; `delivered` records of the batch (a prefix) were delivered first.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: failed after delivering {delivered} record(s) of the batch")]
pub struct SinkError {
    /// The sink's [`Sink::name`].
    pub sink: String,
    /// How many records of the batch were delivered before the failure.
    pub delivered: usize,
    /// What went wrong.
    #[source]
    pub kind: SinkErrorKind,
}

impl SinkError {
    /// An error of `sink` after `delivered` records.
    pub fn new(sink: &str, delivered: usize, kind: SinkErrorKind) -> Self {
        Self {
            sink: sink.to_owned(),
            delivered,
            kind,
        }
    }
}

/// What went wrong in a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkErrorKind {
    /// A file operation failed.
    #[error("cannot {action} {path} (check that the directory exists, is writable and has space)")]
    File {
        /// What was attempted (`open`, `write`, `fsync`, `rename`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing to stdout failed (e.g. the reading end of a pipe closed).
    #[error("cannot write to stdout")]
    Stdout(#[source] io::Error),
    /// The last complete line of a file is not a record this sink writes, so the sink cannot
    /// tell what the file already holds.
    #[error(
        "the last line of {path} is not a record this sink writes ({reason}); move the file \
         aside or point the sink at another file"
    )]
    ForeignLine {
        /// The file.
        path: PathBuf,
        /// Why it was not understood.
        reason: String,
    },
    /// A TLS file (CA, certificate or key) could not be used.
    #[error("cannot use {what} {path}: {reason}")]
    TlsFile {
        /// `CA file`, `client certificate` or `client key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS configuration was rejected.
    #[error("invalid TLS configuration")]
    TlsConfig(#[source] rustls::Error),
    /// The name to check the receiver's certificate against is not a DNS name or IP address.
    #[error("`{0}` is not a valid TLS server name (give server-name=NAME)")]
    ServerName(String),
    /// The receiver could not be reached.
    #[error("cannot connect to {addr} (is the receiver up and listening on that port?)")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (certificate not trusted, name mismatch, client certificate
    /// refused, ...).
    #[error("TLS handshake with {addr} failed")]
    Handshake {
        /// `host:port`.
        addr: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Sending over an established connection failed.
    #[error("cannot send to {addr} (connection lost; it will be re-established)")]
    Send {
        /// `host:port`.
        addr: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A short title for a violation rule id (OCSF `finding_info.title`, CEF name).
pub(crate) fn rule_title(rule: &str) -> String {
    match rule {
        "undocumented-endpoint" => "Undocumented endpoint called",
        "cross-service-internal" => "Internal endpoint called by a caller not allowed",
        "sensitive-fields" => "Sensitive fields in query",
        "egress-not-allowed" => "Egress to a destination not allowed",
        "quarantine-breach" => "Traffic of a quarantined pod",
        "response-size-anomaly" => "Response far larger than the baseline",
        "rate-anomaly" => "Request rate far above the baseline",
        "new-edge" => "New caller, destination and route",
        other => return format!("Policy violation: {other}"),
    }
    .to_owned()
}
