//! Loads the kernel programs, attaches them to a cgroup v2 directory, and gives typed access
//! to their maps. Attachments are BPF links owned by this process: they go away when it exits,
//! however it exits, so a crashed agent leaves nothing attached.
//!
//! The two `cgroup_skb` programs are required. The socket-level programs (the connect hooks
//! and `sock_ops`, see `monitor_common::sock`) are not: when one cannot be loaded or attached
//! the agent runs without it and [`Capture::socket_hooks`] says what is missing and what that
//! costs (no destination as asked for before NAT, no kernel-told direction of accepted
//! connections).

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use crate::pipeline::{Enforcer, Source, SourceError};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SockOps},
};
use monitor_common::{
    PROG_EGRESS, PROG_INGRESS,
    counter::{Counter, MAP_COUNTERS},
    flow::{FlowState, MAP_FLOWS, MAP_LOCAL_PEERS, PeerKey},
    quarantine::{
        MAP_QUARANTINE, MAP_QUARANTINE_ON, MAP_QUARANTINE_STATS, QUARANTINE_MAX, QuarantineEntry,
        QuarantineStats,
    },
    record::MAP_EVENTS,
    sock::{MAP_SOCK_ORIGIN, PROG_CONNECT4, PROG_CONNECT6, PROG_SOCKOPS, SockOrigin},
};

/// The object built by `build.rs` from `monitor-ebpf` (public for the kernel-program tests).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

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

/// Which socket-level programs run. Without the connect hooks, flows carry only the addresses
/// on the wire (a mesh's redirect to its sidecar hides where the application wanted to go);
/// without `sock_ops`, accepted connections whose SYN was not seen have no kernel-told
/// direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketHooks {
    /// `connect4` and `connect6` are loaded (and, after [`Capture::attach`], attached).
    pub connect: bool,
    /// `sock_ops` is loaded (and, after [`Capture::attach`], attached).
    pub sock_ops: bool,
    /// Why each one that is not there is missing (program name and error).
    pub missing: Vec<(&'static str, String)>,
}

