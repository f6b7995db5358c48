//! The flow table: one entry per socket cookie, created on a client's SYN or on the first
//! payload packet, updated per packet, emitted as a record on open and on close. The open
//! record carries what the socket-level programs learnt before (`SOCK_ORIGIN`: the
//! destination asked for, the caller, who opened the connection) and the socket's owner uid.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_socket_cookie, bpf_get_socket_uid, bpf_ktime_get_boot_ns, bpf_skb_cgroup_id,
    },
    programs::SkBuffContext,
};
use monitor_common::{
    Direction,
    counter::Counter,
    flow::{
        CloseReason, DIR_FIN, DIR_RST, DIR_SEQ_VALID, DirStats, FLOW_MIRRORED, FlowClose, FlowOpen,
        FlowState, FlowTuple, Initiator, PeerKey,
    },
    http::{ChunkKind, classify},
    record::{RecordHeader, RecordKind},
    sock::{ORIGIN_CONNECT, ORIGIN_PASSIVE, SockOrigin},
};

use crate::{
    http,
    maps::{EVENTS, FLOWS, LOCAL_PEERS, SOCK_ORIGIN, count, submit_flags},
    packet::{self, Segment},
};

/// Observes one packet: counts it, keeps the flow entry current, captures HTTP heads, and emits
/// open/close records. Never fails: anything unexpected is counted and the packet passes.
#[inline(always)]
pub fn observe(ctx: &SkBuffContext, dir: Direction) {
    count(Counter::Packets);
    let Some(seg) = packet::parse(ctx) else {
        count(Counter::NotTcp);
        return;
    };
    // SAFETY: `skb` is the program's context pointer, valid for this call.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    if cookie == 0 {
        return;
    }
    // SAFETY: as above.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let state = match FLOWS.get_ptr_mut(&cookie) {
        Some(p) => p,
        None => {
            // Only a client's SYN or a data packet starts tracking. Pure ACK/FIN/RST packets of
            // a flow already closed (or never seen) are not flows; SYN and SYN-ACK of a
            // listening socket are not either (the accepted socket has its own cookie).
            let client_syn = seg.syn && !seg.ack && matches!(dir, Direction::Egress);
            if !client_syn && seg.payload_len == 0 {
                return;
            }
            let mirrored = is_mirrored(ctx, dir, &seg);
            match open(ctx, dir, &seg, cookie, now, client_syn, mirrored) {
                Some(p) => p,
                None => return,
            }
        }
    };
    // SAFETY: `state` points into the map value for `cookie`, valid until the entry is deleted
    // below (after the last use).
    let st = unsafe { &mut *state };
    let d = &mut st.dir[dir.index()];
    add(&mut d.bytes, u64::from(seg.wire_len));
    add(&mut d.packets, 1);
    st.last_ns = now;
    if seg.payload_len > 0 {
        add(&mut d.payload_bytes, u64::from(seg.payload_len));
        let end = seg.seq.wrapping_add(seg.payload_len);
        // Serial-number arithmetic: only move `end_seq` forward (retransmissions don't).
        if d.flags & DIR_SEQ_VALID == 0 || (end.wrapping_sub(d.end_seq) as i32) > 0 {
            d.end_seq = end;
            d.flags |= DIR_SEQ_VALID;
        }
        if st.flags & FLOW_MIRRORED == 0 {
            http::capture(ctx, st, dir, &seg, cookie, now);
        }
    }
    let d = &mut st.dir[dir.index()];
    if seg.fin {
        d.flags |= DIR_FIN;
    }
    if seg.rst {
        d.flags |= DIR_RST;
    }
    let both_fin = st.dir[0].flags & DIR_FIN != 0 && st.dir[1].flags & DIR_FIN != 0;
    if seg.rst || both_fin {
        let reason = if seg.rst {
            CloseReason::Rst
        } else {
            CloseReason::Fin
        };
        if st.flags & FLOW_MIRRORED == 0 {
            close(st, cookie, now, reason);
        }
        let _ = FLOWS.remove(&cookie);
    }
}

/// Adds to a per-direction counter. Not atomic (the BPF target has no `fetch_add` in core):
/// each direction has its own fields, and one socket's packets in one direction are handled
/// one at a time (egress under the socket lock, ingress by the flow's receive CPU).
#[inline(always)]
fn add(field: &mut u64, v: u64) {
    *field = field.wrapping_add(v);
}

