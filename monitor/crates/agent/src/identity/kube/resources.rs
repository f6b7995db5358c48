//! What the identity index keeps of each watched resource: Pods, Services, EndpointSlices and
//! NetworkPolicies, summarised from their Kubernetes objects.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Instant,
};

use ::kube::{ResourceExt as _, core::Selector};
use k8s_openapi::api::{
    core::v1::{Pod as KubePod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};

use super::*;
/// A pod of this node.
#[derive(Debug)]
pub(super) struct PodEntry {
    pub(super) uid: String,
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) service_account: Option<String>,
    pub(super) ips: Vec<IpAddr>,
    pub(super) host_ips: Vec<IpAddr>,
    pub(super) host_network: bool,
    /// Succeeded or Failed: its addresses are free for other pods.
    pub(super) terminal: bool,
    /// A static pod's config hash, which names its cgroup.
    pub(super) mirror: Option<String>,
    pub(super) claims: HashMap<IpAddr, u64>,
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
pub(super) struct ServiceEntry {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) selector: BTreeMap<String, String>,
    pub(super) cluster_ips: Vec<IpAddr>,
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
pub(super) struct SliceEntry {
    pub(super) namespace: String,
    pub(super) service: Option<String>,
    pub(super) endpoints: Vec<EndpointEntry>,
    pub(super) claims: HashMap<IpAddr, u64>,
}

#[derive(Debug)]
pub(super) struct EndpointEntry {
    pub(super) ips: Vec<IpAddr>,
    /// `targetRef` when it is a Pod: (namespace, name, uid).
    pub(super) pod: Option<(String, String, Option<String>)>,
    /// The node the endpoint runs on.
    pub(super) node: Option<String>,
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
pub(super) struct PolicyEntry {
    pub(super) name: String,
    pub(super) namespace: String,
    /// `None` when the selector does not parse (it then selects nothing).
    pub(super) selector: Option<Selector>,
    pub(super) deny_all: bool,
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
