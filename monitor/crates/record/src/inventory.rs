//! The static inventory file's schema: the node's name, its pods, named external hosts and
//! Services. One schema for both readers: the agent's static identity source (which ignores
//! the `lab:` sections) and the lab (which reads the topology and its `lab:` sections).
//! Unknown fields are errors, so a typo is reported with its position instead of ignored.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use serde::Deserialize;

use crate::{peer::PeerKind, peer::Pod};

/// An inventory file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    /// Node name written into every record.
    pub node: String,
    /// Pods on the node.
    #[serde(default)]
    pub pods: Vec<InventoryEntry>,
    /// Hosts outside the cluster, by name.
    #[serde(default)]
    pub externals: Vec<InventoryEntry>,
    /// Services (their cluster IPs).
    #[serde(default)]
    pub services: Vec<InventoryEntry>,
    /// Lab-only topology settings (the lab's own schema); the agent ignores them.
    #[serde(default)]
    pub lab: Option<serde_yaml_ng::Value>,
}

impl InventoryFile {
    /// Every entry with the kind its section gives it.
    pub fn entries(&self) -> impl Iterator<Item = (&InventoryEntry, PeerKind)> {
        let pods = self.pods.iter().map(|p| (p, PeerKind::Pod));
        let ext = self.externals.iter().map(|p| (p, PeerKind::External));
        let svc = self.services.iter().map(|p| (p, PeerKind::Service));
        pods.chain(ext).chain(svc)
    }
}

/// One pod, external host or Service entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryEntry {
    /// Name.
    pub name: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Pod UID, when known.
    #[serde(default)]
    pub uid: Option<String>,
    /// The Service the pod backs (a Service entry's own name when absent).
    #[serde(default)]
    pub service: Option<String>,
    /// Service account.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Addresses (IPv4 and/or IPv6).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// cgroup path relative to the agent's `--cgroup` directory.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// Name of a NetworkPolicy that isolates the pod (no ingress, no egress): a quarantine.
    #[serde(default)]
    pub isolated_by: Option<String>,
    /// Lab-only settings of this entry (servers to start); the agent ignores them.
    #[serde(default)]
    pub lab: Option<serde_yaml_ng::Value>,
}

impl InventoryEntry {
    /// The identity records carry for this entry.
    pub fn to_pod(&self, kind: PeerKind) -> Pod {
        let service = match (&self.service, kind) {
            (None, PeerKind::Service) => Some(self.name.clone()),
            (s, _) => s.clone(),
        };
        Pod {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            uid: self.uid.clone(),
            service,
            service_account: self.service_account.clone(),
            labels: self.labels.clone(),
            ips: self.ips.clone(),
            cgroup: self.cgroup.clone(),
            isolated_by: self.isolated_by.clone(),
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_give_kinds_and_services_name_themselves() {
        let f: InventoryFile = serde_yaml_ng::from_str(
            "node: n1\npods:\n  - {name: a, namespace: ns, service: svc-a, lab: {serve: []}}\n\
             services:\n  - {name: svc-b, ips: [10.0.0.9]}\nexternals:\n  - {name: partner}\n",
        )
        .unwrap();
        let pods: Vec<Pod> = f.entries().map(|(e, k)| e.to_pod(k)).collect();
        assert_eq!(pods.len(), 3);
        assert_eq!(
            (pods[0].kind, pods[0].service.as_deref()),
            (PeerKind::Pod, Some("svc-a"))
        );
        assert_eq!(
            (pods[1].kind, pods[1].name.as_str()),
            (PeerKind::External, "partner")
        );
        assert_eq!(
            (pods[2].kind, pods[2].service.as_deref()),
            (PeerKind::Service, Some("svc-b"))
        );
        assert!(f.pods[0].lab.is_some());
        let bad =
            serde_yaml_ng::from_str::<InventoryFile>("node: n\npods:\n  - {name: a, typo: 1}\n");
        assert!(bad.unwrap_err().to_string().contains("typo"));
    }
}
