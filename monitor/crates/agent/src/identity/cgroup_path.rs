//! cgroup v2 directories on a real node: which pod (and container) a cgroup path belongs to,
//! and which path a cgroup id (the directory's inode number, what `bpf_skb_cgroup_id` returns)
//! names.
//!
//! The kubelet lays pods out in one of two ways, whatever the container runtime:
//!
//! - systemd driver: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/`
//!   `cri-containerd-<id>.scope` (besteffort alike; guaranteed pods sit directly under
//!   `kubepods.slice` as `kubepods-pod<uid>.slice`). systemd does not allow `-` inside a unit
//!   name's last part, so the UID's dashes are written as `_`. CRI-O names its scopes
//!   `crio-<id>.scope` (and `crio-conmon-<id>.scope` for its monitor), cri-dockerd `docker-<id>.scope`.
//!   kind and other kubelet-in-a-container setups prefix everything with `kubelet-`
//!   (`kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort-pod<uid>.slice`).
//! - cgroupfs driver: `kubepods/burstable/pod<uid>/<container id>` (`besteffort` alike,
//!   guaranteed pods as `kubepods/pod<uid>/...`), with dashes kept in the UID.
//!
//! Either may sit below any prefix (`/sys/fs/cgroup/`, a container's own cgroup, ...).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// What a cgroup path says about the pod it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod UID, with dashes (`1234abcd-5678-...`). For a static pod this is the kubelet's
    /// config hash (32 hex digits), which the API server's mirror pod carries in its
    /// `kubernetes.io/config.mirror` annotation.
    pub uid: String,
    /// The container (or CRI-O conmon, or sandbox) id, when the path goes below the pod's
    /// own cgroup.
    pub container_id: Option<String>,
}

/// The pod UID a cgroup path belongs to, if it is a pod's cgroup or one below it.
///
/// ```
/// use monitor_agent::identity::cgroup_path::pod_uid_from_cgroup_path;
/// let p = "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/\
///          kubepods-besteffort-pod0b1c2d3e_4f50_6172_8394_a5b6c7d8e9f0.slice";
/// assert_eq!(
///     pod_uid_from_cgroup_path(p).as_deref(),
///     Some("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
/// );
/// assert_eq!(pod_uid_from_cgroup_path("system.slice/containerd.service"), None);
/// ```
pub fn pod_uid_from_cgroup_path(path: &str) -> Option<String> {
    parse_cgroup_path(path).map(|p| p.uid)
}

/// The pod UID and container id a cgroup path belongs to, if it is a pod's cgroup or one
/// below it.
pub fn parse_cgroup_path(path: &str) -> Option<PodCgroup> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let uid = systemd_pod_uid(part).or_else(|| cgroupfs_pod_uid(&parts[..i], part));
        if let Some(uid) = uid {
            let container_id = parts[i + 1..].iter().find_map(|c| container_id(c));
            return Some(PodCgroup { uid, container_id });
        }
    }
    None
}

/// `kubepods-burstable-pod<uid>.slice`, `kubepods-pod<uid>.slice`,
/// `kubelet-kubepods-besteffort-pod<uid>.slice`, ...
fn systemd_pod_uid(part: &str) -> Option<String> {
    let name = part.strip_suffix(".slice")?;
    let mut tokens: Vec<&str> = name.split('-').collect();
    let pod = tokens.pop()?.strip_prefix("pod")?;
    let kubepods = tokens.iter().position(|t| *t == "kubepods")?;
    if !tokens[kubepods + 1..]
        .iter()
        .all(|t| matches!(*t, "burstable" | "besteffort"))
    {
        return None;
    }
    normalize_uid(&pod.replace('_', "-"))
}

/// `.../kubepods[/burstable|/besteffort]/pod<uid>`.
fn cgroupfs_pod_uid(ancestors: &[&str], part: &str) -> Option<String> {
    let pod = part.strip_prefix("pod")?;
    let under_kubepods = match ancestors {
        [.., "kubepods"] => true,
        [.., "kubepods", qos] => matches!(*qos, "burstable" | "besteffort"),
        _ => false,
    };
    if !under_kubepods {
        return None;
    }
    normalize_uid(pod)
}

