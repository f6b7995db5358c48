//! Plain-old-data types shared by the kernel programs (`monitor-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]`, `Copy`, built from fixed-width integers with explicit
//! padding, and has its size asserted at compile time, so kernel and userspace agree on the
//! layout byte for byte. Each concept keeps its kernel view and its userspace decoder side by
//! side: [`record`] (the ring-buffer header), [`flow`] (the flow table and flow records),
//! [`http`] (captured HTTP head bytes), [`counter`] (per-CPU counters, losses among them),
//! [`quarantine`] (the quarantine set, drop statistics and blocked-attempt records) and
//! [`sock`] (what the connect and `sock_ops` programs learn about a socket before its first
//! packet: the destination the application asked for, the caller's uid/gid, who opened it).
#![cfg_attr(not(feature = "user"), no_std)]

/// Address family of a flow tuple or socket address: IPv4.
pub const FAMILY_V4: u8 = 4;
/// Address family of a flow tuple or socket address: IPv6.
pub const FAMILY_V6: u8 = 6;

pub mod counter;
pub mod flow;
pub mod header;
pub mod http;
pub mod quarantine;
pub mod record;
pub mod sock;

/// Name of the egress `cgroup_skb` program in the object file.
pub const PROG_EGRESS: &str = "monitor_egress";
/// Name of the ingress `cgroup_skb` program in the object file.
pub const PROG_INGRESS: &str = "monitor_ingress";

/// Traffic direction relative to the socket that owns the packet.
///
/// Stored as a `u8` in records (index into per-direction arrays): `0` egress, `1` ingress.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the local socket (client request on a client socket, response on a server socket).
    Egress = 0,
    /// Received by the local socket.
    Ingress = 1,
}

impl Direction {
    /// Index into `[T; 2]` per-direction arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The other direction.
    pub const fn opposite(self) -> Self {
        match self {
            Self::Egress => Self::Ingress,
            Self::Ingress => Self::Egress,
        }
    }

    /// Decodes the `u8` stored in records.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Egress),
            1 => Some(Self::Ingress),
            _ => None,
        }
    }
}