/// The loaded programs and their maps.
pub struct Capture {
    ebpf: Ebpf,
    hooks: SocketHooks,
    /// Records from the kernel.
    pub ring: RingBuf<MapData>,
    flows: HashMap<MapData, u64, FlowState>,
    local_peers: HashMap<MapData, PeerKey, u8>,
    counters: PerCpuArray<MapData, u64>,
    quarantine: HashMap<MapData, u64, QuarantineEntry>,
    quarantine_on: Array<MapData, u32>,
    quarantine_stats: PerCpuHashMap<MapData, u64, QuarantineStats>,
    sock_origin: HashMap<MapData, u64, SockOrigin>,
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
    // Without CAP_PERFMON the verifier checks the programs under the rules for unprivileged
    // users and rejects them with EACCES: a privilege problem, not a bug. Which rule it names
    // first depends on the kernel: 6.18 "... for !root", 6.1 "attempt to corrupt spilled
    // pointer on stack" (docs/kernels.md).
    const UNPRIVILEGED_ONLY: &[&str] = &["for !root", "attempt to corrupt spilled pointer"];
    if let Some(line) = msg
        .lines()
        .find(|l| UNPRIVILEGED_ONLY.iter().any(|m| l.contains(m)))
    {
        return CaptureError::Permission(format!(
            "the verifier applied the rules for unprivileged programs, so CAP_PERFMON is \
             missing; it said: {}",
            line.trim()
        ));
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
        let hooks = load_socket_hooks(&mut ebpf);
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| CaptureError::Load(format!("map {name} missing from object")))
        };
        let ring = RingBuf::try_from(take(MAP_EVENTS)?).map_err(load_error)?;
        let flows = HashMap::try_from(take(MAP_FLOWS)?).map_err(load_error)?;
        let local_peers = HashMap::try_from(take(MAP_LOCAL_PEERS)?).map_err(load_error)?;
        let counters = PerCpuArray::try_from(take(MAP_COUNTERS)?).map_err(load_error)?;
        let quarantine = HashMap::try_from(take(MAP_QUARANTINE)?).map_err(load_error)?;
        let quarantine_on = Array::try_from(take(MAP_QUARANTINE_ON)?).map_err(load_error)?;
        let quarantine_stats =
            PerCpuHashMap::try_from(take(MAP_QUARANTINE_STATS)?).map_err(load_error)?;
        let sock_origin = HashMap::try_from(take(MAP_SOCK_ORIGIN)?).map_err(load_error)?;
        return_freed_memory();
        Ok(Self {
            ebpf,
            hooks,
            ring,
            flows,
            local_peers,
            counters,
            quarantine,
            quarantine_on,
            quarantine_stats,
            sock_origin,
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
        self.attach_socket_hooks(&file);
        Ok(())
    }

    /// Attaches the socket-level programs that loaded; a failure only degrades (it is noted in
    /// [`Capture::socket_hooks`]).
    fn attach_socket_hooks(&mut self, cgroup: &File) {
        if self.hooks.connect {
            for name in [PROG_CONNECT4, PROG_CONNECT6] {
                let r = match self.ebpf.program_mut(name) {
                    Some(p) => <&mut CgroupSockAddr>::try_from(p)
                        .map_err(|e| load_error(e).to_string())
                        .and_then(|p| {
                            p.attach(cgroup, CgroupAttachMode::default())
                                .map(drop)
                                .map_err(|e| load_error(e).to_string())
                        }),
                    None => Err("missing from the object".to_owned()),
                };
                if let Err(e) = r {
                    self.hooks.connect = false;
                    self.hooks
                        .missing
                        .push((name, format!("attaching failed: {e}")));
                }
            }
        }
        if self.hooks.sock_ops {
            let r = match self.ebpf.program_mut(PROG_SOCKOPS) {
                Some(p) => <&mut SockOps>::try_from(p)
                    .map_err(|e| load_error(e).to_string())
                    .and_then(|p| {
                        p.attach(cgroup, CgroupAttachMode::default())
                            .map(drop)
                            .map_err(|e| load_error(e).to_string())
                    }),
                None => Err("missing from the object".to_owned()),
            };
            if let Err(e) = r {
                self.hooks.sock_ops = false;
                self.hooks
                    .missing
                    .push((PROG_SOCKOPS, format!("attaching failed: {e}")));
            }
        }
    }

    /// What the socket-level programs stored and no flow has consumed yet (socket cookie →
    /// origin): sockets between `connect()` (or accept) and their first packet, and those that
    /// never sent one (evicted by the LRU map in time).
    pub fn sock_origins(&self) -> Vec<(u64, SockOrigin)> {
        self.sock_origin.iter().filter_map(Result::ok).collect()
    }

    /// Which socket-level programs are loaded (attached, once [`Capture::attach`] ran).
    pub fn socket_hooks(&self) -> &SocketHooks {
        &self.hooks
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

    /// Makes the kernel's quarantine set equal to `entries` (cgroup v2 id, `CLOCK_BOOTTIME` ns
    /// when the quarantine began), all in enforce mode: from then on every packet of those
    /// cgroups is dropped and counted. An empty slice lifts every quarantine.
    ///
    /// A cgroup already quarantined stays quarantined throughout (no window where it passes).
    /// Its drop statistics start at zero when it enters the set, and again when its `since_ns`
    /// changes; they are deleted when it leaves the set. The "any quarantine active" flag is
    /// set once the entries are in, and cleared when the set is empty.
    pub fn set_quarantine(&mut self, entries: &[(u64, u64)]) -> Result<(), CaptureError> {
        let err = |map: &'static str| {
            move |e: aya::maps::MapError| CaptureError::Map {
                map,
                message: e.to_string(),
            }
        };
        let want: std::collections::HashMap<u64, u64> = entries.iter().copied().collect();
        if want.contains_key(&0) {
            return Err(CaptureError::Map {
                map: MAP_QUARANTINE,
                message: "cgroup id 0 is no cgroup".to_owned(),
            });
        }
        if want.len() > QUARANTINE_MAX as usize {
            return Err(CaptureError::Map {
                map: MAP_QUARANTINE,
                message: format!(
                    "{} cgroups to quarantine, at most {QUARANTINE_MAX} fit",
                    want.len()
                ),
            });
        }
        let have: std::collections::HashMap<u64, QuarantineEntry> =
            self.quarantine.iter().filter_map(Result::ok).collect();
        // Statistics first, so the kernel finds them from the first dropped packet on.
        for (&id, &since) in &want {
            let entry = QuarantineEntry::enforce(since);
            if have.get(&id) == Some(&entry) {
                continue;
            }
            let zero = aya::util::nr_cpus()
                .map_err(|(_, e)| e)
                .and_then(|n| PerCpuValues::try_from(vec![QuarantineStats::default(); n]))
                .map_err(|e| CaptureError::Map {
                    map: MAP_QUARANTINE_STATS,
                    message: e.to_string(),
                })?;
            self.quarantine_stats
                .insert(id, zero, 0)
                .map_err(err(MAP_QUARANTINE_STATS))?;
            self.quarantine
                .insert(id, entry, 0)
                .map_err(err(MAP_QUARANTINE))?;
        }
        if !want.is_empty() {
            self.quarantine_on
                .set(0, 1, 0)
                .map_err(err(MAP_QUARANTINE_ON))?;
        }
        for id in have.keys().filter(|id| !want.contains_key(id)) {
            ignore_missing(self.quarantine.remove(id)).map_err(err(MAP_QUARANTINE))?;
        }
        if want.is_empty() {
            self.quarantine_on
                .set(0, 0, 0)
                .map_err(err(MAP_QUARANTINE_ON))?;
        }
        // Last, the statistics of lifted quarantines (and any a racing program re-created).
        let stale: Vec<u64> = self
            .quarantine_stats
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !want.contains_key(id))
            .collect();
        for id in stale {
            ignore_missing(self.quarantine_stats.remove(&id)).map_err(err(MAP_QUARANTINE_STATS))?;
        }
        Ok(())
    }

    /// The kernel's quarantine set: cgroup v2 id → entry.
    pub fn quarantine(
        &self,
    ) -> Result<std::collections::HashMap<u64, QuarantineEntry>, CaptureError> {
        self.quarantine
            .iter()
            .map(|r| {
                r.map_err(|e| CaptureError::Map {
                    map: MAP_QUARANTINE,
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// What the kernel dropped per quarantined cgroup (cgroup v2 id → statistics summed over
    /// CPUs) since each entered the quarantine.
    pub fn quarantine_stats(
        &self,
    ) -> Result<std::collections::HashMap<u64, QuarantineStats>, CaptureError> {
        let mut out = std::collections::HashMap::new();
        for item in self.quarantine_stats.iter() {
            let (id, per_cpu) = item.map_err(|e| CaptureError::Map {
                map: MAP_QUARANTINE_STATS,
                message: e.to_string(),
            })?;
            let mut sum = QuarantineStats::default();
            for v in per_cpu.iter() {
                sum.merge(v);
            }
            out.insert(id, sum);
        }
        Ok(out)
    }
}

impl Source for Capture {
    fn drain(
        &mut self,
        f: &mut dyn for<'a> FnMut(
            Result<
                monitor_common::record::user::Record<'a>,
                monitor_common::record::user::DecodeError,
            >,
        ),
    ) {
        while let Some(item) = self.ring.next() {
            f(monitor_common::record::user::decode(&item));
        }
    }

    fn flow(&self, cookie: u64) -> Option<FlowState> {
        Capture::flow(self, cookie)
    }

    fn flows(&self) -> Vec<(u64, FlowState)> {
        Capture::flows(self)
    }

    fn remove_flow(&mut self, cookie: u64) {
        Capture::remove_flow(self, cookie);
    }

    fn losses(&self) -> Result<Vec<crate::pipeline::LossCount>, SourceError> {
        let counters = self
            .counters()
            .map_err(|e| table("read the loss counters", &e))?;
        Ok(Counter::ALL
            .into_iter()
            .filter(|c| c.is_loss())
            .map(|c| ("kernel", c.name(), counters[c as usize]))
            .collect())
    }
}

impl Enforcer for Capture {
    fn set_quarantine(&mut self, entries: &[(u64, u64)]) -> Result<(), SourceError> {
        Capture::set_quarantine(self, entries).map_err(|e| table("update the quarantine set", &e))
    }

    fn quarantine_stats(
        &self,
    ) -> Result<std::collections::HashMap<u64, QuarantineStats>, SourceError> {
        Capture::quarantine_stats(self).map_err(|e| table("read the quarantine counters", &e))
    }

    fn set_local_peers(&mut self, ips: &[std::net::IpAddr]) -> Result<(), SourceError> {
        Capture::set_local_peers(self, ips).map_err(|e| table("update the local peers", &e))
    }
}

fn table(op: &'static str, e: &CaptureError) -> SourceError {
    SourceError::Table {
        op,
        message: e.to_string(),
    }
}

/// The cgroup v2 id of the cgroup directory `path`: the inode number of the directory, which is
/// what `bpf_skb_cgroup_id` reports for sockets in that cgroup.
pub fn cgroup_id(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() || !is_cgroup2(path) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a cgroup v2 directory", path.display()),
        ));
    }
    Ok(meta.ino())
}

