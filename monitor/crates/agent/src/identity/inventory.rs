//! The static inventory: a YAML file listing this node's pods (and named external hosts and
//! Services). The lab's identity source and the default. A cgroup id is the inode number of the
//! pod's cgroup v2 directory; pods whose cgroup appears after the agent started are found by a
//! rescan on the first unknown id.

use std::{
    collections::HashMap,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use monitor_record::inventory::InventoryFile;

use super::{PeerKind, Pod, PodResolver};

/// Why an inventory file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("cannot read inventory {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// YAML syntax or schema error, with its position.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but cannot be right.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        what: String,
    },
}

/// The static inventory: a YAML file listing this node's pods.
#[derive(Debug)]
pub struct Inventory {
    node: String,
    cgroup_root: PathBuf,
    pods: Vec<Arc<Pod>>,
    by_ip: HashMap<IpAddr, Arc<Pod>>,
    /// Pods by (namespace, service account), in file order.
    by_service_account: HashMap<(String, String), Vec<Arc<Pod>>>,
    by_cgroup: HashMap<u64, Arc<Pod>>,
    /// cgroup ids a rescan did not resolve, and when: retried after [`RESCAN_EVERY`].
    misses: HashMap<u64, Instant>,
}

/// Minimum time between two rescans for the same unknown cgroup id.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

impl Inventory {
    /// Reads and validates `path`; cgroup paths are resolved under `cgroup_root`.
    pub fn load(path: &Path, cgroup_root: &Path) -> Result<Self, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, cgroup_root)
    }

    /// Parses inventory text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path, cgroup_root: &Path) -> Result<Self, InventoryError> {
        let file: InventoryFile = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            InventoryError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        let invalid = |what: String| InventoryError::Invalid {
            path: path.to_owned(),
            what,
        };
        if file.node.trim().is_empty() {
            return Err(invalid("`node` must name this node".into()));
        }
        let mut pods = Vec::new();
        let mut by_ip = HashMap::new();
        let mut by_service_account: HashMap<(String, String), Vec<Arc<Pod>>> = HashMap::new();
        let mut names = HashMap::new();
        for (entry, kind) in file.entries() {
            let pod = entry.to_pod(kind);
            let key = (pod.namespace.clone(), pod.name.clone());
            if names.insert(key, ()).is_some() {
                return Err(invalid(format!(
                    "pod {}/{} is listed twice",
                    pod.namespace, pod.name
                )));
            }
            if let Some(cg) = &pod.cgroup
                && cg.components().any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(invalid(format!(
                    "pod {}: cgroup {} must be a relative path below the agent's --cgroup \
                     directory, without `..`",
                    pod.name,
                    cg.display()
                )));
            }
            let pod = Arc::new(pod);
            for ip in &pod.ips {
                if let Some(other) = by_ip.insert(*ip, pod.clone()) {
                    return Err(invalid(format!(
                        "address {ip} is given to both {} and {}",
                        other.name, pod.name
                    )));
                }
            }
            if let (PeerKind::Pod, Some(sa)) = (pod.kind, &pod.service_account) {
                by_service_account
                    .entry((pod.namespace.clone(), sa.clone()))
                    .or_default()
                    .push(pod.clone());
            }
            pods.push(pod);
        }
        let mut inv = Self {
            node: file.node,
            cgroup_root: cgroup_root.to_owned(),
            pods,
            by_ip,
            by_service_account,
            by_cgroup: HashMap::new(),
            misses: HashMap::new(),
        };
        inv.rescan();
        Ok(inv)
    }

    /// Every pod and external entry.
    pub fn pods(&self) -> &[Arc<Pod>] {
        &self.pods
    }

    /// Re-reads the cgroup ids of every pod whose cgroup directory exists now.
    fn rescan(&mut self) {
        for pod in &self.pods {
            if let Some(cg) = &pod.cgroup
                && let Ok(meta) = std::fs::metadata(self.cgroup_root.join(cg))
            {
                self.by_cgroup.insert(meta.ino(), pod.clone());
            }
        }
    }
}

impl PodResolver for Inventory {
    fn node(&self) -> &str {
        &self.node
    }

    fn by_cgroup(&mut self, id: u64) -> Option<Arc<Pod>> {
        if let Some(p) = self.by_cgroup.get(&id) {
            return Some(p.clone());
        }
        // A pod started after the agent: its cgroup directory is new. Rescan at once for an id
        // never seen, then at most once per interval for the same id (non-pod cgroups such as
        // system services would otherwise cause a rescan per record).
        if self
            .misses
            .get(&id)
            .is_some_and(|t| t.elapsed() < RESCAN_EVERY)
        {
            return None;
        }
        self.rescan();
        let found = self.by_cgroup.get(&id).cloned();
        if found.is_none() {
            self.misses.insert(id, Instant::now());
        } else {
            self.misses.remove(&id);
        }
        found
    }

    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Pod>> {
        self.by_ip.get(&ip).cloned()
    }

