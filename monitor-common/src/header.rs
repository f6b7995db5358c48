//! The versioned header that starts every ring-buffer record, the record kinds, and why a
//! record may fail to decode. Each record kind's module (`flow`, `http`, `quarantine`, `sock`)
//! builds on this; the decoder over all of them is [`crate::record::user`].

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
