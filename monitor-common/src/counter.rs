//! Per-CPU counters written by the kernel programs: every loss, and a few activity figures.

/// Name of the per-CPU counter array, indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";

/// Index into the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Loss: a ring-buffer reserve failed (the buffer was full); the record was not written.
    RingbufFull = 0,
    /// Loss: a new flow could not be inserted (table full); the flow is not tracked.
    FlowTableFull = 1,
    /// Loss: `bpf_skb_load_bytes` failed while copying HTTP bytes.
    CaptureFailed = 2,
    /// Activity: a segment starting an HTTP message held more payload than the capture size.
    /// Usually the body following a complete head; when the head itself did not fit, the
    /// agent reports an `http-head-truncated` loss.
    ChunkTruncated = 3,
    /// Activity: packets seen by either program.
    Packets = 4,
    /// Activity: packets that were not TCP over IPv4/IPv6 (passed, not tracked).
    NotTcp = 5,
    /// Activity: HTTP chunks written.
    Chunks = 6,
    /// Activity: flows not reported because the local client's own socket reports them
    /// ([`crate::flow::FLOW_MIRRORED`]).
    Mirrored = 7,
    /// Activity (enforcement, not loss): packets of a quarantined cgroup dropped by either
    /// program ([`crate::quarantine`]).
    QuarantineDropped = 8,
}

impl Counter {
    /// Number of counters (size of the array).
    pub const COUNT: u32 = 9;

    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::RingbufFull,
        Self::FlowTableFull,
        Self::CaptureFailed,
        Self::ChunkTruncated,
        Self::Packets,
        Self::NotTcp,
        Self::Chunks,
        Self::Mirrored,
        Self::QuarantineDropped,
    ];

    /// True for counters that count lost or incomplete data.
    pub const fn is_loss(self) -> bool {
        matches!(
            self,
            Self::RingbufFull | Self::FlowTableFull | Self::CaptureFailed
        )
    }

    /// Stable kebab-case name used in loss records and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RingbufFull => "ringbuf-full",
            Self::FlowTableFull => "flow-table-full",
            Self::CaptureFailed => "capture-failed",
            Self::ChunkTruncated => "http-chunk-truncated",
            Self::Packets => "packets",
            Self::NotTcp => "not-tcp",
            Self::Chunks => "http-chunks",
            Self::Mirrored => "mirrored-flows",
            Self::QuarantineDropped => "quarantine-dropped",
        }
    }
}
