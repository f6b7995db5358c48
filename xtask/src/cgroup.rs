//! Finding the cgroup v2 hierarchy.
//!
//! The cgroup2 filesystem is mounted at `/sys/fs/cgroup` on a normal node but elsewhere on
//! hybrid machines (`/sys/fs/cgroup/unified` on the development VMs), so it is found by
//! parsing `/proc/self/mountinfo` (fstype `cgroup2`), with an explicit override.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// The cgroup2 mount point: `override_path` if given (it must be a cgroup2 mount or a
/// directory inside one), else the first cgroup2 mount in `/proc/self/mountinfo`.
pub fn cgroup2_mount(override_path: Option<&Path>) -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    if let Some(p) = override_path {
        if !p.join("cgroup.procs").is_file() {
            bail!(
                "--cgroup-mount {}: not a cgroup v2 directory (no cgroup.procs in it)",
                p.display()
            );
        }
        return Ok(p.to_path_buf());
    }
    match parse_cgroup2_mounts(&mountinfo).into_iter().next() {
        Some(p) => Ok(p),
        None => bail!(
            "no cgroup v2 (cgroup2) filesystem is mounted (looked in /proc/self/mountinfo); \
             mount one with `mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none \
             /sys/fs/cgroup/unified`, or pass --cgroup-mount"
        ),
    }
}

/// All cgroup2 mount points listed in a mountinfo text, in order.
pub fn parse_cgroup2_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // Fields: id parent maj:min root mount-point options [optional...] - fstype source super-options
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            if fstype != "cgroup2" {
                return None;
            }
            let mount_point = left.split_whitespace().nth(4)?;
            Some(PathBuf::from(unescape_octal(mount_point)))
        })
        .collect()
}

/// Undoes the `\040`-style octal escapes of mountinfo (space, tab, newline, backslash).
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| &b[i + 1..i + 4])
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                u8::try_from(v).ok()
            });
        if let Some(v) = octal {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_unified_on_hybrid() {
        assert_eq!(
            parse_cgroup2_mounts(HYBRID),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
    }

    #[test]
    fn finds_plain_v2_with_optional_fields_and_escapes() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n\
                  99 30 0:26 / /mnt/my\\040cg rw shared:9 master:1 - cgroup2 none rw\n";
        assert_eq!(
            parse_cgroup2_mounts(mi),
            vec![PathBuf::from("/sys/fs/cgroup"), PathBuf::from("/mnt/my cg")]
        );
    }

    #[test]
    fn none_without_cgroup2() {
        assert!(parse_cgroup2_mounts("32 31 0:29 / /x rw - cgroup cgroup rw,cpu\n").is_empty());
    }
}
