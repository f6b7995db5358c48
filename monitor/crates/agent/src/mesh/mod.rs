//! Service-mesh awareness: which of a pod's sockets are its sidecar proxy's, which carry the
//! application's own traffic to or from its sidecar, and how those legs relate, so that every
//! exchange is reported once, from the application's socket, between the real caller and the
//! real destination (docs/design.md#service-meshes).
//!
//! In Istio's sidecar mode a pod's own `nat` rules send the application's outbound TCP to the
//! sidecar (`127.0.0.1:15001`) and inbound TCP to the sidecar too (`:15006`), which then
//! connects to the application from `127.0.0.6` (Istio ≥ 1.10) or `127.0.0.1`; the sidecar's
//! sockets live in the pod's cgroup, owned by uid/gid 1337. This module sorts a pod's sockets
//! into [`Leg`]s from what the kernel reported about each (the addresses on the wire, the
//! destination `connect()` asked for, the caller's uid/gid, the owner uid, who opened it),
//! and answers the two questions de-duplication needs: does a local application connection
//! explain a proxied exchange, and is this connection's other end a local proxy socket.
//!
//! [`MeshBook`] keeps one small entry per flow open record (while the flow is open, and
//! [`LINGER`] after it closed, so records drained in the same batch can still be related),
//! indexed by address pair and by asked-for destination. [`xfcc`] reads the caller the
//! sidecar names in `x-forwarded-client-cert`.

pub mod xfcc;

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use monitor_common::{
    flow::{FlowTuple, Initiator},
    sock::SockOrigin,
};

use crate::identity::{PeerKind, Pod, PodResolver};

/// Istio's proxy uid and gid (`istio-proxy`), excluded from its redirect rules.
pub const ISTIO_PROXY_UID: u32 = 1337;
/// Istio's redirect ports: 15001 (the application's outbound TCP) and 15006 (inbound TCP).
pub const ISTIO_REDIRECT_PORTS: [u16; 2] = [15001, 15006];
/// Source addresses of Istio's inbound forward to the application (≥ 1.10): `127.0.0.6` and
/// `::6`.
pub const ISTIO_INBOUND_SOURCES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)),
];
/// How long a closed flow is remembered for relating legs.
pub const LINGER: Duration = Duration::from_secs(10);
/// Slack around an application connection's lifetime when matching a proxied exchange to it.
const MATCH_SLACK_NS: u64 = 1_000_000_000;

/// Whether the agent accounts for a service mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshMode {
    /// No mesh: every socket is the application's.
    None,
    /// Istio's sidecar mode (or any mesh with the configured proxy uid/gid and ports).
    Istio,
    /// Istio's rules, switched on once a socket of the proxy uid/gid, a connection accepted on
    /// a redirect port or a connection to a redirect port on loopback is seen.
    Auto,
}

impl MeshMode {
    /// The name used on the command line and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Istio => "istio",
            Self::Auto => "auto",
        }
    }
}

/// What identifies a mesh's sidecar and its redirects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// On, off, or on once seen.
    pub mode: MeshMode,
    /// uid the sidecar runs as.
    pub proxy_uid: u32,
    /// gid the sidecar runs as.
    pub proxy_gid: u32,
    /// Ports the pod's `nat` rules redirect to the sidecar.
    pub redirect_ports: Vec<u16>,
    /// Source addresses of the sidecar's inbound forward to the application.
    pub inbound_sources: Vec<IpAddr>,
}

impl MeshConfig {
    /// Istio's defaults with `mode`.
    pub fn istio(mode: MeshMode) -> Self {
        Self {
            mode,
            proxy_uid: ISTIO_PROXY_UID,
            proxy_gid: ISTIO_PROXY_UID,
            redirect_ports: ISTIO_REDIRECT_PORTS.to_vec(),
            inbound_sources: ISTIO_INBOUND_SOURCES.to_vec(),
        }
    }
}

impl Default for MeshConfig {
    /// Istio's defaults, detected automatically.
    fn default() -> Self {
        Self::istio(MeshMode::Auto)
    }
}

