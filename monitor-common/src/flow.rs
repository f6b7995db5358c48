//! The kernel flow table (keyed by socket cookie) and the flow open/close records.

use crate::{header::RecordHeader, sock::SockOrigin};

/// Name of the flow table map: socket cookie (`u64`) → [`FlowState`].
pub const MAP_FLOWS: &str = "FLOWS";
/// Capacity of the flow table. A full table is counted ([`crate::counter::Counter::FlowTableFull`]),
/// never silently evicted: the agent sweeps idle entries.
pub const FLOWS_MAX: u32 = 65_536;

pub use crate::{FAMILY_V4, FAMILY_V6};

/// Who opened the connection, as far as the kernel saw it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// Not known: the flow entry was created on a data packet of a socket the socket-level
    /// programs did not see connect or be accepted (it predates the agent, or they are not
    /// attached).
    Unknown = 0,
    /// The local socket opened the connection: the egress program saw its SYN, or the connect
    /// hook saw it call `connect()`. It is the client.
    Local = 1,
    /// The remote end opened the connection: `sock_ops` saw the local socket established
    /// passively (accepted by a listener). It is the server.
    Remote = 2,
}

/// Addresses and ports of a flow, from the local socket's point of view.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTuple {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// An [`Initiator`].
    pub initiator: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
    /// Local port, host byte order.
    pub local_port: u16,
    /// Remote port, host byte order.
    pub remote_port: u16,
    /// Local address in network byte order; IPv4 uses the first four bytes.
    pub local_addr: [u8; 16],
    /// Remote address in network byte order; IPv4 uses the first four bytes.
    pub remote_addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<FlowTuple>() == 40);

/// Per-direction counters of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DirStats {
    /// IP bytes (headers included).
    pub bytes: u64,
    /// Packets (a GSO super-packet counts once).
    pub packets: u64,
    /// TCP payload bytes, retransmissions included.
    pub payload_bytes: u64,
    /// Sequence number one past the highest payload byte seen (valid if `DIR_SEQ_VALID`).
    pub end_seq: u32,
    /// `DIR_*` flags.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<DirStats>() == 32);

/// [`DirStats::flags`]: `end_seq` holds a value.
pub const DIR_SEQ_VALID: u32 = 1;
/// [`DirStats::flags`]: a FIN was seen in this direction.
pub const DIR_FIN: u32 = 2;
/// [`DirStats::flags`]: a RST was seen in this direction.
pub const DIR_RST: u32 = 4;

/// Flow table value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowState {
    /// The flow's addresses.
    pub tuple: FlowTuple,
    /// cgroup id of the owning socket.
    pub cgroup_id: u64,
    /// First packet, boot-time ns.
    pub first_ns: u64,
    /// Last packet, boot-time ns.
    pub last_ns: u64,
    /// Indexed by [`crate::Direction::index`].
    pub dir: [DirStats; 2],
    /// Payload segments per direction still captured as HTTP head continuations.
    pub cont_budget: [u8; 2],
    /// `FLOW_*` flags.
    pub flags: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 5],
}

/// [`FlowState::flags`]: the server end of an exchange whose client is a local monitored pod.
/// Its first data packet was an incoming request from an address in [`MAP_LOCAL_PEERS`]; the
/// client's own socket reports the exchange, so this one captures no HTTP and emits no flow
/// records (it still counts bytes and packets).
pub const FLOW_MIRRORED: u8 = 1;

/// Name of the map of local monitored pods' addresses ([`PeerKey`] → `u8`), filled by the agent.
pub const MAP_LOCAL_PEERS: &str = "LOCAL_PEERS";
/// Capacity of [`MAP_LOCAL_PEERS`].
pub const LOCAL_PEERS_MAX: u32 = 4096;

/// Key of [`MAP_LOCAL_PEERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
    /// Address in network byte order; IPv4 in the first four bytes, the rest zero.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<PeerKey>() == 20);
const _: () = assert!(core::mem::size_of::<FlowState>() == 136);

