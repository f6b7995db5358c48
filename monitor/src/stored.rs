//! The parts of stored `http` and `flow` records that the offline tools read back (policy
//! dry-run and policy suggest): the two endpoints as the agent wrote them, and the exchange's
//! fields that policy evaluation needs. Fields the tools do not use are ignored.

use monitor_record::record::Endpoint;
use serde::Deserialize;

/// A stored `http` record.
#[derive(Debug, Deserialize)]
pub struct StoredHttp {
    /// The caller.
    pub source: Endpoint,
    /// The called side.
    pub destination: Endpoint,
    /// The exchange.
    pub http: StoredHttpFields,
}

/// The `http` part of a stored `http` record.
#[derive(Debug, Deserialize)]
pub struct StoredHttpFields {
    /// Request method.
    pub method: String,
    /// Request target as sent (redacted query).
    pub target: String,
    /// Path part of the target (absent in records of older agents).
    pub path: Option<String>,
    /// Response status.
    pub status: Option<u16>,
    /// Request body bytes.
    pub request_body_bytes: Option<u64>,
    /// Response body bytes.
    pub response_body_bytes: Option<u64>,
}

/// A stored `flow` record.
#[derive(Debug, Deserialize)]
pub struct StoredFlow {
    /// The local end's peer on the client side.
    pub source: Endpoint,
    /// The server side.
    pub destination: Endpoint,
    /// HTTP exchanges seen on the flow.
    pub http_exchanges: u64,
}
