//! The monitor's vocabulary: the records the agent writes and the collector stores, the
//! identities they name, violations, query helpers and time. No I/O and no other workspace
//! crate: every other part of the monitor speaks these types (docs/records.md is their
//! documentation for consumers).
//!
//! - [`record`]: output records (`http`, `flow`, `loss`, `violation`, `policy`, `quarantine`)
//!   and the [`record::Endpoint`] each side of an exchange is written as.
//! - [`endpoint`]: how each side of an exchange is written ([`endpoint::Endpoint`]).
//! - [`peer`]: who a peer is ([`peer::Pod`], [`peer::PeerKind`]).
//! - [`exchange`]: which end observed an exchange and how it ended.
//! - [`violation`]: the violation record, rule ids and severities.
//! - [`query`]: query-string splitting, decoding and redaction.
//! - [`stored`]: a record as the collector stores it.
//! - [`inventory`]: the static inventory file's schema (agent and lab).
//! - [`time`]: RFC 3339 text and Unix nanoseconds.

pub mod endpoint;
pub mod exchange;
pub mod inventory;
pub mod peer;
pub mod query;
pub mod record;
pub mod stored;
pub mod time;
pub mod violation;
