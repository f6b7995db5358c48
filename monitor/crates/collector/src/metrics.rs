//! The collector's Prometheus metrics, served on `--metrics-addr` like the agent's.

use std::sync::{Arc, atomic::AtomicI64};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Label: a sink's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// e.g. `ndjson:/var/log/monitor/records.ndjson`.
    pub sink: String,
}

/// Every metric the collector exports (names prefixed `monitor_collector_`).
#[derive(Debug)]
pub struct CollectorMetrics {
    registry: Registry,
    /// Records newly stored.
    pub stored: Counter,
    /// Records received again and dropped as duplicates.
    pub duplicates: Counter,
    /// Batches received.
    pub batches: Counter,
    /// Batches the store failed to commit (the agent resends them).
    pub store_errors: Counter,
    /// Agent streams open now.
    pub agents_connected: Gauge<i64, AtomicI64>,
    /// Sequence numbers skipped by an agent with no loss note (never expected).
    pub sequence_gaps: Counter,
    /// TLS handshakes refused or timed out.
    pub tls_handshake_failures: Counter,
    /// Records each sink delivered.
    pub sink_delivered: Family<SinkLabel, Counter>,
    /// Failed sink writes (each is retried).
    pub sink_errors: Family<SinkLabel, Counter>,
    /// Records stored but not yet delivered by each sink.
    pub sink_lag: Family<SinkLabel, Gauge<i64, AtomicI64>>,
}

impl CollectorMetrics {
    /// A registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("monitor_collector");
        let m = Self {
            stored: Counter::default(),
            duplicates: Counter::default(),
            batches: Counter::default(),
            store_errors: Counter::default(),
            agents_connected: Gauge::default(),
            tls_handshake_failures: Counter::default(),
            sequence_gaps: Counter::default(),
            sink_delivered: Family::default(),
            sink_errors: Family::default(),
            sink_lag: Family::default(),
            registry: Registry::default(),
        };
        registry.register("stored_records", "Records newly stored", m.stored.clone());
        registry.register(
            "duplicate_records",
            "Records received again (after an agent reconnect) and dropped",
            m.duplicates.clone(),
        );
        registry.register("batches", "Batches received from agents", m.batches.clone());
        registry.register(
            "store_errors",
            "Batches the store failed to commit; the agent keeps and resends them",
            m.store_errors.clone(),
        );
        registry.register(
            "agents_connected",
            "Agent delivery streams open now",
            m.agents_connected.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes refused (e.g. no or untrusted client certificate) or timed out",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "sequence_gap_records",
            "Records missing from an agent's sequence without a loss note (never expected)",
            m.sequence_gaps.clone(),
        );
        registry.register(
            "sink_delivered_records",
            "Records delivered by each sink",
            m.sink_delivered.clone(),
        );
        registry.register(
            "sink_errors",
            "Failed sink writes (each is retried; ingest never waits for a sink)",
            m.sink_errors.clone(),
        );
        registry.register(
            "sink_lag_records",
            "Records stored but not yet delivered by each sink (row-id distance: an upper bound)",
            m.sink_lag.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// Counts one stored batch.
    pub fn ingested(&self, stored: u64, duplicates: u64) {
        self.stored.inc_by(stored);
        self.duplicates.inc_by(duplicates);
    }
}

impl monitor_wire::exporter::Exporter for CollectorMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn health(&self) -> Result<&'static str, &'static str> {
        Ok("serving\n")
    }
}
