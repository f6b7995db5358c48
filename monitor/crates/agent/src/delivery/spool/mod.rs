//! The agent's on-disk spool: every record not yet acknowledged by the collector, so that a
//! collector outage or an agent restart loses nothing, and what is lost anyway (size cap,
//! corruption) is reported as a [`Lost`] note instead of vanishing.
//!
//! The agent's drain thread [`Spool::append`]s records (memory only, cheap) and
//! [`Spool::flush`]es them every few milliseconds (one `write(2)`); the sender task reads them
//! with [`Spool::next_batch`], and the collector's acknowledgements ([`Spool::ack`]) delete
//! the segments they cover. After a reconnect or a restart, [`Spool::rewind`] delivers
//! everything unacknowledged again from the start; the collector drops duplicates by
//! (node, boot id, seq). The caller wraps the spool in a mutex.
//!
//! Files: `open.rs` (checks a directory at start), `write.rs` (append, flush, periodic fsync,
//! cap), `read.rs` (batches, rewind), `scan.rs` (reading a segment frame by frame, counting
//! past damage), `format.rs` (byte layout), `state.rs` (`ack.json`, `lost.json`).
//!
//! # On-disk format
//!
//! One directory (`--spool-dir`), holding:
//!
//! - `lock`: held with `flock` while a spool is open, so two agents cannot share a directory.
//! - `%016x.seg`: segments, named by a counter that only grows, so lexical order is creation
//!   order. All records of one segment belong to one boot, in ascending seq order. A segment is
//!   appended to until it reaches `segment_bytes` (fsynced on an interval meanwhile, see
//!   Durability), then sealed (fsynced) and never written again (except to cut off a damaged
//!   tail once it has been reported).
//! - `ack.json`: `{version, boot_id, watermark, first_live_segment}`, the last acknowledgement.
//! - `lost.json`: `{version, next_id, notes: [Lost...]}`, the loss notes not yet acknowledged.
//!
//! Both JSON files are replaced atomically (temporary file, fsync, rename, directory fsync).
//!
//! Segment header (little-endian), then frames back to back:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `MSPL` |
//! | 2 | format version (1) |
//! | 2 | boot id length *n* (1..=255) |
//! | 8 | seq of the first record |
//! | *n* | boot id (UTF-8) |
//! | 4 | CRC-32 of all the header bytes before it |
//!
//! Frame: `[u32 len][u32 crc32(body)][body]`, body = `seq u64`, `time_ns i64`, `kind_len u8`,
//! `kind`, `payload` (the record's JSON). A length under 17 or over 16 MiB is corruption.
//!
//! # Durability
//!
//! [`Spool::flush`] hands the buffered frames to the kernel (one `write(2)`, every drain round
//! of a few milliseconds); from then on an agent crash (OOM kill, panic, `SIGKILL`) loses
//! nothing. The segment being written is fsynced at least every
//! [`SpoolOptions::sync_interval`] (default 1 s, checked at every flush, also when no new
//! record came) and every [`SpoolOptions::sync_records`] records (default 10,000), and when it
//! is sealed. So a machine crash or power loss puts at risk at most the records flushed within
//! the last `sync_interval` or the last `sync_records` records, whichever is fewer, plus the
//! records not yet flushed (one drain round); the next open reports what is gone as a
//! [`LostReason::Corrupt`] note (the same window a disk buffer such as Vector's documents for
//! its own flush interval). `fsync: false` (tests, benchmarks) turns every fsync off.
//!
//! # Damage
//!
//! Every segment is read frame by frame when the spool opens (a 64 KiB window and one frame
//! buffer, so memory does not grow with a segment's size; a segment larger than
//! `segment_bytes` allows is reported in [`OpenReport::oversized_segments`] and read the same
//! way), and every frame's checksum is verified again when read back. A bad frame, a frame
//! cut short or a zero-filled tail (a torn write) makes the rest of its segment unreadable, in
//! any segment, the newest included: the spool adds a pending [`LostReason::Corrupt`] note and
//! cuts the segment at the bad frame. The note runs from the last good seq + 1 to
//!
//! - the next segment's first seq − 1 when that segment is of the same boot (exact);
//! - else the last of the intact frames found past the damage, when the search for them
//!   (bounded to 64 MiB) reaches the end of the file (exact);
//! - else the end is not determinable (a file cut short by a crash keeps no trace of what was
//!   after the cut): `count` and `last_seq` are 0 and [`Lost::bytes`] gives the damaged bytes.
//!
//! Records the collector acknowledged are never in a note. A segment with an unreadable
//! header is removed; its records are in the note of the segment before it (or in one of its
//! own when it is the first, attributed to the next segment's boot or to the boot id the
//! damaged header still shows).
//!
//! # Size cap
//!
//! When an append would take the spool past `max_bytes`, the oldest sealed segments are deleted,
//! each with a [`LostReason::Cap`] note covering exactly its records not yet acknowledged.

