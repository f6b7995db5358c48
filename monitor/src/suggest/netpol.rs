//! Kubernetes NetworkPolicies for the observed graph (`monitor policy suggest --networkpolicy`),
//! written through `k8s-openapi`'s types as one multi-document YAML stream.
//!
//! Per namespace with observed pods: a default deny, split in two policies
//! (`default-deny-ingress`, `default-deny-egress`) because one policy denying both directions
//! is how this monitor recognises a quarantined pod (`quarantine.network_policies`); and
//! `allow-dns` (egress to kube-dns on port 53: records only show TCP, and without DNS nothing
//! works). Then one allow policy per observed edge, in each direction it needs: an egress
//! policy in the caller's namespace and an ingress policy in the callee's, selecting pods by the
//! labels every observed pod of the workload carries (volatile ones such as
//! `pod-template-hash` left out), on the ports seen; one egress policy per (workload, external
//! destination) with the addresses seen as `/32` (`/128`) blocks; one ingress policy per
//! workload reached from outside the pods (the node, outside clients). Only what the draft
//! allows is included: connections the base's egress refuses are review items there, not
//! allowed here. A workload whose pods share no label cannot be selected: it is named in a
//! comment instead.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
};

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    SuggestError,
    collect::{Observed, PortStats, Workload},
    yaml::comment,
};
use crate::client::rfc3339_secs;

/// Labels that differ between rollouts or pods: never used in selectors.
const VOLATILE: [&str; 5] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
];

/// The label every namespace carries (Kubernetes 1.21+).
const NAMESPACE_LABEL: &str = "kubernetes.io/metadata.name";

/// A document of the stream: comment lines, then the policy.
#[derive(Debug)]
struct Doc {
    notes: Vec<String>,
    policy: NetworkPolicy,
}

/// The documents, and the policies that could not be written (as sentences).
#[derive(Debug, Default)]
struct Docs {
    docs: Vec<Doc>,
    skipped: Vec<String>,
}

impl Docs {
    fn push(&mut self, note: String, policy: NetworkPolicy) {
        self.docs.push(Doc {
            notes: vec![note],
            policy,
        });
    }
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

fn meta(name: &str, namespace: &str, observed: Option<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            "monitor-policy-suggest".to_owned(),
        )])),
        annotations: observed.map(|o| BTreeMap::from([("monitor/observed".to_owned(), o)])),
        ..ObjectMeta::default()
    }
}

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }
}

/// A DNS-1123 name from `parts` joined by `-`: lowercase letters, digits and `-`, at most 253.
fn name(parts: &[&str]) -> String {
    let mut s: String = parts
        .join("-")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.truncate(253);
    s.trim_matches('-').to_owned()
}

fn cidr(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

fn traffic(stats: &[&PortStats]) -> String {
    let requests: u64 = stats.iter().map(|s| s.requests).sum();
    let connections: u64 = stats.iter().map(|s| s.connections).sum();
    let first = stats.iter().map(|s| s.first_ns).min().unwrap_or(0);
    format!(
        "{requests} HTTP requests over {connections} connections, first seen {}",
        rfc3339_secs(first)
    )
}

/// The labels that select `w`'s pods, if its pods share any.
fn pod_labels(o: &Observed, w: &Workload) -> Option<BTreeMap<String, String>> {
    let mut labels = o.workloads.get(w)?.labels.clone()?;
    labels.retain(|k, _| !VOLATILE.contains(&k.as_str()));
    (!labels.is_empty()).then_some(labels)
}

/// Why `w` cannot be selected, for a comment.
fn unselectable(w: &Workload) -> String {
    format!(
        "{}/{} has no label shared by its observed pods (or no pod was seen), so no selector \
         names it",
        w.namespace, w.name
    )
}

fn policy(
    name: &str,
    namespace: &str,
    pods: LabelSelector,
    observed: Option<String>,
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    let mut types = Vec::new();
    if ingress.is_some() {
        types.push("Ingress".to_owned());
    }
    if egress.is_some() {
        types.push("Egress".to_owned());
    }
    NetworkPolicy {
        metadata: meta(name, namespace, observed),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(types),
            ingress,
            egress,
        }),
    }
}

