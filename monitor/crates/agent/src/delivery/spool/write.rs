//! The writing side, used by the agent's drain thread: boots, appends into the memory buffer,
//! flushes into the current segment, sealing, and the size cap.

use std::{fs::OpenOptions, io::Write as _, sync::Arc, time::Instant};

use tracing::warn;

use super::{
    Lost, LostReason, Segment, Spool, SpoolError, format,
    read::corrupt_note,
    remove,
    scan::{self, HeaderRead, SegmentReader},
    state,
};

impl Spool {
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

    /// Writes the buffered records to the current segment (one `write(2)`), making them
    /// readable by [`Spool::next_batch`], and fsyncs the segment when the sync interval or
    /// record count is reached (also when nothing new was buffered: call it every drain
    /// round). On error nothing is lost: the records stay buffered (or unsynced) and the next
    /// flush retries.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if self.buf.records == 0 {
            return self.sync_if_due();
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
        self.unsynced_records += b.records;
        self.unsynced_since.get_or_insert_with(Instant::now);
        b.bytes.clear();
        b.records = 0;
        self.sync_if_due()
    }

    /// Whether records were written to the current segment and not yet fsynced (the caller
    /// keeps calling [`Spool::flush`], even without new records, until they are).
    pub fn unsynced(&self) -> bool {
        self.opts.fsync && self.unsynced_records > 0 && self.writer.is_some()
    }

    /// fsyncs the segment being written when its oldest unsynced record has waited
    /// `sync_interval` or `sync_records` records are unsynced.
    fn sync_if_due(&mut self) -> Result<(), SpoolError> {
        if !self.unsynced() {
            return Ok(());
        }
        let by_count =
            self.opts.sync_records > 0 && self.unsynced_records >= self.opts.sync_records;
        let by_time = self
            .unsynced_since
            .is_some_and(|t| t.elapsed() >= self.opts.sync_interval);
        if !(by_count || by_time) {
            return Ok(());
        }
        let (Some(file), Some(seg)) = (&self.writer, self.segments.back()) else {
            return Ok(());
        };
        file.sync_data().map_err(|source| SpoolError::Write {
            path: self.dir.join(Segment::name(seg.index)),
            source,
        })?;
        self.unsynced_records = 0;
        self.unsynced_since = None;
        Ok(())
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
    pub(super) fn seal(&mut self) -> Result<(), SpoolError> {
        let Some(file) = self.writer.take() else {
            return Ok(());
        };
        self.unsynced_records = 0;
        self.unsynced_since = None;
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
            bytes: 0,
        };
        let scanned = SegmentReader::open(&path).and_then(|mut r| {
            // The header was checked at open or written by this spool; read past it.
            match r.header()? {
                HeaderRead::Ok(_) => {}
                HeaderRead::Bad(why, _) => return Err(std::io::Error::other(why)),
            }
            scan::scan(&mut r, seg.first_seq, false, |f| {
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
            })
        });
        match scanned {
            Ok(scan) => {
                let end = scan.good_end.min(seg.len);
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
}
