//! The versioned header that starts every ring-buffer record.
//!
//! The agent never transmutes ring-buffer bytes: it checks the length, the version and the
//! kind first ([`user::decode`]), then copies the fixed-size part with an unaligned read.

/// Layout version of every record. Bump it when any record layout changes.
pub const RECORD_VERSION: u8 = 3;

/// Name of the ring buffer map.
pub const MAP_EVENTS: &str = "EVENTS";

/// Ring buffer size in bytes (a power of two and a multiple of the page size).
pub const RING_BYTES: u32 = 8 << 20;

/// Past this many unread bytes the kernel forces a wakeup; below it records are submitted with
/// `BPF_RB_NO_WAKEUP` and the agent drains on a short timer (a wakeup per record costs
/// microseconds per packet on virtual machines).
pub const WAKEUP_THRESHOLD: u64 = (RING_BYTES as u64) / 4;

/// What a record is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A flow table entry was created ([`crate::flow::FlowOpen`]).
    FlowOpen = 1,
    /// A flow ended in the kernel (FIN both ways, or RST) ([`crate::flow::FlowClose`]).
    FlowClose = 2,
    /// Payload bytes that start (or continue) an HTTP head ([`crate::http::HttpChunk`]).
    HttpChunk = 3,
    /// A connection attempt of a quarantined cgroup was blocked
    /// ([`crate::quarantine::QuarantineDrop`]).
    QuarantineDrop = 4,
}

impl RecordKind {
    /// Decodes the `u8` stored in the header.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::FlowOpen),
            2 => Some(Self::FlowClose),
            3 => Some(Self::HttpChunk),
            4 => Some(Self::QuarantineDrop),
            _ => None,
        }
    }
}

/// First bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// [`RECORD_VERSION`] of the program that wrote the record.
    pub version: u8,
    /// A [`RecordKind`].
    pub kind: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
    /// Size of the whole record in bytes, header included.
    pub len: u32,
    /// `bpf_ktime_get_boot_ns()` when the record was written.
    pub ts_ns: u64,
    /// Socket cookie: the flow key, unique per socket for the life of the kernel.
    pub cookie: u64,
    /// cgroup v2 id of the socket's cgroup (the pod's identity on the node).
    pub cgroup_id: u64,
}
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 32);

impl RecordHeader {
    /// A header for a record of type `T` and `kind`.
    pub const fn new<T>(kind: RecordKind, ts_ns: u64, cookie: u64, cgroup_id: u64) -> Self {
        Self {
            version: RECORD_VERSION,
            kind: kind as u8,
            _pad: [0; 2],
            len: core::mem::size_of::<T>() as u32,
            ts_ns,
            cookie,
            cgroup_id,
        }
    }
}

#[cfg(feature = "user")]
pub mod user {
    //! Checked decoding of ring-buffer bytes into the record types.
    use core::mem::size_of;

    use super::{RECORD_VERSION, RecordHeader, RecordKind};
    use crate::{
        flow::{FlowClose, FlowOpen},
        http::{HTTP_CAPTURE, HttpChunk, HttpChunkView},
        quarantine::QuarantineDrop,
    };

