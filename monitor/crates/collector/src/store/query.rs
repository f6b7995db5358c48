//! Read queries: rows after a cursor (sinks) and Observe's filtered tail.

use rusqlite::{Connection, OptionalExtension, Row, params, types::Value};

use super::{StoreError, StoreReader, extract::severity_rank, sql_err};
use monitor_record::stored::StoredRecord;
use monitor_wire::proto;

/// Highest seq held or reported lost for (node, boot_id); 0 when none.
pub(super) fn watermark_on(conn: &Connection, node: &str, boot_id: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT seq FROM watermarks WHERE node = ?1 AND boot_id = ?2")?
        .query_row(params![node, boot_id], |r| r.get::<_, i64>(0))
        .optional()
        .map(|v| v.map_or(0, |s| u64::try_from(s).unwrap_or(0)))
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn stored(r: &Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        id: r.get(0)?,
        node: r.get(1)?,
        boot_id: r.get(2)?,
        seq: r
            .get::<_, Option<i64>>(3)?
            .map_or(0, |s| u64::try_from(s).unwrap_or(0)),
        kind: r.get(4)?,
        time_ns: r.get(5)?,
        json: r.get(6)?,
    })
}

fn peer(r: &Row<'_>, at: usize) -> rusqlite::Result<Option<proto::Peer>> {
    let s = |i: usize| -> rusqlite::Result<Option<String>> { r.get(at + i) };
    let (kind, namespace, pod, service, ip) = (s(0)?, s(1)?, s(2)?, s(3)?, s(4)?);
    let port: Option<i64> = r.get(at + 5)?;
    if kind.is_none() && namespace.is_none() && pod.is_none() && service.is_none() && ip.is_none() {
        return Ok(None);
    }
    Ok(Some(proto::Peer {
        kind: kind.unwrap_or_default(),
        namespace: namespace.unwrap_or_default(),
        pod: pod.unwrap_or_default(),
        service: service.unwrap_or_default(),
        ip: ip.unwrap_or_default(),
        port: port.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
    }))
}

fn observed(r: &Row<'_>) -> rusqlite::Result<proto::ObservedRecord> {
    let text = |i: usize| -> rusqlite::Result<String> {
        Ok(r.get::<_, Option<String>>(i)?.unwrap_or_default())
    };
    Ok(proto::ObservedRecord {
        id: r.get(0)?,
        node: r.get(1)?,
        boot_id: r.get(2)?,
        seq: r
            .get::<_, Option<i64>>(3)?
            .map_or(0, |s| u64::try_from(s).unwrap_or(0)),
        kind: r.get(4)?,
        time_unix_nano: r.get(5)?,
        json: r.get(6)?,
        rule: text(7)?,
        severity: text(8)?,
        message: text(9)?,
        source: peer(r, 10)?,
        destination: peer(r, 16)?,
        method: text(22)?,
        path: text(23)?,
        status: r
            .get::<_, Option<i64>>(24)?
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(0),
    })
}

const OBSERVED_COLUMNS: &str =
    "id, node, boot_id, seq, kind, time_ns, json, rule, severity, message,
    src_kind, src_ns, src_pod, src_svc, src_ip, src_port,
    dst_kind, dst_ns, dst_pod, dst_svc, dst_ip, dst_port, method, path, status";

/// Rows between the start of an Observe query and the newest row below which reading every row
/// in id order and filtering beats an index lookup plus a sort.
const SCAN_ROWS: i64 = 100_000;

/// Builds Observe's WHERE clause. `indexed` columns keep their indexes; every other filter is
/// written `+column`, which keeps SQLite from using an index on it, so that it reads rows in id
/// order from the cursor (the right plan for a tail and for unselective filters like kind).
struct Conditions {
    sql: String,
    args: Vec<Value>,
}

impl Conditions {
    fn column(column: &str, indexed: bool) -> String {
        if indexed {
            column.to_owned()
        } else {
            format!("+{column}")
        }
    }

    /// `AND column IN (?, ...)` for the non-empty `values`.
    fn any_of(&mut self, column: &str, indexed: bool, values: &[String]) {
        let values: Vec<&String> = values.iter().filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(", ");
        self.sql.push_str(&format!(
            " AND {} IN ({marks})",
            Self::column(column, indexed)
        ));
        self.args
            .extend(values.into_iter().map(|v| Value::Text(v.clone())));
    }

    /// `AND (src_x = ? OR dst_x = ?)` when `value` is set.
    fn either_side(&mut self, column: &str, indexed: bool, value: &str) {
        if value.is_empty() {
            return;
        }
        let (src, dst) = (
            Self::column(&format!("src_{column}"), indexed),
            Self::column(&format!("dst_{column}"), indexed),
        );
        self.sql.push_str(&format!(" AND ({src} = ? OR {dst} = ?)"));
        self.args.push(Value::Text(value.to_owned()));
        self.args.push(Value::Text(value.to_owned()));
    }

    fn compare(&mut self, column: &str, op: &str, value: Value) {
        self.sql.push_str(&format!(" AND +{column} {op} ?"));
        self.args.push(value);
    }
}

