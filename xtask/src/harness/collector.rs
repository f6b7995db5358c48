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

/// `bin collector --listen ... --tls-dir ... --store ... --sink ndjson:file=... --ready-file
/// ...`, ready when the ready file exists. Add the caller's own arguments with
/// [`Spawn::arg`]/[`Spawn::args`].
pub fn collector(bin: &Path, files: CollectorFiles<'_>) -> Spawn {
    Spawn::new(bin)
        .arg("collector")
        .arg("--listen")
        .arg(files.listen)
        .arg("--tls-dir")
        .arg(files.certs)
        .arg("--store")
        .arg(files.store)
        .arg("--sink")
        .arg(format!("ndjson:file={}", files.sink.display()))
        .arg("--ready-file")
        .arg(files.ready)
        .ready_file(files.ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_arguments() {
        let s = collector(
            Path::new("/m"),
            CollectorFiles {
                listen: "127.0.0.1:7443",
                certs: Path::new("/c"),
                store: Path::new("/s.db"),
                sink: Path::new("/r.ndjson"),
                ready: Path::new("/ready"),
            },
        );
        assert_eq!(
            crate::util::display_cmd(&s.command()),
            "/m collector --listen 127.0.0.1:7443 --tls-dir /c --store /s.db --sink \
             ndjson:file=/r.ndjson --ready-file /ready"
        );
    }
}