fn namespace_docs(ns: &str, docs: &mut Docs) {
    for (dir, ingress, egress) in [
        ("ingress", Some(Vec::new()), None),
        ("egress", None, Some(Vec::new())),
    ] {
        docs.push(
            format!("{ns}: deny all {dir} traffic that the policies below do not allow"),
            policy(
                &format!("default-deny-{dir}"),
                ns,
                LabelSelector::default(),
                None,
                ingress,
                egress,
            ),
        );
    }
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(selector(BTreeMap::from([(
                NAMESPACE_LABEL.to_owned(),
                "kube-system".to_owned(),
            )]))),
            pod_selector: Some(selector(BTreeMap::from([(
                "k8s-app".to_owned(),
                "kube-dns".to_owned(),
            )]))),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some("UDP".to_owned()),
                ..NetworkPolicyPort::default()
            },
            tcp(53),
        ]),
    };
    docs.push(
        format!(
            "{ns}: DNS to kube-dns (not in the records, which show TCP only; check your \
             cluster's DNS labels)"
        ),
        policy(
            "allow-dns",
            ns,
            LabelSelector::default(),
            None,
            None,
            Some(vec![dns]),
        ),
    );
}

fn edge_docs(o: &Observed, docs: &mut Docs) {
    for ((from, to), ports) in &o.edges {
        let allowed: Vec<(u16, &PortStats)> = ports
            .iter()
            .filter(|(_, s)| s.allowed)
            .map(|(p, s)| (*p, s))
            .collect();
        if allowed.is_empty() || from.namespace.is_empty() || to.namespace.is_empty() {
            continue;
        }
        let stats: Vec<&PortStats> = allowed.iter().map(|(_, s)| *s).collect();
        let seen = traffic(&stats);
        let title = format!(
            "{}/{} -> {}/{}",
            from.namespace, from.name, to.namespace, to.name
        );
        let (Some(src), Some(dst)) = (pod_labels(o, from), pod_labels(o, to)) else {
            let who = if pod_labels(o, from).is_none() {
                from
            } else {
                to
            };
            docs.skipped
                .push(format!("{title} ({seen}): {}", unselectable(who)));
            continue;
        };
        let port_list: Vec<NetworkPolicyPort> = allowed.iter().map(|(p, _)| tcp(*p)).collect();
        let peer = |ns: &str, labels: BTreeMap<String, String>| NetworkPolicyPeer {
            namespace_selector: Some(selector(BTreeMap::from([(
                NAMESPACE_LABEL.to_owned(),
                ns.to_owned(),
            )]))),
            pod_selector: Some(selector(labels)),
            ..NetworkPolicyPeer::default()
        };
        let base = name(&["allow", &from.name, "to", &to.name]);
        docs.push(
            format!("{title} (egress): {seen}"),
            policy(
                &format!("{base}-egress"),
                &from.namespace,
                selector(src.clone()),
                Some(seen.clone()),
                None,
                Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![peer(&to.namespace, dst.clone())]),
                    ports: Some(port_list.clone()),
                }]),
            ),
        );
        docs.push(
            format!("{title} (ingress): {seen}"),
            policy(
                &format!("{base}-ingress"),
                &to.namespace,
                selector(dst),
                Some(seen),
                Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![peer(&from.namespace, src)]),
                    ports: Some(port_list),
                }]),
                None,
            ),
        );
    }
}

/// port → addresses, for one group of ipBlock rules.
type Blocks = BTreeMap<u16, BTreeSet<IpAddr>>;

fn block_rules(blocks: &Blocks) -> Vec<(Vec<NetworkPolicyPeer>, Vec<NetworkPolicyPort>)> {
    blocks
        .iter()
        .map(|(port, ips)| {
            let peers = ips
                .iter()
                .map(|ip| NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: cidr(ip),
                        except: None,
                    }),
                    ..NetworkPolicyPeer::default()
                })
                .collect();
            (peers, vec![tcp(*port)])
        })
        .collect()
}

