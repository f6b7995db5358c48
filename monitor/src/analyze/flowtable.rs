//! The kernel programs' work, done in user space over a capture: a flow table keyed by the
//! connection's addresses (the capture has no socket cookies), TCP segments put back in order
//! per direction, and the same records the kernel writes (flow open, HTTP head chunks, flow
//! close) with the same rules (`monitor-ebpf/src/flow.rs` and `http.rs`): a flow opens on a
//! client SYN or a data segment, a segment starting like an HTTP/1.x message is copied (at most
//! [`HTTP_CAPTURE`] bytes), and so are up to [`CONT_SEGMENTS`] following segments while the
//! head has not ended; a flow closes on a RST or FIN both ways.
//!
//! Reordering (the kernel sees a socket's segments in order; a capture may not): a segment
//! after a gap waits, at most [`Limits::reorder_segments`] per direction and
//! [`Limits::reorder_wait`] of capture time; a gap that is never filled is skipped and counted
//! (`missing-segment`). Retransmitted data is dropped and counted; a segment that overlaps
//! what was delivered gives only its new bytes.
//!
//! Memory is bounded: at most [`Limits::max_flows`] flows (more are counted as
//! `flow-table-full` and ignored, as in the kernel), each with at most
//! [`Limits::reorder_segments`] waiting segments of at most [`HTTP_CAPTURE`] bytes per
//! direction, and at most [`Limits::reorder_bytes`] waiting over all flows. Flows leave the table when they close, or when the pipeline's idle sweep closes
//! them.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use monitor_common::{
    Direction,
    flow::{
        CloseReason, DIR_FIN, DIR_RST, DIR_SEQ_VALID, DirStats, FlowClose, FlowOpen, FlowState,
        FlowTuple, Initiator,
    },
    http::{
        CONT_SEGMENTS, ChunkKind, HTTP_CAPTURE, HttpChunk, HttpChunkMeta, HttpChunkView, classify,
    },
    record::{
        RecordHeader, RecordKind,
        user::{DecodeError, Record as Raw},
    },
    sock::{NO_UID, SockOrigin},
};

use super::packet::Segment;
use monitor_agent::{conn::after, pipeline::LossCount, pipeline::Source, pipeline::SourceError};

/// Bounds of the flow table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Flows tracked at once.
    pub max_flows: usize,
    /// Out-of-order segments held per flow and direction.
    pub reorder_segments: usize,
    /// How long (capture time) a gap is waited on before it is skipped as missing.
    pub reorder_wait: Duration,
    /// Bytes held in out-of-order segments over all flows; past it, the flow adding more gives
    /// up its gaps.
    pub reorder_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_flows: 65_536,
            reorder_segments: 64,
            reorder_wait: Duration::from_secs(2),
            reorder_bytes: 64 << 20,
        }
    }
}

/// What the flow table counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP segments seen.
    pub segments: u64,
    /// Segments that arrived after a gap and waited for it.
    pub out_of_order: u64,
    /// Segments whose data had all been delivered already.
    pub retransmitted: u64,
    /// Gaps skipped because the missing data never came.
    pub missing_segments: u64,
    /// Bytes in those gaps.
    pub missing_bytes: u64,
    /// New flows ignored because the table was full.
    pub flow_table_full: u64,
    /// Flows opened.
    pub flows: u64,
    /// Frames whose headers could not be read (reported through
    /// [`FlowTable::note_undecodable`]).
    pub undecodable: u64,
}

/// A segment waiting for a gap before it to fill.
#[derive(Debug)]
struct Waiting {
    seq: u32,
    len: u32,
    /// Its first bytes (at most [`HTTP_CAPTURE`]).
    head: Vec<u8>,
    /// Its last four bytes, when captured.
    tail: Option<[u8; 4]>,
    ts_ns: u64,
}

/// One direction's order.
#[derive(Debug, Default)]
struct Order {
    /// Sequence number of the next byte to deliver.
    next: Option<u32>,
    /// Segments after a gap, in arrival order.
    waiting: Vec<Waiting>,
}

