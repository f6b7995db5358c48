//! The agent's Prometheus metrics (prometheus-client), served by
//! [`monitor_wire::exporter::serve`] with a health check (`GET /healthz`: 200 once the
//! programs are attached, 503 before).

use std::sync::{Arc, atomic::AtomicI64};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Label: record kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `http`, `flow`, `violation`, ...
    pub kind: &'static str,
}

/// Labels: where data was lost and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LossLabel {
    /// `kernel` or `agent`.
    pub stage: String,
    /// Stable reason (`ringbuf-full`, ...).
    pub reason: String,
}

/// Label: outcome of a policy reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `failed`.
    pub result: String,
}

/// Labels: a violation's rule and severity.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    /// Rule id.
    pub rule: &'static str,
    /// Severity.
    pub severity: &'static str,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Records written, by kind.
    pub records: Family<KindLabel, Counter>,
    /// Data lost, by stage and reason.
    pub lost: Family<LossLabel, Counter>,
    /// Policy reloads, by result.
    pub policy_reloads: Family<ResultLabel, Counter>,
    /// 0 while the last policy reload failed (the last good policy still applies), 1 otherwise.
    pub policy_last_reload_successful: Gauge<i64, AtomicI64>,
    /// Violations, by rule and severity (aggregated records count their repeats).
    pub violations: Family<RuleLabel, Counter>,
    /// 1 while the kernel programs are attached.
    pub attached: Gauge<i64, AtomicI64>,
    /// Pods quarantined now.
    pub quarantined_pods: Gauge<i64, AtomicI64>,
    /// Bytes in the delivery spool (on disk and buffered).
    pub spool_bytes: Gauge<i64, AtomicI64>,
    /// The spool's size cap in bytes.
    pub spool_max_bytes: Gauge<i64, AtomicI64>,
    /// 1 while a stream to the collector is open.
    pub delivery_connected: Gauge<i64, AtomicI64>,
    /// Records the collector acknowledged.
    pub delivered: Counter,
    /// Failed connection attempts and broken streams to the collector.
    pub delivery_errors: Counter,
}

impl Metrics {
    /// A registry with every metric registered (names prefixed `monitor_`).
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("monitor");
        let records = Family::<KindLabel, Counter>::default();
        let lost = Family::<LossLabel, Counter>::default();
        let policy_reloads = Family::<ResultLabel, Counter>::default();
        let policy_last_reload_successful = Gauge::<i64, AtomicI64>::default();
        let violations = Family::<RuleLabel, Counter>::default();
        let attached = Gauge::<i64, AtomicI64>::default();
        let quarantined_pods = Gauge::<i64, AtomicI64>::default();
        let spool_bytes = Gauge::<i64, AtomicI64>::default();
        let spool_max_bytes = Gauge::<i64, AtomicI64>::default();
        let delivery_connected = Gauge::<i64, AtomicI64>::default();
        let delivered = Counter::default();
        let delivery_errors = Counter::default();
        registry.register(
            "spool_bytes",
            "Bytes held in the delivery spool until the collector acknowledges them",
            spool_bytes.clone(),
        );
        registry.register(
            "spool_max_bytes",
            "The delivery spool's size cap; past it the oldest records are dropped (and reported)",
            spool_max_bytes.clone(),
        );
        registry.register(
            "delivery_connected",
            "1 while the delivery stream to the collector is open",
            delivery_connected.clone(),
        );
        registry.register(
            "delivered_records",
            "Records the collector acknowledged as stored",
            delivered.clone(),
        );
        registry.register(
            "delivery_errors",
            "Failed connections and broken streams to the collector",
            delivery_errors.clone(),
        );
        registry.register("records", "Records written, by kind", records.clone());
        registry.register(
            "lost",
            "Records or data lost, by stage (kernel, agent) and reason",
            lost.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reloads by result; a failed reload keeps the last good policy",
            policy_reloads.clone(),
        );
        registry.register(
            "policy_last_reload_successful",
            "0 while the last policy reload failed (the last good policy still applies), else 1",
            policy_last_reload_successful.clone(),
        );
        registry.register(
            "violations",
            "Policy violations by rule and severity (repeats included)",
            violations.clone(),
        );
        registry.register(
            "attached",
            "1 while the kernel programs are attached to the cgroup",
            attached.clone(),
        );
        registry.register(
            "quarantined_pods",
            "Pods quarantined by the policy now",
            quarantined_pods.clone(),
        );
        // The policy loaded at start is good (or there is none): a bad one stops the agent.
        policy_last_reload_successful.set(1);
        // Both outcomes exist from the start, so an alert on failures has a series to watch.
        for result in ["ok", "failed"] {
            let _ = policy_reloads.get_or_create(&ResultLabel {
                result: result.into(),
            });
        }
        Arc::new(Self {
            registry,
            records,
            lost,
            policy_reloads,
            policy_last_reload_successful,
            violations,
            attached,
            quarantined_pods,
            spool_bytes,
            spool_max_bytes,
            delivery_connected,
            delivered,
            delivery_errors,
        })
    }

    /// Counts one record of `kind` (no allocation: called per record).
    pub fn record(&self, kind: &'static str) {
        self.records.get_or_create(&KindLabel { kind }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl monitor_wire::exporter::Exporter for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }

    fn health(&self) -> Result<&'static str, &'static str> {
        if self.attached.get() == 1 {
            Ok("attached\n")
        } else {
            Err("not attached\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.record("http");
        m.lost
            .get_or_create(&LossLabel {
                stage: "kernel".into(),
                reason: "ringbuf-full".into(),
            })
            .inc_by(3);
        m.attached.set(1);
        let text = m.encode();
        assert!(
            text.contains("monitor_records_total{kind=\"http\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("monitor_lost_total{stage=\"kernel\",reason=\"ringbuf-full\"} 3"),
            "{text}"
        );
        assert!(text.contains("monitor_attached 1"), "{text}");
        assert!(
            text.contains("monitor_policy_reloads_total{result=\"failed\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("monitor_policy_last_reload_successful 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
