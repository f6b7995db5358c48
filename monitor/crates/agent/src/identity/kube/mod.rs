//! Kubernetes as the identity source: watches of this node's Pods, all Services,
//! EndpointSlices and NetworkPolicies (kube-rs), and the node's cgroup tree.
//!
//! - A cgroup id is the inode of a cgroup v2 directory; its path names the pod UID
//!   ([`super::cgroup_path`]), and the UID names a pod of this node from the Pod watch.
//! - An IP is, by precedence: a pod of this node (its `status.podIPs`), this node itself (its
//!   `status.hostIPs`, which hostNetwork pods share), a pod elsewhere (an EndpointSlice
//!   endpoint; named from its `targetRef`, with no labels since only this node's pods are
//!   watched), or a Service's ClusterIP.
//! - A pod's Service is the one whose EndpointSlices list it, else the first (by name) in its
//!   namespace whose selector matches its labels. It is isolated when a NetworkPolicy in its
//!   namespace selects it and allows nothing: both policy types, no ingress and no egress rule.
//!
//! The watches feed one raw store; after each burst of events a fresh index is built and
//! swapped in, so lookups (synchronous, from the agent's drain loop) never wait for the API
//! server or for a rebuild. A relist (a watch that expired) replaces a store only once it is
//! complete, as kube-rs' reflector does.
//!
//! IP reuse: each address a pod (or EndpointSlice) claims is stamped with the order in which
//! the claim was first seen; when two claim one address, the latest claim wins, so a new pod
//! owns its address from the event that announced it, whatever the old pod does later.
//!
//! Late metadata: a cgroup whose path names a pod the watch has not delivered yet resolves to
//! nothing, and is looked up again on every record; [`KubeResolver::unattributed_reason`] says
//! why, and how long it has waited.

mod index;
mod resources;
#[cfg(test)]
mod tests;
mod watch;

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use ::kube::{Api, Client, runtime::watcher};
use tokio::task::JoinHandle;

use super::{Pod, PodResolver, cgroup_path::CgroupIndex};
use index::*;
use resources::*;
use watch::*;

/// Why the Kubernetes identity source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No node name was given.
    #[error(
        "the node name is empty: pass this node's name (the downward API's spec.nodeName) so \
         only its pods are watched"
    )]
    NoNodeName,
    /// Neither the in-cluster service account nor a kubeconfig gave a usable client.
    #[error(
        "cannot configure a Kubernetes client from the in-cluster service account or a \
         kubeconfig: {source}"
    )]
    Client {
        /// The error from kube-rs.
        source: ::kube::Error,
    },
}

