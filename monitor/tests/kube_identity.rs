//! The Kubernetes identity source end to end: kube-rs watchers, through a real `kube::Client`,
//! against a mocked API server.
//!
//! No API server can run here (no cluster, no kind, no container engine), so the client's HTTP
//! service is kube-rs' own test double, `tower_test::mock::pair`, and [`ApiServer`] answers its
//! requests as the API server would: LIST with the fixtures under `tests/fixtures/kube/`
//! (shaped like real `kubectl get -o json` output), WATCH with a streaming body that stays open
//! and carries the ADDED / MODIFIED / DELETED / BOOKMARK / ERROR events each test sends.
//! cgroup ids are inode numbers of directories in a temporary tree shaped like a systemd-driver
//! `kubepods.slice` hierarchy.

use std::{
    collections::HashMap,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use kube::client::Body;
use monitor_agent::{identity::PodResolver, identity::kube::KubeResolver};
use monitor_record::peer::PeerKind;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const NODE: &str = "vantage-node-1";
const REC_UID: &str = "8f3c2a1e-6b4d-4f7a-9c2e-1d5b7a9e3f64";
const REC_IP: &str = "10.244.1.14";
const PROFILE_IP: &str = "10.244.1.21";
const NEW_UID: &str = "e7d6c5b4-a3f2-41e0-9d8c-7b6a5f4e3d2c";
const NEW_IP: &str = "10.244.1.37";
const QUARANTINE: &str = "quarantine-recommendation-engine-4xk2p";

/// The watched resources, by their API path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Res {
    Pods,
    Services,
    Slices,
    Policies,
}

impl Res {
    fn from_path(path: &str) -> Self {
        match path {
            "/api/v1/pods" => Self::Pods,
            "/api/v1/services" => Self::Services,
            "/apis/discovery.k8s.io/v1/endpointslices" => Self::Slices,
            "/apis/networking.k8s.io/v1/networkpolicies" => Self::Policies,
            other => panic!("unexpected API path {other}"),
        }
    }

    fn fixture(self) -> &'static str {
        match self {
            Self::Pods => "pods.json",
            Self::Services => "services.json",
            Self::Slices => "endpointslices.json",
            Self::Policies => "networkpolicies.json",
        }
    }
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kube")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Channel<Bytes>>>;

#[derive(Default)]
struct ServerState {
    /// What a LIST returns now, per resource (a status code other than 200 for errors).
    lists: HashMap<Res, (StatusCode, Value)>,
    /// The open WATCH of each resource.
    watches: HashMap<Res, Sender<Bytes>>,
    /// Every request's path and query, in order.
    requests: Vec<String>,
}

/// The mocked API server (see the module documentation).
struct ApiServer {
    state: Arc<Mutex<ServerState>>,
}

