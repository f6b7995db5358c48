//! Per-connection HTTP reassembly and request/response matching.
//!
//! Input: the kernel's records for one socket (flow open, HTTP chunks, flow close) and, for
//! connections waiting on a response body, the flow table's current sequence numbers.
//! Output: one [`Exchange`] per request (with its response, when there was one) and one
//! [`FlowSummary`] per closed flow, in order, plus [`AgentLoss`] notes for what could not be
//! reconstructed. Message sizes come from TCP sequence numbers: a message ends where the next
//! one in the same direction starts, where its declared length says, or where the flow ended.
//! HTTP/1.x answers requests in order, so responses pair with requests first-in first-out,
//! which covers keep-alive and pipelining.

use std::collections::{HashMap, VecDeque};

use monitor_common::{
    Direction,
    flow::{CloseReason, DIR_SEQ_VALID, DirStats, FlowTuple, Initiator},
    http::{ChunkKind, classify},
    sock::SockOrigin,
};

pub use monitor_record::exchange::{Completion, Observer};

use crate::{
    http, http::BodyLength, http::HeadError, http::Parsed, http::RequestHead, http::ResponseHead,
    http::response_has_no_body,
};

/// Requests waiting for a response on one connection beyond which the oldest is given up.
const MAX_PENDING: usize = 256;
/// Bytes kept while reassembling one head across segments.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serial-number comparison: `a` is after `b`.
pub fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What the agent knows about a flow.
#[derive(Debug, Clone)]
pub struct FlowInfo {
    /// Socket cookie.
    pub cookie: u64,
    /// cgroup id of the local socket.
    pub cgroup_id: u64,
    /// Addresses, from the open (or close) record.
    pub tuple: Option<FlowTuple>,
    /// What the socket-level programs saw before the first packet (from the open record;
    /// [`SockOrigin::NONE`] when nothing, or when the open record was lost).
    pub origin: SockOrigin,
    /// Owner uid of the socket, from the open record (`None` without one, or when the kernel
    /// had no full socket).
    pub uid: Option<u32>,
    /// First packet, boot-time ns.
    pub first_ns: u64,
}

/// One request and its response.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The flow it travelled on.
    pub flow: FlowInfo,
    /// Which end observed it.
    pub observer: Observer,
    /// The request head.
    pub request: RequestHead,
    /// The request head did not fit the capture; only its first line is certain.
    pub request_truncated: bool,
    /// When the request's first segment was seen, boot-time ns.
    pub request_ns: u64,
    /// Request body bytes: measured from sequence numbers, else as declared.
    pub request_body_bytes: Option<u64>,
    /// The response, if one was seen.
    pub response: Option<ResponseInfo>,
    /// How the exchange was completed.
    pub completion: Completion,
}

/// A response and its size.
#[derive(Debug, Clone)]
pub struct ResponseInfo {
    /// The response head.
    pub head: ResponseHead,
    /// The head did not fit the capture.
    pub truncated: bool,
    /// When the response's first segment was seen, boot-time ns.
    pub ns: u64,
    /// Head plus body bytes, from sequence numbers.
    pub bytes: Option<u64>,
    /// Body bytes (`bytes` minus the head), when the head length is known.
    pub body_bytes: Option<u64>,
}

/// A flow that ended, with its counters.
#[derive(Debug, Clone)]
pub struct FlowSummary {
    /// The flow.
    pub flow: FlowInfo,
    /// Which end the local socket was.
    pub observer: Observer,
    /// Final counters per [`Direction`].
    pub dir: [DirStats; 2],
    /// Last packet, boot-time ns.
    pub last_ns: u64,
    /// Why it ended.
    pub reason: CloseReason,
    /// HTTP exchanges seen on it.
    pub http_exchanges: u64,
}

/// Something the agent could not reconstruct; reported as a loss record, never dropped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentLoss {
    /// Bytes that looked like an HTTP head did not parse.
    InvalidHead,
    /// A head was larger than the capture; only its first line was kept.
    TruncatedHead,
    /// A response arrived with no request waiting for it.
    ResponseWithoutRequest,
    /// Too many requests awaited responses on one connection; the oldest was given up.
    PendingOverflow,
    /// A continuation segment was missing, so a head could not be completed.
    HeadGap,
}

impl AgentLoss {
    /// Stable kebab-case name used in loss records.
    pub const fn name(self) -> &'static str {
        match self {
            Self::InvalidHead => "http-invalid-head",
            Self::TruncatedHead => "http-head-truncated",
            Self::ResponseWithoutRequest => "http-response-without-request",
            Self::PendingOverflow => "http-pending-overflow",
            Self::HeadGap => "http-head-gap",
        }
    }
}

