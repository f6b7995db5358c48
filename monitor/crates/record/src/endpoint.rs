//! How each side of an exchange is written in records: an address and port, and the identity
//! behind it when known (shared, not copied, from the identity source), flattened into the
//! record's JSON.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use serde::Serialize;

use crate::peer::{PeerKind, Pod};

/// What kind of peer an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointKind {
    /// A pod in the inventory.
    Pod,
    /// A Service's cluster IP.
    Service,
    /// A named host outside the cluster (inventory `externals`).
    External,
    /// The node itself (host network).
    Node,
    /// An address the inventory does not know.
    Unknown,
    /// A local socket whose cgroup is not (yet) a known pod.
    Unattributed,
}

/// An address and port as translated on the way: for a destination, the address the packets
/// were actually sent to when the application asked for another (a service mesh's redirect
/// to its sidecar, `127.0.0.1:15001`; kube-proxy's DNAT on the node); for a source, the
/// address the connection arrived from when a proxy stood in for the caller (a mesh sidecar's
/// `127.0.0.6`). ECS `source.nat.*` / `destination.nat.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Nat {
    /// Address on the wire.
    pub ip: IpAddr,
    /// Port on the wire.
    pub port: u16,
}

/// Who vouches for an endpoint's identity when it does not come from the addresses.
pub const ATTESTED_BY_MESH: &str = "mesh";

/// One end of a flow. (Deserialize: `monitor policy dry-run` reads stored records back.)
///
/// The peer's identity is the resolver's own [`Pod`], shared: a record about a pod costs a
/// reference count, not a copy of its names and labels. The JSON form flattens it into
/// `namespace`, `pod`, `service`, `service_account`, `labels` and `isolated_by`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(from = "EndpointFields")]
pub struct Endpoint {
    /// What the peer is.
    pub kind: EndpointKind,
    /// IP address.
    pub ip: Option<IpAddr>,
    /// TCP port.
    pub port: u16,
    /// Who the peer is, if the inventory (or Kubernetes) knows it.
    pub identity: Option<Arc<Pod>>,
    /// cgroup id of a local socket (always set for the observing side).
    pub cgroup_id: Option<u64>,
    /// Why identity is missing, when it is (or how it was established, when not from the
    /// address).
    pub note: Option<String>,
    /// The address on the wire, when it differs from `ip`/`port` (see [`Nat`]).
    pub nat: Option<Nat>,
    /// The peer's SPIFFE ID, when a service mesh named it (`x-forwarded-client-cert`).
    pub spiffe_id: Option<String>,
    /// Who established the identity when the address could not: [`ATTESTED_BY_MESH`] (the
    /// mesh's mTLS peer certificate, as its sidecar reported it).
    pub attested_by: Option<String>,
}

