//! Quarantine enforcement: drop every packet of a quarantined cgroup, count it, and record each
//! blocked connection attempt.
//!
//! Runs first in both programs, before any parsing. The common case (nobody quarantined on the
//! node) costs one inlined array lookup. Every failure before the verdict (flag missing or off,
//! no cgroup, no entry, a mode other than enforce) passes the packet to the normal path; once a
//! packet is known to belong to an enforced quarantine it is dropped, and failures of the
//! accounting after that (a missing stats entry, a full ring buffer) do not change the verdict.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_skb_cgroup_id},
    programs::SkBuffContext,
};
use monitor_common::{
    Direction,
    counter::Counter,
    flow::{FlowTuple, Initiator},
    quarantine::{MODE_ENFORCE, QuarantineDrop, QuarantineStats},
    record::{RecordHeader, RecordKind},
};

use crate::{
    maps::{EVENTS, QUARANTINE, QUARANTINE_ON, QUARANTINE_STAT, count, submit_flags},
    packet::{self, Segment},
};

/// True if the packet must be dropped: its socket's cgroup is quarantined in enforce mode.
/// The drop is then already counted (and recorded if it was a connection attempt).
#[inline(always)]
pub fn enforce(ctx: &SkBuffContext, dir: Direction) -> bool {
    // The common case: no quarantine on this node.
    match QUARANTINE_ON.get(0) {
        Some(on) if *on != 0 => {}
        _ => return false,
    }
    // SAFETY: `skb` is the program's context pointer, valid for this call.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    if cgroup_id == 0 {
        return false;
    }
    // SAFETY: only `mode` is read, right away; an entry deleted concurrently by the agent at
    // worst reads as the old or a zeroed (reserved, passing) mode.
    let Some(entry) = (unsafe { QUARANTINE.get(&cgroup_id) }) else {
        return false;
    };
    if entry.mode != MODE_ENFORCE {
        return false;
    }
    account(ctx, dir, cgroup_id);
    true
}

/// Counts a dropped packet of `cgroup_id`, and records it if it is a connection attempt (a SYN
/// without ACK: sent by the quarantined socket on egress, arriving for its listener on ingress).
#[inline(always)]
fn account(ctx: &SkBuffContext, dir: Direction, cgroup_id: u64) {
    count(Counter::QuarantineDropped);
    let attempt = match packet::parse(ctx) {
        Some(seg) if seg.syn && !seg.ack => Some(seg),
        _ => None,
    };
    let stats = match QUARANTINE_STAT.get_ptr_mut(&cgroup_id) {
        Some(p) => Some(p),
        None => {
            // The agent creates the entry before the quarantine; this only covers a race with
            // it. EEXIST (another CPU was first) is fine; a full map leaves the drop counted in
            // `Counter::QuarantineDropped` only.
            let _ =
                QUARANTINE_STAT.insert(&cgroup_id, &QuarantineStats::default(), BPF_NOEXIST.into());
            QUARANTINE_STAT.get_ptr_mut(&cgroup_id)
        }
    };
    if let Some(p) = stats {
        // SAFETY: this CPU's value of the entry, valid for the program's run; no other writer
        // on this CPU meanwhile.
        let d = unsafe { &mut (*p).dir[dir.index()] };
        d.packets = d.packets.wrapping_add(1);
        d.bytes = d.bytes.wrapping_add(u64::from(ctx.len()));
        if attempt.is_some() {
            d.attempts = d.attempts.wrapping_add(1);
        }
    }
    if let Some(seg) = attempt {
        record(ctx, dir, cgroup_id, &seg);
    }
}

/// Writes a [`QuarantineDrop`] for a blocked connection attempt.
#[inline(always)]
fn record(ctx: &SkBuffContext, dir: Direction, cgroup_id: u64, seg: &Segment) {
    let (local_addr, remote_addr, local_port, remote_port, initiator) = match dir {
        Direction::Egress => (seg.src, seg.dst, seg.sport, seg.dport, Initiator::Local),
        Direction::Ingress => (seg.dst, seg.src, seg.dport, seg.sport, Initiator::Unknown),
    };
    let Some(mut e) = EVENTS.reserve::<QuarantineDrop>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    // SAFETY: `skb` is the program's context pointer, valid for this call.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    e.write(QuarantineDrop {
        hdr: RecordHeader::new::<QuarantineDrop>(
            RecordKind::QuarantineDrop,
            now,
            cookie,
            cgroup_id,
        ),
        tuple: FlowTuple {
            family: seg.family,
            initiator: initiator as u8,
            _pad: [0; 2],
            local_port,
            remote_port,
            local_addr,
            remote_addr,
        },
        dir: dir as u8,
        _pad: [0; 7],
    });
    e.submit(submit_flags());
}
