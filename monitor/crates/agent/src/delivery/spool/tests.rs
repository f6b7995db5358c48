use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use proptest::prelude::*;

use super::{format::Parsed, *};

pub(super) fn opts(max_bytes: u64, segment_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        max_bytes,
        segment_bytes,
        fsync: false,
        ..SpoolOptions::default()
    }
}

pub(super) fn open(dir: &Path, o: SpoolOptions) -> (Spool, OpenReport) {
    Spool::open(dir, o).unwrap_or_else(|e| panic!("{e}"))
}

/// Deterministic record content, so a test can check what comes back byte for byte.
pub(super) fn payload(boot: &str, seq: u64, len: usize) -> Vec<u8> {
    let pat = format!("{{\"boot\":\"{boot}\",\"seq\":{seq}}}");
    pat.bytes().cycle().take(len).collect()
}

pub(super) fn time(seq: u64) -> i64 {
    1_700_000_000_000_000_000 + seq as i64 * 1000
}

pub(super) fn append_n(
    sp: &mut Spool,
    boot: &str,
    seqs: std::ops::RangeInclusive<u64>,
    len: usize,
) {
    for s in seqs {
        sp.append(s, time(s), "http", &payload(boot, s, len))
            .unwrap_or_else(|e| panic!("append {s}: {e}"));
    }
}

/// Reads everything readable; checks each batch holds one boot.
pub(super) fn drain(sp: &mut Spool) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while let Some(b) = sp.next_batch(37, 1 << 20).unwrap_or_else(|e| panic!("{e}")) {
        assert!(!b.records.is_empty());
        for r in &b.records {
            assert_eq!(r.boot_id, b.boot_id, "a batch mixes boots");
            out.push((r.boot_id.to_string(), r.seq));
        }
    }
    out
}

pub(super) fn seqs(boot: &str, r: std::ops::RangeInclusive<u64>) -> Vec<(String, u64)> {
    r.map(|s| (boot.to_owned(), s)).collect()
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// (offset, seq) of every frame of a segment file.
pub(super) fn frames_of(path: &Path) -> Vec<(usize, u64)> {
    let data = fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    let Parsed::Ok(h, mut at) = format::parse_header(&data) else {
        panic!("bad header in {}", path.display())
    };
    let _ = h;
    let mut v = Vec::new();
    while let Parsed::Ok(f, n) = format::parse_frame(&data[at..]) {
        v.push((at, f.seq));
        at += n;
    }
    assert_eq!(at, data.len(), "{} has trailing bytes", path.display());
    v
}

pub(super) fn flip(path: &Path, at: usize) {
    let mut data = fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    data[at] ^= 0x40;
    fs::write(path, data).unwrap_or_else(|e| panic!("{e}"));
}

impl Spool {
    /// Stops like a crash: buffered records vanish, nothing is sealed.
    pub(super) fn crash(mut self) {
        self.buf = Buffer::default();
        self.writer = None;
    }
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, rep) = open(dir.path(), SpoolOptions::default());
    assert_eq!(rep, OpenReport::default());
    sp.begin_boot("boot-a").unwrap();
    for s in 1..=1000u64 {
        let kind = ["http", "flow", "violation"][(s % 3) as usize];
        sp.append(
            s,
            time(s) - 7,
            kind,
            &payload("boot-a", s, (s as usize * 13) % 2000),
        )
        .unwrap();
    }
    assert_eq!(
        sp.next_batch(10, 1 << 20).unwrap(),
        None,
        "unflushed records are not readable"
    );
    sp.flush().unwrap();
    assert_eq!(sp.pending_records(), 1000);
    let mut n = 0u64;
    while let Some(b) = sp.next_batch(64, 1 << 20).unwrap() {
        assert!(b.records.len() <= 64);
        for r in b.records {
            n += 1;
            let kind = ["http", "flow", "violation"][(n % 3) as usize];
            let want = SpooledRecord {
                boot_id: "boot-a".into(),
                seq: n,
                time_ns: time(n) - 7,
                kind: kind.into(),
                payload: payload("boot-a", n, (n as usize * 13) % 2000),
            };
            assert_eq!(r, want);
        }
    }
    assert_eq!(n, 1000);
    // The byte limit bounds a batch (but a batch always has one record).
    sp.rewind();
    let b = sp.next_batch(1000, 3000).unwrap().unwrap();
    let total: usize = b.records.iter().map(|r| r.payload.len()).sum();
    assert!(total <= 3000 && !b.records.is_empty(), "{total}");
}

