//! Property tests of the ring-buffer decoder: it never panics, it decodes every record kind the
//! kernel writes back to the same fields, and it rejects every value the kernel never writes.
//!
//! Records are written here byte by byte at their documented offsets, not by copying the Rust
//! structs, so these tests also pin the layout the kernel and the agent share.

use std::mem::offset_of;

use monitor_common::{
    Direction,
    flow::{DirStats, FAMILY_V4, FAMILY_V6, FlowClose, FlowOpen, FlowTuple},
    http::{ChunkKind, HTTP_CAPTURE, HttpChunk, HttpChunkMeta},
    quarantine::{QuarantineDirStats, QuarantineDrop, QuarantineEntry, QuarantineStats},
    record::{
        RECORD_VERSION, RecordHeader, RecordKind,
        user::{DecodeError, Record, decode},
    },
    sock::{ORIGIN_CONNECT, ORIGIN_PASSIVE, SockOrigin},
};
use proptest::{collection::vec, prelude::*, sample::select};

const HDR: usize = 32;
const OPEN_LEN: usize = 104;
const CLOSE_LEN: usize = 160;
/// The largest chunk: the kernel writes the fixed part and only the captured bytes.
const CHUNK_LEN: usize = 48 + HTTP_CAPTURE;

/// Length of a chunk record with `captured` bytes.
const fn chunk_len(captured: usize) -> usize {
    48 + captured
}
const DROP_LEN: usize = 80;

#[test]
fn documented_offsets_are_the_struct_offsets() {
    assert_eq!(offset_of!(RecordHeader, version), 0);
    assert_eq!(offset_of!(RecordHeader, kind), 1);
    assert_eq!(offset_of!(RecordHeader, len), 4);
    assert_eq!(offset_of!(RecordHeader, ts_ns), 8);
    assert_eq!(offset_of!(RecordHeader, cookie), 16);
    assert_eq!(offset_of!(RecordHeader, cgroup_id), 24);
    assert_eq!(size_of::<RecordHeader>(), HDR);

    assert_eq!(offset_of!(FlowTuple, family), 0);
    assert_eq!(offset_of!(FlowTuple, initiator), 1);
    assert_eq!(offset_of!(FlowTuple, local_port), 4);
    assert_eq!(offset_of!(FlowTuple, remote_port), 6);
    assert_eq!(offset_of!(FlowTuple, local_addr), 8);
    assert_eq!(offset_of!(FlowTuple, remote_addr), 24);

    assert_eq!(offset_of!(DirStats, bytes), 0);
    assert_eq!(offset_of!(DirStats, packets), 8);
    assert_eq!(offset_of!(DirStats, payload_bytes), 16);
    assert_eq!(offset_of!(DirStats, end_seq), 24);
    assert_eq!(offset_of!(DirStats, flags), 28);

    assert_eq!(offset_of!(FlowOpen, tuple), HDR);
    assert_eq!(offset_of!(FlowOpen, origin), 72);
    assert_eq!(offset_of!(FlowOpen, uid), 100);
    assert_eq!(size_of::<FlowOpen>(), OPEN_LEN);

    assert_eq!(offset_of!(SockOrigin, flags), 0);
    assert_eq!(offset_of!(SockOrigin, family), 1);
    assert_eq!(offset_of!(SockOrigin, port), 2);
    assert_eq!(offset_of!(SockOrigin, uid), 4);
    assert_eq!(offset_of!(SockOrigin, gid), 8);
    assert_eq!(offset_of!(SockOrigin, addr), 12);
    assert_eq!(size_of::<SockOrigin>(), 28);
    assert_eq!(offset_of!(FlowClose, tuple), HDR);
    assert_eq!(offset_of!(FlowClose, first_ns), 72);
    assert_eq!(offset_of!(FlowClose, last_ns), 80);
    assert_eq!(offset_of!(FlowClose, dir), 88);
    assert_eq!(offset_of!(FlowClose, reason), 152);
    assert_eq!(size_of::<FlowClose>(), CLOSE_LEN);

    assert_eq!(offset_of!(HttpChunkMeta, dir), HDR);
    assert_eq!(offset_of!(HttpChunkMeta, chunk_kind), 33);
    assert_eq!(offset_of!(HttpChunkMeta, seq), 36);
    assert_eq!(offset_of!(HttpChunkMeta, payload_len), 40);
    assert_eq!(offset_of!(HttpChunkMeta, captured), 44);
    assert_eq!(offset_of!(HttpChunk, data), 48);
    assert_eq!(size_of::<HttpChunk>(), CHUNK_LEN);
}

