//! Damage found when the spool opens, in any segment (the newest included), and the periodic
//! fsync of the segment being written: every damaged tail becomes a loss note, exact when
//! the spool can tell.

use std::{fs, path::Path, thread, time::Duration};

use super::{
    tests::{append_n, drain, frames_of, open, opts, payload, segment_files, seqs, time},
    *,
};

/// Writes records `1..=n` of boot `a` in segments of `segment_bytes`, then stops like a
/// crash (the newest segment is not sealed); returns the segment files.
fn spool_and_crash(dir: &Path, n: u64, segment_bytes: u64) -> Vec<std::path::PathBuf> {
    let (mut sp, _) = open(dir, opts(1 << 20, segment_bytes));
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=n, 200);
    sp.flush().unwrap();
    sp.crash();
    segment_files(dir)
}

fn cut(path: &Path, len: usize) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len as u64).unwrap();
}

fn zero(path: &Path, range: std::ops::Range<usize>) {
    let mut data = fs::read(path).unwrap();
    data[range].fill(0);
    fs::write(path, data).unwrap();
}

#[test]
fn torn_newest_segment_gives_an_exact_note() {
    // A machine crash: a block in the middle of the newest segment never reached the disk
    // (zeros), the blocks after it did. The intact frames after the hole tell exactly which
    // records are gone.
    let dir = tempfile::tempdir().unwrap();
    let files = spool_and_crash(dir.path(), 60, 8192);
    let newest = files.last().unwrap();
    let frames = frames_of(newest);
    assert!(frames.len() > 10, "{frames:?}");
    let (hole_at, first_lost) = frames[3];
    let last = frames.last().unwrap().1;
    let file_len = fs::metadata(newest).unwrap().len();
    zero(newest, hole_at..hole_at + 300);

    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 8192));
    let want = Lost {
        id: rep.corrupt[0].id,
        boot_id: "a".into(),
        reason: LostReason::Corrupt,
        count: last - first_lost + 1,
        first_seq: first_lost,
        last_seq: last,
        first_time_ns: time(first_lost - 1),
        last_time_ns: time(last),
        bytes: file_len - hole_at as u64,
    };
    assert_eq!(rep.corrupt, std::slice::from_ref(&want), "{rep:?}");
    assert_eq!(sp.pending_lost(), [want]);
    assert_eq!(drain(&mut sp), seqs("a", 1..=first_lost - 1));
    // Cut off once, reported once.
    drop(sp);
    let (_, rep) = open(dir.path(), opts(1 << 20, 8192));
    assert!(rep.corrupt.is_empty() && rep.pending_lost == 1, "{rep:?}");
}

#[test]
fn newest_segment_cut_mid_frame_notes_from_the_cut() {
    // The newest segment cut in the middle of a frame (it had not been fsynced): what was
    // after the cut left no trace, so the note starts at the cut and gives the bytes; records
    // the collector acknowledged are not in it.
    let dir = tempfile::tempdir().unwrap();
    let files = spool_and_crash(dir.path(), 1000, 64 << 10);
    let newest = files.last().unwrap();
    let frames = frames_of(newest);
    let (at, cut_seq) = frames[frames.len() / 2];
    cut(newest, at + 100);
    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 64 << 10));
    assert_eq!(rep.torn_bytes, 100);
    let l = &rep.corrupt[..];
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(
        (l[0].first_seq, l[0].last_seq, l[0].count, l[0].bytes),
        (cut_seq, 0, 0, 100),
        "{l:?}"
    );
    assert_eq!(drain(&mut sp), seqs("a", 1..=cut_seq - 1));
    sp.crash();

    // The same with an acknowledgement past the cut: the note starts after it.
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), opts(1 << 20, 64 << 10));
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=100, 200);
    sp.flush().unwrap();
    assert_eq!(drain(&mut sp).len(), 100);
    sp.ack("a", 90).unwrap();
    sp.crash();
    let newest = segment_files(dir.path()).pop().unwrap();
    let frames = frames_of(&newest);
    let at = frames.iter().find(|f| f.1 == 80).unwrap().0;
    cut(&newest, at + 10);
    let (_, rep) = open(dir.path(), opts(1 << 20, 64 << 10));
    let l = &rep.corrupt[..];
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!((l[0].first_seq, l[0].count), (91, 0), "{l:?}");
}

