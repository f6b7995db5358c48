//! The agent's side of delivery: [`SpoolOut`] puts every record into the spool (and optionally
//! on stdout), [`Sender`] streams the spool to the collector over one long-lived gRPC stream
//! and forgets what the collector acknowledged.
//!
//! Flow control: at most [`WINDOW`] batches are unacknowledged on the stream; a batch holds up
//! to [`BATCH_RECORDS`] records or [`BATCH_BYTES`] bytes and goes out as soon as the agent's
//! drain round (≤ 10 ms) has spooled it. After any error the stream is dropped, the spool is
//! rewound to the first unacknowledged record, and the sender reconnects with exponential
//! backoff (100 ms to 5 s); the collector drops the duplicates.

use std::{
    collections::{HashSet, VecDeque},
    io::{self, Write},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};

use super::spool::{Lost, Spool, SpoolBatch};
use crate::{metrics::LossLabel, metrics::Metrics, pipeline::RecordOut};
use monitor_wire::{proto, proto::ingest_client::IngestClient, tls::TlsFiles};

/// Batches unacknowledged on the stream at once.
pub const WINDOW: usize = 16;
/// Most records in one batch.
pub const BATCH_RECORDS: usize = 1024;
/// How often, at most, acknowledgements are saved to the spool under load.
pub const ACK_SAVE_EVERY: Duration = Duration::from_millis(100);
/// Most payload bytes in one batch (gRPC's default message limit is 4 MiB).
pub const BATCH_BYTES: usize = 1 << 20;

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host:port` (mTLS) or `http://host:port` (`--insecure`).
    pub url: String,
    /// mTLS files; `None` only with `--insecure`.
    pub tls: Option<TlsFiles>,
    /// Name the collector's certificate must carry (default: the URL's host).
    pub server_name: String,
    /// This node.
    pub node: String,
}

/// Locks the spool, recovering from a poisoned lock (a panic elsewhere must not stop delivery).
fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    match spool.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The agent's record output when delivering: spool (and optionally a copy on a writer).
#[derive(Debug)]
pub struct SpoolOut<W: Write> {
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    /// Records since the last flush: (seq, kind, end offset in `bytes`).
    pending: Vec<(u64, &'static str, usize)>,
    /// Their JSON, back to back (one buffer, not one allocation per record).
    bytes: Vec<u8>,
    tee: Option<W>,
    metrics: Arc<Metrics>,
    /// Records the spool refused (disk full, I/O error) and that were dropped after retrying.
    dropped: u64,
    /// The last spool flush failed: flush again even without new records.
    unflushed: bool,
    /// The spool holds written records not yet fsynced: flush again even without new
    /// records, so that its sync interval holds when records stop coming.
    unsynced: bool,
}

/// Records held in memory while the spool refuses writes, before the oldest are dropped.
const PENDING_CAP: usize = 100_000;

impl<W: Write> SpoolOut<W> {
    /// Records into `spool`, waking the sender through `notify`; a copy goes to `tee`.
    pub fn new(
        spool: Arc<Mutex<Spool>>,
        notify: Arc<Notify>,
        tee: Option<W>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            spool,
            notify,
            pending: Vec::new(),
            bytes: Vec::new(),
            tee,
            metrics,
            dropped: 0,
            unflushed: false,
            unsynced: false,
        }
    }
}

impl<W: Write> RecordOut for SpoolOut<W> {
    fn record(&mut self, seq: u64, kind: &'static str, line: &[u8]) -> io::Result<()> {
        let json = line.strip_suffix(b"\n").unwrap_or(line);
        self.bytes.extend_from_slice(json);
        self.pending.push((seq, kind, self.bytes.len()));
        Ok(())
    }