impl ApiServer {
    /// A client wired to a new mocked API server serving the standard fixtures.
    fn start() -> (kube::Client, Self) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Channel<Bytes>>>();
        let mut state = ServerState::default();
        for res in [Res::Pods, Res::Services, Res::Slices, Res::Policies] {
            state
                .lists
                .insert(res, (StatusCode::OK, fixture(res.fixture())));
        }
        let state = Arc::new(Mutex::new(state));
        tokio::spawn(serve(handle, state.clone()));
        (kube::Client::new(service, "default"), Self { state })
    }

    /// Sets what the next LIST of `res` returns.
    async fn set_list(&self, res: Res, status: StatusCode, body: Value) {
        self.state.lock().await.lists.insert(res, (status, body));
    }

    /// Sends one watch event on the open watch of `res` (waiting for the watcher to open it).
    async fn event(&self, res: Res, kind: &str, object: Value) {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
        line.push(b'\n');
        for _ in 0..500 {
            let mut state = self.state.lock().await;
            if let Some(tx) = state.watches.get_mut(&res)
                && tx.send_data(Bytes::from(line.clone())).await.is_ok()
            {
                return;
            }
            // Not open yet, or the watcher closed it (it will open a new one).
            state.watches.remove(&res);
            drop(state);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the watcher never opened a watch of {res:?}");
    }

    /// Ends the open watch of `res`, as the API server does when its timeout runs out.
    async fn close_watch(&self, res: Res) {
        self.state.lock().await.watches.remove(&res);
    }

    /// Waits (up to 5 s) for a request whose path and query contain `needle`.
    async fn wait_for_request(&self, needle: &str) {
        for _ in 0..500 {
            if !self.requests_with(needle).await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no request with {needle}");
    }

    /// Requests seen so far whose path and query contain `needle`.
    async fn requests_with(&self, needle: &str) -> Vec<String> {
        let state = self.state.lock().await;
        state
            .requests
            .iter()
            .filter(|r| r.contains(needle))
            .cloned()
            .collect()
    }
}

/// Answers requests until the client is dropped.
async fn serve(mut handle: Handle, state: Arc<Mutex<ServerState>>) {
    while let Some((request, respond)) = handle.next_request().await {
        assert_eq!(
            request.method(),
            http::Method::GET,
            "the identity source only reads"
        );
        let uri = request.uri().clone();
        let res = Res::from_path(uri.path());
        let query = uri.query().unwrap_or_default().to_owned();
        let mut state = state.lock().await;
        state.requests.push(format!("{}?{query}", uri.path()));
        let (mut tx, body) = Channel::<Bytes>::new(64);
        let status = if query.split('&').any(|kv| kv == "watch=true") {
            state.watches.insert(res, tx);
            StatusCode::OK
        } else {
            let (status, list) = state.lists[&res].clone();
            tx.send_data(Bytes::from(serde_json::to_vec(&list).unwrap()))
                .await
                .unwrap();
            status
        };
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap();
        respond.send_response(response);
    }
}

/// A cgroup tree like a systemd-driver node's, in a temporary directory.
struct CgroupTree {
    root: PathBuf,
}

impl CgroupTree {
    fn new(test: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("kube-identity-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("system.slice/containerd.service")).unwrap();
        std::fs::create_dir_all(root.join("kubepods.slice/kubepods-burstable.slice")).unwrap();
        std::fs::create_dir_all(root.join("kubepods.slice/kubepods-besteffort.slice")).unwrap();
        Self { root }
    }

    /// Creates a burstable pod's container cgroup; returns its cgroup id.
    fn container(&self, uid: &str, container_id: &str) -> u64 {
        let dir = self.root.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container_id}.scope",
            uid.replace('-', "_")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::metadata(&dir).unwrap().ino()
    }

    fn id(&self, rel: &str) -> u64 {
        std::fs::metadata(self.root.join(rel)).unwrap().ino()
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Waits (up to 10 s) until `check` holds for the resolver.
async fn eventually(r: &mut KubeResolver, what: &str, check: impl Fn(&mut KubeResolver) -> bool) {
    for _ in 0..1000 {
        if check(r) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn synced(test: &str) -> (KubeResolver, ApiServer, CgroupTree) {
    let tree = CgroupTree::new(test);
    let (client, server) = ApiServer::start();
    let r = KubeResolver::with_client(client, NODE.into(), tree.root.clone());
    assert!(
        r.wait_synced(Duration::from_secs(10)).await,
        "first lists never completed"
    );
    (r, server, tree)
}

/// The fixture pod that `pod-new.json` describes, with changes.
fn new_pod(ip: &str, resource_version: &str) -> Value {
    let mut pod = fixture("pod-new.json");
    pod["metadata"]["resourceVersion"] = json!(resource_version);
    pod["status"]["podIP"] = json!(ip);
    pod["status"]["podIPs"] = json!([{"ip": ip}]);
    pod
}

fn listed_pod(name_prefix: &str) -> Value {
    fixture("pods.json")["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(name_prefix)
        })
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_lists_name_pods_services_remote_pods_and_the_node() {
    let (mut r, server, tree) = synced("lists").await;
    assert_eq!(r.node(), NODE);

    // Only this node's pods are listed and watched.
    let pod_lists = server.requests_with("/api/v1/pods?").await;
    assert!(!pod_lists.is_empty());
    assert!(
        pod_lists
            .iter()
            .all(|q| q.contains("fieldSelector=spec.nodeName%3Dvantage-node-1")),
        "{pod_lists:?}"
    );
    let svc_lists = server.requests_with("/api/v1/services?").await;
    assert!(!svc_lists[0].contains("fieldSelector"), "{svc_lists:?}");

    let rec = r.by_ip(ip(REC_IP)).unwrap();
    assert_eq!(rec.kind, PeerKind::Pod);
    assert_eq!(rec.name, "svc-recommendation-engine-6f8d9c7b5-4xk2p");
    assert_eq!(rec.namespace, "vantage");
    assert_eq!(rec.uid.as_deref(), Some(REC_UID));
    assert_eq!(rec.service.as_deref(), Some("svc-recommendation-engine"));
    assert_eq!(
        rec.service_account.as_deref(),
        Some("recommendation-engine")
    );
    assert_eq!(
        rec.labels.get("team").map(String::as_str),
        Some("personalization")
    );
    assert_eq!(rec.ips, vec![ip(REC_IP), ip("fd00:10:244:1::e")]);
    assert_eq!(
        rec.isolated_by, None,
        "the namespace's policies all allow something"
    );
    assert_eq!(
        r.by_ip(ip("fd00:10:244:1::e")).unwrap().name,
        rec.name,
        "dual-stack"
    );

    // A Service's ClusterIPs (both families); a headless Service has none.
    let svc = r.by_ip(ip("fd00:10:96::58")).unwrap();
    assert_eq!(
        (
            svc.kind,
            svc.name.as_str(),
            svc.namespace.as_str(),
            svc.service.as_deref()
        ),
        (
            PeerKind::Service,
            "svc-user-profile-service",
            "vantage",
            Some("svc-user-profile-service")
        )
    );
    assert_eq!(r.by_ip(ip("10.96.88.7")).unwrap().kind, PeerKind::Service);

    // A pod on another node, from its EndpointSlice.
    let remote = r.by_ip(ip("10.244.2.33")).unwrap();
    assert_eq!(
        (remote.kind, remote.name.as_str(), remote.service.as_deref()),
        (
            PeerKind::Pod,
            "svc-user-profile-service-1",
            Some("svc-user-profile-service")
        )
    );
    assert_eq!(
        remote.uid.as_deref(),
        Some("4d5e6f70-8192-4a3b-bc4d-5e6f708192a3")
    );
    // A local pod listed in a slice keeps its full identity (labels from the Pod watch).
    let profile = r.by_ip(ip(PROFILE_IP)).unwrap();
    assert_eq!(profile.service.as_deref(), Some("svc-user-profile-service"));
    assert!(!profile.labels.is_empty());
    // The API server behind the selectorless `kubernetes` Service.
    let apiserver = r.by_ip(ip("172.18.0.2")).unwrap();
    assert_eq!(
        (apiserver.kind, apiserver.name.as_str()),
        (PeerKind::External, "kubernetes")
    );

    // The node's own address, which the hostNetwork node-exporter shares.
    let node = r.by_ip(ip("172.18.0.3")).unwrap();
    assert_eq!((node.kind, node.name.as_str()), (PeerKind::Node, NODE));
    assert!(r.by_ip(ip("192.0.2.1")).is_none());

    // Monitored peers: this node's non-hostNetwork pods that have a cgroup under the root.
    assert!(r.monitored_pod_ips().is_empty(), "no pod cgroup exists yet");
    let rec_cg = tree.container(REC_UID, &"3f9a1c7e".repeat(8));
    let mut ips = r.monitored_pod_ips();
    ips.sort();
    assert_eq!(ips, vec![ip(REC_IP), ip("fd00:10:244:1::e")]);
    assert_eq!(r.by_cgroup(rec_cg).unwrap().name, rec.name);
    assert!(
        r.by_cgroup(tree.id("system.slice/containerd.service"))
            .is_none()
    );
    assert_eq!(
        r.unattributed_reason(tree.id("system.slice/containerd.service"))
            .as_deref(),
        Some("cgroup system.slice/containerd.service is not a pod")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_pod_resolves_by_ip_and_by_cgroup_after_arriving_late() {
    let (mut r, server, tree) = synced("added").await;
    // The container starts (its cgroup appears) before the API server tells about the pod.
    let cg = tree.container(
        NEW_UID,
        "c0ffee00d15ea5e0b16b00b5feedface0123456789abcdef0123456789abcdef",
    );
    assert!(r.by_cgroup(cg).is_none());
    let why = r.unattributed_reason(cg).unwrap();
    assert!(
        why.starts_with(&format!(
            "cgroup kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/",
            NEW_UID.replace('-', "_")
        )),
        "{why}"
    );
    assert!(
        why.contains(&format!(
            "is pod {NEW_UID}, not yet known from the API server"
        )),
        "{why}"
    );
    assert!(r.by_ip(ip(NEW_IP)).is_none());

    server
        .event(Res::Pods, "ADDED", fixture("pod-new.json"))
        .await;
    eventually(&mut r, "the added pod resolves by cgroup", |r| {
        r.by_cgroup(cg).is_some()
    })
    .await;
    let pod = r.by_ip(ip(NEW_IP)).unwrap();
    assert_eq!(pod.name, "svc-recommendation-engine-6f8d9c7b5-9wz7m");
    assert_eq!(pod.uid.as_deref(), Some(NEW_UID));
    // Not yet in any EndpointSlice: its Service comes from the selector.
    assert_eq!(pod.service.as_deref(), Some("svc-recommendation-engine"));
    assert_eq!(r.by_cgroup(cg).unwrap().name, pod.name);
    assert_eq!(r.unattributed_reason(cg), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabelled_pod_changes_service_and_quarantine() {
    let (mut r, server, _tree) = synced("relabel").await;
    server
        .event(
            Res::Policies,
            "ADDED",
            fixture("networkpolicy-quarantine.json"),
        )
        .await;
    // The incident response: the pod is relabelled out of its Service and into quarantine.
    let mut rec = listed_pod("svc-recommendation-engine");
    rec["metadata"]["resourceVersion"] = json!("48401");
    rec["metadata"]["labels"] = json!({
        "app": "svc-ml-scoring",
        "security.vantage.example/quarantine": "true"
    });
    server.event(Res::Pods, "MODIFIED", rec).await;
    eventually(&mut r, "the quarantine applies", |r| {
        r.by_ip(ip(REC_IP)).unwrap().isolated_by.as_deref() == Some(QUARANTINE)
    })
    .await;
    // The slice still lists it until the endpoint controller catches up: the slice wins.
    assert_eq!(
        r.by_ip(ip(REC_IP)).unwrap().service.as_deref(),
        Some("svc-recommendation-engine")
    );

    let mut slice = fixture("endpointslices.json")["items"][3].clone();
    assert_eq!(slice["metadata"]["name"], "svc-recommendation-engine-p9d4s");
    slice["metadata"]["resourceVersion"] = json!("48402");
    slice["endpoints"].as_array_mut().unwrap().remove(0);
    server.event(Res::Slices, "MODIFIED", slice).await;
    eventually(&mut r, "the service follows the labels", |r| {
        r.by_ip(ip(REC_IP)).unwrap().service.as_deref() == Some("svc-ml-scoring")
    })
    .await;
    // Labels back: out of quarantine.
    let mut rec = listed_pod("svc-recommendation-engine");
    rec["metadata"]["resourceVersion"] = json!("48410");
    server.event(Res::Pods, "MODIFIED", rec).await;
    eventually(&mut r, "the quarantine lifts with the label", |r| {
        let p = r.by_ip(ip(REC_IP)).unwrap();
        p.isolated_by.is_none() && p.service.as_deref() == Some("svc-recommendation-engine")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_all_network_policy_added_then_removed() {
    let (mut r, server, _tree) = synced("netpol").await;
    let mut rec = listed_pod("svc-recommendation-engine");
    rec["metadata"]["resourceVersion"] = json!("48380");
    rec["metadata"]["labels"]["security.vantage.example/quarantine"] = json!("true");
    server.event(Res::Pods, "MODIFIED", rec).await;
    eventually(&mut r, "the label arrives", |r| {
        r.by_ip(ip(REC_IP))
            .unwrap()
            .labels
            .contains_key("security.vantage.example/quarantine")
    })
    .await;
    assert_eq!(
        r.by_ip(ip(REC_IP)).unwrap().isolated_by,
        None,
        "no policy yet"
    );

    let policy = fixture("networkpolicy-quarantine.json");
    server.event(Res::Policies, "ADDED", policy.clone()).await;
    eventually(&mut r, "isolated_by is set", |r| {
        r.by_ip(ip(REC_IP)).unwrap().isolated_by.as_deref() == Some(QUARANTINE)
    })
    .await;
    assert_eq!(
        r.by_ip(ip(PROFILE_IP)).unwrap().isolated_by,
        None,
        "not selected"
    );

    // Loosened to allow DNS egress: no longer a quarantine.
    let mut loosened = policy.clone();
    loosened["metadata"]["resourceVersion"] = json!("48395");
    loosened["spec"]["egress"] = json!([{"ports": [{"protocol": "UDP", "port": 53}]}]);
    server.event(Res::Policies, "MODIFIED", loosened).await;
    eventually(
        &mut r,
        "a policy that allows something is no quarantine",
        |r| r.by_ip(ip(REC_IP)).unwrap().isolated_by.is_none(),
    )
    .await;
    server
        .event(Res::Policies, "MODIFIED", policy.clone())
        .await;
    eventually(&mut r, "deny-all again", |r| {
        r.by_ip(ip(REC_IP)).unwrap().isolated_by.is_some()
    })
    .await;

    let mut deleted = policy;
    deleted["metadata"]["resourceVersion"] = json!("48399");
    server.event(Res::Policies, "DELETED", deleted).await;
    eventually(&mut r, "isolated_by is cleared", |r| {
        r.by_ip(ip(REC_IP)).unwrap().isolated_by.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_no_longer_resolves_by_ip() {
    let (mut r, server, tree) = synced("deleted").await;
    let cg = tree.container(REC_UID, &"3f9a1c7e".repeat(8));
    assert!(r.by_cgroup(cg).is_some());
    let mut rec = listed_pod("svc-recommendation-engine");
    rec["metadata"]["resourceVersion"] = json!("48500");
    rec["metadata"]["deletionTimestamp"] = json!("2024-03-05T11:00:00Z");
    server.event(Res::Pods, "DELETED", rec).await;
    // The slice still lists the pod until the endpoint controller updates it; a deleted local
    // pod must not come back as a "remote" one from that stale slice either.
    eventually(&mut r, "the address is forgotten", |r| {
        r.by_ip(ip(REC_IP)).is_none()
    })
    .await;
    assert!(r.by_ip(ip(PROFILE_IP)).is_some(), "other pods stay");
    // Its cgroup still names it, for the records of its last packets.
    assert_eq!(r.by_cgroup(cg).unwrap().uid.as_deref(), Some(REC_UID));
    assert!(!r.monitored_pod_ips().contains(&ip(REC_IP)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmark_then_expired_watch_relists() {
    let (mut r, server, _tree) = synced("resync").await;
    server
        .event(
            Res::Pods,
            "BOOKMARK",
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "48600"}}),
        )
        .await;
    // The watch times out; the watcher resumes from the bookmark's version, without a list.
    server.close_watch(Res::Pods).await;
    server.wait_for_request("resourceVersion=48600").await;
    let lists = server.requests_with("/api/v1/pods?").await;
    assert!(lists.last().unwrap().contains("watch=true&"), "{lists:?}");
    assert!(
        lists.last().unwrap().contains("resourceVersion=48600"),
        "{lists:?}"
    );
    // The watch expires (etcd compacted past our version): the watcher lists again. The new
    // list lacks the recommendation engine and has the new pod.
    let mut list = fixture("pods.json");
    list["metadata"]["resourceVersion"] = json!("49000");
    let items = list["items"].as_array_mut().unwrap();
    items.retain(|p| p["metadata"]["uid"] != REC_UID);
    items.push(new_pod(NEW_IP, "48990"));
    server.set_list(Res::Pods, StatusCode::OK, list).await;
    server
        .event(
            Res::Pods,
            "ERROR",
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "too old resource version: 48600 (48950)", "reason": "Expired", "code": 410}),
        )
        .await;
    eventually(&mut r, "the relist is applied", |r| {
        r.by_ip(ip(NEW_IP)).is_some()
    })
    .await;
    assert!(
        r.by_ip(ip(REC_IP)).is_none(),
        "a pod missing from the new list is gone"
    );
    assert!(
        r.by_ip(ip(PROFILE_IP)).is_some(),
        "a pod in both lists stays"
    );
    let lists = server.requests_with("/api/v1/pods?").await;
    let relists = lists.iter().filter(|q| !q.contains("watch=true")).count();
    assert_eq!(relists, 2, "{lists:?}");
    // After the relist, watching resumes from the new list's version.
    server
        .event(Res::Pods, "DELETED", new_pod(NEW_IP, "49001"))
        .await;
    eventually(&mut r, "events after the relist apply", |r| {
        r.by_ip(ip(NEW_IP)).is_none()
    })
    .await;
    assert!(
        server
            .requests_with("resourceVersion=49000")
            .await
            .iter()
            .any(|q| q.contains("watch=true"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_reused_by_a_new_pod_old_deleted_after() {
    let (mut r, server, _tree) = synced("reuse-after").await;
    // The old pod is terminating but not yet deleted when its address is handed out again.
    server
        .event(Res::Pods, "ADDED", new_pod(REC_IP, "48700"))
        .await;
    eventually(&mut r, "the new pod owns the address", |r| {
        r.by_ip(ip(REC_IP)).unwrap().uid.as_deref() == Some(NEW_UID)
    })
    .await;
    // A late update of the old pod (terminating, relabelled) does not take the address back...
    let mut old = listed_pod("svc-recommendation-engine");
    old["metadata"]["resourceVersion"] = json!("48701");
    old["metadata"]["deletionTimestamp"] = json!("2024-03-05T11:00:00Z");
    old["metadata"]["labels"]["draining"] = json!("true");
    server.event(Res::Pods, "MODIFIED", old.clone()).await;
    eventually(&mut r, "the old pod's update is applied", |r| {
        r.by_ip(ip("fd00:10:244:1::e"))
            .is_some_and(|p| p.labels.contains_key("draining"))
    })
    .await;
    assert_eq!(r.by_ip(ip(REC_IP)).unwrap().uid.as_deref(), Some(NEW_UID));
    // ...nor does its deletion remove the new pod's mapping.
    old["metadata"]["resourceVersion"] = json!("48702");
    server.event(Res::Pods, "DELETED", old).await;
    // Wait for the deletion to be applied: the old pod's other address goes.
    eventually(&mut r, "the old pod is gone", |r| {
        r.by_ip(ip("fd00:10:244:1::e")).is_none()
    })
    .await;
    assert_eq!(r.by_ip(ip(REC_IP)).unwrap().uid.as_deref(), Some(NEW_UID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_reused_by_a_new_pod_old_deleted_first() {
    let (mut r, server, _tree) = synced("reuse-before").await;
    let mut old = listed_pod("svc-recommendation-engine");
    old["metadata"]["resourceVersion"] = json!("48800");
    server.event(Res::Pods, "DELETED", old).await;
    // The EndpointSlice still lists the old pod at that address (the endpoint controller has
    // not caught up): it is this node's pod, so the Pod watch's word is final.
    eventually(&mut r, "the old pod is gone", |r| {
        r.by_ip(ip(REC_IP)).is_none()
    })
    .await;
    server
        .event(Res::Pods, "ADDED", new_pod(REC_IP, "48801"))
        .await;
    eventually(&mut r, "the new pod owns the address", |r| {
        r.by_ip(ip(REC_IP))
            .is_some_and(|p| p.uid.as_deref() == Some(NEW_UID))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pod_watch_is_given_as_the_reason() {
    let tree = CgroupTree::new("forbidden");
    let (client, server) = ApiServer::start();
    server
        .set_list(
            Res::Pods,
            StatusCode::FORBIDDEN,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "pods is forbidden: User \"system:serviceaccount:monitor:agent\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
                   "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403}),
        )
        .await;
    let cg = tree.container(REC_UID, &"3f9a1c7e".repeat(8));
    let mut r = KubeResolver::with_client(client, NODE.into(), tree.root.clone());
    eventually(&mut r, "the failure is reported", |r| {
        r.by_cgroup(cg).is_none()
            && r.unattributed_reason(cg)
                .is_some_and(|w| w.contains("the pod watch is failing"))
    })
    .await;
    let why = r.unattributed_reason(cg).unwrap();
    assert!(why.contains("forbidden"), "{why}");
    assert!(
        why.contains("first list of this node's pods has not arrived"),
        "{why}"
    );
    assert!(!r.is_synced());
}
