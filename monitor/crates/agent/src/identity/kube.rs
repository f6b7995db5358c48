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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use ::kube::{
    Api, Client, ResourceExt as _,
    core::{Selector, SelectorExt as _},
    runtime::{WatchStreamExt as _, watcher},
};
use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Pod as KubePod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::{PeerKind, Pod, PodResolver, cgroup_path::CgroupIndex};

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

/// Spawns the watch of one resource, feeding `shared` in batches.
fn spawn_watch<S: Summary>(
    api: Api<S::Object>,
    cfg: watcher::Config,
    shared: &Arc<Shared>,
) -> JoinHandle<()> {
    let shared = shared.clone();
    tokio::spawn(async move {
        let stream = watcher(api, cfg).default_backoff().ready_chunks(BATCH);
        let mut stream = std::pin::pin!(stream);
        while let Some(events) = stream.next().await {
            shared.apply::<S>(events);
        }
    })
}

/// The part of a Kubernetes object identity needs, and where its store is.
trait Summary: Sized + Send + 'static {
    /// The Kubernetes type watched.
    type Object: ::kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static;
    /// Resource name, for logs.
    const RESOURCE: &'static str;
    /// The store key of an object (stable across its updates).
    fn key(obj: &Self::Object) -> String;
    /// Extracts what is needed; `prev` is the object's previous summary (for address claims),
    /// `seq` numbers new claims.
    fn summarize(obj: &Self::Object, prev: Option<&Self>, seq: &mut u64) -> Self;
    /// This summary's store.
    fn store(raw: &mut Raw) -> &mut Store<Self>;
    /// Called with the summaries a delete or a relist removed; `index` is the index before.
    fn departed(_raw: &mut Raw, _removed: Vec<Self>, _index: &Index) {}
}

/// One resource's objects, as of the last event.
#[derive(Debug)]
struct Store<T> {
    items: HashMap<String, T>,
    /// A relist in progress: replaces `items` when complete.
    relist: Option<HashMap<String, T>>,
    /// Whether a complete list has been applied once.
    synced: bool,
    /// The last watch error, until the next event.
    error: Option<String>,
    /// Claim counter (see the module documentation on IP reuse).
    seq: u64,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            items: HashMap::new(),
            relist: None,
            synced: false,
            error: None,
            seq: 0,
        }
    }
}

impl<S: Summary> Store<S> {
    /// Applies one event; returns the summaries it removed.
    fn apply(&mut self, event: watcher::Event<S::Object>) -> Vec<S> {
        match event {
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                let key = S::key(&obj);
                let v = S::summarize(&obj, self.items.get(&key), &mut self.seq);
                self.relist.get_or_insert_default().insert(key, v);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.items, fresh);
                self.synced = true;
                old.into_iter()
                    .filter(|(k, _)| !self.items.contains_key(k))
                    .map(|(_, v)| v)
                    .collect()
            }
            watcher::Event::Apply(obj) => {
                let key = S::key(&obj);
                let v = S::summarize(&obj, self.items.get(&key), &mut self.seq);
                self.items.insert(key, v);
                Vec::new()
            }
            watcher::Event::Delete(obj) => self.items.remove(&S::key(&obj)).into_iter().collect(),
        }
    }
}

/// Claims on addresses: the first time each current address was seen for this object.
fn claims(
    ips: &[IpAddr],
    prev: Option<&HashMap<IpAddr, u64>>,
    seq: &mut u64,
) -> HashMap<IpAddr, u64> {
    ips.iter()
        .map(|ip| {
            let claim = prev.and_then(|p| p.get(ip).copied()).unwrap_or_else(|| {
                *seq += 1;
                *seq
            });
            (*ip, claim)
        })
        .collect()
}

