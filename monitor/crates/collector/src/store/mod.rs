//! The collector's embedded store: one SQLite database in WAL mode holding every record agents
//! delivered, deduplicated by (node, boot_id, seq), with the fields Observe and Report filter
//! on pulled out of the JSON into indexed columns (schema in `schema.sql`).
//!
//! - One writer, [`Store`]: ingest ([`Store::insert_batch`], one transaction per batch, committed
//!   with `synchronous=FULL` before the caller acknowledges it), sink cursors, retention.
//! - Any number of [`StoreReader`]s on other threads (WAL: readers never block the writer and
//!   see only committed batches): sinks ([`StoreReader::read_after`]), Observe
//!   ([`StoreReader::observe`]) and Report ([`crate::report`]).
//!
//! Row ids increase with storage order and are never reused, and the single writer commits in id
//! order, so a reader that remembers the last id it saw misses nothing by asking for the rows
//! after it.

mod extract;
mod query;

use std::{
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use monitor_wire::proto;

/// The schema version this collector writes (table `store_schema`).
pub const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for another one's lock before failing (a retention chunk or a
/// checkpoint holds it for milliseconds).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows deleted per retention transaction: bounds how long ingest waits for retention.
pub const RETENTION_CHUNK: usize = 5_000;

/// Store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Records that happened longer ago than this are deleted by [`Store::apply_retention`].
    pub retention: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Store failures. Each names the database file and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory for the database could not be created.
    #[error(
        "cannot create the store directory {dir}: {source}; create it, or choose a store path in a writable directory"
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite could not open (or create) the file.
    #[error(
        "cannot open the store {path}: {source}; check that its directory exists and that this user may read and write it (the collector also creates {path}-wal and {path}-shm next to it)"
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file exists but is not an SQLite database (or is damaged).
    #[error(
        "{path} is not a monitor store (not an SQLite database, or damaged): {source}; move it away or choose another store path"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file or its directory is read-only.
    #[error(
        "the store {path} is read-only: {source}; give this user write access to the file and its directory"
    )]
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A store written by a newer collector.
    #[error(
        "the store {path} has schema version {found}, newer than this collector's {supported}; run a collector at least as new as the one that wrote it, or choose another store path"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours ([`SCHEMA_VERSION`]).
        supported: i64,
    },
    /// An SQLite statement failed.
    #[error("store {path}: {what}: {source}")]
    Sql {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// `min_severity` is not one of low, medium, high, critical.
    #[error("unknown severity {0:?}: use low, medium, high or critical")]
    UnknownSeverity(String),
    /// A report request without a subject.
    #[error("a report needs a subject: a path, a rule or a pod")]
    NoSubject,
}

impl StoreError {
    /// Maps an SQLite error on opening/checking `path` to the error that says what to do.
    fn classify(path: &Path, source: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Self::NotADatabase { path, source },
            Some(ErrorCode::ReadOnly) => Self::ReadOnly { path, source },
            Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
                Self::Open { path, source }
            }
            _ => Self::Sql {
                path,
                what: "opening the store",
                source,
            },
        }
    }
}

/// A closure mapping an SQLite error to [`StoreError::Sql`] for `path` and `what`.
fn sql_err<'a>(path: &'a Path, what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sql {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// What [`Store::insert_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inserted {
    /// Records of the batch newly stored (`Ack.stored`).
    pub stored: u32,
    /// Records of the batch already held (`Ack.duplicates`).
    pub duplicates: u32,
    /// Of the newly stored, those whose JSON did not parse or lacked `kind` or `time` (stored
    /// anyway, with NULL columns and the Record's time).
    pub malformed: u32,
    /// Loss records newly made from the batch's `lost` (resent ones are not counted).
    pub losses: u32,
    /// Highest sequence number held or reported lost for the batch's (node, boot_id), after
    /// this batch (`Ack.watermark`).
    pub watermark: u64,
    /// Ids of the rows this batch added (records and losses): every row with an id in this range
    /// is one of them (duplicates may have used up ids in between); `None` when it added none.
    pub new_ids: Option<RangeInclusive<i64>>,
}

