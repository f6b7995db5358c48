//! The node agent's loop: drain the ring buffer on readiness and on a short timer, decode,
//! reassemble, attribute, and write NDJSON records; turn kernel counters and reconstruction
//! failures into loss records; close flows the kernel never saw end. The policy's part
//! ([`policy`]: evaluation, redaction, reload) and quarantine's ([`quarantine`]: kernel set,
//! blocked attempts, attestation) live in their own modules.

mod out;
mod policy;
mod quarantine;

pub use out::{RecordOut, WriteOut, new_boot_id};

use policy::PolicyWatch;
use quarantine::QuarantineBook;

use std::{
    collections::HashMap,
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use monitor_common::{
    Direction,
    counter::Counter,
    flow::{CloseReason, FlowTuple},
    record::user::{Record as Raw, decode},
};

use crate::{
    capture::{Capture, CaptureError},
    clock::Clock,
    conn::{AgentLoss, Exchange, FlowSummary, Observer, Output, Tracker},
    identity::{PeerKind, PodResolver},
    metrics::{LossLabel, Metrics, RuleLabel},
    policy::{Policy, PolicyErrors, engine::Engine, violation::Aggregator},
    record::{
        Endpoint, EndpointKind, FlowRecord, HttpFields, HttpRecord, LossRecord, Record,
        split_target,
    },
};

/// Agent settings (from the command line).
#[derive(Debug, Clone)]
pub struct Config {
    /// Policy file (reloaded when it changes); without one, no violations and every query
    /// value is redacted.
    pub policy: Option<PathBuf>,
    /// cgroup v2 directory to attach to.
    pub cgroup: PathBuf,
    /// File created once the programs are attached.
    pub ready_file: Option<PathBuf>,
    /// Ring-buffer drain period.
    pub drain_every: Duration,
    /// Flows without a packet for this long are closed by the agent.
    pub idle_timeout: Duration,
    /// A response body that stops growing for this long is reported with the bytes seen.
    pub body_quiet: Duration,
    /// Period of loss reports.
    pub loss_every: Duration,
    /// This incarnation's id, written in every record (`boot_id`); sequence numbers restart
    /// at 1 with each. See [`new_boot_id`].
    pub boot_id: String,
}

impl Config {
    /// Defaults for everything but the paths.
    pub fn new(cgroup: PathBuf) -> Self {
        Self {
            policy: None,
            cgroup,
            ready_file: None,
            drain_every: Duration::from_millis(10),
            idle_timeout: Duration::from_secs(300),
            body_quiet: Duration::from_secs(1),
            loss_every: Duration::from_secs(1),
            boot_id: new_boot_id(),
        }
    }
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Could not load, attach or read the kernel side.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Bad policy at start (a bad policy on reload keeps the last good one instead).
    #[error("policy rejected:\n{0}")]
    Policy(#[from] PolicyErrors),
    /// Output failed.
    #[error("writing records failed: {0}")]
    Output(#[from] std::io::Error),
}

/// Counts since the last loss report, per (stage, reason).
#[derive(Debug, Default)]
struct LossWindow {
    start_ns: u64,
    agent: HashMap<&'static str, u64>,
    kernel_last: [u64; Counter::COUNT as usize],
}

/// Runs the agent until `stop` is set; writes records to `out`.
pub fn run(
    cfg: &Config,
    identity: &mut dyn PodResolver,
    metrics: Arc<Metrics>,
    stop: &AtomicBool,
    out: &mut dyn RecordOut,
) -> Result<(), AgentError> {
    let policy = cfg.policy.as_deref().map(Policy::load).transpose()?;
    let mut capture = Capture::load()?;
    capture.set_local_peers(&identity.monitored_pod_ips())?;
    capture.attach(&cfg.cgroup)?;
    metrics.attached.set(1);
    tracing::info!(
        cgroup = %cfg.cgroup.display(),
        node = identity.node(),
        "monitor attached: cgroup_skb egress and ingress"
    );
    if let Some(f) = &cfg.ready_file {
        std::fs::write(f, format!("{}\n", std::process::id()))?;
    }
    let mut agent = Agent {
        clock: Clock::new(),
        tracker: Tracker::new(),
        losses: LossWindow {
            start_ns: Clock::boot_ns(),
            kernel_last: capture.counters()?,
            ..Default::default()
        },
        suppressed: 0,
        line: Vec::with_capacity(4096),
        seq: 0,
        node: identity.node().to_owned(),
        boot_id: cfg.boot_id.clone(),
        aggregator: Aggregator::new(
            policy
                .as_ref()
                .map_or(60, |p| p.spec.aggregation.window_seconds)
                * 1_000_000_000,
        ),
        policy_watch: cfg.policy.as_ref().map(|p| PolicyWatch {
            path: p.clone(),
            mtime: std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            failures: 0,
        }),
        engine: policy.map(|p| Engine::new(p, Clock::boot_ns())),
        quarantine: QuarantineBook::default(),
        metrics,
    };
    let mut last_poll = Instant::now();
    let mut last_loss = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_attest = Instant::now();
    agent.sync_quarantine(&mut capture, identity, Clock::boot_ns())?;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        agent.drain(&mut capture);
        let now_ns = Clock::boot_ns();
        if last_poll.elapsed() >= cfg.drain_every * 2 {
            last_poll = Instant::now();
            let waiting: Vec<u64> = agent.tracker.awaiting_body().collect();
            for cookie in waiting {
                if let Some(st) = capture.flow(cookie) {
                    agent.tracker.on_progress(cookie, st.dir, now_ns);
                }
            }
            agent
                .tracker
                .expire_quiet(now_ns, cfg.body_quiet.as_nanos() as u64);
        }
        if last_sweep.elapsed() >= cfg.idle_timeout.min(Duration::from_secs(5)) {
            last_sweep = Instant::now();
            agent.sweep_idle(&mut capture, now_ns, cfg.idle_timeout);
        }
        if stopping {
            // Final drain, then report everything still in flight: nothing is dropped silently.
            agent.drain(&mut capture);
            agent.tracker.flush_pending();
            for (cookie, st) in capture.flows() {
                agent.tracker.on_close(
                    cookie,
                    st.cgroup_id,
                    st.tuple,
                    st.dir,
                    st.last_ns,
                    CloseReason::AgentStopped,
                );
            }
            agent.emit(identity, out)?;
            agent.close_windows(now_ns, true, out)?;
            agent.attest_quarantine(&capture, identity.node(), out)?;
            agent.report_losses(&capture, identity, out)?;
            out.flush()?;
            agent.metrics.attached.set(0);
            tracing::info!(
                duplicates_suppressed = agent.suppressed,
                "monitor stopping; programs detach as their links close"
            );
            return Ok(());
        }
        if last_loss.elapsed() >= cfg.loss_every {
            last_loss = Instant::now();
            agent.reload_policy(out)?;
            // One cgroup rescan a tick: monitored_pod_ips rescans, pod_cgroups reads the result.
            capture.set_local_peers(&identity.monitored_pod_ips())?;
            agent.sync_quarantine(&mut capture, identity, now_ns)?;
            if last_attest.elapsed() >= Duration::from_secs(10) {
                last_attest = Instant::now();
                agent.attest_quarantine(&capture, identity.node(), out)?;
            }
            agent.close_windows(now_ns, false, out)?;
            agent.report_losses(&capture, identity, out)?;
            agent.clock = Clock::new();
        }
        agent.emit(identity, out)?;
        // Everything written this round goes out now, including what the once-a-second work
        // wrote (policy events, attestations, closed windows) on an otherwise quiet node; a
        // flush with nothing new is free, and lets the delivery output retry a failed spool
        // write without waiting for the next record.
        out.flush()?;
        wait_readable(capture.ring.as_raw_fd(), cfg.drain_every);
    }
}

/// Waits until the ring buffer signals data (a forced wakeup) or `timeout` passes.
fn wait_readable(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the timeout is bounded.
    unsafe { libc::poll(&raw mut pfd, 1, timeout.as_millis() as i32) };
}

struct Agent {
    clock: Clock,
    tracker: Tracker,
    losses: LossWindow,
    /// Server-side observations not emitted because the client side (a local pod) reports them.
    suppressed: u64,
    /// Output line buffer.
    line: Vec<u8>,
    /// Sequence number of the last record written.
    seq: u64,
    /// This node.
    node: String,
    /// This incarnation (see [`Config::boot_id`]).
    boot_id: String,
    /// The policy, when one is loaded.
    engine: Option<Engine>,
    /// Violation repeats per (source, rule, route).
    aggregator: Aggregator,
    /// The policy file being watched for changes.
    policy_watch: Option<PolicyWatch>,
    /// Quarantine bookkeeping.
    quarantine: QuarantineBook,
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

impl Agent {
    /// Decodes and feeds every record waiting in the ring buffer.
    fn drain(&mut self, capture: &mut Capture) {
        while let Some(item) = capture.ring.next() {
            match decode(&item) {
                Ok(Raw::FlowOpen(r)) => {
                    self.tracker
                        .on_open(r.hdr.cookie, r.hdr.cgroup_id, r.tuple, r.hdr.ts_ns);
                }
                Ok(Raw::HttpChunk(c)) => self.tracker.on_chunk(
                    c.meta.hdr.cookie,
                    c.meta.hdr.cgroup_id,
                    c.dir,
                    c.chunk_kind,
                    c.meta.seq,
                    c.meta.payload_len,
                    c.data,
                    c.meta.hdr.ts_ns,
                ),
                Ok(Raw::QuarantineDrop(d)) => self.on_quarantine_drop(&d),
                Ok(Raw::FlowClose(r)) => {
                    // `decode` accepted only FIN or RST.
                    let reason = CloseReason::from_u8(r.reason).unwrap_or(CloseReason::Rst);
                    self.tracker.on_close(
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
                    *self.losses.agent.entry("decode-error").or_default() += 1;
                }
            }
        }
    }

    /// Closes flows the kernel never saw end (no FIN/RST seen within the idle timeout).
    fn sweep_idle(&mut self, capture: &mut Capture, now_ns: u64, idle: Duration) {
        let idle_ns = idle.as_nanos() as u64;
        for (cookie, st) in capture.flows() {
            if now_ns.saturating_sub(st.last_ns) >= idle_ns {
                capture.remove_flow(cookie);
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
    fn emit(
        &mut self,
        identity: &mut dyn PodResolver,
        out: &mut dyn RecordOut,
    ) -> Result<bool, AgentError> {
        let outputs: Vec<Output> = self.tracker.drain().collect();
        let wrote = !outputs.is_empty() || !self.quarantine.drops.is_empty();
        self.emit_drops(identity, out)?;
        for o in outputs {
            match o {
                Output::Exchange(e) => {
                    if let Some(mut r) = self.http_record(&e, identity) {
                        self.note_escape(&r.source, &r.destination, e.request_ns);
                        // Violations first: a SIEM sees the alert no later than the evidence.
                        self.evaluate_http(&r, e.request_ns, identity.node(), out)?;
                        self.redact(&mut r);
                        self.write(&Record::Http(Box::new(r)), out)?;
                    }
                }
                Output::Flow(f) => {
                    if let Some(r) = self.flow_record(&f, identity) {
                        self.note_escape(&r.source, &r.destination, f.last_ns);
                        if r.http_exchanges == 0 {
                            self.evaluate_flow(&r, f.flow.first_ns, identity.node(), out)?;
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
    fn write(&mut self, r: &Record, out: &mut dyn RecordOut) -> Result<(), AgentError> {
        self.line.clear();
        self.seq += 1;
        self.metrics.record(r.kind());
        if let Record::Violation(v) = r {
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
            boot_id: &self.boot_id,
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
    fn endpoints(
        &mut self,
        cgroup_id: u64,
        tuple: Option<&FlowTuple>,
        observer: Observer,
        identity: &mut dyn PodResolver,
    ) -> Option<(Endpoint, Endpoint)> {
        let remote_is_local_pod = tuple
            .and_then(|t| identity.by_ip(t.remote_ip()))
            .is_some_and(|p| p.kind == PeerKind::Pod);
        // Both ends on this node: the client's socket reports the exchange; the server's
        // observation of it would be a duplicate.
        if observer == Observer::Server && remote_is_local_pod {
            self.suppressed += 1;
            return None;
        }
        Some(self.endpoints_of(cgroup_id, tuple, observer, identity))
    }

    /// Client and server endpoints of a flow seen from the local socket.
    fn endpoints_of(
        &mut self,
        cgroup_id: u64,
        tuple: Option<&FlowTuple>,
        observer: Observer,
        identity: &mut dyn PodResolver,
    ) -> (Endpoint, Endpoint) {
        let local_pod = identity.by_cgroup(cgroup_id);
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
        let mut local = Endpoint::new(local_pod.as_ref(), local_ip, local_port);
        local.cgroup_id = Some(cgroup_id);
        if local_pod.is_none() {
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

    fn http_record(&mut self, e: &Exchange, identity: &mut dyn PodResolver) -> Option<HttpRecord> {
        let (source, destination) = self.endpoints(
            e.flow.cgroup_id,
            e.flow.tuple.as_ref(),
            e.observer,
            identity,
        )?;
        let (path, query) = split_target(&e.request.target);
        let resp = e.response.as_ref();
        Some(HttpRecord {
            time: self.clock.rfc3339(e.request_ns),
            node: identity.node().to_owned(),
            observer: e.observer,
            flow_id: e.flow.cookie,
            source,
            destination,
            http: HttpFields {
                method: e.request.method.clone(),
                target: e.request.target.clone(),
                path,
                query,
                host: e.request.host.clone(),
                version: format!("1.{}", e.request.version),
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
        let (source, destination) = self.endpoints(
            f.flow.cgroup_id,
            f.flow.tuple.as_ref(),
            f.observer,
            identity,
        )?;
        // Egress is client → server when the local socket is the client.
        let (to_server, to_client) = match f.observer {
            Observer::Client => (Direction::Egress, Direction::Ingress),
            Observer::Server => (Direction::Ingress, Direction::Egress),
        };
        Some(FlowRecord {
            time: self.clock.rfc3339(f.flow.first_ns),
            end_time: self.clock.rfc3339(f.last_ns),
            node: identity.node().to_owned(),
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
            http_exchanges: f.http_exchanges,
        })
    }

    /// Writes one loss record per reason that lost anything since the last report.
    fn report_losses(
        &mut self,
        capture: &Capture,
        identity: &dyn PodResolver,
        out: &mut dyn RecordOut,
    ) -> Result<(), AgentError> {
        let now_ns = Clock::boot_ns();
        let counters = capture.counters()?;
        let mut records = Vec::new();
        for c in Counter::ALL.into_iter().filter(|c| c.is_loss()) {
            let delta = counters[c as usize].saturating_sub(self.losses.kernel_last[c as usize]);
            if delta > 0 {
                records.push(("kernel", c.name(), delta));
            }
        }
        self.losses.kernel_last = counters;
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
                node: identity.node().to_owned(),
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

/// Shared stop flag for signal handlers.
pub fn stop_flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}
