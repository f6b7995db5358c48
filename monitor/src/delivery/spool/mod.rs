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
//! # On-disk format
//!
//! One directory (`--spool-dir`), holding:
//!
//! - `lock`: held with `flock` while a spool is open, so two agents cannot share a directory.
//! - `%016x.seg`: segments, named by a counter that only grows, so lexical order is creation
//!   order. All records of one segment belong to one boot, in ascending seq order. A segment is
//!   appended to until it reaches `segment_bytes`, then sealed (fsynced) and never written again
//!   (except to cut off a corrupt tail once it has been reported).
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
//! # Damage
//!
//! Every frame's checksum is verified when the spool opens and again when read back. A bad
//! frame makes the rest of its segment unreadable: the spool adds a pending
//! [`LostReason::Corrupt`] note (from the last good seq + 1 to the next segment's first seq − 1
//! when that segment is of the same boot, else to the last seq it knows, else 0 = unknown) and
//! cuts the segment at the bad frame. An incomplete last frame in the newest segment at open is a
//! torn write (the agent died mid-`write`): it is truncated away without a note, as those
//! records had never been reported as spooled.
//!
//! # Size cap
//!
//! When an append would take the spool past `max_bytes`, the oldest sealed segments are deleted,
//! each with a [`LostReason::Cap`] note covering exactly its records not yet acknowledged.

mod format;
mod state;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use format::Parsed;
use state::{ACK_FILE, AckState, LOST_FILE, LostState, ReadProblem};

/// Default cap on the spool's size: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Default segment size: 4 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 << 20;

/// How the spool sizes and syncs its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Cap on bytes on disk plus buffered; the oldest segments are dropped (and reported) beyond.
    pub max_bytes: u64,
    /// Size at which a segment is sealed and a new one begun; clamped to at most `max_bytes / 4`
    /// so that the cap never has to drop the segment being written.
    pub segment_bytes: u64,
    /// fsync a segment when it is sealed, and the state files when they are written.
    pub fsync: bool,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync: true,
        }
    }
}

/// Why the spool gave up on some records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LostReason {
    /// The spool reached its size cap and dropped its oldest unacknowledged segment.
    Cap,
    /// A segment failed its checksum when read back.
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
    /// Bytes of torn writes cut off the newest segment.
    pub torn_bytes: u64,
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
}

