//! `monitor`: parses the command line and dispatches to `monitor::cmd`.

use std::io::Write as _;

use clap::Parser as _;
use monitor::{
    cli::{Cli, Command, PolicyCommand},
    cmd,
};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => cmd::agent::run(args),
        Command::Collector(args) => cmd::collector::run(args),
        Command::Observe(args) => runtime().and_then(|rt| rt.block_on(cmd::observe::observe(args))),
        Command::Report(args) => runtime().and_then(|rt| rt.block_on(cmd::observe::report(args))),
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Certs { cmd: c } => cmd::certs::run(c),
        Command::Policy {
            cmd: PolicyCommand::Lint { files },
        } => return cmd::policy::lint(&files),
        Command::Policy {
            cmd: PolicyCommand::DryRun(args),
        } => cmd::policy::dry_run(args),
        Command::Policy {
            cmd: PolicyCommand::Suggest(args),
        } => cmd::policy::suggest(args),
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