/// A UUID (32 hex digits in dashed groups) or a static pod's 32-hex-digit config hash,
/// lower-cased; anything else is not a pod UID.
fn normalize_uid(uid: &str) -> Option<String> {
    let hex = uid.chars().filter(|c| *c != '-').count();
    let ok = hex == 32
        && uid.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && !uid.starts_with('-')
        && !uid.ends_with('-');
    ok.then(|| uid.to_ascii_lowercase())
}

/// The container id in a cgroup directory name below a pod's: `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `crio-conmon-<id>.scope`, `docker-<id>.scope`, or a bare `<id>`
/// (cgroupfs driver).
fn container_id(part: &str) -> Option<String> {
    let name = part.strip_suffix(".scope").unwrap_or(part);
    let id = [
        "cri-containerd-",
        "crio-conmon-",
        "crio-",
        "docker-",
        "containerd-",
    ]
    .iter()
    .find_map(|p| name.strip_prefix(p))
    .unwrap_or(name);
    // Runtimes use 64 hex digits; accept shorter ids from test setups, but not words such as
    // `container` (crun's nested cgroup below a CRI-O scope).
    let ok = id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit());
    ok.then(|| id.to_ascii_lowercase())
}

/// One cgroup directory found under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// Path relative to the root (`""` for the root itself), `/`-separated.
    pub path: String,
    /// The pod (and container) the path belongs to, if any.
    pub pod: Option<PodCgroup>,
}

#[derive(Debug)]
struct Known {
    entry: CgroupEntry,
    /// When a scan last saw the directory; entries gone for [`FORGET_AFTER`] are dropped.
    seen: Instant,
}

/// Maps cgroup ids (inode numbers of cgroup v2 directories) to their paths under a root.
///
/// The tree is scanned when an id is not known: at once for an id never seen, then at most
/// once per [`CgroupIndex::RESCAN_EVERY`] for the same id, so ids that are in no directory
/// under the root (traffic of the root's parent, a removed cgroup) do not cost a scan per
/// record. Directories that disappear are remembered for a while, so the last records of a
/// pod that just ended are still attributed.
#[derive(Debug)]
pub struct CgroupIndex {
    root: PathBuf,
    known: HashMap<u64, Known>,
    /// Ids a scan did not find, and when.
    misses: HashMap<u64, Instant>,
}

/// How long a directory that is gone stays known.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Directory levels scanned below the root: enough for kind's
/// `kubelet.slice/kubelet-kubepods.slice/<qos>.slice/<pod>.slice/<container>.scope/container`.
const MAX_DEPTH: usize = 8;
/// Misses remembered at most; beyond that the oldest half is forgotten.
const MAX_MISSES: usize = 4096;

impl CgroupIndex {
    /// Minimum time between two scans caused by the same unknown cgroup id.
    pub const RESCAN_EVERY: Duration = Duration::from_secs(1);