mod format;
mod open;
mod read;
mod scan;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_damage;
#[cfg(test)]
mod tests_memory;
mod write;

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use state::{ACK_FILE, AckState, LOST_FILE, LostState};

/// Default cap on the spool's size: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Default segment size: 4 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 << 20;
/// Default longest time a flushed record waits for its fsync: 1 s.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default most records flushed between two fsyncs: 10,000.
pub const DEFAULT_SYNC_RECORDS: u64 = 10_000;

/// How the spool sizes and syncs its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Cap on bytes on disk plus buffered; the oldest segments are dropped (and reported) beyond.
    pub max_bytes: u64,
    /// Size at which a segment is sealed and a new one begun; clamped to at most `max_bytes / 4`
    /// so that the cap never has to drop the segment being written.
    pub segment_bytes: u64,
    /// fsync a segment when it is sealed and on the interval below, and the state files when
    /// they are written. `false` turns every fsync off (tests, benchmarks).
    pub fsync: bool,
    /// Longest time a flushed record waits for the segment's fsync (the window a machine crash
    /// can lose; see the module doc). Checked at every [`Spool::flush`].
    pub sync_interval: Duration,
    /// Most records flushed between two fsyncs of the segment being written (0: no limit but
    /// the interval).
    pub sync_records: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync: true,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            sync_records: DEFAULT_SYNC_RECORDS,
        }
    }
}

/// Why the spool gave up on some records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LostReason {
    /// The spool reached its size cap and dropped its oldest unacknowledged segment.
    Cap,
    /// A segment failed its checksum when read back, or was found damaged or cut short (a
    /// torn write) when the spool opened.
    Corrupt,
}

impl LostReason {
    /// The proto's `LostRecords.source`: `spool/cap` or `spool/corrupt`.
    pub fn source(self) -> &'static str {
        match self {
            Self::Cap => "spool/cap",
            Self::Corrupt => "spool/corrupt",
        }
    }
}

/// A note of records the spool will never deliver; sent to the collector as `LostRecords` until
/// it acknowledges the note ([`Spool::ack_lost`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// Unique in this spool directory, persistent: the collector's acknowledgement names it.
    pub id: u64,
    /// The boot the lost records belong to.
    pub boot_id: String,
    /// Why they were lost.
    pub reason: LostReason,
    /// How many records (0 when the spool cannot tell).
    pub count: u64,
    /// First lost seq (0 when unknown).
    pub first_seq: u64,
    /// Last lost seq, inclusive (0 when unknown).
    pub last_seq: u64,
    /// Earliest write time of the lost records (Unix ns; 0 when unknown). Exact for
    /// [`LostReason::Cap`]; a bound for [`LostReason::Corrupt`].
    pub first_time_ns: i64,
    /// Latest write time of the lost records (Unix ns; 0 when unknown).
    pub last_time_ns: i64,
    /// Damaged bytes cut off the segments (0 when the loss was not found on disk, as at the
    /// cap): the measure of a loss whose record count is not determinable.
    #[serde(default)]
    pub bytes: u64,
}

/// One record read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRecord {
    /// The boot the record belongs to.
    pub boot_id: Arc<str>,
    /// Sequence number within the boot.
    pub seq: u64,
    /// When the agent wrote the record (Unix ns).
    pub time_ns: i64,
    /// Record kind (`http`, `flow`, ...).
    pub kind: String,
    /// The record's JSON.
    pub payload: Vec<u8>,
}

/// Records of one boot, in seq order, for one `Batch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolBatch {
    /// The boot every record belongs to.
    pub boot_id: Arc<str>,
    /// At least one record.
    pub records: Vec<SpooledRecord>,
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segments kept.
    pub segments: usize,
    /// Records not yet acknowledged (see [`Spool::pending_records`]).
    pub pending_records: u64,
    /// Bytes on disk in segments.
    pub bytes: u64,
    /// Corruption found: the notes added (already in [`Spool::pending_lost`]).
    pub corrupt: Vec<Lost>,
    /// Bytes of torn writes (frames or headers cut short, zero-filled tails) cut off segments;
    /// the records in them are in [`OpenReport::corrupt`].
    pub torn_bytes: u64,
    /// Segments larger than `segment_bytes` allows (written with other settings, or damaged):
    /// read frame by frame like any other, and reported.
    pub oversized_segments: usize,
    /// Loss notes pending in total, including earlier ones.
    pub pending_lost: usize,
    /// State files that were unreadable and set aside (`*.bad`), with why.
    pub bad_state_files: Vec<String>,
}

