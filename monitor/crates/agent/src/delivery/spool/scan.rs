//! Reading a segment file frame by frame with bounded memory: a 64 KiB window read with
//! `pread`, plus one buffer for a frame larger than that (at most [`format::MAX_BODY`]). A
//! frame's announced length is checked against the format's limit and against the bytes left
//! in the file before anything is read or allocated, so neither a huge segment nor a damaged
//! length field can make the spool read a whole file into memory.
//!
//! Past damage (a bad or cut-off frame), [`scan`] searches the rest of the segment for frames
//! that are still intact (a resync, bounded to [`RESYNC_LIMIT`] bytes), only to *count* what
//! the damage costs: the records from the damage to the last intact frame are reported lost
//! exactly when that search reaches the end of the file.

use std::{fs::File, io, os::unix::fs::FileExt as _, path::Path};

use super::format::{self, Header, Parsed};

/// Bytes read at once.
const WINDOW: usize = 64 << 10;
/// Most bytes examined past damage in one segment by the search for intact frames.
pub(super) const RESYNC_LIMIT: u64 = 64 << 20;
/// Largest seq step a frame found by the search may take from the one before it: a bound
/// that makes random bytes passing for a frame header practically impossible (the agent's
/// seqs are consecutive).
const MAX_SEQ_STEP: u64 = 1 << 32;

/// One frame's metadata, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameInfo {
    /// Record sequence number.
    pub seq: u64,
    /// When the agent wrote the record (Unix ns).
    pub time_ns: i64,
    /// Offset of the frame in the file.
    pub offset: u64,
    /// Bytes the frame takes.
    pub len: u64,
}

/// A segment file opened for reading.
#[derive(Debug)]
pub(super) struct SegmentReader {
    file: File,
    /// File length when opened.
    len: u64,
    /// Offset of the next frame.
    pos: u64,
    window: Vec<u8>,
    /// File offset of `window[0]`.
    window_at: u64,
    /// For frames larger than the window.
    big: Vec<u8>,
}

/// What [`SegmentReader::next_frame`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// A good frame (the reader moved past it).
    Frame(FrameInfo),
    /// The file ends exactly here.
    End,
    /// The file ends inside the frame starting here.
    Incomplete,
    /// The frame here is invalid: what is wrong.
    Bad(&'static str),
}

/// What reading a segment header found.
#[derive(Debug)]
pub(super) enum HeaderRead {
    /// A valid header.
    Ok(Header),
    /// No valid header: what is wrong, and the boot id and first seq the damaged header
    /// still shows, if its fixed part and boot id are readable (a hint, not verified).
    Bad(&'static str, Option<(String, u64)>),
}

/// Records found past damage, and whether that search reached the end of the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct After {
    /// Intact frames found.
    pub records: u64,
    /// Seq of the first and last of them (0 when none).
    pub first_seq: u64,
    pub last_seq: u64,
    /// Their write-time window (0 when none).
    pub min_time: i64,
    pub max_time: i64,
    /// The search ended exactly at the end of the file after an intact frame: nothing past
    /// `last_seq` can have been in this segment.
    pub complete: bool,
}

impl After {
    fn add(&mut self, f: &FrameInfo) {
        if self.records == 0 {
            self.first_seq = f.seq;
            self.min_time = f.time_ns;
            self.max_time = f.time_ns;
        }
        self.records += 1;
        self.last_seq = f.seq;
        self.min_time = self.min_time.min(f.time_ns);
        self.max_time = self.max_time.max(f.time_ns);
    }
}

/// Damage found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Damage {
    /// Where the first bad or cut-off frame starts (the end of the good frames).
    pub at: u64,
    /// What is wrong there.
    pub why: &'static str,
    /// Bytes from `at` to the end of the file.
    pub bytes: u64,
    /// The file ends inside that frame, or only zero bytes follow: a torn write.
    pub torn: bool,
    /// Intact frames past the damage (counted, not kept).
    pub after: After,
}

/// What reading a segment's frames found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Scan {
    /// File length.
    pub file_len: u64,
    /// End of the last good frame.
    pub good_end: u64,
    /// Good frames before any damage.
    pub records: u64,
    /// Seq of the last of them (0 when none).
    pub last_seq: u64,
    /// Their write-time window (0 when none).
    pub min_time: i64,
    pub max_time: i64,
    /// The first damage, if the frames do not run cleanly to the end of the file.
    pub damage: Option<Damage>,
}

