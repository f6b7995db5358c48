//! `monitor collector`: store writer, sinks, gRPC server, metrics.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::CollectorArgs;

use monitor_collector::{
    metrics::CollectorMetrics, server, sink::SinkSpec, sinks, store::StoreOptions,
};

use monitor_wire::{tls::ServerTls, tls::TlsFiles};

/// How long stopping sinks keep delivering what is stored.
const SINK_GRACE: Duration = Duration::from_secs(5);

/// Runs the collector until SIGINT/SIGTERM.
pub fn run(args: CollectorArgs) -> anyhow::Result<()> {
    let tls = if args.insecure {
        tracing::warn!(
            "INSECURE: --insecure serves plain TCP on {} without client authentication: anyone \
             who can connect can write records and read every stored record. Never use this \
             outside a lab.",
            args.listen
        );
        None
    } else {
        let files = match TlsFiles::resolve(
            args.tls_dir.as_deref(),
            "collector",
            args.ca.as_deref(),
            args.cert.as_deref(),
            args.key.as_deref(),
        ) {
            Some(files) => files,
            None => bail!(
                "the collector needs its certificate, key and the CA that signs clients: give \
                 --tls-dir DIR (ca.pem, collector.pem, collector.key; `monitor certs init` makes \
                 them) or --ca/--cert/--key; --insecure serves without TLS (lab only)"
            ),
        };
        Some(Arc::new(ServerTls::load(files)?))
    };
    let sinks = args
        .sinks
        .iter()
        .map(|s| SinkSpec::parse(s).with_context(|| format!("--sink {s:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(dir) = args.store.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the store's directory {}", dir.display()))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the runtime")?;
    rt.block_on(async move {
        let metrics = CollectorMetrics::new();
        let opts = StoreOptions {
            retention: match args.retention_days {
                0 => Duration::MAX,
                d => Duration::from_secs(d.saturating_mul(86_400)),
            },
        };
        let writer = server::Writer::start(args.store.clone(), opts, metrics.clone())
            .with_context(|| format!("cannot open the store {}", args.store.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut sink_threads = Vec::new();
        for spec in &sinks {
            let sink = spec.build().with_context(|| format!("cannot start sink {spec:?}"))?;
            sink_threads.push(
                sinks::spawn(
                    sink,
                    args.store.clone(),
                    writer.stored.clone(),
                    metrics.clone(),
                    stop.clone(),
                    SINK_GRACE,
                )
                .context("cannot start a sink thread")?,
            );
        }
        if let Some(addr) = args.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            tokio::spawn(monitor_wire::exporter::serve(listener, metrics.clone()));
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(
            addr = %listener.local_addr().map_or_else(|_| args.listen.to_string(), |a| a.to_string()),
            store = %args.store.display(),
            sinks = sinks.len(),
            mtls = tls.is_some(),
            "collector listening"
        );
        if let Some(f) = &args.ready_file {
            std::fs::write(f, format!("{}\n", std::process::id()))
                .with_context(|| format!("cannot write {}", f.display()))?;
        }
        let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
        let (signalled_tx, signalled) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
            let _ = signalled_tx.send(());
        };
        let serving = server::serve(listener, tls, writer, args.store.clone(), metrics, shutdown);
        tokio::select! {
            r = serving => r.context("the gRPC server failed")?,
            () = async {
                let _ = signalled.await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            } => tracing::warn!("connections still open 10 s after the stop signal; stopping anyway"),
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in sink_threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        Ok(())
    })
}