/// What the tracker produces.
#[derive(Debug, Clone)]
pub enum Output {
    /// A finished exchange.
    Exchange(Box<Exchange>),
    /// A finished flow.
    Flow(Box<FlowSummary>),
    /// A loss in the agent's reconstruction.
    Loss(AgentLoss),
}

/// A head being reassembled from one or more chunks.
#[derive(Debug)]
struct Assembly {
    kind: ChunkKind,
    /// Sequence number of `buf[0]`.
    start: u32,
    buf: Vec<u8>,
    /// Sequence number after the last byte of the last chunk.
    next: u32,
    /// Every chunk so far was captured whole, so `buf` is contiguous with `next`.
    whole: bool,
    /// Offset in `buf` of the head being parsed.
    pos: usize,
    ns: u64,
}

#[derive(Debug)]
struct Msg<H> {
    head: H,
    truncated: bool,
    start: u32,
    /// Sequence number after the message's last byte, once known.
    end: Option<u32>,
    /// The flow ended before the message's declared length arrived.
    cut: bool,
    ns: u64,
}

#[derive(Debug)]
struct Pending {
    req: Msg<RequestHead>,
    resp: Option<Msg<ResponseHead>>,
}

#[derive(Debug, Default)]
struct DirState {
    asm: Option<Assembly>,
    /// Highest message start seen (to ignore retransmitted starts).
    last_start: Option<u32>,
    /// Highest sequence number known to have been sent.
    known_end: Option<u32>,
    /// When `known_end` last moved, boot-time ns.
    moved_ns: u64,
}

#[derive(Debug)]
struct Conn {
    info: FlowInfo,
    dirs: [DirState; 2],
    pending: VecDeque<Pending>,
    req_dir: Option<Direction>,
    exchanges: u64,
    closed: bool,
    /// When the flow table was last read for this connection, boot-time ns.
    progress_ns: u64,
}

/// Tracks every connection the kernel reports.
#[derive(Debug, Default)]
pub struct Tracker {
    conns: HashMap<u64, Conn>,
    out: VecDeque<Output>,
}

impl Conn {
    fn new(cookie: u64, cgroup_id: u64, tuple: Option<FlowTuple>, first_ns: u64) -> Self {
        Self {
            info: FlowInfo {
                cookie,
                cgroup_id,
                tuple,
                origin: SockOrigin::NONE,
                uid: None,
                first_ns,
            },
            dirs: Default::default(),
            pending: VecDeque::new(),
            req_dir: None,
            exchanges: 0,
            closed: false,
            progress_ns: 0,
        }
    }

    /// Which end the local socket is: the side that sent the requests, else what the kernel
    /// says (it saw the SYN sent, `connect()` called or the connection accepted), and only when
    /// the kernel does not know (a socket older than the agent, a capture file) port order:
    /// the lower port is the server's.
    fn observer(&self) -> Observer {
        match self.req_dir {
            Some(Direction::Egress) => Observer::Client,
            Some(Direction::Ingress) => Observer::Server,
            None => match self.info.tuple {
                Some(t) if t.initiator == Initiator::Local as u8 => Observer::Client,
                Some(t) if t.initiator == Initiator::Remote as u8 => Observer::Server,
                Some(t) if t.local_port < t.remote_port => Observer::Server,
                Some(_) => Observer::Client,
                None => Observer::Client,
            },
        }
    }

    fn extend_known(&mut self, dir: Direction, end: u32, ns: u64) {
        let d = &mut self.dirs[dir.index()];
        if d.known_end.is_none_or(|k| after(end, k)) {
            d.known_end = Some(end);
            d.moved_ns = ns;
        }
    }

    /// A message starts at `seq` in `dir`: every earlier open message there ends at `seq`.
    fn note_start(&mut self, dir: Direction, seq: u32) {
        for p in &mut self.pending {
            if self.req_dir == Some(dir) {
                if p.req.end.is_none() && after(seq, p.req.start) {
                    p.req.end = Some(seq);
                }
            } else if let Some(r) = &mut p.resp
                && r.end.is_none()
                && after(seq, r.start)
            {
                r.end = Some(seq);
            }
        }
    }
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections currently tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// A flow open record: its addresses, what the socket-level programs saw (`origin`) and
    /// the socket's owner uid (`None` if unknown).
    pub fn on_open(
        &mut self,
        cookie: u64,
        cgroup_id: u64,
        tuple: FlowTuple,
        (origin, uid): (SockOrigin, Option<u32>),
        ns: u64,
    ) {
        let c = self
            .conns
            .entry(cookie)
            .or_insert_with(|| Conn::new(cookie, cgroup_id, None, ns));
        c.info.tuple = Some(tuple);
        c.info.origin = origin;
        c.info.uid = uid;
        c.info.first_ns = c.info.first_ns.min(ns);
    }