#[test]
fn quarantine_layouts_are_documented() {
    assert_eq!(offset_of!(QuarantineDrop, hdr), 0);
    assert_eq!(offset_of!(QuarantineDrop, tuple), HDR);
    assert_eq!(offset_of!(QuarantineDrop, dir), 72);
    assert_eq!(size_of::<QuarantineDrop>(), DROP_LEN);

    assert_eq!(offset_of!(QuarantineEntry, mode), 0);
    assert_eq!(offset_of!(QuarantineEntry, since_ns), 8);
    assert_eq!(size_of::<QuarantineEntry>(), 16);

    assert_eq!(offset_of!(QuarantineDirStats, packets), 0);
    assert_eq!(offset_of!(QuarantineDirStats, bytes), 8);
    assert_eq!(offset_of!(QuarantineDirStats, attempts), 16);
    assert_eq!(offset_of!(QuarantineStats, dir), 0);
    assert_eq!(size_of::<QuarantineStats>(), 48);
}

#[test]
fn quarantine_stats_sum_per_direction() {
    let d = |packets, bytes, attempts| QuarantineDirStats {
        packets,
        bytes,
        attempts,
    };
    let mut sum = QuarantineStats::default();
    sum.merge(&QuarantineStats {
        dir: [d(1, 60, 1), d(2, 100, 0)],
    });
    sum.merge(&QuarantineStats {
        dir: [d(3, 40, 2), d(0, 0, 1)],
    });
    assert_eq!(sum.dir, [d(4, 100, 3), d(2, 100, 1)]);
    assert_eq!((sum.packets(), sum.bytes(), sum.attempts()), (6, 200, 4));
}

// ---------------------------------------------------------------------------------------------
// Writing records as the kernel lays them out.

#[derive(Debug, Clone)]
struct Hdr {
    ts_ns: u64,
    cookie: u64,
    cgroup_id: u64,
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn write_hdr(buf: &mut [u8], kind: RecordKind, len: usize, h: &Hdr) {
    buf[0] = RECORD_VERSION;
    buf[1] = kind as u8;
    put(buf, 4, &u32::try_from(len).expect("small").to_ne_bytes());
    put(buf, 8, &h.ts_ns.to_ne_bytes());
    put(buf, 16, &h.cookie.to_ne_bytes());
    put(buf, 24, &h.cgroup_id.to_ne_bytes());
}

fn write_tuple(buf: &mut [u8], at: usize, t: &FlowTuple) {
    buf[at] = t.family;
    buf[at + 1] = t.initiator;
    put(buf, at + 4, &t.local_port.to_ne_bytes());
    put(buf, at + 6, &t.remote_port.to_ne_bytes());
    put(buf, at + 8, &t.local_addr);
    put(buf, at + 24, &t.remote_addr);
}

fn write_stats(buf: &mut [u8], at: usize, d: &DirStats) {
    put(buf, at, &d.bytes.to_ne_bytes());
    put(buf, at + 8, &d.packets.to_ne_bytes());
    put(buf, at + 16, &d.payload_bytes.to_ne_bytes());
    put(buf, at + 24, &d.end_seq.to_ne_bytes());
    put(buf, at + 28, &d.flags.to_ne_bytes());
}

fn write_origin(buf: &mut [u8], at: usize, o: &SockOrigin) {
    buf[at] = o.flags;
    buf[at + 1] = o.family;
    put(buf, at + 2, &o.port.to_ne_bytes());
    put(buf, at + 4, &o.uid.to_ne_bytes());
    put(buf, at + 8, &o.gid.to_ne_bytes());
    put(buf, at + 12, &o.addr);
}

fn open_bytes(h: &Hdr, t: &FlowTuple) -> Vec<u8> {
    open_bytes_with(h, t, &SockOrigin::NONE, 0)
}

fn open_bytes_with(h: &Hdr, t: &FlowTuple, o: &SockOrigin, uid: u32) -> Vec<u8> {
    let mut b = vec![0; OPEN_LEN];
    write_hdr(&mut b, RecordKind::FlowOpen, OPEN_LEN, h);
    write_tuple(&mut b, HDR, t);
    write_origin(&mut b, 72, o);
    put(&mut b, 100, &uid.to_ne_bytes());
    b
}

#[derive(Debug, Clone)]
struct Close {
    tuple: FlowTuple,
    first_ns: u64,
    last_ns: u64,
    dir: [DirStats; 2],
    reason: u8,
}

fn close_bytes(h: &Hdr, c: &Close) -> Vec<u8> {
    let mut b = vec![0; CLOSE_LEN];
    write_hdr(&mut b, RecordKind::FlowClose, CLOSE_LEN, h);
    write_tuple(&mut b, HDR, &c.tuple);
    put(&mut b, 72, &c.first_ns.to_ne_bytes());
    put(&mut b, 80, &c.last_ns.to_ne_bytes());
    write_stats(&mut b, 88, &c.dir[0]);
    write_stats(&mut b, 120, &c.dir[1]);
    b[152] = c.reason;
    b
}

#[derive(Debug, Clone)]
struct Chunk {
    dir: u8,
    kind: u8,
    seq: u32,
    payload_len: u32,
    data: Vec<u8>,
}

fn chunk_bytes(h: &Hdr, c: &Chunk) -> Vec<u8> {
    let len = chunk_len(c.data.len());
    let mut b = vec![0; len];
    write_hdr(&mut b, RecordKind::HttpChunk, len, h);
    b[32] = c.dir;
    b[33] = c.kind;
    put(&mut b, 36, &c.seq.to_ne_bytes());
    put(&mut b, 40, &c.payload_len.to_ne_bytes());
    put(
        &mut b,
        44,
        &u32::try_from(c.data.len()).expect("small").to_ne_bytes(),
    );
    put(&mut b, 48, &c.data);
    b
}

fn drop_bytes(h: &Hdr, t: &FlowTuple, dir: u8) -> Vec<u8> {
    let mut b = vec![0; DROP_LEN];
    write_hdr(&mut b, RecordKind::QuarantineDrop, DROP_LEN, h);
    write_tuple(&mut b, HDR, t);
    b[72] = dir;
    b
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn hdr() -> impl Strategy<Value = Hdr> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(ts_ns, cookie, cgroup_id)| Hdr {
        ts_ns,
        cookie,
        cgroup_id,
    })
}