fn parse_ips<'a>(ips: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if let Ok(ip) = ip.parse()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// A pod of this node.
#[derive(Debug)]
struct PodEntry {
    uid: String,
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    service_account: Option<String>,
    ips: Vec<IpAddr>,
    host_ips: Vec<IpAddr>,
    host_network: bool,
    /// Succeeded or Failed: its addresses are free for other pods.
    terminal: bool,
    /// A static pod's config hash, which names its cgroup.
    mirror: Option<String>,
    claims: HashMap<IpAddr, u64>,
}

impl Summary for PodEntry {
    type Object = KubePod;
    const RESOURCE: &'static str = "pods";

    fn key(obj: &KubePod) -> String {
        obj.uid().unwrap_or_else(|| {
            format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
        })
    }

    fn summarize(obj: &KubePod, prev: Option<&Self>, seq: &mut u64) -> Self {
        let status = obj.status.as_ref();
        let spec = obj.spec.as_ref();
        let mut ips = parse_ips(
            status
                .and_then(|s| s.pod_ips.as_ref())
                .into_iter()
                .flatten()
                .map(|p| &p.ip),
        );
        if ips.is_empty() {
            ips = parse_ips(status.and_then(|s| s.pod_ip.as_ref()));
        }
        let mut host_ips = parse_ips(
            status
                .and_then(|s| s.host_ips.as_ref())
                .into_iter()
                .flatten()
                .map(|p| &p.ip),
        );
        if host_ips.is_empty() {
            host_ips = parse_ips(status.and_then(|s| s.host_ip.as_ref()));
        }
        let terminal = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        Self {
            uid: Self::key(obj),
            name: obj.name_any(),
            namespace: obj.namespace().unwrap_or_default(),
            labels: obj.labels().clone(),
            service_account: spec.and_then(|s| s.service_account_name.clone()),
            claims: claims(&ips, prev.map(|p| &p.claims), seq),
            ips,
            host_ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            terminal,
            mirror: obj
                .annotations()
                .get(MIRROR_ANNOTATION)
                .map(|h| h.to_ascii_lowercase()),
        }
    }

    fn store(raw: &mut Raw) -> &mut Store<Self> {
        &mut raw.pods
    }

    fn departed(raw: &mut Raw, removed: Vec<Self>, index: &Index) {
        let now = Instant::now();
        raw.departed.retain(|_, (_, t)| t.elapsed() < DEPARTED_FOR);
        for p in removed {
            for uid in std::iter::once(&p.uid).chain(p.mirror.as_ref()) {
                if let Some(pod) = index.by_uid.get(uid) {
                    raw.departed.insert(uid.clone(), (pod.clone(), now));
                }
            }
        }
    }
}

/// A Service: its ClusterIPs and selector.
#[derive(Debug)]
struct ServiceEntry {
    name: String,
    namespace: String,
    selector: BTreeMap<String, String>,
    cluster_ips: Vec<IpAddr>,
}

impl Summary for ServiceEntry {
    type Object = Service;
    const RESOURCE: &'static str = "services";

    fn key(obj: &Service) -> String {
        format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
    }

    fn summarize(obj: &Service, _prev: Option<&Self>, _seq: &mut u64) -> Self {
        let spec = obj.spec.as_ref();
        // Headless Services say "None", which does not parse.
        let mut cluster_ips = parse_ips(
            spec.and_then(|s| s.cluster_ips.as_ref())
                .into_iter()
                .flatten(),
        );
        if cluster_ips.is_empty() {
            cluster_ips = parse_ips(spec.and_then(|s| s.cluster_ip.as_ref()));
        }
        Self {
            name: obj.name_any(),
            namespace: obj.namespace().unwrap_or_default(),
            selector: spec.and_then(|s| s.selector.clone()).unwrap_or_default(),
            cluster_ips,
        }
    }

    fn store(raw: &mut Raw) -> &mut Store<Self> {
        &mut raw.services
    }
}

