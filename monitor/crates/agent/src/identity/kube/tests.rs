//! Tests of the Kubernetes identity source against recorded API objects.

use std::os::unix::fs::MetadataExt as _;

use serde_json::json;
use watcher::Event;

use super::*;
use k8s_openapi::api::{
    core::v1::{Pod as KubePod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use monitor_record::peer::PeerKind;

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
    mirror.metadata.annotations = Some([(MIRROR_ANNOTATION.to_owned(), hash.to_owned())].into());
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