/// What a socket is, mesh-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Not a mesh leg (or no mesh): reported as the addresses say.
    Plain,
    /// The application's connection redirected to its own sidecar (to a redirect port on
    /// loopback): its exchanges are the application's, to `asked`, the destination
    /// `connect()` was given (`None` when the connect hook did not see it).
    AppOutbound {
        /// Destination asked for, if known.
        asked: Option<SocketAddr>,
    },
    /// The application's side of a connection from its own sidecar (inbound): the caller is
    /// whoever the sidecar says in `x-forwarded-client-cert`. `linked`: the sidecar's end of
    /// the connection is a socket this agent tracks (which then reports the connection).
    AppInbound {
        /// The sidecar's end is tracked.
        linked: bool,
    },
    /// A socket of the sidecar itself (owned by the proxy uid/gid, or accepted on a redirect
    /// port): its bytes are counted in a `proxy` flow record, its exchanges are reported on
    /// the application's leg.
    Proxy {
        /// Accepted (the sidecar's listener side), not connected.
        passive: bool,
        /// Connected to its own pod (the forward to the application).
        to_own_pod: bool,
    },
}

/// What the agent remembers about one flow.
#[derive(Debug)]
struct Sock {
    cgroup_id: u64,
    local: SocketAddr,
    remote: SocketAddr,
    initiator: u8,
    /// Destination `connect()` was given, when it differs from `remote`.
    asked: Option<SocketAddr>,
    /// uid and gid of the process that called `connect()`.
    caller: Option<(u32, u32)>,
    /// Owner uid of the socket.
    owner: Option<u32>,
    first_ns: u64,
    closed_ns: Option<u64>,
    leg: Option<Leg>,
}

/// The flows the agent relates mesh legs with (see the module header).
#[derive(Debug)]
pub struct MeshBook {
    cfg: MeshConfig,
    /// Why the mesh rules apply (`Auto`: what was seen), once they do.
    active: Option<String>,
    socks: HashMap<u64, Sock>,
    /// (local, remote) → cookies.
    by_tuple: HashMap<(SocketAddr, SocketAddr), Vec<u64>>,
    /// Asked-for destination address → cookies (only flows whose wire address differs).
    by_asked: HashMap<IpAddr, Vec<u64>>,
    /// (close ns, cookie), oldest first, for [`MeshBook::sweep`].
    closed: VecDeque<(u64, u64)>,
    /// Exchanges seen on proxy legs and not reported there (the application's leg reports them).
    pub proxy_exchanges: u64,
}

