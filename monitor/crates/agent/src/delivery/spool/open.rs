//! Opening a spool directory: the lock, the state files, and a full check of every segment
//! (torn tails cut off, corruption turned into loss notes).

use std::{
    collections::VecDeque,
    fs::{self, OpenOptions},
    path::Path,
    sync::Arc,
};

use tracing::{debug, warn};

use super::{
    Buffer, Cursor, Lost, LostReason, OpenReport, Segment, Spool, SpoolError, SpoolOptions,
    format::{self, Parsed},
    remove,
    state::{self, ACK_FILE, AckState, LOST_FILE, LostState, ReadProblem},
    truncate,
};

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
            let scan = format::scan_frames(&data, header.len, header.first_seq, |_| {});
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
