//! HTTP head capture: copy the first bytes of segments that start (or continue) an HTTP/1.x
//! head into the ring buffer. No parsing here; the agent parses with httparse.

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::SkBuffContext};
use monitor_common::{
    Direction,
    counter::Counter,
    flow::FlowState,
    http::{CONT_SEGMENTS, ChunkKind, HTTP_CAPTURE, HttpChunk, HttpChunkMeta, classify},
    record::{RecordHeader, RecordKind},
};

use crate::{
    maps::{CHUNK_SCRATCH, EVENTS, count, submit_flags},
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
    emit(ctx, meta, seg.payload_off, len);
}

/// Builds the chunk in this CPU's scratch slot (the fixed part, then up to [`HTTP_CAPTURE`]
/// payload bytes) and copies only that much into the ring buffer.
#[inline(always)]
fn emit(ctx: &SkBuffContext, mut meta: HttpChunkMeta, off: u32, len: u32) {
    if len == 0 {
        return;
    }
    let Some(chunk) = CHUNK_SCRATCH.get_ptr_mut(0) else {
        count(Counter::CaptureFailed);
        return;
    };
    // The copy length must be provably in 1..=HTTP_CAPTURE on the register passed to the
    // helper. Before 6.8 or so the verifier learns no lower bound from `n != 0` (Linux 6.1
    // rejects the load with "invalid access to memory ... size=0"), but it tracks `+ 1`
    // exactly: so the length is (len - 1).min(N - 1) + 1, which is len.min(N) for len >= 1.
    // `black_box` stops the compiler from folding the clamp and the check into a register the
    // helper does not get.
    const N: u32 = HTTP_CAPTURE as u32;
    let m = core::hint::black_box((len - 1).min(N - 1));
    if m >= N {
        return;
    }
    let n = m + 1;
    meta.hdr.len = HttpChunk::wire_len(n);
    meta.captured = n;
    // SAFETY: `chunk` is this CPU's scratch slot of `size_of::<HttpChunk>()` bytes, ours for
    // the program's run; `n` is in 1..=HTTP_CAPTURE, so the copy stays inside `data`.
    let ok = unsafe {
        (*chunk).meta = meta;
        bpf_skb_load_bytes(
            ctx.skb.skb.cast_const().cast(),
            off,
            (*chunk).data.as_mut_ptr().cast(),
            n,
        ) == 0
    };
    if !ok {
        count(Counter::CaptureFailed);
        return;
    }
    // SAFETY: the slot's first `wire_len(n)` bytes were just written; `wire_len(n)` is at most
    // `size_of::<HttpChunk>()`.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            chunk.cast::<u8>().cast_const(),
            HttpChunk::wire_len(n) as usize,
        )
    };
    match EVENTS.output::<[u8]>(bytes, submit_flags()) {
        Ok(()) => count(Counter::Chunks),
        Err(_) => count(Counter::RingbufFull),
    }
}
