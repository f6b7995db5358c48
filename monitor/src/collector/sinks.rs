//! Runs each SIEM sink on its own thread, fed from the store by its own cursor: ingest never
//! waits for a sink, and a failing sink neither blocks nor loses anything for the others.
//!
//! Per sink: read up to [`PAGE`] records after the cursor, write them, save the cursor. On an
//! error the cursor moves past the prefix the sink did deliver, the error is counted and
//! logged, and the same records are retried after a backoff (250 ms doubling to 30 s). After a
//! crash a file sink reports the last record it holds, and the cursor moves past it, so a
//! record is never written twice.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{
    metrics::{CollectorMetrics, SinkLabel},
    store::{Store, StoreError, StoreOptions, StoreReader},
};
use crate::sink::Sink;

/// Records read per write.
pub const PAGE: usize = 512;

/// Starts `sink` on its own thread. It stops when `stop` is set and everything stored has been
/// delivered (or after `grace` once stopping).
pub fn spawn(
    mut sink: Box<dyn Sink>,
    store_path: PathBuf,
    stored: watch::Receiver<i64>,
    metrics: Arc<CollectorMetrics>,
    stop: Arc<AtomicBool>,
    grace: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name(format!("sink {}", sink.name()))
        .spawn(move || {
            let name = sink.name().to_owned();
            if let Err(e) = run(
                sink.as_mut(),
                &store_path,
                stored,
                &metrics,
                &stop,
                grace,
                &rt,
            ) {
                tracing::error!(sink = %name, error = %e, "sink stopped: cannot use the store");
            }
        })
}

fn run(
    sink: &mut dyn Sink,
    store_path: &std::path::Path,
    mut stored: watch::Receiver<i64>,
    metrics: &CollectorMetrics,
    stop: &AtomicBool,
    grace: Duration,
    rt: &tokio::runtime::Handle,
) -> Result<(), StoreError> {
    let name = sink.name().to_owned();
    let label = SinkLabel { sink: name.clone() };
    let mut cursors = Store::open(store_path, StoreOptions::default())?;
    let reader = StoreReader::open(store_path)?;
    let mut cursor = cursors.as_reader().sink_cursor(&name)?;
    match sink.last_delivered() {
        Ok(Some(key)) => {
            if let Some(id) = reader.lookup_id(&key.node, &key.boot_id, key.seq)?
                && id > cursor
            {
                tracing::info!(sink = %name, from = cursor, to = id,
                    "the sink already holds records past its saved cursor (a crash between \
                     writing and saving); resuming after them");
                cursor = id;
                cursors.set_sink_cursor(&name, cursor)?;
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(sink = %name, error = %e,
            "cannot tell what the sink already holds; resuming from the saved cursor"),
    }
    tracing::info!(sink = %name, cursor, "sink started");
    let mut backoff = Duration::from_millis(250);
    let mut last_log: Option<Instant> = None;
    let mut stopping_since: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) && stopping_since.is_none() {
            stopping_since = Some(Instant::now());
        }
        if stopping_since.is_some_and(|t| t.elapsed() >= grace) {
            return Ok(());
        }
        let records = reader.read_after(cursor, PAGE)?;
        let max = *stored.borrow();
        metrics
            .sink_lag
            .get_or_create(&label)
            .set((max - cursor).max(0));
        if records.is_empty() {
            if stopping_since.is_some() {
                return Ok(());
            }
            // Wait for new records (or a second, to notice `stop`).
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), stored.changed()).await
            });
            continue;
        }
        match sink.write(&records) {
            Ok(()) => {
                cursor = records.last().map_or(cursor, |r| r.id);
                cursors.set_sink_cursor(&name, cursor)?;
                metrics
                    .sink_delivered
                    .get_or_create(&label)
                    .inc_by(records.len() as u64);
                if last_log.is_some() {
                    tracing::info!(sink = %name, "sink recovered");
                    last_log = None;
                }
                backoff = Duration::from_millis(250);
            }
            Err(e) => {
                let done = e.delivered.min(records.len());
                if done > 0 {
                    cursor = records[done - 1].id;
                    cursors.set_sink_cursor(&name, cursor)?;
                    metrics
                        .sink_delivered
                        .get_or_create(&label)
                        .inc_by(done as u64);
                }
                metrics.sink_errors.get_or_create(&label).inc();
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    last_log = Some(Instant::now());
                    tracing::warn!(sink = %name, error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "sink write failed; retrying (records stay in the store)");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
