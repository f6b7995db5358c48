//! The collector's gRPC server: Ingest (one stream per agent; acknowledged after commit),
//! Observe (history then live tail) and Report, over mTLS (or, loudly, plain TCP).
//!
//! One writer thread owns the store's write connection: ingest handlers hand it batches and
//! wait for the commit, so an Ack always means "durable". Readers (Observe, Report, sinks) use
//! their own connections; SQLite's WAL lets them read while the writer commits. A `watch`
//! channel carries the highest stored row id, waking followers and sinks.

use std::{net::SocketAddr, path::PathBuf, pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{
    metrics::CollectorMetrics,
    report,
    store::{Inserted, Store, StoreError, StoreOptions, StoreReader},
};
use monitor_wire::{
    proto, proto::Ack, proto::Batch, proto::ObserveRequest, proto::ObservedRecord,
    proto::ReportRequest, proto::ReportResponse, proto::ingest_server::Ingest,
    proto::ingest_server::IngestServer, proto::observe_server::Observe,
    proto::observe_server::ObserveServer, proto::report_server::Report,
    proto::report_server::ReportServer, tls::ServerTls,
};

/// Largest gRPC message accepted (a batch is at most ~1 MiB from our agents).
const MAX_MESSAGE: usize = 16 << 20;

/// A batch for the writer thread, and where to send the outcome.
struct WriteJob {
    node: String,
    boot_id: String,
    records: Vec<proto::Record>,
    lost: Vec<proto::LostRecords>,
    reply: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// Handle to the writer thread.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<WriteJob>,
    /// Highest stored row id; followers and sinks wait on changes.
    pub stored: watch::Receiver<i64>,
}

impl std::fmt::Debug for WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteJob")
            .field("node", &self.node)
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No thread.
    #[error("cannot start the store writer thread: {0}")]
    Thread(std::io::Error),
}

/// How often old records are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

impl Writer {
    /// Opens the store and starts the writer thread.
    pub fn start(
        path: PathBuf,
        opts: StoreOptions,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<Self, WriterError> {
        let mut store = Store::open(&path, opts)?;
        let (tx, mut rx) = mpsc::channel::<WriteJob>(64);
        let (stored_tx, stored) = watch::channel(store.as_reader().max_id()?);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut last_retention = std::time::Instant::now() - RETENTION_EVERY;
                while let Some(job) = rx.blocking_recv() {
                    check_gap(&store, &job, &metrics);
                    let res = store.insert_batch(&job.node, &job.boot_id, &job.records, &job.lost);
                    match &res {
                        Ok(ins) => {
                            metrics.ingested(u64::from(ins.stored), u64::from(ins.duplicates));
                            if let Some(ids) = &ins.new_ids {
                                let id = *ids.end();
                                stored_tx.send_replace(id);
                            }
                        }
                        Err(e) => {
                            metrics.store_errors.inc();
                            tracing::error!(error = %e, node = %job.node, "storing a batch failed; \
                                the agent keeps it and resends");
                        }
                    }
                    let _ = job.reply.send(res);
                    if last_retention.elapsed() >= RETENTION_EVERY {
                        last_retention = std::time::Instant::now();
                        match store.apply_retention(monitor_record::time::unix_now_ns()) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(deleted = n, "retention: old records deleted"),
                            Err(e) => tracing::error!(error = %e, "retention failed"),
                        }
                    }
                }
            })
            .map_err(WriterError::Thread)?;
        Ok(Self { jobs: tx, stored })
    }

    async fn write(
        &self,
        node: String,
        boot_id: String,
        records: Vec<proto::Record>,
        lost: Vec<proto::LostRecords>,
    ) -> Result<Inserted, Status> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(WriteJob {
                node,
                boot_id,
                records,
                lost,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("the collector's store writer stopped"))?;
        rx.await
            .map_err(|_| Status::unavailable("the collector's store writer stopped"))?
            .map_err(|e| Status::unavailable(format!("store: {e}")))
    }
}

/// Sequence numbers skipped between what the store holds of (node, boot) and this batch's
/// first record, minus what the batch's loss notes cover: records that vanished without a
/// note. Never expected from our agents; logged and counted so it cannot pass silently.
fn uncovered_gap(prev: u64, job: &WriteJob) -> Option<(u64, u64)> {
    let first = job.records.first()?.seq;
    if prev == 0 || first <= prev + 1 {
        return None;
    }
    let (mut lo, hi) = (prev + 1, first - 1);
    let mut notes: Vec<(u64, u64)> = job
        .lost
        .iter()
        .filter(|l| l.boot_id.is_empty() || l.boot_id == job.boot_id)
        .map(|l| (l.first_seq, l.last_seq))
        .collect();
    notes.sort_unstable();
    for (a, b) in notes {
        if a <= lo && b >= lo {
            lo = b.saturating_add(1);
        }
    }
    (lo <= hi).then_some((lo, hi))
}