#[test]
fn batches_never_mix_boots() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), SpoolOptions::default());
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=5, 10);
    sp.begin_boot("b").unwrap();
    append_n(&mut sp, "b", 1..=5, 10);
    sp.flush().unwrap();
    let b1 = sp.next_batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!(&*b1.boot_id, "a");
    assert_eq!(
        b1.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let b2 = sp.next_batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!(&*b2.boot_id, "b");
    assert!(b2.records.iter().all(|r| &*r.boot_id == "b"));
    assert_eq!(b2.records.len(), 5);
    assert_eq!(sp.next_batch(100, 1 << 20).unwrap(), None);
}

#[test]
fn rewind_redelivers_exactly_the_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), opts(1 << 20, 4096));
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=100, 150);
    sp.flush().unwrap();
    assert_eq!(drain(&mut sp), seqs("a", 1..=100));
    sp.ack("a", 40).unwrap();
    assert_eq!(sp.pending_records(), 60);
    sp.rewind();
    assert_eq!(drain(&mut sp), seqs("a", 41..=100));
    // Without a rewind nothing comes twice.
    assert_eq!(drain(&mut sp), []);
}

#[test]
fn ack_deletes_segments_and_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut sp, _) = open(dir.path(), opts(1 << 20, 4096));
        sp.begin_boot("a").unwrap();
        append_n(&mut sp, "a", 1..=200, 100);
        sp.flush().unwrap();
        let before = segment_files(dir.path());
        assert!(before.len() >= 5, "{}", before.len());
        let lasts: Vec<u64> = before
            .iter()
            .map(|p| frames_of(p).last().unwrap().1)
            .collect();
        assert_eq!(drain(&mut sp).len(), 200);
        let bytes = sp.bytes();
        sp.ack("a", 150).unwrap();
        let after = segment_files(dir.path());
        // Exactly the segments whose last record is <= 150 are gone.
        let gone: Vec<_> = before.iter().filter(|p| !after.contains(p)).collect();
        assert!(!gone.is_empty());
        for (p, last) in before.iter().zip(lasts) {
            assert_eq!(gone.contains(&p), last <= 150, "{}", p.display());
        }
        assert!(sp.bytes() < bytes);
        assert_eq!(sp.pending_records(), 50);
    }
    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 4096));
    assert_eq!(rep.pending_records, 50);
    assert!(rep.corrupt.is_empty());
    assert_eq!(drain(&mut sp), seqs("a", 151..=200));
}

#[test]
fn reopen_after_ungraceful_stop_redelivers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), opts(1 << 20, 8192));
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=60, 200);
    sp.flush().unwrap();
    assert_eq!(drain(&mut sp).len(), 60);
    sp.ack("a", 10).unwrap();
    // Appended but never flushed: not spooled (the agent died before its flush).
    append_n(&mut sp, "a", 61..=65, 200);
    sp.crash();

    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 8192));
    assert_eq!(rep.pending_records, 50);
    assert_eq!(rep.torn_bytes, 0);
    sp.begin_boot("b").unwrap();
    append_n(&mut sp, "b", 1..=3, 50);
    sp.flush().unwrap();
    sp.rewind();
    let mut want = seqs("a", 11..=60);
    want.extend(seqs("b", 1..=3));
    assert_eq!(drain(&mut sp), want);
    // Acknowledging the new boot acknowledges the old one too.
    sp.ack("b", 2).unwrap();
    sp.rewind();
    assert_eq!(drain(&mut sp), seqs("b", 3..=3));
}

