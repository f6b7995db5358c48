//! Opening a spool directory: the lock, the state files, and a full check of every segment,
//! read frame by frame ([`super::scan`]): damage (torn tails included, in any segment) is cut
//! off and turned into loss notes.

use std::{
    collections::VecDeque,
    fs::{self, OpenOptions},
    path::Path,
    sync::Arc,
};

use tracing::{debug, warn};

use super::{
    Buffer, Cursor, Lost, LostReason, OpenReport, Segment, Spool, SpoolError, SpoolOptions, format,
    remove,
    scan::{self, After, Damage, HeaderRead, SegmentReader},
    state::{self, ACK_FILE, AckState, LOST_FILE, LostState, ReadProblem},
    truncate,
};

impl Spool {
    /// Opens (creating it if missing) the spool in `dir`: verifies every segment frame by frame
    /// (memory bounded by the largest frame, whatever a segment's size), cuts damaged tails off
    /// and turns them into pending [`Lost`] notes, and positions the send cursor at the first
    /// unacknowledged record. Call [`Spool::begin_boot`] before appending.
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

        let bound = segment_bound(opts.segment_bytes);
        let mut found = Vec::new();
        for index in indices {
            let path = dir.join(Segment::name(index));
            if index < first_live {
                debug!(path = %path.display(), "removing acknowledged spool segment");
                remove(&path);
                continue;
            }
            let rerr = |source| SpoolError::Read {
                path: path.clone(),
                source,
            };
            let mut r = SegmentReader::open(&path).map_err(rerr)?;
            if r.len() == 0 {
                // Created, never written: nothing on disk to report.
                debug!(path = %path.display(), "removing empty spool segment");
                remove(&path);
                continue;
            }
            if r.len() > bound {
                warn!(path = %path.display(), bytes = r.len(), bound,
                    "spool: segment larger than the configured segment size allows (written with other settings, or damaged); reading it frame by frame");
                report.oversized_segments += 1;
            }
            let header = match r.header().map_err(rerr)? {
                HeaderRead::Ok(h) => h,
                HeaderRead::Bad(why, hint) => {
                    let after = r.count_after(0, 0).map_err(rerr)?;
                    if matches!(why, format::HEADER_CUT | format::HEADER_ZEROED) {
                        report.torn_bytes += r.len();
                    }
                    found.push(Found::BadHeader {
                        index,
                        why,
                        bytes: r.len(),
                        hint,
                        after,
                    });
                    continue;
                }
            };
            let scan = scan::scan(&mut r, header.first_seq, true, |_| {}).map_err(rerr)?;
            if let Some(d) = &scan.damage
                && d.torn
            {
                report.torn_bytes += d.bytes;
            }
            if scan.records == 0 && scan.damage.is_none() {
                remove(&path);
                continue;
            }
            found.push(Found::Good {
                seg: Segment {
                    index,
                    boot: header.boot_id.into(),
                    first_seq: header.first_seq,
                    data_start: header.len as u64,
                    len: scan.good_end.max(header.len as u64),
                    records: scan.records,
                    last_seq: scan.last_seq,
                    min_time: scan.min_time,
                    max_time: scan.max_time,
                    sealed: true,
                },
                damage: scan.damage,
            });
        }

