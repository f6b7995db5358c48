//! `monitor`: parses the command line and dispatches. Everything else lives in the library.

use std::{
    io::{BufWriter, Write as _},
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser as _;
use monitor::{
    agent::{self, Config},
    cli::{AgentArgs, Cli, Command, PolicyCommand},
    identity::{Inventory, PodResolver, kube::KubeResolver},
    metrics::{self, Metrics},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => run_agent(args),
        Command::Policy {
            cmd: PolicyCommand::Lint { files },
        } => return lint_policies(&files),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `monitor policy lint`: diagnostics on stderr, `FILE: ok (...)` on stdout; 1 if any file is bad.
fn lint_policies(files: &[std::path::PathBuf]) -> std::process::ExitCode {
    let (out, err) = (std::io::stdout(), std::io::stderr());
    match monitor::policy::lint::lint_files(files, &mut out.lock(), &mut err.lock()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot write the report: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let mut cfg = Config::new(args.cgroup);
    cfg.policy = args.policy;
    cfg.ready_file = args.ready_file;
    cfg.idle_timeout = Duration::from_secs(args.idle_timeout);
    cfg.drain_every = Duration::from_millis(args.drain_ms.max(1));
    let stop = agent::stop_flag();
    // Two threads: the Kubernetes watches keep running while the drain loop works.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the signal-handling runtime")?;
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
            tokio::spawn(metrics::serve(listener, metrics.clone()));
        }
        let loop_stop = stop.clone();
        let mut worker = tokio::task::spawn_blocking(move || {
            let mut out = BufWriter::new(std::io::stdout().lock());
            agent::run(&cfg, identity.as_mut(), metrics, &loop_stop, &mut out)
        });
        let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
        tokio::select! {
            res = &mut worker => return res.context("agent thread panicked")?.map_err(Into::into),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        stop.store(true, Ordering::Relaxed);
        worker
            .await
            .context("agent thread panicked")?
            .map_err(Into::into)
    })
}