/// An EndpointSlice: the Service it belongs to and its endpoints.
#[derive(Debug)]
struct SliceEntry {
    namespace: String,
    service: Option<String>,
    endpoints: Vec<EndpointEntry>,
    claims: HashMap<IpAddr, u64>,
}

#[derive(Debug)]
struct EndpointEntry {
    ips: Vec<IpAddr>,
    /// `targetRef` when it is a Pod: (namespace, name, uid).
    pod: Option<(String, String, Option<String>)>,
    /// The node the endpoint runs on.
    node: Option<String>,
}

impl Summary for SliceEntry {
    type Object = EndpointSlice;
    const RESOURCE: &'static str = "endpointslices";

    fn key(obj: &EndpointSlice) -> String {
        format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
    }

    fn summarize(obj: &EndpointSlice, prev: Option<&Self>, seq: &mut u64) -> Self {
        let namespace = obj.namespace().unwrap_or_default();
        // FQDN slices have host names, not addresses: nothing to map.
        let endpoints: Vec<EndpointEntry> = obj
            .endpoints
            .iter()
            .map(|ep| EndpointEntry {
                ips: parse_ips(&ep.addresses),
                node: ep.node_name.clone(),
                pod: ep
                    .target_ref
                    .as_ref()
                    .filter(|t| t.kind.as_deref() == Some("Pod"))
                    .and_then(|t| {
                        Some((
                            t.namespace.clone().unwrap_or_else(|| namespace.clone()),
                            t.name.clone()?,
                            t.uid.clone(),
                        ))
                    }),
            })
            .filter(|ep| !ep.ips.is_empty())
            .collect();
        let all: Vec<IpAddr> = endpoints
            .iter()
            .flat_map(|e| e.ips.iter().copied())
            .collect();
        Self {
            claims: claims(&all, prev.map(|p| &p.claims), seq),
            service: obj.labels().get(SERVICE_NAME_LABEL).cloned(),
            namespace,
            endpoints,
        }
    }

    fn store(raw: &mut Raw) -> &mut Store<Self> {
        &mut raw.slices
    }
}

/// A NetworkPolicy: what it selects and whether it allows nothing at all.
#[derive(Debug)]
struct PolicyEntry {
    name: String,
    namespace: String,
    /// `None` when the selector does not parse (it then selects nothing).
    selector: Option<Selector>,
    deny_all: bool,
}

impl Summary for PolicyEntry {
    type Object = NetworkPolicy;
    const RESOURCE: &'static str = "networkpolicies";

    fn key(obj: &NetworkPolicy) -> String {
        format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
    }

    fn summarize(obj: &NetworkPolicy, _prev: Option<&Self>, _seq: &mut u64) -> Self {
        let spec = obj.spec.as_ref();
        let types = spec
            .and_then(|s| s.policy_types.as_deref())
            .unwrap_or_default();
        let has = |t: &str| types.iter().any(|x| x == t);
        // Without policyTypes a policy with no rules only isolates ingress: not a quarantine.
        let deny_all = has("Ingress")
            && has("Egress")
            && spec
                .and_then(|s| s.ingress.as_ref())
                .is_none_or(Vec::is_empty)
            && spec
                .and_then(|s| s.egress.as_ref())
                .is_none_or(Vec::is_empty);
        let selector = spec
            .and_then(|s| s.pod_selector.clone())
            .unwrap_or_default()
            .try_into()
            .inspect_err(|e| {
                tracing::warn!(
                    policy = %Self::key(obj),
                    error = %e,
                    "NetworkPolicy podSelector does not parse; it selects no pod here"
                );
            })
            .ok();
        Self {
            name: obj.name_any(),
            namespace: obj.namespace().unwrap_or_default(),
            selector,
            deny_all,
        }
    }

    fn store(raw: &mut Raw) -> &mut Store<Self> {
        &mut raw.policies
    }
}

