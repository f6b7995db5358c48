//! The live node agent: load and attach the kernel programs, then run the record
//! [`pipeline`](crate::pipeline) on what they report: drain the ring buffer on readiness and on
//! a short timer, and once a second reload the policy, update the kernel's local-peer and
//! quarantine sets, attest quarantines, close aggregation windows and report losses.

use std::{
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use monitor_common::flow::CloseReason;

pub use crate::{pipeline::RecordOut, pipeline::WriteOut, pipeline::new_boot_id};

use crate::{
    capture::Capture, clock::Clock, identity::PodResolver, mesh::MeshConfig, metrics::Metrics,
    pipeline::Attribution, pipeline::Pipeline, pipeline::PipelineError, pipeline::Settings,
};

use monitor_policy::Policy;

/// Why the live agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Loading, attaching or reading the kernel programs failed.
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    /// The pipeline failed (policy at start, or the kernel source could not be read).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<crate::pipeline::SourceError> for AgentError {
    fn from(e: crate::pipeline::SourceError) -> Self {
        Self::Pipeline(e.into())
    }
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        Self::Pipeline(e.into())
    }
}

impl From<monitor_policy::PolicyErrors> for AgentError {
    fn from(e: monitor_policy::PolicyErrors) -> Self {
        Self::Pipeline(e.into())
    }
}

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
    /// Service mesh handling (`--mesh`, `--mesh-proxy-uid`, ...).
    pub mesh: MeshConfig,
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
            mesh: MeshConfig::default(),
        }
    }
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
    let local_pods = identity.monitored_pod_ips();
    capture.set_local_peers(&local_pods)?;
    capture.attach(&cfg.cgroup)?;
    metrics.attached.set(1);
    log_attached(&capture, cfg, identity.node());
    if let Some(f) = &cfg.ready_file {
        std::fs::write(f, format!("{}\n", std::process::id()))?;
    }
    let settings = Settings {
        node: identity.node().to_owned(),
        boot_id: cfg.boot_id.clone(),
        attribution: Attribution::Cgroup,
        idle_timeout: cfg.idle_timeout,
        body_quiet: cfg.body_quiet,
        progress_every: cfg.drain_every * 2,
        period: cfg.loss_every,
        mesh: cfg.mesh.clone(),
    };
    let mut pipe = Pipeline::new(
        settings,
        policy,
        cfg.policy.clone(),
        &capture,
        Clock::new(),
        metrics.clone(),
        Clock::boot_ns(),
    )?;
    pipe.set_local_pods(&local_pods);
    let mut last_attest = Instant::now();
    pipe.sync_quarantine(&mut capture, identity, Clock::boot_ns())?;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        pipe.drain(&mut capture);
        let now_ns = Clock::boot_ns();
        pipe.step(&mut capture, now_ns);
        if stopping {
            // Final drain, then report everything still in flight: nothing is dropped silently.
            pipe.finish(
                &mut capture,
                identity,
                out,
                now_ns,
                CloseReason::AgentStopped,
            )?;
            pipe.attest_quarantine(&capture, out, now_ns)?;
            pipe.report_losses(&capture, out, now_ns)?;
            out.flush()?;
            metrics.attached.set(0);
            tracing::info!(
                duplicates_suppressed = pipe.suppressed(),
                mesh_active = pipe.mesh_active(),
                proxy_exchanges = pipe.proxy_exchanges(),
                "monitor stopping; programs detach as their links close"
            );
            return Ok(());
        }
        if pipe.period_due(now_ns) {
            pipe.reload_policy(out)?;
            // One cgroup rescan a tick: monitored_pod_ips rescans, pod_cgroups reads the result.
            let local_pods = identity.monitored_pod_ips();
            capture.set_local_peers(&local_pods)?;
            pipe.set_local_pods(&local_pods);
            pipe.sync_quarantine(&mut capture, identity, now_ns)?;
            if last_attest.elapsed() >= Duration::from_secs(10) {
                last_attest = Instant::now();
                pipe.attest_quarantine(&capture, out, now_ns)?;
            }
            pipe.end_period(&capture, out, now_ns)?;
            pipe.clock = Clock::new();
        }
        pipe.emit(identity, out)?;
        // Everything written this round goes out now, including what the once-a-second work
        // wrote (policy events, attestations, closed windows) on an otherwise quiet node; a
        // flush with nothing new is free, and lets the delivery output retry a failed spool
        // write without waiting for the next record.
        out.flush()?;
        wait_readable(capture.ring.as_raw_fd(), cfg.drain_every);
    }
}

/// `monitor agent --drain-only`, the benchmark's "kernel side only" variant: loads and
/// attaches the kernel programs exactly as [`run`] does, then only drains the ring buffer,
/// counting records and bytes, without the pipeline (no decoding, reassembly, identity,
/// policy or records). Once a second, and once more when stopping, it writes one JSON line of
/// cumulative counts to `out`: `{"kind":"drain-stats","records":N,"bytes":N,"kernel":{...}}`,
/// where `kernel` holds the kernel's counters (losses such as `ringbuf-full`, and activity such
/// as `packets`) by name.
pub fn run_drain_only(
    cfg: &Config,
    identity: &mut dyn PodResolver,
    stop: &AtomicBool,
    out: &mut dyn std::io::Write,
) -> Result<(), AgentError> {
    let mut capture = Capture::load()?;
    capture.set_local_peers(&identity.monitored_pod_ips())?;
    capture.attach(&cfg.cgroup)?;
    log_attached(&capture, cfg, identity.node());
    tracing::info!("--drain-only: ring buffer drained and counted, no pipeline");
    if let Some(f) = &cfg.ready_file {
        std::fs::write(f, format!("{}\n", std::process::id()))?;
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut last_report = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while let Some(item) = capture.ring.next() {
            records += 1;
            bytes += item.len() as u64;
        }
        if stopping || last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let counters = capture.counters()?;
            let kernel: serde_json::Map<String, serde_json::Value> =
                monitor_common::counter::Counter::ALL
                    .into_iter()
                    .map(|c| (c.name().to_owned(), counters[c as usize].into()))
                    .collect();
            let line = serde_json::json!({
                "kind": "drain-stats",
                "records": records,
                "bytes": bytes,
                "kernel": kernel,
            });
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        if stopping {
            return Ok(());
        }
        wait_readable(capture.ring.as_raw_fd(), cfg.drain_every);
    }
}

/// Logs what is attached, and one warning per socket-level program that is not (and what
/// that costs).
fn log_attached(capture: &Capture, cfg: &Config, node: &str) {
    let hooks = capture.socket_hooks();
    let mut attached = vec!["cgroup_skb egress and ingress"];
    if hooks.connect {
        attached.push("connect4/connect6");
    }
    if hooks.sock_ops {
        attached.push("sock_ops");
    }
    tracing::info!(
        cgroup = %cfg.cgroup.display(),
        node,
        mesh = cfg.mesh.mode.name(),
        "monitor attached: {}",
        attached.join(", ")
    );
    for (program, why) in &hooks.missing {
        let without = if program.starts_with("monitor_conn") {
            "flows carry only the addresses on the wire (inside a service mesh the \
             application's leg to its sidecar has no destination as asked for), and no caller \
             uid/gid"
        } else {
            "accepted connections are not marked by the kernel: the direction of a flow whose \
             SYN was not seen comes from its first HTTP request or, for other TCP, port order"
        };
        tracing::warn!("kernel program {program} is not running ({why}); without it {without}");
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

/// Shared stop flag for signal handlers.
pub fn stop_flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}
