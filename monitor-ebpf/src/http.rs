//! HTTP head capture: copy the first bytes of segments that start (or continue) an HTTP/1.x
//! head into the ring buffer. No parsing here; the agent parses with httparse.

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::SkBuffContext};
use monitor_common::{
    Direction,
    counter::Counter,
    flow::FlowState,
    http::{
        CONT_SEGMENTS, ChunkKind, HTTP_CAPTURE, HTTP_CAPTURE_SMALL, HttpChunk, HttpChunkMeta,
        HttpChunkOf, classify,
    },
    record::{RecordHeader, RecordKind},
};

use crate::{
    maps::{EVENTS, count, submit_flags},
    packet::Segment,
};

/// `\r\n\r\n` as a little-endian `u32`.
const HEAD_END: u32 = u32::from_le_bytes(*b"\r\n\r\n");

/// Captures `seg`'s payload if it starts an HTTP message or continues a head still open.
#[inline(always)]
pub fn capture(
    ctx: &SkBuffContext,
    st: &mut FlowState,
    dir: Direction,
    seg: &Segment,
    cookie: u64,
    now: u64,
) {
    let off = seg.payload_off as usize;
    let len = seg.payload_len;
    let first8 = if len >= 8 {
        ctx.load::<u64>(off).unwrap_or(0)
    } else {
        0
    };
    let budget = &mut st.cont_budget[dir.index()];
    let kind = match classify(first8) {
        Some(k) => k,
        None if *budget > 0 => {
            *budget -= 1;
            ChunkKind::Continuation
        }
        None => return,
    };
    // A head that visibly ends in this segment needs no continuation; nor does one longer
    // than the capture (the agent cannot join a continuation to a cut-off head).
    let ends_head = len >= 4 && ctx.load::<u32>(off + len as usize - 4).ok() == Some(HEAD_END);
    if ends_head || len > HTTP_CAPTURE as u32 {
        *budget = 0;
    } else if !matches!(kind, ChunkKind::Continuation) {
        *budget = CONT_SEGMENTS;
    }

    if len > HTTP_CAPTURE as u32 {
        count(Counter::ChunkTruncated);
    }
    let meta = HttpChunkMeta {
        hdr: RecordHeader::new::<HttpChunk>(RecordKind::HttpChunk, now, cookie, st.cgroup_id),
        dir: dir as u8,
        chunk_kind: kind as u8,
        _pad: [0; 2],
        seq: seg.seq,
        payload_len: len,
        captured: 0,
    };
    if len as usize <= HTTP_CAPTURE_SMALL {
        emit::<HTTP_CAPTURE_SMALL>(ctx, meta, seg.payload_off, len);
    } else {
        emit::<HTTP_CAPTURE>(ctx, meta, seg.payload_off, len);
    }
}

/// Reserves a slot of size class `N`, copies up to `N` payload bytes into it and submits it.
#[inline(always)]
fn emit<const N: usize>(ctx: &SkBuffContext, mut meta: HttpChunkMeta, off: u32, len: u32) {
    if len == 0 {
        return;
    }
    let Some(mut e) = EVENTS.reserve::<HttpChunkOf<N>>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    // The copy length must be provably in 1..=N on the register passed to the helper. Before
    // 6.8 or so the verifier learns no lower bound from `n != 0` (Linux 6.1 rejects the load
    // with "invalid access to memory ... size=0"), but it tracks `+ 1` exactly: so the length
    // is (len - 1).min(N - 1) + 1, which is len.min(N) for len >= 1. `black_box` stops the
    // compiler from folding the clamp and the check into a register the helper does not get.
    let m = core::hint::black_box((len - 1).min(N as u32 - 1));
    if m >= N as u32 {
        e.discard(0);
        return;
    }
    let n = m + 1;
    meta.hdr.len = core::mem::size_of::<HttpChunkOf<N>>() as u32;
    meta.captured = n;
    let chunk = e.as_mut_ptr();
    // SAFETY: `chunk` points at a reserved ring-buffer slot of `size_of::<HttpChunkOf<N>>()`
    // bytes and `n` is in 1..=N, so the copy stays inside `data`.
    let ok = unsafe {
        (*chunk).meta = meta;
        bpf_skb_load_bytes(
            ctx.skb.skb.cast_const().cast(),
            off,
            (*chunk).data.as_mut_ptr().cast(),
            n,
        ) == 0
    };
    if ok {
        count(Counter::Chunks);
        e.submit(submit_flags());
    } else {
        count(Counter::CaptureFailed);
        e.discard(0);
    }
}