fn sock_addr(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

impl MeshBook {
    /// A book for `cfg`.
    pub fn new(cfg: MeshConfig) -> Self {
        let active = (cfg.mode == MeshMode::Istio).then(|| "--mesh istio".to_owned());
        Self {
            cfg,
            active,
            socks: HashMap::new(),
            by_tuple: HashMap::new(),
            by_asked: HashMap::new(),
            closed: VecDeque::new(),
            proxy_exchanges: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    /// Whether the mesh rules apply now.
    pub fn active(&self) -> bool {
        self.active.is_some()
    }

    /// Flows remembered (open, or closed less than [`LINGER`] ago).
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// True when no flow is remembered.
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// A flow open record: its wire addresses, what the socket-level programs saw, the owner.
    pub fn on_open(
        &mut self,
        cookie: u64,
        cgroup_id: u64,
        tuple: &FlowTuple,
        origin: &SockOrigin,
        owner: Option<u32>,
        ns: u64,
    ) {
        if self.cfg.mode == MeshMode::None {
            return;
        }
        let local = sock_addr(tuple.local_ip(), tuple.local_port);
        let remote = sock_addr(tuple.remote_ip(), tuple.remote_port);
        let sock = Sock {
            cgroup_id,
            local,
            remote,
            initiator: tuple.initiator,
            asked: origin.destination().filter(|a| *a != remote),
            caller: origin.caller(),
            owner,
            first_ns: ns,
            closed_ns: None,
            leg: None,
        };
        if self.active.is_none() {
            self.active = self.detect(&sock);
            if let Some(why) = &self.active {
                tracing::info!(
                    "service mesh seen ({why}): sidecar legs are attributed to the application \
                     (proxy uid {}, gid {}, redirect ports {:?}; --mesh none turns this off)",
                    self.cfg.proxy_uid,
                    self.cfg.proxy_gid,
                    self.cfg.redirect_ports
                );
            }
        }
        self.unindex(cookie);
        self.by_tuple
            .entry((local, remote))
            .or_default()
            .push(cookie);
        if let Some(a) = sock.asked {
            self.by_asked.entry(a.ip()).or_default().push(cookie);
        }
        self.socks.insert(cookie, sock);
    }

    /// What makes `Auto` switch the mesh rules on, if `s` shows it.
    fn detect(&self, s: &Sock) -> Option<String> {
        let c = &self.cfg;
        if let Some(uid) = s.owner.filter(|u| *u == c.proxy_uid) {
            return Some(format!("a socket owned by uid {uid}"));
        }
        if let Some((uid, gid)) = s.caller
            && (uid == c.proxy_uid || gid == c.proxy_gid)
        {
            return Some(format!("a connect() by uid {uid} gid {gid}"));
        }
        if s.initiator != Initiator::Local as u8 && c.redirect_ports.contains(&s.local.port()) {
            return Some(format!("a connection accepted on port {}", s.local.port()));
        }
        if s.remote.ip().is_loopback() && c.redirect_ports.contains(&s.remote.port()) {
            return Some(format!("a connection to {}", s.remote));
        }
        None
    }

    /// A flow ended (kernel close record, or closed by the agent) at `ns`.
    pub fn on_close(&mut self, cookie: u64, ns: u64) {
        if let Some(s) = self.socks.get_mut(&cookie)
            && s.closed_ns.is_none()
        {
            s.closed_ns = Some(ns);
            self.closed.push_back((ns, cookie));
        }
    }

    /// Forgets flows closed more than [`LINGER`] before `now_ns`.
    pub fn sweep(&mut self, now_ns: u64) {
        let linger = LINGER.as_nanos() as u64;
        while let Some(&(ns, cookie)) = self.closed.front() {
            if now_ns.saturating_sub(ns) < linger {
                break;
            }
            self.closed.pop_front();
            if self.socks.get(&cookie).and_then(|s| s.closed_ns) == Some(ns) {
                self.unindex(cookie);
            }
        }
    }

    fn unindex(&mut self, cookie: u64) {
        let Some(s) = self.socks.remove(&cookie) else {
            return;
        };
        let key = (s.local, s.remote);
        if let Some(v) = self.by_tuple.get_mut(&key) {
            v.retain(|c| *c != cookie);
            if v.is_empty() {
                self.by_tuple.remove(&key);
            }
        }
        if let Some(a) = s.asked
            && let Some(v) = self.by_asked.get_mut(&a.ip())
        {
            v.retain(|c| *c != cookie);
            if v.is_empty() {
                self.by_asked.remove(&a.ip());
            }
        }
    }

    fn proxy_owned(&self, s: &Sock) -> bool {
        let c = &self.cfg;
        s.owner == Some(c.proxy_uid)
            || s.caller
                .is_some_and(|(uid, gid)| uid == c.proxy_uid || gid == c.proxy_gid)
    }

    /// The pod of a flow's cgroup.
    fn pod_of(&self, cookie: u64, identity: &mut dyn PodResolver) -> Option<Arc<Pod>> {
        identity.by_cgroup(self.socks.get(&cookie)?.cgroup_id)
    }

    /// Same pod: same identity, else the same cgroup.
    fn same_pod(&self, a: u64, b: u64, identity: &mut dyn PodResolver) -> bool {
        match (self.pod_of(a, identity), self.pod_of(b, identity)) {
            (Some(x), Some(y)) => x.namespace == y.namespace && x.name == y.name,
            _ => {
                let cg = |c| self.socks.get(&c).map(|s| s.cgroup_id);
                cg(a).is_some() && cg(a) == cg(b)
            }
        }
    }

    /// What flow `cookie` is (cached once known). [`Leg::Plain`] while the mesh rules are off
    /// and for flows whose open record was not seen.
    pub fn leg(&mut self, cookie: u64, identity: &mut dyn PodResolver) -> Leg {
        if !self.active() {
            return Leg::Plain;
        }
        let Some(s) = self.socks.get(&cookie) else {
            return Leg::Plain;
        };
        if let Some(l) = s.leg {
            return l;
        }
        let leg = self.classify(cookie, identity);
        if let Some(s) = self.socks.get_mut(&cookie) {
            s.leg = Some(leg);
        }
        leg
    }

    fn classify(&self, cookie: u64, identity: &mut dyn PodResolver) -> Leg {
        let Some(s) = self.socks.get(&cookie) else {
            return Leg::Plain;
        };
        let redirect = |p: u16| self.cfg.redirect_ports.contains(&p);
        let accepted = s.initiator != Initiator::Local as u8;
        if self.proxy_owned(s) || (accepted && redirect(s.local.port())) {
            let own = self.pod_of(cookie, identity);
            let to_own_pod =
                s.remote.ip().is_loopback() || own.is_some_and(|p| p.ips.contains(&s.remote.ip()));
            return Leg::Proxy {
                passive: accepted,
                to_own_pod,
            };
        }
        if s.initiator != Initiator::Remote as u8
            && s.remote.ip().is_loopback()
            && redirect(s.remote.port())
        {
            return Leg::AppOutbound { asked: s.asked };
        }
        if accepted {
            let linked = self.proxy_peer(cookie, identity);
            if linked || self.cfg.inbound_sources.contains(&s.remote.ip()) {
                return Leg::AppInbound { linked };
            }
        }
        Leg::Plain
    }

    /// True when the other end of flow `cookie` is a tracked proxy socket of the same pod.
    fn proxy_peer(&self, cookie: u64, identity: &mut dyn PodResolver) -> bool {
        let Some(s) = self.socks.get(&cookie) else {
            return false;
        };
        let peers: Vec<u64> = self
            .by_tuple
            .get(&(s.remote, s.local))
            .map(|v| v.iter().copied().filter(|c| *c != cookie).collect())
            .unwrap_or_default();
        peers.into_iter().any(|p| {
            self.socks.get(&p).is_some_and(|ps| self.proxy_owned(ps))
                && self.same_pod(cookie, p, identity)
        })
    }

    /// Application connections (open around `at_ns`) whose asked-for destination is
    /// `target` or, when `target_identity` backs a Service, that Service's cluster IP.
    fn app_legs_to(
        &mut self,
        target: SocketAddr,
        target_ips: &[IpAddr],
        target_identity: Option<&Pod>,
        at_ns: u64,
        identity: &mut dyn PodResolver,
    ) -> Vec<u64> {
        let mut found = Vec::new();
        for (ip, cookies) in &self.by_asked {
            let by_pod = target_ips.contains(ip) || *ip == target.ip();
            let by_service = !by_pod
                && target_identity.is_some_and(|t| {
                    t.service.is_some()
                        && identity.by_ip(*ip).is_some_and(|svc| {
                            svc.kind == PeerKind::Service
                                && svc.namespace == t.namespace
                                && svc.service == t.service
                        })
                });
            if !(by_pod || by_service) {
                continue;
            }
            for c in cookies {
                let Some(s) = self.socks.get(c) else { continue };
                let during = s.first_ns <= at_ns.saturating_add(MATCH_SLACK_NS)
                    && s.closed_ns
                        .is_none_or(|e| at_ns <= e.saturating_add(MATCH_SLACK_NS));
                let port_ok = by_service || s.asked.is_some_and(|a| a.port() == target.port());
                if during && port_ok {
                    found.push(*c);
                }
            }
        }
        found.retain(|c| matches!(self.leg(*c, identity), Leg::AppOutbound { .. }));
        found
    }

    /// True when an exchange that reached `server`'s application at `local` through its
    /// sidecar at `at_ns` was sent by a local application's connection (which then reports
    /// it): one asking for this pod (or its Service) on that port, open at the time, and, when
    /// the mesh named the caller, from a pod of that namespace and service account.
    pub fn explains_inbound(
        &mut self,
        server: &Pod,
        local: SocketAddr,
        at_ns: u64,
        caller: Option<(&str, &str)>,
        identity: &mut dyn PodResolver,
    ) -> bool {
        let legs = self.app_legs_to(local, &server.ips, Some(server), at_ns, identity);
        legs.into_iter().any(|c| match caller {
            None => true,
            Some((ns, sa)) => self
                .pod_of(c, identity)
                .is_some_and(|p| p.namespace == ns && p.service_account.as_deref() == Some(sa)),
        })
    }

    /// True when proxy flow `cookie`'s exchange at `at_ns` is explained by an application
    /// connection of the same pod asking for the proxy's destination (or its Service): the
    /// proxy was only carrying the application's request, which that connection reports.
    pub fn explains_outbound(
        &mut self,
        cookie: u64,
        at_ns: u64,
        identity: &mut dyn PodResolver,
    ) -> bool {
        let Some(remote) = self.socks.get(&cookie).map(|s| s.remote) else {
            return false;
        };
        let dest = identity.by_ip(remote.ip());
        let legs = self.app_legs_to(remote, &[], dest.as_deref(), at_ns, identity);
        legs.into_iter().any(|c| self.same_pod(c, cookie, identity))
    }
}

#[cfg(test)]
mod tests;
