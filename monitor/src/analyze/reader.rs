//! Capture files (pcap and pcapng, via pcap-file), read packet by packet with a bounded buffer,
//! and several files merged in timestamp order (rotated captures, or one per interface).
//!
//! A damaged file is read up to the damage: the frames before it are analysed, and the error
//! says where reading stopped and why.

use std::{
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use pcap_file::{
    PcapError,
    pcap::PcapReader,
    pcapng::{
        Block, PcapNgReader,
        blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
    },
};

use super::packet::Link;

/// Why a capture file could not be read (or read to its end).
#[derive(Debug, thiserror::Error)]
pub enum CaptureFileError {
    /// The file could not be opened.
    #[error("{path}: cannot open: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Zero bytes.
    #[error("{path}: the file is empty (0 bytes): nothing to analyse")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Not a pcap or pcapng file.
    #[error(
        "{path}: not a pcap or pcapng capture (first bytes {magic}); write captures with \
         `tcpdump -w FILE` or `dumpcap -w FILE`"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// The first bytes, hex.
        magic: String,
    },
    /// The header could not be read.
    #[error("{path}: unreadable capture header: {message}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The link-layer type is not one this reader understands.
    #[error(
        "{path}: link-layer type {linktype} is not supported (supported: Ethernet, Linux \
         cooked SLL and SLL2, raw IP)"
    )]
    Link {
        /// The file.
        path: PathBuf,
        /// pcap `LINKTYPE_*` number.
        linktype: u32,
    },
    /// Reading stopped before the end of the file.
    #[error(
        "{path}: {what} after {packets} packets (at byte {offset} of {size}); the packets \
         before it were analysed"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        what: String,
        /// Packets read before.
        packets: u64,
        /// Bytes read before (approximate: the reader buffers).
        offset: u64,
        /// File size.
        size: u64,
    },
}

/// One captured frame.
#[derive(Debug, Default)]
pub struct Frame {
    /// Capture timestamp, Unix ns.
    pub ts_ns: u64,
    /// Its link layer.
    pub link: Option<Link>,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Counts the bytes read from the file, for progress.
struct Counting {
    src: Box<dyn Read + Send>,
    read: Arc<AtomicU64>,
}

impl std::fmt::Debug for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counting")
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

enum Inner {
    Pcap(PcapReader<Counting>, Option<Link>),
    Ng(PcapNgReader<Counting>),
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Inner::Pcap(..) => "pcap",
            Inner::Ng(_) => "pcapng",
        })
    }
}

/// One capture file being read.
#[derive(Debug)]
pub struct CaptureFile {
    path: PathBuf,
    size: u64,
    read: Arc<AtomicU64>,
    inner: Inner,
    packets: u64,
    /// Frames skipped: on an interface of an unsupported link type.
    pub unsupported_frames: u64,
    done: bool,
}

impl CaptureFile {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, CaptureFileError> {
        let file = File::open(path).map_err(|source| CaptureFileError::Open {
            path: path.to_owned(),
            source,
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Self::from_source(path, size, Box::new(file))
    }

    /// A capture held in memory (named `path` in messages): the same reader as
    /// [`CaptureFile::open`], for tests and fuzzing.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, CaptureFileError> {
        let size = bytes.len() as u64;
        Self::from_source(path, size, Box::new(io::Cursor::new(bytes)))
    }