    /// An HTTP chunk record.
    #[expect(clippy::too_many_arguments, reason = "mirrors the record's fields")]
    pub fn on_chunk(
        &mut self,
        cookie: u64,
        cgroup_id: u64,
        dir: Direction,
        kind: ChunkKind,
        seq: u32,
        payload_len: u32,
        data: &[u8],
        ns: u64,
    ) {
        let out = &mut self.out;
        let c = self
            .conns
            .entry(cookie)
            .or_insert_with(|| Conn::new(cookie, cgroup_id, None, ns));
        c.extend_known(dir, seq.wrapping_add(payload_len), ns);
        let whole = data.len() == payload_len as usize;
        match kind {
            ChunkKind::RequestStart | ChunkKind::ResponseStart => {
                let d = &mut c.dirs[dir.index()];
                if d.last_start.is_some_and(|l| !after(seq, l)) {
                    return; // retransmission of a start already seen
                }
                d.last_start = Some(seq);
                if let Some(old) = d.asm.take() {
                    finish_truncated(c, dir, old, out);
                }
                c.note_start(dir, seq);
                c.dirs[dir.index()].asm = Some(Assembly {
                    kind,
                    start: seq,
                    buf: data.to_vec(),
                    next: seq.wrapping_add(payload_len),
                    whole,
                    pos: 0,
                    ns,
                });
            }
            ChunkKind::Continuation => {
                let d = &mut c.dirs[dir.index()];
                let Some(asm) = &mut d.asm else { return };
                if seq != asm.next {
                    if after(seq, asm.next) {
                        let old = d.asm.take().expect("checked above");
                        out.push_back(Output::Loss(AgentLoss::HeadGap));
                        finish_truncated(c, dir, old, out);
                    }
                    return; // an overlap is a retransmission
                }
                if !asm.whole || asm.buf.len() + data.len() > MAX_HEAD_BYTES {
                    return;
                }
                asm.buf.extend_from_slice(data);
                asm.next = seq.wrapping_add(payload_len);
                asm.whole = whole;
            }
        }
        parse_assembly(c, dir, out);
        complete_ready(c, out, false);
    }

    /// Current end sequence numbers from the flow table (for connections awaiting a body).
    pub fn on_progress(&mut self, cookie: u64, dir: [DirStats; 2], ns: u64) {
        let out = &mut self.out;
        if let Some(c) = self.conns.get_mut(&cookie) {
            for d in [Direction::Egress, Direction::Ingress] {
                let s = dir[d.index()];
                if s.flags & DIR_SEQ_VALID != 0 {
                    c.extend_known(d, s.end_seq, ns);
                }
            }
            c.progress_ns = c.progress_ns.max(ns);
            complete_ready(c, out, false);
        }
    }

    /// A flow close record (or the agent's own close of an idle or leftover flow).
    pub fn on_close(
        &mut self,
        cookie: u64,
        cgroup_id: u64,
        tuple: FlowTuple,
        dir: [DirStats; 2],
        last_ns: u64,
        reason: CloseReason,
    ) {
        let ns = last_ns;
        let out = &mut self.out;
        let mut c = self
            .conns
            .remove(&cookie)
            .unwrap_or_else(|| Conn::new(cookie, cgroup_id, Some(tuple), ns));
        c.info.tuple.get_or_insert(tuple);
        for d in [Direction::Egress, Direction::Ingress] {
            if let Some(asm) = c.dirs[d.index()].asm.take() {
                finish_truncated(&mut c, d, asm, out);
            }
            let s = dir[d.index()];
            if s.flags & DIR_SEQ_VALID != 0 {
                c.extend_known(d, s.end_seq, ns);
            }
        }
        c.closed = true;
        complete_ready(&mut c, out, true);
        let observer = c.observer();
        out.push_back(Output::Flow(Box::new(FlowSummary {
            observer,
            dir,
            last_ns,
            reason,
            http_exchanges: c.exchanges,
            flow: c.info,
        })));
    }

