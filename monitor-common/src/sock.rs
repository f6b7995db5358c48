//! What the socket-level programs learn about a TCP socket before its first packet reaches
//! the `cgroup_skb` hooks: the destination the application asked for, who asked, and which
//! end opened the connection.
//!
//! - The `cgroup/connect4` and `cgroup/connect6` programs run in the calling process when it
//!   calls `connect()`, *before* netfilter: they see the address the application passed (a
//!   mesh's `nat OUTPUT` REDIRECT to its sidecar, or kube-proxy's DNAT of a hostNetwork pod,
//!   only happens afterwards), and the caller's uid and gid (`bpf_get_current_uid_gid`).
//! - The `sock_ops` program runs when a connection accepted by a listener becomes established
//!   (`BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`): the socket did not open the connection.
//!
//! Both write a [`SockOrigin`] into [`MAP_SOCK_ORIGIN`] under the socket cookie. The
//! `cgroup_skb` programs read it (and delete it) when they create the socket's flow entry, and
//! copy it into the [`crate::flow::FlowOpen`] record; an entry therefore lives from
//! `connect()` (or the end of the handshake) to the socket's first packet. The map is an LRU
//! hash: entries of sockets that never send a packet (a refused `connect()`, an accepted
//! connection closed without data) are evicted, never leaked.
//!
//! Kernel program names are limited to 15 bytes (`BPF_OBJ_NAME_LEN` with its NUL).

/// Name of the `cgroup/connect4` program in the object file.
pub const PROG_CONNECT4: &str = "monitor_conn4";
/// Name of the `cgroup/connect6` program in the object file.
pub const PROG_CONNECT6: &str = "monitor_conn6";
/// Name of the `sock_ops` program in the object file.
pub const PROG_SOCKOPS: &str = "monitor_sockops";

/// Name of the map socket cookie (`u64`) → [`SockOrigin`].
pub const MAP_SOCK_ORIGIN: &str = "SOCK_ORIGIN";
/// Capacity of [`MAP_SOCK_ORIGIN`]: sockets between `connect()` (or accept) and their first
/// packet. An LRU map: when full, the least recently used entry makes room.
pub const SOCK_ORIGIN_MAX: u32 = 65_536;

/// [`crate::flow::FlowOpen::uid`] when there is no socket owner to report: the kernel's
/// overflow uid, which `bpf_get_socket_uid` returns for a packet without a full socket (and
/// `monitor analyze` writes, a capture having no sockets).
pub const NO_UID: u32 = 65_534;

/// [`SockOrigin::flags`]: written by the connect hook; `family`, `addr`, `port`, `uid` and
/// `gid` are valid, and the socket is the client (it called `connect()`).
pub const ORIGIN_CONNECT: u8 = 1;
/// [`SockOrigin::flags`]: written by `sock_ops` for a passively established (accepted)
/// connection; the remote end opened it.
pub const ORIGIN_PASSIVE: u8 = 2;

/// Value of [`MAP_SOCK_ORIGIN`], and part of every flow open record (all zero when the kernel
/// learnt nothing before the first packet: the socket predates the agent, or the programs are
/// not attached).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockOrigin {
    /// `ORIGIN_*` flags.
    pub flags: u8,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`] of `addr` (with
    /// [`ORIGIN_CONNECT`]); 0 otherwise. A dual-stack socket connecting to an IPv4 address
    /// reports it as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub family: u8,
    /// Destination port the application asked for, host byte order.
    pub port: u16,
    /// uid of the process that called `connect()`.
    pub uid: u32,
    /// gid of the process that called `connect()`.
    pub gid: u32,
    /// Destination address the application asked for, network byte order; IPv4 in the first
    /// four bytes.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SockOrigin>() == 28);

impl SockOrigin {
    /// Nothing known.
    pub const NONE: Self = Self {
        flags: 0,
        family: 0,
        port: 0,
        uid: 0,
        gid: 0,
        addr: [0; 16],
    };
}

#[cfg(feature = "user")]
mod user {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    use super::{ORIGIN_CONNECT, ORIGIN_PASSIVE, SockOrigin};
    use crate::{
        FAMILY_V4, FAMILY_V6,
        header::{DecodeError, RecordKind},
    };

    // SAFETY: `#[repr(C)]`, fixed-width integers only, no padding.
    unsafe impl aya::Pod for SockOrigin {}

    impl SockOrigin {
        /// Rejects values the kernel never writes.
        pub(crate) fn check(&self, kind: RecordKind) -> Result<(), DecodeError> {
            let field = |field, value: u64| DecodeError::Field { kind, field, value };
            if self.flags & !(ORIGIN_CONNECT | ORIGIN_PASSIVE) != 0
                || self.flags == ORIGIN_CONNECT | ORIGIN_PASSIVE
            {
                return Err(field("origin.flags", u64::from(self.flags)));
            }
            let want_family = self.flags & ORIGIN_CONNECT != 0;
            let family_ok = if want_family {
                self.family == FAMILY_V4 || self.family == FAMILY_V6
            } else {
                self.family == 0
            };
            if !family_ok {
                return Err(field("origin.family", u64::from(self.family)));
            }
            Ok(())
        }

        /// The destination the application passed to `connect()` (an IPv4-mapped IPv6
        /// address as IPv4), when the connect hook saw it.
        pub fn destination(&self) -> Option<SocketAddr> {
            if self.flags & ORIGIN_CONNECT == 0 {
                return None;
            }
            let a = self.addr;
            let ip = match self.family {
                FAMILY_V4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                FAMILY_V6 => Ipv6Addr::from(a).to_canonical(),
                _ => return None,
            };
            Some(SocketAddr::new(ip, self.port))
        }

        /// `(uid, gid)` of the process that called `connect()`, when the hook saw it.
        pub fn caller(&self) -> Option<(u32, u32)> {
            (self.flags & ORIGIN_CONNECT != 0).then_some((self.uid, self.gid))
        }

        /// True when the socket called `connect()` (it is the client).
        pub fn connected(&self) -> bool {
            self.flags & ORIGIN_CONNECT != 0
        }

        /// True when `sock_ops` saw the socket established passively (accepted).
        pub fn accepted(&self) -> bool {
            self.flags & ORIGIN_PASSIVE != 0
        }
    }
}

#[cfg(all(test, feature = "user"))]
mod tests {
    use super::*;
    use crate::{FAMILY_V6, header::RecordKind};

    #[test]
    fn mapped_addresses_read_as_ipv4_and_flags_are_checked() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[10, 77, 0, 10]);
        let o = SockOrigin {
            flags: ORIGIN_CONNECT,
            family: FAMILY_V6,
            port: 80,
            uid: 1337,
            gid: 1337,
            addr,
        };
        assert_eq!(
            o.destination(),
            Some("10.77.0.10:80".parse().expect("socket address"))
        );
        assert_eq!(o.caller(), Some((1337, 1337)));
        assert!(o.check(RecordKind::FlowOpen).is_ok());
        assert!(SockOrigin::NONE.check(RecordKind::FlowOpen).is_ok());
        assert_eq!(SockOrigin::NONE.destination(), None);
        let both = SockOrigin {
            flags: ORIGIN_CONNECT | ORIGIN_PASSIVE,
            ..o
        };
        assert!(both.check(RecordKind::FlowOpen).is_err());
        let passive_with_family = SockOrigin {
            flags: ORIGIN_PASSIVE,
            ..o
        };
        assert!(passive_with_family.check(RecordKind::FlowOpen).is_err());
    }
}