/// Records of `payload_len` bytes per segment of `segment_bytes`, for boot id `boot`.
fn per_segment(boot: &str, segment_bytes: u64, payload_len: usize) -> u64 {
    let header = 20 + boot.len() as u64;
    let frame = format::frame_len("http", &vec![0; payload_len]) as u64;
    (segment_bytes - header) / frame
}

#[test]
fn cap_drops_the_oldest_segment_with_an_exact_note() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), opts(16 * 1024, 4096));
    sp.begin_boot("a").unwrap();
    let k = per_segment("a", 4096, 200);
    // Deliver and acknowledge the first 5, read a few more (the cursor sits in segment 0).
    append_n(&mut sp, "a", 1..=10, 200);
    sp.flush().unwrap();
    let b = sp.next_batch(8, 1 << 20).unwrap().unwrap();
    assert_eq!(b.records.len(), 8);
    sp.ack("a", 5).unwrap();
    let mut s = 10;
    while sp.pending_lost().is_empty() {
        s += 1;
        append_n(&mut sp, "a", s..=s, 200);
        sp.flush().unwrap();
        assert!(sp.bytes() <= sp.max_bytes(), "{} > cap", sp.bytes());
        assert!(s < 1000, "the cap never dropped anything");
    }
    let lost = sp.pending_lost().to_vec();
    assert_eq!(
        lost,
        [Lost {
            id: lost[0].id,
            boot_id: "a".into(),
            reason: LostReason::Cap,
            count: k - 5,
            first_seq: 6,
            last_seq: k,
            first_time_ns: time(6),
            last_time_ns: time(k),
            bytes: 0,
        }]
    );
    assert_eq!(LostReason::Cap.source(), "spool/cap");
    // The cursor moved to the next segment: delivery goes on from k + 1, nothing skipped.
    let next = sp.next_batch(1, 1 << 20).unwrap().unwrap();
    assert_eq!(next.records[0].seq, k + 1);
    // Keeps going: more drops, each note follows the previous one.
    append_n(&mut sp, "a", s + 1..=s + 3 * k, 200);
    sp.flush().unwrap();
    let lost = sp.pending_lost().to_vec();
    assert!(lost.len() >= 3, "{lost:?}");
    for w in lost.windows(2) {
        assert_eq!(w[1].first_seq, w[0].last_seq + 1);
        assert_eq!(w[1].count, w[1].last_seq - w[1].first_seq + 1);
        assert!(w[1].id > w[0].id);
    }
    let last_lost = lost.last().unwrap().last_seq;
    sp.rewind();
    assert_eq!(drain(&mut sp), seqs("a", last_lost + 1..=s + 3 * k));
    assert!(sp.bytes() <= sp.max_bytes());
}

#[test]
fn flipped_byte_in_an_older_segment_is_found_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut sp, _) = open(dir.path(), opts(1 << 20, 4096));
        sp.begin_boot("a").unwrap();
        append_n(&mut sp, "a", 1..=100, 150);
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    let victim = &files[1];
    let frames = frames_of(victim);
    let (at, bad_seq) = frames[frames.len() / 2];
    flip(victim, at + 30);
    let next_first = frames_of(&files[2])[0].1;
    let damaged = fs::metadata(victim).unwrap().len() - at as u64;

    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 4096));
    let want = Lost {
        id: rep.corrupt[0].id,
        boot_id: "a".into(),
        reason: LostReason::Corrupt,
        count: next_first - bad_seq,
        first_seq: bad_seq,
        last_seq: next_first - 1,
        first_time_ns: time(bad_seq - 1),
        last_time_ns: time(next_first),
        bytes: damaged,
    };
    assert_eq!(rep.corrupt, std::slice::from_ref(&want));
    assert_eq!(sp.pending_lost(), [want]);
    assert_eq!(LostReason::Corrupt.source(), "spool/corrupt");
    let mut expect = seqs("a", 1..=bad_seq - 1);
    expect.extend(seqs("a", next_first..=100));
    assert_eq!(drain(&mut sp), expect);
    drop(sp);
    // Reported once: the damaged tail was cut off.
    let (_, rep) = open(dir.path(), opts(1 << 20, 4096));
    assert!(rep.corrupt.is_empty());
    assert_eq!(rep.pending_lost, 1);
}

