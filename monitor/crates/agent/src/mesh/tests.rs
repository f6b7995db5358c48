//! Leg classification and de-duplication on the lab's Istio topology: client pod `engine`
//! (10.77.1.4, cgroup 4) calls server pod `profile` (10.77.0.10, cgroup 10) on port 80; both
//! have a sidecar (uid/gid 1337) in their cgroup.

use std::net::{IpAddr, SocketAddr};

use monitor_common::{
    flow::{FAMILY_V4, FlowTuple, Initiator},
    sock::{ORIGIN_CONNECT, ORIGIN_PASSIVE, SockOrigin},
};

use super::*;
use crate::identity::{PodResolver, fake::Fake};

const ENGINE_CG: u64 = 4;
const PROFILE_CG: u64 = 10;
const SEC: u64 = 1_000_000_000;

fn lab() -> Fake {
    let mut f = Fake::default();
    f.pod(
        "engine",
        "svc-engine",
        "recommendation-engine",
        "10.77.1.4",
        Some(ENGINE_CG),
    );
    f.pod(
        "profile",
        "svc-profile",
        "user-profile",
        "10.77.0.10",
        Some(PROFILE_CG),
    );
    f.service("svc-profile", "10.96.0.10");
    f
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn tuple(local: SocketAddr, remote: SocketAddr, initiator: Initiator) -> FlowTuple {
    let raw = |a: SocketAddr| {
        let mut b = [0u8; 16];
        if let IpAddr::V4(v4) = a.ip() {
            b[..4].copy_from_slice(&v4.octets());
        }
        b
    };
    FlowTuple {
        family: FAMILY_V4,
        initiator: initiator as u8,
        _pad: [0; 2],
        local_port: local.port(),
        remote_port: remote.port(),
        local_addr: raw(local),
        remote_addr: raw(remote),
    }
}

fn connected(to: SocketAddr, uid: u32) -> SockOrigin {
    let mut addr = [0u8; 16];
    if let IpAddr::V4(v4) = to.ip() {
        addr[..4].copy_from_slice(&v4.octets());
    }
    SockOrigin {
        flags: ORIGIN_CONNECT,
        family: FAMILY_V4,
        port: to.port(),
        uid,
        gid: uid,
        addr,
    }
}

fn accepted() -> SockOrigin {
    SockOrigin {
        flags: ORIGIN_PASSIVE,
        ..SockOrigin::NONE
    }
}

/// Opens one flow: `(cookie, cgroup, local, remote, initiator, origin, owner uid)`.
type Open<'a> = (u64, u64, &'a str, &'a str, Initiator, SockOrigin, u32);

fn open(book: &mut MeshBook, flows: &[Open<'_>], ns: u64) {
    for &(cookie, cg, local, remote, init, origin, owner) in flows {
        let t = tuple(sa(local), sa(remote), init);
        book.on_open(cookie, cg, &t, &origin, Some(owner), ns);
    }
}

/// The Istio (>= 1.10) legs of one request: A1 app → 127.0.0.1:15001, A3 client sidecar →
/// server pod (mTLS), B1 server sidecar's accepted mTLS, B2 server sidecar → app from
/// 127.0.0.6, B3 the app's accepted socket. (A2, the client sidecar's accepted plaintext, is
/// mirrored by the kernel and never reported.)
fn istio(book: &mut MeshBook, ns: u64) {
    let (l, r) = (Initiator::Local, Initiator::Remote);
    open(
        book,
        &[
            (
                1,
                ENGINE_CG,
                "10.77.1.4:50000",
                "127.0.0.1:15001",
                l,
                connected(sa("10.77.0.10:80"), 0),
                0,
            ),
            (
                3,
                ENGINE_CG,
                "10.77.1.4:50002",
                "10.77.0.10:80",
                l,
                connected(sa("10.77.0.10:80"), 1337),
                1337,
            ),
            (
                11,
                PROFILE_CG,
                "10.77.0.10:15006",
                "10.77.1.4:50002",
                r,
                accepted(),
                1337,
            ),
            (
                12,
                PROFILE_CG,
                "127.0.0.6:50004",
                "10.77.0.10:80",
                l,
                connected(sa("10.77.0.10:80"), 1337),
                1337,
            ),
            (
                13,
                PROFILE_CG,
                "10.77.0.10:80",
                "127.0.0.6:50004",
                r,
                accepted(),
                0,
            ),
        ],
        ns,
    );
}

#[test]
fn istio_legs_are_told_apart() {
    let mut id = lab();
    let mut book = MeshBook::new(MeshConfig::istio(MeshMode::Istio));
    istio(&mut book, SEC);
    assert_eq!(
        book.leg(1, &mut id),
        Leg::AppOutbound {
            asked: Some(sa("10.77.0.10:80"))
        }
    );
    assert_eq!(
        book.leg(3, &mut id),
        Leg::Proxy {
            passive: false,
            to_own_pod: false
        }
    );
    assert_eq!(
        book.leg(11, &mut id),
        Leg::Proxy {
            passive: true,
            to_own_pod: false
        }
    );
    assert_eq!(
        book.leg(12, &mut id),
        Leg::Proxy {
            passive: false,
            to_own_pod: true
        }
    );
    assert_eq!(book.leg(13, &mut id), Leg::AppInbound { linked: true });
    assert_eq!(book.leg(99, &mut id), Leg::Plain, "never opened");
}

#[test]
fn legacy_inbound_from_loopback_is_told_by_the_sidecars_socket() {
    let mut id = lab();
    let mut book = MeshBook::new(MeshConfig::istio(MeshMode::Istio));
    let (l, r) = (Initiator::Local, Initiator::Remote);
    open(
        &mut book,
        &[
            (
                12,
                PROFILE_CG,
                "127.0.0.1:50004",
                "127.0.0.1:80",
                l,
                connected(sa("127.0.0.1:80"), 1337),
                1337,
            ),
            (
                13,
                PROFILE_CG,
                "127.0.0.1:80",
                "127.0.0.1:50004",
                r,
                accepted(),
                0,
            ),
            // Loopback without a sidecar at the other end: the pod talking to itself.
            (
                20,
                PROFILE_CG,
                "127.0.0.1:8080",
                "127.0.0.1:50006",
                r,
                accepted(),
                0,
            ),
            (
                21,
                PROFILE_CG,
                "127.0.0.1:50006",
                "127.0.0.1:8080",
                l,
                connected(sa("127.0.0.1:8080"), 0),
                0,
            ),
        ],
        SEC,
    );
    assert_eq!(book.leg(13, &mut id), Leg::AppInbound { linked: true });
    assert_eq!(book.leg(20, &mut id), Leg::Plain);
    assert_eq!(book.leg(21, &mut id), Leg::Plain);
    // The same addresses in another pod's network namespace are not this pod's sidecar.
    let mut other = MeshBook::new(MeshConfig::istio(MeshMode::Istio));
    open(
        &mut other,
        &[
            (
                12,
                ENGINE_CG,
                "127.0.0.1:50004",
                "127.0.0.1:80",
                l,
                connected(sa("127.0.0.1:80"), 1337),
                1337,
            ),
            (
                13,
                PROFILE_CG,
                "127.0.0.1:80",
                "127.0.0.1:50004",
                r,
                accepted(),
                0,
            ),
        ],
        SEC,
    );
    assert_eq!(other.leg(13, &mut id), Leg::Plain);
}

#[test]
fn auto_switches_on_when_a_mesh_is_seen_and_none_never_does() {
    let mut id = lab();
    let plain: Open<'_> = (
        5,
        ENGINE_CG,
        "10.77.1.4:50010",
        "10.77.0.10:80",
        Initiator::Local,
        connected(sa("10.77.0.10:80"), 0),
        0,
    );
    let mut auto = MeshBook::new(MeshConfig::istio(MeshMode::Auto));
    open(&mut auto, &[plain], SEC);
    assert!(!auto.active());
    assert_eq!(auto.leg(5, &mut id), Leg::Plain);
    istio(&mut auto, SEC);
    assert!(auto.active());
    assert_eq!(
        auto.leg(5, &mut id),
        Leg::Plain,
        "an ordinary connection stays plain"
    );
    assert!(matches!(auto.leg(1, &mut id), Leg::AppOutbound { .. }));

    let mut none = MeshBook::new(MeshConfig::istio(MeshMode::None));
    istio(&mut none, SEC);
    assert!(!none.active() && none.is_empty());
    assert_eq!(none.leg(1, &mut id), Leg::Plain);
}

#[test]
fn a_local_application_connection_explains_the_inbound_exchange() {
    let mut id = lab();
    let mut book = MeshBook::new(MeshConfig::istio(MeshMode::Istio));
    istio(&mut book, SEC);
    let profile = id.by_cgroup(PROFILE_CG).expect("pod");
    let local = sa("10.77.0.10:80");
    let caller = Some(("vantage", "recommendation-engine"));
    assert!(book.explains_inbound(&profile, local, 2 * SEC, caller, &mut id));
    assert!(book.explains_inbound(&profile, local, 2 * SEC, None, &mut id));
    // Another service account, another port, or long after the client's connection closed.
    assert!(!book.explains_inbound(&profile, local, 2 * SEC, Some(("vantage", "x")), &mut id));
    assert!(!book.explains_inbound(&profile, sa("10.77.0.10:81"), 2 * SEC, caller, &mut id));
    book.on_close(1, 3 * SEC);
    assert!(book.explains_inbound(&profile, local, 3 * SEC + SEC / 2, caller, &mut id));
    assert!(!book.explains_inbound(&profile, local, 5 * SEC, caller, &mut id));
    // Legacy style: the application was reached at 127.0.0.1:80.
    assert!(book.explains_inbound(&profile, sa("127.0.0.1:80"), 2 * SEC, caller, &mut id));
}

#[test]
fn an_application_asking_for_the_service_ip_explains_it_too() {
    let mut id = lab();
    let mut book = MeshBook::new(MeshConfig::istio(MeshMode::Istio));
    // Real Istio: the application asks for the Service (10.96.0.10:80); the server's sidecar
    // forwards to the container port (8080).
    open(
        &mut book,
        &[(
            1,
            ENGINE_CG,
            "10.77.1.4:50000",
            "127.0.0.1:15001",
            Initiator::Local,
            connected(sa("10.96.0.10:80"), 0),
            0,
        )],
        SEC,
    );
    let profile = id.by_cgroup(PROFILE_CG).expect("pod");
    let caller = Some(("vantage", "recommendation-engine"));
    assert!(book.explains_inbound(&profile, sa("10.77.0.10:8080"), SEC, caller, &mut id));
}

#[test]
fn a_proxy_socket_is_explained_only_by_its_own_pods_application() {
    let mut id = lab();
    let mut book = MeshBook::new(MeshConfig::istio(MeshMode::Istio));
    istio(&mut book, SEC);
    assert!(book.explains_outbound(3, 2 * SEC, &mut id));
    // uid 1337 in the client pod sending somewhere no application connection asked for.
    open(
        &mut book,
        &[(
            7,
            ENGINE_CG,
            "10.77.1.4:50020",
            "10.77.200.1:80",
            Initiator::Local,
            connected(sa("10.77.200.1:80"), 1337),
            1337,
        )],
        2 * SEC,
    );
    assert!(matches!(book.leg(7, &mut id), Leg::Proxy { .. }));
    assert!(!book.explains_outbound(7, 2 * SEC, &mut id));
}

#[test]
fn closed_flows_are_forgotten_after_the_linger() {
    let mut id = lab();
    let mut book = MeshBook::new(MeshConfig::istio(MeshMode::Istio));
    istio(&mut book, SEC);
    assert_eq!(book.len(), 5);
    for c in [1, 3, 11, 12, 13] {
        book.on_close(c, 2 * SEC);
    }
    book.sweep(2 * SEC + LINGER.as_nanos() as u64 - 1);
    assert_eq!(book.len(), 5, "still lingering");
    book.sweep(2 * SEC + LINGER.as_nanos() as u64);
    assert!(book.is_empty());
    assert!(book.by_tuple.is_empty() && book.by_asked.is_empty());
    assert_eq!(book.leg(13, &mut id), Leg::Plain);
}
