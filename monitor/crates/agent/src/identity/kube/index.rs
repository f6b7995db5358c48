//! The index lookups read: built from the raw stores after each burst of events (pods by
//! UID and address with IP-reuse claims, Services, isolation by NetworkPolicy) and swapped in.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::Instant,
};

use ::kube::core::SelectorExt as _;

use super::super::{PeerKind, Pod};
use super::*;
/// Everything the watches delivered.
#[derive(Debug, Default)]
pub(super) struct Raw {
    pub(super) pods: Store<PodEntry>,
    pub(super) services: Store<ServiceEntry>,
    pub(super) slices: Store<SliceEntry>,
    pub(super) policies: Store<PolicyEntry>,
    /// Pods deleted recently, by UID (and mirror hash): their cgroups may still send.
    pub(super) departed: HashMap<String, (Arc<Pod>, Instant)>,
}

/// What lookups read.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) by_ip: HashMap<IpAddr, Arc<Pod>>,
    /// This node's pods by UID and by mirror hash, then recently deleted ones.
    pub(super) by_uid: HashMap<String, Arc<Pod>>,
    /// Addresses of this node's running, non-hostNetwork pods, by UID and mirror hash.
    pub(super) monitored: HashMap<String, Vec<IpAddr>>,
    pub(super) pods_synced: bool,
    pub(super) all_synced: bool,
    pub(super) pods_error: Option<String>,
}

/// Keeps the latest claim on each address.
pub(super) fn claim(
    map: &mut HashMap<IpAddr, (u64, Arc<Pod>)>,
    ip: IpAddr,
    seq: u64,
    pod: &Arc<Pod>,
) {
    match map.get(&ip) {
        Some((other, _)) if *other > seq => {}
        _ => {
            map.insert(ip, (seq, pod.clone()));
        }
    }
}

impl Raw {
    pub(super) fn rebuild(&self, node: &str) -> Index {
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
pub(super) fn keep_first<'a, K>(
    entry: std::collections::hash_map::Entry<'_, K, &'a str>,
    v: &'a str,
) {
    entry
        .and_modify(|cur| {
            if v < *cur {
                *cur = v;
            }
        })
        .or_insert(v);
}