/// Everything the watches delivered.
#[derive(Debug, Default)]
struct Raw {
    pods: Store<PodEntry>,
    services: Store<ServiceEntry>,
    slices: Store<SliceEntry>,
    policies: Store<PolicyEntry>,
    /// Pods deleted recently, by UID (and mirror hash): their cgroups may still send.
    departed: HashMap<String, (Arc<Pod>, Instant)>,
}

/// What lookups read.
#[derive(Debug, Default)]
struct Index {
    by_ip: HashMap<IpAddr, Arc<Pod>>,
    /// This node's pods by UID and by mirror hash, then recently deleted ones.
    by_uid: HashMap<String, Arc<Pod>>,
    /// Addresses of this node's running, non-hostNetwork pods, by UID and mirror hash.
    monitored: HashMap<String, Vec<IpAddr>>,
    pods_synced: bool,
    all_synced: bool,
    pods_error: Option<String>,
}

/// Keeps the latest claim on each address.
fn claim(map: &mut HashMap<IpAddr, (u64, Arc<Pod>)>, ip: IpAddr, seq: u64, pod: &Arc<Pod>) {
    match map.get(&ip) {
        Some((other, _)) if *other > seq => {}
        _ => {
            map.insert(ip, (seq, pod.clone()));
        }
    }
}

impl Raw {
    fn rebuild(&self, node: &str) -> Index {
        let mut index = Index {
            pods_synced: self.pods.synced,
            all_synced: self.pods.synced
                && self.services.synced
                && self.slices.synced
                && self.policies.synced,
            pods_error: self.pods.error.clone(),
            ..Index::default()
        };

        // Sorted views, so that every choice below is the same on every node and rebuild.
        let mut slices: Vec<(&String, &SliceEntry)> = self.slices.items.iter().collect();
        slices.sort_unstable_by_key(|(k, _)| *k);
        let mut services: Vec<&ServiceEntry> = self.services.items.values().collect();
        services.sort_unstable_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut quarantines: Vec<&PolicyEntry> = self
            .policies
            .items
            .values()
            .filter(|p| p.deny_all)
            .collect();
        quarantines.sort_unstable_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

        // The Service each pod backs, from the slices that list it (first by name).
        let mut backs_uid: HashMap<&str, &str> = HashMap::new();
        let mut backs_name: HashMap<(&str, &str), &str> = HashMap::new();
        for (_, slice) in &slices {
            let Some(svc) = slice.service.as_deref() else {
                continue;
            };
            for (ns, name, uid) in slice.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
                if let Some(uid) = uid {
                    keep_first(backs_uid.entry(uid), svc);
                }
                keep_first(backs_name.entry((ns, name)), svc);
            }
        }

        let mut node_ips: BTreeSet<IpAddr> = BTreeSet::new();
        let mut local: HashMap<IpAddr, (u64, Arc<Pod>)> = HashMap::new();
        let mut local_uids: HashSet<&str> = HashSet::new();
        for p in self.pods.items.values() {
            let service = backs_uid
                .get(p.uid.as_str())
                .or_else(|| backs_name.get(&(p.namespace.as_str(), p.name.as_str())))
                .map(|s| (*s).to_owned())
                .or_else(|| {
                    services
                        .iter()
                        .find(|s| {
                            s.namespace == p.namespace
                                && !s.selector.is_empty()
                                && s.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                        })
                        .map(|s| s.name.clone())
                });
            let isolated_by = quarantines
                .iter()
                .find(|q| {
                    q.namespace == p.namespace
                        && q.selector.as_ref().is_some_and(|s| s.matches(&p.labels))
                })
                .map(|q| q.name.clone());
            let mut pod = Pod::named(&p.name, PeerKind::Pod);
            pod.namespace = p.namespace.clone();
            pod.uid = Some(p.uid.clone());
            pod.service = service;
            pod.service_account = p.service_account.clone();
            pod.labels = p.labels.clone();
            pod.ips = p.ips.clone();
            pod.isolated_by = isolated_by;
            let pod = Arc::new(pod);

            local_uids.insert(&p.uid);
            let keys: Vec<&String> = std::iter::once(&p.uid).chain(p.mirror.as_ref()).collect();
            for k in &keys {
                index.by_uid.insert((*k).clone(), pod.clone());
            }
            node_ips.extend(&p.host_ips);
            if p.host_network {
                node_ips.extend(&p.ips);
                continue;
            }
            if p.terminal {
                continue;
            }
            for k in keys {
                index.monitored.insert(k.clone(), p.ips.clone());
            }
            for ip in &p.ips {
                claim(
                    &mut local,
                    *ip,
                    p.claims.get(ip).copied().unwrap_or(0),
                    &pod,
                );
            }
        }
        for (uid, (pod, _)) in &self.departed {
            index
                .by_uid
                .entry(uid.clone())
                .or_insert_with(|| pod.clone());
        }