#[test]
fn torn_last_frame_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), opts(1 << 20, 1 << 20));
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=10, 300);
    sp.flush().unwrap();
    sp.crash();
    let file = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    let mut frame = Vec::new();
    format::encode_frame(&mut frame, 11, time(11), "http", &payload("a", 11, 300));
    let mut data = fs::read(&file).unwrap();
    data.extend_from_slice(&frame[..frame.len() / 2]);
    fs::write(&file, &data).unwrap();

    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 1 << 20));
    assert_eq!(rep.torn_bytes, (frame.len() / 2) as u64);
    // Whatever came after the cut left no trace: the note starts at the cut, its end is not
    // determinable (count 0), and it says how many bytes were cut off.
    let want = Lost {
        id: rep.corrupt[0].id,
        boot_id: "a".into(),
        reason: LostReason::Corrupt,
        count: 0,
        first_seq: 11,
        last_seq: 0,
        first_time_ns: time(10),
        last_time_ns: 0,
        bytes: (frame.len() / 2) as u64,
    };
    assert_eq!(rep.corrupt, std::slice::from_ref(&want));
    assert_eq!(sp.pending_lost(), [want]);
    assert_eq!(fs::metadata(&file).unwrap().len(), len);
    sp.begin_boot("b").unwrap();
    append_n(&mut sp, "b", 1..=1, 10);
    sp.flush().unwrap();
    let mut want = seqs("a", 1..=10);
    want.push(("b".into(), 1));
    assert_eq!(drain(&mut sp), want);
}

#[test]
fn zero_filled_tail_is_a_torn_write() {
    // After a crash the file system may show the file extended with zeros: records were
    // written there and never reached the disk.
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), opts(1 << 20, 1 << 20));
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=5, 100);
    sp.flush().unwrap();
    sp.crash();
    let file = segment_files(dir.path()).pop().unwrap();
    let mut data = fs::read(&file).unwrap();
    data.extend_from_slice(&[0; 4096]);
    fs::write(&file, &data).unwrap();
    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 1 << 20));
    assert_eq!((rep.torn_bytes, rep.corrupt.len()), (4096, 1));
    let l = &rep.corrupt[0];
    assert_eq!(
        (l.first_seq, l.last_seq, l.count, l.bytes),
        (6, 0, 0, 4096),
        "{l:?}"
    );
    assert_eq!(drain(&mut sp), seqs("a", 1..=5));
}

#[test]
fn unreadable_segment_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut sp, _) = open(dir.path(), opts(1 << 20, 2048));
        sp.begin_boot("a").unwrap();
        append_n(&mut sp, "a", 1..=40, 150);
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    let before_last = frames_of(&files[0]).last().unwrap().1;
    let after_first = frames_of(&files[2])[0].1;
    flip(&files[1], 10);
    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 2048));
    assert_eq!(rep.corrupt.len(), 1, "{rep:?}");
    let l = &rep.corrupt[0];
    assert_eq!(
        (l.reason, l.first_seq, l.last_seq, l.count),
        (
            LostReason::Corrupt,
            before_last + 1,
            after_first - 1,
            after_first - 1 - before_last
        )
    );
    assert!(!files[1].exists());
    let mut want = seqs("a", 1..=before_last);
    want.extend(seqs("a", after_first..=40));
    assert_eq!(drain(&mut sp), want);
}

