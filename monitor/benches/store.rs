//! How fast the collector's store takes batches durably (`synchronous=FULL`, WAL, one writer
//! thread), with and without resent duplicates, and how long a forensic report takes over a
//! large history. Records are realistic `http` JSON (~700 bytes, 48 source pods, 12 routes of
//! 4 services, 2% violations) spread over 3 weeks. The database lives under the target dir (this
//! disk, not tmpfs). Run: `cargo bench -p monitor --bench store`. Reports measured figures
//! only; nothing is asserted.

use std::{hint::black_box, path::Path, time::Instant};

use monitor_collector::{report::render, report::report, store::Store, store::StoreOptions};

use monitor_record::time::format_rfc3339;

use monitor_wire::{proto, proto::report_request::Subject};

const S: i64 = 1_000_000_000;
/// 2026-11-01T00:00:00Z.
const START: i64 = 1_793_491_200 * S;
const SPAN: i64 = 21 * 24 * 3600 * S;
const BATCH: usize = 256;

/// (service, path, response body bytes) of the destination routes.
const ROUTES: [(&str, &str, u64); 12] = [
    (
        "svc-user-profile-service",
        "/api/v2/users/preferences",
        1044,
    ),
    ("svc-user-profile-service", "/api/v2/users/profile", 2310),
    ("svc-user-profile-service", "/api/v2/users/avatar", 18_400),
    (
        "svc-user-profile-service",
        "/internal/admin/v0/users/lookup",
        9612,
    ),
    ("svc-catalog", "/api/v1/catalog/items", 5120),
    ("svc-catalog", "/api/v1/catalog/search", 7420),
    ("svc-catalog", "/api/v1/catalog/categories", 880),
    ("svc-payments", "/api/v1/payments/authorize", 312),
    ("svc-payments", "/api/v1/payments/status", 190),
    ("svc-inventory", "/api/v1/inventory/stock", 640),
    ("svc-inventory", "/api/v1/inventory/reserve", 210),
    ("svc-inventory", "/healthz", 2),
];
const CALLERS: [&str; 4] = [
    "svc-recommendation-engine",
    "svc-checkout",
    "svc-frontend",
    "svc-search",
];
const QUERIES: [&str; 5] = [
    "user_id=REDACTED",
    "fields=REDACTED&state=CA",
    "fields=REDACTED&state=NY&limit=48",
    "page=2&size=50",
    "",
];

/// xorshift64*: varied but reproducible records without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn endpoint(kind: &str, svc: &str, n: usize, ip_last: usize, port: u32) -> String {
    format!(
        r#"{{"kind":"{kind}","ip":"10.77.{}.{}","port":{port},"namespace":"vantage","pod":"{svc}-{n:02}","service":"{svc}","cgroup_id":{}}}"#,
        n % 8,
        ip_last,
        9000 + ip_last
    )
}

/// One record (an `http` exchange, or 2% of the time a violation about one) at `time_ns`.
fn record(rng: &mut Rng, seq: u64, time_ns: i64) -> proto::Record {
    let caller = CALLERS[rng.pick(CALLERS.len())];
    let pod = rng.pick(12);
    let (svc, path, size) = ROUTES[rng.pick(ROUTES.len())];
    let query = QUERIES[rng.pick(QUERIES.len())];
    let status = [200, 200, 200, 200, 200, 200, 404, 403, 500][rng.pick(9)];
    let body = size + rng.next() % (size / 10 + 1);
    let time = format_rfc3339(time_ns).unwrap_or_default();
    let src = endpoint("pod", caller, pod, 20 + pod, 40_000 + (seq % 20_000) as u32);
    let dst = endpoint("pod", svc, 0, 10, 80);
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let (kind, json) = if rng.pick(50) == 0 {
        let rule = ["undocumented-endpoint", "sensitive-fields", "new-edge"][rng.pick(3)];
        (
            "violation",
            format!(
                r#"{{"seq":{seq},"boot_id":"7f3c2a9e5b1d","kind":"violation","time":"{time}","node":"vantage-node-{}","rule":"{rule}","severity":"high","source":{src},"destination":{dst},"http":{{"method":"GET","path":"{path}","normalized_path":"{path}","query":"{query}","query_keys":[],"status":{status},"request_body_bytes":0,"response_body_bytes":{body}}},"route":"{path}","policy":{{"file":"/etc/monitor/policy.yaml","rule":"protected_prefixes[0]","line":12}},"message":"GET {path} is not documented for {svc}","count":{},"aggregated":false,"first_seen":"{time}","last_seen":"{time}"}}"#,
                seq % 3,
                1 + rng.pick(5),
            ),
        )
    } else {
        (
            "http",
            format!(
                r#"{{"seq":{seq},"boot_id":"7f3c2a9e5b1d","kind":"http","time":"{time}","node":"vantage-node-{}","observer":"client","flow_id":{},"source":{src},"destination":{dst},"http":{{"method":"GET","target":"{target}","path":"{path}","query":"{query}","host":"10.77.0.10","version":"1.1","status":{status},"request_body_bytes":0,"response_bytes":{},"response_body_bytes":{body}}},"latency_ms":{}.{:02},"completion":"complete"}}"#,
                seq % 3,
                rng.next() % 1_000_000,
                body + 238,
                rng.pick(40),
                rng.pick(100),
            ),
        )
    };
    proto::Record {
        seq,
        kind: kind.into(),
        time_unix_nano: time_ns,
        json,
    }
}