    /// Cookies of connections with a response waiting for its body, so the caller can look up
    /// their flow table entry and call [`Tracker::on_progress`].
    pub fn awaiting_body(&self) -> impl Iterator<Item = u64> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| c.pending.front().is_some_and(|p| p.resp.is_some()))
            .map(|(k, _)| *k)
    }

    /// Gives up waiting on response bodies that stopped growing `quiet_ns` ago (a chunked or
    /// unterminated body on a connection that stays open): they are reported as
    /// [`Completion::Partial`] with the bytes seen.
    pub fn expire_quiet(&mut self, now_ns: u64, quiet_ns: u64) {
        let out = &mut self.out;
        for c in self.conns.values_mut() {
            let Some(resp_dir) = c.req_dir.map(Direction::opposite) else {
                continue;
            };
            let quiet = now_ns.saturating_sub(c.dirs[resp_dir.index()].moved_ns) > quiet_ns;
            if quiet && c.pending.front().is_some_and(|p| p.resp.is_some()) {
                emit_front(c, out, Completion::Partial);
                complete_ready(c, out, false);
            }
        }
    }

    /// Reports everything still in flight (agent stopping): pending exchanges as partial or
    /// unanswered. Flows still open are left to the caller, which knows their counters.
    pub fn flush_pending(&mut self) {
        let out = &mut self.out;
        for c in self.conns.values_mut() {
            for d in [Direction::Egress, Direction::Ingress] {
                if let Some(asm) = c.dirs[d.index()].asm.take() {
                    finish_truncated(c, d, asm, out);
                }
            }
            complete_ready(c, out, false);
            while let Some(p) = c.pending.front() {
                let how = if p.resp.is_some() {
                    Completion::Partial
                } else {
                    Completion::NoResponse
                };
                emit_front(c, out, how);
            }
        }
    }

    /// Takes the outputs produced so far, in order.
    pub fn drain(&mut self) -> impl Iterator<Item = Output> + '_ {
        self.out.drain(..)
    }
}

/// Parses every complete head in the assembly (several when messages were coalesced into one
/// segment, as with pipelining), dispatching each.
fn parse_assembly(c: &mut Conn, dir: Direction, out: &mut VecDeque<Output>) {
    loop {
        let Some(asm) = &c.dirs[dir.index()].asm else {
            return;
        };
        let bytes = &asm.buf[asm.pos..];
        let seq = asm.start.wrapping_add(asm.pos as u32);
        let ns = asm.ns;
        let res = match asm.kind {
            ChunkKind::ResponseStart => http::parse_response(bytes).map(|p| match p {
                Parsed::Complete(h) => Parsed::Complete(Head::Resp(h)),
                Parsed::Partial => Parsed::Partial,
            }),
            _ => http::parse_request(bytes).map(|p| match p {
                Parsed::Complete(h) => Parsed::Complete(Head::Req(h)),
                Parsed::Partial => Parsed::Partial,
            }),
        };
        match res {
            Ok(Parsed::Complete(head)) => {
                let head_len = head.head_len();
                let body = head.body_len(c, dir);
                let asm = c.dirs[dir.index()].asm.as_mut().expect("checked above");
                let end_pos = body
                    .and_then(|b| asm.pos.checked_add(head_len)?.checked_add(b))
                    .filter(|&e| e <= asm.buf.len());
                let rest_starts_message = end_pos.is_some_and(|e| {
                    e + 8 <= asm.buf.len() && {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&asm.buf[e..e + 8]);
                        classify(u64::from_le_bytes(b)).is_some()
                    }
                });
                if rest_starts_message {
                    asm.pos = end_pos.expect("checked above");
                } else {
                    c.dirs[dir.index()].asm = None;
                }
                dispatch(c, dir, head, false, seq, ns, out);
                if rest_starts_message {
                    let next = c.dirs[dir.index()]
                        .asm
                        .as_ref()
                        .map(|a| a.start.wrapping_add(a.pos as u32));
                    if let Some(next) = next {
                        c.note_start(dir, next);
                    }
                    continue;
                }
                return;
            }
            Ok(Parsed::Partial) => {
                // Wait for a continuation, unless the capture was cut short or grew too big.
                let asm = c.dirs[dir.index()].asm.as_ref().expect("checked above");
                if !asm.whole || asm.buf.len() >= MAX_HEAD_BYTES {
                    let asm = c.dirs[dir.index()].asm.take().expect("checked above");
                    finish_truncated(c, dir, asm, out);
                }
                return;
            }
            Err(HeadError::Invalid(_) | HeadError::TooManyHeaders) => {
                c.dirs[dir.index()].asm = None;
                out.push_back(Output::Loss(AgentLoss::InvalidHead));
                return;
            }
        }
    }
}

/// A head that will not complete: keep what its first line says, and report the truncation.
fn finish_truncated(c: &mut Conn, dir: Direction, asm: Assembly, out: &mut VecDeque<Output>) {
    let bytes = &asm.buf[asm.pos..];
    let seq = asm.start.wrapping_add(asm.pos as u32);
    let head = match asm.kind {
        ChunkKind::ResponseStart => http::parse_truncated_response(bytes).map(Head::Resp),
        _ => http::parse_truncated_request(bytes).map(Head::Req),
    };
    match head {
        Some(h) => {
            out.push_back(Output::Loss(AgentLoss::TruncatedHead));
            dispatch(c, dir, h, true, seq, asm.ns, out);
        }
        None => out.push_back(Output::Loss(AgentLoss::InvalidHead)),
    }
}

enum Head {
    Req(RequestHead),
    Resp(ResponseHead),
}

