//! Every map the programs use, in one place, plus the helpers that touch them generically.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use monitor_common::{
    counter::Counter,
    flow::{FLOWS_MAX, FlowState, LOCAL_PEERS_MAX, PeerKey},
    http::HttpChunk,
    quarantine::{QUARANTINE_MAX, QuarantineEntry, QuarantineStats},
    record::{RING_BYTES, WAKEUP_THRESHOLD},
    sock::{SOCK_ORIGIN_MAX, SockOrigin},
};

/// Records for the agent: flow open/close and HTTP chunks. Never one per packet.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// One HTTP chunk per CPU, built here and copied into [`EVENTS`] at its real length.
#[map]
pub static CHUNK_SCRATCH: PerCpuArray<HttpChunk> = PerCpuArray::with_max_entries(1, 0);

/// Flow table keyed by socket cookie. A plain hash (not LRU) so that a full table is counted
/// instead of silently evicting live flows; the agent sweeps idle entries.
#[map]
pub static FLOWS: HashMap<u64, FlowState> = HashMap::with_max_entries(FLOWS_MAX, 0);

/// Addresses of the local monitored pods, written by the agent (see `FLOW_MIRRORED`).
#[map]
pub static LOCAL_PEERS: HashMap<PeerKey, u8> = HashMap::with_max_entries(LOCAL_PEERS_MAX, 0);

/// What the connect and `sock_ops` programs learnt about a socket (by cookie) before its first
/// packet; read and deleted by the `cgroup_skb` programs when the flow opens. LRU: sockets
/// that never send a packet are evicted, not leaked.
#[map]
pub static SOCK_ORIGIN: LruHashMap<u64, SockOrigin> =
    LruHashMap::with_max_entries(SOCK_ORIGIN_MAX, 0);

/// "Any quarantine active" flag at index 0, written by the agent: non-zero while [`QUARANTINE`]
/// holds an entry. An array lookup the verifier inlines, so a node without quarantined pods
/// pays almost nothing for enforcement.
#[map]
pub static QUARANTINE_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Quarantined cgroups (cgroup v2 id → entry), written by the agent.
#[map]
pub static QUARANTINE: HashMap<u64, QuarantineEntry> = HashMap::with_max_entries(QUARANTINE_MAX, 0);

/// What was dropped per quarantined cgroup, per CPU. Entries are created (zeroed) by the agent
/// when it quarantines a cgroup; the programs only add to them.
#[map]
pub static QUARANTINE_STAT: PerCpuHashMap<u64, QuarantineStats> =
    PerCpuHashMap::with_max_entries(QUARANTINE_MAX, 0);

/// Per-CPU counters indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, valid for the program's run; no other writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Submit flags: no wakeup per record; force one once the unread backlog passes the threshold
/// so a slow timer can never let the buffer fill.
#[inline(always)]
pub fn submit_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA.into()) > WAKEUP_THRESHOLD {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}
