//! The subcommands' edges: turn parsed arguments into running parts, with `anyhow` errors
//! that say what to do. `main.rs` only parses and dispatches.

pub mod agent;
pub mod analyze;
pub mod certs;
pub mod collector;
pub mod observe;
pub mod policy;
