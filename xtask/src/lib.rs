//! `cargo xtask`: everything around the product that is not the product.
//!
//! This crate owns the developer and CI workflow of the workspace:
//!
//! - [`setup`]: installs (idempotently) what a fresh machine needs to build and test the
//!   monitor: Debian packages, the nightly toolchain with `rust-src`, `bpf-linker`; then checks
//!   the kernel side (cgroup v2, BTF).
//! - [`inventory`]: the lab's view of the inventory YAML file that the agent also reads.
//! - [`lab`]: the local "node" built from network namespaces, veth pairs and cgroups, with real
//!   servers (nginx, a Python HTTP server, a TCP echo server) in the pods. The integration tests
//!   (`tests/`) use it as a library.
//! - [`demo`]: replays the Vantage incident against the lab with the real agent.
//! - [`bench`]: `cargo xtask bench`, the monitor's overhead measured as ratios (docs/design.md#performance-contract).
//! - [`harness`]: `monitor agent` and `monitor collector` as child processes (start, ready
//!   file, stdout lines, stderr log, stop by PID), for the demo, the bench and the lab tests.
//! - [`ci`]: the test pipeline behind `cargo xtask test` (and `.ci/run`).
//! - [`vmtest`]: `cargo xtask vm-test`, the lab tests in a qemu VM on Debian's 6.1 kernel.
//! - [`packages`]: the package and test-target names both pipelines build (so `ci` uses
//!   `vmtest`, and `vmtest` does not use `ci`).
//!
//! It deliberately does not depend on the `monitor` crate: building `monitor` builds the eBPF
//! programs, which needs the toolchain that `cargo xtask setup` installs.

/// `println!` for xtask's messages. In the `cargo xtask` binary (after
/// [`util::set_cli_output`]) write errors are ignored, so a closed stdout (`cargo xtask ... |
/// head`) cannot panic half-way through a teardown; in library use (the integration tests) it
/// is plain `println!`, which the test harness captures.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        if $crate::util::cli_output() {
            use ::std::io::Write as _;
            let _ = ::std::writeln!(::std::io::stdout(), $($arg)*);
        } else {
            ::std::println!($($arg)*);
        }
    }};
}

/// `eprintln!` counterpart of [`outln!`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        if $crate::util::cli_output() {
            use ::std::io::Write as _;
            let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
        } else {
            ::std::eprintln!($($arg)*);
        }
    }};
}

pub mod bench;
pub mod cgroup;
pub mod ci;
pub mod cli;
pub mod demo;
pub mod harness;
#[cfg(test)]
mod import_graph;
pub mod inventory;
pub mod lab;
pub mod packages;
pub mod setup;
pub mod util;
pub mod vmtest;

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the root `Cargo.toml`).
///
/// Derived from this crate's location at compile time, so it is right for both the `xtask`
/// binary and the integration tests that link this library.
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// The inventory the lab and the demo use when none is given: the Vantage example.
pub fn default_inventory() -> PathBuf {
    repo_root().join("deploy/examples/vantage/inventory.yaml")
}