impl Head {
    fn head_len(&self) -> usize {
        match self {
            Self::Req(h) => h.head_len.unwrap_or(0),
            Self::Resp(h) => h.head_len.unwrap_or(0),
        }
    }

    /// Body bytes that follow the head, when the head alone says.
    fn body_len(&self, c: &Conn, dir: Direction) -> Option<usize> {
        let body = match self {
            Self::Req(h) => match h.body {
                BodyLength::Unspecified => return Some(0),
                b => b,
            },
            Self::Resp(h) => {
                let method = (c.req_dir == Some(dir.opposite()))
                    .then(|| c.pending.iter().find(|p| p.resp.is_none()))
                    .flatten()
                    .map(|p| p.req.head.method.as_str());
                if method.is_some_and(|m| response_has_no_body(m, h.status)) {
                    return Some(0);
                }
                h.body
            }
        };
        match body {
            BodyLength::Declared(n) => usize::try_from(n).ok(),
            _ => None,
        }
    }
}

fn dispatch(
    c: &mut Conn,
    dir: Direction,
    head: Head,
    truncated: bool,
    seq: u32,
    ns: u64,
    out: &mut VecDeque<Output>,
) {
    match head {
        Head::Req(head) => {
            if *c.req_dir.get_or_insert(dir) != dir {
                // Requests both ways on one socket: not HTTP/1.x client/server traffic.
                out.push_back(Output::Loss(AgentLoss::InvalidHead));
                return;
            }
            if c.pending.len() >= MAX_PENDING {
                out.push_back(Output::Loss(AgentLoss::PendingOverflow));
                emit_front(c, out, Completion::NoResponse);
            }
            c.pending.push_back(Pending {
                req: Msg {
                    head,
                    truncated,
                    start: seq,
                    end: None,
                    cut: false,
                    ns,
                },
                resp: None,
            });
        }
        Head::Resp(head) => {
            // Interim responses (100 Continue, 103) do not answer the request.
            if (100..200).contains(&head.status) && head.status != 101 {
                return;
            }
            match c.pending.iter_mut().find(|p| p.resp.is_none()) {
                Some(p) => {
                    p.resp = Some(Msg {
                        head,
                        truncated,
                        start: seq,
                        end: None,
                        cut: false,
                        ns,
                    })
                }
                None => out.push_back(Output::Loss(AgentLoss::ResponseWithoutRequest)),
            }
        }
    }
}

/// Emits, in order, every exchange at the front whose response end is known. `closed`: the flow
/// ended, so every sent byte is known.
fn complete_ready(c: &mut Conn, out: &mut VecDeque<Output>, closed: bool) {
    loop {
        let Some(p) = c.pending.front_mut() else {
            return;
        };
        let Some(resp_dir) = c.req_dir.map(Direction::opposite) else {
            return;
        };
        let known = c.dirs[resp_dir.index()].known_end;
        let progress_ns = c.progress_ns;
        let Some(r) = &mut p.resp else {
            if closed {
                emit_front(c, out, Completion::NoResponse);
                continue;
            }
            return;
        };
        if r.end.is_none() {
            let head_len = r.head.head_len;
            let no_body = response_has_no_body(&p.req.head.method, r.head.status);
            let declared_end = match (head_len, r.head.body) {
                (Some(h), _) if no_body => Some(r.start.wrapping_add(h as u32)),
                (Some(h), BodyLength::Declared(n)) => u32::try_from(n)
                    .ok()
                    .map(|n| r.start.wrapping_add(h as u32).wrapping_add(n)),
                _ => None,
            };
            r.end = match declared_end {
                Some(e) if known.is_some_and(|k| !after(e, k)) => Some(e),
                // The flow ended before the declared length arrived: cut off (e.g. the client
                // closed with the response in flight).
                Some(_) if closed => {
                    r.cut = true;
                    known
                }
                // No declared length (chunked or until-close): the close delimits it.
                None if closed => known,
                _ => None,
            };
        }
        let how = if r.cut {
            Completion::Partial
        } else {
            Completion::Complete
        };
        if r.end.is_none() {
            return;
        }
        // A chunked request body not bounded by a next request is only known once the flow
        // table has been read after the response (the server answered, so the body is in).
        let unbounded = matches!(p.req.head.body, BodyLength::Chunked) && p.req.end.is_none();
        if unbounded && !closed && progress_ns <= r.ns {
            return;
        }
        emit_front(c, out, how);
    }
}

