//! Compiles the gRPC contract (`proto/monitor.proto`) with tonic/prost; needs `protoc`.
use std::{env, path::PathBuf};

use anyhow::{Context as _, Result};

fn main() -> Result<()> {
    proto()
}

/// Generates the gRPC messages, clients and servers from `proto/monitor.proto`.
fn proto() -> Result<()> {
    // monitor/crates/wire -> the workspace root's proto/.
    let proto_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?)
        .ancestors()
        .nth(3)
        .context("monitor/crates/wire is not three levels below the workspace root")?
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
