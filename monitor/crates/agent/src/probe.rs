//! What the running kernel offers the agent, probed at start: the features the kernel programs
//! need (the agent refuses to start without them), the ones whose absence degrades it, and
//! optional hooks the programs do not use today but a later version may (reported so an
//! operator knows what a node has). The kernel matrix is in `docs/kernels.md`.
//!
//! Probes use aya's feature detection (`aya::sys::is_program_supported` and
//! `is_map_supported`: tiny programs and maps created and closed at once), aya's kernel
//! version where aya itself decides by version (BPF links, tcx), and files in /sys and /proc.
//! A probe that errors (e.g. EPERM without CAP_BPF) gives [`Status::Unknown`], never a refusal:
//! loading the programs then says precisely what is wrong.

use std::{fmt::Write as _, path::Path};

use aya::{maps::MapType, programs::ProgramType, util::KernelVersion};

/// How much the agent depends on a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The agent cannot work without it: it refuses to start.
    Required,
    /// The agent works without it, with the stated loss.
    Degraded,
    /// Not used by the current kernel programs; reported for planning.
    Optional,
}

impl Need {
    fn label(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Degraded => "needed",
            Self::Optional => "optional, not used now",
        }
    }
}

/// Whether a feature is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Usable.
    Yes,
    /// Not usable, and why.
    No(String),
    /// The probe itself failed (the error).
    Unknown(String),
}

/// One probed feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// Short name, e.g. `cgroup_skb`.
    pub name: &'static str,
    /// How much the agent depends on it.
    pub need: Need,
    /// What the probe found.
    pub status: Status,
    /// What its absence means for the agent.
    pub without: &'static str,
}

/// The kernel lacks something the agent cannot work without.
#[derive(Debug, thiserror::Error)]
#[error("kernel {kernel} lacks what the monitor's programs need: {missing} (see docs/kernels.md)")]
pub struct MissingFeatures {
    /// `uname -r`.
    pub kernel: String,
    /// Each missing feature with why.
    pub missing: String,
}

/// The probe's findings.
#[derive(Debug, Clone)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// Every probed feature.
    pub features: Vec<Feature>,
}

fn from_bool(ok: bool, why_not: impl FnOnce() -> String) -> Status {
    if ok {
        Status::Yes
    } else {
        Status::No(why_not())
    }
}

fn from_result<E: std::error::Error>(r: Result<bool, E>, why_not: &str) -> Status {
    match r {
        Ok(true) => Status::Yes,
        Ok(false) => Status::No(why_not.to_owned()),
        Err(e) => Status::Unknown(chain(&e)),
    }
}

/// An error and its sources on one line (aya's syscall errors keep the errno in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let _ = write!(s, ": {c}");
        src = c.source();
    }
    s
}

