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
    // A head that visibly ends in this segment needs no continuation.
    let ends_head = len >= 4 && ctx.load::<u32>(off + len as usize - 4).ok() == Some(HEAD_END);
    if ends_head {
        *budget = 0;
    } else if !matches!(kind, ChunkKind::Continuation) {
        *budget = CONT_SEGMENTS;
    }

    let Some(mut e) = EVENTS.reserve::<HttpChunk>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    if len > HTTP_CAPTURE as u32 {
        count(Counter::ChunkTruncated);
    }
    // `black_box` stops the compiler from reusing the unclamped register, so the verifier sees
    // the bound it needs for the copy below: 1..=HTTP_CAPTURE.
    let n = core::hint::black_box(len.min(HTTP_CAPTURE as u32));
    if n == 0 || n > HTTP_CAPTURE as u32 {
        e.discard(0);
        return;
    }
    let chunk = e.as_mut_ptr();
    // SAFETY: `chunk` points at a reserved ring-buffer slot of `size_of::<HttpChunk>()` bytes;
    // `n` is in 1..=HTTP_CAPTURE (len > 0 is the caller's precondition), so the copy stays
    // inside `data`.
    let ok = unsafe {
        (*chunk).meta = HttpChunkMeta {
            hdr: RecordHeader::new::<HttpChunk>(RecordKind::HttpChunk, now, cookie, st.cgroup_id),
            dir: dir as u8,
            chunk_kind: kind as u8,
            _pad: [0; 2],
            seq: seg.seq,
            payload_len: len,
            captured: n,
        };
        bpf_skb_load_bytes(
            ctx.skb.skb.cast_const().cast(),
            seg.payload_off,
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