/// A read connection to the store. Open one per thread ([`Store::reader`] or
/// [`StoreReader::open`]); it sees every batch committed before each query starts.
#[derive(Debug)]
pub struct StoreReader {
    conn: Connection,
    path: PathBuf,
}

/// The store's single writer. Also answers every read query through [`Store::as_reader`].
#[derive(Debug)]
pub struct Store {
    inner: StoreReader,
    options: StoreOptions,
}

/// SQLite integers are i64; sequence numbers beyond i64::MAX (never made by an agent) saturate.
fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Reads the schema version (`None`: a new, empty database).
fn schema_version(conn: &Connection, path: &Path) -> Result<Option<i64>, StoreError> {
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'store_schema'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| StoreError::classify(path, e))?;
    if !has_table {
        return Ok(None);
    }
    conn.query_row("SELECT max(version) FROM store_schema", [], |r| r.get(0))
        .map_err(sql_err(path, "reading the schema version"))
}

fn check_version(path: &Path, found: i64) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) the store at `path`: WAL journal, `synchronous=FULL` (a committed batch
    /// survives power loss), schema created or checked. Creates the parent directory if needed.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| StoreError::classify(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql_err(path, "setting busy_timeout"))?;
        // The first statement that reads the header: a file that is not a database fails here.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| StoreError::classify(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Sql {
                path: path.to_path_buf(),
                what: "switching to WAL mode",
                source: rusqlite::Error::InvalidQuery,
            });
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864; PRAGMA foreign_keys = OFF;",
        )
        .map_err(|e| StoreError::classify(path, e))?;
        match schema_version(&conn, path)? {
            Some(v) => check_version(path, v)?,
            None => {
                let ddl = format!(
                    "BEGIN IMMEDIATE;\n{}\nCREATE TABLE store_schema (version INTEGER NOT NULL);\nINSERT INTO store_schema VALUES ({SCHEMA_VERSION});\nCOMMIT;",
                    include_str!("schema.sql")
                );
                if let Err(e) = conn.execute_batch(&ddl) {
                    // Best effort: leave no half-made schema behind (the error is what matters).
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(StoreError::classify(path, e));
                }
            }
        }
        Ok(Self {
            inner: StoreReader {
                conn,
                path: path.to_path_buf(),
            },
            options,
        })
    }

    /// The store's settings.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The read queries, run on the writer's own connection (same thread as ingest).
    pub fn as_reader(&self) -> &StoreReader {
        &self.inner
    }

    /// A new read connection to this store, for another thread.
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        StoreReader::open(&self.inner.path)
    }

    /// Stores a batch of `node`'s incarnation `boot_id` in one transaction, committed (durable)
    /// before this returns: records already held (same node, boot_id, seq) are skipped and
    /// counted, each `LostRecords` not already stored becomes a `loss` row (docs/records.md),
    /// and the watermark of (node, boot_id) is raised to the highest seq stored, or reported
    /// lost by a note that continues it (a note about later seqs does not acknowledge the
    /// records before it). A record whose JSON is unusable is stored anyway and counted in `malformed`.
    pub fn insert_batch(
        &mut self,
        node: &str,
        boot_id: &str,
        records: &[proto::Record],
        lost: &[proto::LostRecords],
    ) -> Result<Inserted, StoreError> {
        let path = self.inner.path.as_path();
        let tx = self
            .inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(path, "beginning a batch transaction"))?;
        let mut out = Inserted::default();
        let mut first_id = None;
        let mut last_id = 0;
        // Highest seq per boot_id this batch covers (its own, and lost records' own boot_ids).
        let mut marks: Vec<(&str, u64)> = vec![(boot_id, 0)];
        {
            let mut ins = tx
                .prepare_cached(INSERT_RECORD)
                .map_err(sql_err(path, "preparing the record insert"))?;
            for r in records {
                let doc = extract::parse(&r.json);
                let c = extract::columns(doc.as_ref());
                let kind = c
                    .kind
                    .or_else(|| (!r.kind.is_empty()).then_some(r.kind.as_str()))
                    .unwrap_or("unknown");
                let n = ins
                    .execute(params![
                        node,
                        boot_id,
                        seq_i64(r.seq),
                        kind,
                        c.time_ns.unwrap_or(r.time_unix_nano),
                        c.rule,
                        c.severity,
                        c.severity.and_then(extract::severity_rank),
                        c.message,
                        c.source.kind,
                        c.source.namespace,
                        c.source.pod,
                        c.source.service,
                        c.source.ip,
                        c.source.port,
                        c.destination.kind,
                        c.destination.namespace,
                        c.destination.pod,
                        c.destination.service,
                        c.destination.ip,
                        c.destination.port,
                        c.method,
                        c.path,
                        c.status,
                        c.query,
                        c.response_body_bytes,
                        c.count,
                        c.malformed,
                        r.json,
                    ])
                    .map_err(sql_err(path, "inserting a record"))?;
                if n == 1 {
                    out.stored += 1;
                    out.malformed += u32::from(c.malformed);
                    last_id = tx.last_insert_rowid();
                    first_id.get_or_insert(last_id);
                } else {
                    out.duplicates += 1;
                }
                marks[0].1 = marks[0].1.max(r.seq);
            }
            let mut ins_loss = tx
                .prepare_cached(INSERT_LOSS)
                .map_err(sql_err(path, "preparing the loss insert"))?;
            let now = monitor_record::time::unix_now_ns();
            for l in lost {
                let lost_boot = if l.boot_id.is_empty() {
                    boot_id
                } else {
                    l.boot_id.as_str()
                };
                let (json, time_ns) = extract::loss_json(node, lost_boot, l, now);
                let n = ins_loss
                    .execute(params![
                        node,
                        lost_boot,
                        time_ns,
                        seq_i64(l.count),
                        l.source,
                        seq_i64(l.first_seq),
                        json,
                    ])
                    .map_err(sql_err(path, "inserting a loss record"))?;
                if n == 1 {
                    out.losses += 1;
                    last_id = tx.last_insert_rowid();
                    first_id.get_or_insert(last_id);
                }
                // A note raises the watermark only when it continues it: a note about seqs
                // beyond records not yet received must not acknowledge those records.
                let current = match marks.iter().find(|(b, _)| *b == lost_boot) {
                    Some(m) => m.1,
                    None => 0,
                }
                .max(
                    query::watermark_on(&tx, node, lost_boot)
                        .map_err(sql_err(path, "reading the watermark"))?,
                );
                if l.first_seq <= current.saturating_add(1) {
                    let raised = current.max(l.last_seq);
                    match marks.iter_mut().find(|(b, _)| *b == lost_boot) {
                        Some(m) => m.1 = raised,
                        None => marks.push((lost_boot, raised)),
                    }
                }
            }
            let mut mark = tx
                .prepare_cached(
                    "INSERT INTO watermarks (node, boot_id, seq) VALUES (?1, ?2, ?3)
                     ON CONFLICT (node, boot_id) DO UPDATE SET seq = max(seq, excluded.seq)",
                )
                .map_err(sql_err(path, "preparing the watermark update"))?;
            for (b, seq) in marks.iter().filter(|(b, _)| !b.is_empty()) {
                mark.execute(params![node, b, seq_i64(*seq)])
                    .map_err(sql_err(path, "updating a watermark"))?;
            }
            out.watermark = query::watermark_on(&tx, node, boot_id)
                .map_err(sql_err(path, "reading the watermark"))?;
        }
        tx.commit().map_err(sql_err(path, "committing a batch"))?;
        out.new_ids = first_id.map(|f| f..=last_id);
        Ok(out)
    }

    /// Records that sink `name` has written everything up to row `id` (survives restarts).
    pub fn set_sink_cursor(&mut self, name: &str, id: i64) -> Result<(), StoreError> {
        self.inner
            .conn
            .execute(
                "INSERT INTO sink_cursors (name, id) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET id = excluded.id",
                params![name, id],
            )
            .map_err(sql_err(&self.inner.path, "saving a sink cursor"))?;
        Ok(())
    }

    /// Deletes up to `max_rows` records that happened before `now_ns - retention`, in one
    /// transaction; returns how many. Ingest on another connection waits at most for one chunk.
    pub fn apply_retention_chunk(
        &mut self,
        now_ns: i64,
        max_rows: usize,
    ) -> Result<u64, StoreError> {
        let keep_ns = i64::try_from(self.options.retention.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = now_ns.saturating_sub(keep_ns);
        let n = self
            .inner
            .conn
            .execute(
                "DELETE FROM records WHERE id IN
                 (SELECT id FROM records WHERE time_ns < ?1 ORDER BY time_ns LIMIT ?2)",
                params![cutoff, i64::try_from(max_rows).unwrap_or(i64::MAX)],
            )
            .map_err(sql_err(&self.inner.path, "deleting records past retention"))?;
        Ok(n as u64)
    }

    /// Deletes every record that happened before `now_ns - retention`, [`RETENTION_CHUNK`] rows
    /// per transaction so a batch waiting to be stored is delayed by one chunk at most (call it
    /// between batches from the ingest thread, or from a thread of its own). Returns how many.
    pub fn apply_retention(&mut self, now_ns: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self.apply_retention_chunk(now_ns, RETENTION_CHUNK)?;
            total += n;
            if n < RETENTION_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

const INSERT_RECORD: &str = "INSERT OR IGNORE INTO records (
    node, boot_id, seq, kind, time_ns, rule, severity, severity_rank, message,
    src_kind, src_ns, src_pod, src_svc, src_ip, src_port,
    dst_kind, dst_ns, dst_pod, dst_svc, dst_ip, dst_port,
    method, path, status, query, response_body_bytes, count, malformed, json)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)";