        // Addresses, lowest precedence first.
        for s in &services {
            if s.cluster_ips.is_empty() {
                continue;
            }
            let mut svc = Pod::named(&s.name, PeerKind::Service);
            svc.namespace = s.namespace.clone();
            svc.service = Some(s.name.clone());
            svc.ips = s.cluster_ips.clone();
            let svc = Arc::new(svc);
            for ip in &s.cluster_ips {
                index.by_ip.insert(*ip, svc.clone());
            }
        }
        let mut remote: HashMap<IpAddr, (u64, Arc<Pod>)> = HashMap::new();
        for (_, slice) in &slices {
            for ep in &slice.endpoints {
                // This node's pods are known from the Pod watch; a slice may still list one
                // that was just deleted, and must not bring it back.
                if ep.node.as_deref() == Some(node) {
                    continue;
                }
                let identity = match &ep.pod {
                    Some((_, _, Some(uid)))
                        if local_uids.contains(uid.as_str()) || self.departed.contains_key(uid) =>
                    {
                        continue;
                    }
                    Some((ns, name, uid)) => {
                        let mut pod = Pod::named(name, PeerKind::Pod);
                        pod.namespace = ns.clone();
                        pod.uid = uid.clone();
                        pod
                    }
                    // Endpoints with no pod behind them (a selectorless Service such as
                    // default/kubernetes, or an external database): named after the Service.
                    None => {
                        let Some(svc) = &slice.service else {
                            continue;
                        };
                        let mut ext = Pod::named(svc, PeerKind::External);
                        ext.namespace = slice.namespace.clone();
                        ext
                    }
                };
                let mut identity = identity;
                identity.service = slice.service.clone();
                identity.ips = ep.ips.clone();
                let identity = Arc::new(identity);
                for ip in &ep.ips {
                    claim(
                        &mut remote,
                        *ip,
                        slice.claims.get(ip).copied().unwrap_or(0),
                        &identity,
                    );
                }
            }
        }
        index
            .by_ip
            .extend(remote.into_iter().map(|(ip, (_, p))| (ip, p)));
        if !node_ips.is_empty() {
            let mut this_node = Pod::named(node, PeerKind::Node);
            this_node.ips = node_ips.iter().copied().collect();
            let this_node = Arc::new(this_node);
            for ip in node_ips {
                index.by_ip.insert(ip, this_node.clone());
            }
        }
        index
            .by_ip
            .extend(local.into_iter().map(|(ip, (_, p))| (ip, p)));
        index
    }
}

