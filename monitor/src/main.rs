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
        } => return lint_policies(&files),
        Command::Policy {
            cmd: PolicyCommand::DryRun(args),
        } => cmd::policy::dry_run(args),
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

/// `monitor policy lint`: diagnostics on stderr, `FILE: ok (...)` on stdout; 1 if any file is bad.
fn lint_policies(files: &[std::path::PathBuf]) -> std::process::ExitCode {
    let (out, err) = (std::io::stdout(), std::io::stderr());
    match monitor_policy::lint::lint_files(files, &mut out.lock(), &mut err.lock()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot write the report: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
