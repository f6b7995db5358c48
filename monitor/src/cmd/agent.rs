//! `monitor agent`: identity, metrics, the drain loop on its own thread, and (with
//! `--collector`) the spool and the sender.

use std::{
    io::BufWriter,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use monitor_agent::{
    agent, agent::Config, agent::WriteOut, delivery::sender::Sender, delivery::sender::SpoolOut,
    delivery::sender::Target, delivery::spool::Spool, delivery::spool::SpoolOptions,
    identity::Inventory, identity::PodResolver, identity::kube::KubeResolver, mesh::MeshConfig,
    mesh::MeshMode, metrics::Metrics,
};

use crate::{cli::AgentArgs, cli::MeshArg, client};

/// How long a stopping agent keeps delivering what is spooled.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent until SIGINT/SIGTERM.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut cfg = Config::new(args.cgroup.clone());
    cfg.policy = args.policy.clone();
    cfg.ready_file = args.ready_file.clone();
    cfg.idle_timeout = Duration::from_secs(args.idle_timeout);
    cfg.drain_every = Duration::from_millis(args.drain_ms.max(1));
    cfg.mesh = MeshConfig {
        mode: match args.mesh {
            MeshArg::Auto => MeshMode::Auto,
            MeshArg::Istio => MeshMode::Istio,
            MeshArg::None => MeshMode::None,
        },
        proxy_uid: args.mesh_proxy_uid,
        proxy_gid: args.mesh_proxy_gid,
        redirect_ports: args.mesh_redirect_ports.clone(),
        inbound_sources: args.mesh_inbound_sources.clone(),
    };
    // Check delivery settings before touching the kernel: a typo fails fast.
    let delivery = match &args.collector {
        Some(url) => {
            let tls = client::tls_files(&args.tls, "agent")?;
            let host = client::check_url(url, tls.is_some())?;
            if tls.is_none() {
                tracing::warn!(
                    "INSECURE: delivering records to {url} in the clear, without \
                     authentication (--insecure); never do this outside a lab"
                );
            }
            let opts = SpoolOptions {
                max_bytes: args.spool_max_mib.max(1) << 20,
                ..SpoolOptions::default()
            };
            let (mut spool, found) = Spool::open(&args.spool_dir, opts)
                .with_context(|| format!("cannot use the spool {}", args.spool_dir.display()))?;
            tracing::info!(dir = %args.spool_dir.display(), ?found, "spool opened");
            spool
                .begin_boot(&cfg.boot_id)
                .context("cannot start this boot in the spool")?;
            Some((
                Arc::new(Mutex::new(spool)),
                url.clone(),
                tls,
                args.tls.server_name.clone().unwrap_or(host),
            ))
        }
        None => None,
    };
    // What this kernel offers: one INFO line, a WARN per missing feature; refuse to start
    // without a required one.
    let features = monitor_agent::probe::Report::probe();
    features.log();
    features.check()?;
    let stop = agent::stop_flag();
    // Two threads: the Kubernetes watches and the sender keep running while the drain loop
    // works.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the runtime")?;
    rt.block_on(async move {
        let mut identity: Box<dyn PodResolver> = match (&args.inventory, args.kubernetes) {
            (Some(inv), _) => {
                Box::new(Inventory::load(inv, &cfg.cgroup).context("the inventory was rejected")?)
            }
            (None, _) => {
                let node = args.node_name.clone().unwrap_or_default();
                let kube = KubeResolver::connect(node, cfg.cgroup.clone())
                    .await
                    .context("cannot reach the Kubernetes API")?;
                if !kube.wait_synced(Duration::from_secs(30)).await {
                    tracing::warn!(
                        "the first lists from the API server have not arrived after 30 s; \
                         starting anyway, records say why identity is missing until they do"
                    );
                }
                Box::new(kube)
            }
        };
        let metrics = Metrics::new();
        if let Some(addr) = args.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            tokio::spawn(monitor_wire::exporter::serve(listener, metrics.clone()));
        }
        let notify = Arc::new(tokio::sync::Notify::new());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let sender = delivery.as_ref().map(|(spool, url, tls, server_name)| {
            metrics
                .spool_max_bytes
                .set((args.spool_max_mib.max(1) << 20) as i64);
            let s = Sender::new(
                Target {
                    url: url.clone(),
                    tls: tls.clone(),
                    server_name: server_name.clone(),
                    node: identity.node().to_owned(),
                },
                spool.clone(),
                notify.clone(),
                metrics.clone(),
            );
            tokio::spawn(s.run(
                async move {
                    let _ = done_rx.await;
                },
                STOP_GRACE,
            ))
        });
        let loop_stop = stop.clone();
        let tee = args.stdout;
        let drain_only = args.drain_only;
        let spool = delivery.map(|(s, ..)| s);
        let loop_metrics = metrics.clone();
        let mut worker = tokio::task::spawn_blocking(move || {
            let stdout = || BufWriter::new(std::io::stdout().lock());
            match spool {
                None if drain_only => {
                    agent::run_drain_only(&cfg, identity.as_mut(), &loop_stop, &mut stdout())
                }
                Some(spool) => {
                    let mut out = SpoolOut::new(spool, notify, tee.then(stdout), loop_metrics.clone());
                    agent::run(&cfg, identity.as_mut(), loop_metrics, &loop_stop, &mut out)
                }
                None => {
                    let mut out = WriteOut(stdout());
                    agent::run(&cfg, identity.as_mut(), loop_metrics, &loop_stop, &mut out)
                }
            }
        });
        let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
        let res = tokio::select! {
            res = &mut worker => res,
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); stop.store(true, Ordering::Relaxed); worker.await }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); stop.store(true, Ordering::Relaxed); worker.await }
        };
        // The loop has written its last records; let the sender deliver them (bounded).
        let _ = done_tx.send(());
        if let Some(s) = sender {
            let _ = tokio::time::timeout(STOP_GRACE + Duration::from_secs(1), s).await;
        }
        res.context("agent thread panicked")?.map_err(Into::into)
    })
}
