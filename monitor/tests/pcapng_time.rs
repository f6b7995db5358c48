//! pcapng timestamps are read in each interface's `if_tsresol` unit: real loopback captures
//! (nanosecond and microsecond, written by tcpdump + editcap and by dumpcap; see
//! `fixtures/pcapng/README.md`) against what tshark printed for them, and a written file with
//! one interface per kind of resolution (default, powers of 10 and of 2, with an offset).

use std::{
    borrow::Cow,
    fs::{self, File},
    path::{Path, PathBuf},
    time::Duration,
};

use monitor::analyze::reader::{CaptureFile, Frame};
use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pcapng")
        .join(name)
}

/// Every frame's timestamp, Unix ns.
fn timestamps(path: &Path) -> Vec<u64> {
    let mut f = CaptureFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut frame = Frame::default();
    let mut out = Vec::new();
    while f.next_into(&mut frame).unwrap_or_else(|e| panic!("{e}")) {
        out.push(frame.ts_ns);
    }
    out
}

/// `tshark -T fields -e frame.time_epoch` lines (`seconds.fraction`) as Unix ns, exactly.
fn epoch_ns(path: &Path) -> Vec<u64> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (s, frac) = l.trim().split_once('.').unwrap_or((l.trim(), ""));
            let frac = format!("{frac:0<9}");
            s.parse::<u64>().unwrap() * 1_000_000_000 + frac[..9].parse::<u64>().unwrap()
        })
        .collect()
}

#[test]
fn real_captures_read_the_same_times_as_tshark() {
    for name in ["loopback-nano", "loopback-micro", "loopback-dumpcap"] {
        let got = timestamps(&fixture(&format!("{name}.pcapng")));
        let want = epoch_ns(&fixture(&format!("{name}.epoch")));
        assert_eq!(got.len(), 36, "{name}");
        assert_eq!(got, want, "{name}");
    }
    // The nanosecond capture keeps its sub-microsecond digits; the microsecond one is the
    // same capture rounded down.
    let nano = timestamps(&fixture("loopback-nano.pcapng"));
    let micro = timestamps(&fixture("loopback-micro.pcapng"));
    assert!(nano.iter().any(|t| t % 1000 != 0));
    for (n, m) in nano.iter().zip(&micro) {
        assert_eq!(n / 1000 * 1000, *m);
    }
}

#[test]
fn each_interface_has_its_own_resolution() {
    // 2026-12-04T21:04:57.044115042Z.
    const T: u64 = 1_796_418_297_044_115_042;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.pcapng");
    let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
    // (if_tsresol, if_tsoffset, raw count for T, what it reads back as).
    let ifaces: [(Option<u8>, Option<u64>, u64, u64); 6] = [
        (None, None, T / 1000, T / 1000 * 1000),
        (Some(9), None, T, T),
        (Some(3), None, T / 1_000_000, T / 1_000_000 * 1_000_000),
        // Tenths of nanoseconds (a finer unit than ns).
        (Some(10), None, T * 10, T),
        // 2^-20 s ticks.
        (
            Some(0x80 | 20),
            None,
            ((u128::from(T) << 20) / 1_000_000_000) as u64,
            (((((u128::from(T) << 20) / 1_000_000_000) * 1_000_000_000) >> 20) as u64),
        ),
        // Microseconds counted from an offset of 1,700,000,000 s.
        (
            Some(6),
            Some(1_700_000_000),
            (T - 1_700_000_000 * 1_000_000_000) / 1000,
            T / 1000 * 1000,
        ),
    ];
    for (resol, offset, _, _) in ifaces {
        let mut options = Vec::new();
        if let Some(r) = resol {
            options.push(InterfaceDescriptionOption::IfTsResol(r));
        }
        if let Some(o) = offset {
            options.push(InterfaceDescriptionOption::IfTsOffset(o));
        }
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0xffff,
            options,
        })
        .unwrap();
    }
    for (i, (_, _, raw, _)) in ifaces.iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: i as u32,
            // pcap-file writes the duration's nanosecond count as the raw timestamp.
            timestamp: Duration::from_nanos(*raw),
            original_len: 60,
            data: Cow::Owned(vec![0; 60]),
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    let got = timestamps(&path);
    let want: Vec<u64> = ifaces.iter().map(|i| i.3).collect();
    assert_eq!(got, want);
    for t in got {
        assert!(T - t < 1_000_000, "{t} is more than 1 ms from {T}");
    }
}
