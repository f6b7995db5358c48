//! Loads the kernel programs, attaches them to a cgroup v2 directory, and gives typed access
//! to their maps. Attachments are BPF links owned by this process: they go away when it exits,
//! however it exits, so a crashed agent leaves nothing attached.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};
use monitor_common::{
    PROG_EGRESS, PROG_INGRESS,
    counter::{Counter, MAP_COUNTERS},
    flow::{FlowState, MAP_FLOWS, MAP_LOCAL_PEERS, PeerKey},
    record::MAP_EVENTS,
};

/// The object built by `build.rs` from `monitor-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// `statfs` magic of cgroup v2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Why capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Built with `AYA_BUILD_SKIP`: no kernel object inside.
    #[error(
        "this monitor binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild with \
         `cargo build --release -p monitor` after `cargo xtask setup`"
    )]
    NoObject,
    /// Loading was refused for lack of privilege.
    #[error(
        "the kernel refused to load the eBPF programs ({0}): run as root, or with CAP_BPF, \
         CAP_PERFMON and CAP_NET_ADMIN"
    )]
    Permission(String),
    /// Loading or verification failed.
    #[error("failed to load the eBPF programs: {0}")]
    Load(String),
    /// The cgroup directory does not exist.
    #[error(
        "cgroup directory {path} does not exist: pass --cgroup with the cgroup v2 directory \
         whose pods to monitor{hint}"
    )]
    NoCgroup {
        /// The path given.
        path: PathBuf,
        /// Where cgroup v2 is mounted, if it is.
        hint: String,
    },
    /// The directory is not on a cgroup v2 file system.
    #[error("{path} is not a cgroup v2 directory{hint}")]
    NotCgroup2 {
        /// The path given.
        path: PathBuf,
        /// Where cgroup v2 is mounted, if it is.
        hint: String,
    },
    /// Attaching failed.
    #[error("failed to attach the {direction} program to cgroup {path}: {message}")]
    Attach {
        /// `egress` or `ingress`.
        direction: &'static str,
        /// The cgroup.
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// A map lookup failed.
    #[error("reading map {map} failed: {message}")]
    Map {
        /// The map.
        map: &'static str,
        /// The error.
        message: String,
    },
}

/// Where cgroup v2 is mounted, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split(' ').next() != Some("cgroup2") {
            return None;
        }
        pre.split(' ').nth(4).map(PathBuf::from)
    })
}

fn mount_hint() -> String {
    match cgroup2_mount() {
        Some(m) => format!(" (cgroup v2 is mounted at {} on this machine)", m.display()),
        None => String::from(
            " (no cgroup v2 file system is mounted here: mount one with \
             `mount -t cgroup2 none /sys/fs/cgroup` or boot with systemd.unified_cgroup_hierarchy=1)",
        ),
    }
}

/// The loaded programs and their maps.
pub struct Capture {
    ebpf: Ebpf,
    /// Records from the kernel.
    pub ring: RingBuf<MapData>,
    flows: HashMap<MapData, u64, FlowState>,
    local_peers: HashMap<MapData, PeerKey, u8>,
    counters: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

fn load_error(e: impl std::error::Error) -> CaptureError {
    // Walk the chain: the interesting part (EPERM, verifier log) is at the bottom.
    let mut msg = e.to_string();
    let mut src = e.source();
    let mut perm = false;
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        // EPERM is missing privilege; EACCES is the verifier rejecting a program.
        if let Some(io) = s.downcast_ref::<io::Error>() {
            perm |= io.raw_os_error() == Some(libc::EPERM);
        }
        src = s.source();
    }
    if perm {
        CaptureError::Permission(msg)
    } else {
        CaptureError::Load(msg)
    }
}

