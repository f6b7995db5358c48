//! Who a cgroup id or an IP address is.
//!
//! [`PodResolver`] is the seam between the pipeline and the identity sources: the static
//! inventory file ([`inventory::Inventory`], the lab's and the default) and, on real nodes,
//! Kubernetes. Records and policy only ever see [`Pod`] values through this trait.

pub mod cgroup_path;
pub mod inventory;
pub mod kube;

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, sync::Arc};

use serde::Deserialize;

pub use inventory::{Inventory, InventoryError};

/// What an identity names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    /// A pod.
    #[default]
    Pod,
    /// A Service's virtual (cluster) IP.
    Service,
    /// A named host outside the cluster.
    External,
    /// The node itself (host network: kubelet probes, hostNetwork pods without a cgroup match).
    Node,
}

/// Identity of a pod, or of a Service, a named external host or the node (see [`PeerKind`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    /// Pod name.
    pub name: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Pod UID, when known.
    #[serde(default)]
    pub uid: Option<String>,
    /// The Service the pod backs.
    #[serde(default)]
    pub service: Option<String>,
    /// Service account.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Pod IPs (IPv4 and/or IPv6).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// cgroup path relative to the agent's `--cgroup` directory.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// Name of a NetworkPolicy that isolates the pod (no ingress, no egress): a quarantine.
    #[serde(default)]
    pub isolated_by: Option<String>,
    /// Lab-only settings (servers to start); ignored by the agent.
    #[serde(default)]
    pub lab: Option<serde_yaml_ng::Value>,
    /// What the entry is (from the section it was listed in).
    #[serde(skip)]
    pub kind: PeerKind,
}

impl Pod {
    /// An identity with just a name and a kind (for sources that build them field by field).
    pub fn named(name: &str, kind: PeerKind) -> Self {
        Self {
            name: name.to_owned(),
            namespace: String::new(),
            uid: None,
            service: None,
            service_account: None,
            labels: BTreeMap::new(),
            ips: Vec::new(),
            cgroup: None,
            isolated_by: None,
            lab: None,
            kind,
        }
    }
}

/// Resolves identities for records.
pub trait PodResolver: Send {
    /// The node name written into every record.
    fn node(&self) -> &str;
    /// The pod owning cgroup `id`, if known.
    fn by_cgroup(&mut self, id: u64) -> Option<Arc<Pod>>;
    /// The pod or named external host with address `ip`, if known.
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Pod>>;
    /// Addresses of this node's pods whose cgroup is under the monitored root now (their own
    /// sockets are captured, so their peers' server-side view is redundant).
    fn monitored_pod_ips(&mut self) -> Vec<IpAddr>;
    /// This node's pods and the ids of their cgroups (every cgroup of the pod: its sockets
    /// belong to the container cgroups below the pod's). Quarantine enforcement is by cgroup.
    /// Reads the cgroup tree as of the last [`PodResolver::monitored_pod_ips`] (or lookup miss).
    fn pod_cgroups(&mut self) -> Vec<(Arc<Pod>, u64)>;
    /// Why cgroup `id` has no identity (yet), for the record's note.
    fn unattributed_reason(&self, id: u64) -> Option<String> {
        let _ = id;
        None
    }
}
