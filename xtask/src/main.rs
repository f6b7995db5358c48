//! `cargo xtask` entry point; everything lives in the `xtask` library (see `cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match xtask::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error chain, without anyhow's backtrace (RUST_BACKTRACE is often set).
            xtask::errln!("error: {e}");
            for cause in e.chain().skip(1) {
                xtask::errln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