/// Why a flow ended.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// FIN seen in both directions.
    Fin = 1,
    /// RST seen.
    Rst = 2,
    /// No packet for the agent's idle timeout (closed by the agent's sweep).
    Idle = 3,
    /// Still open when the agent stopped (reported by the agent, never by the kernel).
    AgentStopped = 4,
    /// Still open at the end of a capture file (`monitor analyze`; never the kernel).
    CaptureEnd = 5,
}

impl CloseReason {
    /// Stable name used in flow records.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Rst => "rst",
            Self::Idle => "idle",
            Self::AgentStopped => "agent-stopped",
            Self::CaptureEnd => "capture-end",
        }
    }

    /// Decodes the stored `u8`.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Fin),
            2 => Some(Self::Rst),
            3 => Some(Self::Idle),
            4 => Some(Self::AgentStopped),
            5 => Some(Self::CaptureEnd),
            _ => None,
        }
    }
}

/// Record: a flow table entry was created.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowOpen {
    /// Common header ([`crate::header::RecordKind::FlowOpen`]).
    pub hdr: RecordHeader,
    /// The flow's addresses as the packets carry them (after any NAT on this host).
    pub tuple: FlowTuple,
    /// What the socket-level programs saw before the first packet: the destination the
    /// application asked for and the caller's uid/gid (connect hook), or that the socket was
    /// accepted (`sock_ops`). All zero when they saw nothing.
    pub origin: SockOrigin,
    /// Owner uid of the socket (`bpf_get_socket_uid`: the uid that created it, or for an
    /// accepted socket the listener's creator); the overflow uid (65534) when the packet had
    /// no full socket.
    pub uid: u32,
}
const _: () = assert!(core::mem::size_of::<FlowOpen>() == 104);

/// Record: a flow ended in the kernel; carries the final counters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowClose {
    /// Common header ([`crate::header::RecordKind::FlowClose`]).
    pub hdr: RecordHeader,
    /// The flow's addresses.
    pub tuple: FlowTuple,
    /// First packet, boot-time ns.
    pub first_ns: u64,
    /// Last packet, boot-time ns.
    pub last_ns: u64,
    /// Final counters, indexed by [`crate::Direction::index`].
    pub dir: [DirStats; 2],
    /// A [`CloseReason`].
    pub reason: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<FlowClose>() == 160);

#[cfg(feature = "user")]
mod user {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::{FAMILY_V4, FAMILY_V6, FlowState, FlowTuple, Initiator};
    use crate::header::{DecodeError, RecordKind};

    // SAFETY: `#[repr(C)]`, fixed-width integers and explicit padding only.
    unsafe impl aya::Pod for FlowState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PeerKey {}

    impl super::PeerKey {
        /// The key of `ip`.
        pub fn new(ip: IpAddr) -> Self {
            let mut addr = [0u8; 16];
            let family = match ip {
                IpAddr::V4(v4) => {
                    addr[..4].copy_from_slice(&v4.octets());
                    FAMILY_V4
                }
                IpAddr::V6(v6) => {
                    addr = v6.octets();
                    FAMILY_V6
                }
            };
            Self {
                family,
                _pad: [0; 3],
                addr,
            }
        }
    }

    impl FlowTuple {
        /// Rejects values the kernel never writes.
        pub(crate) fn check(&self, kind: RecordKind) -> Result<(), DecodeError> {
            if self.family != FAMILY_V4 && self.family != FAMILY_V6 {
                return Err(DecodeError::Field {
                    kind,
                    field: "family",
                    value: u64::from(self.family),
                });
            }
            if self.initiator > Initiator::Remote as u8 {
                return Err(DecodeError::Field {
                    kind,
                    field: "initiator",
                    value: u64::from(self.initiator),
                });
            }
            Ok(())
        }

        fn addr(&self, raw: &[u8; 16]) -> IpAddr {
            if self.family == FAMILY_V4 {
                IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(*raw))
            }
        }

        /// The local address.
        pub fn local_ip(&self) -> IpAddr {
            self.addr(&self.local_addr)
        }

        /// The remote address.
        pub fn remote_ip(&self) -> IpAddr {
            self.addr(&self.remote_addr)
        }
    }
}
