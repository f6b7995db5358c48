//! The spool's two small state files, each replaced atomically (temporary file, fsync, rename,
//! directory fsync): `ack.json` (what the collector acknowledged) and `lost.json` (loss notes
//! not yet acknowledged, and the next note id).

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{Lost, SpoolError};

/// Name of the acknowledgement state file.
pub(super) const ACK_FILE: &str = "ack.json";
/// Name of the loss notes file.
pub(super) const LOST_FILE: &str = "lost.json";
/// Version of both state files.
const STATE_VERSION: u32 = 1;

/// What the collector acknowledged, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AckState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// The boot of the last acknowledgement.
    pub boot_id: String,
    /// Every record of `boot_id` with seq <= this is done.
    pub watermark: u64,
    /// Segments with a lower index are done (their deletion may have been cut short by a crash).
    pub first_live_segment: u64,
}

impl AckState {
    /// A state to write.
    pub(super) fn new(boot_id: &str, watermark: u64, first_live_segment: u64) -> Self {
        Self {
            version: STATE_VERSION,
            boot_id: boot_id.to_owned(),
            watermark,
            first_live_segment,
        }
    }
}

/// Pending loss notes, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LostState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// The id the next note gets.
    pub next_id: u64,
    /// Notes the collector has not acknowledged.
    pub notes: Vec<Lost>,
}

impl LostState {
    /// A state to write.
    pub(super) fn new(next_id: u64, notes: Vec<Lost>) -> Self {
        Self {
            version: STATE_VERSION,
            next_id,
            notes,
        }
    }
}

/// Why a state file was not usable.
#[derive(Debug)]
pub(super) enum ReadProblem {
    /// Reading failed: the spool cannot open.
    Io(SpoolError),
    /// The file is there but not a valid state file (moved aside by the caller).
    Invalid(PathBuf, String),
}

/// Reads a state file; `Ok(None)` when there is none.
pub(super) fn read<T: DeserializeOwned + HasVersion>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, ReadProblem> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReadProblem::Io(SpoolError::Read { path, source })),
    };
    match serde_json::from_slice::<T>(&bytes) {
        Ok(v) if v.version() == STATE_VERSION => Ok(Some(v)),
        Ok(v) => Err(ReadProblem::Invalid(
            path,
            format!("unknown version {}", v.version()),
        )),
        Err(e) => Err(ReadProblem::Invalid(path, e.to_string())),
    }
}

/// State files carry a version.
pub(super) trait HasVersion {
    /// The file's format version.
    fn version(&self) -> u32;
}

impl HasVersion for AckState {
    fn version(&self) -> u32 {
        self.version
    }
}

impl HasVersion for LostState {
    fn version(&self) -> u32 {
        self.version
    }
}

/// Replaces `dir/name` with `value` atomically.
pub(super) fn write<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
    fsync: bool,
) -> Result<(), SpoolError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let werr = |source| SpoolError::Write {
        path: tmp.clone(),
        source,
    };
    let bytes = serde_json::to_vec(value).map_err(|e| werr(std::io::Error::other(e)))?;
    let mut f = File::create(&tmp).map_err(werr)?;
    f.write_all(&bytes).map_err(werr)?;
    if fsync {
        f.sync_all().map_err(werr)?;
    }
    drop(f);
    fs::rename(&tmp, &path).map_err(|source| SpoolError::Write {
        path: path.clone(),
        source,
    })?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes renames, creations and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SpoolError::Write {
            path: dir.to_path_buf(),
            source,
        })
}