    /// Why a ring-buffer record could not be decoded.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    pub enum DecodeError {
        /// Fewer bytes than a header.
        #[error("record of {0} bytes is shorter than its {1}-byte header")]
        Short(usize, usize),
        /// Written by a kernel program of another layout version.
        #[error("record version {found} is not the supported version {RECORD_VERSION}")]
        Version {
            /// The version in the header.
            found: u8,
        },
        /// Unknown record kind.
        #[error("unknown record kind {0}")]
        Kind(u8),
        /// Header length disagrees with the buffer or with the kind's layout.
        #[error(
            "record kind {kind:?} declares {declared} bytes, buffer holds {actual}, layout needs {expected}"
        )]
        Length {
            /// The record kind.
            kind: RecordKind,
            /// `len` from the header.
            declared: u32,
            /// Bytes in the buffer.
            actual: usize,
            /// Size of the kind's layout.
            expected: usize,
        },
        /// A field holds a value outside its range.
        #[error("record kind {kind:?}: field {field} holds invalid value {value}")]
        Field {
            /// The record kind.
            kind: RecordKind,
            /// The field name.
            field: &'static str,
            /// The value found.
            value: u64,
        },
    }

    /// A decoded record; HTTP bytes borrow from the ring buffer.
    #[derive(Debug)]
    pub enum Record<'a> {
        /// See [`FlowOpen`].
        FlowOpen(FlowOpen),
        /// See [`FlowClose`].
        FlowClose(FlowClose),
        /// See [`HttpChunk`].
        HttpChunk(HttpChunkView<'a>),
        /// See [`QuarantineDrop`].
        QuarantineDrop(QuarantineDrop),
    }

    /// Reads a `T` from the start of `buf` after checking its length.
    fn read<T: Copy>(buf: &[u8]) -> Option<T> {
        if buf.len() < size_of::<T>() {
            return None;
        }
        // SAFETY: the length was checked above; `T` is a `#[repr(C)]` plain-old-data type
        // (every bit pattern valid) and `read_unaligned` has no alignment requirement.
        Some(unsafe { buf.as_ptr().cast::<T>().read_unaligned() })
    }

    /// The header declares `expected` bytes and `buf` holds at least that many.
    fn check_len(
        kind: RecordKind,
        hdr: &RecordHeader,
        buf: &[u8],
        expected: usize,
    ) -> Result<(), DecodeError> {
        if hdr.len as usize != expected || buf.len() < expected {
            return Err(DecodeError::Length {
                kind,
                declared: hdr.len,
                actual: buf.len(),
                expected,
            });
        }
        Ok(())
    }

    /// Decodes one ring-buffer record with length, version and range checks.
    pub fn decode(buf: &[u8]) -> Result<Record<'_>, DecodeError> {
        let hdr: RecordHeader =
            read(buf).ok_or(DecodeError::Short(buf.len(), size_of::<RecordHeader>()))?;
        if hdr.version != RECORD_VERSION {
            return Err(DecodeError::Version { found: hdr.version });
        }
        let kind = RecordKind::from_u8(hdr.kind).ok_or(DecodeError::Kind(hdr.kind))?;
        match kind {
            RecordKind::FlowOpen => {
                check_len(kind, &hdr, buf, size_of::<FlowOpen>())?;
                let r: FlowOpen = read(buf).ok_or(DecodeError::Short(buf.len(), 0))?;
                r.tuple.check(kind)?;
                r.origin.check(kind)?;
                Ok(Record::FlowOpen(r))
            }
            RecordKind::FlowClose => {
                check_len(kind, &hdr, buf, size_of::<FlowClose>())?;
                let r: FlowClose = read(buf).ok_or(DecodeError::Short(buf.len(), 0))?;
                r.tuple.check(kind)?;
                // The kernel only ever writes FIN or RST.
                if !matches!(
                    crate::flow::CloseReason::from_u8(r.reason),
                    Some(crate::flow::CloseReason::Fin | crate::flow::CloseReason::Rst)
                ) {
                    return Err(DecodeError::Field {
                        kind,
                        field: "reason",
                        value: u64::from(r.reason),
                    });
                }
                Ok(Record::FlowClose(r))
            }
            RecordKind::HttpChunk => {
                // Variable length: the fixed part, then exactly `captured` bytes.
                let fixed = size_of::<crate::http::HttpChunkMeta>();
                let meta: crate::http::HttpChunkMeta = read(buf).ok_or(DecodeError::Length {
                    kind,
                    declared: hdr.len,
                    actual: buf.len(),
                    expected: fixed,
                })?;
                let field = |field, value| DecodeError::Field { kind, field, value };
                if meta.captured as usize > HTTP_CAPTURE || meta.captured > meta.payload_len {
                    return Err(field("captured", u64::from(meta.captured)));
                }
                let expected = HttpChunk::wire_len(meta.captured) as usize;
                check_len(kind, &hdr, buf, expected)?;
                let dir = crate::Direction::from_u8(meta.dir)
                    .ok_or_else(|| field("dir", u64::from(meta.dir)))?;
                let chunk_kind = crate::http::ChunkKind::from_u8(meta.chunk_kind)
                    .ok_or_else(|| field("chunk_kind", u64::from(meta.chunk_kind)))?;
                let data = &buf[fixed..expected];
                Ok(Record::HttpChunk(HttpChunkView {
                    meta,
                    dir,
                    chunk_kind,
                    data,
                }))
            }
            RecordKind::QuarantineDrop => {
                check_len(kind, &hdr, buf, size_of::<QuarantineDrop>())?;
                let r: QuarantineDrop = read(buf).ok_or(DecodeError::Short(buf.len(), 0))?;
                r.tuple.check(kind)?;
                if crate::Direction::from_u8(r.dir).is_none() {
                    return Err(DecodeError::Field {
                        kind,
                        field: "dir",
                        value: u64::from(r.dir),
                    });
                }
                // The kernel records a blocked attempt only for a quarantined socket's cgroup.
                if r.hdr.cgroup_id == 0 {
                    return Err(DecodeError::Field {
                        kind,
                        field: "cgroup_id",
                        value: 0,
                    });
                }
                Ok(Record::QuarantineDrop(r))
            }
        }
    }
}