/// `uname -r`.
fn kernel_release() -> String {
    // SAFETY: an all-zero utsname is a valid out-parameter.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is writable and uname fills NUL-terminated fields.
    if unsafe { libc::uname(&raw mut u) } != 0 {
        return "unknown".to_owned();
    }
    // SAFETY: uname succeeded, so `release` holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Whether the running kernel is at least `major.minor` (as aya decides), with the reason if
/// not.
fn kernel_at_least(major: u8, minor: u8, release: &str) -> Status {
    match KernelVersion::current() {
        Ok(v) => from_bool(v >= KernelVersion::new(major, minor, 0), || {
            format!("kernel {release} is older than {major}.{minor}")
        }),
        Err(e) => Status::Unknown(format!("cannot read the kernel version: {e}")),
    }
}

fn maps_supported(types: &[(MapType, &str)]) -> Status {
    let mut missing = Vec::new();
    for (t, name) in types {
        match aya::sys::is_map_supported(*t) {
            Ok(true) => {}
            Ok(false) => missing.push(*name),
            Err(e) => return Status::Unknown(chain(&e)),
        }
    }
    from_bool(missing.is_empty(), || {
        format!("map types not supported: {}", missing.join(", "))
    })
}

impl Report {
    /// Probes the running kernel.
    pub fn probe() -> Self {
        let kernel = kernel_release();
        let features = vec![
            Feature {
                name: "cgroup v2",
                need: Need::Required,
                status: from_bool(crate::capture::cgroup2_mount().is_some(), || {
                    "no cgroup2 file system in /proc/self/mountinfo".to_owned()
                }),
                without: "there is no cgroup v2 directory to attach the programs to",
            },
            Feature {
                name: "cgroup_skb",
                need: Need::Required,
                status: from_result(
                    aya::sys::is_program_supported(ProgramType::CgroupSkb),
                    "the kernel does not load BPF_PROG_TYPE_CGROUP_SKB programs",
                ),
                without: "the capture programs (egress/ingress) cannot be loaded",
            },
            Feature {
                name: "ring buffer",
                need: Need::Required,
                status: from_result(
                    aya::sys::is_map_supported(MapType::RingBuf),
                    "BPF_MAP_TYPE_RINGBUF is not supported (Linux < 5.8)",
                ),
                without: "records cannot reach the agent",
            },
            Feature {
                name: "hash/array/per-CPU maps",
                need: Need::Required,
                status: maps_supported(&[
                    (MapType::Hash, "hash"),
                    (MapType::Array, "array"),
                    (MapType::PerCpuArray, "percpu_array"),
                    (MapType::PerCpuHash, "percpu_hash"),
                    (MapType::LruHash, "lru_hash"),
                ]),
                without: "the flow table, counters, quarantine set and socket-origin map cannot \
                          be created",
            },
            Feature {
                name: "cgroup sock_addr (connect4/6)",
                need: Need::Degraded,
                status: from_result(
                    aya::sys::is_program_supported(ProgramType::CgroupSockAddr),
                    "the kernel does not load BPF_PROG_TYPE_CGROUP_SOCK_ADDR programs",
                ),
                without: "flows carry only the addresses on the wire: inside a service mesh the \
                          application's connection to its sidecar shows 127.0.0.1:15001 instead \
                          of the destination it asked for, and sockets have no caller uid/gid",
            },
            Feature {
                name: "sock_ops",
                need: Need::Degraded,
                status: from_result(
                    aya::sys::is_program_supported(ProgramType::SockOps),
                    "the kernel does not load BPF_PROG_TYPE_SOCK_OPS programs",
                ),
                without: "accepted connections are not marked by the kernel: the direction of a \
                          flow whose SYN was not seen comes from its first HTTP request, or, for \
                          other TCP, from port order (a guess)",
            },
            Feature {
                name: "BPF links for cgroups",
                need: Need::Degraded,
                status: kernel_at_least(5, 7, &kernel),
                without: "aya attaches with BPF_PROG_ATTACH instead, so a killed agent leaves \
                          its programs attached (`bpftool cgroup detach` removes them)",
            },
            Feature {
                name: "BTF",
                need: Need::Optional,
                status: from_bool(Path::new("/sys/kernel/btf/vmlinux").exists(), || {
                    "/sys/kernel/btf/vmlinux is missing (CONFIG_DEBUG_INFO_BTF)".to_owned()
                }),
                without: "no CO-RE or BTF-typed hooks (tp_btf, fentry); the cgroup_skb \
                          programs do not need it",
            },
            Feature {
                name: "tcx",
                need: Need::Optional,
                status: kernel_at_least(6, 6, &kernel),
                without: "TC programs would attach through classic clsact qdiscs",
            },
            Feature {
                name: "kprobes",
                need: Need::Optional,
                status: from_bool(
                    Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
                    || "no kprobe PMU (CONFIG_KPROBES/CONFIG_KPROBE_EVENTS off)".to_owned(),
                ),
                without: "no kernel-function probes",
            },
            Feature {
                name: "fentry/fexit",
                need: Need::Optional,
                status: from_result(
                    aya::sys::is_program_supported(ProgramType::Tracing),
                    "BPF trampolines are not available",
                ),
                without: "no BTF-typed kernel-function probes",
            },
            Feature {
                name: "bpf_stats",
                need: Need::Optional,
                status: from_bool(
                    Path::new("/proc/sys/kernel/bpf_stats_enabled").exists(),
                    || "/proc/sys/kernel/bpf_stats_enabled is missing".to_owned(),
                ),
                without: "no per-program run time and count (used to measure the programs' cost)",
            },
        ];
        Self { kernel, features }
    }

    /// The INFO line: which features are usable.
    pub fn usable_line(&self) -> String {
        let usable: Vec<&str> = self
            .features
            .iter()
            .filter(|f| f.status == Status::Yes)
            .map(|f| f.name)
            .collect();
        let not: Vec<&str> = self
            .features
            .iter()
            .filter(|f| f.status != Status::Yes)
            .map(|f| f.name)
            .collect();
        let mut s = format!(
            "kernel {}: usable: {}",
            self.kernel,
            if usable.is_empty() {
                "none".to_owned()
            } else {
                usable.join(", ")
            }
        );
        if !not.is_empty() {
            let _ = write!(s, "; not usable or unknown: {}", not.join(", "));
        }
        s
    }

    /// One WARN line per feature that is not usable (or could not be probed).
    pub fn warnings(&self) -> Vec<String> {
        self.features
            .iter()
            .filter_map(|f| {
                let (what, why) = match &f.status {
                    Status::Yes => return None,
                    Status::No(why) => ("missing", why.clone()),
                    Status::Unknown(e) => ("could not be probed", e.clone()),
                };
                Some(format!(
                    "kernel feature {} ({}) {what}: {why}; without it {}",
                    f.name,
                    f.need.label(),
                    f.without
                ))
            })
            .collect()
    }

    /// Fails if a required feature is definitely missing (not if its probe failed).
    pub fn check(&self) -> Result<(), MissingFeatures> {
        let missing: Vec<String> = self
            .features
            .iter()
            .filter(|f| f.need == Need::Required)
            .filter_map(|f| match &f.status {
                Status::No(why) => Some(format!("{} ({why}: {})", f.name, f.without)),
                _ => None,
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(MissingFeatures {
                kernel: self.kernel.clone(),
                missing: missing.join("; "),
            })
        }
    }

    /// Logs the INFO line and the warnings.
    pub fn log(&self) {
        tracing::info!("{}", self.usable_line());
        for w in self.warnings() {
            tracing::warn!("{w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &'static str, need: Need, status: Status) -> Feature {
        Feature {
            name,
            need,
            status,
            without: "it hurts",
        }
    }

    #[test]
    fn summary_lines_and_refusal() {
        let r = Report {
            kernel: "6.1.0-56-cloud-amd64".into(),
            features: vec![
                feature("cgroup_skb", Need::Required, Status::Yes),
                feature(
                    "ring buffer",
                    Need::Required,
                    Status::Unknown("EPERM".into()),
                ),
                feature(
                    "tcx",
                    Need::Optional,
                    Status::No("kernel 6.1 is older than 6.6".into()),
                ),
            ],
        };
        assert_eq!(
            r.usable_line(),
            "kernel 6.1.0-56-cloud-amd64: usable: cgroup_skb; not usable or unknown: ring \
             buffer, tcx"
        );
        assert_eq!(
            r.warnings(),
            vec![
                "kernel feature ring buffer (required) could not be probed: EPERM; without it \
                 it hurts",
                "kernel feature tcx (optional, not used now) missing: kernel 6.1 is older than \
                 6.6; without it it hurts",
            ]
        );
        // A probe that failed is no reason to refuse: loading says what is wrong.
        assert!(r.check().is_ok());

        let mut bad = r.clone();
        bad.features[0].status = Status::No("not loadable".into());
        let err = bad.check().unwrap_err().to_string();
        assert_eq!(
            err,
            "kernel 6.1.0-56-cloud-amd64 lacks what the monitor's programs need: cgroup_skb \
             (not loadable: it hurts) (see docs/kernels.md)"
        );
    }

    #[test]
    fn probing_never_panics_and_names_every_feature_once() {
        // Works with or without privilege: unprivileged probes come back Unknown.
        let r = Report::probe();
        let mut names: Vec<&str> = r.features.iter().map(|f| f.name).collect();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(r.usable_line().starts_with("kernel "));
    }
}
