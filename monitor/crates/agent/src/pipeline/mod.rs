//! The record pipeline, one code path for the live agent and for `monitor analyze`: the kernel
//! side's records (from a [`Source`]) are reassembled into exchanges and flows ([`Tracker`]),
//! attributed to pods ([`PodResolver`]), evaluated against the policy ([`policy`]), redacted,
//! and written as numbered NDJSON records ([`RecordOut`]); reconstruction failures and the
//! source's loss counters become loss records, and flows the source never saw end are closed.
//! Quarantine's part ([`quarantine`]: kernel set, blocked attempts, attestation) is used by the
//! live agent only, and so is mesh attribution ([`mesh`]: a service mesh's sidecar legs turned
//! into one record per exchange between the real caller and the destination asked for). All
//! times are the source's nanoseconds, turned into wall-clock time by a [`Clock`]: boot time
//! on a live node, Unix time in a capture file.

mod mesh;
mod out;
mod policy;
mod quarantine;
mod source;
#[cfg(test)]
mod tests;

pub use out::{RecordOut, WriteOut, new_boot_id};
use policy::PolicyWatch;
pub use policy::source_key;
pub use source::{Enforcer, LossCount, Source, SourceError};

use quarantine::QuarantineBook;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use monitor_common::{
    Direction,
    flow::{CloseReason, FlowTuple},
    record::user::Record as Raw,
    sock::NO_UID,
};

use crate::{
    clock::Clock,
    conn::AgentLoss,
    conn::Exchange,
    conn::FlowSummary,
    conn::Output,
    conn::Tracker,
    identity::PodResolver,
    mesh::{MeshBook, MeshConfig, MeshMode},
    metrics::LossLabel,
    metrics::Metrics,
    metrics::RuleLabel,
};

use monitor_record::{
    exchange::Observer, record::Endpoint, record::EndpointKind, record::FlowRecord,
    record::HttpFields, record::HttpRecord, record::LossRecord, record::Record,
    record::split_target,
};

use monitor_policy::{Policy, PolicyErrors, aggregate::Aggregator, engine::Engine};

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source (kernel or capture file) could not be read or controlled.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Bad policy at start (a bad policy on reload keeps the last good one instead).
    #[error("policy rejected:\n{0}")]
    Policy(#[from] PolicyErrors),
    /// Output failed.
    #[error("writing records failed: {0}")]
    Output(#[from] std::io::Error),
}

/// How the local end of a flow is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// By the cgroup of the local socket (live: the kernel reports it). A server-side view of
    /// an exchange whose client is a local pod is dropped as a duplicate of the client's.
    Cgroup,
    /// By address, both ends (a capture file has no cgroups; each flow is seen once).
    Address,
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node (written in every record).
    pub node: String,
    /// This incarnation's id, written in every record (`boot_id`); sequence numbers restart
    /// at 1 with each. See [`new_boot_id`].
    pub boot_id: String,
    /// How the local end of a flow is identified.
    pub attribution: Attribution,
    /// Flows without a packet for this long are closed by the pipeline.
    pub idle_timeout: Duration,
    /// A response body that stops growing for this long is reported with the bytes seen.
    pub body_quiet: Duration,
    /// How often flows awaiting a response body are checked for progress.
    pub progress_every: Duration,
    /// Period of loss reports and aggregation window checks.
    pub period: Duration,
    /// Service mesh handling (live agent; a capture has no sockets, so `monitor analyze`
    /// passes [`MeshMode::None`]).
    pub mesh: MeshConfig,
}

/// When the periodic work last ran, source ns.
#[derive(Debug, Default)]
struct Schedule {
    progress: u64,
    sweep: u64,
    period: u64,
}

/// Counts since the last loss report.
#[derive(Debug, Default)]
struct LossWindow {
    start_ns: u64,
    /// The pipeline's own reconstruction losses, by reason.
    agent: HashMap<&'static str, u64>,
    /// The source's cumulative counters at the last report, by (stage, reason).
    source_last: HashMap<(&'static str, &'static str), u64>,
}