fn check_gap(store: &Store, job: &WriteJob, metrics: &CollectorMetrics) {
    let Ok(prev) = store.as_reader().watermark(&job.node, &job.boot_id) else {
        return;
    };
    if let Some((lo, hi)) = uncovered_gap(prev, job) {
        metrics.sequence_gaps.inc_by(hi - lo + 1);
        tracing::warn!(node = %job.node, boot_id = %job.boot_id, first = lo, last = hi,
            "records missing from the agent's sequence with no loss note");
    }
}

/// The three services.
#[derive(Debug, Clone)]
pub struct Services {
    writer: Writer,
    store_path: PathBuf,
    metrics: Arc<CollectorMetrics>,
    /// Becomes true when the collector stops: open streams end so the server can return.
    stopping: watch::Receiver<bool>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The client certificate's subject for logs, or the address.
fn peer_name<T>(req: &Request<T>) -> String {
    let addr = req
        .remote_addr()
        .map_or_else(|| "?".to_owned(), |a| a.to_string());
    match req.peer_certs() {
        Some(certs) if !certs.is_empty() => format!("{addr} (client certificate presented)"),
        _ => addr,
    }
}

#[tonic::async_trait]
impl Ingest for Services {
    type StreamStream = BoxStream<Ack>;

    async fn stream(
        &self,
        req: Request<Streaming<Batch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = peer_name(&req);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<Ack, Status>>(32);
        let writer = self.writer.clone();
        let metrics = self.metrics.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            metrics.agents_connected.inc();
            let mut node_seen = String::new();
            let end = loop {
                let next = tokio::select! {
                    m = inbound.message() => m,
                    _ = stopping.changed() => {
                        // The agent reconnects to the next collector and resends what was
                        // not acknowledged.
                        let _ = tx.send(Err(Status::unavailable("the collector is stopping"))).await;
                        break "the collector is stopping".to_owned();
                    }
                };
                let batch = match next {
                    Ok(Some(b)) => b,
                    Ok(None) => break "the agent closed the stream".to_owned(),
                    Err(e) => break format!("stream error: {e}"),
                };
                if batch.node.is_empty() || (batch.boot_id.is_empty() && !batch.records.is_empty())
                {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "a batch needs `node`, and `boot_id` when it carries records",
                        )))
                        .await;
                    break "invalid batch (no node or boot_id)".to_owned();
                }
                if node_seen != batch.node {
                    tracing::info!(%peer, node = %batch.node, boot_id = %batch.boot_id,
                        version = %batch.agent_version, "agent streaming");
                    node_seen.clone_from(&batch.node);
                }
                metrics.batches.inc();
                let (batch_id, boot_id) = (batch.batch_id, batch.boot_id.clone());
                let res = writer
                    .write(batch.node, batch.boot_id, batch.records, batch.lost)
                    .await;
                let msg = res.map(|ins| Ack {
                    batch_id,
                    boot_id,
                    watermark: ins.watermark,
                    stored: ins.stored,
                    duplicates: ins.duplicates,
                });
                let failed = msg.is_err();
                if tx.send(msg).await.is_err() || failed {
                    break "ending the stream after a store error".to_owned();
                }
            };
            metrics.agents_connected.dec();
            tracing::info!(%peer, node = %node_seen, reason = %end, "agent stream ended");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Rows fetched per Observe query.
const OBSERVE_PAGE: usize = 500;

#[tonic::async_trait]
impl Observe for Services {
    type ObserveStream = BoxStream<ObservedRecord>;