    fn by_service_account(&self, namespace: &str, service_account: &str) -> Vec<Arc<Pod>> {
        self.by_service_account
            .get(&(namespace.to_owned(), service_account.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    fn pod_cgroups(&mut self) -> Vec<(Arc<Pod>, u64)> {
        let mut out = Vec::new();
        for pod in self.pods.iter().filter(|p| p.kind == PeerKind::Pod) {
            if let Some(cg) = &pod.cgroup {
                for ino in cgroup_tree(&self.cgroup_root.join(cg), 4) {
                    out.push((pod.clone(), ino));
                }
            }
        }
        out
    }

    fn monitored_pod_ips(&mut self) -> Vec<IpAddr> {
        self.rescan();
        let mut ips: Vec<IpAddr> = self
            .by_cgroup
            .values()
            .filter(|p| p.kind == PeerKind::Pod)
            .flat_map(|p| p.ips.iter().copied())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        ips
    }
}

/// Inode numbers (cgroup ids) of `dir` and the directories below it, `depth` levels down.
fn cgroup_tree(dir: &Path, depth: usize) -> Vec<u64> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Vec::new();
    };
    let mut out = vec![meta.ino()];
    if depth > 0
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(cgroup_tree(&e.path(), depth - 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, InventoryError> {
        Inventory::parse(text, Path::new("inv.yaml"), Path::new("/nonexistent"))
    }

    #[test]
    fn parses_pods_and_externals() {
        let inv = parse(
            "node: n1\npods:\n  - name: a\n    namespace: ns\n    service: svc-a\n    ips: [10.0.0.1, 'fd00::1']\n    cgroup: a\n    lab: {serve: []}\nexternals:\n  - name: partner\n    ips: [10.9.9.9]\n",
        )
        .unwrap();
        assert_eq!(inv.node(), "n1");
        let a = inv.by_ip("fd00::1".parse().unwrap()).unwrap();
        assert_eq!(
            (a.name.as_str(), a.service.as_deref()),
            ("a", Some("svc-a"))
        );
        assert_eq!(
            inv.by_ip("10.9.9.9".parse().unwrap()).unwrap().kind,
            PeerKind::External
        );
        assert!(inv.by_ip("10.0.0.2".parse().unwrap()).is_none());
    }

    #[test]
    fn pods_by_service_account() {
        let inv = parse(
            "node: n1\npods:\n  - {name: a1, namespace: ns, service_account: sa, ips: [10.0.0.1]}\n  - {name: a2, namespace: ns, service_account: sa}\n  - {name: b, namespace: other, service_account: sa}\n  - {name: c, namespace: ns}\n",
        )
        .unwrap();
        let names = |ns, sa| -> Vec<String> {
            inv.by_service_account(ns, sa)
                .iter()
                .map(|p| p.name.clone())
                .collect()
        };
        assert_eq!(names("ns", "sa"), ["a1", "a2"]);
        assert_eq!(names("other", "sa"), ["b"]);
        assert!(names("ns", "c").is_empty(), "no service account, no match");
        assert!(names("ns", "nobody").is_empty());
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let err = parse("node: n1\npods:\n  - name: a\n    ips: [10.0.0.1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("inv.yaml:"), "{msg}");
        assert!(
            matches!(err, InventoryError::Parse { line, .. } if line >= 4),
            "{msg}"
        );
    }

    #[test]
    fn schema_errors_name_the_position() {
        let err = parse("node: n1\npods:\n  - name: a\n    ips: [not-an-ip]\n").unwrap_err();
        assert!(
            matches!(err, InventoryError::Parse { line: 4, .. }),
            "{err}"
        );
        let err = parse("node: n1\npods:\n  - name: a\n    colour: red\n").unwrap_err();
        assert!(
            matches!(err, InventoryError::Parse { line: 4, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_entry() {
        let err = parse(
            "node: n1\npods:\n  - {name: a, ips: [10.0.0.1]}\n  - {name: b, ips: [10.0.0.1]}\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("10.0.0.1 is given to both a and b"),
            "{err}"
        );
        let err = parse("node: n1\npods:\n  - {name: a, cgroup: ../../etc}\n").unwrap_err();
        assert!(err.to_string().contains("pod a: cgroup ../../etc"), "{err}");
        assert!(parse("node: ''\n").is_err());
    }

    #[test]
    fn cgroup_ids_come_from_directory_inodes() {
        let dir = std::env::temp_dir().join(format!("inv-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pod-a")).unwrap();
        let mut inv = Inventory::parse(
            "node: n\npods:\n  - {name: a, cgroup: pod-a}\n  - {name: late, cgroup: pod-late}\n",
            Path::new("inv.yaml"),
            &dir,
        )
        .unwrap();
        let ino = std::fs::metadata(dir.join("pod-a")).unwrap().ino();
        assert_eq!(inv.by_cgroup(ino).unwrap().name, "a");
        // Every cgroup of a pod, its own and those below it (containers).
        std::fs::create_dir_all(dir.join("pod-a/ctr-1")).unwrap();
        let ctr = std::fs::metadata(dir.join("pod-a/ctr-1")).unwrap().ino();
        let mut got: Vec<u64> = inv.pod_cgroups().into_iter().map(|(_, id)| id).collect();
        got.sort_unstable();
        let mut want = vec![ino, ctr];
        want.sort_unstable();
        assert_eq!(got, want);
        // Only pods whose cgroup exists count as monitored.
        assert!(
            inv.monitored_pod_ips().is_empty(),
            "pod a has no IPs, pod-late no cgroup"
        );
        // A pod whose cgroup appears later is found on its first lookup.
        std::fs::create_dir_all(dir.join("pod-late")).unwrap();
        let late = std::fs::metadata(dir.join("pod-late")).unwrap().ino();
        assert_eq!(inv.by_cgroup(late).unwrap().name, "late");
        // An id that is no pod is remembered, not rescanned for on every record.
        assert!(inv.by_cgroup(u64::MAX).is_none());
        assert!(inv.misses.contains_key(&u64::MAX));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
