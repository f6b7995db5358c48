//! `monitor agent` as a [`Spawn`]: the arguments that every caller (demo, bench, lab tests)
//! gives it. What it prints on stdout is one NDJSON record per line (`docs/records.md`); its
//! log is on stderr.

use std::path::Path;

use super::Spawn;

/// `bin agent --ready-file READY --inventory INVENTORY --cgroup CGROUP`, ready when `READY`
/// exists (the agent creates it once its programs are attached). Add the caller's own
/// arguments with [`Spawn::arg`]/[`Spawn::args`].
pub fn agent(bin: &Path, inventory: &Path, cgroup: &Path, ready: &Path) -> Spawn {
    super::monitor(bin, "agent", ready)
        .opt("--inventory", inventory)
        .opt("--cgroup", cgroup)
}