    /// An index of the tree below `root` (usually `/sys/fs/cgroup`); scans it once now.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let mut index = Self {
            root: root.into(),
            known: HashMap::new(),
            misses: HashMap::new(),
        };
        index.rescan();
        index
    }

    /// The directory scanned.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory with inode number `id`, scanning the tree if it is not known (see the
    /// type's documentation for how often).
    pub fn lookup(&mut self, id: u64) -> Option<&CgroupEntry> {
        if !self.known.contains_key(&id) {
            if self
                .misses
                .get(&id)
                .is_some_and(|t| t.elapsed() < Self::RESCAN_EVERY)
            {
                return None;
            }
            self.rescan();
            if self.known.contains_key(&id) {
                self.misses.remove(&id);
            } else {
                if self.misses.len() >= MAX_MISSES {
                    self.forget_oldest_misses();
                }
                self.misses.insert(id, Instant::now());
                return None;
            }
        }
        self.known.get(&id).map(|k| &k.entry)
    }

    /// The directory with inode number `id` if it is known now, without scanning.
    pub fn get(&self, id: u64) -> Option<&CgroupEntry> {
        self.known.get(&id).map(|k| &k.entry)
    }

    /// Every known directory, including ones gone in the last minutes.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &CgroupEntry)> {
        self.known.iter().map(|(id, k)| (*id, &k.entry))
    }

    /// Pod UIDs with a cgroup directory under the root at the last scan.
    pub fn present_pod_uids(&self, since: Instant) -> impl Iterator<Item = &str> {
        self.known
            .values()
            .filter(move |k| k.seen >= since)
            .filter_map(|k| k.entry.pod.as_ref().map(|p| p.uid.as_str()))
    }

    /// Scans the tree now (depth-bounded; symbolic links are not followed). Returns when the
    /// scan started: entries seen at or after it are present now.
    pub fn rescan(&mut self) -> Instant {
        let now = Instant::now();
        let mut stack = vec![(self.root.clone(), String::new(), 0_usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let ino = meta.ino();
            match self.known.get_mut(&ino) {
                Some(k) if k.entry.path == rel => k.seen = now,
                _ => {
                    let pod = parse_cgroup_path(&rel);
                    self.known.insert(
                        ino,
                        Known {
                            entry: CgroupEntry {
                                path: rel.clone(),
                                pod,
                            },
                            seen: now,
                        },
                    );
                }
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(children) = std::fs::read_dir(&dir) else {
                continue;
            };
            for child in children.flatten() {
                if !child.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = child.file_name().to_string_lossy().into_owned();
                let child_rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((child.path(), child_rel, depth + 1));
            }
        }
        self.known
            .retain(|_, k| k.seen == now || k.seen.elapsed() < FORGET_AFTER);
        now
    }

    fn forget_oldest_misses(&mut self) {
        let mut times: Vec<Instant> = self.misses.values().copied().collect();
        times.sort_unstable();
        let cut = times[times.len() / 2];
        self.misses.retain(|_, t| *t > cut);
    }

    /// Whether `id` was looked up, not found, and is waiting for its next scan.
    pub fn is_miss(&self, id: u64) -> bool {
        self.misses.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1234abcd-5678-4def-9012-3456789abcde";
    const UID_: &str = "1234abcd_5678_4def_9012_3456789abcde";
    const CID: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn parsed(path: &str) -> Option<(String, Option<String>)> {
        parse_cgroup_path(path).map(|p| (p.uid, p.container_id))
    }

    #[test]
    fn systemd_burstable_containerd() {
        let p = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/\
             cri-containerd-{CID}.scope"
        );
        assert_eq!(parsed(&p), Some((UID.into(), Some(CID.into()))));
        assert_eq!(
            parsed(&format!("/sys/fs/cgroup/{p}")),
            Some((UID.into(), Some(CID.into())))
        );
    }

    #[test]
    fn systemd_besteffort_and_guaranteed_pod_slices() {
        let p =
            format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice");
        assert_eq!(parsed(&p), Some((UID.into(), None)));
        let p = format!("kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope");
        assert_eq!(parsed(&p), Some((UID.into(), Some(CID.into()))));
    }

    #[test]
    fn systemd_crio_scopes() {
        let base =
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        assert_eq!(
            parsed(&format!("{base}/crio-{CID}.scope")),
            Some((UID.into(), Some(CID.into())))
        );
        assert_eq!(
            parsed(&format!("{base}/crio-conmon-{CID}.scope")),
            Some((UID.into(), Some(CID.into())))
        );
        // crun puts the container's processes one level below the scope.
        assert_eq!(
            parsed(&format!("{base}/crio-{CID}.scope/container")),
            Some((UID.into(), Some(CID.into())))
        );
    }

    #[test]
    fn kind_nested_systemd_layout() {
        let p = format!(
            "/sys/fs/cgroup/system.slice/docker-0123456789ab.scope/kubelet.slice/\
             kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
             kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(parsed(&p), Some((UID.into(), Some(CID.into()))));
    }

    #[test]
    fn cgroupfs_layouts() {
        for qos in ["burstable/", "besteffort/", ""] {
            let p = format!("/sys/fs/cgroup/kubepods/{qos}pod{UID}/{CID}");
            assert_eq!(parsed(&p), Some((UID.into(), Some(CID.into()))), "{p}");
            let p = format!("kubepods/{qos}pod{UID}");
            assert_eq!(parsed(&p), Some((UID.into(), None)), "{p}");
        }
        let p = format!("kubepods/burstable/pod{UID}/crio-{CID}");
        assert_eq!(parsed(&p), Some((UID.into(), Some(CID.into()))));
        // kind with the cgroupfs driver.
        let p = format!("kubelet/kubepods/besteffort/pod{UID}/{CID}");
        assert_eq!(parsed(&p), Some((UID.into(), Some(CID.into()))));
    }

    #[test]
    fn static_pod_hash_uid() {
        let hash = "3d1e0a0fa0a3f5a8a6f7e3b59cd1fe51";
        let p =
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice");
        assert_eq!(pod_uid_from_cgroup_path(&p).as_deref(), Some(hash));
    }

    #[test]
    fn uppercase_uid_is_lowercased() {
        let p = format!("kubepods/pod{}", UID.to_uppercase());
        assert_eq!(pod_uid_from_cgroup_path(&p).as_deref(), Some(UID));
    }

    #[test]
    fn non_pod_cgroups() {
        for p in [
            "",
            "/",
            "system.slice/containerd.service",
            "system.slice/kubelet.service",
            "user.slice/user-1000.slice/session-3.scope",
            "user.slice/user-1000.slice/user@1000.service/app.slice/podman-1234.scope",
            "kubepods.slice",
            "kubepods.slice/kubepods-burstable.slice",
            "kubepods/burstable",
            "kubepods",
            &format!("system.slice/docker-{CID}.scope"),
            // Not under kubepods: a directory that merely starts with `pod`.
            &format!("machine.slice/pod{UID}"),
            // Not a UID.
            "kubepods.slice/kubepods-podnotauid.slice",
            "kubepods/burstable/podfoo/abc",
            "kubepods.slice/kubepods-pod1234.slice",
            // An unknown QoS class word between kubepods and the pod.
            &format!("kubepods.slice/kubepods-gold-pod{UID_}.slice"),
        ] {
            assert_eq!(parsed(p), None, "{p}");
        }
    }

    #[test]
    fn container_words_are_not_ids() {
        assert_eq!(container_id("container"), None);
        assert_eq!(container_id("init.scope"), None);
        assert_eq!(
            container_id(&format!("cri-containerd-{CID}.scope")),
            Some(CID.into())
        );
    }

    fn temp_tree(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cgidx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ino(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn index_maps_inodes_to_paths_and_finds_late_directories() {
        let root = temp_tree("late");
        let pod = root.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
        ));
        let ctr = pod.join(format!("cri-containerd-{CID}.scope"));
        std::fs::create_dir_all(&ctr).unwrap();
        std::fs::create_dir_all(root.join("system.slice/sshd.service")).unwrap();
        let mut index = CgroupIndex::new(&root);

        let e = index.lookup(ino(&ctr)).unwrap().clone();
        assert!(
            e.path.ends_with(&format!("cri-containerd-{CID}.scope")),
            "{}",
            e.path
        );
        assert_eq!(e.pod.as_ref().unwrap().uid, UID);
        assert_eq!(index.lookup(ino(&root)).unwrap().path, "");
        let sshd = index
            .lookup(ino(&root.join("system.slice/sshd.service")))
            .unwrap();
        assert_eq!(sshd.pod, None);

        // A container created after the first scan is found on its first lookup.
        let late = pod.join("cri-containerd-aaaaaaaaaaaaaaaa.scope");
        std::fs::create_dir_all(&late).unwrap();
        assert_eq!(
            index
                .lookup(ino(&late))
                .unwrap()
                .pod
                .as_ref()
                .unwrap()
                .container_id
                .as_deref(),
            Some("aaaaaaaaaaaaaaaa")
        );
        assert!(
            index
                .present_pod_uids(Instant::now() - Duration::from_secs(60))
                .any(|u| u == UID)
        );

        // An unknown id is remembered and not rescanned for at once.
        assert!(index.lookup(u64::MAX).is_none());
        assert!(index.is_miss(u64::MAX));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn index_depth_is_bounded() {
        let root = temp_tree("deep");
        let mut deep = root.clone();
        for i in 0..=MAX_DEPTH {
            deep = deep.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        let mut index = CgroupIndex::new(&root);
        assert!(index.lookup(ino(deep.parent().unwrap())).is_some());
        assert!(
            index.lookup(ino(&deep)).is_none(),
            "level {} is below the bound",
            MAX_DEPTH + 1
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn removed_directories_stay_known_for_a_while() {
        let root = temp_tree("gone");
        let ctr = root.join(format!("kubepods/pod{UID}/{CID}"));
        std::fs::create_dir_all(&ctr).unwrap();
        let id = ino(&ctr);
        let mut index = CgroupIndex::new(&root);
        std::fs::remove_dir_all(root.join("kubepods")).unwrap();
        let since = index.rescan();
        assert_eq!(index.lookup(id).unwrap().pod.as_ref().unwrap().uid, UID);
        assert_eq!(
            index.present_pod_uids(since).count(),
            0,
            "gone from the tree now"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
