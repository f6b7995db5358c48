//! A writer for the `newc` cpio format, the one the kernel unpacks as an initramfs
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`). Only what an initramfs needs:
//! directories, regular files and symbolic links, owned by root.

use std::io::{self, Write};

/// `newc` magic.
const MAGIC: &[u8; 6] = b"070701";
/// Name of the closing entry.
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Streams `newc` entries into `W`. Call [`CpioWriter::finish`] at the end.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    /// Bytes written so far (for the 4-byte alignment).
    pos: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// A writer on `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            pos: 0,
            next_ino: 1,
        }
    }

    /// A directory. `name` is relative to the archive root (no leading `/`).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.header(name, S_IFDIR | (perm & 0o7777), 2, 0)
    }

    /// A regular file with `data`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        self.header(name, S_IFREG | (perm & 0o7777), 1, len)?;
        self.write(data)?;
        self.pad()
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        let len = u32::try_from(target.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "link target too long"))?;
        self.header(name, S_IFLNK | 0o777, 1, len)?;
        self.write(target.as_bytes())?;
        self.pad()
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 1, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: u32) -> io::Result<()> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio entry name {name:?}"),
            ));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
        let mut h = Vec::with_capacity(110 + name.len() + 1);
        h.extend_from_slice(MAGIC);
        for f in fields {
            h.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        self.write(&h)?;
        self.pad()
    }

    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.pos % 4) as usize) % 4;
        self.write(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the entries back: (name, mode, data).
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        loop {
            assert_eq!(&b[..6], MAGIC, "magic at offset {pos}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap();
                usize::from_str_radix(s, 16).unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_owned();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_start = (110 + namesize).next_multiple_of(4);
            let data = b[data_start..data_start + size].to_vec();
            let next = (data_start + size).next_multiple_of(4);
            pos += next;
            b = &b[next..];
            if name == TRAILER {
                assert!(b.is_empty(), "nothing after the trailer");
                return out;
            }
            out.push((name, u32::try_from(mode).unwrap(), data));
        }
    }

    #[test]
    fn round_trip_with_alignment() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("usr", 0o755).unwrap();
        w.file("usr/a", 0o644, b"hello").unwrap();
        w.file("init", 0o755, b"").unwrap();
        w.symlink("lib", "usr/lib").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let e = parse(&bytes);
        assert_eq!(
            e,
            vec![
                ("usr".to_owned(), 0o040_755, vec![]),
                ("usr/a".to_owned(), 0o100_644, b"hello".to_vec()),
                ("init".to_owned(), 0o100_755, vec![]),
                ("lib".to_owned(), 0o120_777, b"usr/lib".to_vec()),
            ]
        );
    }

    #[test]
    fn rejects_absolute_names() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/init", 0o755, b"").is_err());
    }
}