/// A header of a quarantine drop: the kernel writes one only for a real cgroup (id not 0).
fn drop_hdr() -> impl Strategy<Value = Hdr> {
    (any::<u64>(), any::<u64>(), 1u64..).prop_map(|(ts_ns, cookie, cgroup_id)| Hdr {
        ts_ns,
        cookie,
        cgroup_id,
    })
}

fn tuple() -> impl Strategy<Value = FlowTuple> {
    (
        select(vec![FAMILY_V4, FAMILY_V6]),
        0u8..3,
        any::<u16>(),
        any::<u16>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(family, initiator, lp, rp, mut la, mut ra)| {
            if family == FAMILY_V4 {
                la[4..].fill(0);
                ra[4..].fill(0);
            }
            FlowTuple {
                family,
                initiator,
                _pad: [0; 2],
                local_port: lp,
                remote_port: rp,
                local_addr: la,
                remote_addr: ra,
            }
        })
}

/// What the connect hook or sock_ops writes (or nothing).
fn origin() -> impl Strategy<Value = SockOrigin> {
    (
        0u8..3,
        select(vec![FAMILY_V4, FAMILY_V6]),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(which, family, port, uid, gid, addr)| match which {
            0 => SockOrigin::NONE,
            1 => SockOrigin {
                flags: ORIGIN_CONNECT,
                family,
                port,
                uid,
                gid,
                addr,
            },
            _ => SockOrigin {
                flags: ORIGIN_PASSIVE,
                ..SockOrigin::NONE
            },
        })
}

fn stats() -> impl Strategy<Value = DirStats> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(bytes, packets, payload_bytes, end_seq, flags)| DirStats {
            bytes,
            packets,
            payload_bytes,
            end_seq,
            flags,
        })
}

fn close() -> impl Strategy<Value = Close> {
    (
        tuple(),
        any::<u64>(),
        any::<u64>(),
        stats(),
        stats(),
        // The kernel writes only FIN (1) and RST (2).
        1u8..=2,
    )
        .prop_map(|(tuple, first_ns, last_ns, a, b, reason)| Close {
            tuple,
            first_ns,
            last_ns,
            dir: [a, b],
            reason,
        })
}

