//! Compiles the gRPC contract (`proto/monitor.proto`, tonic/prost; needs `protoc`) and builds
//! the kernel programs (`monitor-ebpf`) for bpfel with the nightly toolchain and puts the
//! object at `$OUT_DIR/monitor`, where `src/capture` embeds it.
//!
//! With `AYA_BUILD_SKIP=1` (metadata-only work such as clippy on a machine without
//! bpf-linker) an empty stub object is written instead, so the embed still compiles; such a
//! binary refuses to load (it says so).
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, Result};

fn main() -> Result<()> {
    proto()?;
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        fs::write(out_dir.join("monitor"), []).context("failed to write the stub eBPF object")?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("monitor/ has no parent directory")?
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

/// Generates the gRPC messages, clients and servers from `proto/monitor.proto`.
fn proto() -> Result<()> {
    let proto_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?)
        .parent()
        .context("monitor/ has no parent directory")?
        .join("proto");
    let file = proto_dir.join("monitor.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    tonic_prost_build::configure()
        // JSON output of `monitor report -o json` and `observe` comes from the same messages.
        .type_attribute(".monitor.v1", "#[derive(serde::Serialize)]")
        .compile_protos(&[&file], &[&proto_dir])
        .with_context(|| {
            format!(
                "compiling {} failed; protoc must be installed (`cargo xtask setup` installs \
                 Debian's protobuf-compiler)",
                file.display()
            )
        })
}