/// Labels of an endpoint without identity.
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Endpoint {
    /// An endpoint for `pod` (if known) at `ip:port`.
    pub fn new(pod: Option<&Arc<Pod>>, ip: Option<IpAddr>, port: u16) -> Self {
        Self {
            kind: pod.map_or(EndpointKind::Unknown, |p| match p.kind {
                PeerKind::Pod => EndpointKind::Pod,
                PeerKind::Service => EndpointKind::Service,
                PeerKind::External => EndpointKind::External,
                PeerKind::Node => EndpointKind::Node,
            }),
            ip,
            port,
            identity: pod.cloned(),
            cgroup_id: None,
            note: None,
            nat: None,
            spiffe_id: None,
            attested_by: None,
        }
    }

    /// Namespace (none for an identity without one, such as an external host).
    pub fn namespace(&self) -> Option<&str> {
        self.identity
            .as_deref()
            .map(|p| p.namespace.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Pod (or external host) name; none for an identity without one (a caller the mesh
    /// named only by namespace and service account).
    pub fn pod(&self) -> Option<&str> {
        self.identity
            .as_deref()
            .map(|p| p.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Service the pod backs.
    pub fn service(&self) -> Option<&str> {
        self.identity.as_deref()?.service.as_deref()
    }

    /// Service account.
    pub fn service_account(&self) -> Option<&str> {
        self.identity.as_deref()?.service_account.as_deref()
    }

    /// Labels (empty without identity).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.identity.as_deref().map_or(&NO_LABELS, |p| &p.labels)
    }

    /// NetworkPolicy that isolates the pod (deny-all), if any.
    pub fn isolated_by(&self) -> Option<&str> {
        self.identity.as_deref()?.isolated_by.as_deref()
    }
}

/// The JSON form of an [`Endpoint`] (see `docs/records.md`), borrowed for writing.
#[derive(Serialize)]
struct EndpointJson<'a> {
    kind: EndpointKind,
    ip: Option<IpAddr>,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    isolated_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nat: Option<Nat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attested_by: Option<&'a str>,
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EndpointJson {
            kind: self.kind,
            ip: self.ip,
            port: self.port,
            namespace: self.namespace(),
            pod: self.pod(),
            service: self.service(),
            service_account: self.service_account(),
            labels: self.labels(),
            isolated_by: self.isolated_by(),
            cgroup_id: self.cgroup_id,
            note: self.note.as_deref(),
            nat: self.nat,
            spiffe_id: self.spiffe_id.as_deref(),
            attested_by: self.attested_by.as_deref(),
        }
        .serialize(s)
    }
}

/// The JSON form of an [`Endpoint`], owned for reading back.
#[derive(serde::Deserialize)]
struct EndpointFields {
    kind: EndpointKind,
    ip: Option<IpAddr>,
    port: u16,
    namespace: Option<String>,
    pod: Option<String>,
    service: Option<String>,
    service_account: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    isolated_by: Option<String>,
    cgroup_id: Option<u64>,
    note: Option<String>,
    nat: Option<Nat>,
    spiffe_id: Option<String>,
    attested_by: Option<String>,
}

impl From<EndpointFields> for Endpoint {
    fn from(f: EndpointFields) -> Self {
        // A written endpoint names a pod exactly when it had an identity (or, for a caller the
        // mesh named by service account only, a namespace and service account).
        let name = match (f.pod, &f.service_account) {
            (Some(p), _) => Some(p),
            (None, Some(_)) if f.namespace.is_some() => Some(String::new()),
            _ => None,
        };
        let identity = name.map(|name| {
            let kind = match f.kind {
                EndpointKind::Service => PeerKind::Service,
                EndpointKind::External => PeerKind::External,
                EndpointKind::Node => PeerKind::Node,
                _ => PeerKind::Pod,
            };
            let mut p = Pod::named(&name, kind);
            p.namespace = f.namespace.unwrap_or_default();
            p.service = f.service;
            p.service_account = f.service_account;
            p.labels = f.labels;
            p.isolated_by = f.isolated_by;
            Arc::new(p)
        });
        Self {
            kind: f.kind,
            ip: f.ip,
            port: f.port,
            identity,
            cgroup_id: f.cgroup_id,
            note: f.note,
            nat: f.nat,
            spiffe_id: f.spiffe_id,
            attested_by: f.attested_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON form is the record contract: the shared identity is written flat, and what
    /// `monitor policy dry-run` reads back writes the same JSON again.
    #[test]
    fn endpoint_json_is_flat_and_reads_back_the_same() {
        let mut p = Pod::named("svc-recommendation-engine-04", PeerKind::Pod);
        p.namespace = "vantage".into();
        p.service = Some("svc-recommendation-engine".into());
        p.service_account = Some("recommender".into());
        p.labels = BTreeMap::from([("app".into(), "recommendation-engine".into())]);
        p.isolated_by = Some("deny-all".into());
        let mut e = Endpoint::new(Some(&Arc::new(p)), "10.77.0.24".parse().ok(), 53202);
        e.cgroup_id = Some(9921);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "pod", "ip": "10.77.0.24", "port": 53202, "namespace": "vantage",
                "pod": "svc-recommendation-engine-04", "service": "svc-recommendation-engine",
                "service_account": "recommender", "labels": {"app": "recommendation-engine"},
                "isolated_by": "deny-all", "cgroup_id": 9921
            })
        );
        let back: Endpoint = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
        assert_eq!(back.service(), Some("svc-recommendation-engine"));

        let mut unknown = Endpoint::new(None, "192.0.2.7".parse().ok(), 443);
        unknown.kind = EndpointKind::Unattributed;
        unknown.note = Some("cgroup 7 is not a known pod (yet)".into());
        let json = serde_json::to_value(&unknown).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "unattributed", "ip": "192.0.2.7", "port": 443,
                               "note": "cgroup 7 is not a known pod (yet)"})
        );
        let back: Endpoint = serde_json::from_value(json.clone()).unwrap();
        assert!(back.identity.is_none() && back.labels().is_empty());
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }

    /// The mesh's fields: the address on the wire, and a caller named by service account only.
    #[test]
    fn nat_and_mesh_attested_callers_read_back_the_same() {
        let mut who = Pod::named("", PeerKind::Pod);
        who.namespace = "vantage".into();
        who.service_account = Some("recommendation-engine".into());
        let mut e = Endpoint::new(Some(&Arc::new(who)), None, 0);
        e.kind = EndpointKind::Unknown;
        e.nat = Some(Nat {
            ip: "127.0.0.6".parse().unwrap(),
            port: 50004,
        });
        e.spiffe_id = Some("spiffe://cluster.local/ns/vantage/sa/recommendation-engine".into());
        e.attested_by = Some(ATTESTED_BY_MESH.into());
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "unknown", "ip": null, "port": 0, "namespace": "vantage",
                "service_account": "recommendation-engine",
                "nat": {"ip": "127.0.0.6", "port": 50004},
                "spiffe_id": "spiffe://cluster.local/ns/vantage/sa/recommendation-engine",
                "attested_by": "mesh"
            })
        );
        assert_eq!(e.pod(), None, "no pod name");
        let back: Endpoint = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }
}