/// What a full read of a segment file found.
#[derive(Debug, Default)]
struct Scan {
    /// End of the last good frame.
    good_end: usize,
    records: u64,
    last_seq: u64,
    min_time: i64,
    max_time: i64,
    /// The bad frame's offset and what is wrong, unless the file ended cleanly.
    bad: Option<(usize, &'static str)>,
    /// The file ends inside a frame (at `good_end`).
    incomplete: bool,
}

/// Reads the frames of `data` from `start`, calling `each` on every good one.
fn scan_frames(
    data: &[u8],
    start: usize,
    first_seq: u64,
    mut each: impl FnMut(&format::Frame<'_>),
) -> Scan {
    let mut s = Scan {
        good_end: start,
        ..Scan::default()
    };
    let mut prev = first_seq.saturating_sub(1);
    let mut at = start;
    while at < data.len() {
        match format::parse_frame(&data[at..]) {
            Parsed::Ok(f, n) => {
                if f.seq <= prev {
                    s.bad = Some((at, "seq out of order"));
                    break;
                }
                prev = f.seq;
                each(&f);
                if s.records == 0 {
                    s.min_time = f.time_ns;
                    s.max_time = f.time_ns;
                }
                s.records += 1;
                s.last_seq = f.seq;
                s.min_time = s.min_time.min(f.time_ns);
                s.max_time = s.max_time.max(f.time_ns);
                at += n;
                s.good_end = at;
            }
            Parsed::Incomplete => {
                s.incomplete = true;
                break;
            }
            Parsed::Bad(why) => {
                s.bad = Some((at, why));
                break;
            }
        }
    }
    s
}

/// A segment found at open, before corruption is turned into notes.
#[derive(Debug)]
enum Found {
    Good {
        seg: Segment,
        /// The tail from `seg.len` on is corrupt (and the file this long).
        corrupt: Option<(&'static str, u64)>,
    },
    /// Header unreadable: nothing in it can be delivered.
    BadHeader { index: u64, why: &'static str },
}

impl Spool {
    /// Opens (creating it if missing) the spool in `dir`: verifies every segment, truncates a
    /// torn tail, turns corruption into pending [`Lost`] notes, and positions the send cursor at
    /// the first unacknowledged record. Call [`Spool::begin_boot`] before appending.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<(Spool, OpenReport), SpoolError> {
        let opts = SpoolOptions {
            segment_bytes: opts.segment_bytes.min(opts.max_bytes / 4).max(1),
            ..opts
        };
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Dir { path, source }
        };
        fs::create_dir_all(dir).map_err(dir_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(dir_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(dir_err(&lock_path)(e)),
        }
        let mut report = OpenReport::default();

        let ack_state: Option<AckState> = read_state(dir, ACK_FILE, &mut report)?;
        let lost_state: Option<LostState> = read_state(dir, LOST_FILE, &mut report)?;
        let first_live = ack_state.as_ref().map_or(0, |a| a.first_live_segment);

        let mut indices = Vec::new();
        for entry in fs::read_dir(dir).map_err(dir_err(dir))? {
            let entry = entry.map_err(dir_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                remove(&dir.join(name));
                continue;
            }
            if let Some(hex) = name.strip_suffix(".seg")
                && hex.len() == 16
                && let Ok(i) = u64::from_str_radix(hex, 16)
            {
                indices.push(i);
            }
        }
        indices.sort_unstable();
        let next_index = indices.last().map_or(0, |i| i + 1).max(first_live);

        let mut found = Vec::new();
        let newest = indices.last().copied();
        for index in indices {
            let path = dir.join(Segment::name(index));
            if index < first_live {
                debug!(path = %path.display(), "removing acknowledged spool segment");
                remove(&path);
                continue;
            }
            let data = fs::read(&path).map_err(|source| SpoolError::Read {
                path: path.clone(),
                source,
            })?;
            let is_newest = Some(index) == newest;
            let header = match format::parse_header(&data) {
                Parsed::Ok(h, _) => h,
                Parsed::Incomplete if is_newest => {
                    warn!(path = %path.display(), bytes = data.len(), "spool: torn segment header (crash while creating it), removed");
                    report.torn_bytes += data.len() as u64;
                    remove(&path);
                    continue;
                }
                Parsed::Bad(_) if is_newest && data.iter().all(|&b| b == 0) => {
                    warn!(path = %path.display(), bytes = data.len(), "spool: zeroed segment (crash while creating it), removed");
                    report.torn_bytes += data.len() as u64;
                    remove(&path);
                    continue;
                }
                Parsed::Incomplete => {
                    found.push(Found::BadHeader {
                        index,
                        why: "header cut short",
                    });
                    continue;
                }
                Parsed::Bad(why) => {
                    found.push(Found::BadHeader { index, why });
                    continue;
                }
            };
            let scan = scan_frames(&data, header.len, header.first_seq, |_| {});
            let mut len = scan.good_end as u64;
            let mut corrupt = None;
            if scan.incomplete || scan.bad.is_some() {
                let tail = &data[scan.good_end..];
                let last_frame = format::announced_len(tail).is_none_or(|n| n >= tail.len());
                let torn =
                    is_newest && (scan.incomplete || last_frame || tail.iter().all(|&b| b == 0));
                if torn {
                    warn!(path = %path.display(), bytes = tail.len(), "spool: torn write at the end of the newest segment (crash mid-write), truncated");
                    report.torn_bytes += tail.len() as u64;
                    truncate(&path, len, opts.fsync);
                } else {
                    let why = scan.bad.map_or("frame cut short", |(_, w)| w);
                    corrupt = Some((why, data.len() as u64));
                }
            }
            if scan.records == 0 && corrupt.is_none() {
                remove(&path);
                continue;
            }
            len = len.max(header.len as u64);
            found.push(Found::Good {
                seg: Segment {
                    index,
                    boot: header.boot_id.into(),
                    first_seq: header.first_seq,
                    data_start: header.len as u64,
                    len,
                    records: scan.records,
                    last_seq: scan.last_seq,
                    min_time: scan.min_time,
                    max_time: scan.max_time,
                    sealed: true,
                },
                corrupt,
            });
        }

        let (mut lost, mut next_lost_id) =
            lost_state.map_or((Vec::new(), 1), |s| (s.notes, s.next_id));
        let ack = ack_state.map(|a| (Arc::<str>::from(a.boot_id), a.watermark));
        let notes = corruption_notes(&found, ack.as_ref());
        for mut note in notes {
            note.id = next_lost_id;
            next_lost_id += 1;
            warn!(
                dir = %dir.display(), boot_id = %note.boot_id, first_seq = note.first_seq,
                last_seq = note.last_seq, count = note.count,
                "spool: corrupt segment, records reported lost (spool/corrupt)"
            );
            report.corrupt.push(note.clone());
            lost.push(note);
        }
        if !report.corrupt.is_empty() {
            state::write(
                dir,
                LOST_FILE,
                &LostState::new(next_lost_id, lost.clone()),
                opts.fsync,
            )?;
        }
        let mut segments = VecDeque::new();
        for f in found {
            match f {
                Found::Good { seg, corrupt } => {
                    let path = dir.join(Segment::name(seg.index));
                    if let Some((why, file_len)) = corrupt {
                        warn!(path = %path.display(), offset = seg.len, bytes = file_len - seg.len, why, "spool: corrupt frame, rest of the segment cut off");
                        truncate(&path, seg.len, opts.fsync);
                    }
                    if seg.records == 0 {
                        remove(&path);
                    } else {
                        segments.push_back(seg);
                    }
                }
                Found::BadHeader { index, why } => {
                    let path = dir.join(Segment::name(index));
                    warn!(path = %path.display(), why, "spool: unreadable segment header, segment removed");
                    remove(&path);
                }
            }
        }

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            opts,
            _lock: lock,
            disk_bytes: segments.iter().map(|s| s.len).sum(),
            segments,
            next_index,
            writer: None,
            boot: None,
            last_seq: 0,
            buf: Buffer::default(),
            ack,
            lost,
            next_lost_id,
            cursor: Cursor::default(),
            reader: None,
            read_buf: Vec::new(),
        };
        spool.apply_ack(false)?;
        report.segments = spool.segments.len();
        report.pending_records = spool.pending_records();
        report.bytes = spool.disk_bytes;
        report.pending_lost = spool.lost.len();
        Ok((spool, report))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a new boot (agent incarnation): flushes and seals what was being written; the
    /// following appends belong to `boot_id`, in a new segment, seqs starting afresh.
    pub fn begin_boot(&mut self, boot_id: &str) -> Result<(), SpoolError> {
        if boot_id.is_empty() || boot_id.len() > format::MAX_BOOT_ID {
            return Err(SpoolError::BootId {
                boot_id: boot_id.to_owned(),
            });
        }
        self.flush()?;
        self.seal()?;
        self.boot = Some(boot_id.into());
        self.last_seq = 0;
        Ok(())
    }

    /// Adds a record to the memory buffer (written by the next [`Spool::flush`]). Seqs must
    /// increase within a boot. May write (when the segment is full) and drop old segments (at
    /// the cap). On error the record was not spooled; an I/O error ([`SpoolError::is_io`]) can
    /// be counted and the append retried.
    pub fn append(
        &mut self,
        seq: u64,
        time_ns: i64,
        kind: &str,
        payload: &[u8],
    ) -> Result<(), SpoolError> {
        let Some(boot) = &self.boot else {
            return Err(SpoolError::NoBoot);
        };
        if seq <= self.last_seq {
            return Err(SpoolError::SeqOrder {
                boot_id: boot.to_string(),
                seq,
                last: self.last_seq,
            });
        }
        let frame = format::frame_len(kind, payload);
        if kind.len() > format::MAX_KIND || frame - format::FRAME_PREFIX > format::MAX_BODY {
            return Err(SpoolError::TooLarge {
                seq,
                kind_len: kind.len(),
                body: frame - format::FRAME_PREFIX,
            });
        }
        let header = format::header_len(boot);
        let frame = frame as u64;
        let buffered = self.buf.bytes.len() as u64;
        let current = match (&self.writer, self.segments.back()) {
            (Some(_), Some(s)) => s.len + buffered,
            _ => header + buffered,
        };
        let has_records = self.buf.records > 0
            || (self.writer.is_some() && self.segments.back().is_some_and(|s| s.records > 0));
        if has_records && current + frame > self.opts.segment_bytes {
            self.flush()?;
            self.seal()?;
        }
        let new_segment = if self.writer.is_none() && self.buf.records == 0 {
            header
        } else {
            0
        };
        while self.bytes() + new_segment + frame > self.opts.max_bytes
            && self.segments.front().is_some_and(|s| s.sealed)
        {
            self.drop_oldest()?;
        }
        let b = &mut self.buf;
        if b.records == 0 {
            b.first_seq = seq;
            b.min_time = time_ns;
            b.max_time = time_ns;
        }
        format::encode_frame(&mut b.bytes, seq, time_ns, kind, payload);
        b.records += 1;
        b.last_seq = seq;
        b.min_time = b.min_time.min(time_ns);
        b.max_time = b.max_time.max(time_ns);
        self.last_seq = seq;
        Ok(())
    }

    /// Writes the buffered records to the current segment (one `write(2)`, no fsync), making
    /// them readable by [`Spool::next_batch`]. On error nothing is lost: the records stay
    /// buffered and the next flush retries.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if self.buf.records == 0 {
            return Ok(());
        }
        let Some(boot) = self.boot.clone() else {
            return Err(SpoolError::NoBoot);
        };
        if self.writer.is_none() {
            self.create_segment(boot, self.buf.first_seq)?;
        }
        let (Some(file), Some(seg)) = (&mut self.writer, self.segments.back_mut()) else {
            return Err(SpoolError::NoBoot);
        };
        let path = self.dir.join(Segment::name(seg.index));
        if let Err(source) = file.write_all(&self.buf.bytes) {
            // Cut a partial write off so the file stays a sequence of whole frames; if even
            // that fails, stop writing to this segment (its tail is then reported on reopen
            // only if records are really missing).
            if file.set_len(seg.len).is_err() {
                self.writer = None;
                seg.sealed = true;
            }
            return Err(SpoolError::Write { path, source });
        }
        let b = &mut self.buf;
        if seg.records == 0 {
            seg.min_time = b.min_time;
            seg.max_time = b.max_time;
        }
        seg.len += b.bytes.len() as u64;
        self.disk_bytes += b.bytes.len() as u64;
        seg.records += b.records;
        seg.last_seq = b.last_seq;
        seg.min_time = seg.min_time.min(b.min_time);
        seg.max_time = seg.max_time.max(b.max_time);
        b.bytes.clear();
        b.records = 0;
        Ok(())
    }

    /// Reads up to `max_records` flushed records (and about `max_bytes` of payload, at least one
    /// record) from the send cursor and advances it. One boot per batch. `None` when everything
    /// flushed has been read. A checksum failure becomes a pending [`LostReason::Corrupt`] note
    /// and the rest of that segment is skipped.
    pub fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<SpoolBatch>, SpoolError> {
        let max_records = max_records.max(1);
        let chunk = max_bytes
            .saturating_add(max_records.saturating_mul(64))
            .clamp(64 << 10, 8 << 20);
        let mut out: Option<SpoolBatch> = None;
        let mut bytes = 0usize;
        let mut need = 0usize;
        'segments: while let Some(pos) = self.resolve_cursor() {
            let seg = &self.segments[pos];
            if out.as_ref().is_some_and(|b| b.boot_id != seg.boot) {
                break;
            }
            if self.cursor.offset >= seg.len {
                if seg.sealed {
                    self.cursor = Cursor {
                        seg: seg.index + 1,
                        ..Cursor::default()
                    };
                    continue;
                }
                break;
            }
            let remaining = (seg.len - self.cursor.offset) as usize;
            if need > remaining {
                self.corrupt_at_cursor(pos, "frame runs past the written end")?;
                need = 0;
                continue;
            }
            let want = remaining.min(chunk.max(need));
            need = 0;
            if !self.read_at(pos, self.cursor.offset, want)? {
                self.corrupt_at_cursor(pos, "file shorter than written")?;
                continue;
            }
            let boot = self.segments[pos].boot.clone();
            let acked = match &self.ack {
                Some((b, w)) if *b == boot => *w,
                _ => 0,
            };
            let buf = std::mem::take(&mut self.read_buf);
            let mut at = 0;
            let mut bad = None;
            loop {
                match format::parse_frame(&buf[at..]) {
                    Parsed::Ok(f, n) => {
                        if f.seq <= self.cursor.last_seq {
                            bad = Some("seq out of order");
                            break;
                        }
                        let deliver = f.seq > acked;
                        if deliver
                            && let Some(b) = &out
                            && (b.records.len() >= max_records
                                || bytes + f.payload.len() > max_bytes)
                        {
                            self.read_buf = buf;
                            break 'segments;
                        }
                        let c = &mut self.cursor;
                        c.offset += n as u64;
                        c.seen += 1;
                        c.last_seq = f.seq;
                        c.last_time = f.time_ns;
                        at += n;
                        if deliver {
                            bytes += f.payload.len();
                            out.get_or_insert_with(|| SpoolBatch {
                                boot_id: boot.clone(),
                                records: Vec::new(),
                            })
                            .records
                            .push(SpooledRecord {
                                boot_id: boot.clone(),
                                seq: f.seq,
                                time_ns: f.time_ns,
                                kind: f.kind.to_owned(),
                                payload: f.payload.to_vec(),
                            });
                        }
                    }
                    Parsed::Incomplete => {
                        if at == 0 {
                            need = format::announced_len(&buf).unwrap_or(format::FRAME_PREFIX);
                            if need <= want {
                                bad = Some("frame runs past the written end");
                            }
                        }
                        break;
                    }
                    Parsed::Bad(why) => {
                        bad = Some(why);
                        break;
                    }
                }
            }
            self.read_buf = buf;
            if let Some(why) = bad {
                self.corrupt_at_cursor(pos, why)?;
            }
        }
        Ok(out)
    }