#[test]
fn torn_middle_segment_gives_an_exact_note() {
    let dir = tempfile::tempdir().unwrap();
    let files = spool_and_crash(dir.path(), 80, 4096);
    assert!(files.len() >= 4, "{files:?}");
    let victim = &files[1];
    let frames = frames_of(victim);
    let (at, cut_seq) = frames[frames.len() / 2];
    let next_first = frames_of(&files[2])[0].1;
    cut(victim, at + 7);

    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 4096));
    let want = Lost {
        id: rep.corrupt[0].id,
        boot_id: "a".into(),
        reason: LostReason::Corrupt,
        count: next_first - cut_seq,
        first_seq: cut_seq,
        last_seq: next_first - 1,
        first_time_ns: time(cut_seq - 1),
        last_time_ns: time(next_first),
        bytes: 7,
    };
    assert_eq!(rep.corrupt, std::slice::from_ref(&want), "{rep:?}");
    assert_eq!(rep.torn_bytes, 7);
    let mut expect = seqs("a", 1..=cut_seq - 1);
    expect.extend(seqs("a", next_first..=80));
    assert_eq!(drain(&mut sp), expect);
}

#[test]
fn unreadable_header_of_the_first_segment_is_counted_exactly() {
    // The first segment's header fails its checksum; its frames are intact, and the next
    // segment is of the same boot: the note covers exactly the records of the first segment.
    let dir = tempfile::tempdir().unwrap();
    let files = spool_and_crash(dir.path(), 40, 2048);
    assert!(files.len() >= 3);
    let second_first = frames_of(&files[1])[0].1;
    let mut data = fs::read(&files[0]).unwrap();
    let crc_at = 16 + 1; // inside the boot id "a" + checksum
    data[crc_at] ^= 0x01;
    fs::write(&files[0], data).unwrap();
    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 2048));
    let l = &rep.corrupt[..];
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(
        (
            l[0].boot_id.as_str(),
            l[0].first_seq,
            l[0].last_seq,
            l[0].count
        ),
        ("a", 1, second_first - 1, second_first - 1),
        "{l:?}"
    );
    assert!(!files[0].exists());
    assert_eq!(drain(&mut sp), seqs("a", second_first..=40));
}

#[test]
fn unreadable_header_of_the_newest_segment_is_counted_exactly() {
    // No segment after it: the intact frames in it give the end of the loss.
    let dir = tempfile::tempdir().unwrap();
    let files = spool_and_crash(dir.path(), 40, 2048);
    let newest = files.last().unwrap();
    let frames = frames_of(newest);
    let (first, last) = (frames[0].1, frames.last().unwrap().1);
    let len = fs::metadata(newest).unwrap().len();
    let mut data = fs::read(newest).unwrap();
    data[0] ^= 0x01; // the magic
    fs::write(newest, data).unwrap();
    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 2048));
    let l = &rep.corrupt[..];
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(
        (l[0].first_seq, l[0].last_seq, l[0].count, l[0].bytes),
        (first, last, last - first + 1, len),
        "{l:?}"
    );
    assert_eq!(drain(&mut sp), seqs("a", 1..=first - 1));
}

#[test]
fn a_damaged_tail_holding_no_record_is_not_a_loss() {
    // Garbage after the last frame of a middle segment, and the next segment starts right
    // after that frame's seq: provably nothing lost, no note.
    let dir = tempfile::tempdir().unwrap();
    let files = spool_and_crash(dir.path(), 40, 2048);
    let mut data = fs::read(&files[0]).unwrap();
    data.extend_from_slice(&[0xa5; 50]);
    fs::write(&files[0], data).unwrap();
    let (mut sp, rep) = open(dir.path(), opts(1 << 20, 2048));
    assert!(rep.corrupt.is_empty(), "{rep:?}");
    assert_eq!(drain(&mut sp), seqs("a", 1..=40));
}

#[test]
fn the_segment_being_written_is_fsynced_on_count_and_interval() {
    let dir = tempfile::tempdir().unwrap();
    let o = SpoolOptions {
        max_bytes: 1 << 20,
        segment_bytes: 1 << 20,
        fsync: true,
        sync_interval: Duration::from_millis(50),
        sync_records: 5,
    };
    let (mut sp, _) = open(dir.path(), o);
    sp.begin_boot("a").unwrap();
    append_n(&mut sp, "a", 1..=3, 100);
    sp.flush().unwrap();
    assert!(sp.unsynced(), "3 records < 5, 0 ms < 50 ms");
    append_n(&mut sp, "a", 4..=6, 100);
    sp.flush().unwrap();
    assert!(!sp.unsynced(), "6 records >= 5: fsynced");
    append_n(&mut sp, "a", 7..=7, 100);
    sp.flush().unwrap();
    assert!(sp.unsynced());
    thread::sleep(Duration::from_millis(60));
    // No new record: the flush of the next drain round still syncs.
    sp.flush().unwrap();
    assert!(!sp.unsynced(), "50 ms passed: fsynced");

    // Without fsync nothing is ever pending.
    let dir = tempfile::tempdir().unwrap();
    let (mut sp, _) = open(dir.path(), opts(1 << 20, 1 << 20));
    sp.begin_boot("a").unwrap();
    sp.append(1, time(1), "http", &payload("a", 1, 10)).unwrap();
    sp.flush().unwrap();
    assert!(!sp.unsynced());
}
