//! The NDJSON sink: each record's JSON exactly as stored, one per line, on stdout or to a
//! rotated file.

use serde::Deserialize;

use super::{
    RecordKey, Sink, SinkError,
    file::{FileOptions, LineFile, Output},
};
use monitor_record::stored::StoredRecord;

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
    /// Absent in the loss records the collector makes from in-band notes: key seq 0, which
    /// matches nothing (see [`RecordKey::matches`]).
    #[serde(default)]
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
            .write(records, &mut |r, buf| {
                buf.extend_from_slice(r.json.as_bytes())
            })
            .map_err(|(n, e)| SinkError::new(&self.name, n, e))
    }

    fn last_delivered(&mut self) -> Result<Option<RecordKey>, SinkError> {
        self.out
            .last_delivered()
            .map_err(|e| SinkError::new(&self.name, 0, e))
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, io::Write as _};

    use super::*;
    use crate::{sink::testdata::BOOT, sink::testdata::NODE, sink::testdata::batch};

    fn lines(records: &[StoredRecord]) -> String {
        records.iter().map(|r| format!("{}\n", r.json)).collect()
    }

    fn key(seq: u64) -> RecordKey {
        RecordKey {
            node: NODE.into(),
            boot_id: BOOT.into(),
            seq,
        }
    }

    #[test]
    fn lines_are_the_stored_json_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.ndjson");
        let mut sink = NdjsonSink::file(FileOptions::new(&path)).unwrap();
        assert_eq!(sink.name(), format!("ndjson:{}", path.display()));
        let recs = batch(1, 8);
        sink.write(&recs[..3]).unwrap();
        sink.write(&recs[3..]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), lines(&recs));
        assert_eq!(sink.last_delivered().unwrap(), Some(key(8)));
        // Reopening appends after what is there.
        let mut again = NdjsonSink::file(FileOptions::new(&path)).unwrap();
        let more = batch(9, 2);
        again.write(&more).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            lines(&recs) + &lines(&more)
        );
    }

    #[test]
    fn rotates_at_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        let recs = batch(1, 12);
        let longest = recs.iter().map(|r| r.json.len() + 1).max().unwrap() as u64;
        let max = 2 * longest + 10;
        let mut opts = FileOptions::new(&path);
        opts.max_bytes = Some(max);
        opts.keep = 2;
        let mut sink = NdjsonSink::file(opts.clone()).unwrap();
        for chunk in recs.chunks(5) {
            sink.write(chunk).unwrap();
        }
        assert!(!opts.rotated(3).exists(), "keep=2 leaves no third file");
        let mut kept = String::new();
        for p in [opts.rotated(2), opts.rotated(1), path.clone()] {
            let text = fs::read_to_string(&p).unwrap();
            assert!(
                text.len() as u64 <= max,
                "{} is {} > {max}",
                p.display(),
                text.len()
            );
            assert!(!text.is_empty(), "{} is empty", p.display());
            kept.push_str(&text);
        }
        // What is kept is the newest records, in order, each once; the oldest were dropped.
        let all = lines(&recs);
        assert!(
            all.ends_with(&kept),
            "kept files are not the tail of the stream"
        );
        assert!(
            kept.len() < all.len(),
            "rotation with keep=2 must drop old records"
        );
        assert_eq!(sink.last_delivered().unwrap(), Some(key(12)));
    }

    #[test]
    fn keep_zero_discards_rotated_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        let recs = batch(1, 4);
        let mut opts = FileOptions::new(&path);
        opts.max_bytes = Some(1);
        opts.keep = 0;
        let mut sink = NdjsonSink::file(opts.clone()).unwrap();
        sink.write(&recs).unwrap();
        assert!(!opts.rotated(1).exists());
        assert_eq!(fs::read_to_string(&path).unwrap(), lines(&recs[3..]));
    }

    #[test]
    fn a_collector_made_loss_record_as_last_line_reopens_and_matches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        let mut recs = batch(1, 3);
        // As the store makes it from an in-band note: no `seq`, StoredRecord.seq 0.
        let loss = StoredRecord {
            id: 99,
            node: NODE.into(),
            boot_id: BOOT.into(),
            seq: 0,
            kind: "loss".into(),
            time_ns: 0,
            json: format!(
                r#"{{"kind":"loss","time":"2026-11-22T00:00:00Z","node":"{NODE}","boot_id":"{BOOT}","stage":"spool","reason":"cap","count":5,"first_seq":1,"last_seq":5}}"#
            ),
        };
        recs.push(loss.clone());
        NdjsonSink::file(FileOptions::new(&path))
            .unwrap()
            .write(&recs)
            .unwrap();
        // The collector restarts: the sink must open (it used to refuse the line as foreign).
        let mut sink = NdjsonSink::file(FileOptions::new(&path)).unwrap();
        let k = sink.last_delivered().unwrap().unwrap();
        assert_eq!(k.seq, 0);
        assert!(!k.matches(&loss), "seq 0 is no key");
        // Resuming from the saved cursor writes what follows, skipping nothing.
        let more = batch(4, 2);
        sink.write(&more).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            lines(&recs) + &lines(&more)
        );
    }

    #[test]
    fn torn_last_line_is_cut_and_the_previous_key_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        let recs = batch(1, 6);
        fs::write(&path, lines(&recs[..3])).unwrap();
        // A crash in the middle of writing record 4.
        let torn = &recs[3].json[..recs[3].json.len() / 2];
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(torn.as_bytes())
            .unwrap();
        let mut sink = NdjsonSink::file(FileOptions::new(&path)).unwrap();
        assert_eq!(sink.last_delivered().unwrap(), Some(key(3)));
        assert_eq!(fs::read_to_string(&path).unwrap(), lines(&recs[..3]));
        // A runner resuming from an older cursor: what the file holds is not written again.
        sink.write(&recs[1..]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), lines(&recs));
    }

    #[test]
    fn a_file_of_only_a_torn_line_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        fs::write(&path, "{\"kind\":\"ht").unwrap();
        let mut sink = NdjsonSink::file(FileOptions::new(&path)).unwrap();
        assert_eq!(sink.last_delivered().unwrap(), None);
        assert_eq!(fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn last_key_is_found_in_the_rotated_file_when_the_current_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        let opts = FileOptions::new(&path);
        let recs = batch(1, 2);
        fs::write(opts.rotated(1), lines(&recs)).unwrap();
        let mut sink = NdjsonSink::file(opts).unwrap();
        assert_eq!(sink.last_delivered().unwrap(), Some(key(2)));
    }

    #[test]
    fn a_foreign_last_line_is_an_actionable_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        fs::write(&path, "hello\n").unwrap();
        let err = NdjsonSink::file(FileOptions::new(&path)).unwrap_err();
        let text = format!("{}", err.kind);
        assert!(text.contains("not a record this sink writes"), "{text}");
        assert!(text.contains("move the file aside"), "{text}");
    }

    #[test]
    fn a_failed_write_reports_the_delivered_prefix_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("r.ndjson");
        let recs = batch(1, 4);
        let mut opts = FileOptions::new(&path);
        // One record per file: rotation after every record.
        opts.max_bytes = Some(1);
        let mut sink = NdjsonSink::file(opts).unwrap();
        // The first record goes to the open file; the rotation before the second fails, as
        // the directory is gone.
        fs::remove_dir_all(&sub).unwrap();
        let err = sink.write(&recs).unwrap_err();
        assert_eq!(err.delivered, 1, "{err:?}");
        assert!(matches!(err.kind, crate::sink::SinkErrorKind::File { .. }));
        // Once the directory is back, the retry (from the first undelivered) succeeds.
        fs::create_dir(&sub).unwrap();
        sink.write(&recs[1..]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), lines(&recs[3..]));
    }
}
