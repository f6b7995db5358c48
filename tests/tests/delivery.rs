//! Delivery from the agent to the collector, end to end: real agent, real collector (mTLS,
//! SQLite store, NDJSON file sink), real curl traffic, real process kills.
//!
//! The agent runs with `--stdout` too, so each test knows every record the agent wrote (it
//! prints a record only after handing it to the spool). "Nothing lost, nothing twice" means:
//! every (boot_id, seq) the agent printed is in the sink exactly once, and the sink holds
//! nothing else of that boot but collector-made loss records.
//!
//! Agent and collector run in the lab's node network namespace; their connection is
//! 127.0.0.1 there. Run as root: `cargo xtask test`, or
//! `MONITOR_BIN=$PWD/target/release/monitor cargo test --release -p monitor-tests --test
//! delivery -- --test-threads=1 --nocapture`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use monitor_tests::{Agent, Collector, fixture, lab, make_certs, monitor_bin, repo_root};
use serde_json::Value;
use xtask::lab::Lab;

const WEB: &str = "10.77.0.10";

/// (boot_id, seq) of a record.
fn key(v: &Value) -> (String, u64) {
    (
        v["boot_id"].as_str().unwrap_or_default().to_owned(),
        v["seq"].as_u64().unwrap_or(0),
    )
}

