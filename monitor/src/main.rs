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
    cli::{AgentArgs, Cli, Command},
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

fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let mut cfg = Config::new(args.inventory, args.cgroup);
    cfg.ready_file = args.ready_file;
    cfg.idle_timeout = Duration::from_secs(args.idle_timeout);
    cfg.drain_every = Duration::from_millis(args.drain_ms.max(1));
    let stop = agent::stop_flag();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the signal-handling runtime")?;
    rt.block_on(async move {
        let loop_stop = stop.clone();
        let mut worker = tokio::task::spawn_blocking(move || {
            let mut out = BufWriter::new(std::io::stdout().lock());
            agent::run(&cfg, &loop_stop, &mut out)
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
