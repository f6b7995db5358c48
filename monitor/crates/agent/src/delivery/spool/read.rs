//! The reading side, used by the sender: batches from the send cursor, rewind, and corruption
//! found when reading back.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt as _,
};

use tracing::warn;

use super::{
    Cursor, Lost, LostReason, Segment, Spool, SpoolBatch, SpoolError, SpooledRecord,
    format::{self, Parsed},
};

impl Spool {
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
            match self.read_at(pos, self.cursor.offset, want) {
                Ok(true) => {}
                Ok(false) => {
                    self.corrupt_at_cursor(pos, "file shorter than written")?;
                    continue;
                }
                Err(e) => {
                    // A segment that cannot be read (deleted, I/O error) would stop delivery
                    // for good if retried: note its unread records as lost and go on.
                    warn!(error = %e, "spool: segment unreadable");
                    self.reader = None;
                    self.corrupt_at_cursor(pos, "segment unreadable")?;
                    continue;
                }
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
        )
        .map(|n| Lost {
            bytes: seg.len.saturating_sub(c.offset),
            ..n
        });
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
}

/// A corrupt note for segment `seg` from `first` to its last known seq, `count` records, net of
/// those acknowledged (seq <= `acked`); `None` when nothing unacknowledged is lost.
pub(super) fn corrupt_note(
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
        bytes: 0,
    })
}
