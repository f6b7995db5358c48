//! Who a peer is: the identity of a pod, a Service, a named external host or the node, as
//! identity sources produce it and records carry it.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Pod UID, when known.
    pub uid: Option<String>,
    /// The Service the pod backs.
    pub service: Option<String>,
    /// Service account.
    pub service_account: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Pod IPs (IPv4 and/or IPv6).
    pub ips: Vec<IpAddr>,
    /// cgroup path relative to the agent's `--cgroup` directory.
    pub cgroup: Option<PathBuf>,
    /// Name of a NetworkPolicy that isolates the pod (no ingress, no egress): a quarantine.
    pub isolated_by: Option<String>,
    /// What the entry is (from the section it was listed in).
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
            kind,
        }
    }
}
