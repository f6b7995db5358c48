//! The collector (`monitor collector`): the gRPC server agents deliver to over mTLS, the
//! embedded store, the SIEM sinks fed from it, and the Observe and Report services.
//!
//! - [`server`]: the gRPC services (Ingest, Observe, Report) and the store's writer thread.
//! - [`store`]: SQLite (WAL) store: dedup by (node, boot, seq), watermarks, retention, queries.
//! - [`report`]: the forensic figures of `monitor report`, computed from the store.
//! - [`sinks`]: runs each SIEM sink on its own thread, fed from the store by its cursor.
//! - [`metrics`]: the collector's Prometheus metrics.
//! - [`sink`]: the SIEM sinks (one thin mapping each: NDJSON, OCSF, syslog/CEF).
//!
//! Depends on the vocabulary and the wire only: never on the agent or the policy.

pub mod metrics;
pub mod report;
pub mod server;
pub mod sinks;
pub mod store;

pub mod sink;

pub use monitor_record::stored::StoredRecord;