impl Capture {
    /// Loads the programs and maps into the kernel (not yet attached).
    pub fn load() -> Result<Self, CaptureError> {
        if OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(load_error)?;
        for name in [PROG_EGRESS, PROG_INGRESS] {
            let prog: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or_else(|| CaptureError::Load(format!("program {name} missing from object")))?
                .try_into()
                .map_err(load_error)?;
            prog.load().map_err(load_error)?;
        }
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| CaptureError::Load(format!("map {name} missing from object")))
        };
        let ring = RingBuf::try_from(take(MAP_EVENTS)?).map_err(load_error)?;
        let flows = HashMap::try_from(take(MAP_FLOWS)?).map_err(load_error)?;
        let local_peers = HashMap::try_from(take(MAP_LOCAL_PEERS)?).map_err(load_error)?;
        let counters = PerCpuArray::try_from(take(MAP_COUNTERS)?).map_err(load_error)?;
        Ok(Self {
            ebpf,
            ring,
            flows,
            local_peers,
            counters,
        })
    }

    /// Attaches both programs to the cgroup v2 directory `path` (and so to every cgroup below
    /// it, including ones created later). Other programs already attached there keep running.
    pub fn attach(&mut self, path: &Path) -> Result<(), CaptureError> {
        let file = File::open(path).map_err(|_| CaptureError::NoCgroup {
            path: path.to_owned(),
            hint: mount_hint(),
        })?;
        if !is_cgroup2(path) {
            return Err(CaptureError::NotCgroup2 {
                path: path.to_owned(),
                hint: mount_hint(),
            });
        }
        for (name, ty, direction) in [
            (PROG_EGRESS, CgroupSkbAttachType::Egress, "egress"),
            (PROG_INGRESS, CgroupSkbAttachType::Ingress, "ingress"),
        ] {
            let prog: &mut CgroupSkb = self
                .ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| CaptureError::Load(format!("program {name} missing")))?;
            // Through a BPF link (kernel >= 5.7) an attachment always coexists with others on the
            // cgroup; the link API accepts no mode flags, so the default mode is the right one.
            prog.attach(&file, ty, CgroupAttachMode::default())
                .map_err(|e| CaptureError::Attach {
                    direction,
                    path: path.to_owned(),
                    message: load_error(e).to_string(),
                })?;
        }
        Ok(())
    }

    /// A loaded program, for `BPF_PROG_TEST_RUN` tests.
    pub fn program(&self, name: &str) -> Option<&CgroupSkb> {
        self.ebpf.program(name).and_then(|p| p.try_into().ok())
    }

    /// The flow table entry of `cookie`.
    pub fn flow(&self, cookie: u64) -> Option<FlowState> {
        self.flows.get(&cookie, 0).ok()
    }

    /// Every flow table entry.
    pub fn flows(&self) -> Vec<(u64, FlowState)> {
        self.flows.iter().filter_map(Result::ok).collect()
    }

    /// Deletes a flow table entry (the agent closed it as idle).
    pub fn remove_flow(&mut self, cookie: u64) {
        let _ = self.flows.remove(&cookie);
    }

    /// Makes the kernel's set of local monitored pod addresses equal to `ips`.
    pub fn set_local_peers(&mut self, ips: &[std::net::IpAddr]) -> Result<(), CaptureError> {
        let want: std::collections::HashSet<PeerKey> =
            ips.iter().map(|ip| PeerKey::new(*ip)).collect();
        let have: Vec<PeerKey> = self.local_peers.keys().filter_map(Result::ok).collect();
        let map_err = |e: aya::maps::MapError| CaptureError::Map {
            map: MAP_LOCAL_PEERS,
            message: e.to_string(),
        };
        for k in have.iter().filter(|k| !want.contains(k)) {
            self.local_peers.remove(k).map_err(map_err)?;
        }
        for k in want.iter().filter(|k| !have.contains(k)) {
            self.local_peers.insert(k, 1, 0).map_err(map_err)?;
        }
        Ok(())
    }

    /// Every counter summed over CPUs, indexed like [`Counter::ALL`].
    pub fn counters(&self) -> Result<[u64; Counter::COUNT as usize], CaptureError> {
        let mut out = [0u64; Counter::COUNT as usize];
        for c in Counter::ALL {
            let per_cpu = self
                .counters
                .get(&(c as u32), 0)
                .map_err(|e| CaptureError::Map {
                    map: MAP_COUNTERS,
                    message: e.to_string(),
                })?;
            out[c as usize] = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

fn is_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is writable.
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    rc == 0 && st.f_type == CGROUP2_SUPER_MAGIC
}