/// A curl loop in `client-a`: one small GET every ~20 ms until stopped.
fn steady_traffic(lab: &mut Lab) -> Child {
    let mut cmd = lab.command("client-a", "sh").unwrap();
    cmd.args([
        "-c",
        &format!("while :; do curl -s -o /dev/null http://{WEB}/small; sleep 0.02; done"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    lab.spawn("client-a", cmd).unwrap()
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn sigkill(agent: Agent) {
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    drop(agent);
}

/// Asserts that every record in `printed` (one agent run) is in `sink` exactly once, and that
/// the sink has nothing else of that boot except loss records. Returns the boot id.
fn exactly_once(printed: &[Value], sink: &[Value]) -> String {
    assert!(!printed.is_empty(), "the agent printed no records");
    let boot = key(&printed[0]).0;
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for v in sink
        .iter()
        .filter(|v| v["boot_id"] == boot.as_str() && v["kind"] != "loss")
    {
        *counts.entry(key(v).1).or_default() += 1;
    }
    let dup: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "records delivered more than once: {dup:?}");
    let printed_seqs: BTreeSet<u64> = printed.iter().map(|v| key(v).1).collect();
    assert_eq!(
        printed_seqs.len(),
        printed.len(),
        "the agent printed a seq twice"
    );
    let first = *printed_seqs.first().unwrap();
    let last = *printed_seqs.last().unwrap();
    assert_eq!(first, 1, "seq starts at 1 with each boot");
    assert_eq!(
        last as usize,
        printed.len(),
        "the agent's seqs are contiguous"
    );
    let missing: Vec<u64> = printed_seqs
        .iter()
        .filter(|s| !counts.contains_key(s))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} records of boot {boot} never reached the sink, e.g. seqs {:?}",
        missing.len(),
        printed.len(),
        &missing[..missing.len().min(10)]
    );
    let extra: Vec<u64> = counts
        .keys()
        .filter(|s| !printed_seqs.contains(s))
        .copied()
        .collect();
    assert!(
        extra.is_empty(),
        "the sink has records of boot {boot} the agent never printed: {extra:?}"
    );
    boot
}

fn spool_dir(lab: &Lab, name: &str) -> PathBuf {
    let d = lab.run_dir().join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn agent_args<'a>(c: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = c.iter().map(String::as_str).collect();
    v.extend_from_slice(more);
    v
}

/// Also: a second sink that always fails does not hold back ingest or the NDJSON sink.
#[test]
fn a_thirty_second_collector_outage_loses_and_duplicates_nothing() {
    let mut lab = lab("dlv1", &fixture("lab.yaml"));
    let certs = make_certs(&lab.run_dir().join("certs"));
    // A second sink that always fails (nothing listens on port 9): it is retried and counted,
    // and must neither block ingest nor the NDJSON sink.
    let dead_sink = format!(
        "syslog:tls=127.0.0.1:9,ca={},timeout=1s,kinds=all",
        certs.join("ca.pem").display()
    );
    let mut collector = Collector::start(
        &lab,
        &lab.run_dir().join("collector"),
        &certs,
        17441,
        &["--sink", &dead_sink],
    )
    .unwrap();
    let spool = spool_dir(&lab, "spool");
    let cargs = collector.agent_args(&spool);
    let agent = Agent::start_in_node(&lab, &agent_args(&cargs, &["--stdout"])).unwrap();
    let traffic = steady_traffic(&mut lab);

    collector
        .wait_sink("first records delivered", Duration::from_secs(20), |r| {
            r.len() >= 20
        })
        .unwrap();
    let status = collector.signal(libc::SIGKILL).unwrap();
    assert!(!status.success(), "SIGKILL ends the collector");
    let before = collector.sink_records().len();
    std::thread::sleep(Duration::from_secs(30));
    let during = agent.records().len();
    collector.restart().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    stop(traffic);
    let printed = agent.stop().unwrap();
    eprintln!(
        "outage: {before} records in the sink at the kill; the agent had printed {during} when \
         the collector came back, {} in all",
        printed.len()
    );
    assert!(
        during > before + 500,
        "traffic kept flowing during the outage ({before} before, {during} during)"
    );
    let sink = collector
        .wait_sink(
            "every printed record in the sink",
            Duration::from_secs(30),
            |r| r.len() >= printed.len(),
        )
        .unwrap();
    let boot = exactly_once(&printed, &sink);
    assert!(
        collector.stderr().contains("sink write failed"),
        "the dead syslog sink's failures are logged:\n{}",
        collector.stderr()
    );
    let http = printed.iter().filter(|v| v["kind"] == "http").count();
    assert!(http > 500, "{http} http records");
    eprintln!(
        "boot {boot}: {} records, {http} http, all delivered exactly once",
        printed.len()
    );

    // A non-Rust client (Python grpcio, stubs generated from proto/monitor.proto at run time)
    // reads the same http records back through Observe, over mTLS with the `cli` certificate.
    let out = xtask::lab::nsenter(lab.node_netns(), Path::new("/usr/bin/python3"))
        .arg(repo_root().join("tests/clients/observe.py"))
        .args(["--target", &format!("127.0.0.1:{}", collector.port)])
        .arg("--proto")
        .arg(repo_root().join("proto/monitor.proto"))
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("cli.pem"))
        .arg("--key")
        .arg(certs.join("cli.key"))
        .args(["--kind", "http"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "observe.py failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let observed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("observe.py prints JSON"))
        .collect();
    let via_python: BTreeSet<(String, u64)> = observed
        .iter()
        .map(|o| {
            assert_eq!(o["kind"], "http");
            assert_eq!(o["json"]["kind"], "http");
            (
                o["boot_id"].as_str().unwrap().to_owned(),
                o["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let printed_http: BTreeSet<(String, u64)> = printed
        .iter()
        .filter(|v| v["kind"] == "http")
        .map(key)
        .collect();
    assert_eq!(
        via_python, printed_http,
        "Observe (from Python) returns exactly the http records"
    );
    drop(collector);
}

#[test]
fn an_agent_killed_with_records_unacknowledged_resends_them_after_restart() {
    let mut lab = lab("dlv2", &fixture("lab.yaml"));
    let certs = make_certs(&lab.run_dir().join("certs"));
    let mut collector =
        Collector::start(&lab, &lab.run_dir().join("collector"), &certs, 17442, &[]).unwrap();
    let spool = spool_dir(&lab, "spool");
    let cargs = collector.agent_args(&spool);
    let first = Agent::start_in_node(&lab, &agent_args(&cargs, &["--stdout"])).unwrap();
    let traffic = steady_traffic(&mut lab);
    collector
        .wait_sink("first records delivered", Duration::from_secs(20), |r| {
            r.len() >= 20
        })
        .unwrap();
    // Collector down: the agent's records pile up in its spool. Then kill the agent too.
    collector.signal(libc::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let printed_first = first.records();
    sigkill(first);
    let delivered_before = collector.sink_records().len();
    assert!(
        printed_first.len() > delivered_before + 50,
        "records were waiting in the spool ({} printed, {delivered_before} delivered)",
        printed_first.len()
    );
    collector.restart().unwrap();
    let second = Agent::start_in_node(&lab, &agent_args(&cargs, &["--stdout"])).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stop(traffic);
    let printed_second = second.stop().unwrap();
    let total = printed_first.len() + printed_second.len();
    let sink = collector
        .wait_sink("both boots delivered", Duration::from_secs(30), |r| {
            r.len() >= total
        })
        .unwrap();
    let b1 = exactly_once(&printed_first, &sink);
    let b2 = exactly_once(&printed_second, &sink);
    assert_ne!(b1, b2, "each agent start is a new boot");
    eprintln!(
        "boot {b1}: {} records, boot {b2}: {}, each delivered exactly once",
        printed_first.len(),
        printed_second.len()
    );
}

#[test]
fn an_agent_without_a_trusted_client_certificate_is_refused_and_nothing_is_stored() {
    let mut lab = lab("dlv3", &fixture("lab.yaml"));
    let certs = make_certs(&lab.run_dir().join("certs"));
    let rogue = make_certs(&lab.run_dir().join("rogue"));
    let collector =
        Collector::start(&lab, &lab.run_dir().join("collector"), &certs, 17443, &[]).unwrap();
    let spool = spool_dir(&lab, "spool");
    // Trusts the real collector (its CA) but presents a certificate from another CA.
    let agent = Agent::start_in_node(
        &lab,
        &[
            "--collector",
            &collector.url(),
            "--ca",
            certs.join("ca.pem").to_str().unwrap(),
            "--cert",
            rogue.join("agent.pem").to_str().unwrap(),
            "--key",
            rogue.join("agent.key").to_str().unwrap(),
            "--spool-dir",
            spool.to_str().unwrap(),
        ],
    )
    .unwrap();
    let traffic = steady_traffic(&mut lab);
    std::thread::sleep(Duration::from_secs(4));
    let log = agent.stderr();
    drop(agent);
    assert!(
        log.contains("delivery to the collector failed"),
        "the agent says delivery fails:\n{log}"
    );
    // A certificate from the right CA that has expired (valid for 0 days) is refused too.
    let out = Command::new(monitor_bin())
        .args(["certs", "issue", "--dir"])
        .arg(&certs)
        .args(["--name", "expired", "--days", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(1));
    let refused_before = collector.stderr().matches("TLS handshake refused").count();
    let expired = Agent::start_in_node(
        &lab,
        &[
            "--collector",
            &collector.url(),
            "--ca",
            certs.join("ca.pem").to_str().unwrap(),
            "--cert",
            certs.join("expired.pem").to_str().unwrap(),
            "--key",
            certs.join("expired.key").to_str().unwrap(),
            "--spool-dir",
            spool.to_str().unwrap(),
        ],
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stop(traffic);
    let log = expired.stderr();
    drop(expired);
    assert!(
        log.contains("delivery to the collector failed"),
        "the agent with an expired certificate says delivery fails:\n{log}"
    );
    assert!(
        collector.stderr().matches("TLS handshake refused").count() > refused_before,
        "the collector refused the expired certificate:\n{}",
        collector.stderr()
    );
    let clog = collector.stderr();
    assert!(
        clog.contains("TLS handshake refused"),
        "the collector logs the refused handshake:\n{clog}"
    );
    assert!(
        collector.sink_records().is_empty(),
        "nothing reached the sink"
    );
    // And nothing is in the store: ask it (with the real CLI certificate).
    let out = xtask::lab::nsenter(lab.node_netns(), &monitor_bin())
        .args(["observe", "--collector", &collector.url(), "--tls-dir"])
        .arg(&certs)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "observe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "the store holds no record"
    );
}

/// Agent arguments: deliver to `url` with a 1 MiB spool (so 256 KiB segments), printing too.
fn small_spool_args(url: &str, certs: &Path, spool: &Path) -> Vec<String> {
    [
        "--collector",
        url,
        "--tls-dir",
        &certs.display().to_string(),
        "--spool-dir",
        &spool.display().to_string(),
        "--spool-max-mib",
        "1",
        "--stdout",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The oldest spool segment file.
fn oldest_segment(spool: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert!(
        segs.len() >= 2,
        "the test needs at least two spool segments, found {segs:?}"
    );
    segs.remove(0)
}

#[test]
fn a_corrupted_spool_segment_is_skipped_and_reported_as_loss() {
    let lab = lab("dlv4", &fixture("lab.yaml"));
    let certs = make_certs(&lab.run_dir().join("certs"));
    let spool = spool_dir(&lab, "spool");
    // No collector yet: everything stays in the spool. A 1 MiB cap makes 256 KiB segments.
    let url = "https://127.0.0.1:17444";
    let args = small_spool_args(url, &certs, &spool);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = Agent::start_in_node(&lab, &args).unwrap();
    // ~700 keep-alive requests in one curl: ~550 KiB of records, below the cap.
    let urls: Vec<String> = (0..700)
        .map(|i| format!("http://{WEB}/small?i={i}"))
        .collect();
    let mut cmd = lab.command("client-a", "curl").unwrap();
    cmd.arg("-s").args(&urls).stdout(Stdio::null());
    assert!(cmd.status().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    let printed = first.stop().unwrap();
    assert!(printed.len() >= 700, "{} records", printed.len());
    // Flip bytes in the middle of the oldest segment.
    let seg = oldest_segment(&spool);
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&seg, &bytes).unwrap();

    let collector =
        Collector::start(&lab, &lab.run_dir().join("collector"), &certs, 17444, &[]).unwrap();
    let second = Agent::start_in_node(&lab, &args).unwrap();
    let boot = key(&printed[0]).0;
    let sink = collector
        .wait_sink("the spool's loss note", Duration::from_secs(20), |r| {
            r.iter()
                .any(|v| v["kind"] == "loss" && v["boot_id"] == boot.as_str())
        })
        .unwrap();
    let printed_second = second.stop().unwrap();
    let loss: Vec<&Value> = sink
        .iter()
        .filter(|v| v["kind"] == "loss" && v["boot_id"] == boot.as_str())
        .collect();
    assert_eq!(loss.len(), 1, "one loss record: {loss:#?}");
    let l = loss[0];
    assert_eq!(l["stage"], "spool", "{l}");
    assert_eq!(l["reason"], "corrupt", "{l}");
    let first_lost = l["first_seq"].as_u64().unwrap();
    let last_lost = l["last_seq"].as_u64().unwrap();
    assert!(first_lost > 1, "records before the damage survive: {l}");
    assert!(
        last_lost >= first_lost,
        "the note bounds the lost range (the next segment's first seq is known): {l}"
    );
    let delivered: BTreeSet<u64> = sink
        .iter()
        .filter(|v| v["boot_id"] == boot.as_str() && v["kind"] != "loss")
        .map(|v| key(v).1)
        .collect();
    for v in &printed {
        let s = key(v).1;
        let lost = (first_lost..=last_lost).contains(&s);
        assert_eq!(
            delivered.contains(&s),
            !lost,
            "seq {s}: delivered iff outside the lost range {first_lost}..={last_lost}"
        );
    }
    assert_eq!(
        l["count"].as_u64().unwrap(),
        last_lost - first_lost + 1,
        "count matches the range: {l}"
    );
    eprintln!(
        "corrupt segment: seqs {first_lost}..={last_lost} of {} reported lost, the rest \
         delivered; second boot {} records",
        printed.len(),
        printed_second.len()
    );
}

#[test]
fn a_full_spool_drops_its_oldest_segment_and_reports_it_as_loss() {
    let lab = lab("dlv5", &fixture("lab.yaml"));
    let certs = make_certs(&lab.run_dir().join("certs"));
    let spool = spool_dir(&lab, "spool");
    // No collector yet, and a 1 MiB cap (256 KiB segments): ~2,000 keep-alive requests make
    // ~1.6 MB of records, so the oldest segments must go.
    let args = small_spool_args("https://127.0.0.1:17445", &certs, &spool);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_in_node(&lab, &args).unwrap();
    for chunk in 0..4 {
        let urls: Vec<String> = (0..500)
            .map(|i| format!("http://{WEB}/small?c={chunk}&i={i}"))
            .collect();
        let mut cmd = lab.command("client-a", "curl").unwrap();
        cmd.arg("-s").args(&urls).stdout(Stdio::null());
        assert!(cmd.status().unwrap().success());
    }
    std::thread::sleep(Duration::from_millis(500));
    let printed = agent.stop().unwrap();
    assert!(printed.len() >= 2000, "{} records", printed.len());
    let boot = key(&printed[0]).0;

    let collector =
        Collector::start(&lab, &lab.run_dir().join("collector"), &certs, 17445, &[]).unwrap();
    let second = Agent::start_in_node(&lab, &args).unwrap();
    let last = key(printed.last().unwrap()).1;
    let sink = collector
        .wait_sink(
            "the first boot's newest record",
            Duration::from_secs(20),
            |r| {
                r.iter()
                    .any(|v| v["boot_id"] == boot.as_str() && v["seq"].as_u64() == Some(last))
            },
        )
        .unwrap();
    drop(second);
    let losses: Vec<&Value> = sink
        .iter()
        .filter(|v| v["kind"] == "loss" && v["boot_id"] == boot.as_str())
        .collect();
    assert!(!losses.is_empty(), "the cap's drops are reported");
    let mut lost: BTreeSet<u64> = BTreeSet::new();
    for l in &losses {
        assert_eq!(l["stage"], "spool", "{l}");
        assert_eq!(l["reason"], "cap", "{l}");
        let (a, b) = (
            l["first_seq"].as_u64().unwrap(),
            l["last_seq"].as_u64().unwrap(),
        );
        assert_eq!(l["count"].as_u64().unwrap(), b - a + 1, "{l}");
        for s in a..=b {
            assert!(lost.insert(s), "seq {s} reported lost twice");
        }
    }
    let delivered: BTreeSet<u64> = sink
        .iter()
        .filter(|v| v["boot_id"] == boot.as_str() && v["kind"] != "loss")
        .map(|v| key(v).1)
        .collect();
    // Every record the agent wrote is either delivered or in exactly one loss note.
    for v in &printed {
        let s = key(v).1;
        assert!(
            delivered.contains(&s) != lost.contains(&s),
            "seq {s}: delivered {} / reported lost {}",
            delivered.contains(&s),
            lost.contains(&s)
        );
    }
    assert_eq!(
        *lost.first().unwrap(),
        1,
        "the oldest records are the ones dropped"
    );
    eprintln!(
        "full spool: {} of {} records reported lost in {} note(s), the rest delivered",
        lost.len(),
        printed.len(),
        losses.len()
    );
}