#[derive(Debug)]
struct Entry {
    cookie: u64,
    state: FlowState,
    order: [Order; 2],
}

/// Addresses and ports of both ends, the lower end first (a connection's key either way).
type Key = (u8, [u8; 16], u16, [u8; 16], u16);

fn key(s: &Segment<'_>) -> Key {
    if (s.src, s.sport) <= (s.dst, s.dport) {
        (s.family, s.src, s.sport, s.dst, s.dport)
    } else {
        (s.family, s.dst, s.dport, s.src, s.sport)
    }
}

/// A record the emulated kernel wrote.
#[derive(Debug)]
enum Event {
    Open(FlowOpen),
    Close(FlowClose),
    Chunk(HttpChunkMeta, Vec<u8>),
}

/// The emulated kernel side of one capture analysis.
#[derive(Debug, Default)]
pub struct FlowTable {
    limits: Limits,
    flows: HashMap<Key, Entry>,
    by_cookie: HashMap<u64, Key>,
    /// Flows with segments waiting on a gap.
    reordering: HashSet<Key>,
    next_cookie: u64,
    events: VecDeque<Event>,
    stats: Stats,
    /// Bytes held in waiting segments, over all flows.
    waiting_bytes: usize,
}

/// A segment's payload as delivered in order (possibly trimmed at the front).
struct Payload<'a> {
    seq: u32,
    len: u32,
    head: &'a [u8],
    tail: Option<[u8; 4]>,
    ts_ns: u64,
}