/// Why a spool operation failed. Messages name the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The directory cannot be created or written.
    #[error(
        "spool directory {path} is not usable: {source}; give the agent a writable --spool-dir"
    )]
    Dir {
        /// The directory (or the file in it that could not be created).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds the directory's lock.
    #[error(
        "spool directory {path} is in use by another process (its lock file is held); give each agent its own --spool-dir"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A spool file could not be read.
    #[error("cannot read spool file {path}: {source}; check the spool volume")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A spool file could not be written (typically a full disk). Nothing was lost: the
    /// record, or the buffered records, stay pending; retry later.
    #[error(
        "cannot write spool file {path}: {source}; free space on the spool volume or lower the spool cap (records stay buffered, retry)"
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// [`Spool::append`] before [`Spool::begin_boot`].
    #[error("spool append before begin_boot: the records' boot id is unknown")]
    NoBoot,
    /// A boot id that a segment header cannot hold.
    #[error("boot id {boot_id:?} must be 1 to 255 bytes")]
    BootId {
        /// The rejected id.
        boot_id: String,
    },
    /// Seqs must increase within a boot.
    #[error("record seq {seq} appended after seq {last} in boot {boot_id}: seqs must increase")]
    SeqOrder {
        /// The boot.
        boot_id: String,
        /// The rejected seq.
        seq: u64,
        /// The last seq appended.
        last: u64,
    },
    /// A record the format cannot hold.
    #[error(
        "record seq {seq} too large to spool: kind {kind_len} bytes (max 255), body {body} bytes (max 16 MiB)"
    )]
    TooLarge {
        /// The record.
        seq: u64,
        /// Kind length.
        kind_len: usize,
        /// Body length.
        body: usize,
    },
}

impl SpoolError {
    /// Whether the error comes from the disk (full, gone read-only) rather than from the caller:
    /// such an append or flush can be counted and retried.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            Self::Dir { .. } | Self::Read { .. } | Self::Write { .. }
        )
    }
}

/// A segment file, as known in memory.
#[derive(Debug)]
struct Segment {
    index: u64,
    boot: Arc<str>,
    /// Seq in the header: the first record's.
    first_seq: u64,
    /// Header length: where the first frame starts.
    data_start: u64,
    /// Bytes written (header and complete frames).
    len: u64,
    /// Good records in the file.
    records: u64,
    /// Seq of the last good record (0 when none).
    last_seq: u64,
    /// Write-time window of the good records.
    min_time: i64,
    max_time: i64,
    /// No longer written to.
    sealed: bool,
}

impl Segment {
    fn name(index: u64) -> String {
        format!("{index:016x}.seg")
    }
}

/// Frames appended but not yet written, all for the segment being written.
#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    records: u64,
    first_seq: u64,
    last_seq: u64,
    min_time: i64,
    max_time: i64,
}

/// Where [`Spool::next_batch`] reads next. `offset == 0` means "at the start of segment `seg`,
/// or of the first segment after it".
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    seg: u64,
    offset: u64,
    /// Good records of the segment before `offset`.
    seen: u64,
    /// Seq and time of the last of them (`first_seq - 1` and 0 when none).
    last_seq: u64,
    last_time: i64,
}

/// The spool. Plain data plus open files; `Send`, not `Sync`: wrap it in a mutex.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    opts: SpoolOptions,
    /// Held for the flock.
    _lock: File,
    segments: VecDeque<Segment>,
    /// Sum of `segments[..].len`.
    disk_bytes: u64,
    next_index: u64,
    /// Open while the last segment is being written.
    writer: Option<File>,
    boot: Option<Arc<str>>,
    /// Last seq appended in `boot`.
    last_seq: u64,
    buf: Buffer,
    /// The last acknowledgement: boot and watermark.
    ack: Option<(Arc<str>, u64)>,
    lost: Vec<Lost>,
    next_lost_id: u64,
    cursor: Cursor,
    reader: Option<(u64, File)>,
    read_buf: Vec<u8>,
    /// Records written to the current segment since its last fsync, and when the first of
    /// them was.
    unsynced_records: u64,
    unsynced_since: Option<Instant>,
}

