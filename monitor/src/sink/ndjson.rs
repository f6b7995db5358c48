//! The NDJSON sink: each record's JSON exactly as stored, one per line, on stdout or to a
//! rotated file.

use serde::Deserialize;

use super::{
    RecordKey, Sink, SinkError,
    file::{FileOptions, LineFile, Output},
};
use crate::collector::StoredRecord;

/// Writes stored records as NDJSON.
#[derive(Debug)]
pub struct NdjsonSink {
    name: String,
    out: Output,
}

impl NdjsonSink {
    /// To stdout.
    pub fn stdout() -> Self {
        Self {
            name: "ndjson:stdout".to_owned(),
            out: Output::Stdout,
        }
    }

    /// To a file, recovering it (see [`LineFile::open`]).
    pub fn file(opts: FileOptions) -> Result<Self, SinkError> {
        let name = format!("ndjson:{}", opts.path.display());
        let f = LineFile::open(opts, key_of_line).map_err(|e| SinkError::new(&name, 0, e))?;
        Ok(Self {
            name,
            out: Output::File(f),
        })
    }
}

/// The fields of a stored record that identify it.
#[derive(Deserialize)]
struct KeyFields {
    node: String,
    boot_id: String,
    seq: u64,
}

/// The key of one stored record's JSON line: its top-level `node`, `boot_id` and `seq`.
pub fn key_of_line(line: &[u8]) -> Result<RecordKey, String> {
    let k: KeyFields = serde_json::from_slice(line)
        .map_err(|e| format!("expected a JSON record with node, boot_id and seq: {e}"))?;
    Ok(RecordKey {
        node: k.node,
        boot_id: k.boot_id,
        seq: k.seq,
    })
}

impl Sink for NdjsonSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, records: &[StoredRecord]) -> Result<(), SinkError> {
        self.out
            .write(records, &mut |r, buf| buf.extend_from_slice(r.json.as_bytes()))
            .map_err(|(n, e)| SinkError::new(&self.name, n, e))
    }

    fn last_delivered(&mut self) -> Result<Option<RecordKey>, SinkError> {
        self.out
            .last_delivered()
            .map_err(|e| SinkError::new(&self.name, 0, e))
    }
}