impl StoreReader {
    /// Calls `f` with every record of `kinds` that happened in `[since_ns, until_ns)` (of
    /// `node`, if given), in time order (then storage order), streaming: what
    /// `monitor policy dry-run` replays. Stops at the first error `f` returns.
    pub fn for_each_in_time_order<E: From<StoreError>>(
        &self,
        kinds: &[&str],
        (since_ns, until_ns): (i64, i64),
        node: Option<&str>,
        mut f: impl FnMut(StoredRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let marks = vec!["?"; kinds.len()].join(", ");
        let sql = format!(
            "SELECT id, node, boot_id, seq, kind, time_ns, json FROM records
             WHERE time_ns >= ? AND time_ns < ? AND (? IS NULL OR node = ?)
             AND kind IN ({marks}) ORDER BY time_ns, id"
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(sql_err(&self.path, "preparing the time-ordered scan"))?;
        let mut args: Vec<Value> = vec![
            Value::Integer(since_ns),
            Value::Integer(until_ns),
            node.map_or(Value::Null, |n| Value::Text(n.to_owned())),
            node.map_or(Value::Null, |n| Value::Text(n.to_owned())),
        ];
        args.extend(kinds.iter().map(|k| Value::Text((*k).to_owned())));
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), stored)
            .map_err(sql_err(&self.path, "scanning records in time order"))?;
        for r in rows {
            f(r.map_err(sql_err(&self.path, "reading a record"))?)?;
        }
        Ok(())
    }

    /// Up to `limit` records of every kind with id > `after_id`, in id (storage) order: what a
    /// sink writes next after its cursor.
    pub fn read_after(&self, after_id: i64, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, node, boot_id, seq, kind, time_ns, json FROM records
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(sql_err(&self.path, "preparing read_after"))?;
        stmt.query_map(params![after_id, limit_i64(limit)], stored)
            .and_then(Iterator::collect)
            .map_err(sql_err(&self.path, "reading records after a cursor"))
    }

    /// Up to `limit` records with id > `after_id` matching every filter of `req`
    /// (proto/monitor.proto `ObserveRequest`), in id order. `req.limit` and `req.follow` are the
    /// caller's: it pages (and follows) by calling again with the last id returned; for a
    /// follow from "now", start after [`StoreReader::max_id`].
    pub fn observe(
        &self,
        req: &proto::ObserveRequest,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<proto::ObservedRecord>, StoreError> {
        self.observe_planned(req, after_id, limit, SCAN_ROWS)
    }

    /// [`StoreReader::observe`] with the threshold for using indexes as a parameter (tests
    /// check both plans give the same rows).
    pub(super) fn observe_planned(
        &self,
        req: &proto::ObserveRequest,
        after_id: i64,
        limit: usize,
        scan_rows: i64,
    ) -> Result<Vec<proto::ObservedRecord>, StoreError> {
        // Every match happened at or after `since`, so none has a lower id than the first row
        // that did: start there (one pass over the time index) instead of at the oldest row.
        let mut start = after_id;
        if after_id == 0 && req.since_unix_nano != 0 {
            let first: Option<i64> = self
                .conn
                .prepare_cached("SELECT min(id) FROM records WHERE time_ns >= ?1")
                .and_then(|mut s| s.query_row([req.since_unix_nano], |r| r.get(0)))
                .map_err(sql_err(&self.path, "finding the first record since a time"))?;
            start = first.map_or(i64::MAX, |id| id - 1);
        }
        // A selective filter (rule, pod, service) over a long history is served by its index;
        // otherwise rows are read in id order from `start`.
        let selective = !req.rule.iter().all(String::is_empty)
            || !req.pod.is_empty()
            || !req.service.is_empty();
        let indexed = selective && self.max_id()?.saturating_sub(start) > scan_rows;
        let mut c = Conditions {
            sql: format!("SELECT {OBSERVED_COLUMNS} FROM records WHERE id > ?"),
            args: vec![Value::Integer(start)],
        };
        c.any_of("kind", false, &req.kind);
        c.any_of("rule", indexed, &req.rule);
        c.either_side("ns", false, &req.namespace);
        c.either_side("pod", indexed, &req.pod);
        c.either_side("svc", indexed, &req.service);
        if !req.min_severity.is_empty() {
            let rank = severity_rank(&req.min_severity)
                .ok_or_else(|| StoreError::UnknownSeverity(req.min_severity.clone()))?;
            c.compare("severity_rank", ">=", Value::Integer(rank));
        }
        if req.since_unix_nano != 0 {
            c.compare("time_ns", ">=", Value::Integer(req.since_unix_nano));
        }
        if req.until_unix_nano != 0 {
            c.compare("time_ns", "<", Value::Integer(req.until_unix_nano));
        }
        if !req.node.is_empty() {
            c.compare("node", "=", Value::Text(req.node.clone()));
        }
        let Conditions { mut sql, mut args } = c;
        sql.push_str(" ORDER BY id LIMIT ?");
        args.push(Value::Integer(limit_i64(limit)));
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(sql_err(&self.path, "preparing an observe query"))?;
        stmt.query_map(rusqlite::params_from_iter(args), observed)
            .and_then(Iterator::collect)
            .map_err(sql_err(&self.path, "running an observe query"))
    }
}
