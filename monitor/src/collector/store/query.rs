//! Read queries: rows after a cursor (sinks) and Observe's filtered tail.

use rusqlite::{Connection, OptionalExtension, Row, params, types::Value};

use super::{StoreError, StoreReader, extract::severity_rank, sql_err};
use crate::{collector::StoredRecord, proto};

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

/// Appends `AND column IN (?, ...)` for the non-empty `values`.
fn any_of(sql: &mut String, args: &mut Vec<Value>, column: &str, values: &[String]) {
    let values: Vec<&String> = values.iter().filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        return;
    }
    sql.push_str(&format!(" AND {column} IN ("));
    for (i, v) in values.into_iter().enumerate() {
        sql.push_str(if i == 0 { "?" } else { ", ?" });
        args.push(Value::Text(v.clone()));
    }
    sql.push(')');
}

/// Appends `AND (src_x = ? OR dst_x = ?)` when `value` is set.
fn either_side(sql: &mut String, args: &mut Vec<Value>, column: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    sql.push_str(&format!(" AND (src_{column} = ? OR dst_{column} = ?)"));
    args.push(Value::Text(value.to_owned()));
    args.push(Value::Text(value.to_owned()));
}

impl StoreReader {
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
        let mut sql = format!("SELECT {OBSERVED_COLUMNS} FROM records WHERE id > ?");
        let mut args = vec![Value::Integer(after_id)];
        any_of(&mut sql, &mut args, "kind", &req.kind);
        any_of(&mut sql, &mut args, "rule", &req.rule);
        either_side(&mut sql, &mut args, "ns", &req.namespace);
        either_side(&mut sql, &mut args, "pod", &req.pod);
        either_side(&mut sql, &mut args, "svc", &req.service);
        if !req.min_severity.is_empty() {
            let rank = severity_rank(&req.min_severity)
                .ok_or_else(|| StoreError::UnknownSeverity(req.min_severity.clone()))?;
            sql.push_str(" AND severity_rank >= ?");
            args.push(Value::Integer(rank));
        }
        if req.since_unix_nano != 0 {
            sql.push_str(" AND time_ns >= ?");
            args.push(Value::Integer(req.since_unix_nano));
        }
        if req.until_unix_nano != 0 {
            sql.push_str(" AND time_ns < ?");
            args.push(Value::Integer(req.until_unix_nano));
        }
        if !req.node.is_empty() {
            sql.push_str(" AND node = ?");
            args.push(Value::Text(req.node.clone()));
        }
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