impl FlowTable {
    /// An empty table with these bounds.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            next_cookie: 1,
            ..Self::default()
        }
    }

    /// What was counted so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Flows tracked now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// A frame whose headers could not be read.
    pub fn note_undecodable(&mut self) {
        self.stats.undecodable += 1;
    }

    /// One TCP segment captured at `ts_ns` (Unix ns).
    pub fn segment(&mut self, ts_ns: u64, seg: &Segment<'_>) {
        self.stats.segments += 1;
        let k = key(seg);
        if !self.flows.contains_key(&k) && !self.open(k, ts_ns, seg) {
            return;
        }
        let Self {
            flows,
            events,
            stats,
            limits,
            reordering,
            waiting_bytes,
            ..
        } = self;
        let e = flows.get_mut(&k).expect("opened above");
        let held_before = held(e);
        let t = &e.state.tuple;
        let dir = if (seg.src, seg.sport) == (t.local_addr, t.local_port) {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let st = &mut e.state;
        let d = &mut st.dir[dir.index()];
        d.bytes = d.bytes.wrapping_add(u64::from(seg.wire_len));
        d.packets = d.packets.wrapping_add(1);
        st.last_ns = st.last_ns.max(ts_ns);
        if seg.syn && e.order[dir.index()].next.is_none() {
            e.order[dir.index()].next = Some(seg.seq.wrapping_add(1));
        }
        if seg.payload_len > 0 {
            let d = &mut e.state.dir[dir.index()];
            d.payload_bytes = d.payload_bytes.wrapping_add(u64::from(seg.payload_len));
            let end = seg.seq.wrapping_add(seg.payload_len);
            if d.flags & DIR_SEQ_VALID == 0 || after(end, d.end_seq) {
                d.end_seq = end;
                d.flags |= DIR_SEQ_VALID;
            }
            let whole = seg.payload.len() == seg.payload_len as usize;
            let tail = (whole && seg.payload.len() >= 4).then(|| {
                let n = seg.payload.len();
                [
                    seg.payload[n - 4],
                    seg.payload[n - 3],
                    seg.payload[n - 2],
                    seg.payload[n - 1],
                ]
            });
            let head = &seg.payload[..seg.payload.len().min(HTTP_CAPTURE)];
            order(
                e,
                dir,
                Payload {
                    seq: seg.seq,
                    len: seg.payload_len,
                    head,
                    tail,
                    ts_ns,
                },
                limits,
                stats,
                events,
            );
            *waiting_bytes = (*waiting_bytes + held(e)).saturating_sub(held_before);
            if *waiting_bytes > limits.reorder_bytes {
                // Over the global bound: this flow gives up waiting.
                let h = held(e);
                for d in [Direction::Egress, Direction::Ingress] {
                    skip_gaps(e, d, limits, stats, events, true);
                }
                *waiting_bytes = waiting_bytes.saturating_sub(h - held(e));
            }
            if e.order[dir.index()].waiting.is_empty() {
                reordering.remove(&k);
            } else {
                reordering.insert(k);
            }
        }
        let d = &mut e.state.dir[dir.index()];
        if seg.fin {
            d.flags |= DIR_FIN;
        }
        if seg.rst {
            d.flags |= DIR_RST;
        }
        let both_fin = e.state.dir[0].flags & DIR_FIN != 0 && e.state.dir[1].flags & DIR_FIN != 0;
        if seg.rst || both_fin {
            let reason = if seg.rst {
                CloseReason::Rst
            } else {
                CloseReason::Fin
            };
            self.close(k, ts_ns, reason);
        }
    }

    /// Skips gaps that have been waited on longer than [`Limits::reorder_wait`] at `now_ns`.
    pub fn expire_gaps(&mut self, now_ns: u64) {
        let wait = self.limits.reorder_wait.as_nanos() as u64;
        let keys: Vec<Key> = self.reordering.iter().copied().collect();
        for k in keys {
            let Some(e) = self.flows.get_mut(&k) else {
                self.reordering.remove(&k);
                continue;
            };
            let h = held(e);
            for dir in [Direction::Egress, Direction::Ingress] {
                let oldest = e.order[dir.index()].waiting.iter().map(|w| w.ts_ns).min();
                if oldest.is_some_and(|t| now_ns.saturating_sub(t) >= wait) {
                    skip_gaps(
                        e,
                        dir,
                        &self.limits,
                        &mut self.stats,
                        &mut self.events,
                        true,
                    );
                }
            }
            self.waiting_bytes = self.waiting_bytes.saturating_sub(h - held(e));
            if e.order.iter().all(|o| o.waiting.is_empty()) {
                self.reordering.remove(&k);
            }
        }
    }

    /// Creates the entry for a new flow, as the kernel would (`open` in flow.rs). Returns
    /// false when the segment does not open a flow.
    fn open(&mut self, k: Key, ts_ns: u64, seg: &Segment<'_>) -> bool {
        let client_syn = seg.syn && !seg.ack;
        // A SYN-ACK opens too (the kernel sees the client's SYN first; a capture that starts
        // between them still knows who the client is).
        let server_syn_ack = seg.syn && seg.ack;
        if !client_syn && !server_syn_ack && seg.payload_len == 0 {
            return false;
        }
        if self.flows.len() >= self.limits.max_flows {
            self.stats.flow_table_full += 1;
            return false;
        }
        // The local end is the client: the SYN's sender, else the SYN-ACK's receiver, else
        // (mid-connection) the end with the higher port, usually the ephemeral one.
        let src_is_client = if client_syn {
            true
        } else if server_syn_ack {
            false
        } else {
            seg.sport >= seg.dport
        };
        let (local_addr, local_port, remote_addr, remote_port) = if src_is_client {
            (seg.src, seg.sport, seg.dst, seg.dport)
        } else {
            (seg.dst, seg.dport, seg.src, seg.sport)
        };
        let tuple = FlowTuple {
            family: seg.family,
            initiator: if client_syn || server_syn_ack {
                Initiator::Local as u8
            } else {
                Initiator::Unknown as u8
            },
            _pad: [0; 2],
            local_port,
            remote_port,
            local_addr,
            remote_addr,
        };
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.stats.flows += 1;
        self.flows.insert(
            k,
            Entry {
                cookie,
                state: FlowState {
                    tuple,
                    cgroup_id: 0,
                    first_ns: ts_ns,
                    last_ns: ts_ns,
                    dir: [DirStats::default(); 2],
                    cont_budget: [0; 2],
                    flags: 0,
                    _pad: [0; 5],
                },
                order: Default::default(),
            },
        );
        self.by_cookie.insert(cookie, k);
        self.events.push_back(Event::Open(FlowOpen {
            hdr: RecordHeader::new::<FlowOpen>(RecordKind::FlowOpen, ts_ns, cookie, 0),
            tuple,
            // A capture has no sockets: no connect-time destination, no owner.
            origin: SockOrigin::NONE,
            uid: NO_UID,
        }));
        true
    }

    /// Delivers what waits (skipping gaps), writes the close record and forgets the flow.
    fn close(&mut self, k: Key, ts_ns: u64, reason: CloseReason) {
        let Some(mut e) = self.flows.remove(&k) else {
            return;
        };
        self.by_cookie.remove(&e.cookie);
        self.reordering.remove(&k);
        for dir in [Direction::Egress, Direction::Ingress] {
            skip_gaps(
                &mut e,
                dir,
                &self.limits,
                &mut self.stats,
                &mut self.events,
                true,
            );
        }
        let st = &e.state;
        self.events.push_back(Event::Close(FlowClose {
            hdr: RecordHeader::new::<FlowClose>(RecordKind::FlowClose, ts_ns, e.cookie, 0),
            tuple: st.tuple,
            first_ns: st.first_ns,
            last_ns: st.last_ns,
            dir: st.dir,
            reason: reason as u8,
            _pad: [0; 7],
        }));
    }
}

