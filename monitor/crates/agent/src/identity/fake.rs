//! A [`PodResolver`] for unit tests: pods by cgroup id, address and service account, set by
//! the test.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use super::{PeerKind, Pod, PodResolver};

/// Identities a test set up.
#[derive(Debug, Default)]
pub struct Fake {
    /// cgroup id → pod.
    pub by_cgroup: HashMap<u64, Arc<Pod>>,
    /// Address → pod, Service or external.
    pub by_ip: HashMap<IpAddr, Arc<Pod>>,
}

impl Fake {
    /// Adds a pod of namespace `vantage` at `ip`, in `cgroup` if it is local.
    pub fn pod(
        &mut self,
        name: &str,
        service: &str,
        sa: &str,
        ip: &str,
        cgroup: Option<u64>,
    ) -> Arc<Pod> {
        let mut p = Pod::named(name, PeerKind::Pod);
        p.namespace = "vantage".into();
        p.service = Some(service.into());
        p.service_account = Some(sa.into());
        p.ips = vec![ip.parse().expect("test address")];
        let p = Arc::new(p);
        self.by_ip.insert(p.ips[0], p.clone());
        if let Some(cg) = cgroup {
            self.by_cgroup.insert(cg, p.clone());
        }
        p
    }

    /// Adds Service `name`'s cluster IP.
    pub fn service(&mut self, name: &str, ip: &str) {
        let mut svc = Pod::named(name, PeerKind::Service);
        svc.namespace = "vantage".into();
        svc.service = Some(name.into());
        self.by_ip
            .insert(ip.parse().expect("test address"), Arc::new(svc));
    }
}

impl PodResolver for Fake {
    fn node(&self) -> &str {
        "test-node"
    }

    fn by_cgroup(&mut self, id: u64) -> Option<Arc<Pod>> {
        self.by_cgroup.get(&id).cloned()
    }

    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Pod>> {
        self.by_ip.get(&ip).cloned()
    }

    fn by_service_account(&self, namespace: &str, service_account: &str) -> Vec<Arc<Pod>> {
        let mut pods: Vec<Arc<Pod>> = self
            .by_ip
            .values()
            .filter(|p| {
                p.kind == PeerKind::Pod
                    && p.namespace == namespace
                    && p.service_account.as_deref() == Some(service_account)
            })
            .cloned()
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        pods
    }

    fn monitored_pod_ips(&mut self) -> Vec<IpAddr> {
        self.by_cgroup
            .values()
            .flat_map(|p| p.ips.clone())
            .collect()
    }

    fn pod_cgroups(&mut self) -> Vec<(Arc<Pod>, u64)> {
        self.by_cgroup
            .iter()
            .map(|(id, p)| (p.clone(), *id))
            .collect()
    }
}
