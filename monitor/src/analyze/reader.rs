//! Capture files (pcap and pcapng, via pcap-file), read packet by packet with a bounded buffer,
//! and several files merged in timestamp order (rotated captures, or one per interface).
//!
//! A damaged file is read up to the damage: the frames before it are analysed, and the error
//! says where reading stopped and why.

use std::{
    fs::File,
    io::{self, Read, Seek as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use pcap_file::{
    PcapError,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
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
#[derive(Debug)]
struct Counting {
    file: File,
    read: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
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
        let mut file = File::open(path).map_err(|source| CaptureFileError::Open {
            path: path.to_owned(),
            source,
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size == 0 {
            return Err(CaptureFileError::Empty {
                path: path.to_owned(),
            });
        }
        let mut magic = [0u8; 4];
        let got = file
            .read(&mut magic)
            .and_then(|n| file.rewind().map(|()| n))
            .map_err(|source| CaptureFileError::Open {
                path: path.to_owned(),
                source,
            })?;
        let read = Arc::new(AtomicU64::new(0));
        let counting = Counting {
            file,
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
            // pcapng: the interface of the frame (its link type is looked up after the block
            // is released).
            let mut ng_iface = None;
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
                        frame.ts_ns = u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX);
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
                frame.link = r
                    .interfaces()
                    .get(i)
                    .and_then(|idb| Link::from_linktype(u32::from(idb.linktype)));
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