/// Bytes a flow holds in waiting segments (with a per-segment overhead).
fn held(e: &Entry) -> usize {
    e.order
        .iter()
        .flat_map(|o| &o.waiting)
        .map(|w| w.head.len() + std::mem::size_of::<Waiting>())
        .sum()
}

/// Puts one payload in order: delivered now if it is next, held if it follows a gap, trimmed
/// or dropped if (some of) its bytes were delivered already.
fn order(
    e: &mut Entry,
    dir: Direction,
    p: Payload<'_>,
    limits: &Limits,
    stats: &mut Stats,
    events: &mut VecDeque<Event>,
) {
    let o = &mut e.order[dir.index()];
    let next = *o.next.get_or_insert(p.seq);
    let end = p.seq.wrapping_add(p.len);
    if p.seq == next {
        deliver(e, dir, &p, events);
        deliver_ready(e, dir, stats, events);
    } else if after(p.seq, next) {
        if o.waiting.iter().any(|w| w.seq == p.seq) {
            stats.retransmitted += 1;
            return;
        }
        stats.out_of_order += 1;
        o.waiting.push(Waiting {
            seq: p.seq,
            len: p.len,
            head: p.head.to_vec(),
            tail: p.tail,
            ts_ns: p.ts_ns,
        });
        if o.waiting.len() > limits.reorder_segments {
            skip_gaps(e, dir, limits, stats, events, false);
        }
    } else if after(end, next) {
        // Overlaps what was delivered: only the new bytes count.
        stats.retransmitted += 1;
        let off = next.wrapping_sub(p.seq) as usize;
        let trimmed = Payload {
            seq: next,
            len: end.wrapping_sub(next),
            head: p.head.get(off..).unwrap_or(&[]),
            tail: p.tail,
            ts_ns: p.ts_ns,
        };
        deliver(e, dir, &trimmed, events);
        deliver_ready(e, dir, stats, events);
    } else {
        stats.retransmitted += 1;
    }
}

/// Delivers waiting segments that are next now (dropping those already covered).
fn deliver_ready(e: &mut Entry, dir: Direction, stats: &mut Stats, events: &mut VecDeque<Event>) {
    loop {
        let o = &mut e.order[dir.index()];
        let Some(next) = o.next else { return };
        // Covered entirely: a retransmission that arrived early.
        let before = o.waiting.len();
        o.waiting.retain(|w| after(w.seq.wrapping_add(w.len), next));
        stats.retransmitted += (before - o.waiting.len()) as u64;
        let Some(i) = o.waiting.iter().position(|w| !after(w.seq, next)) else {
            return;
        };
        let w = o.waiting.swap_remove(i);
        let off = next.wrapping_sub(w.seq) as usize;
        let p = Payload {
            seq: next,
            len: w.seq.wrapping_add(w.len).wrapping_sub(next),
            head: w.head.get(off..).unwrap_or(&[]),
            tail: w.tail,
            ts_ns: w.ts_ns,
        };
        deliver(e, dir, &p, events);
    }
}

