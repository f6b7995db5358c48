//! `monitor collector` as a [`Spawn`]: the arguments that the demo and the lab tests give it
//! (mTLS listener, SQLite store, one NDJSON file sink, ready file).

use std::path::Path;

use super::Spawn;

/// The collector's files and address.
#[derive(Debug, Clone, Copy)]
pub struct CollectorFiles<'a> {
    /// `--listen` address (`127.0.0.1:7443`).
    pub listen: &'a str,
    /// `--tls-dir`: certificates from `monitor certs init`.
    pub certs: &'a Path,
    /// `--store`: the SQLite store.
    pub store: &'a Path,
    /// The NDJSON file sink (`--sink ndjson:file=...`).
    pub sink: &'a Path,
    /// `--ready-file`: created once it listens.
    pub ready: &'a Path,
}

/// `bin collector --ready-file ... --listen ... --tls-dir ... --store ... --sink
/// ndjson:file=...`, ready when the ready file exists. Add the caller's own arguments with
/// [`Spawn::arg`]/[`Spawn::args`].
pub fn collector(bin: &Path, files: CollectorFiles<'_>) -> Spawn {
    super::monitor(bin, "collector", files.ready)
        .opt("--listen", files.listen)
        .opt("--tls-dir", files.certs)
        .opt("--store", files.store)
        .opt("--sink", format!("ndjson:file={}", files.sink.display()))
}