    /// Moves the send cursor back to the first unacknowledged record: everything not yet
    /// acknowledged is delivered again (after a reconnect or a restart).
    pub fn rewind(&mut self) {
        self.cursor = Cursor::default();
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

    fn create_segment(&mut self, boot: Arc<str>, first_seq: u64) -> Result<(), SpoolError> {
        let index = self.next_index;
        let path = self.seg_path(index);
        let mut header = Vec::with_capacity(32 + boot.len());
        format::encode_header(&mut header, &boot, first_seq);
        let werr = |source| SpoolError::Write {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(werr)?;
        self.next_index += 1;
        if let Err(e) = file.write_all(&header) {
            remove(&path);
            return Err(werr(e));
        }
        self.disk_bytes += header.len() as u64;
        self.segments.push_back(Segment {
            index,
            boot,
            first_seq,
            data_start: header.len() as u64,
            len: header.len() as u64,
            records: 0,
            last_seq: 0,
            min_time: 0,
            max_time: 0,
            sealed: false,
        });
        self.writer = Some(file);
        Ok(())
    }

    /// Stops writing to the current segment: fsyncs it (per options) and deletes it if already
    /// acknowledged.
    fn seal(&mut self) -> Result<(), SpoolError> {
        let Some(file) = self.writer.take() else {
            return Ok(());
        };
        let Some(seg) = self.segments.back_mut() else {
            return Ok(());
        };
        seg.sealed = true;
        let index = seg.index;
        if self.opts.fsync {
            file.sync_data().map_err(|source| SpoolError::Write {
                path: self.seg_path(index),
                source,
            })?;
            state::sync_dir(&self.dir)?;
        }
        self.apply_ack(false)
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

    /// Deletes the oldest (sealed) segment at the cap, noting its unacknowledged records.
    fn drop_oldest(&mut self) -> Result<(), SpoolError> {
        let Some(seg) = self.segments.front() else {
            return Ok(());
        };
        let path = self.seg_path(seg.index);
        let acked = match &self.ack {
            Some((b, w)) if *b == seg.boot => *w,
            _ => 0,
        };
        let mut notes = Vec::new();
        let mut cap = Lost {
            id: 0,
            boot_id: seg.boot.to_string(),
            reason: LostReason::Cap,
            count: 0,
            first_seq: 0,
            last_seq: 0,
            first_time_ns: 0,
            last_time_ns: 0,
        };
        match fs::read(&path) {
            Ok(data) => {
                let scan = scan_frames(&data, seg.data_start as usize, seg.first_seq, |f| {
                    if f.seq <= acked {
                        return;
                    }
                    if cap.count == 0 {
                        cap.first_seq = f.seq;
                        cap.first_time_ns = f.time_ns;
                        cap.last_time_ns = f.time_ns;
                    }
                    cap.count += 1;
                    cap.last_seq = f.seq;
                    cap.first_time_ns = cap.first_time_ns.min(f.time_ns);
                    cap.last_time_ns = cap.last_time_ns.max(f.time_ns);
                });
                let end = (scan.good_end as u64).min(seg.len);
                if end < seg.len || scan.records < seg.records {
                    let (first, time) = if scan.records > 0 {
                        (scan.last_seq + 1, scan.max_time)
                    } else {
                        (seg.first_seq, 0)
                    };
                    notes.extend(corrupt_note(
                        seg,
                        first,
                        time,
                        seg.records - scan.records.min(seg.records),
                        acked,
                    ));
                }
            }
            Err(e) => {
                // The file is gone or unreadable: count from what the spool knows.
                warn!(path = %path.display(), error = %e, "spool: cannot read the segment dropped at the cap; loss counted from memory");
                if seg.last_seq > acked && seg.records > 0 {
                    let first = (acked + 1).max(seg.first_seq);
                    cap.first_seq = first;
                    cap.last_seq = seg.last_seq;
                    cap.count = (seg.last_seq - first + 1).min(seg.records);
                    cap.first_time_ns = seg.min_time;
                    cap.last_time_ns = seg.max_time;
                }
            }
        }
        if cap.count > 0 {
            warn!(
                path = %path.display(), boot_id = %cap.boot_id, count = cap.count,
                first_seq = cap.first_seq, last_seq = cap.last_seq,
                "spool: size cap reached, oldest segment dropped (spool/cap)"
            );
            notes.insert(0, cap);
        }
        if !notes.is_empty() {
            for mut n in notes {
                n.id = self.next_lost_id;
                self.next_lost_id += 1;
                self.lost.push(n);
            }
            self.persist_lost()?;
        }
        if let Some(seg) = self.segments.pop_front() {
            self.disk_bytes -= seg.len;
            if self.reader.as_ref().is_some_and(|(i, _)| *i == seg.index) {
                self.reader = None;
            }
        }
        remove(&path);
        Ok(())
    }

    /// Notes and cuts off the rest of segment `pos` from the send cursor, which read a bad frame
    /// there.
    fn corrupt_at_cursor(&mut self, pos: usize, why: &'static str) -> Result<(), SpoolError> {
        let c = self.cursor;
        let acked = match &self.ack {
            Some((b, w)) if self.segments.get(pos).is_some_and(|s| s.boot == *b) => *w,
            _ => 0,
        };
        let is_last = pos + 1 == self.segments.len();
        let Some(seg) = self.segments.get_mut(pos) else {
            return Ok(());
        };
        let path = self.dir.join(Segment::name(seg.index));
        warn!(path = %path.display(), offset = c.offset, why, "spool: corrupt frame read back, rest of the segment reported lost (spool/corrupt)");
        let lost_records = seg.records.saturating_sub(c.seen);
        let note = corrupt_note(
            seg,
            c.last_seq + 1,
            if c.seen > 0 { c.last_time } else { 0 },
            lost_records,
            acked,
        );
        seg.records = c.seen;
        seg.last_seq = if c.seen > 0 { c.last_seq } else { 0 };
        if c.seen > 0 {
            seg.max_time = c.last_time;
        }
        self.disk_bytes -= seg.len - c.offset;
        seg.len = c.offset;
        if is_last && self.writer.is_some() {
            // Later appends go to a new segment, past the damage.
            self.writer = None;
            seg.sealed = true;
        }
        if let Err(e) = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(c.offset))
        {
            warn!(path = %path.display(), error = %e, "spool: cannot cut off the corrupt tail; it will be reported again at the next open");
        }
        if let Some(mut n) = note {
            n.id = self.next_lost_id;
            self.next_lost_id += 1;
            self.lost.push(n);
            self.persist_lost()?;
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

    /// Points the cursor at a live segment (the first at or after its own), returning its
    /// position; `None` when no segment is left to read.
    fn resolve_cursor(&mut self) -> Option<usize> {
        let pos = self.segments.partition_point(|s| s.index < self.cursor.seg);
        let seg = self.segments.get(pos)?;
        if seg.index != self.cursor.seg || self.cursor.offset == 0 {
            self.cursor = Cursor {
                seg: seg.index,
                offset: seg.data_start,
                seen: 0,
                last_seq: seg.first_seq.saturating_sub(1),
                last_time: 0,
            };
        }
        Some(pos)
    }

    /// Reads `len` bytes of segment `pos` at `offset` into `read_buf`; `false` if the file is
    /// shorter.
    fn read_at(&mut self, pos: usize, offset: u64, len: usize) -> Result<bool, SpoolError> {
        let index = self.segments[pos].index;
        let path = self.seg_path(index);
        let rerr = |source| SpoolError::Read {
            path: path.clone(),
            source,
        };
        let file = match &mut self.reader {
            Some((i, f)) if *i == index => f,
            slot => {
                let f = File::open(&path).map_err(rerr)?;
                &mut slot.insert((index, f)).1
            }
        };
        self.read_buf.resize(len, 0);
        match file.read_exact_at(&mut self.read_buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(rerr(e)),
        }
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

/// A corrupt note for segment `seg` from `first` to its last known seq, `count` records, net of
/// those acknowledged (seq <= `acked`); `None` when nothing unacknowledged is lost.
fn corrupt_note(
    seg: &Segment,
    first: u64,
    first_time: i64,
    count: u64,
    acked: u64,
) -> Option<Lost> {
    if count == 0 || seg.last_seq < first {
        return None;
    }
    let skip = if acked >= first {
        (acked.min(seg.last_seq) - first + 1).min(count)
    } else {
        0
    };
    let count = count - skip;
    (count > 0).then(|| Lost {
        id: 0,
        boot_id: seg.boot.to_string(),
        reason: LostReason::Corrupt,
        count,
        first_seq: first.max(acked + 1),
        last_seq: seg.last_seq,
        first_time_ns: first_time,
        last_time_ns: seg.max_time,
    })
}

/// The notes for the corruption found at open: a corrupt tail, and segments with an unreadable
/// header (covered by the previous segment's note, or their own when first).
fn corruption_notes(found: &[Found], ack: Option<&(Arc<str>, u64)>) -> Vec<Lost> {
    let mut notes = Vec::new();
    for (i, f) in found.iter().enumerate() {
        let next_good = found[i + 1..].iter().find_map(|f| match f {
            Found::Good { seg, .. } => Some(seg),
            Found::BadHeader { .. } => None,
        });
        let bad_header_follows = matches!(found.get(i + 1), Some(Found::BadHeader { .. }));
        let (boot, first, first_time) = match f {
            Found::Good { seg, corrupt } => {
                if corrupt.is_none() && !bad_header_follows {
                    continue;
                }
                let first = if seg.records > 0 {
                    seg.last_seq + 1
                } else {
                    seg.first_seq
                };
                let time = if seg.records > 0 { seg.max_time } else { 0 };
                (seg.boot.to_string(), first, time)
            }
            Found::BadHeader { .. } if i == 0 => match next_good {
                // Nothing before it: attribute to the next segment's boot, start unknown.
                Some(next) => (next.boot.to_string(), 0, 0),
                None => (String::new(), 0, 0),
            },
            // Covered by the note of the segment before it.
            Found::BadHeader { .. } => continue,
        };
        let (last, last_time) = match next_good {
            Some(n) if *n.boot == *boot => (n.first_seq.saturating_sub(1), n.min_time),
            _ => (0, 0),
        };
        let acked = match ack {
            Some((b, w)) if **b == *boot => *w,
            _ => 0,
        };
        let first = if first != 0 { first.max(acked + 1) } else { 0 };
        if last != 0 && (last < first || last <= acked) {
            continue;
        }
        let count = if last != 0 && first != 0 {
            last - first + 1
        } else {
            0
        };
        notes.push(Lost {
            id: 0,
            boot_id: boot,
            reason: LostReason::Corrupt,
            count,
            first_seq: first,
            last_seq: last,
            first_time_ns: first_time,
            last_time_ns: last_time,
        });
    }
    notes
}

/// Reads a state file; an invalid one is set aside and reported, not fatal (the ack state only
/// saves resending; lost notes cannot be recovered from a damaged file anyway).
fn read_state<T: serde::de::DeserializeOwned + state::HasVersion>(
    dir: &Path,
    name: &str,
    report: &mut OpenReport,
) -> Result<Option<T>, SpoolError> {
    match state::read::<T>(dir, name) {
        Ok(v) => Ok(v),
        Err(ReadProblem::Io(e)) => Err(e),
        Err(ReadProblem::Invalid(path, why)) => {
            let bad = dir.join(format!("{name}.bad"));
            warn!(path = %path.display(), why, set_aside = %bad.display(), "spool: unreadable state file set aside");
            if let Err(source) = fs::rename(&path, &bad) {
                return Err(SpoolError::Write { path, source });
            }
            report
                .bad_state_files
                .push(format!("{}: {why}", path.display()));
            Ok(None)
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