    /// Spools the pending records, then copies them to the tee: a record on stdout is
    /// always already in the spool file.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() && !self.unflushed && !self.unsynced {
            return Ok(());
        }
        let now = monitor_record::time::unix_now_ns();
        let mut spool = lock(&self.spool);
        let mut written = 0;
        let mut start = 0;
        let mut failure = None;
        for &(seq, kind, end) in &self.pending {
            if let Err(e) = spool.append(seq, now, kind, &self.bytes[start..end]) {
                failure = Some(e);
                break;
            }
            written += 1;
            start = end;
        }
        if failure.is_none()
            && let Err(e) = spool.flush()
        {
            failure = Some(e);
        }
        // Appended but not handed to the file (or held back): retry on the next call, even
        // if no new record comes (the agent calls flush every drain round).
        self.unflushed = failure.is_some();
        self.unsynced = spool.unsynced();
        self.metrics.spool_bytes.set(spool.bytes() as i64);
        drop(spool);
        if let Some(t) = &mut self.tee {
            let mut from = 0;
            for &(_, _, end) in &self.pending[..written] {
                t.write_all(&self.bytes[from..end])?;
                t.write_all(b"\n")?;
                from = end;
            }
            t.flush()?;
        }
        self.pending.drain(..written);
        self.bytes.drain(..start);
        for p in &mut self.pending {
            p.2 -= start;
        }
        if let Some(e) = failure {
            // Keep what could not be spooled and retry next round; past the cap, drop the
            // oldest and count them (a loss the metrics show; the spool is what would carry
            // an in-band note, and it is the part failing).
            tracing::error!(error = %e, held = self.pending.len(), "spool write failed; retrying");
            if self.pending.len() > PENDING_CAP {
                let excess = self.pending.len() - PENDING_CAP;
                let cut = self.pending[excess - 1].2;
                self.pending.drain(..excess);
                self.bytes.drain(..cut);
                for p in &mut self.pending {
                    p.2 -= cut;
                }
                self.dropped += excess as u64;
                self.metrics
                    .lost
                    .get_or_create(&LossLabel {
                        stage: "spool".into(),
                        reason: "write-failed".into(),
                    })
                    .inc_by(excess as u64);
            }
        }
        self.notify.notify_one();
        Ok(())
    }
}

/// What one in-flight batch covered.
#[derive(Debug)]
struct InFlight {
    batch_id: u64,
    records: u64,
    /// The boot and highest seq of the batch's records (`None` for a batch of loss notes).
    last: Option<(String, u64)>,
    lost_ids: Vec<u64>,
}

/// What the spool may forget after `ack`: its watermark, but never past the highest record
/// actually sent in the acknowledged batches (a loss note about later seqs must not
/// acknowledge records still to be sent).
fn ack_point(ack_boot: &str, watermark: u64, done: &[InFlight]) -> Option<u64> {
    let sent = done
        .iter()
        .filter_map(|f| f.last.as_ref())
        .filter(|(b, _)| b == ack_boot)
        .map(|(_, s)| *s)
        .max()?;
    Some(watermark.min(sent))
}

/// Streams the spool to the collector until stopped.
#[derive(Debug)]
pub struct Sender {
    target: Target,
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    metrics: Arc<Metrics>,
    next_batch_id: u64,
    /// Loss notes already counted in the metrics (a note is resent on every new stream).
    counted: HashSet<u64>,
}