    fn from_source(
        path: &Path,
        size: u64,
        mut src: Box<dyn Read + Send>,
    ) -> Result<Self, CaptureFileError> {
        if size == 0 {
            return Err(CaptureFileError::Empty {
                path: path.to_owned(),
            });
        }
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < magic.len() {
            match src.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureFileError::Open {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        }
        // The magic bytes are read again by the format's reader.
        let src = Box::new(io::Cursor::new(magic[..got].to_vec()).chain(src));
        let read = Arc::new(AtomicU64::new(0));
        let counting = Counting {
            src,
            read: read.clone(),
        };
        let header_err = |e: PcapError| CaptureFileError::Header {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let inner = match u32::from_le_bytes(magic) {
            _ if got < 4 => {
                return Err(CaptureFileError::Format {
                    path: path.to_owned(),
                    magic: hex(&magic[..got]),
                });
            }
            0x0a0d_0d0a => Inner::Ng(PcapNgReader::new(counting).map_err(header_err)?),
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                let r = PcapReader::new(counting).map_err(header_err)?;
                let linktype = u32::from(r.header().datalink);
                let link = Link::from_linktype(linktype).ok_or(CaptureFileError::Link {
                    path: path.to_owned(),
                    linktype,
                })?;
                Inner::Pcap(r, Some(link))
            }
            _ => {
                return Err(CaptureFileError::Format {
                    path: path.to_owned(),
                    magic: hex(&magic),
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            size,
            read,
            inner,
            packets: 0,
            unsupported_frames: 0,
            done: false,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed).min(self.size)
    }

    /// Packets read so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Reads the next frame into `frame`: `Ok(false)` at the end of the file; an error when the
    /// rest of the file cannot be read (the file then counts as ended).
    pub fn next_into(&mut self, frame: &mut Frame) -> Result<bool, CaptureFileError> {
        if self.done {
            return Ok(false);
        }
        loop {
            // pcapng: the interface of the frame and its raw timestamp (link type and
            // timestamp resolution are looked up after the block is released).
            let mut ng_iface = None;
            let mut ng_ticks = None;
            let item = match &mut self.inner {
                Inner::Pcap(r, link) => match r.next_packet() {
                    None => None,
                    Some(Err(e)) => Some(Err(e)),
                    Some(Ok(p)) => {
                        frame.ts_ns = u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX);
                        frame.link = *link;
                        frame.data.clear();
                        frame.data.extend_from_slice(&p.data);
                        Some(Ok(()))
                    }
                },
                Inner::Ng(r) => match r.next_block() {
                    None => None,
                    Some(Err(e)) => Some(Err(e)),
                    Some(Ok(Block::EnhancedPacket(p))) => {
                        // pcap-file hands over the raw 64-bit timestamp as if it counted
                        // nanoseconds; it counts units of the interface's if_tsresol.
                        ng_ticks = Some(u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX));
                        frame.data.clear();
                        frame.data.extend_from_slice(&p.data);
                        ng_iface = Some(p.interface_id as usize);
                        Some(Ok(()))
                    }
                    Some(Ok(Block::SimplePacket(p))) => {
                        // No timestamp: keep the previous one.
                        frame.data.clear();
                        frame.data.extend_from_slice(&p.data);
                        ng_iface = Some(0);
                        Some(Ok(()))
                    }
                    Some(Ok(_)) => continue,
                },
            };
            if let (Some(i), Inner::Ng(r)) = (ng_iface, &self.inner) {
                let idb = r.interfaces().get(i);
                frame.link = idb.and_then(|idb| Link::from_linktype(u32::from(idb.linktype)));
                if let Some(ticks) = ng_ticks {
                    frame.ts_ns = TsUnit::of(idb).to_ns(ticks);
                }
            }
            return match item {
                None => {
                    self.done = true;
                    Ok(false)
                }
                Some(Ok(())) => {
                    self.packets += 1;
                    if frame.link.is_none() {
                        self.unsupported_frames += 1;
                    }
                    Ok(true)
                }
                Some(Err(e)) => {
                    self.done = true;
                    let what = match e {
                        PcapError::IncompleteBuffer => {
                            "the file ends in the middle of a packet record (truncated)".to_owned()
                        }
                        PcapError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            "the file ends in the middle of a packet record (truncated)".to_owned()
                        }
                        other => format!("unreadable packet record ({other})"),
                    };
                    Err(CaptureFileError::Damaged {
                        path: self.path.clone(),
                        what,
                        packets: self.packets,
                        offset: self.bytes_read(),
                        size: self.size,
                    })
                }
            };
        }
    }
}

/// How an interface's pcapng timestamps count time: `if_tsresol` (a power of 10 or, with the
/// top bit set, of 2, of a second; microseconds when absent) and `if_tsoffset` (seconds to
/// add), per the pcapng specification (draft-ietf-opsawg-pcapng, section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsUnit {
    /// The `if_tsresol` byte.
    pub tsresol: u8,
    /// The `if_tsoffset` seconds.
    pub offset_s: i64,
}

impl Default for TsUnit {
    fn default() -> Self {
        Self {
            tsresol: 6,
            offset_s: 0,
        }
    }
}

impl TsUnit {
    /// The unit of an interface (the default one when the interface is unknown).
    pub fn of(idb: Option<&InterfaceDescriptionBlock<'_>>) -> Self {
        let mut unit = Self::default();
        for opt in idb.map_or(&[][..], |i| i.options.as_slice()) {
            match opt {
                InterfaceDescriptionOption::IfTsResol(r) => unit.tsresol = *r,
                // The specification makes it signed.
                InterfaceDescriptionOption::IfTsOffset(o) => unit.offset_s = *o as i64,
                _ => {}
            }
        }
        unit
    }