/// The pipeline and its state.
#[derive(Debug)]
pub struct Pipeline {
    /// Source ns to wall-clock time (the live agent resyncs it every period).
    pub clock: Clock,
    settings: Settings,
    schedule: Schedule,
    tracker: Tracker,
    losses: LossWindow,
    /// Violation records written.
    violations: u64,
    /// Server-side observations not emitted because the client side (a local pod) reports them.
    suppressed: u64,
    /// Output line buffer.
    line: Vec<u8>,
    /// Sequence number of the last record written.
    seq: u64,
    /// The policy, when one is loaded.
    engine: Option<Engine>,
    /// Violation repeats per (source, rule, route).
    aggregator: Aggregator,
    /// The policy file being watched for changes.
    policy_watch: Option<PolicyWatch>,
    /// Quarantine bookkeeping.
    quarantine: QuarantineBook,
    /// Flows as mesh legs.
    mesh: MeshBook,
    /// Addresses of this node's monitored pods (their own sockets report their traffic).
    local_pods: HashSet<IpAddr>,
    /// Prometheus metrics.
    metrics: Arc<Metrics>,
}

/// One output line: the record with its sequence number and incarnation.
#[derive(serde::Serialize)]
struct Line<'a> {
    seq: u64,
    boot_id: &'a str,
    #[serde(flatten)]
    record: &'a Record,
}