/// Loads the optional socket-level programs; a program that fails is noted, not fatal.
fn load_socket_hooks(ebpf: &mut Ebpf) -> SocketHooks {
    let mut hooks = SocketHooks::default();
    let mut connect_ok = true;
    for name in [PROG_CONNECT4, PROG_CONNECT6] {
        let r = match ebpf.program_mut(name) {
            Some(p) => <&mut CgroupSockAddr>::try_from(p)
                .map_err(|e| load_error(e).to_string())
                .and_then(|p| p.load().map_err(|e| load_error(e).to_string())),
            None => Err("missing from the object".to_owned()),
        };
        if let Err(e) = r {
            connect_ok = false;
            hooks.missing.push((name, format!("loading failed: {e}")));
        }
    }
    hooks.connect = connect_ok;
    let r = match ebpf.program_mut(PROG_SOCKOPS) {
        Some(p) => <&mut SockOps>::try_from(p)
            .map_err(|e| load_error(e).to_string())
            .and_then(|p| p.load().map_err(|e| load_error(e).to_string())),
        None => Err("missing from the object".to_owned()),
    };
    match r {
        Ok(()) => hooks.sock_ops = true,
        Err(e) => hooks
            .missing
            .push((PROG_SOCKOPS, format!("loading failed: {e}"))),
    }
    hooks
}

/// A map deletion that found nothing to delete is not an error here.
fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
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

/// Hands the heap memory freed after loading back to the kernel. Loading parses the kernel's
/// BTF (several MiB on a 6.x kernel) for relocations and frees it again, but glibc keeps freed
/// memory in its heap, where it would count in the agent's RSS for the agent's whole life.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of glibc's own heap; no pointers change.
    unsafe {
        libc::malloc_trim(0);
    }
}