#[test]
fn corruption_found_at_read_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), opts(1 << 20, 1 << 20));
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=50, 100);
    sp.flush().unwrap();
    let file = segment_files(dir.path()).pop().unwrap();
    let frames = frames_of(&file);
    assert_eq!(frames[19].1, 20);
    flip(&file, frames[19].0 + 40);
    assert_eq!(drain(&mut sp), seqs("a", 1..=19));
    let lost = sp.pending_lost();
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (
            lost[0].reason,
            lost[0].count,
            lost[0].first_seq,
            lost[0].last_seq
        ),
        (LostReason::Corrupt, 31, 20, 50)
    );
    assert_eq!(lost[0].last_time_ns, time(50));
    // Appends go on, into a new segment past the damage.
    append_n(&mut sp, "a", 51..=60, 100);
    sp.flush().unwrap();
    assert_eq!(drain(&mut sp), seqs("a", 51..=60));
    assert_eq!(sp.pending_records(), 29);
    sp.rewind();
    let mut want = seqs("a", 1..=19);
    want.extend(seqs("a", 51..=60));
    assert_eq!(drain(&mut sp), want);
}

#[test]
fn loss_notes_persist_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(8 * 1024, 2048);
    let first = {
        let (mut sp, _) = open(dir.path(), o);
        sp.begin_boot("a").unwrap();
        append_n(&mut sp, "a", 1..=100, 100);
        sp.flush().unwrap();
        assert!(sp.pending_lost().len() >= 2);
        sp.pending_lost().to_vec()
    };
    let (mut sp, rep) = open(dir.path(), o);
    assert_eq!(sp.pending_lost(), first);
    assert_eq!(rep.pending_lost, first.len());
    sp.ack_lost(&[first[0].id]).unwrap();
    drop(sp);
    let (mut sp, _) = open(dir.path(), o);
    assert_eq!(sp.pending_lost(), &first[1..]);
    // New notes get new ids, after a reopen too.
    sp.begin_boot("b").unwrap();
    append_n(&mut sp, "b", 1..=100, 100);
    sp.flush().unwrap();
    let max_old = first.iter().map(|l| l.id).max().unwrap();
    assert!(
        sp.pending_lost()
            .iter()
            .skip(first.len() - 1)
            .all(|l| l.id > max_old)
    );
    let ids: Vec<u64> = sp.pending_lost().iter().map(|l| l.id).collect();
    sp.ack_lost(&ids).unwrap();
    drop(sp);
    let (sp, _) = open(dir.path(), o);
    assert!(sp.pending_lost().is_empty());
}

#[test]
fn unusable_directory_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let err = Spool::open(&file.join("spool"), SpoolOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SpoolError::Dir { .. }), "{msg}");
    assert!(
        msg.contains("not-a-dir/spool") && msg.contains("writable --spool-dir"),
        "{msg}"
    );
    assert!(err.is_io());

    // A read-only directory (permissions do not stop root, so only checked for other users).
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt as _;
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        let err = Spool::open(&ro, SpoolOptions::default()).unwrap_err();
        assert!(matches!(err, SpoolError::Dir { .. }), "{err}");
        assert!(err.to_string().contains("writable --spool-dir"), "{err}");
    }

    // Two spools on one directory.
    let (_sp, _) = open(dir.path(), SpoolOptions::default());
    let err = Spool::open(dir.path(), SpoolOptions::default()).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
}

#[test]
fn append_rejects_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), SpoolOptions::default());
    assert!(matches!(
        sp.append(1, 0, "http", b"{}"),
        Err(SpoolError::NoBoot)
    ));
    assert!(matches!(sp.begin_boot(""), Err(SpoolError::BootId { .. })));
    sp.begin_boot("a").unwrap();
    sp.append(5, 0, "http", b"{}").unwrap();
    let err = sp.append(5, 0, "http", b"{}").unwrap_err();
    assert!(
        matches!(
            err,
            SpoolError::SeqOrder {
                seq: 5,
                last: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_io());
    let long = "k".repeat(256);
    assert!(matches!(
        sp.append(6, 0, &long, b""),
        Err(SpoolError::TooLarge { .. })
    ));
    sp.append(6, 0, "http", b"{}").unwrap();
}

// ---------------------------------------------------------------------------------------------
// Model-based property test
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Flush,
    Next(usize),
    Ack(prop::sample::Index),
    Rewind,
    Reopen,
    AckLost,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        14 => (0usize..500).prop_map(Op::Append),
        2 => Just(Op::Flush),
        3 => (1usize..12).prop_map(Op::Next),
        2 => any::<prop::sample::Index>().prop_map(Op::Ack),
        1 => Just(Op::Rewind),
        1 => Just(Op::Reopen),
        1 => Just(Op::AckLost),
    ]
}