/// How a stream ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Stopping, and everything spooled was acknowledged.
    Drained,
    /// Stopping, and the grace period ran out with records unacknowledged.
    Deadline,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("cannot connect to the collector at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the collector ended the stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("the collector closed the stream")]
    Closed,
    #[error("the collector acknowledged batch {0}, which was not in flight")]
    UnexpectedAck(u64),
    #[error("spool: {0}")]
    Spool(#[from] super::spool::SpoolError),
    #[error("TLS files: {0}")]
    Tls(#[from] monitor_wire::tls::TlsError),
}

impl Sender {
    /// A sender for `spool` to `target`.
    pub fn new(
        target: Target,
        spool: Arc<Mutex<Spool>>,
        notify: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            target,
            spool,
            notify,
            metrics,
            next_batch_id: 1,
            counted: HashSet::new(),
        }
    }

    /// Connects, streams, reconnects, until `stop` resolves; then keeps delivering for at
    /// most `grace` (what is left stays in the spool for the next start).
    pub async fn run(
        mut self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) {
        // The stop is watched by the stream itself, so the open stream keeps delivering (and
        // its pending acks count) instead of being torn down and rebuilt.
        let (stop_tx, mut stopping) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            stop_tx.send_replace(true);
        });
        let mut backoff = Duration::from_millis(100);
        let mut last_warn: Option<Instant> = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let delivered_before = self.metrics.delivered.get();
            let res = self.stream_once(&mut stopping, &mut deadline, grace).await;
            self.metrics.delivery_connected.set(0);
            if self.metrics.delivered.get() > delivered_before {
                // That stream worked for a while: a new outage starts with short retries and
                // is logged.
                backoff = Duration::from_millis(100);
                last_warn = None;
            }
            match res {
                Ok(Ended::Drained) => return,
                Ok(Ended::Deadline) => break,
                Err(e) => {
                    self.metrics.delivery_errors.inc();
                    // Say it on the first failure and every 30 s after, not on every retry.
                    if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        last_warn = Some(Instant::now());
                        tracing::warn!(
                            error = %e,
                            pending = lock(&self.spool).pending_records(),
                            "delivery to the collector failed; records stay in the spool and \
                             are resent after reconnecting"
                        );
                    }
                }
            }
            if *stopping.borrow() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + grace);
            }
            if let Some(d) = deadline
                && tokio::time::Instant::now() + backoff >= d
            {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stopping.changed(), if deadline.is_none() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        tracing::warn!(
            pending = lock(&self.spool).pending_records(),
            "stopping with records not yet acknowledged; they stay in the spool and are sent at \
             the next start"
        );
    }

    async fn connect(&self) -> Result<Channel, StreamError> {
        let err = |reason: String| StreamError::Connect {
            url: self.target.url.clone(),
            reason,
        };
        let mut ep = Endpoint::from_shared(self.target.url.clone())
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if let Some(files) = &self.target.tls {
            ep = ep
                .tls_config(monitor_wire::tls::client_config(
                    files,
                    &self.target.server_name,
                )?)
                .map_err(|e| err(e.to_string()))?;
        }
        ep.connect()
            .await
            .map_err(|e| err(monitor_wire::error_chain(&e)))
    }

    /// One connection: returns Ok only when stopping and everything is acknowledged.
    async fn stream_once(
        &mut self,
        stopping: &mut tokio::sync::watch::Receiver<bool>,
        deadline: &mut Option<tokio::time::Instant>,
        grace: Duration,
    ) -> Result<Ended, StreamError> {
        let channel = self.connect().await?;
        let mut client = IngestClient::new(channel);
        lock(&self.spool).rewind();
        let (tx, rx) = tokio::sync::mpsc::channel::<proto::Batch>(WINDOW);
        let mut acks = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        self.metrics.delivery_connected.set(1);
        tracing::info!(url = %self.target.url, "streaming to the collector");
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut unsaved: Option<(String, u64)> = None;
        let mut last_save = Instant::now();
        let mut lost_sent: HashSet<u64> = HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Send while the window has room and the spool has something.
            while in_flight.len() < WINDOW {
                let Some((batch, flight)) = self.next_batch(&mut lost_sent)? else {
                    break;
                };
                in_flight.push_back(flight);
                if tx.send(batch).await.is_err() {
                    return Err(StreamError::Closed);
                }
            }
            if *stopping.borrow() && deadline.is_none() {
                *deadline = Some(tokio::time::Instant::now() + grace);
                tracing::info!(
                    grace_s = grace.as_secs_f64(),
                    "delivering what is spooled before stopping"
                );
            }
            if deadline.is_some() && in_flight.is_empty() {
                self.save_ack(unsaved.take(), &[])?;
                return Ok(Ended::Drained);
            }
            let stop_at = deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(24 * 3600));
            tokio::select! {
                _ = stopping.changed(), if deadline.is_none() => {}
                ack = acks.message() => {
                    let ack = ack?.ok_or(StreamError::Closed)?;
                    let Some(pos) = in_flight.iter().position(|f| f.batch_id == ack.batch_id) else {
                        return Err(StreamError::UnexpectedAck(ack.batch_id));
                    };
                    // Acks come in order; earlier batches are covered by this watermark too.
                    let done: Vec<InFlight> = in_flight.drain(..=pos).collect();
                    if let Some(point) = ack_point(&ack.boot_id, ack.watermark, &done) {
                        unsaved = Some((ack.boot_id, point));
                    }
                    let lost: Vec<u64> = done.iter().flat_map(|f| f.lost_ids.iter().copied()).collect();
                    // Saving an ack rewrites (and fsyncs) a small file under the spool's lock;
                    // do it at most every ACK_SAVE_EVERY under load. An ack not yet saved only
                    // means resends after a crash, which the collector drops. Loss notes are
                    // saved at once (rare).
                    if !lost.is_empty() || in_flight.is_empty() || last_save.elapsed() >= ACK_SAVE_EVERY {
                        self.save_ack(unsaved.take(), &lost)?;
                        last_save = Instant::now();
                    }
                    self.metrics.delivered.inc_by(done.iter().map(|f| f.records).sum());
                }
                () = self.notify.notified() => {}
                _ = tick.tick() => {}
                () = tokio::time::sleep_until(stop_at) => {
                    self.save_ack(unsaved.take(), &[])?;
                    return Ok(Ended::Deadline);
                }
            }
        }
    }

    /// Tells the spool what the collector acknowledged.
    fn save_ack(&self, ack: Option<(String, u64)>, lost: &[u64]) -> Result<(), StreamError> {
        let mut spool = lock(&self.spool);
        if let Some((boot, watermark)) = ack {
            spool.ack(&boot, watermark)?;
        }
        if !lost.is_empty() {
            spool.ack_lost(lost)?;
        }
        self.metrics.spool_bytes.set(spool.bytes() as i64);
        Ok(())
    }

    /// The next batch from the spool, with loss notes not yet sent on this stream.
    fn next_batch(
        &mut self,
        lost_sent: &mut HashSet<u64>,
    ) -> Result<Option<(proto::Batch, InFlight)>, StreamError> {
        let mut spool = lock(&self.spool);
        let batch = spool.next_batch(BATCH_RECORDS, BATCH_BYTES)?;
        let lost: Vec<Lost> = spool
            .pending_lost()
            .iter()
            .filter(|l| !lost_sent.contains(&l.id))
            .cloned()
            .collect();
        drop(spool);
        if batch.is_none() && lost.is_empty() {
            return Ok(None);
        }
        let SpoolBatch { boot_id, records } = batch.unwrap_or_else(|| SpoolBatch {
            boot_id: "".into(),
            records: Vec::new(),
        });
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
        let flight = InFlight {
            batch_id,
            records: records.len() as u64,
            last: records.last().map(|r| (boot_id.to_string(), r.seq)),
            lost_ids: lost.iter().map(|l| l.id).collect(),
        };
        lost_sent.extend(flight.lost_ids.iter().copied());
        for l in lost.iter().filter(|l| self.counted.insert(l.id)) {
            self.metrics
                .lost
                .get_or_create(&LossLabel {
                    stage: "spool".into(),
                    reason: l.reason.source().trim_start_matches("spool/").into(),
                })
                .inc_by(l.count);
        }
        let batch = proto::Batch {
            node: self.target.node.clone(),
            boot_id: boot_id.to_string(),
            records: records
                .into_iter()
                .map(|r| proto::Record {
                    seq: r.seq,
                    kind: r.kind,
                    time_unix_nano: r.time_ns,
                    // The agent spooled UTF-8 JSON; a corrupted byte that passed the CRC would
                    // still not panic here.
                    json: String::from_utf8(r.payload)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                })
                .collect(),
            lost: lost
                .into_iter()
                .map(|l| proto::LostRecords {
                    boot_id: l.boot_id,
                    source: l.reason.source().into(),
                    count: l.count,
                    first_seq: l.first_seq,
                    last_seq: l.last_seq,
                    window_start_unix_nano: l.first_time_ns,
                    window_end_unix_nano: l.last_time_ns,
                })
                .collect(),
            batch_id,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        };
        Ok(Some((batch, flight)))
    }
}

/// The spool directory's default: under the node's state directory.
pub fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/lib/monitor/spool")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight(last: Option<(&str, u64)>) -> InFlight {
        InFlight {
            batch_id: 1,
            records: 1,
            last: last.map(|(b, s)| (b.to_owned(), s)),
            lost_ids: Vec::new(),
        }
    }

    #[test]
    fn an_ack_never_forgets_records_not_yet_sent() {
        // The collector's watermark jumped to 536 because of a loss note about 535-536, but
        // only seqs up to 100 were sent: 101-534 must stay in the spool.
        assert_eq!(ack_point("b", 536, &[flight(Some(("b", 100)))]), Some(100));
        assert_eq!(ack_point("b", 80, &[flight(Some(("b", 100)))]), Some(80));
        assert_eq!(
            ack_point(
                "b",
                300,
                &[flight(Some(("b", 100))), flight(Some(("b", 250)))]
            ),
            Some(250)
        );
        // A batch of loss notes only, or another boot's records: nothing to forget.
        assert_eq!(ack_point("", 0, &[flight(None)]), None);
        assert_eq!(ack_point("b", 90, &[flight(Some(("a", 100)))]), None);
    }
}
