//! Who a cgroup id or an IP address is.
//!
//! [`PodResolver`] is the seam between the pipeline and the identity sources: the static
//! inventory file ([`inventory::Inventory`], the lab's and the default) and, on real nodes,
//! Kubernetes. Records and policy only ever see [`Pod`] values through this trait.

pub mod cgroup_path;
#[cfg(test)]
pub mod fake;
pub mod inventory;
pub mod kube;

use std::{net::IpAddr, sync::Arc};

pub use monitor_record::peer::{PeerKind, Pod};

pub use inventory::{Inventory, InventoryError};

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
    /// The pods (never Services or externals) known to run as service account
    /// `service_account` in `namespace`: how a service mesh names a caller (its SPIFFE ID
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`). Empty when the source
    /// knows none, or does not know service accounts.
    fn by_service_account(&self, namespace: &str, service_account: &str) -> Vec<Arc<Pod>> {
        let _ = (namespace, service_account);
        Vec::new()
    }
    /// Why cgroup `id` has no identity (yet), for the record's note.
    fn unattributed_reason(&self, id: u64) -> Option<String> {
        let _ = id;
        None
    }
}