/// How long a deleted pod stays known by UID, for the last records of its cgroups.
const DEPARTED_FOR: Duration = Duration::from_secs(600);
/// How long a cgroup's pod may be unknown before [`KubeResolver::unattributed_reason`] says
/// the wait is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Most watch events applied before one index rebuild.
const BATCH: usize = 256;
/// Annotation of a static pod's mirror: the UID its cgroup is named after.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Label of an EndpointSlice naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Identity from the Kubernetes API server and this node's cgroup tree.
///
/// Lookups are synchronous and cheap; watches run as tasks on the tokio runtime the resolver
/// was created on, and stop when it is dropped.
#[derive(Debug)]
pub struct KubeResolver {
    shared: Arc<Shared>,
    cgroups: CgroupIndex,
    /// Pod UIDs seen in a cgroup path before the API server told about them, since when.
    pending: HashMap<String, Instant>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeResolver {
    /// Connects with the in-cluster service account (or the local kubeconfig) and starts the
    /// watches for node `node_name`; cgroup paths are read under `cgroup_root`.
    ///
    /// Returns before the first lists arrive: see [`KubeResolver::wait_synced`]. Needs RBAC
    /// `get`, `list`, `watch` on `pods`, `services`, `endpointslices.discovery.k8s.io` and
    /// `networkpolicies.networking.k8s.io`, cluster-wide.
    pub async fn connect(node_name: String, cgroup_root: PathBuf) -> Result<Self, KubeError> {
        if node_name.trim().is_empty() {
            return Err(KubeError::NoNodeName);
        }
        let client = Client::try_default()
            .await
            .map_err(|source| KubeError::Client { source })?;
        Ok(Self::with_client(client, node_name, cgroup_root))
    }

    /// Starts the watches with `client` (a real one, or a mocked service in tests).
    /// `node_name` must be this node's name ([`KubeResolver::connect`] checks it is not empty:
    /// an empty one would select the pods no node runs).
    ///
    /// # Panics
    /// When called outside a tokio runtime: the watches are spawned on the current one.
    pub fn with_client(client: Client, node_name: String, cgroup_root: PathBuf) -> Self {
        let mut resolver = Self::unwatched(node_name, cgroup_root);
        let node = resolver.shared.node.clone();
        // Paginated consistent lists (kube-rs' default): since Kubernetes 1.31 the API server
        // serves them from its watch cache, so one agent per node relisting at once (a
        // rollout, an expired watch) does not load etcd.
        let cfg = watcher::Config::default();
        let pods = cfg.clone().fields(&format!("spec.nodeName={node}"));
        resolver.tasks = vec![
            spawn_watch::<PodEntry>(Api::all(client.clone()), pods, &resolver.shared),
            spawn_watch::<ServiceEntry>(Api::all(client.clone()), cfg.clone(), &resolver.shared),
            spawn_watch::<SliceEntry>(Api::all(client.clone()), cfg.clone(), &resolver.shared),
            spawn_watch::<PolicyEntry>(Api::all(client), cfg, &resolver.shared),
        ];
        resolver
    }

    /// A resolver with empty stores and no watches (events are applied by hand in tests).
    fn unwatched(node_name: String, cgroup_root: PathBuf) -> Self {
        Self {
            shared: Arc::new(Shared {
                node: node_name,
                raw: Mutex::new(Raw::default()),
                index: RwLock::new(Arc::new(Index::default())),
            }),
            cgroups: CgroupIndex::new(cgroup_root),
            pending: HashMap::new(),
            tasks: Vec::new(),
        }
    }

    /// Whether every watch has delivered its first complete list.
    pub fn is_synced(&self) -> bool {
        self.shared.index().all_synced
    }

    /// Waits until [`KubeResolver::is_synced`] or `timeout`; returns whether synced.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_synced() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Why cgroup `cgroup_id` has no pod now, or `None` when it has one (or is a pod cgroup
    /// whose pod is known). Meant for the record the agent writes without a source pod.
    pub fn unattributed_reason(&self, cgroup_id: u64) -> Option<String> {
        let root = self.cgroups.root().display();
        let Some(entry) = self.cgroups.get(cgroup_id) else {
            return Some(format!(
                "cgroup id {cgroup_id} is not a directory under {root} (a cgroup outside the \
                 monitored tree, or one removed before it was scanned)"
            ));
        };
        let path = if entry.path.is_empty() {
            root.to_string()
        } else {
            entry.path.clone()
        };
        let Some(pod) = &entry.pod else {
            return Some(format!("cgroup {path} is not a pod"));
        };
        let index = self.shared.index();
        if index.by_uid.contains_key(&pod.uid) {
            return None;
        }
        let mut why = format!(
            "cgroup {path} is pod {}, not yet known from the API server",
            pod.uid
        );
        if !index.pods_synced {
            why.push_str("; the first list of this node's pods has not arrived yet");
        }
        if let Some(err) = &index.pods_error {
            why.push_str(&format!("; the pod watch is failing: {err}"));
        }
        match self.pending.get(&pod.uid).map(Instant::elapsed) {
            Some(w) if w >= GIVE_UP_AFTER => why.push_str(&format!(
                "; gave up waiting after {}s (is the pod on node {}?)",
                w.as_secs(),
                self.shared.node
            )),
            Some(w) => why.push_str(&format!(" (waited {} ms so far)", w.as_millis())),
            None => {}
        }
        Some(why)
    }

    /// Applies a batch of watch events for one resource, as the watch tasks do.
    #[cfg(test)]
    fn apply<S: Summary>(&self, events: Vec<Result<watcher::Event<S::Object>, watcher::Error>>) {
        self.shared.apply::<S>(events);
    }
}

impl Drop for KubeResolver {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl PodResolver for KubeResolver {
    fn unattributed_reason(&self, id: u64) -> Option<String> {
        KubeResolver::unattributed_reason(self, id)
    }

