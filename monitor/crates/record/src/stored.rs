//! A record as the collector stores it: what sinks write and Observe streams.

/// One record as stored by the collector: what sinks write and Observe streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Row id in the store; increases with storage order (sinks keep a cursor on it).
    pub id: i64,
    /// Node that sent it.
    pub node: String,
    /// Agent incarnation (see `Batch.boot_id` in proto/monitor.proto).
    pub boot_id: String,
    /// Sequence number within (node, boot_id); 0 for loss records the collector made from an
    /// in-band `LostRecords` message.
    pub seq: u64,
    /// `http`, `flow`, `loss`, `violation`, `policy`, `quarantine`.
    pub kind: String,
    /// When it happened (the JSON's `time`), Unix ns.
    pub time_ns: i64,
    /// The record as one JSON object (docs/records.md), no trailing newline.
    pub json: String,
}