/// `n` records from seq `first`, spread evenly over the three weeks.
fn records(rng: &mut Rng, first: u64, n: usize, total: usize) -> Vec<proto::Record> {
    (0..n)
        .map(|i| {
            let seq = first + i as u64;
            let t = START + (SPAN / total as i64) * (seq as i64 - 1);
            record(rng, seq, t)
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Ingests `total` records in batches of 256; with `dup_share` > 0 each batch also resends that
/// share of records from the batch before (as an agent does after a reconnect).
fn ingest(dir: &Path, label: &str, total: usize, dup_share: f64) {
    let path = dir.join(format!("{}.db", label.replace(' ', "-")));
    let mut store = Store::open(&path, StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let all = records(&mut rng, 1, total, total);
    let new_per_batch = ((BATCH as f64) * (1.0 - dup_share)).round() as usize;
    let mut lat = Vec::new();
    let (mut stored, mut dups, mut sent) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    let mut at = 0;
    while at < all.len() {
        let end = (at + new_per_batch).min(all.len());
        let resend = at.min(BATCH - new_per_batch);
        let batch = &all[at - resend..end];
        let b0 = Instant::now();
        let r = store
            .insert_batch("vantage-node-1", "7f3c", batch, &[])
            .unwrap_or_else(|e| panic!("{e}"));
        lat.push(b0.elapsed().as_secs_f64() * 1e3);
        stored += u64::from(r.stored);
        dups += u64::from(r.duplicates);
        sent += batch.len() as u64;
        at = end;
    }
    let secs = t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let bytes: usize = all.iter().map(|r| r.json.len()).sum();
    println!(
        "{label}: {sent} records sent ({stored} stored, {dups} duplicates, mean JSON {} B) in {} batches, {secs:.2} s: {:.0} records/s sent, {:.0} stored/s, {:.0} batches/s; commit latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        bytes / all.len(),
        lat.len(),
        sent as f64 / secs,
        stored as f64 / secs,
        lat.len() as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "  database size {:.0} MB ({:.0} B/record)",
        size as f64 / 1e6,
        size as f64 / stored as f64
    );
}

/// Fills a store with `total` records quickly (large transactions), then times reports.
fn reports(dir: &Path, total: usize) {
    let path = dir.join(format!("report-{total}.db"));
    let mut store = Store::open(&path, StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let t = Instant::now();
    let mut seq = 1;
    while (seq as usize) <= total {
        let n = 10_000.min(total + 1 - seq as usize);
        let batch = records(&mut rng, seq, n, total);
        store
            .insert_batch("vantage-node-1", "7f3c", &batch, &[])
            .unwrap_or_else(|e| panic!("{e}"));
        seq += n as u64;
    }
    println!(
        "report over {total} stored records (filled in {:.1} s, batches of 10,000):",
        t.elapsed().as_secs_f64()
    );
    let reader = store.reader().unwrap_or_else(|e| panic!("{e}"));
    let last3w = |subject| proto::ReportRequest {
        subject: Some(subject),
        since_unix_nano: START,
        until_unix_nano: START + SPAN,
        top: 0,
    };
    for subject in [
        Subject::Path("/internal/admin/v0/users/lookup".into()),
        Subject::Path("/api/v1/*".into()),
        Subject::Pod("vantage/svc-recommendation-engine-04".into()),
        Subject::Rule("undocumented-endpoint".into()),
    ] {
        let req = last3w(subject);
        let t = Instant::now();
        let resp = report(&reader, &req).unwrap_or_else(|e| panic!("{e}"));
        let secs = t.elapsed().as_secs_f64();
        black_box(render(&resp));
        println!(
            "  {:<45} {:>8} matched  {:>7.3} s",
            resp.subject, resp.requests, secs
        );
    }
}

/// What one fsync costs on this disk (a WAL commit with `synchronous=FULL` makes at least one).
fn fsync_cost(dir: &Path) {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let block = vec![7u8; 200 * 1024];
    let mut lat = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        f.write_all(&block).unwrap_or_else(|e| panic!("{e}"));
        f.sync_data().unwrap_or_else(|e| panic!("{e}"));
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "disk: append 200 KB + fdatasync p50 {:.2} ms, p99 {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let _ = std::fs::remove_file(path);
}

fn main() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir_in(base).unwrap_or_else(|e| panic!("{e}"));
    println!("store: {}", dir.path().display());
    fsync_cost(dir.path());
    ingest(dir.path(), "ingest, no duplicates", 100_000, 0.0);
    ingest(dir.path(), "ingest, 10% duplicates", 100_000, 0.1);
    reports(dir.path(), 200_000);
    reports(dir.path(), 1_000_000);
}