/// Emits the front exchange with what is known of it.
fn emit_front(c: &mut Conn, out: &mut VecDeque<Output>, how: Completion) {
    let Some(p) = c.pending.pop_front() else {
        return;
    };
    let req_dir = c.req_dir.unwrap_or(Direction::Egress);
    let req_known = c.dirs[req_dir.index()].known_end;
    let resp_known = c.dirs[req_dir.opposite().index()].known_end;
    // Measured when the next request's start bounds this one; otherwise trust the declared
    // length (the flow table's end is only a lower bound while the flow is open).
    let req_head_len = p.req.head.head_len;
    let measured = |e: u32| {
        let h = req_head_len? as u64;
        u64::from(e.wrapping_sub(p.req.start)).checked_sub(h)
    };
    let request_body_bytes = match (p.req.end, p.req.head.body) {
        (Some(e), _) => measured(e),
        (None, BodyLength::Declared(n)) => Some(n),
        (None, BodyLength::Unspecified) => Some(0),
        (None, BodyLength::Chunked) => req_known.and_then(measured),
    };
    let response = p.resp.map(|r| {
        let end = r.end.or(resp_known);
        let bytes = end
            .filter(|&e| !after(r.start, e))
            .map(|e| u64::from(e.wrapping_sub(r.start)));
        let body_bytes = match (bytes, r.head.head_len) {
            (Some(b), Some(h)) => b.checked_sub(h as u64),
            _ => None,
        };
        ResponseInfo {
            head: r.head,
            truncated: r.truncated,
            ns: r.ns,
            bytes,
            body_bytes,
        }
    });
    c.exchanges += 1;
    out.push_back(Output::Exchange(Box::new(Exchange {
        flow: c.info.clone(),
        observer: c.observer(),
        request: p.req.head,
        request_truncated: p.req.truncated,
        request_ns: p.req.ns,
        request_body_bytes,
        response,
        completion: how,
    })));
}

#[cfg(test)]
mod tests {
    use monitor_common::flow::{DIR_FIN, FAMILY_V4};

    use super::*;

    const C: u64 = 7;