/// What the spool should hold, kept naively.
#[derive(Debug, Default)]
struct Model {
    boots: Vec<String>,
    next_seq: u64,
    /// (boot index, seq) -> payload length, in append order.
    appended: BTreeMap<(usize, u64), usize>,
    /// Highest acknowledged (boot index, seq).
    acked: Option<(usize, u64)>,
    delivered: HashSet<(usize, u64)>,
    /// Delivered since the last rewind, in order.
    pass: Vec<(usize, u64)>,
    notes: HashMap<u64, Lost>,
}

impl Model {
    fn boot_index(&self, id: &str) -> usize {
        self.boots
            .iter()
            .position(|b| b == id)
            .unwrap_or_else(|| panic!("unknown boot {id}"))
    }
    fn is_acked(&self, r: (usize, u64)) -> bool {
        self.acked.is_some_and(|a| r <= a)
    }
    fn new_boot(&mut self, sp: &mut Spool) {
        let id = format!("boot-{}", self.boots.len());
        sp.begin_boot(&id).unwrap();
        self.boots.push(id);
        self.next_seq = 1;
    }
    /// Records each loss note the first time it is seen; an id never changes meaning.
    fn collect_notes(&mut self, sp: &Spool) {
        for l in sp.pending_lost() {
            if let Some(prev) = self.notes.get(&l.id) {
                assert_eq!(prev, l, "note id {} changed", l.id);
                continue;
            }
            // A new note covers only records not acknowledged.
            let b = self.boot_index(&l.boot_id);
            assert!(
                !self.is_acked((b, l.first_seq)),
                "{l:?} covers acknowledged records"
            );
            self.notes.insert(l.id, l.clone());
        }
    }
    /// (boot index, seq) -> how many notes cover it.
    fn covered(&self) -> HashMap<(usize, u64), usize> {
        let mut c = HashMap::new();
        for l in self.notes.values() {
            assert_eq!(l.reason, LostReason::Cap);
            assert!(l.first_seq >= 1 && l.last_seq >= l.first_seq, "{l:?}");
            assert_eq!(l.count, l.last_seq - l.first_seq + 1, "{l:?}");
            let b = self.boot_index(&l.boot_id);
            for s in l.first_seq..=l.last_seq {
                assert!(
                    self.appended.contains_key(&(b, s)),
                    "{l:?} covers a record never appended"
                );
                *c.entry((b, s)).or_insert(0) += 1;
            }
            let times: Vec<i64> = (l.first_seq..=l.last_seq).map(time).collect();
            assert_eq!(l.first_time_ns, *times.iter().min().unwrap());
            assert_eq!(l.last_time_ns, *times.iter().max().unwrap());
        }
        c
    }
    /// Records neither acknowledged nor reported lost: what the spool must still hold.
    fn pending(&self) -> Vec<(usize, u64)> {
        let covered = self.covered();
        self.appended
            .keys()
            .copied()
            .filter(|r| !self.is_acked(*r) && !covered.contains_key(r))
            .collect()
    }
    fn check_batch(&mut self, b: &SpoolBatch) {
        let bi = self.boot_index(&b.boot_id);
        for r in &b.records {
            assert_eq!(r.boot_id, b.boot_id, "batch mixes boots");
            let key = (bi, r.seq);
            let len = *self
                .appended
                .get(&key)
                .unwrap_or_else(|| panic!("{key:?} never appended"));
            assert_eq!(r.payload, payload(&b.boot_id, r.seq, len));
            assert_eq!(r.time_ns, time(r.seq));
            assert!(
                !self.is_acked(key),
                "{key:?} delivered after its acknowledgement"
            );
            if let Some(last) = self.pass.last() {
                assert!(
                    key > *last,
                    "{key:?} after {last:?}: out of order or repeated"
                );
            }
            self.pass.push(key);
            self.delivered.insert(key);
        }
    }
}

