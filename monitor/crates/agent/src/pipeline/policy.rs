//! The policy in the agent: evaluating exchanges and flows, redaction before writing,
//! aggregation windows, and reloading the file when it changes.

use std::path::PathBuf;

use super::RecordOut;

use super::{Pipeline, PipelineError};
use crate::{clock::Clock, metrics::ResultLabel};
use monitor_policy::{Policy, engine::Finding, engine::HttpInput, path::Normalized};
use monitor_record::{
    query::redact_query, record::Endpoint, record::FlowRecord, record::HttpRecord,
    record::PolicyEvent, record::Record,
};

/// A policy file watched for changes.
#[derive(Debug)]
pub struct PolicyWatch {
    pub(super) path: PathBuf,
    pub(super) mtime: Option<std::time::SystemTime>,
    pub(super) failures: u64,
}

/// Aggregation key of a source: namespace/pod, else its address.
pub fn source_key(e: &Endpoint) -> String {
    match (e.namespace(), e.pod(), e.ip) {
        (Some(ns), Some(p), _) => format!("{ns}/{p}"),
        (None, Some(p), _) => p.to_owned(),
        (_, _, Some(ip)) => ip.to_string(),
        _ => String::from("unknown"),
    }
}

impl Pipeline {
    /// Replaces query values in an HTTP record (keys kept) before it is written: every value
    /// unless the policy keeps it.
    pub(super) fn redact(&self, r: &mut HttpRecord) {
        let Some(q) = &r.http.query else { return };
        let keep: &[String] = self
            .engine
            .as_ref()
            .map_or(&[], |e| &e.policy().spec.redaction.keep_values);
        let q = redact_query(q, keep);
        r.http.target = format!("{}?{q}", r.http.path);
        r.http.query = Some(q);
    }

    /// Turns findings into violation records: the first of each (source, rule, route) in the
    /// window is written now, repeats are counted for the window's summary.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one violation record"
    )]
    pub(super) fn report(
        &mut self,
        findings: &[Finding],
        src: &Endpoint,
        dst: &Endpoint,
        http: Option<(HttpInput<'_>, &Normalized)>,
        route: &str,
        (time, ns): (&str, u64),
        node: &str,
        flow_id: Option<u64>,
        out: &mut dyn RecordOut,
    ) -> Result<(), PipelineError> {
        let Some(engine) = &self.engine else {
            return Ok(());
        };
        let mut now = Vec::new();
        for f in findings {
            let v = engine.violation(f, src, dst, http, route, time.to_owned(), node, flow_id);
            if let Some(v) = self.aggregator.offer(&source_key(src), v, ns) {
                now.push(v);
            }
        }
        for v in now {
            self.write(&Record::Violation(Box::new(v)), out)?;
        }
        Ok(())
    }

    /// Evaluates an exchange and writes its violations.
    pub(super) fn evaluate_http(
        &mut self,
        r: &HttpRecord,
        ns: u64,
        node: &str,
        out: &mut dyn RecordOut,
    ) -> Result<(), PipelineError> {
        let Some(engine) = &mut self.engine else {
            return Ok(());
        };
        let h = HttpInput::from(&r.http);
        let v = engine.evaluate_http(&r.source, &r.destination, h, ns);
        self.report(
            &v.findings,
            &r.source,
            &r.destination,
            Some((h, &v.normalized)),
            &v.route,
            (&r.time, ns),
            node,
            Some(r.flow_id),
            out,
        )
    }

    /// Evaluates a flow that carried no HTTP (quarantine, egress) and writes its violations.
    pub(super) fn evaluate_flow(
        &mut self,
        r: &FlowRecord,
        ns: u64,
        node: &str,
        out: &mut dyn RecordOut,
    ) -> Result<(), PipelineError> {
        let Some(engine) = &mut self.engine else {
            return Ok(());
        };
        let findings = engine.evaluate_flow(&r.source, &r.destination);
        let route = format!("tcp/{}", r.destination.port);
        self.report(
            &findings,
            &r.source,
            &r.destination,
            None,
            &route,
            (&r.time, ns),
            node,
            Some(r.flow_id),
            out,
        )
    }

    /// Writes the summaries of aggregation windows that closed.
    pub(super) fn close_windows(
        &mut self,
        now_ns: u64,
        flush: bool,
        out: &mut dyn RecordOut,
    ) -> Result<(), PipelineError> {
        for v in self.aggregator.close_windows(now_ns, flush) {
            self.write(&Record::Violation(Box::new(v)), out)?;
        }
        Ok(())
    }

    /// Reloads the policy file if it changed. A bad file keeps the last good policy, says so
    /// in the log and in a `policy` record, and counts the failure.
    pub fn reload_policy(&mut self, out: &mut dyn RecordOut) -> Result<(), PipelineError> {
        let Some(watch) = &mut self.policy_watch else {
            return Ok(());
        };
        let mtime = std::fs::metadata(&watch.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime == watch.mtime {
            return Ok(());
        }
        watch.mtime = mtime;
        let path = watch.path.clone();
        let event = match Policy::load(&path) {
            Ok(p) => {
                tracing::info!(file = %path.display(), "policy reloaded");
                self.aggregator
                    .set_window(p.spec.aggregation.window_seconds * 1_000_000_000);
                if let Some(e) = &mut self.engine {
                    e.set_policy(p);
                }
                PolicyEvent::reloaded(&self.settings.node, &path, watch.failures)
            }
            Err(errs) => {
                watch.failures += 1;
                tracing::error!(
                    file = %path.display(),
                    failures = watch.failures,
                    "policy reload failed; keeping the last good policy:\n{errs}"
                );
                PolicyEvent::failed(&self.settings.node, &path, watch.failures, &errs.0)
            }
        };
        let mut event = event;
        let result = if event.event == "reloaded" {
            "ok"
        } else {
            "failed"
        };
        self.metrics
            .policy_reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
        // A gauge as well as the counter: an alert on it lasts until a good file is loaded.
        self.metrics
            .policy_last_reload_successful
            .set(i64::from(result == "ok"));
        event.time = self.clock.rfc3339(Clock::boot_ns());
        self.write(&Record::Policy(event), out)
    }
}