/// Gives up on the gap before the earliest waiting segment (every gap with `all`), counting
/// it as missing, and delivers what follows it.
fn skip_gaps(
    e: &mut Entry,
    dir: Direction,
    limits: &Limits,
    stats: &mut Stats,
    events: &mut VecDeque<Event>,
    all: bool,
) {
    loop {
        let o = &mut e.order[dir.index()];
        let Some(next) = o.next else { return };
        let Some(first) = o
            .waiting
            .iter()
            .map(|w| w.seq)
            .min_by_key(|s| s.wrapping_sub(next))
        else {
            return;
        };
        stats.missing_segments += 1;
        stats.missing_bytes += u64::from(first.wrapping_sub(next));
        o.next = Some(first);
        deliver_ready(e, dir, stats, events);
        if !all && e.order[dir.index()].waiting.len() <= limits.reorder_segments {
            return;
        }
    }
}

/// The kernel's HTTP head capture (`capture` in http.rs) for one in-order payload.
fn deliver(e: &mut Entry, dir: Direction, p: &Payload<'_>, events: &mut VecDeque<Event>) {
    let o = &mut e.order[dir.index()];
    o.next = Some(p.seq.wrapping_add(p.len));
    let first8 = match p.head.get(..8) {
        Some(b) if p.len >= 8 => u64::from_le_bytes(b.try_into().expect("eight bytes")),
        _ => 0,
    };
    let budget = &mut e.state.cont_budget[dir.index()];
    let kind = match classify(first8) {
        Some(k) => k,
        None if *budget > 0 => {
            *budget -= 1;
            ChunkKind::Continuation
        }
        None => return,
    };
    // The head's end is visible only when the payload was captured whole.
    let ends_head = p.len >= 4 && p.tail == Some(*b"\r\n\r\n");
    if ends_head || p.len > HTTP_CAPTURE as u32 {
        *budget = 0;
    } else if kind != ChunkKind::Continuation {
        *budget = CONT_SEGMENTS;
    }
    // Less than the payload when the capture's snap length cut it: the head shows as truncated.
    let captured = p.head.len().min(p.len as usize).min(HTTP_CAPTURE);
    if captured == 0 {
        return;
    }
    let mut hdr =
        RecordHeader::new::<HttpChunk>(RecordKind::HttpChunk, p.ts_ns, e.cookie, e.state.cgroup_id);
    // As the kernel writes it: the fixed part and the captured bytes only.
    hdr.len = HttpChunk::wire_len(captured as u32);
    let meta = HttpChunkMeta {
        hdr,
        dir: dir as u8,
        chunk_kind: kind as u8,
        _pad: [0; 2],
        seq: p.seq,
        payload_len: p.len,
        captured: captured as u32,
    };
    events.push_back(Event::Chunk(meta, p.head[..captured].to_vec()));
}