    fn node(&self) -> &str {
        &self.shared.node
    }

    fn by_cgroup(&mut self, id: u64) -> Option<Arc<Pod>> {
        let uid = &self.cgroups.lookup(id)?.pod.as_ref()?.uid;
        if let Some(pod) = self.shared.index().by_uid.get(uid) {
            if !self.pending.is_empty() {
                self.pending.remove(uid);
            }
            return Some(pod.clone());
        }
        if !self.pending.contains_key(uid) {
            if self.pending.len() >= 4096 {
                self.pending.retain(|_, t| t.elapsed() < DEPARTED_FOR);
            }
            self.pending.insert(uid.clone(), Instant::now());
        }
        None
    }

    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Pod>> {
        self.shared.index().by_ip.get(&ip).cloned()
    }

    /// Only this node's pods: the Pod watch is this node's, and EndpointSlices do not carry
    /// service accounts.
    fn by_service_account(&self, namespace: &str, service_account: &str) -> Vec<Arc<Pod>> {
        let index = self.shared.index();
        let mut pods: Vec<Arc<Pod>> = index
            .by_uid
            .values()
            .filter(|p| {
                p.namespace == namespace && p.service_account.as_deref() == Some(service_account)
            })
            .cloned()
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        pods.dedup_by(|a, b| Arc::ptr_eq(a, b));
        pods
    }

    fn pod_cgroups(&mut self) -> Vec<(Arc<Pod>, u64)> {
        // The agent calls monitored_pod_ips (which rescans) just before this.
        let index = self.shared.index();
        self.cgroups
            .entries()
            .filter_map(|(id, e)| Some((index.by_uid.get(&e.pod.as_ref()?.uid)?.clone(), id)))
            .collect()
    }

    fn monitored_pod_ips(&mut self) -> Vec<IpAddr> {
        let since = self.cgroups.rescan();
        let index = self.shared.index();
        let mut ips: Vec<IpAddr> = self
            .cgroups
            .present_pod_uids(since)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|uid| index.monitored.get(uid))
            .flatten()
            .copied()
            .collect();
        ips.sort_unstable();
        ips.dedup();
        ips
    }
}

/// State shared between the resolver and its watch tasks.
#[derive(Debug)]
struct Shared {
    node: String,
    /// What the watches delivered; only the watch tasks lock it.
    raw: Mutex<Raw>,
    /// What lookups read; replaced whole after each batch.
    index: RwLock<Arc<Index>>,
}

impl Shared {
    fn index(&self) -> Arc<Index> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn apply<S: Summary>(&self, events: Vec<Result<watcher::Event<S::Object>, watcher::Error>>) {
        let mut raw = self.raw.lock().unwrap_or_else(PoisonError::into_inner);
        let mut removed = Vec::new();
        for event in events {
            let store = S::store(&mut raw);
            match event {
                Ok(event) => {
                    store.error = None;
                    removed.extend(store.apply(event));
                }
                Err(err) => {
                    tracing::warn!(
                        resource = S::RESOURCE,
                        error = %err,
                        "Kubernetes watch failed; retrying with backoff"
                    );
                    store.error = Some(err.to_string());
                }
            }
        }
        if !removed.is_empty() {
            let index = self.index();
            S::departed(&mut raw, removed, &index);
        }
        let index = Arc::new(raw.rebuild(&self.node));
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = index;
    }
}
