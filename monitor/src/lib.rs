//! The `monitor` binary's library: the command line and the edges of each subcommand, and the
//! offline tools composed from the other crates.
//!
//! - [`cli`]: command-line definitions (clap); [`cmd`]: each subcommand's edge (anyhow).
//! - [`client`]: the CLI's connection to the collector and its terminal output.
//! - [`analyze`]: packet captures through the agent's pipeline (`monitor analyze`).
//! - [`dry_run`]: the stored history under a candidate policy (`monitor policy dry-run`).
//! - [`stored`]: the parts of stored records the offline tools read back.
//! - [`suggest`]: a draft policy from the stored history (`monitor policy suggest`).
//! - [`html`]: the report as one self-contained HTML page (`monitor report --html`).
//!
//! The roles live in their own crates under `monitor/crates/`: `monitor-record` (vocabulary),
//! `monitor-policy`, `monitor-wire`, `monitor-agent`, `monitor-collector`. Nothing imports
//! this crate.
pub mod analyze;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod dry_run;
pub mod html;
pub mod stored;
pub mod suggest;
