//! Opening a spool whose segment is far larger than configured (1 GiB of valid frames) stays
//! within a small memory bound: the open runs in a child process (this test binary again) and
//! its peak resident set (`VmHWM`) is checked. The DaemonSet's memory limit is 512 MiB; before
//! segments were read frame by frame, this open peaked at about 1 GiB and the agent was
//! OOM-killed before it attached.

use std::{
    fs,
    io::{BufWriter, Write as _},
    path::Path,
    process::Command,
};

use super::{format, *};

/// Size of the generated segment.
const SEGMENT: u64 = 1 << 30;
/// Payload bytes per record: 1 MiB, so the segment holds 1,023 records.
const PAYLOAD: usize = 1 << 20;
/// The child's peak resident set must stay under this (the spool needs a 64 KiB window and
/// one frame buffer, at most 16 MiB; delivery reads chunks of at most 8 MiB). The
/// DaemonSet's limit is 512 MiB.
const BOUND_KIB: u64 = 64 << 10;
/// The environment variable that makes [`open_in_child`] do its work.
const CHILD_ENV: &str = "MONITOR_SPOOL_MEMORY_CHILD_DIR";

/// Writes one segment of `boot` of about `bytes` bytes of valid frames (seqs from 1); returns
/// the number of records.
fn write_big_segment(dir: &Path, boot: &str, bytes: u64) -> u64 {
    fs::create_dir_all(dir).unwrap();
    let f = fs::File::create(dir.join(Segment::name(0))).unwrap();
    let mut w = BufWriter::with_capacity(4 << 20, f);
    let mut head = Vec::new();
    format::encode_header(&mut head, boot, 1);
    w.write_all(&head).unwrap();
    let mut written = head.len() as u64;
    let payload = vec![b'x'; PAYLOAD];
    let mut frame = Vec::with_capacity(PAYLOAD + 64);
    let mut seq = 0;
    while written + (format::frame_len("http", &payload) as u64) <= bytes {
        seq += 1;
        frame.clear();
        format::encode_frame(&mut frame, seq, seq as i64, "http", &payload);
        w.write_all(&frame).unwrap();
        written += frame.len() as u64;
    }
    w.flush().unwrap();
    seq
}

/// Peak resident set of this process, KiB.
fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The child's half: opens the spool named by [`CHILD_ENV`] and prints its peak memory.
/// Ignored, and a no-op without the variable: only [`one_gib_segment_opens_in_bounded_memory`]
/// runs it.
#[test]
#[ignore = "run by one_gib_segment_opens_in_bounded_memory in a child process"]
fn open_in_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let before = vm_hwm_kib();
    let (mut sp, rep) = Spool::open(Path::new(&dir), SpoolOptions::default()).unwrap();
    let opened = vm_hwm_kib();
    // Delivery reads the same segment in bounded chunks too.
    let mut read = 0;
    while let Some(b) = sp.next_batch(1024, 1 << 20).unwrap() {
        read += b.records.len();
    }
    println!(
        "SPOOL-CHILD vm_hwm_kib={opened} before_kib={before} drained_kib={} pending={} read={read} segments={} oversized={}",
        vm_hwm_kib(),
        sp.pending_records(),
        rep.segments,
        rep.oversized_segments,
    );
}

#[test]
fn one_gib_segment_opens_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let records = write_big_segment(&spool, "big", SEGMENT);
    assert!(records > 1000, "{records}");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "delivery::spool::tests_memory::open_in_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &spool)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("SPOOL-CHILD").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no report from the child:\n{stdout}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    eprintln!("{line}");
    assert_eq!(field("pending"), records, "{line}");
    assert_eq!(field("read"), records, "{line}");
    assert_eq!(field("oversized"), 1, "{line}");
    assert!(
        field("vm_hwm_kib") < BOUND_KIB,
        "opening a 1 GiB segment peaked at {} KiB (bound {BOUND_KIB} KiB)",
        field("vm_hwm_kib")
    );
    assert!(
        field("drained_kib") < BOUND_KIB,
        "reading a 1 GiB segment back peaked at {} KiB (bound {BOUND_KIB} KiB)",
        field("drained_kib")
    );
}
