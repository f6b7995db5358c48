//! What the spool costs the agent: append + flush of 700-byte records in 10 ms rounds of 300
//! (the agent's drain thread at 30,000 records/s), then the same with the sender's read-back
//! (`next_batch`) and acknowledgement (`ack`, one per batch), on a temporary directory.
//! Run: `cargo bench -p monitor --bench spool`. Reports measured figures only; nothing is
//! asserted. The directory is under `$TMPDIR` (default `/tmp`): the figures are those of its
//! file system.

use std::time::{Duration, Instant};

use monitor_agent::{delivery::spool::Spool, delivery::spool::SpoolOptions};

const RECORD_BYTES: usize = 700;
const PER_ROUND: u64 = 300;
const ROUNDS: u64 = 1_000;

/// A 700-byte record shaped like the agent's `http` records.
fn record(seq: u64) -> Vec<u8> {
    let mut s = format!(
        r#"{{"kind":"http","seq":{seq},"time":"2026-05-01T12:00:00.{:09}Z","node":"node-a","src":{{"pod":"svc-recommendation-engine-01","namespace":"vantage","service":"svc-recommendation-engine","ip":"10.77.0.21","port":43122}},"dst":{{"pod":"svc-user-profile-service-0","namespace":"vantage","service":"svc-user-profile-service","ip":"10.77.0.10","port":80}},"method":"GET","target":"/api/v2/users/preferences?user_id={}","status":200,"request_body_bytes":0,"response_body_bytes":1044,"latency_ms":3.2,"pad":""#,
        seq % 1_000_000_000,
        seq % 10_000
    );
    while s.len() < RECORD_BYTES - 2 {
        s.push('x');
    }
    s.push_str("\"}");
    s.into_bytes()
}

struct Figures {
    records: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Figures {
    fn print(&self, label: &str) {
        let secs = self.elapsed.as_secs_f64();
        println!(
            "{label:44} {:>10.0} records/s  {:>7.1} MB/s  {:>6.0} ns/record",
            self.records as f64 / secs,
            self.bytes as f64 / secs / 1e6,
            self.elapsed.as_nanos() as f64 / self.records as f64
        );
    }
}

/// Appends ROUNDS rounds of PER_ROUND records, flushing after each round; with `read`, the
/// sender drains and acknowledges after each round too.
fn run(opts: SpoolOptions, read: bool) -> (Figures, Duration, u64) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let (mut spool, _) = Spool::open(dir.path(), opts).unwrap_or_else(|e| panic!("{e}"));
    spool
        .begin_boot("bench-boot")
        .unwrap_or_else(|e| panic!("{e}"));
    let payloads: Vec<Vec<u8>> = (0..PER_ROUND).map(record).collect();
    let mut seq = 0u64;
    let mut bytes = 0u64;
    let mut ack_time = Duration::ZERO;
    let mut acks = 0u64;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for p in &payloads {
            seq += 1;
            bytes += p.len() as u64;
            spool
                .append(seq, seq as i64, "http", p)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        spool.flush().unwrap_or_else(|e| panic!("{e}"));
        if read {
            while let Some(b) = spool
                .next_batch(500, 1 << 20)
                .unwrap_or_else(|e| panic!("{e}"))
            {
                let last = b.records.last().map_or(0, |r| r.seq);
                let a = Instant::now();
                spool
                    .ack(&b.boot_id, last)
                    .unwrap_or_else(|e| panic!("{e}"));
                ack_time += a.elapsed();
                acks += 1;
            }
        }
    }
    let elapsed = t.elapsed();
    assert_eq!(
        spool.pending_lost().len(),
        0,
        "the bench must stay under the cap"
    );
    (
        Figures {
            records: seq,
            bytes,
            elapsed,
        },
        ack_time,
        acks,
    )
}

fn main() {
    println!(
        "{ROUNDS} rounds of {PER_ROUND} records of {RECORD_BYTES} bytes (append x{PER_ROUND} + flush per round)"
    );
    for fsync in [true, false] {
        let opts = SpoolOptions {
            fsync,
            ..SpoolOptions::default()
        };
        let (f, _, _) = run(opts, false);
        f.print(&format!("append+flush (fsync on seal: {fsync})"));
        let (f, ack, acks) = run(opts, true);
        f.print(&format!("append+flush+next_batch+ack (fsync: {fsync})"));
        println!(
            "{:44} {acks} acks, {:.1} us/ack (state file written per ack)",
            "",
            ack.as_secs_f64() * 1e6 / acks.max(1) as f64
        );
    }
}
