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
        let records = match reader.read_after(cursor, PAGE) {
            Ok(r) => r,
            Err(e) => {
                // The store is busy or failing: retry, never give up on the sink.
                metrics.sink_errors.get_or_create(&label).inc();
                tracing::warn!(sink = %name, error = %e, "reading the store for the sink failed; retrying");
                pause(backoff, stop, stopping_since.is_some());
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
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
                save_cursor(&mut cursors, &name, cursor);
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
                    save_cursor(&mut cursors, &name, cursor);
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
                pause(backoff, stop, stopping_since.is_some());
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Sleeps `d`, in steps, returning early when the collector starts stopping (so the grace
/// period is not spent in a 30 s backoff).
fn pause(d: Duration, stop: &AtomicBool, already_stopping: bool) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) && !already_stopping {
            return;
        }
        std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
    }
}

/// Saves the cursor; a failure is logged and the cursor stays in memory (after a restart the
/// sink's own `last_delivered`, or a few records written again, cover the difference).
fn save_cursor(store: &mut Store, name: &str, cursor: i64) {
    if let Err(e) = store.set_sink_cursor(name, cursor) {
        tracing::warn!(sink = %name, error = %e, "saving the sink's cursor failed");
    }
}