fn chunk() -> impl Strategy<Value = Chunk> {
    (
        0u8..2,
        1u8..=3,
        any::<u32>(),
        vec(any::<u8>(), 0..=HTTP_CAPTURE),
        prop_oneof![Just(0u32), 0u32..100_000, any::<u32>()],
    )
        .prop_map(|(dir, kind, seq, data, extra)| Chunk {
            dir,
            kind,
            seq,
            payload_len: u32::try_from(data.len())
                .expect("small")
                .saturating_add(extra),
            data,
        })
}

/// Any valid record, as bytes.
fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (hdr(), tuple()).prop_map(|(h, t)| open_bytes(&h, &t)),
        (hdr(), close()).prop_map(|(h, c)| close_bytes(&h, &c)),
        (hdr(), chunk()).prop_map(|(h, c)| chunk_bytes(&h, &c)),
        (drop_hdr(), tuple(), 0u8..2).prop_map(|(h, t, d)| drop_bytes(&h, &t, d)),
    ]
}

fn assert_hdr(got: &RecordHeader, kind: RecordKind, len: usize, h: &Hdr) {
    assert_eq!(got.version, RECORD_VERSION);
    assert_eq!(got.kind, kind as u8);
    assert_eq!(got.len as usize, len);
    assert_eq!(got.ts_ns, h.ts_ns);
    assert_eq!(got.cookie, h.cookie);
    assert_eq!(got.cgroup_id, h.cgroup_id);
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #[test]
    fn decode_never_panics_on_any_bytes(buf in vec(any::<u8>(), 0..2200)) {
        let _ = decode(&buf);
    }

    #[test]
    fn decode_never_panics_past_the_header_checks(
        kind in 0u8..5,
        len in prop_oneof![
            select(vec![OPEN_LEN, CLOSE_LEN, CHUNK_LEN, DROP_LEN, 0, HDR]),
            0usize..3000,
        ],
        actual in prop_oneof![
            select(vec![OPEN_LEN, CLOSE_LEN, CHUNK_LEN, DROP_LEN, HDR, CHUNK_LEN + 8]),
            0usize..2200,
        ],
        seed in vec(any::<u8>(), 1..64),
    ) {
        let mut buf: Vec<u8> = seed.iter().copied().cycle().take(actual).collect();
        if buf.len() >= 8 {
            buf[0] = RECORD_VERSION;
            buf[1] = kind;
            put(&mut buf, 4, &u32::try_from(len).expect("small").to_ne_bytes());
        }
        if let Ok(r) = decode(&buf) {
            let (k, size) = match r {
                Record::FlowOpen(o) => (o.hdr.kind, OPEN_LEN),
                Record::FlowClose(c) => (c.hdr.kind, CLOSE_LEN),
                Record::HttpChunk(c) => {
                    prop_assert!(c.data.len() <= HTTP_CAPTURE);
                    prop_assert!(c.data.len() as u32 <= c.meta.payload_len);
                    (c.meta.hdr.kind, chunk_len(c.data.len()))
                }
                Record::QuarantineDrop(d) => {
                    prop_assert!(d.dir < 2);
                    prop_assert_ne!(d.hdr.cgroup_id, 0);
                    (d.hdr.kind, DROP_LEN)
                }
            };
            prop_assert_eq!(k, kind);
            prop_assert_eq!(len, size);
            prop_assert!(buf.len() >= size);
        }
    }

    #[test]
    fn flow_open_round_trips(h in hdr(), t in tuple(), o in origin(), uid in any::<u32>()) {
        let buf = open_bytes_with(&h, &t, &o, uid);
        let Ok(Record::FlowOpen(r)) = decode(&buf) else {
            panic!("not decoded as a flow open: {:?}", decode(&buf));
        };
        assert_hdr(&r.hdr, RecordKind::FlowOpen, OPEN_LEN, &h);
        prop_assert_eq!(r.tuple, t);
        prop_assert_eq!(r.origin, o);
        prop_assert_eq!(r.uid, uid);
        prop_assert_eq!(r.origin.connected(), o.flags == ORIGIN_CONNECT);
        prop_assert_eq!(r.origin.accepted(), o.flags == ORIGIN_PASSIVE);
    }

    #[test]
    fn origins_the_kernel_never_writes_are_rejected(
        h in hdr(),
        t in tuple(),
        o in origin(),
        flags in 3u8..,
        family in any::<u8>(),
    ) {
        let field = |r: Result<Record<'_>, DecodeError>| match r {
            Err(DecodeError::Field { kind: RecordKind::FlowOpen, field, value }) => {
                Some((field, value))
            }
            _ => None,
        };
        prop_assert_eq!(
            field(decode(&open_bytes_with(&h, &t, &SockOrigin { flags, ..o }, 0))),
            Some(("origin.flags", u64::from(flags)))
        );
        // A family only with a connect-time destination, and then IPv4 or IPv6.
        let want_family = o.flags == ORIGIN_CONNECT;
        let bad_family = (want_family && family != FAMILY_V4 && family != FAMILY_V6)
            || (!want_family && family != 0);
        if bad_family {
            prop_assert_eq!(
                field(decode(&open_bytes_with(&h, &t, &SockOrigin { family, ..o }, 0))),
                Some(("origin.family", u64::from(family)))
            );
        }
    }

    #[test]
    fn flow_close_round_trips(h in hdr(), c in close()) {
        let buf = close_bytes(&h, &c);
        let Ok(Record::FlowClose(r)) = decode(&buf) else {
            panic!("not decoded as a flow close: {:?}", decode(&buf));
        };
        assert_hdr(&r.hdr, RecordKind::FlowClose, CLOSE_LEN, &h);
        prop_assert_eq!(r.tuple, c.tuple);
        prop_assert_eq!(r.first_ns, c.first_ns);
        prop_assert_eq!(r.last_ns, c.last_ns);
        prop_assert_eq!(r.dir, c.dir);
        prop_assert_eq!(r.reason, c.reason);
    }

    #[test]
    fn http_chunk_round_trips(h in hdr(), c in chunk()) {
        let buf = chunk_bytes(&h, &c);
        let Ok(Record::HttpChunk(v)) = decode(&buf) else {
            panic!("not decoded as an HTTP chunk: {:?}", decode(&buf));
        };
        assert_hdr(&v.meta.hdr, RecordKind::HttpChunk, chunk_len(c.data.len()), &h);
        prop_assert_eq!(buf.len(), chunk_len(c.data.len()));
        prop_assert_eq!(v.dir as u8, c.dir);
        prop_assert_eq!(Some(v.dir), Direction::from_u8(c.dir));
        prop_assert_eq!(v.chunk_kind as u8, c.kind);
        prop_assert_eq!(Some(v.chunk_kind), ChunkKind::from_u8(c.kind));
        prop_assert_eq!(v.meta.seq, c.seq);
        prop_assert_eq!(v.meta.payload_len, c.payload_len);
        prop_assert_eq!(v.meta.captured as usize, c.data.len());
        prop_assert_eq!(v.data, &c.data[..]);
    }

    #[test]
    fn quarantine_drop_round_trips(h in drop_hdr(), t in tuple(), dir in 0u8..2) {
        let buf = drop_bytes(&h, &t, dir);
        let Ok(Record::QuarantineDrop(d)) = decode(&buf) else {
            panic!("not decoded as a quarantine drop: {:?}", decode(&buf));
        };
        assert_hdr(&d.hdr, RecordKind::QuarantineDrop, DROP_LEN, &h);
        prop_assert_eq!(d.tuple, t);
        prop_assert_eq!(d.dir, dir);
        prop_assert_eq!(d._pad, [0; 7]);
    }

    #[test]
    fn quarantine_drop_values_the_kernel_never_writes_are_rejected(
        h in drop_hdr(),
        t in tuple(),
        family in any::<u8>(),
        initiator in 3u8..,
        dir in 2u8..,
    ) {
        prop_assume!(family != FAMILY_V4 && family != FAMILY_V6);
        let field = |r: Result<Record<'_>, DecodeError>| match r {
            Err(DecodeError::Field { kind: RecordKind::QuarantineDrop, field, value }) => {
                Some((field, value))
            }
            _ => None,
        };
        prop_assert_eq!(
            field(decode(&drop_bytes(&h, &FlowTuple { family, ..t }, 0))),
            Some(("family", u64::from(family)))
        );
        prop_assert_eq!(
            field(decode(&drop_bytes(&h, &FlowTuple { initiator, ..t }, 0))),
            Some(("initiator", u64::from(initiator)))
        );
        prop_assert_eq!(field(decode(&drop_bytes(&h, &t, dir))), Some(("dir", u64::from(dir))));
        let no_cgroup = Hdr { cgroup_id: 0, ..h };
        prop_assert_eq!(field(decode(&drop_bytes(&no_cgroup, &t, 1))), Some(("cgroup_id", 0)));
    }

    #[test]
    fn every_cut_record_is_a_length_error(buf in record_bytes(), cut in any::<prop::sample::Index>()) {
        let n = cut.index(buf.len());
        match decode(&buf[..n]) {
            Err(DecodeError::Short(got, 32)) => prop_assert!(n < HDR && got == n),
            Err(DecodeError::Length { actual, .. }) => prop_assert_eq!(actual, n),
            other => prop_assert!(false, "{} of {} bytes: {:?}", n, buf.len(), other),
        }
    }

    #[test]
    fn a_wrong_length_field_is_rejected(buf in record_bytes(), len in any::<u32>()) {
        let mut buf = buf;
        let real = buf.len();
        prop_assume!(len as usize != real);
        put(&mut buf, 4, &len.to_ne_bytes());
        let is_length_error = matches!(
            decode(&buf),
            Err(DecodeError::Length { declared, expected, .. }) if declared == len && expected == real
        );
        prop_assert!(is_length_error);
    }

    #[test]
    fn other_versions_and_kinds_are_rejected(buf in record_bytes(), version in any::<u8>(), kind in any::<u8>()) {
        let mut v = buf.clone();
        v[0] = version;
        if version != RECORD_VERSION {
            prop_assert_eq!(decode(&v).err(), Some(DecodeError::Version { found: version }));
        }
        let mut k = buf;
        k[1] = kind;
        if RecordKind::from_u8(kind).is_none() {
            prop_assert_eq!(decode(&k).err(), Some(DecodeError::Kind(kind)));
        }
    }

    #[test]
    fn values_the_kernel_never_writes_are_rejected(
        h in hdr(),
        t in tuple(),
        c in chunk(),
        family in any::<u8>(),
        dir in 2u8..,
        kind in prop_oneof![Just(0u8), 4u8..],
    ) {
        prop_assume!(family != FAMILY_V4 && family != FAMILY_V6);
        let field = |r: Result<Record<'_>, DecodeError>| match r {
            Err(DecodeError::Field { field, value, .. }) => Some((field, value)),
            _ => None,
        };
        let bad = FlowTuple { family, ..t };
        prop_assert_eq!(field(decode(&open_bytes(&h, &bad))), Some(("family", u64::from(family))));
        let close = Close { tuple: bad, first_ns: 0, last_ns: 0, dir: Default::default(), reason: 1 };
        prop_assert_eq!(field(decode(&close_bytes(&h, &close))), Some(("family", u64::from(family))));
        // Close reasons other than FIN/RST and initiators other than unknown/local/remote.
        for reason in [0u8, 3, 4, 200] {
            let close = Close { tuple: t, first_ns: 0, last_ns: 0, dir: Default::default(), reason };
            prop_assert_eq!(field(decode(&close_bytes(&h, &close))), Some(("reason", u64::from(reason))));
        }
        let odd = FlowTuple { initiator: 3, ..t };
        prop_assert_eq!(field(decode(&open_bytes(&h, &odd))), Some(("initiator", 3)));
        prop_assert_eq!(
            field(decode(&chunk_bytes(&h, &Chunk { dir, ..c.clone() }))),
            Some(("dir", u64::from(dir)))
        );
        prop_assert_eq!(
            field(decode(&chunk_bytes(&h, &Chunk { kind, ..c.clone() }))),
            Some(("chunk_kind", u64::from(kind)))
        );
        // More captured than the packet held, or than the slot holds.
        if !c.data.is_empty() {
            let mut b = chunk_bytes(&h, &c);
            let captured = c.data.len() as u32;
            put(&mut b, 40, &(captured - 1).to_ne_bytes());
            prop_assert_eq!(field(decode(&b)), Some(("captured", u64::from(captured))));
        }
        let mut b = chunk_bytes(&h, &Chunk { payload_len: u32::MAX, ..c });
        let over = HTTP_CAPTURE as u32 + 1;
        put(&mut b, 44, &over.to_ne_bytes());
        prop_assert_eq!(field(decode(&b)), Some(("captured", u64::from(over))));
    }
}
