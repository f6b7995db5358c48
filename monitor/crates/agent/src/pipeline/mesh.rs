//! Mesh-aware attribution: who a flow's or an exchange's endpoints are when one of its sockets
//! is a service mesh leg ([`crate::mesh::Leg`]), and which observations another record
//! already reports.
//!
//! - The application's connection to its sidecar is the exchange's record: the source is the
//!   pod, the destination the address `connect()` asked for (`nat` keeps the sidecar's).
//! - The application's side of the sidecar's inbound forward reports the exchange from the
//!   server, with the caller the sidecar names in `x-forwarded-client-cert` (`spiffe_id`,
//!   `attested_by: mesh`), unless a local application connection explains it (same node: the
//!   client's leg reports it). Its connection is the sidecar's, reported by the sidecar's end.
//! - The sidecar's own sockets give `proxy` flow records and no exchanges (the application's
//!   legs carry them), unless no application connection explains a plaintext exchange a
//!   proxy-owned socket sent: that is reported as the pod's own.

use std::{net::SocketAddr, sync::Arc};

use super::Pipeline;
use crate::{
    conn::{Exchange, FlowInfo},
    identity::{PeerKind, Pod, PodResolver},
    mesh::{
        Leg,
        xfcc::{self, Caller},
    },
};
use monitor_record::{
    exchange::Observer,
    record::{ATTESTED_BY_MESH, Endpoint, EndpointKind, Nat},
};

/// The endpoints a record is written with.
pub(super) struct Attributed {
    /// The client.
    pub source: Endpoint,
    /// The server.
    pub destination: Endpoint,
    /// A mesh proxy's own connection.
    pub proxy: bool,
}

fn nat(a: SocketAddr) -> Nat {
    Nat {
        ip: a.ip(),
        port: a.port(),
    }
}

impl Pipeline {
    /// The endpoints of flow `f`, seen by its local socket as `observer`, or `None` when
    /// another record reports the connection.
    pub(super) fn attribute_flow(
        &mut self,
        f: &FlowInfo,
        observer: Observer,
        identity: &mut dyn PodResolver,
    ) -> Option<Attributed> {
        match self.mesh.leg(f.cookie, identity) {
            Leg::Plain => self.plain(f, observer, identity, false),
            Leg::Proxy { .. } => self.plain(f, observer, identity, true),
            Leg::AppOutbound { asked } => Some(self.app_outbound(f, asked, identity)),
            // The sidecar's socket is the client end of this connection and reports it.
            Leg::AppInbound { linked: true } => {
                self.suppressed += 1;
                None
            }
            Leg::AppInbound { linked: false } => self.plain(f, observer, identity, false),
        }
    }

    /// The endpoints of exchange `e`, or `None` when another record reports it.
    pub(super) fn attribute_exchange(
        &mut self,
        e: &Exchange,
        identity: &mut dyn PodResolver,
    ) -> Option<Attributed> {
        let f = &e.flow;
        match self.mesh.leg(f.cookie, identity) {
            Leg::Plain => self.plain(f, e.observer, identity, false),
            Leg::Proxy {
                passive,
                to_own_pod,
            } => {
                // The application's own socket at the other end (to the sidecar, or from its
                // forward) reports it, as does an application connection it carries.
                if passive
                    || to_own_pod
                    || self
                        .mesh
                        .explains_outbound(f.cookie, e.request_ns, identity)
                {
                    self.mesh.proxy_exchanges += 1;
                    return None;
                }
                let mut a = self.plain(f, e.observer, identity, false)?;
                let uid = f.uid.map_or_else(|| "?".to_owned(), |u| u.to_string());
                a.source.note = Some(format!(
                    "sent by a socket of the mesh proxy's uid/gid (owner uid {uid}), but no \
                     connection of the pod's application asked for this destination: reported \
                     as the pod's own request"
                ));
                Some(a)
            }
            Leg::AppOutbound { asked } => Some(self.app_outbound(f, asked, identity)),
            Leg::AppInbound { .. } => self.app_inbound(e, identity),
        }
    }

    /// The addresses' view ([`Pipeline::endpoints`]); a mesh leg's loopback peer is the pod
    /// itself (its sidecar or its application).
    fn plain(
        &mut self,
        f: &FlowInfo,
        observer: Observer,
        identity: &mut dyn PodResolver,
        proxy: bool,
    ) -> Option<Attributed> {
        let (mut source, mut destination) =
            self.endpoints(f.cgroup_id, f.tuple.as_ref(), observer, identity)?;
        if self.mesh.active() {
            let remote = match observer {
                Observer::Client => &mut destination,
                Observer::Server => &mut source,
            };
            if remote.identity.is_none()
                && remote.ip.is_some_and(|ip| ip.is_loopback())
                && let Some(pod) = identity.by_cgroup(f.cgroup_id)
            {
                let (ip, port) = (remote.ip, remote.port);
                *remote = Endpoint::new(Some(&pod), ip, port);
            }
        }
        Some(Attributed {
            source,
            destination,
            proxy,
        })
    }

    /// The application's connection to its sidecar: to the destination it asked for.
    fn app_outbound(
        &mut self,
        f: &FlowInfo,
        asked: Option<SocketAddr>,
        identity: &mut dyn PodResolver,
    ) -> Attributed {
        let (source, wire) =
            self.endpoints_of(f.cgroup_id, f.tuple.as_ref(), Observer::Client, identity);
        let destination = match (asked, wire.ip) {
            (Some(a), wire_ip) => {
                let mut d = Endpoint::new(identity.by_ip(a.ip()).as_ref(), Some(a.ip()), a.port());
                d.nat = wire_ip.map(|ip| Nat {
                    ip,
                    port: wire.port,
                });
                d
            }
            (None, _) => {
                let mut d = wire;
                d.note = Some(
                    "redirected to the pod's mesh sidecar; the destination the application \
                     asked for is unknown (the connect hook is not attached, or the connection \
                     predates the agent)"
                        .to_owned(),
                );
                d
            }
        };
        Attributed {
            source,
            destination,
            proxy: false,
        }
    }