impl SegmentReader {
    /// Opens `path`, positioned at the start of the file.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            len,
            pos: 0,
            window: Vec::new(),
            window_at: 0,
            big: Vec::new(),
        })
    }

    /// The file's length when opened.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Up to `n` bytes at `at` (fewer only where the file ends).
    fn bytes_at(&mut self, at: u64, n: usize) -> io::Result<&[u8]> {
        let end = at.saturating_add(n as u64).min(self.len);
        let n = end.saturating_sub(at) as usize;
        if n == 0 {
            return Ok(&[]);
        }
        let win_end = self.window_at + self.window.len() as u64;
        if at >= self.window_at && end <= win_end {
            let from = (at - self.window_at) as usize;
            return Ok(&self.window[from..from + n]);
        }
        let (buf, size) = if n <= WINDOW {
            self.window_at = at;
            let size = (self.len - at).min(WINDOW as u64) as usize;
            (&mut self.window, size)
        } else {
            (&mut self.big, n)
        };
        buf.resize(size, 0);
        let got = read_full_at(&self.file, buf, at)?;
        buf.truncate(got);
        Ok(&buf[..n.min(got)])
    }

    /// Reads the segment header at the start of the file and moves past it.
    pub(super) fn header(&mut self) -> io::Result<HeaderRead> {
        let b = self.bytes_at(0, format::MAX_HEADER)?;
        Ok(match format::parse_header(b) {
            Parsed::Ok(h, n) => {
                self.pos = n as u64;
                HeaderRead::Ok(h)
            }
            Parsed::Incomplete => HeaderRead::Bad(format::HEADER_CUT, format::header_hint(b)),
            Parsed::Bad(_) if b.iter().all(|&x| x == 0) => {
                HeaderRead::Bad(format::HEADER_ZEROED, None)
            }
            Parsed::Bad(why) => HeaderRead::Bad(why, format::header_hint(b)),
        })
    }

    /// Reads the frame at the current position.
    pub(super) fn next_frame(&mut self) -> io::Result<Step> {
        let at = self.pos;
        if at >= self.len {
            return Ok(Step::End);
        }
        let prefix = self.bytes_at(at, format::FRAME_PREFIX)?;
        let Some(n) = format::announced_len(prefix) else {
            return Ok(Step::Incomplete);
        };
        if !(format::MIN_FRAME..=format::FRAME_PREFIX + format::MAX_BODY).contains(&n) {
            return Ok(Step::Bad("frame length out of range"));
        }
        if at + n as u64 > self.len {
            return Ok(Step::Incomplete);
        }
        let b = self.bytes_at(at, n)?;
        Ok(match format::parse_frame(b) {
            Parsed::Ok(f, n) => {
                let info = FrameInfo {
                    seq: f.seq,
                    time_ns: f.time_ns,
                    offset: at,
                    len: n as u64,
                };
                self.pos = at + n as u64;
                Step::Frame(info)
            }
            // The file shrank under us.
            Parsed::Incomplete => Step::Incomplete,
            Parsed::Bad(why) => Step::Bad(why),
        })
    }

    /// Whether every byte from `at` to the end of the file (or in the first [`RESYNC_LIMIT`]
    /// bytes of that) is zero: what a file system may show of a file extended by writes that
    /// never reached the disk.
    fn zeros_from(&mut self, at: u64) -> io::Result<bool> {
        let stop = at.saturating_add(RESYNC_LIMIT).min(self.len);
        let mut at = at;
        while at < stop {
            let chunk = self.bytes_at(at, WINDOW)?;
            if chunk.is_empty() {
                break;
            }
            if chunk.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += chunk.len() as u64;
        }
        Ok(true)
    }

    /// Searches for intact frames from `from` on (frames with seqs above `prev`), and reads
    /// on from each one found; stops after [`RESYNC_LIMIT`] bytes of searching.
    pub(super) fn count_after(&mut self, from: u64, prev: u64) -> io::Result<After> {
        let mut after = After::default();
        let mut prev = prev;
        let mut at = from;
        let mut searched = 0u64;
        while at < self.len && searched < RESYNC_LIMIT {
            let Some(found) = self.find_frame(at, prev, &mut searched)? else {
                return Ok(after);
            };
            self.pos = found;
            loop {
                match self.next_frame()? {
                    Step::Frame(f) if f.seq > prev => {
                        after.add(&f);
                        prev = f.seq;
                    }
                    Step::End => {
                        after.complete = true;
                        return Ok(after);
                    }
                    Step::Frame(_) | Step::Incomplete | Step::Bad(_) => {
                        at = self.pos + 1;
                        break;
                    }
                }
            }
        }
        Ok(after)
    }

    /// The offset of the next plausible intact frame at or after `from`.
    fn find_frame(&mut self, from: u64, prev: u64, searched: &mut u64) -> io::Result<Option<u64>> {
        let mut at = from;
        let len = self.len;
        while at + format::MIN_FRAME as u64 <= len && *searched < RESYNC_LIMIT {
            let chunk = self.bytes_at(at, WINDOW)?;
            if chunk.len() < format::MIN_FRAME {
                return Ok(None);
            }
            let mut hit = None;
            let usable = chunk.len() + 1 - format::MIN_FRAME;
            for i in 0..usable {
                if let Some(n) = format::plausible_frame(&chunk[i..], prev, MAX_SEQ_STEP)
                    && at + i as u64 + n as u64 <= len
                {
                    hit = Some((i, n));
                    break;
                }
            }
            match hit {
                Some((i, n)) => {
                    let cand = at + i as u64;
                    *searched += i as u64 + 1;
                    let b = self.bytes_at(cand, n)?;
                    if matches!(format::parse_frame(b), Parsed::Ok(..)) {
                        return Ok(Some(cand));
                    }
                    at = cand + 1;
                }
                None => {
                    *searched += usable as u64;
                    at += usable as u64;
                }
            }
        }
        Ok(None)
    }
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads the frames of an open segment from its current position (after the header, whose
/// first record is `first_seq`), calling `each` on every good one; past damage, counts the
/// intact frames that follow when `count_after`.
pub(super) fn scan(
    r: &mut SegmentReader,
    first_seq: u64,
    count_after: bool,
    mut each: impl FnMut(&FrameInfo),
) -> io::Result<Scan> {
    let mut s = Scan {
        file_len: r.len(),
        good_end: r.pos,
        ..Scan::default()
    };
    let mut prev = first_seq.saturating_sub(1);
    loop {
        let (why, incomplete) = match r.next_frame()? {
            Step::Frame(f) if f.seq > prev => {
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
                s.good_end = r.pos;
                continue;
            }
            Step::End => return Ok(s),
            Step::Frame(_) => ("seq out of order", false),
            Step::Incomplete => ("frame cut short", true),
            Step::Bad(why) => (why, false),
        };
        let at = s.good_end;
        let zeros = r.zeros_from(at)?;
        let after = if zeros || !count_after {
            After::default()
        } else {
            r.count_after(at + 1, prev)?
        };
        let torn = zeros || (incomplete && after.records == 0);
        s.damage = Some(Damage {
            at,
            why,
            bytes: s.file_len - at,
            torn,
            after,
        });
        return Ok(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, payload: usize) -> Vec<u8> {
        let mut f = Vec::new();
        format::encode_frame(&mut f, seq, seq as i64 * 10, "http", &vec![b'p'; payload]);
        f
    }

    fn segment(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut b = Vec::new();
        format::encode_header(&mut b, "boot", 1);
        for f in frames {
            b.extend_from_slice(f);
        }
        b
    }

    fn scan_bytes(data: &[u8]) -> Scan {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.seg");
        std::fs::write(&p, data).unwrap();
        let mut r = SegmentReader::open(&p).unwrap();
        let HeaderRead::Ok(h) = r.header().unwrap() else {
            panic!("bad header")
        };
        scan(&mut r, h.first_seq, true, |_| {}).unwrap()
    }

    #[test]
    fn frames_larger_than_the_window_are_read() {
        let frames: Vec<_> = (1..=5).map(|s| frame(s, WINDOW * 2 + 7)).collect();
        let s = scan_bytes(&segment(&frames));
        assert_eq!((s.records, s.last_seq, s.damage), (5, 5, None));
    }

    #[test]
    fn damage_counts_the_intact_frames_after_it() {
        let frames: Vec<_> = (1..=20).map(|s| frame(s, 100 + s as usize * 50)).collect();
        let mut data = segment(&frames);
        let at = data.len() - frames[12..].iter().map(Vec::len).sum::<usize>();
        data[at + 20] ^= 0x10; // frame 13's body
        let s = scan_bytes(&data);
        assert_eq!((s.records, s.last_seq), (12, 12));
        let d = s.damage.unwrap();
        assert_eq!(
            (d.at, d.torn, d.why),
            (at as u64, false, "frame checksum mismatch")
        );
        assert_eq!(
            (
                d.after.records,
                d.after.first_seq,
                d.after.last_seq,
                d.after.complete
            ),
            (7, 14, 20, true)
        );
    }

    #[test]
    fn a_cut_or_zeroed_tail_is_torn() {
        let frames: Vec<_> = (1..=4).map(|s| frame(s, 300)).collect();
        let data = segment(&frames);
        let s = scan_bytes(&data[..data.len() - 100]);
        let d = s.damage.unwrap();
        assert!(d.torn && d.after.records == 0 && s.records == 3, "{s:?}");
        let mut z = data.clone();
        z.extend_from_slice(&[0; 5000]);
        let d = scan_bytes(&z).damage.unwrap();
        assert_eq!((d.torn, d.bytes), (true, 5000));
    }

    #[test]
    fn a_huge_announced_length_is_not_read() {
        let mut data = segment(&[frame(1, 10)]);
        data.extend_from_slice(&((format::MAX_BODY as u32) - 1).to_le_bytes());
        data.extend_from_slice(&[1; 40]);
        let d = scan_bytes(&data).damage.unwrap();
        assert_eq!((d.why, d.torn), ("frame cut short", true));
    }
}
