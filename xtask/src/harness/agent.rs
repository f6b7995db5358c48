//! `monitor agent` as a [`Spawn`]: the arguments that every caller (demo, bench, lab tests)
//! gives it. What it prints on stdout is one NDJSON record per line (`docs/records.md`); its
//! log is on stderr.

use std::path::Path;

use super::Spawn;

/// `bin agent --inventory INVENTORY --cgroup CGROUP --ready-file READY`, ready when `READY`
/// exists (the agent creates it once its programs are attached). Add the caller's own
/// arguments with [`Spawn::arg`]/[`Spawn::args`].
pub fn agent(bin: &Path, inventory: &Path, cgroup: &Path, ready: &Path) -> Spawn {
    Spawn::new(bin)
        .arg("agent")
        .arg("--inventory")
        .arg(inventory)
        .arg("--cgroup")
        .arg(cgroup)
        .arg("--ready-file")
        .arg(ready)
        .ready_file(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_arguments() {
        let s = agent(
            Path::new("/m"),
            Path::new("/i.yaml"),
            Path::new("/sys/fs/cgroup/x"),
            Path::new("/r"),
        )
        .arg("--drain-only");
        assert_eq!(
            crate::util::display_cmd(&s.command()),
            "/m agent --inventory /i.yaml --cgroup /sys/fs/cgroup/x --ready-file /r --drain-only"
        );
    }
}