/// Keeps the smallest value for a key.
fn keep_first<'a, K>(entry: std::collections::hash_map::Entry<'_, K, &'a str>, v: &'a str) {
    entry
        .and_modify(|cur| {
            if v < *cur {
                *cur = v;
            }
        })
        .or_insert(v);
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use serde_json::json;
    use watcher::Event;

    use super::*;

    const NODE: &str = "node-a";

    fn resolver() -> KubeResolver {
        KubeResolver::unwatched(NODE.into(), PathBuf::from("/nonexistent"))
    }

    fn pod(name: &str, uid: &str, ip: &str, labels: serde_json::Value) -> KubePod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name, "namespace": "shop", "uid": uid, "resourceVersion": "1",
                "labels": labels,
            },
            "spec": {
                "nodeName": NODE, "serviceAccountName": "sa-shop",
                "containers": [{"name": "app", "image": "registry.example/app:1"}],
            },
            "status": {
                "phase": "Running", "hostIP": "192.168.10.11",
                "hostIPs": [{"ip": "192.168.10.11"}],
                "podIP": ip, "podIPs": [{"ip": ip}],
            },
        }))
        .unwrap()
    }

    fn service(name: &str, ip: &str, selector: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "selector": selector,
                     "ports": [{"port": 80, "protocol": "TCP"}]},
        }))
        .unwrap()
    }

    fn slice(name: &str, svc: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn policy(name: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn listed<S: Summary>(r: &KubeResolver, objs: Vec<S::Object>) {
        let mut events = vec![Ok(Event::Init)];
        events.extend(objs.into_iter().map(|o| Ok(Event::InitApply(o))));
        events.push(Ok(Event::InitDone));
        r.apply::<S>(events);
    }

    #[test]
    fn pods_services_and_remote_endpoints() {
        let r = resolver();
        listed::<PodEntry>(
            &r,
            vec![pod("web-1", "u-web-1", "10.1.0.5", json!({"app": "web"}))],
        );
        listed::<ServiceEntry>(
            &r,
            vec![
                service("web", "10.96.0.10", json!({"app": "web"})),
                service("db", "10.96.0.20", json!({"app": "db"})),
            ],
        );
        listed::<SliceEntry>(
            &r,
            vec![slice(
                "db-abcde",
                "db",
                json!([{"addresses": ["10.2.0.7"], "nodeName": "node-b",
                        "targetRef": {"kind": "Pod", "name": "db-0", "namespace": "shop", "uid": "u-db-0"}}]),
            )],
        );
        assert!(!r.is_synced(), "policies not listed yet");
        listed::<PolicyEntry>(&r, vec![]);
        assert!(r.is_synced());

        let web = r.by_ip(ip("10.1.0.5")).unwrap();
        assert_eq!(
            (
                web.kind,
                web.name.as_str(),
                web.service.as_deref(),
                web.uid.as_deref()
            ),
            (PeerKind::Pod, "web-1", Some("web"), Some("u-web-1"))
        );
        assert_eq!(web.service_account.as_deref(), Some("sa-shop"));
        let svc = r.by_ip(ip("10.96.0.20")).unwrap();
        assert_eq!(
            (svc.kind, svc.name.as_str(), svc.service.as_deref()),
            (PeerKind::Service, "db", Some("db"))
        );
        let db = r.by_ip(ip("10.2.0.7")).unwrap();
        assert_eq!(
            (
                db.kind,
                db.name.as_str(),
                db.service.as_deref(),
                db.uid.as_deref()
            ),
            (PeerKind::Pod, "db-0", Some("db"), Some("u-db-0"))
        );
        let node = r.by_ip(ip("192.168.10.11")).unwrap();
        assert_eq!((node.kind, node.name.as_str()), (PeerKind::Node, NODE));
        assert!(r.by_ip(ip("8.8.8.8")).is_none());
    }

    #[test]
    fn slice_membership_beats_selector_match() {
        let r = resolver();
        listed::<PodEntry>(
            &r,
            vec![pod("web-1", "u-web-1", "10.1.0.5", json!({"app": "web"}))],
        );
        listed::<ServiceEntry>(
            &r,
            vec![
                service("a-web", "10.96.0.9", json!({"app": "web"})),
                service("web-canary", "10.96.0.11", json!({"app": "web"})),
            ],
        );
        // By selector alone the first by name would win.
        assert_eq!(
            r.by_ip(ip("10.1.0.5")).unwrap().service.as_deref(),
            Some("a-web")
        );
        listed::<SliceEntry>(
            &r,
            vec![slice(
                "web-canary-x",
                "web-canary",
                json!([{"addresses": ["10.1.0.5"], "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "u-web-1"}}]),
            )],
        );
        let web = r.by_ip(ip("10.1.0.5")).unwrap();
        assert_eq!(
            (web.kind, web.service.as_deref()),
            (PeerKind::Pod, Some("web-canary"))
        );
    }

    #[test]
    fn ip_reuse_latest_claim_wins_in_either_order() {
        let r = resolver();
        listed::<PodEntry>(&r, vec![pod("old", "u-old", "10.1.0.9", json!({}))]);
        // New pod first, then the old one is deleted, then the old one's late update.
        r.apply::<PodEntry>(vec![Ok(Event::Apply(pod(
            "new",
            "u-new",
            "10.1.0.9",
            json!({}),
        )))]);
        assert_eq!(r.by_ip(ip("10.1.0.9")).unwrap().name, "new");
        r.apply::<PodEntry>(vec![Ok(Event::Apply(pod(
            "old",
            "u-old",
            "10.1.0.9",
            json!({"x": "y"}),
        )))]);
        assert_eq!(
            r.by_ip(ip("10.1.0.9")).unwrap().name,
            "new",
            "a later update of the old pod does not take the address back"
        );
        r.apply::<PodEntry>(vec![Ok(Event::Delete(pod(
            "old",
            "u-old",
            "10.1.0.9",
            json!({}),
        )))]);
        assert_eq!(r.by_ip(ip("10.1.0.9")).unwrap().name, "new");
        // The other order.
        r.apply::<PodEntry>(vec![Ok(Event::Delete(pod(
            "new",
            "u-new",
            "10.1.0.9",
            json!({}),
        )))]);
        assert!(r.by_ip(ip("10.1.0.9")).is_none());
        r.apply::<PodEntry>(vec![Ok(Event::Apply(pod(
            "newer",
            "u-newer",
            "10.1.0.9",
            json!({}),
        )))]);
        assert_eq!(r.by_ip(ip("10.1.0.9")).unwrap().name, "newer");
    }

    #[test]
    fn terminal_pods_release_their_address() {
        let r = resolver();
        let mut done = pod("job-1", "u-job", "10.1.0.3", json!({}));
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        listed::<PodEntry>(&r, vec![done]);
        assert!(r.by_ip(ip("10.1.0.3")).is_none());
    }

    #[test]
    fn deny_all_policy_isolates_selected_pods_only() {
        let r = resolver();
        listed::<PodEntry>(
            &r,
            vec![
                pod("bad", "u-bad", "10.1.0.4", json!({"quarantine": "true"})),
                pod("good", "u-good", "10.1.0.5", json!({})),
            ],
        );
        listed::<PolicyEntry>(
            &r,
            vec![
                // Ingress-only default deny: not a quarantine.
                policy(
                    "default-deny-ingress",
                    json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
                ),
                // Both types but allows egress somewhere: not a quarantine.
                policy(
                    "allow-dns",
                    json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                                           "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}),
                ),
                policy(
                    "quarantine",
                    json!({
                    "podSelector": {"matchExpressions": [{"key": "quarantine", "operator": "In", "values": ["true"]}]},
                    "policyTypes": ["Ingress", "Egress"]}),
                ),
            ],
        );
        assert_eq!(
            r.by_ip(ip("10.1.0.4")).unwrap().isolated_by.as_deref(),
            Some("quarantine")
        );
        assert_eq!(r.by_ip(ip("10.1.0.5")).unwrap().isolated_by, None);
    }

    #[test]
    fn relist_replaces_the_store_when_complete() {
        let r = resolver();
        listed::<PodEntry>(&r, vec![pod("a", "u-a", "10.1.0.1", json!({}))]);
        r.apply::<PodEntry>(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(pod("b", "u-b", "10.1.0.2", json!({})))),
        ]);
        assert_eq!(
            r.by_ip(ip("10.1.0.1")).unwrap().name,
            "a",
            "old view kept until the list is complete"
        );
        assert!(r.by_ip(ip("10.1.0.2")).is_none());
        r.apply::<PodEntry>(vec![Ok(Event::InitDone)]);
        assert!(r.by_ip(ip("10.1.0.1")).is_none());
        assert_eq!(r.by_ip(ip("10.1.0.2")).unwrap().name, "b");
    }

    #[test]
    fn watch_errors_are_kept_for_the_reason() {
        let r = resolver();
        r.apply::<PodEntry>(vec![Err(watcher::Error::NoResourceVersion)]);
        assert!(r.shared.index().pods_error.is_some());
        r.apply::<PodEntry>(vec![Ok(Event::Init), Ok(Event::InitDone)]);
        assert!(r.shared.index().pods_error.is_none());
    }

    #[test]
    fn cgroups_resolve_late_pods_and_static_pods() {
        let root = std::env::temp_dir().join(format!("kube-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let uid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
        let hash = "3d1e0a0fa0a3f5a8a6f7e3b59cd1fe51";
        let late = root.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
            uid.replace('-', "_"),
            "ab".repeat(32)
        ));
        let stat = root.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice"
        ));
        let svc = root.join("system.slice/kubelet.service");
        for d in [&late, &stat, &svc] {
            std::fs::create_dir_all(d).unwrap();
        }
        let ino = |p: &PathBuf| std::fs::metadata(p).unwrap().ino();
        let mut r = KubeResolver::unwatched(NODE.into(), root.clone());

        assert!(r.by_cgroup(ino(&late)).is_none());
        let why = r.unattributed_reason(ino(&late)).unwrap();
        assert!(
            why.contains(&format!("is pod {uid}, not yet known from the API server")),
            "{why}"
        );
        assert!(why.contains("first list"), "{why}");
        assert!(r.by_cgroup(ino(&svc)).is_none());
        assert_eq!(
            r.unattributed_reason(ino(&svc)).unwrap(),
            "cgroup system.slice/kubelet.service is not a pod"
        );
        assert!(
            r.unattributed_reason(u64::MAX)
                .unwrap()
                .contains("not a directory under")
        );

        let mut mirror = pod(
            "kube-apiserver-node-a",
            "9a8b7c6d-0000-4000-8000-000000000001",
            "192.168.10.11",
            json!({}),
        );
        mirror.metadata.annotations =
            Some([(MIRROR_ANNOTATION.to_owned(), hash.to_owned())].into());
        mirror.spec.as_mut().unwrap().host_network = Some(true);
        listed::<PodEntry>(&r, vec![pod("late", uid, "10.1.0.8", json!({})), mirror]);
        assert_eq!(r.by_cgroup(ino(&late)).unwrap().name, "late");
        assert_eq!(r.unattributed_reason(ino(&late)), None);
        assert_eq!(
            r.by_cgroup(ino(&stat)).unwrap().name,
            "kube-apiserver-node-a"
        );
        assert_eq!(r.by_ip(ip("192.168.10.11")).unwrap().kind, PeerKind::Node);
        assert_eq!(
            r.monitored_pod_ips(),
            vec![ip("10.1.0.8")],
            "hostNetwork pods are not monitored peers"
        );

        // A deleted pod's cgroup still resolves for its last records; its address does not.
        r.apply::<PodEntry>(vec![Ok(Event::Delete(pod(
            "late",
            uid,
            "10.1.0.8",
            json!({}),
        )))]);
        assert_eq!(r.by_cgroup(ino(&late)).unwrap().name, "late");
        assert!(r.by_ip(ip("10.1.0.8")).is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