impl Spool {
    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The collector acknowledged every record of `boot_id` with seq <= `watermark`, and, by
    /// the contract, every record of boots spooled before it. Deletes the fully acknowledged
    /// segments and persists the acknowledgement. An acknowledgement for a boot the spool no
    /// longer holds is ignored.
    pub fn ack(&mut self, boot_id: &str, watermark: u64) -> Result<(), SpoolError> {
        let Some(seg) = self.segments.iter().find(|s| &*s.boot == boot_id) else {
            debug!(
                boot_id,
                watermark, "spool: ack for a boot no longer spooled, ignored"
            );
            return Ok(());
        };
        let boot = seg.boot.clone();
        let watermark = match &self.ack {
            Some((b, w)) if *b == boot => {
                if *w >= watermark && self.segments.front().is_some_and(|s| s.boot == boot) {
                    return Ok(());
                }
                watermark.max(*w)
            }
            _ => watermark,
        };
        self.ack = Some((boot, watermark));
        self.apply_ack(true)
    }

    /// Loss notes the collector has not acknowledged yet (persisted: they survive a restart).
    pub fn pending_lost(&self) -> &[Lost] {
        &self.lost
    }

    /// The collector stored these loss notes: forget them.
    pub fn ack_lost(&mut self, ids: &[u64]) -> Result<(), SpoolError> {
        let before = self.lost.len();
        self.lost.retain(|l| !ids.contains(&l.id));
        if self.lost.len() != before {
            self.persist_lost()?;
        }
        Ok(())
    }

    /// Bytes on disk plus buffered (the spool-bytes metric).
    pub fn bytes(&self) -> u64 {
        // Buffered records with no segment to go to will need a header too.
        let header = match &self.boot {
            Some(b) if self.writer.is_none() && self.buf.records > 0 => format::header_len(b),
            _ => 0,
        };
        self.disk_bytes + self.buf.bytes.len() as u64 + header
    }

    /// The size cap.
    pub fn max_bytes(&self) -> u64 {
        self.opts.max_bytes
    }

    /// Records appended (or found at open) and not yet acknowledged. Exact, except in the one
    /// partly acknowledged segment, where the acknowledged ones are counted as
    /// `watermark - first_seq + 1` (exact when its seqs are consecutive, as the agent's are).
    pub fn pending_records(&self) -> u64 {
        let mut n = self.buf.records;
        for s in &self.segments {
            let acked = match &self.ack {
                Some((b, w)) if *b == s.boot && *w >= s.first_seq => {
                    (*w - s.first_seq + 1).min(s.records)
                }
                _ => 0,
            };
            n += s.records - acked;
        }
        n
    }

    fn seg_path(&self, index: u64) -> PathBuf {
        self.dir.join(Segment::name(index))
    }

    /// Deletes the segments the acknowledgement covers; persists the acknowledgement first
    /// when `persist` or when something is deleted.
    fn apply_ack(&mut self, persist: bool) -> Result<(), SpoolError> {
        let Some((boot, watermark)) = self.ack.clone() else {
            return Ok(());
        };
        let Some(first) = self.segments.iter().position(|s| s.boot == boot) else {
            return Ok(());
        };
        let mut done = first;
        while let Some(s) = self.segments.get(done)
            && s.sealed
            && s.boot == boot
            && (s.records == 0 || s.last_seq <= watermark)
        {
            done += 1;
        }
        if !persist && done == 0 {
            return Ok(());
        }
        let first_live = self.segments.get(done).map_or(self.next_index, |s| s.index);
        state::write(
            &self.dir,
            ACK_FILE,
            &AckState::new(&boot, watermark, first_live),
            self.opts.fsync,
        )?;
        for s in self.segments.drain(..done) {
            self.disk_bytes -= s.len;
            remove(&self.dir.join(Segment::name(s.index)));
            if self.reader.as_ref().is_some_and(|(i, _)| *i == s.index) {
                self.reader = None;
            }
        }
        Ok(())
    }

    fn persist_lost(&self) -> Result<(), SpoolError> {
        state::write(
            &self.dir,
            LOST_FILE,
            &LostState::new(self.next_lost_id, self.lost.clone()),
            self.opts.fsync,
        )
    }
}

impl Drop for Spool {
    /// Writes what is buffered and seals the segment, so that a clean stop loses nothing.
    fn drop(&mut self) {
        if let Err(e) = self.flush().and_then(|()| self.seal()) {
            warn!(dir = %self.dir.display(), error = %e, "spool: could not write buffered records at shutdown");
        }
    }
}

/// Removes a file, logging (not failing) when that is impossible: a leftover is found again at
/// the next open.
fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "spool: cannot remove file");
    }
}

/// Truncates a file to `len`, logging failures (the damage is then found again at next open).
fn truncate(path: &Path, len: u64, fsync: bool) {
    let r = OpenOptions::new().write(true).open(path).and_then(|f| {
        f.set_len(len)?;
        if fsync { f.sync_data() } else { Ok(()) }
    });
    if let Err(e) = r {
        warn!(path = %path.display(), error = %e, "spool: cannot truncate segment");
    }
}
