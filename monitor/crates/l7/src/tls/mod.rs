//! TLS as seen from outside: what a ClientHello says in the clear, and which bytes of a flow
//! are TLS records. Nothing is decrypted.
//!
//! Owns:
//! - [`parse_client_hello`] (`hello.rs`): the first bytes of a client → server flow, possibly
//!   only a prefix, the ClientHello possibly spread over several records, into a
//!   [`ClientHello`] (versions, SNI, ALPN, cipher suites, extension types) or a [`TlsError`]
//!   that says whether the bytes are not TLS, a prefix to wait on, or malformed (with a stable
//!   [`Malformed::code`]).
//! - [`IstioSni`] (`istio.rs`): Istio's `outbound_.<port>_.<subset>_.<fqdn>` server names.
//! - [`TlsRecordScanner`] (`scan.rs`): a streaming record-layer walker for one direction that
//!   counts bytes in well-formed records and stops at the first byte that is not.
//!
//! Bounds: a record payload is at most [`MAX_RECORD_LEN`] bytes, a ClientHello at most
//! [`MAX_CLIENT_HELLO_LEN`] bytes in at most [`MAX_HELLO_RECORDS`] records; the parser copies at
//! most one ClientHello (only when it spans records) and runs in time linear in its input.

mod hello;
mod istio;
mod scan;

pub use hello::{ClientHello, Malformed, TlsError, is_grease, parse_client_hello};
pub use istio::{IstioSni, IstioSniError};
pub use scan::{ScanStop, TlsRecordScanner};

/// Largest record payload accepted: 2^14 plaintext plus 2048 of expansion (RFC 5246 §6.2.3;
/// TLS 1.3 allows less).
pub const MAX_RECORD_LEN: usize = (1 << 14) + 2048;
/// Largest ClientHello handshake body accepted (post-quantum key shares make ~2 KiB common;
/// 64 KiB is the largest a 2-byte extensions length can describe).
pub const MAX_CLIENT_HELLO_LEN: usize = 1 << 16;
/// Records a ClientHello may be spread over.
pub const MAX_HELLO_RECORDS: usize = 16;
/// TLS record content type of handshake records.
pub const CONTENT_HANDSHAKE: u8 = 22;
