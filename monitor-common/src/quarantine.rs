//! Quarantine enforcement: the agent names quarantined pods (by cgroup id), and in enforce mode
//! the kernel programs drop all of their traffic at the same `cgroup_skb` hooks, count what they
//! dropped, and write a [`QuarantineDrop`] record for every blocked connection attempt, so the
//! agent can attest the quarantine: since when, how many attempts were blocked, none escaped.
//!
//! The check runs before anything else in both programs. Its common case (no pod quarantined on
//! the node) is one lookup of [`MAP_QUARANTINE_ON`], an array the verifier inlines; only when
//! that flag is set do the programs look up the packet's cgroup in [`MAP_QUARANTINE`].
//! Every failure on the way (a missing flag, no cgroup, no entry, an unknown mode) passes the
//! packet; once a packet is known to belong to an enforced quarantine it is dropped whatever
//! happens to the accounting (a failed record reserve is counted as a ring-buffer loss).
//!
//! Kernel map names are limited to 15 bytes (`BPF_OBJ_NAME_LEN` with its NUL).

use crate::{flow::FlowTuple, header::RecordHeader};

/// Name of the quarantine set: cgroup v2 id (`u64`) → [`QuarantineEntry`], written by the agent.
pub const MAP_QUARANTINE: &str = "QUARANTINE";
/// Name of the "any quarantine active" flag: an array of one `u32`, non-zero while
/// [`MAP_QUARANTINE`] holds at least one entry (written by the agent).
pub const MAP_QUARANTINE_ON: &str = "QUARANTINE_ON";
/// Name of the per-CPU drop statistics: cgroup v2 id (`u64`) → [`QuarantineStats`].
/// The agent creates a zeroed entry when it quarantines a cgroup and deletes it when the
/// quarantine is lifted; the kernel only adds to it (and creates it if it is missing).
pub const MAP_QUARANTINE_STATS: &str = "QUARANTINE_STAT";
/// Capacity of [`MAP_QUARANTINE`] and [`MAP_QUARANTINE_STATS`] (quarantined pods per node).
pub const QUARANTINE_MAX: u32 = 1024;

/// [`QuarantineEntry::mode`]: drop every packet of the cgroup (enforce).
pub const MODE_ENFORCE: u8 = 1;
/// [`QuarantineEntry::mode`]: reserved (never written today); the kernel passes such packets.
pub const MODE_RESERVED: u8 = 0;

/// Value of [`MAP_QUARANTINE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// [`MODE_ENFORCE`]; any other value passes the traffic.
    pub mode: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 7],
    /// `CLOCK_BOOTTIME` ns when the agent put the cgroup in quarantine (the kernel's clock of
    /// record timestamps). Not read by the kernel; kept next to the entry it dates.
    pub since_ns: u64,
}
const _: () = assert!(core::mem::size_of::<QuarantineEntry>() == 16);

impl QuarantineEntry {
    /// An enforcing entry dated `since_ns`.
    pub const fn enforce(since_ns: u64) -> Self {
        Self {
            mode: MODE_ENFORCE,
            _pad: [0; 7],
            since_ns,
        }
    }
}

/// What was dropped in one direction for one quarantined cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QuarantineDirStats {
    /// Packets dropped (a GSO super-packet counts once).
    pub packets: u64,
    /// Bytes dropped, IP headers included (the skb length from the IP header on).
    pub bytes: u64,
    /// Blocked connection attempts: TCP SYNs without ACK dropped in this direction (sent by a
    /// quarantined socket on egress, arriving for a quarantined listener on ingress).
    /// Retransmitted SYNs count again.
    pub attempts: u64,
}
const _: () = assert!(core::mem::size_of::<QuarantineDirStats>() == 24);

/// Value of [`MAP_QUARANTINE_STATS`] (one per CPU; the agent sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QuarantineStats {
    /// Indexed by [`crate::Direction::index`].
    pub dir: [QuarantineDirStats; 2],
}
const _: () = assert!(core::mem::size_of::<QuarantineStats>() == 48);

impl QuarantineStats {
    /// Adds `other` to `self` (summing per-CPU values). Wraps, as the kernel's counters do.
    pub const fn merge(&mut self, other: &Self) {
        let mut i = 0;
        while i < 2 {
            let (a, b) = (&mut self.dir[i], &other.dir[i]);
            a.packets = a.packets.wrapping_add(b.packets);
            a.bytes = a.bytes.wrapping_add(b.bytes);
            a.attempts = a.attempts.wrapping_add(b.attempts);
            i += 1;
        }
    }

    /// Packets dropped in both directions.
    pub const fn packets(&self) -> u64 {
        self.dir[0].packets.wrapping_add(self.dir[1].packets)
    }

    /// Bytes dropped in both directions.
    pub const fn bytes(&self) -> u64 {
        self.dir[0].bytes.wrapping_add(self.dir[1].bytes)
    }

    /// Blocked connection attempts in both directions.
    pub const fn attempts(&self) -> u64 {
        self.dir[0].attempts.wrapping_add(self.dir[1].attempts)
    }
}

/// Record: a connection attempt of a quarantined cgroup was blocked (a SYN without ACK was
/// dropped). The header carries the cgroup id of the quarantined socket and its cookie (the
/// connecting socket on egress, the listener on ingress).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantineDrop {
    /// Common header ([`crate::header::RecordKind::QuarantineDrop`]).
    pub hdr: RecordHeader,
    /// Addresses and ports from the quarantined socket's point of view. `initiator` is
    /// [`crate::flow::Initiator::Local`] for an attempt sent by the quarantined pod (egress)
    /// and [`crate::flow::Initiator::Unknown`] for one arriving for it (ingress: the remote
    /// end initiated).
    pub tuple: FlowTuple,
    /// The [`crate::Direction`] the SYN was dropped in.
    pub dir: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<QuarantineDrop>() == 80);

#[cfg(feature = "user")]
mod user {
    use super::{QuarantineEntry, QuarantineStats};

    // SAFETY: `#[repr(C)]`, fixed-width integers and explicit padding only.
    unsafe impl aya::Pod for QuarantineEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for QuarantineStats {}
}
