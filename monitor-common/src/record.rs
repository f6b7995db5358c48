//! Ring-buffer records: the header and kinds (re-exported from [`crate::header`]) and the
//! checked decoder over every kind.
//!
//! The agent never transmutes ring-buffer bytes: it checks the length, the version and the
//! kind first ([`user::decode`]), then copies the fixed-size part with an unaligned read.

pub use crate::header::{
    MAP_EVENTS, RECORD_VERSION, RING_BYTES, RecordHeader, RecordKind, WAKEUP_THRESHOLD,
};

#[cfg(feature = "user")]
pub mod user {
    //! Checked decoding of ring-buffer bytes into the record types.
    use core::mem::size_of;

    use crate::header::{RECORD_VERSION, RecordHeader, RecordKind};
    use crate::{
        flow::{FlowClose, FlowOpen},
        http::{HTTP_CAPTURE, HttpChunk, HttpChunkView},
        quarantine::QuarantineDrop,
    };

    pub use crate::header::DecodeError;

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