const INSERT_LOSS: &str = "INSERT OR IGNORE INTO records (
    node, boot_id, seq, kind, time_ns, count, lost_source, lost_first_seq, json)
    VALUES (?1, ?2, NULL, 'loss', ?3, ?4, ?5, ?6, ?7)";

impl StoreReader {
    /// Opens a read-only connection to the store at `path` (written by a running or past
    /// collector).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::classify(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql_err(path, "setting busy_timeout"))?;
        match schema_version(&conn, path)? {
            Some(v) => check_version(path, v)?,
            None => {
                return Err(StoreError::Sql {
                    path: path.to_path_buf(),
                    what: "no store schema in this file (start the collector on it first)",
                    source: rusqlite::Error::QueryReturnedNoRows,
                });
            }
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the report's queries.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The row id of record (node, boot_id, seq), if held.
    pub fn lookup_id(
        &self,
        node: &str,
        boot_id: &str,
        seq: u64,
    ) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached("SELECT id FROM records WHERE node = ?1 AND boot_id = ?2 AND seq = ?3")
            .and_then(|mut s| {
                s.query_row(params![node, boot_id, seq_i64(seq)], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_err(&self.path, "looking up a record"))
    }

    /// The highest row id assigned so far (0 for an empty store): every later row has a higher
    /// id, even after retention emptied the table. Follow mode starts after it.
    pub fn max_id(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0),
                            coalesce((SELECT max(id) FROM records), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(sql_err(&self.path, "reading the highest id"))
    }

    /// Highest seq held or reported lost for (node, boot_id); 0 when none.
    pub fn watermark(&self, node: &str, boot_id: &str) -> Result<u64, StoreError> {
        query::watermark_on(&self.conn, node, boot_id)
            .map_err(sql_err(&self.path, "reading a watermark"))
    }

    /// The last row id sink `name` wrote (0 when it never saved one).
    pub fn sink_cursor(&self, name: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT id FROM sink_cursors WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(sql_err(&self.path, "reading a sink cursor"))
    }
}

#[cfg(test)]
mod tests;