fn run_model(max_bytes: u64, segment_bytes: u64, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(max_bytes, segment_bytes);
    let (mut sp, _) = open(dir.path(), o);
    let mut m = Model::default();
    m.new_boot(&mut sp);
    for op in ops {
        match op {
            Op::Append(len) => {
                let (b, s) = (m.boots.len() - 1, m.next_seq);
                sp.append(s, time(s), "http", &payload(&m.boots[b], s, len))
                    .unwrap();
                m.appended.insert((b, s), len);
                m.next_seq += 1;
            }
            Op::Flush => sp.flush().unwrap(),
            Op::Next(n) => {
                if let Some(b) = sp.next_batch(n, 2000).unwrap() {
                    assert!(!b.records.is_empty() && b.records.len() <= n);
                    m.check_batch(&b);
                }
            }
            Op::Ack(i) => {
                if !m.pass.is_empty() {
                    let (b, s) = m.pass[i.index(m.pass.len())];
                    sp.ack(&m.boots[b].clone(), s).unwrap();
                    m.acked = m.acked.max(Some((b, s)));
                }
            }
            Op::Rewind => {
                sp.rewind();
                m.pass.clear();
            }
            Op::Reopen => {
                let lost = sp.pending_lost().to_vec();
                drop(sp);
                let (s2, rep) = open(dir.path(), o);
                sp = s2;
                assert!(rep.corrupt.is_empty() && rep.torn_bytes == 0, "{rep:?}");
                assert_eq!(sp.pending_lost(), lost, "loss notes changed across reopen");
                m.pass.clear();
                m.new_boot(&mut sp);
            }
            Op::AckLost => {
                m.collect_notes(&sp);
                let ids: Vec<u64> = sp.pending_lost().iter().map(|l| l.id).collect();
                sp.ack_lost(&ids).unwrap();
            }
        }
        m.collect_notes(&sp);
        assert!(
            sp.bytes() <= max_bytes,
            "{} bytes over the {max_bytes} cap",
            sp.bytes()
        );
        let covered = m.covered();
        assert!(
            covered.values().all(|&n| n == 1),
            "a record is in two loss notes"
        );
        assert_eq!(sp.pending_records(), m.pending().len() as u64);
    }
    // Everything still pending comes back, in order, once.
    sp.flush().unwrap();
    sp.rewind();
    m.pass.clear();
    while let Some(b) = sp.next_batch(50, 1 << 20).unwrap() {
        m.check_batch(&b);
    }
    assert_eq!(
        m.pass,
        m.pending(),
        "the final pass is not exactly the pending records"
    );
    let covered = m.covered();
    for r in m.appended.keys() {
        assert!(
            m.delivered.contains(r) || covered.contains_key(r),
            "{r:?} neither delivered nor reported lost"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn model(
        max_bytes in 2_400u64..20_000,
        segment_bytes in 600u64..6_000,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        run_model(max_bytes, segment_bytes, ops);
    }
}

#[test]
fn an_unreadable_segment_is_reported_lost_and_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), opts(1 << 20, 4096));
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=60, 200);
    sp.flush().unwrap();
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "several segments: {files:?}");
    // The oldest segment vanishes (or fails with EIO) before it is read.
    fs::remove_file(&files[0]).unwrap();
    let got = drain(&mut sp);
    let lost = sp.pending_lost().to_vec();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].reason, LostReason::Corrupt);
    assert_eq!(lost[0].first_seq, 1);
    let first_delivered = got.first().unwrap().1;
    assert_eq!(lost[0].last_seq, first_delivered - 1, "{lost:?}");
    assert_eq!(lost[0].count, first_delivered - 1);
    assert_eq!(got, seqs("a", first_delivered..=60));
}