    /// An exchange the pod's sidecar forwarded to its application: from the caller the mesh
    /// names, unless a local application connection reports it.
    fn app_inbound(&mut self, e: &Exchange, identity: &mut dyn PodResolver) -> Option<Attributed> {
        let f = &e.flow;
        let Some(t) = f.tuple else {
            return self.plain(f, e.observer, identity, false);
        };
        let local = SocketAddr::new(t.local_ip(), t.local_port);
        let wire_peer = SocketAddr::new(t.remote_ip(), t.remote_port);
        let caller = e.request.xfcc.as_deref().and_then(xfcc::caller);
        let account = match &caller {
            Some(Caller::Spiffe(id)) => Some((id.namespace.as_str(), id.service_account.as_str())),
            _ => None,
        };
        let server = identity.by_cgroup(f.cgroup_id);
        if let Some(pod) = &server
            && self
                .mesh
                .explains_inbound(pod, local, e.request_ns, account, identity)
        {
            self.suppressed += 1;
            return None;
        }
        let (_, mut destination) =
            self.endpoints_of(f.cgroup_id, Some(&t), Observer::Server, identity);
        // Legacy sidecars forward to 127.0.0.1: the pod's own address is what was called.
        if local.ip().is_loopback()
            && let Some(ip) = server.as_ref().and_then(|p| {
                p.ips
                    .iter()
                    .copied()
                    .find(|ip| ip.is_ipv4() == local.ip().is_ipv4())
            })
        {
            destination.ip = Some(ip);
            destination.nat = Some(nat(local));
        }
        let source = self.caller_endpoint(caller, e.request_truncated, wire_peer, identity);
        Some(Attributed {
            source,
            destination,
            proxy: false,
        })
    }

    /// The caller the sidecar named (or why it is unknown), arriving from `wire` (the sidecar).
    fn caller_endpoint(
        &self,
        caller: Option<Caller>,
        truncated: bool,
        wire: SocketAddr,
        identity: &mut dyn PodResolver,
    ) -> Endpoint {
        let unknown = |note: String| {
            let mut e = Endpoint::new(None, None, 0);
            e.note = Some(note);
            e
        };
        let mut ep = match caller {
            Some(Caller::Spiffe(id)) => {
                // This node's pods would have been seen calling (their connection explains
                // the exchange): the caller is elsewhere.
                let remote: Vec<Arc<Pod>> = identity
                    .by_service_account(&id.namespace, &id.service_account)
                    .into_iter()
                    .filter(|p| !p.ips.iter().any(|ip| self.local_pods.contains(ip)))
                    .collect();
                let account = format!("{}/{}", id.namespace, id.service_account);
                let services: Vec<&str> =
                    remote.iter().filter_map(|p| p.service.as_deref()).collect();
                let mut e = match remote.as_slice() {
                    [one] => {
                        let mut e = Endpoint::new(Some(one), None, 0);
                        e.note = Some(format!(
                            "named by the mesh (mTLS peer certificate): service account \
                             {account}, which only this pod uses"
                        ));
                        e
                    }
                    [first, ..]
                        if services.len() == remote.len()
                            && services
                                .iter()
                                .all(|s| Some(*s) == first.service.as_deref()) =>
                    {
                        let mut svc = Pod::named(services[0], PeerKind::Service);
                        svc.namespace = id.namespace.clone();
                        svc.service = Some(services[0].to_owned());
                        svc.service_account = Some(id.service_account.clone());
                        let mut e = Endpoint::new(Some(&Arc::new(svc)), None, 0);
                        e.note = Some(format!(
                            "named by the mesh (mTLS peer certificate): service account \
                             {account}, used by {} pods of service {}; the mesh does not say \
                             which one",
                            remote.len(),
                            services[0]
                        ));
                        e
                    }
                    _ => {
                        let mut who = Pod::named("", PeerKind::Pod);
                        who.namespace = id.namespace.clone();
                        who.service_account = Some(id.service_account.clone());
                        let mut e = Endpoint::new(Some(&Arc::new(who)), None, 0);
                        e.kind = EndpointKind::Unknown;
                        e.note = Some(format!(
                            "named by the mesh (mTLS peer certificate): service account \
                             {account}; no pod off this node is known to use it"
                        ));
                        e
                    }
                };
                e.spiffe_id = Some(id.id);
                e.attested_by = Some(ATTESTED_BY_MESH.to_owned());
                e
            }
            Some(Caller::OtherUri(uri)) => unknown(format!(
                "the mesh named the caller {uri}, which is not a Kubernetes SPIFFE ID \
                 (spiffe://<trust domain>/ns/<namespace>/sa/<service account>)"
            )),
            Some(Caller::NoUri) => unknown(
                "caller unknown: x-forwarded-client-cert names no URI (the caller's \
                 certificate carries no SPIFFE ID)"
                    .to_owned(),
            ),
            None if truncated => unknown(
                "caller unknown: the request came through the pod's mesh sidecar, and its \
                 head was larger than the capture, so x-forwarded-client-cert could not be read"
                    .to_owned(),
            ),
            None => unknown(
                "caller unknown: the request came through the pod's mesh sidecar without \
                 x-forwarded-client-cert (a plaintext caller, or a mesh that does not forward \
                 client certificates)"
                    .to_owned(),
            ),
        };
        ep.nat = Some(nat(wire));
        ep
    }
}