impl Source for FlowTable {
    fn drain(&mut self, f: &mut dyn for<'a> FnMut(Result<Raw<'a>, DecodeError>)) {
        while let Some(ev) = self.events.pop_front() {
            match ev {
                Event::Open(o) => f(Ok(Raw::FlowOpen(o))),
                Event::Close(c) => f(Ok(Raw::FlowClose(c))),
                Event::Chunk(meta, data) => {
                    let (Some(dir), Some(chunk_kind)) = (
                        Direction::from_u8(meta.dir),
                        ChunkKind::from_u8(meta.chunk_kind),
                    ) else {
                        continue;
                    };
                    f(Ok(Raw::HttpChunk(HttpChunkView {
                        meta,
                        dir,
                        chunk_kind,
                        data: &data,
                    })));
                }
            }
        }
    }

    fn flow(&self, cookie: u64) -> Option<FlowState> {
        let k = self.by_cookie.get(&cookie)?;
        self.flows.get(k).map(|e| e.state)
    }

    fn flows(&self) -> Vec<(u64, FlowState)> {
        self.flows.values().map(|e| (e.cookie, e.state)).collect()
    }

    fn remove_flow(&mut self, cookie: u64) {
        if let Some(k) = self.by_cookie.remove(&cookie)
            && let Some(mut e) = self.flows.remove(&k)
        {
            // The pipeline closes the flow right after this: what still waits on a gap is not
            // delivered (it would arrive after the close), only counted.
            self.reordering.remove(&k);
            self.waiting_bytes = self.waiting_bytes.saturating_sub(held(&e));
            for o in &mut e.order {
                if !o.waiting.is_empty() {
                    self.stats.missing_segments += 1;
                    o.waiting.clear();
                }
            }
        }
    }

    fn losses(&self) -> Result<Vec<LossCount>, SourceError> {
        Ok(vec![
            ("capture", "missing-segment", self.stats.missing_segments),
            ("capture", "undecodable-packet", self.stats.undecodable),
            ("capture", "flow-table-full", self.stats.flow_table_full),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32, payload: &[u8], syn: bool) -> Segment<'_> {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        Segment {
            family: monitor_common::flow::FAMILY_V4,
            src,
            dst,
            sport: 40000,
            dport: 80,
            seq,
            wire_len: 40 + payload.len() as u32,
            payload_len: payload.len() as u32,
            payload,
            syn,
            ack: !syn,
            fin: false,
            rst: false,
        }
    }

    /// (kind, seq, bytes) of the chunks written so far.
    fn chunks(t: &mut FlowTable) -> Vec<(u8, u32, Vec<u8>)> {
        let mut v = Vec::new();
        t.drain(&mut |r| {
            if let Ok(Raw::HttpChunk(c)) = r {
                v.push((c.meta.chunk_kind, c.meta.seq, c.data.to_vec()));
            }
        });
        v
    }

    #[test]
    fn segments_are_delivered_in_order_and_overlaps_give_only_new_bytes() {
        let mut t = FlowTable::new(Limits::default());
        t.segment(1, &seg(99, b"", true));
        // A request head in two segments, the second captured first.
        t.segment(2, &seg(116, b"Host: x\r\n\r\n", false));
        t.segment(3, &seg(100, b"GET / HTTP/1.1\r\n", false));
        // Resent with new data after it: only the new bytes (a second request) count.
        t.segment(4, &seg(119, b"t: x\r\n\r\nGET /a HTTP/1.1\r\n\r\n", false));
        // Resent entirely: dropped.
        t.segment(5, &seg(100, b"GET / HTTP/1.1\r\n", false));
        assert_eq!(
            chunks(&mut t),
            [
                (
                    ChunkKind::RequestStart as u8,
                    100,
                    b"GET / HTTP/1.1\r\n".to_vec()
                ),
                (
                    ChunkKind::Continuation as u8,
                    116,
                    b"Host: x\r\n\r\n".to_vec()
                ),
                (
                    ChunkKind::RequestStart as u8,
                    127,
                    b"GET /a HTTP/1.1\r\n\r\n".to_vec()
                ),
            ]
        );
        let s = t.stats();
        assert_eq!(
            (s.out_of_order, s.retransmitted, s.missing_segments),
            (1, 2, 0)
        );
    }

    #[test]
    fn the_global_reorder_bound_gives_up_gaps() {
        let mut t = FlowTable::new(Limits {
            reorder_bytes: 4096,
            ..Limits::default()
        });
        t.segment(1, &seg(99, b"", true));
        // Data after a gap that never fills: held until the bound is passed.
        let data = [b'x'; 1000];
        for i in 0..8u32 {
            t.segment(2 + u64::from(i), &seg(2000 + i * 1000, &data, false));
        }
        let s = t.stats();
        assert_eq!(s.missing_segments, 1, "{s:?}");
        assert_eq!(s.missing_bytes, 2000 - 100, "{s:?}");
        assert!(t.waiting_bytes <= 4096, "{}", t.waiting_bytes);
    }
}