    fn tuple() -> FlowTuple {
        FlowTuple {
            family: FAMILY_V4,
            initiator: Initiator::Local as u8,
            _pad: [0; 2],
            local_port: 40000,
            remote_port: 80,
            local_addr: [10, 77, 0, 21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [10, 77, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    /// A client-side connection: requests go out (egress), responses come in (ingress).
    struct Sim {
        t: Tracker,
        seq: [u32; 2],
        ns: u64,
    }

    impl Sim {
        fn new() -> Self {
            let mut t = Tracker::new();
            t.on_open(C, 1, tuple(), (SockOrigin::NONE, None), 1);
            Self {
                t,
                seq: [1000, 5_000_000],
                ns: 1,
            }
        }

        /// Sends `payload` as one segment, captured up to `cap` bytes.
        fn send(&mut self, dir: Direction, payload: &[u8], cap: usize) {
            self.ns += 1;
            let first8 = {
                let mut b = [0u8; 8];
                let n = payload.len().min(8);
                b[..n].copy_from_slice(&payload[..n]);
                u64::from_le_bytes(b)
            };
            let seq = self.seq[dir.index()];
            self.seq[dir.index()] = seq.wrapping_add(payload.len() as u32);
            let kind = classify(first8).unwrap_or(ChunkKind::Continuation);
            let n = payload.len().min(cap);
            self.t.on_chunk(
                C,
                1,
                dir,
                kind,
                seq,
                payload.len() as u32,
                &payload[..n],
                self.ns,
            );
        }

        /// A segment the kernel did not capture (body bytes): only sequence numbers move.
        fn send_uncaptured(&mut self, dir: Direction, len: u32) {
            self.seq[dir.index()] = self.seq[dir.index()].wrapping_add(len);
        }

        fn stats(&self) -> [DirStats; 2] {
            let mut d = [DirStats::default(); 2];
            for (i, s) in d.iter_mut().enumerate() {
                s.end_seq = self.seq[i];
                s.flags = DIR_SEQ_VALID | DIR_FIN;
            }
            d
        }

        fn close(&mut self) {
            let st = self.stats();
            self.t
                .on_close(C, 1, tuple(), st, self.ns, CloseReason::Fin);
        }

        fn outputs(&mut self) -> Vec<Output> {
            self.t.drain().collect()
        }
    }

    fn exchanges(outs: &[Output]) -> Vec<&Exchange> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Exchange(e) => Some(&**e),
                _ => None,
            })
            .collect()
    }

    fn losses(outs: &[Output]) -> Vec<AgentLoss> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Loss(l) => Some(*l),
                _ => None,
            })
            .collect()
    }

    fn resp(body: usize) -> Vec<u8> {
        let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {body}\r\n\r\n").into_bytes();
        v.extend(std::iter::repeat_n(b'x', body));
        v
    }

    const E: Direction = Direction::Egress;
    const I: Direction = Direction::Ingress;

    #[test]
    fn one_get_with_query_completes_on_content_length() {
        let mut s = Sim::new();
        s.send(E, b"GET /a?x=1&y=2 HTTP/1.1\r\nHost: web\r\n\r\n", 2048);
        s.send(I, &resp(100), 2048);
        let outs = s.outputs();
        let ex = exchanges(&outs);
        assert_eq!(ex.len(), 1, "{outs:?}");
        let e = ex[0];
        assert_eq!(e.request.target, "/a?x=1&y=2");
        assert_eq!(e.observer, Observer::Client);
        let r = e.response.as_ref().unwrap();
        assert_eq!(r.head.status, 200);
        assert_eq!(r.body_bytes, Some(100));
        assert_eq!(e.completion, Completion::Complete);
        s.close();
        let outs = s.outputs();
        assert!(matches!(&outs[..], [Output::Flow(f)] if f.http_exchanges == 1));
    }

    #[test]
    fn keep_alive_twenty_requests_in_order() {
        let mut s = Sim::new();
        for i in 0..20 {
            s.send(
                E,
                format!("GET /r{i} HTTP/1.1\r\nHost: w\r\n\r\n").as_bytes(),
                2048,
            );
            s.send(I, &resp(10 + i), 2048);
        }
        s.close();
        let outs = s.outputs();
        let ex = exchanges(&outs);
        assert_eq!(ex.len(), 20);
        for (i, e) in ex.iter().enumerate() {
            assert_eq!(e.request.target, format!("/r{i}"));
            assert_eq!(e.response.as_ref().unwrap().body_bytes, Some(10 + i as u64));
        }
        assert!(losses(&outs).is_empty());
    }

    #[test]
    fn pipelined_requests_and_coalesced_responses() {
        let mut s = Sim::new();
        s.send(
            E,
            b"GET /1 HTTP/1.1\r\nHost: w\r\n\r\nGET /2 HTTP/1.1\r\nHost: w\r\n\r\nGET /3 HTTP/1.1\r\nHost: w\r\n\r\n",
            2048,
        );
        let mut r = resp(5);
        r.extend(resp(6));
        s.send(I, &r, 2048);
        s.send(I, &resp(7), 2048);
        let outs = s.outputs();
        let ex = exchanges(&outs);
        let got: Vec<_> = ex
            .iter()
            .map(|e| {
                (
                    e.request.target.clone(),
                    e.response.as_ref().unwrap().body_bytes,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/1".to_owned(), Some(5)),
                ("/2".to_owned(), Some(6)),
                ("/3".to_owned(), Some(7))
            ]
        );
    }

    #[test]
    fn large_body_attributed_by_sequence_numbers() {
        let mut s = Sim::new();
        s.send(E, b"GET /chunked HTTP/1.1\r\nHost: w\r\n\r\n", 2048);
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        s.send(I, head, 2048);
        s.send_uncaptured(I, 1_048_576 + 700);
        // Nothing is known yet: a chunked body ends with the flow here.
        assert!(exchanges(&s.outputs()).is_empty());
        s.close();
        let outs = s.outputs();
        let ex = exchanges(&outs);
        assert_eq!(ex.len(), 1);
        assert_eq!(
            ex[0].response.as_ref().unwrap().body_bytes,
            Some(1_048_576 + 700)
        );
    }

    #[test]
    fn content_length_body_completes_from_flow_table_progress() {
        let mut s = Sim::new();
        s.send(E, b"GET /big HTTP/1.1\r\nHost: w\r\n\r\n", 2048);
        s.send(I, b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n", 2048);
        s.send_uncaptured(I, 40_000);
        s.t.on_progress(C, s.stats(), 10);
        assert!(exchanges(&s.outputs()).is_empty());
        assert_eq!(s.t.awaiting_body().collect::<Vec<_>>(), [C]);
        s.send_uncaptured(I, 10_000);
        s.t.on_progress(C, s.stats(), 11);
        let outs = s.outputs();
        assert_eq!(
            exchanges(&outs)[0].response.as_ref().unwrap().body_bytes,
            Some(50_000)
        );
    }

    #[test]
    fn head_split_across_segments() {
        let mut s = Sim::new();
        s.send(E, b"GET /split?q=1 HTTP/1.1\r\nHo", 2048);
        s.send(E, b"st: web\r\nAccept: */*\r\n\r\n", 2048);
        s.send(I, &resp(3), 2048);
        let outs = s.outputs();
        let ex = exchanges(&outs);
        assert_eq!(ex.len(), 1, "{outs:?}");
        assert_eq!(ex[0].request.host.as_deref(), Some("web"));
        assert!(!ex[0].request_truncated);
    }

    #[test]
    fn post_body_measured() {
        let mut s = Sim::new();
        s.send(
            E,
            b"POST /echo HTTP/1.1\r\nHost: w\r\nContent-Length: 5000\r\n\r\n",
            2048,
        );
        s.send_uncaptured(E, 5000);
        s.send(I, &resp(13), 2048);
        s.close();
        let outs = s.outputs();
        let e = exchanges(&outs)[0];
        assert_eq!(e.request.method, "POST");
        assert_eq!(e.request_body_bytes, Some(5000));
    }

    #[test]
    fn oversized_head_is_truncated_and_reported() {
        let mut s = Sim::new();
        let mut req = b"GET /big HTTP/1.1\r\nHost: w\r\nCookie: ".to_vec();
        req.extend(std::iter::repeat_n(b'c', 5000));
        req.extend_from_slice(b"\r\n\r\n");
        s.send(E, &req, 2048);
        s.send(I, &resp(1), 2048);
        s.close();
        let outs = s.outputs();
        assert_eq!(losses(&outs), [AgentLoss::TruncatedHead]);
        let e = exchanges(&outs)[0];
        assert!(e.request_truncated);
        assert_eq!(e.request.target, "/big");
        assert_eq!(e.response.as_ref().unwrap().head.status, 200);
    }

    #[test]
    fn garbage_after_method_is_reported_not_panicking() {
        let mut s = Sim::new();
        s.send(E, b"GET \x00\x01\x02 nonsense\r\n\r\n", 2048);
        s.close();
        let outs = s.outputs();
        assert_eq!(losses(&outs), [AgentLoss::InvalidHead]);
        assert!(exchanges(&outs).is_empty());
    }

    #[test]
    fn response_cut_off_by_the_close_is_partial() {
        let mut s = Sim::new();
        s.send(E, b"GET /x HTTP/1.1\r\nHost: w\r\n\r\n", 2048);
        s.send(I, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 2048);
        s.send_uncaptured(I, 40);
        s.close();
        let outs = s.outputs();
        let e = exchanges(&outs)[0];
        assert_eq!(e.completion, Completion::Partial);
        assert_eq!(e.response.as_ref().unwrap().body_bytes, Some(40));
    }

    #[test]
    fn unanswered_request_reported_at_close() {
        let mut s = Sim::new();
        s.send(E, b"GET /hang HTTP/1.1\r\nHost: w\r\n\r\n", 2048);
        s.close();
        let outs = s.outputs();
        let e = exchanges(&outs)[0];
        assert_eq!(e.completion, Completion::NoResponse);
        assert!(e.response.is_none());
    }

    #[test]
    fn retransmitted_start_is_ignored() {
        let mut s = Sim::new();
        let req = b"GET /once HTTP/1.1\r\nHost: w\r\n\r\n";
        s.send(E, req, 2048);
        // Same sequence number again.
        s.t.on_chunk(
            C,
            1,
            E,
            ChunkKind::RequestStart,
            1000,
            req.len() as u32,
            req,
            50,
        );
        s.send(I, &resp(1), 2048);
        s.close();
        assert_eq!(exchanges(&s.outputs()).len(), 1);
    }

    #[test]
    fn the_kernels_word_on_who_opened_a_flow_beats_port_order() {
        // No HTTP to tell: an accepted connection whose client used the lower port.
        let accepted = FlowTuple {
            initiator: Initiator::Remote as u8,
            local_port: 50051,
            remote_port: 40000,
            ..tuple()
        };
        let mut t = Tracker::new();
        t.on_open(C, 1, accepted, (SockOrigin::NONE, None), 1);
        t.on_close(
            C,
            1,
            accepted,
            [DirStats::default(); 2],
            2,
            CloseReason::Fin,
        );
        let outs: Vec<Output> = t.drain().collect();
        assert!(matches!(&outs[..], [Output::Flow(f)] if f.observer == Observer::Server));
        // A client that bound a port above the server's: the SYN (or connect) says client.
        let client = FlowTuple {
            initiator: Initiator::Local as u8,
            local_port: 1000,
            remote_port: 40001,
            ..tuple()
        };
        t.on_open(C, 1, client, (SockOrigin::NONE, None), 1);
        t.on_close(C, 1, client, [DirStats::default(); 2], 2, CloseReason::Fin);
        let outs: Vec<Output> = t.drain().collect();
        assert!(matches!(&outs[..], [Output::Flow(f)] if f.observer == Observer::Client));
    }

    #[test]
    fn server_side_observer_and_head_request() {
        let mut s = Sim::new();
        s.send(I, b"HEAD /h HTTP/1.1\r\nHost: w\r\n\r\n", 2048);
        s.send(E, b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", 2048);
        let outs = s.outputs();
        let e = exchanges(&outs)[0];
        assert_eq!(e.observer, Observer::Server);
        assert_eq!(e.response.as_ref().unwrap().body_bytes, Some(0));
    }
}
