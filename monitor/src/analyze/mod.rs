//! `monitor analyze`: packet captures through the live agent's pipeline.
//!
//! ```text
//! capture files ─► reader (pcap/pcapng, merged by time) ─► packet (link layer, IP, TCP)
//!   ─► flowtable (the kernel programs' work: flows, TCP order, HTTP head chunks)
//!   ─► pipeline (the agent's: reassembly, identity by address, policy, baselines, records)
//!   ─► output (NDJSON or collector sinks, and optionally a collector store)
//! ```
//!
//! Time is the capture's: every timestamp, idle timeout, aggregation window, rate and baseline
//! runs on packet timestamps, so a capture spanning weeks gives the figures live traffic over
//! those weeks would have given.

pub mod flowtable;
pub mod output;
pub mod packet;
pub mod progress;
pub mod reader;

use std::time::Duration;

use monitor_common::flow::CloseReason;

use monitor_agent::{
    clock::Clock,
    identity::PodResolver,
    mesh::{MeshConfig, MeshMode},
    metrics::Metrics,
    pipeline::Attribution,
    pipeline::Pipeline,
    pipeline::PipelineError,
    pipeline::RecordOut,
    pipeline::Settings,
};

use monitor_policy::Policy;

use flowtable::{FlowTable, Limits, Stats};
use packet::NotTcp;
use progress::Progress;
use reader::{CaptureFileError, Merged};

/// Analysis settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Node name written in the records.
    pub node: String,
    /// This analysis's id (`boot_id` in the records).
    pub boot_id: String,
    /// Flow table bounds.
    pub limits: Limits,
    /// Flows without a packet for this long (capture time) are closed.
    pub idle_timeout: Duration,
}

/// What an analysis read and found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Frames read.
    pub packets: u64,
    /// Bytes of the capture files read.
    pub bytes: u64,
    /// Frames that were not TCP (other protocols).
    pub not_tcp: u64,
    /// IP fragments (not reassembled).
    pub fragments: u64,
    /// Frames on an interface of an unsupported link type.
    pub unsupported_link: u64,
    /// The flow table's counts.
    pub flows: Stats,
    /// Most flows open at once.
    pub peak_flows: usize,
    /// First and last capture timestamps, Unix ns.
    pub span_ns: Option<(u64, u64)>,
    /// Records written.
    pub records: u64,
    /// Damaged files (what came before the damage was analysed).
    pub errors: Vec<CaptureFileError>,
}

/// Runs `files` through the pipeline under `policy`, writing records to `out`.
pub fn run(
    mut files: Merged,
    identity: &mut dyn PodResolver,
    policy: Option<Policy>,
    opts: &Options,
    out: &mut dyn RecordOut,
    progress: &mut Progress,
) -> Result<Summary, PipelineError> {
    let total_bytes: u64 = files.files().map(|f| f.size()).sum();
    let mut table = FlowTable::new(opts.limits);
    let mut sum = Summary::default();
    let mut policy = Some(policy);
    let mut pipe: Option<Pipeline> = None;
    let mut now = 0u64;
    let mut last_gap_check = 0u64;
    let mut failed = None;
    let metrics = Metrics::new();
    let settings = Settings {
        node: opts.node.clone(),
        boot_id: opts.boot_id.clone(),
        attribution: Attribution::Address,
        idle_timeout: opts.idle_timeout,
        body_quiet: Duration::from_secs(1),
        progress_every: Duration::from_millis(20),
        period: Duration::from_secs(1),
        // A capture has no sockets: no uid, no connect-time destination, no sidecar to tell.
        mesh: MeshConfig::istio(MeshMode::None),
    };
    loop {
        let more = files.next_with(|frame| {
            let first = pipe.is_none();
            sum.packets += 1;
            now = now.max(frame.ts_ns);
            let span = sum.span_ns.get_or_insert((frame.ts_ns, frame.ts_ns));
            span.0 = span.0.min(frame.ts_ns);
            span.1 = span.1.max(frame.ts_ns);
            if first {
                match Pipeline::new(
                    settings.clone(),
                    policy.take().flatten(),
                    None,
                    &table,
                    Clock::unix(),
                    metrics.clone(),
                    now,
                ) {
                    Ok(p) => pipe = Some(p),
                    Err(e) => {
                        failed = Some(e);
                        return;
                    }
                }
            }
            let Some(p) = pipe.as_mut() else { return };
            match frame.link {
                None => sum.unsupported_link += 1,
                Some(link) => match packet::decode(link, &frame.data) {
                    Ok(seg) => table.segment(frame.ts_ns, &seg),
                    Err(NotTcp::Other) => sum.not_tcp += 1,
                    Err(NotTcp::Fragment) => sum.fragments += 1,
                    Err(NotTcp::Undecodable) => table.note_undecodable(),
                },
            }
            if now.saturating_sub(last_gap_check) >= 100_000_000 {
                last_gap_check = now;
                table.expire_gaps(now);
            }
            if let Err(e) = step(p, &mut table, identity, out, now) {
                failed = Some(e);
            }
            sum.peak_flows = sum.peak_flows.max(table.len());
        });
        if let Some(e) = failed.take() {
            return Err(e);
        }
        if let Some(p) = &pipe
            && progress.due()
        {
            let read: u64 = files.files().map(|f| f.bytes_read()).sum();
            progress.show(read, total_bytes, sum.packets, table.len(), p);
        }
        if !more {
            break;
        }
    }
    if let Some(p) = pipe.as_mut() {
        // Whatever still waits on a gap is delivered (the gap counted), then every open flow
        // is closed as of the capture's end.
        table.expire_gaps(u64::MAX);
        p.finish(&mut table, identity, out, now, CloseReason::CaptureEnd)?;
        p.report_losses(&table, out, now)?;
        sum.records = p.records_written();
    }
    out.flush()?;
    progress.finish();
    sum.bytes = files.files().map(|f| f.bytes_read()).sum();
    sum.flows = table.stats();
    sum.errors = std::mem::take(&mut files.errors);
    Ok(sum)
}

/// The pipeline's work after one frame.
fn step(
    p: &mut Pipeline,
    table: &mut FlowTable,
    identity: &mut dyn PodResolver,
    out: &mut dyn RecordOut,
    now: u64,
) -> Result<(), PipelineError> {
    p.drain(table);
    p.step(table, now);
    if p.period_due(now) {
        p.end_period(table, out, now)?;
        out.flush()?;
    }
    p.emit(identity, out)?;
    Ok(())
}
