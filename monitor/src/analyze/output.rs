//! Where an analysis's records go: the selected kinds to the collector's sinks (NDJSON on
//! stdout by default), and optionally every record into a collector store, so that
//! `monitor collector --store FILE` then answers `monitor report` and `monitor observe` on them.

use std::{collections::BTreeMap, io};

use monitor_record::{stored::StoredRecord, time::parse_rfc3339_ns};

use monitor_collector::{sink::Sink, store::Store};

use monitor_agent::pipeline::RecordOut;

use monitor_wire::proto;

/// Records per store transaction.
const STORE_BATCH: usize = 4096;
/// Records per sink write.
const SINK_BATCH: usize = 256;

/// The analysis output.
#[derive(Debug)]
pub struct AnalyzeOut {
    node: String,
    boot_id: String,
    kinds: Vec<String>,
    sinks: Vec<Box<dyn Sink>>,
    for_sinks: Vec<StoredRecord>,
    store: Option<(Store, Vec<proto::Record>)>,
    /// Records written, by kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// Records put in the store (new; a re-run of the same analysis id adds none).
    pub stored: u64,
}

impl AnalyzeOut {
    /// Records of `kinds` (all with an empty list) to `sinks`; every record to `store`.
    pub fn new(
        node: &str,
        boot_id: &str,
        kinds: Vec<String>,
        sinks: Vec<Box<dyn Sink>>,
        store: Option<Store>,
    ) -> Self {
        Self {
            node: node.to_owned(),
            boot_id: boot_id.to_owned(),
            kinds,
            sinks,
            for_sinks: Vec::new(),
            store: store.map(|s| (s, Vec::new())),
            counts: BTreeMap::new(),
            stored: 0,
        }
    }

    fn write_sinks(&mut self) -> io::Result<()> {
        if self.for_sinks.is_empty() {
            return Ok(());
        }
        for s in &mut self.sinks {
            s.write(&self.for_sinks).map_err(io::Error::other)?;
        }
        self.for_sinks.clear();
        Ok(())
    }

    fn write_store(&mut self) -> io::Result<()> {
        let Some((store, batch)) = &mut self.store else {
            return Ok(());
        };
        if batch.is_empty() {
            return Ok(());
        }
        let n = store
            .insert_batch(&self.node, &self.boot_id, batch, &[])
            .map_err(io::Error::other)?;
        self.stored += u64::from(n.stored);
        batch.clear();
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct Time<'a> {
    #[serde(borrow)]
    time: Option<&'a str>,
}

impl RecordOut for AnalyzeOut {
    fn record(&mut self, seq: u64, kind: &'static str, line: &[u8]) -> io::Result<()> {
        *self.counts.entry(kind).or_default() += 1;
        let json = line.strip_suffix(b"\n").unwrap_or(line);
        let want = self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind);
        if !want && self.store.is_none() {
            return Ok(());
        }
        let json = String::from_utf8_lossy(json).into_owned();
        if want && !self.sinks.is_empty() {
            let time_ns = serde_json::from_str::<Time<'_>>(&json)
                .ok()
                .and_then(|t| t.time.and_then(parse_rfc3339_ns))
                .unwrap_or(0);
            self.for_sinks.push(StoredRecord {
                id: i64::try_from(seq).unwrap_or(i64::MAX),
                node: self.node.clone(),
                boot_id: self.boot_id.clone(),
                seq,
                kind: kind.to_owned(),
                time_ns,
                json: json.clone(),
            });
            if self.for_sinks.len() >= SINK_BATCH {
                self.write_sinks()?;
            }
        }
        if let Some((_, batch)) = &mut self.store {
            batch.push(proto::Record {
                seq,
                kind: kind.to_owned(),
                time_unix_nano: 0,
                json,
            });
            if batch.len() >= STORE_BATCH {
                self.write_store()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_sinks()?;
        self.write_store()
    }
}