    async fn observe(
        &self,
        req: Request<ObserveRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let req = req.into_inner();
        if !req.min_severity.is_empty()
            && !["low", "medium", "high", "critical"].contains(&req.min_severity.as_str())
        {
            return Err(Status::invalid_argument(format!(
                "min_severity {:?}: use low, medium, high or critical",
                req.min_severity
            )));
        }
        let path = self.store_path.clone();
        let reader = tokio::task::spawn_blocking(move || StoreReader::open(&path))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let reader = Arc::new(std::sync::Mutex::new(reader));
        let mut stored = self.writer.stored.clone();
        // Follow without `since`: only what is stored from now on.
        let mut after = if req.follow && req.since_unix_nano == 0 {
            *stored.borrow_and_update()
        } else {
            0
        };
        let (tx, rx) = mpsc::channel::<Result<ObservedRecord, Status>>(256);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut sent: u64 = 0;
            let limit = u64::from(req.limit);
            loop {
                // Rows up to this id are looked at by the query below (matching or not): with
                // a rare filter, following must not rescan them on every commit.
                let seen_upto = *stored.borrow_and_update();
                let (r, q) = (reader.clone(), req.clone());
                let page = tokio::task::spawn_blocking(move || {
                    let r = match r.lock() {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                    r.observe(&q, after, OBSERVE_PAGE)
                })
                .await;
                let page = match page {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                let full = page.len() == OBSERVE_PAGE;
                for rec in page {
                    after = after.max(rec.id);
                    if tx.send(Ok(rec)).await.is_err() {
                        return; // the client went away
                    }
                    sent += 1;
                    if limit > 0 && sent >= limit {
                        return;
                    }
                }
                if full {
                    continue;
                }
                // Everything committed before the query was looked at.
                after = after.max(seen_upto);
                if !req.follow {
                    return;
                }
                tokio::select! {
                    changed = stored.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    _ = stopping.changed() => {
                        let _ = tx.send(Err(Status::unavailable("the collector is stopping"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Report for Services {
    async fn report(
        &self,
        req: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let req = req.into_inner();
        if req.subject.is_none() {
            return Err(Status::invalid_argument(
                "a report needs a subject: path, rule or pod",
            ));
        }
        let path = self.store_path.clone();
        let resp = tokio::task::spawn_blocking(move || {
            let reader = StoreReader::open(&path)?;
            report::report(&reader, &req)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(resp))
    }
}

/// Listening and TLS settings of the server.
#[derive(Debug)]
pub struct Listen {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// mTLS; `None` means `--insecure`.
    pub tls: Option<Arc<ServerTls>>,
}

/// Serves the three services until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerTls>>,
    writer: Writer,
    store_path: PathBuf,
    metrics: Arc<CollectorMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stopping) = watch::channel(false);
    let svc = Services {
        writer,
        store_path,
        metrics: metrics.clone(),
        stopping,
    };
    // On shutdown, first end the open streams (agents, `observe -f`): the server returns only
    // once every connection is closed.
    let shutdown = async move {
        shutdown.await;
        stop_tx.send_replace(true);
        // Give the streams a moment to send their last Ack and status.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(
            IngestServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(ObserveServer::new(svc.clone()).max_encoding_message_size(MAX_MESSAGE))
        .add_service(ReportServer::new(svc));
    match tls {
        Some(tls) => {
            let incoming = tls_incoming(listener, tls, metrics);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

/// Accepted TCP connections after a successful mTLS handshake. Handshakes run in their own
/// tasks (10 s limit), so a slow or hostile client cannot stall the accept loop; failures are
/// logged with the peer's address and counted.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerTls>,
    metrics: Arc<CollectorMetrics>,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>>
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let (tx, metrics) = (tx.clone(), metrics.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failures.inc();
                        tracing::warn!(peer = %addr, error = %e,
                            "TLS handshake refused (a client certificate signed by the \
                             collector's CA is required)");
                    }
                    Err(_) => {
                        metrics.tls_handshake_failures.inc();
                        tracing::warn!(peer = %addr, "TLS handshake timed out after 10 s");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(first: u64, lost: &[(u64, u64)]) -> WriteJob {
        WriteJob {
            node: "n".into(),
            boot_id: "b".into(),
            records: vec![proto::Record {
                seq: first,
                ..Default::default()
            }],
            lost: lost
                .iter()
                .map(|&(a, b)| proto::LostRecords {
                    first_seq: a,
                    last_seq: b,
                    ..Default::default()
                })
                .collect(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_gap_is_reported_unless_loss_notes_cover_it() {
        assert_eq!(uncovered_gap(10, &job(11, &[])), None);
        assert_eq!(
            uncovered_gap(0, &job(500, &[])),
            None,
            "first batch of a boot"
        );
        assert_eq!(uncovered_gap(10, &job(21, &[])), Some((11, 20)));
        assert_eq!(uncovered_gap(10, &job(21, &[(11, 20)])), None);
        assert_eq!(uncovered_gap(10, &job(21, &[(11, 14), (15, 20)])), None);
        assert_eq!(uncovered_gap(10, &job(21, &[(11, 14)])), Some((15, 20)));
        assert_eq!(uncovered_gap(10, &job(21, &[(12, 20)])), Some((11, 20)));
    }
}
