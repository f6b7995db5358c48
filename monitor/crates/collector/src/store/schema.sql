-- Store schema, version 1 (monitor/src/collector/store/mod.rs). Applied once, in one
-- transaction, to an empty database; a newer collector migrates from here.

-- Every record, as sent (json), with the fields Observe and Report filter on pulled out.
-- AUTOINCREMENT: ids never go back, even after retention deletes the newest rows, so a sink's
-- cursor (the last id it wrote) stays valid.
CREATE TABLE records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    -- NULL for loss records the collector made from a LostRecords message.
    seq INTEGER,
    kind TEXT NOT NULL,
    -- The JSON's `time` (when it happened), Unix ns; the Record's time when that is missing.
    time_ns INTEGER NOT NULL,
    rule TEXT,
    severity TEXT,
    -- low 1, medium 2, high 3, critical 4 (min_severity).
    severity_rank INTEGER,
    message TEXT,
    src_kind TEXT,
    src_ns TEXT,
    src_pod TEXT,
    src_svc TEXT,
    src_ip TEXT,
    src_port INTEGER,
    dst_kind TEXT,
    dst_ns TEXT,
    dst_pod TEXT,
    dst_svc TEXT,
    dst_ip TEXT,
    dst_port INTEGER,
    method TEXT,
    path TEXT,
    status INTEGER,
    query TEXT,
    response_body_bytes INTEGER,
    count INTEGER,
    -- 1 when the JSON did not parse or lacked `kind` or `time`.
    malformed INTEGER NOT NULL DEFAULT 0,
    -- Loss records made from LostRecords: its `source` and `first_seq` (dedup on resend).
    lost_source TEXT,
    lost_first_seq INTEGER,
    json TEXT NOT NULL
);

CREATE UNIQUE INDEX records_seq ON records (node, boot_id, seq);
CREATE UNIQUE INDEX records_lost ON records (node, boot_id, lost_source, lost_first_seq)
    WHERE lost_source IS NOT NULL;
-- Retention, since/until, and report time ranges.
CREATE INDEX records_time ON records (time_ns);
CREATE INDEX records_kind_time ON records (kind, time_ns);
CREATE INDEX records_rule ON records (rule, time_ns) WHERE rule IS NOT NULL;
-- Report subjects (path, pod) and Observe's pod/service filters (source OR destination).
CREATE INDEX records_path ON records (path, time_ns) WHERE path IS NOT NULL;
CREATE INDEX records_src_pod ON records (src_pod, time_ns) WHERE src_pod IS NOT NULL;
CREATE INDEX records_dst_pod ON records (dst_pod) WHERE dst_pod IS NOT NULL;
CREATE INDEX records_src_svc ON records (src_svc) WHERE src_svc IS NOT NULL;
-- Report's other routes of a destination service.
CREATE INDEX records_dst_svc ON records (dst_svc, path) WHERE dst_svc IS NOT NULL;

-- Highest sequence number held (or reported lost) per agent incarnation: the Ack watermark.
CREATE TABLE watermarks (
    node TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (node, boot_id)
) WITHOUT ROWID;

-- The last record id each sink has written.
CREATE TABLE sink_cursors (
    name TEXT PRIMARY KEY,
    id INTEGER NOT NULL
) WITHOUT ROWID;