    /// A raw timestamp in this unit as Unix nanoseconds (saturating; before 1970 is 0).
    pub fn to_ns(self, ticks: u64) -> u64 {
        const NS: u128 = 1_000_000_000;
        let t = u128::from(ticks);
        let ns = if self.tsresol & 0x80 == 0 {
            let exp = u32::from(self.tsresol);
            if exp <= 9 {
                t * 10u128.pow(9 - exp)
            } else {
                // 10^39 > u128::MAX: finer than that, every count is below a nanosecond.
                10u128.checked_pow(exp - 9).map_or(0, |d| t / d)
            }
        } else {
            // ticks < 2^64, NS < 2^30: the product fits; the shift is at most 127.
            (t * NS) >> u32::from(self.tsresol & 0x7f)
        };
        let offset = i128::from(self.offset_s) * NS as i128;
        let ns = (ns as i128).saturating_add(offset).max(0);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "(none)".into();
    }
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Several capture files read as one, frames in timestamp order.
#[derive(Debug)]
pub struct Merged {
    files: Vec<(CaptureFile, Frame, bool)>,
    /// Errors met so far (damaged files); each file's frames before the damage were read.
    pub errors: Vec<CaptureFileError>,
}

impl Merged {
    /// Starts reading every file.
    pub fn new(files: Vec<CaptureFile>) -> Self {
        let mut m = Self {
            files: files
                .into_iter()
                .map(|f| (f, Frame::default(), false))
                .collect(),
            errors: Vec::new(),
        };
        for i in 0..m.files.len() {
            m.refill(i);
        }
        m
    }

    fn refill(&mut self, i: usize) {
        let (f, frame, has) = &mut self.files[i];
        *has = match f.next_into(frame) {
            Ok(h) => h,
            Err(e) => {
                self.errors.push(e);
                false
            }
        };
    }

    /// The files.
    pub fn files(&self) -> impl Iterator<Item = &CaptureFile> {
        self.files.iter().map(|(f, _, _)| f)
    }

    /// Calls `f` with the next frame (the earliest of the files' next frames); false at the end.
    pub fn next_with(&mut self, f: impl FnOnce(&Frame)) -> bool {
        let Some(i) = self
            .files
            .iter()
            .enumerate()
            .filter(|(_, (_, _, has))| *has)
            .min_by_key(|(_, (_, fr, _))| fr.ts_ns)
            .map(|(i, _)| i)
        else {
            return false;
        };
        f(&self.files[i].1);
        self.refill(i);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::TsUnit;

    fn unit(tsresol: u8) -> TsUnit {
        TsUnit {
            tsresol,
            offset_s: 0,
        }
    }

    #[test]
    fn timestamp_units() {
        assert_eq!(TsUnit::default().to_ns(1_500_000), 1_500_000_000);
        assert_eq!(unit(9).to_ns(123), 123);
        assert_eq!(unit(0).to_ns(2), 2_000_000_000);
        assert_eq!(unit(10).to_ns(123), 12);
        assert_eq!(unit(127).to_ns(u64::MAX), 0);
        assert_eq!(unit(0x80).to_ns(3), 3_000_000_000);
        assert_eq!(unit(0x80 | 10).to_ns(1024), 1_000_000_000);
        assert_eq!(unit(0x80 | 127).to_ns(u64::MAX), 0);
        // Saturates instead of wrapping.
        assert_eq!(unit(0).to_ns(u64::MAX), u64::MAX);
        let off = TsUnit {
            tsresol: 6,
            offset_s: -10,
        };
        assert_eq!(off.to_ns(11_000_000), 1_000_000_000);
        assert_eq!(off.to_ns(0), 0);
    }
}