/// True for the server end of an exchange with a local monitored client: the first data
/// packet is an incoming HTTP request from an address in `LOCAL_PEERS`. A client socket never
/// receives a request first, so the client end is never mirrored and reports the exchange.
#[inline(always)]
fn is_mirrored(ctx: &SkBuffContext, dir: Direction, seg: &Segment) -> bool {
    if !matches!(dir, Direction::Ingress) || seg.payload_len < 8 {
        return false;
    }
    let first8 = ctx.load::<u64>(seg.payload_off as usize).unwrap_or(0);
    if classify(first8) != Some(ChunkKind::RequestStart) {
        return false;
    }
    let key = PeerKey {
        family: seg.family,
        _pad: [0; 3],
        addr: seg.src,
    };
    // SAFETY: plain lookup; the value is not used beyond its presence.
    unsafe { LOCAL_PEERS.get(&key) }.is_some()
}

/// Creates the flow entry and emits [`FlowOpen`] (unless mirrored). `None` (counted) if the
/// table is full.
#[inline(always)]
fn open(
    ctx: &SkBuffContext,
    dir: Direction,
    seg: &Segment,
    cookie: u64,
    now: u64,
    client_syn: bool,
    mirrored: bool,
) -> Option<*mut FlowState> {
    let (local_addr, remote_addr, local_port, remote_port) = match dir {
        Direction::Egress => (seg.src, seg.dst, seg.sport, seg.dport),
        Direction::Ingress => (seg.dst, seg.src, seg.dport, seg.sport),
    };
    // What the connect hook or sock_ops saw: copied into the open record, then deleted (it
    // has served its purpose). Only its flags are read here; the stack has no room for a copy.
    let origin = SOCK_ORIGIN.get_ptr(&cookie);
    // SAFETY: a map value pointer, valid for this run; a concurrent eviction at worst reads
    // stale or zeroed bytes, which the agent's decoder checks.
    let oflags = origin.map_or(0, |o| unsafe { (*o).flags });
    let initiator = if client_syn || oflags & ORIGIN_CONNECT != 0 {
        Initiator::Local
    } else if oflags & ORIGIN_PASSIVE != 0 {
        Initiator::Remote
    } else {
        Initiator::Unknown
    };
    let tuple = FlowTuple {
        family: seg.family,
        initiator: initiator as u8,
        _pad: [0; 2],
        local_port,
        remote_port,
        local_addr,
        remote_addr,
    };
    // SAFETY: `skb` is the program's context pointer.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let state = FlowState {
        tuple,
        cgroup_id,
        first_ns: now,
        last_ns: now,
        dir: [DirStats::default(); 2],
        cont_budget: [0; 2],
        flags: if mirrored { FLOW_MIRRORED } else { 0 },
        _pad: [0; 5],
    };
    // EEXIST means another CPU created it first: use theirs. Anything else is a full table.
    let inserted = FLOWS.insert(&cookie, &state, BPF_NOEXIST.into()).is_ok();
    if inserted && mirrored {
        count(Counter::Mirrored);
    } else if inserted {
        if let Some(mut e) = EVENTS.reserve::<FlowOpen>(0) {
            // SAFETY: `skb` is the program's context pointer.
            let uid = unsafe { bpf_get_socket_uid(ctx.skb.skb) };
            let r = e.as_mut_ptr();
            // SAFETY: `r` is the reserved record, ours until submitted; every field is written
            // (the record has no padding outside the fields' own `_pad`), field by field so
            // that no whole copy needs the stack.
            unsafe {
                (*r).hdr =
                    RecordHeader::new::<FlowOpen>(RecordKind::FlowOpen, now, cookie, cgroup_id);
                (*r).tuple = tuple;
                match origin {
                    Some(o) => (*r).origin = *o,
                    None => zero_origin(&mut (*r).origin),
                }
                (*r).uid = uid;
            }
            e.submit(submit_flags());
        } else {
            count(Counter::RingbufFull);
        }
    }
    if origin.is_some() {
        let _ = SOCK_ORIGIN.remove(&cookie);
    }
    let p = FLOWS.get_ptr_mut(&cookie);
    if p.is_none() {
        count(Counter::FlowTableFull);
    }
    p
}

/// "Nothing known", written in place (a constant would be copied from `.rodata`, one more map
/// for the verifier to resolve).
#[inline(always)]
fn zero_origin(o: &mut SockOrigin) {
    o.flags = 0;
    o.family = 0;
    o.port = 0;
    o.uid = 0;
    o.gid = 0;
    o.addr = [0; 16];
}

/// Emits [`FlowClose`] with the final counters.
#[inline(always)]
fn close(st: &FlowState, cookie: u64, now: u64, reason: CloseReason) {
    let Some(mut e) = EVENTS.reserve::<FlowClose>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    e.write(FlowClose {
        hdr: RecordHeader::new::<FlowClose>(RecordKind::FlowClose, now, cookie, st.cgroup_id),
        tuple: st.tuple,
        first_ns: st.first_ns,
        last_ns: st.last_ns,
        dir: st.dir,
        reason: reason as u8,
        _pad: [0; 7],
    });
    e.submit(submit_flags());
}