impl Pipeline {
    /// A pipeline for `policy` (loaded from `policy_path`, watched for changes by the live
    /// agent), starting at `now_ns` of `source`'s clock.
    pub fn new(
        settings: Settings,
        policy: Option<Policy>,
        policy_path: Option<PathBuf>,
        source: &dyn Source,
        clock: Clock,
        metrics: Arc<Metrics>,
        now_ns: u64,
    ) -> Result<Self, PipelineError> {
        let source_last = source
            .losses()?
            .into_iter()
            .map(|(stage, reason, n)| ((stage, reason), n))
            .collect();
        // A capture file has no sockets to tell a sidecar's from an application's.
        let mesh = MeshBook::new(if settings.attribution == Attribution::Cgroup {
            settings.mesh.clone()
        } else {
            MeshConfig::istio(MeshMode::None)
        });
        Ok(Self {
            clock,
            settings,
            schedule: Schedule {
                progress: now_ns,
                sweep: now_ns,
                period: now_ns,
            },
            tracker: Tracker::new(),
            losses: LossWindow {
                start_ns: now_ns,
                source_last,
                ..Default::default()
            },
            suppressed: 0,
            violations: 0,
            line: Vec::with_capacity(4096),
            seq: 0,
            aggregator: Aggregator::new(
                policy
                    .as_ref()
                    .map_or(60, |p| p.spec.aggregation.window_seconds)
                    * 1_000_000_000,
            ),
            policy_watch: policy_path.map(|p| PolicyWatch {
                mtime: std::fs::metadata(&p).and_then(|m| m.modified()).ok(),
                path: p,
                failures: 0,
            }),
            engine: policy.map(|p| Engine::new(p, now_ns)),
            quarantine: QuarantineBook::default(),
            mesh,
            local_pods: HashSet::new(),
            metrics,
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.settings.node
    }

    /// Records written so far (the last sequence number).
    pub fn records_written(&self) -> u64 {
        self.seq
    }

    /// Violation records written so far.
    pub fn violations_written(&self) -> u64 {
        self.violations
    }

    /// Server-side observations not written because the client's own view reports them.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Exchanges seen on a mesh proxy's own legs and reported on the application's leg instead.
    pub fn proxy_exchanges(&self) -> u64 {
        self.mesh.proxy_exchanges
    }

    /// Whether the mesh rules apply now (`--mesh istio`, or `auto` once a mesh was seen).
    pub fn mesh_active(&self) -> bool {
        self.mesh.active()
    }

    /// The addresses of this node's monitored pods (the agent refreshes them once a period):
    /// a caller a mesh names by service account is not one of them when no local connection
    /// of theirs explains the exchange.
    pub fn set_local_pods(&mut self, ips: &[IpAddr]) {
        self.local_pods = ips.iter().copied().collect();
    }

    /// Connections being reassembled now.
    pub fn open_connections(&self) -> usize {
        self.tracker.len()
    }

    /// Decodes and feeds every record the source has waiting.
    pub fn drain(&mut self, source: &mut dyn Source) {
        let tracker = &mut self.tracker;
        let mesh = &mut self.mesh;
        let drops = &mut self.quarantine.drops;
        let agent_losses = &mut self.losses.agent;
        source.drain(&mut |item| match item {
            Ok(Raw::FlowOpen(r)) => {
                let uid = (r.uid != NO_UID).then_some(r.uid);
                let (cookie, cgroup) = (r.hdr.cookie, r.hdr.cgroup_id);
                mesh.on_open(cookie, cgroup, &r.tuple, &r.origin, uid, r.hdr.ts_ns);
                tracker.on_open(cookie, cgroup, r.tuple, (r.origin, uid), r.hdr.ts_ns);
            }
            Ok(Raw::HttpChunk(c)) => tracker.on_chunk(
                c.meta.hdr.cookie,
                c.meta.hdr.cgroup_id,
                c.dir,
                c.chunk_kind,
                c.meta.seq,
                c.meta.payload_len,
                c.data,
                c.meta.hdr.ts_ns,
            ),
            Ok(Raw::QuarantineDrop(d)) => drops.push(d),
            Ok(Raw::FlowClose(r)) => {
                // `decode` accepted only FIN or RST.
                let reason = CloseReason::from_u8(r.reason).unwrap_or(CloseReason::Rst);
                mesh.on_close(r.hdr.cookie, r.last_ns);
                tracker.on_close(
                    r.hdr.cookie,
                    r.hdr.cgroup_id,
                    r.tuple,
                    r.dir,
                    r.last_ns,
                    reason,
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "undecodable ring-buffer record");
                *agent_losses.entry("decode-error").or_default() += 1;
            }
        });
    }

    /// The frequent periodic work, when due at `now_ns`: flows awaiting a response body are
    /// checked for progress (and given up once quiet), idle flows are closed.
    pub fn step(&mut self, source: &mut dyn Source, now_ns: u64) {
        let s = &self.settings;
        if now_ns.saturating_sub(self.schedule.progress) >= s.progress_every.as_nanos() as u64 {
            self.schedule.progress = now_ns;
            let waiting: Vec<u64> = self.tracker.awaiting_body().collect();
            for cookie in waiting {
                if let Some(st) = source.flow(cookie) {
                    self.tracker.on_progress(cookie, st.dir, now_ns);
                }
            }
            self.tracker
                .expire_quiet(now_ns, s.body_quiet.as_nanos() as u64);
        }
        let sweep_every = s.idle_timeout.min(Duration::from_secs(5)).as_nanos() as u64;
        if now_ns.saturating_sub(self.schedule.sweep) >= sweep_every {
            self.schedule.sweep = now_ns;
            self.sweep_idle(source, now_ns);
            self.mesh.sweep(now_ns);
        }
    }

    /// True once per [`Settings::period`]: time for [`Pipeline::end_period`] (and the live
    /// agent's own once-a-period work).
    pub fn period_due(&mut self, now_ns: u64) -> bool {
        let due =
            now_ns.saturating_sub(self.schedule.period) >= self.settings.period.as_nanos() as u64;
        if due {
            self.schedule.period = now_ns;
        }
        due
    }

    /// Writes the summaries of aggregation windows that closed and the losses of the period.
    pub fn end_period(
        &mut self,
        source: &dyn Source,
        out: &mut dyn RecordOut,
        now_ns: u64,
    ) -> Result<(), PipelineError> {
        self.close_windows(now_ns, false, out)?;
        self.report_losses(source, out, now_ns)
    }

    /// The end of the input: everything still in flight is reported (pending exchanges as
    /// partial or unanswered, open flows closed with `reason`), and every aggregation window
    /// is closed. Loss reports are left to the caller ([`Pipeline::report_losses`]).
    pub fn finish(
        &mut self,
        source: &mut dyn Source,
        identity: &mut dyn PodResolver,
        out: &mut dyn RecordOut,
        now_ns: u64,
        reason: CloseReason,
    ) -> Result<(), PipelineError> {
        self.drain(source);
        self.tracker.flush_pending();
        for (cookie, st) in source.flows() {
            source.remove_flow(cookie);
            self.mesh.on_close(cookie, st.last_ns);
            self.tracker
                .on_close(cookie, st.cgroup_id, st.tuple, st.dir, st.last_ns, reason);
        }
        self.emit(identity, out)?;
        self.close_windows(now_ns, true, out)
    }

    /// Closes flows the source never saw end (no FIN/RST within the idle timeout).
    fn sweep_idle(&mut self, source: &mut dyn Source, now_ns: u64) {
        let idle_ns = self.settings.idle_timeout.as_nanos() as u64;
        for (cookie, st) in source.flows() {
            if now_ns.saturating_sub(st.last_ns) >= idle_ns {
                source.remove_flow(cookie);
                self.mesh.on_close(cookie, st.last_ns);
                self.tracker.on_close(
                    cookie,
                    st.cgroup_id,
                    st.tuple,
                    st.dir,
                    st.last_ns,
                    CloseReason::Idle,
                );
            }
        }
    }

    /// Writes every finished output as a record. Returns whether anything was written.
    pub fn emit(
        &mut self,
        identity: &mut dyn PodResolver,
        out: &mut dyn RecordOut,
    ) -> Result<bool, PipelineError> {
        let node = self.settings.node.clone();
        let outputs: Vec<Output> = self.tracker.drain().collect();
        let wrote = !outputs.is_empty() || !self.quarantine.drops.is_empty();
        self.emit_drops(identity, out)?;
        for o in outputs {
            match o {
                Output::Exchange(e) => {
                    let request_ns = e.request_ns;
                    if let Some(mut r) = self.http_record(*e, identity) {
                        self.note_escape(&r.source, &r.destination, request_ns);
                        // Violations first: a SIEM sees the alert no later than the evidence.
                        self.evaluate_http(&r, request_ns, &node, out)?;
                        self.redact(&mut r);
                        self.write(&Record::Http(Box::new(r)), out)?;
                    }
                }
                Output::Flow(f) => {
                    if let Some(r) = self.flow_record(&f, identity) {
                        self.note_escape(&r.source, &r.destination, f.last_ns);
                        // A proxy's leg is checked on the application's leg it carries.
                        if r.http_exchanges == 0 && !r.proxy {
                            self.evaluate_flow(&r, f.flow.first_ns, &node, out)?;
                        }
                        self.write(&Record::Flow(Box::new(r)), out)?;
                    }
                }
                Output::Loss(l) => self.note_loss(l),
            }
        }
        Ok(wrote)
    }

    /// Serializes into a reused buffer, then writes one line: serde_json's many small writes
    /// go to a `Vec` (inlined) instead of through `dyn RecordOut`.
    fn write(&mut self, r: &Record, out: &mut dyn RecordOut) -> Result<(), PipelineError> {
        self.line.clear();
        self.seq += 1;
        self.metrics.record(r.kind());
        if let Record::Violation(v) = r {
            self.violations += 1;
            self.metrics
                .violations
                .get_or_create(&RuleLabel {
                    rule: v.rule.id(),
                    severity: v.severity.name(),
                })
                .inc_by(v.count);
        }
        let line = Line {
            seq: self.seq,
            boot_id: &self.settings.boot_id,
            record: r,
        };
        serde_json::to_writer(&mut self.line, &line).map_err(std::io::Error::from)?;
        self.line.push(b'\n');
        out.record(self.seq, r.kind(), &self.line)?;
        Ok(())
    }

    fn note_loss(&mut self, l: AgentLoss) {
        *self.losses.agent.entry(l.name()).or_default() += 1;
    }

    /// Client and server endpoints of a flow seen from the local socket, or `None` when the
    /// observation duplicates one the client's own node-local socket reports.
    pub(super) fn endpoints(
        &mut self,
        cgroup_id: u64,
        tuple: Option<&FlowTuple>,
        observer: Observer,
        identity: &mut dyn PodResolver,
    ) -> Option<(Endpoint, Endpoint)> {
        // Both ends on this node (the remote address is a monitored pod's, as in the kernel's
        // LOCAL_PEERS): the client's socket reports the exchange; the server's observation of
        // it would be a duplicate. A pod on another node reports its own end. (A capture sees
        // each flow once.)
        let remote_is_local_pod = tuple.is_some_and(|t| self.local_pods.contains(&t.remote_ip()));
        if self.settings.attribution == Attribution::Cgroup
            && observer == Observer::Server
            && remote_is_local_pod
        {
            self.suppressed += 1;
            return None;
        }
        Some(self.endpoints_of(cgroup_id, tuple, observer, identity))
    }

    /// Client and server endpoints of a flow seen from the local socket.
    pub(super) fn endpoints_of(
        &mut self,
        cgroup_id: u64,
        tuple: Option<&FlowTuple>,
        observer: Observer,
        identity: &mut dyn PodResolver,
    ) -> (Endpoint, Endpoint) {
        let (local_ip, remote_ip, local_port, remote_port) = match tuple {
            Some(t) => (
                Some(t.local_ip()),
                Some(t.remote_ip()),
                t.local_port,
                t.remote_port,
            ),
            None => (None, None, 0, 0),
        };
        let remote_pod = remote_ip.and_then(|ip| identity.by_ip(ip));
        let local_pod = match self.settings.attribution {
            Attribution::Cgroup => identity.by_cgroup(cgroup_id),
            Attribution::Address => local_ip.and_then(|ip| identity.by_ip(ip)),
        };
        let mut local = Endpoint::new(local_pod.as_ref(), local_ip, local_port);
        if self.settings.attribution == Attribution::Cgroup {
            local.cgroup_id = Some(cgroup_id);
        }
        if local_pod.is_none() && self.settings.attribution == Attribution::Cgroup {
            local.kind = EndpointKind::Unattributed;
            local.note = Some(identity.unattributed_reason(cgroup_id).unwrap_or_else(|| {
                format!("cgroup {cgroup_id} is not a known pod (yet); identity unknown")
            }));
        }
        let remote = Endpoint::new(remote_pod.as_ref(), remote_ip, remote_port);
        match observer {
            Observer::Client => (local, remote),
            Observer::Server => (remote, local),
        }
    }

    /// The record of an exchange; its strings move into the record.
    fn http_record(&mut self, e: Exchange, identity: &mut dyn PodResolver) -> Option<HttpRecord> {
        let mesh::Attributed {
            source,
            destination,
            ..
        } = self.attribute_exchange(&e, identity)?;
        let (path, query) = split_target(&e.request.target);
        let resp = e.response.as_ref();
        let request = e.request;
        Some(HttpRecord {
            time: self.clock.rfc3339(e.request_ns),
            node: self.settings.node.clone(),
            observer: e.observer,
            flow_id: e.flow.cookie,
            source,
            destination,
            http: HttpFields {
                method: request.method,
                target: request.target,
                path,
                query,
                host: request.host,
                version: format!("1.{}", request.version),
                status: resp.map(|r| r.head.status),
                request_body_bytes: e.request_body_bytes,
                response_bytes: resp.and_then(|r| r.bytes),
                response_body_bytes: resp.and_then(|r| r.body_bytes),
                request_head_truncated: e.request_truncated,
                response_head_truncated: resp.is_some_and(|r| r.truncated),
            },
            latency_ms: resp.map(|r| r.ns.saturating_sub(e.request_ns) as f64 / 1e6),
            completion: e.completion,
        })
    }

    fn flow_record(
        &mut self,
        f: &FlowSummary,
        identity: &mut dyn PodResolver,
    ) -> Option<FlowRecord> {
        let mesh::Attributed {
            source,
            destination,
            proxy,
        } = self.attribute_flow(&f.flow, f.observer, identity)?;
        // Egress is client → server when the local socket is the client.
        let (to_server, to_client) = match f.observer {
            Observer::Client => (Direction::Egress, Direction::Ingress),
            Observer::Server => (Direction::Ingress, Direction::Egress),
        };
        Some(FlowRecord {
            time: self.clock.rfc3339(f.flow.first_ns),
            end_time: self.clock.rfc3339(f.last_ns),
            node: self.settings.node.clone(),
            observer: f.observer,
            flow_id: f.flow.cookie,
            source,
            destination,
            transport: "tcp",
            bytes_to_server: f.dir[to_server.index()].bytes,
            bytes_to_client: f.dir[to_client.index()].bytes,
            packets_to_server: f.dir[to_server.index()].packets,
            packets_to_client: f.dir[to_client.index()].packets,
            close: f.reason.name(),
            // A proxy's exchanges are reported on the application's leg, not on this one.
            http_exchanges: if proxy { 0 } else { f.http_exchanges },
            proxy,
        })
    }

    /// Writes one loss record per reason that lost anything since the last report: the
    /// source's counters (kernel, or capture) and the pipeline's own reconstruction losses.
    pub fn report_losses(
        &mut self,
        source: &dyn Source,
        out: &mut dyn RecordOut,
        now_ns: u64,
    ) -> Result<(), PipelineError> {
        let mut records = Vec::new();
        for (stage, reason, total) in source.losses()? {
            let last = self.losses.source_last.entry((stage, reason)).or_default();
            let delta = total.saturating_sub(*last);
            *last = total;
            if delta > 0 {
                records.push((stage, reason, delta));
            }
        }
        let mut agent: Vec<_> = self.losses.agent.drain().collect();
        agent.sort();
        records.extend(agent.into_iter().map(|(r, n)| ("agent", r, n)));
        for (stage, reason, count) in records {
            self.metrics
                .lost
                .get_or_create(&LossLabel {
                    stage: stage.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc_by(count);
            let r = Record::Loss(LossRecord {
                time: self.clock.rfc3339(now_ns),
                node: self.settings.node.clone(),
                stage,
                reason,
                count,
                window_start: self.clock.rfc3339(self.losses.start_ns),
            });
            self.write(&r, out)?;
        }
        self.losses.start_ns = now_ns;
        Ok(())
    }
}
