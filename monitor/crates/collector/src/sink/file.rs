//! Line outputs shared by the NDJSON and OCSF sinks: stdout, or an append-only file with
//! size-based rotation, `fsync` before a batch counts as written, and recovery after a crash
//! (a torn partial last line is cut; the last complete line tells which record the file holds
//! last, so nothing is written twice).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use super::{RecordKey, SinkErrorKind};
use monitor_record::stored::StoredRecord;

/// Reads the record key back from one line this output wrote (without its `\n`).
pub type KeyParser = fn(&[u8]) -> Result<RecordKey, String>;

/// Renders one record as one line (without the `\n`) into the buffer.
pub type Render<'a> = &'a mut dyn FnMut(&StoredRecord, &mut Vec<u8>);

/// Where and how to write a line file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// The file; rotated files are `PATH.1` (newest) ... `PATH.keep`.
    pub path: PathBuf,
    /// Rotate before a line would make the file larger than this; `None`: never rotate.
    pub max_bytes: Option<u64>,
    /// Rotated files kept.
    pub keep: usize,
    /// `fsync` the file before a batch counts as written.
    pub fsync: bool,
}

impl FileOptions {
    /// Options for `path`: no rotation, keep 5, fsync on.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: None,
            keep: 5,
            fsync: true,
        }
    }

    /// `PATH.n`.
    pub fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }
}

/// An append-only line file with rotation and crash recovery.
#[derive(Debug)]
pub struct LineFile {
    opts: FileOptions,
    key_of: KeyParser,
    /// `None` after a failure: reopened (and recovered) before the next write.
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// The key of the last line found when (re)opening: a batch that contains it is trimmed up
    /// to and including it, as those records are already in the file.
    resync: Option<RecordKey>,
}

type Failed = (usize, SinkErrorKind);

fn file_err(action: &'static str, path: &Path, source: io::Error) -> SinkErrorKind {
    SinkErrorKind::File {
        action,
        path: path.to_owned(),
        source,
    }
}

impl LineFile {
    /// Opens (creating) the file and recovers it: cuts a torn partial last line and remembers
    /// the key of the last complete line.
    pub fn open(opts: FileOptions, key_of: KeyParser) -> Result<Self, SinkErrorKind> {
        let mut f = Self {
            opts,
            key_of,
            file: None,
            size: 0,
            resync: None,
        };
        f.recover()?;
        Ok(f)
    }

    /// The options.
    pub fn options(&self) -> &FileOptions {
        &self.opts
    }