fn external_docs(o: &Observed, docs: &mut Docs) {
    for (key, uses) in &o.externals {
        let mut per: BTreeMap<&Workload, (Blocks, Vec<&PortStats>)> = BTreeMap::new();
        for ((w, ip, port), s) in uses {
            if s.allowed && !w.namespace.is_empty() {
                let e = per.entry(w).or_default();
                e.0.entry(*port).or_default().insert(*ip);
                e.1.push(s);
            }
        }
        for (w, (blocks, stats)) in per {
            let seen = traffic(&stats);
            let title = format!("{}/{} -> {}", w.namespace, w.name, key.name);
            let Some(labels) = pod_labels(o, w) else {
                docs.skipped
                    .push(format!("{title} ({seen}): {}", unselectable(w)));
                continue;
            };
            let rules = block_rules(&blocks)
                .into_iter()
                .map(|(to, ports)| NetworkPolicyEgressRule {
                    to: Some(to),
                    ports: Some(ports),
                })
                .collect();
            docs.push(
                format!("{title} (egress, outside the cluster): {seen}"),
                policy(
                    &name(&["allow", &w.name, "to", &key.name, "egress"]),
                    &w.namespace,
                    selector(labels),
                    Some(seen),
                    None,
                    Some(rules),
                ),
            );
        }
    }
}

fn inbound_docs(o: &Observed, docs: &mut Docs) {
    let mut per: BTreeMap<&Workload, (Blocks, BTreeSet<&str>, u64)> = BTreeMap::new();
    for ((ip, what, w, port), n) in &o.inbound {
        if w.namespace.is_empty() {
            continue;
        }
        let e = per.entry(w).or_default();
        e.0.entry(*port).or_default().insert(*ip);
        e.1.insert(what);
        e.2 += n;
    }
    for (w, (blocks, whats, n)) in per {
        let whats: Vec<&str> = whats.into_iter().collect();
        let seen = format!("{n} connections from {}", whats.join(", "));
        let title = format!("outside -> {}/{}", w.namespace, w.name);
        let Some(labels) = pod_labels(o, w) else {
            docs.skipped
                .push(format!("{title} ({seen}): {}", unselectable(w)));
            continue;
        };
        let rules = block_rules(&blocks)
            .into_iter()
            .map(|(from, ports)| NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(ports),
            })
            .collect();
        docs.push(
            format!("{title} (ingress from addresses that are not pods: review each): {seen}"),
            policy(
                &name(&["allow", "outside", "to", &w.name, "ingress"]),
                &w.namespace,
                selector(labels),
                Some(seen),
                Some(rules),
                None,
            ),
        );
    }
}

/// The NetworkPolicies as one multi-document YAML stream (see the module doc).
pub fn render(o: &Observed) -> Result<String, SuggestError> {
    let mut docs = Docs::default();
    let namespaces: BTreeSet<&str> = o
        .workloads
        .keys()
        .map(|w| w.namespace.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    for ns in namespaces {
        namespace_docs(ns, &mut docs);
    }
    edge_docs(o, &mut docs);
    external_docs(o, &mut docs);
    inbound_docs(o, &mut docs);
    let mut out = String::new();
    for line in [
        "# NetworkPolicies for the traffic observed: monitor policy suggest --networkpolicy.",
        "# A default deny per namespace (ingress and egress as two policies), DNS, and one allow",
        "# policy per observed edge and direction, external destination, and source outside the",
        "# pods. Review them with the draft policy: they allow what was seen. Traffic from the",
        "# node (kubelet probes) is allowed or not by your network plugin, whatever these say.",
    ] {
        let _ = writeln!(out, "{line}");
    }
    if !docs.skipped.is_empty() {
        let _ = writeln!(out, "#");
        let _ = writeln!(out, "# Not written (traffic that no selector can name):");
        for s in &docs.skipped {
            let _ = writeln!(out, "# - {}", comment(s));
        }
    }
    let mut names: BTreeSet<(String, String)> = BTreeSet::new();
    for mut d in docs.docs {
        // Names are unique per namespace: a second policy of the same name gets a suffix.
        let ns = d.policy.metadata.namespace.clone().unwrap_or_default();
        let base = d.policy.metadata.name.clone().unwrap_or_default();
        let mut n = base.clone();
        let mut k = 2;
        while !names.insert((ns.clone(), n.clone())) {
            n = format!("{base}-{k}");
            k += 1;
        }
        d.policy.metadata.name = Some(n);
        out.push_str("---\n");
        for note in &d.notes {
            let _ = writeln!(out, "# {}", comment(note));
        }
        out.push_str(&serde_yaml_ng::to_string(&d.policy)?);
    }
    Ok(out)
}