        let (mut lost, mut next_lost_id) =
            lost_state.map_or((Vec::new(), 1), |s| (s.notes, s.next_id));
        let ack = ack_state.map(|a| (Arc::<str>::from(a.boot_id), a.watermark));
        let notes = damage_notes(&found, ack.as_ref());
        for mut note in notes {
            note.id = next_lost_id;
            next_lost_id += 1;
            warn!(
                dir = %dir.display(), boot_id = %note.boot_id, first_seq = note.first_seq,
                last_seq = note.last_seq, count = note.count, bytes = note.bytes,
                "spool: damaged segment, records reported lost (spool/corrupt; count 0 = not determinable, see bytes)"
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
                Found::Good { seg, damage } => {
                    let path = dir.join(Segment::name(seg.index));
                    if let Some(d) = damage {
                        warn!(path = %path.display(), offset = d.at, bytes = d.bytes, why = d.why, torn = d.torn,
                            intact_after = d.after.records,
                            "spool: damaged frame, rest of the segment cut off");
                        truncate(&path, seg.len, opts.fsync);
                    }
                    if seg.records == 0 {
                        remove(&path);
                    } else {
                        segments.push_back(seg);
                    }
                }
                Found::BadHeader { index, why, .. } => {
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
            unsynced_records: 0,
            unsynced_since: None,
        };
        spool.apply_ack(false)?;
        report.segments = spool.segments.len();
        report.pending_records = spool.pending_records();
        report.bytes = spool.disk_bytes;
        report.pending_lost = spool.lost.len();
        Ok((spool, report))
    }
}

/// Largest size a segment written with `segment_bytes` can have: a header and frames up to
/// the limit, plus one frame of the largest size (a record larger than a segment gets a
/// segment of its own).
pub(super) fn segment_bound(segment_bytes: u64) -> u64 {
    segment_bytes
        .saturating_add((format::MAX_HEADER + format::FRAME_PREFIX + format::MAX_BODY) as u64)
}

/// A segment found at open, before damage is turned into notes.
#[derive(Debug)]
enum Found {
    Good {
        seg: Segment,
        /// The tail from `seg.len` on is damaged.
        damage: Option<Damage>,
    },
    /// Header unreadable: nothing in it can be delivered.
    BadHeader {
        index: u64,
        why: &'static str,
        /// File length.
        bytes: u64,
        /// Boot id and first seq the damaged header still shows.
        hint: Option<(String, u64)>,
        /// Intact frames found in it.
        after: After,
    },
}

/// The notes for the damage found at open. A run of damage starts at a segment with a
/// damaged tail, or one followed by segments with an unreadable header, or at an unreadable
/// first segment, and takes in the unreadable segments after it. Its records run from the
/// last good one + 1 to the next good segment's first − 1 when that segment is of the same
/// boot; else to the last intact frame found in the run's last segment when the search for
/// them reached its end; else the end is not determinable (count 0) and the note gives the
/// damaged bytes.
fn damage_notes(found: &[Found], ack: Option<&(Arc<str>, u64)>) -> Vec<Lost> {
    let mut notes = Vec::new();
    let mut i = 0;
    while let Some(start) = found.get(i) {
        let mut j = i + 1;
        while matches!(found.get(j), Some(Found::BadHeader { .. })) {
            j += 1;
        }
        let run = &found[i..j];
        i = j;
        let next_good = match found.get(j) {
            Some(Found::Good { seg, .. }) => Some(seg),
            _ => None,
        };
        if matches!(start, Found::Good { damage: None, .. }) && run.len() == 1 {
            continue;
        }
        let (boot, first, first_time) = match start {
            Found::Good { seg, .. } if seg.records > 0 => {
                (seg.boot.to_string(), seg.last_seq + 1, seg.max_time)
            }
            Found::Good { seg, .. } => (seg.boot.to_string(), seg.first_seq, 0),
            // Only the first segment starts a run this way: attribute it to the next good
            // segment's boot, else to what the header still shows.
            Found::BadHeader { hint, after, .. } => {
                let boot = next_good
                    .map(|n| n.boot.to_string())
                    .or_else(|| hint.as_ref().map(|h| h.0.clone()))
                    .unwrap_or_default();
                // The first intact frame's seq is checked (its checksum); the header's is
                // not, so it is used only when it is consistent with what follows.
                let limit = match next_good {
                    Some(n) if *n.boot == *boot => n.first_seq,
                    _ => u64::MAX,
                };
                let limit = if after.records > 0 {
                    limit.min(after.first_seq.saturating_add(1))
                } else {
                    limit
                };
                let first = match hint {
                    Some((b, s)) if *b == boot && *s > 0 && *s < limit => *s,
                    _ => after.first_seq,
                };
                (boot, first, 0)
            }
        };
        let bytes: u64 = run
            .iter()
            .map(|f| match f {
                Found::Good { damage, .. } => damage.map_or(0, |d| d.bytes),
                Found::BadHeader { bytes, .. } => *bytes,
            })
            .sum();
        // What the run's last segment still holds past its damage.
        let tail = match run.last() {
            Some(Found::Good { damage, .. }) => damage.map(|d| d.after),
            // Frames of an unreadable segment count for this run only if they are of its boot
            // as far as can be told, and continue its seqs.
            Some(Found::BadHeader { hint, after, .. }) => match hint {
                Some((b, _)) if *b != boot => None,
                _ if after.records > 0 && after.first_seq < first => None,
                _ => Some(*after),
            },
            None => None,
        };
        let (last, last_time) = match (next_good, tail) {
            (Some(n), _) if *n.boot == *boot => (n.first_seq.saturating_sub(1), n.min_time),
            (_, Some(a)) if a.complete && a.records > 0 => (a.last_seq, a.max_time),
            _ => (0, 0),
        };
        let acked = match ack {
            Some((b, w)) if **b == *boot => *w,
            _ => 0,
        };
        let first = if first != 0 || acked != 0 {
            first.max(acked + 1)
        } else {
            0
        };
        if last != 0 && last < first {
            // Nothing unacknowledged was in the damaged bytes.
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
            bytes,
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
