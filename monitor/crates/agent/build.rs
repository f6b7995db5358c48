//! Builds the kernel programs (`monitor-ebpf`) for bpfel with the nightly toolchain and puts
//! the object at `$OUT_DIR/monitor`, where `src/capture.rs` embeds it.
//!
//! With `AYA_BUILD_SKIP=1` (metadata-only work such as clippy on a machine without
//! bpf-linker) an empty stub object is written instead, so the embed still compiles; such a
//! binary refuses to load (it says so).
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, Result};

fn main() -> Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        fs::write(out_dir.join("monitor"), []).context("failed to write the stub eBPF object")?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    // monitor/crates/agent -> the workspace root.
    let ebpf_dir = manifest_dir
        .ancestors()
        .nth(3)
        .context("monitor/crates/agent is not three levels below the workspace root")?
        .join("monitor-ebpf");
    let root_dir = ebpf_dir.to_str().context("eBPF crate path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "monitor-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; run `cargo xtask setup` to install the nightly \
         rust-src component and bpf-linker",
    )
}