    /// (Re)opens the file, cuts a torn partial last line, and returns the key of the last
    /// complete line (looking into `PATH.1` if the file is empty).
    pub fn recover(&mut self) -> Result<Option<RecordKey>, SinkErrorKind> {
        self.file = None;
        let path = &self.opts.path;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| file_err("open", path, e))?;
        let (size, last) = last_line(&file, path, true)?;
        let key = match last {
            Some(line) => Some(self.parse(path, &line)?),
            None => self.last_rotated_key()?,
        };
        self.file = Some(file);
        self.size = size;
        self.resync.clone_from(&key);
        Ok(key)
    }

    fn last_rotated_key(&self) -> Result<Option<RecordKey>, SinkErrorKind> {
        let path = self.opts.rotated(1);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(file_err("open", &path, e)),
        };
        match last_line(&file, &path, false)? {
            (_, Some(line)) => self.parse(&path, &line).map(Some),
            (_, None) => Ok(None),
        }
    }

    fn parse(&self, path: &Path, line: &[u8]) -> Result<RecordKey, SinkErrorKind> {
        (self.key_of)(line).map_err(|reason| SinkErrorKind::ForeignLine {
            path: path.to_owned(),
            reason,
        })
    }

    /// Appends one line per record (as `render` makes it), rotating as configured, then
    /// flushes (and fsyncs). Records up to and including the file's last record (see
    /// [`Self::recover`]) are skipped and count as written. On failure, returns how many were
    /// written first; the file is recovered before the next write.
    pub fn write(&mut self, records: &[StoredRecord], render: Render<'_>) -> Result<(), Failed> {
        if self.file.is_none() {
            self.recover().map_err(|e| (0, e))?;
        }
        let start = match self.resync.take() {
            Some(k) => records
                .iter()
                .position(|r| k.matches(r))
                .map_or(0, |i| i + 1),
            None => 0,
        };
        let res = self.write_from(records, start, render);
        if res.is_err() {
            self.file = None;
        }
        res
    }

    fn write_from(
        &mut self,
        records: &[StoredRecord],
        start: usize,
        render: Render<'_>,
    ) -> Result<(), Failed> {
        let mut delivered = start;
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut pending = 0;
        let mut line = Vec::with_capacity(4096);
        for r in &records[start..] {
            line.clear();
            render(r, &mut line);
            line.push(b'\n');
            let used = self.size + buf.len() as u64;
            if let Some(max) = self.opts.max_bytes
                && used > 0
                && used + line.len() as u64 > max
            {
                self.flush(&buf).map_err(|e| (delivered, e))?;
                delivered += pending;
                buf.clear();
                pending = 0;
                self.rotate().map_err(|e| (delivered, e))?;
            }
            buf.extend_from_slice(&line);
            pending += 1;
        }
        self.flush(&buf).map_err(|e| (delivered, e))
    }

    fn flush(&mut self, buf: &[u8]) -> Result<(), SinkErrorKind> {
        let path = &self.opts.path;
        let Some(file) = self.file.as_mut() else {
            return Err(file_err(
                "write",
                path,
                io::Error::other("file not open after an earlier failure"),
            ));
        };
        if !buf.is_empty() {
            file.write_all(buf)
                .map_err(|e| file_err("write", path, e))?;
            self.size += buf.len() as u64;
        }
        if self.opts.fsync && !buf.is_empty() {
            file.sync_data().map_err(|e| file_err("fsync", path, e))?;
        }
        Ok(())
    }

    /// `PATH.(keep-1)` → `PATH.keep`, ..., `PATH` → `PATH.1`, new empty `PATH`.
    fn rotate(&mut self) -> Result<(), SinkErrorKind> {
        let path = self.opts.path.clone();
        self.file = None;
        if self.opts.keep == 0 {
            fs::remove_file(&path).map_err(|e| file_err("remove", &path, e))?;
        } else {
            for n in (1..self.opts.keep).rev() {
                let from = self.opts.rotated(n);
                match fs::rename(&from, self.opts.rotated(n + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(file_err("rename", &from, e)),
                }
            }
            fs::rename(&path, self.opts.rotated(1)).map_err(|e| file_err("rename", &path, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| file_err("open", &path, e))?;
        if self.opts.fsync {
            // Make the renames and the new file durable, so that recovery finds them.
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| file_err("fsync directory of", &path, e))?;
        }
        self.file = Some(file);
        self.size = 0;
        Ok(())
    }
}

/// Finds the last complete line of `file`. With `cut`, a torn partial last line (bytes after
/// the last `\n`) is truncated away first. Returns the file's (new) length and the line
/// without its `\n`.
fn last_line(file: &File, path: &Path, cut: bool) -> Result<(u64, Option<Vec<u8>>), SinkErrorKind> {
    let len = file
        .metadata()
        .map_err(|e| file_err("stat", path, e))?
        .len();
    let mut window: u64 = 64 * 1024;
    loop {
        let from = len.saturating_sub(window);
        let mut tail = vec![0; (len - from) as usize];
        file.read_exact_at(&mut tail, from)
            .map_err(|e| file_err("read", path, e))?;
        let last_nl = tail.iter().rposition(|&b| b == b'\n');
        let prev_nl = last_nl.and_then(|i| tail[..i].iter().rposition(|&b| b == b'\n'));
        let whole = from == 0;
        match (last_nl, prev_nl) {
            (Some(end), Some(start)) => {
                let end_abs = from + end as u64 + 1;
                let line = tail[start + 1..end].to_vec();
                return cut_to(file, path, len, end_abs, cut).map(|l| (l, Some(line)));
            }
            (Some(end), None) if whole => {
                let line = tail[..end].to_vec();
                return cut_to(file, path, len, end as u64 + 1, cut).map(|l| (l, Some(line)));
            }
            (None, _) if whole => {
                return cut_to(file, path, len, 0, cut).map(|l| (l, None));
            }
            _ => window = window.saturating_mul(2),
        }
    }
}

fn cut_to(file: &File, path: &Path, len: u64, end: u64, cut: bool) -> Result<u64, SinkErrorKind> {
    if !cut || end == len {
        return Ok(len);
    }
    tracing::warn!(
        path = %path.display(),
        bytes = len - end,
        "cutting a torn partial last line (left by a crash)"
    );
    file.set_len(end)
        .and_then(|()| file.sync_all())
        .map_err(|e| file_err("truncate", path, e))?;
    Ok(end)
}

/// Stdout or a [`LineFile`].
#[derive(Debug)]
pub enum Output {
    /// Standard output (no recovery: the reader's concern).
    Stdout,
    /// A line file.
    File(LineFile),
}

impl Output {
    /// `stdout` or the file's path.
    pub fn describe(&self) -> String {
        match self {
            Self::Stdout => "stdout".to_owned(),
            Self::File(f) => f.options().path.display().to_string(),
        }
    }

    /// Writes one line per record; see [`LineFile::write`]. On stdout, a failure reports no
    /// record as delivered (lines may repeat; stdout cannot be read back).
    pub fn write(&mut self, records: &[StoredRecord], render: Render<'_>) -> Result<(), Failed> {
        match self {
            Self::File(f) => f.write(records, render),
            Self::Stdout => {
                let mut buf = Vec::with_capacity(64 * 1024);
                for r in records {
                    render(r, &mut buf);
                    buf.push(b'\n');
                }
                let mut out = io::stdout().lock();
                out.write_all(&buf)
                    .and_then(|()| out.flush())
                    .map_err(|e| (0, SinkErrorKind::Stdout(e)))
            }
        }
    }

    /// The last record in the file (after recovery); `None` for stdout.
    pub fn last_delivered(&mut self) -> Result<Option<RecordKey>, SinkErrorKind> {
        match self {
            Self::File(f) => f.recover(),
            Self::Stdout => Ok(None),
        }
    }
}
