//! Where the agent's records go: stdout (or any writer), the delivery spool, or both.

use std::io::{self, Write};

/// A destination for serialized records.
pub trait RecordOut {
    /// One record: its sequence number, kind and JSON line (with the trailing newline).
    fn record(&mut self, seq: u64, kind: &'static str, line: &[u8]) -> io::Result<()>;
    /// Hands on everything written so far. The agent calls it after every drain round that
    /// wrote something, so a record waits at most one drain period (10 ms).
    fn flush(&mut self) -> io::Result<()>;
}

/// Records as NDJSON on a writer (stdout for `monitor agent` without a collector).
#[derive(Debug)]
pub struct WriteOut<W: Write>(pub W);

impl<W: Write> RecordOut for WriteOut<W> {
    fn record(&mut self, _seq: u64, _kind: &'static str, line: &[u8]) -> io::Result<()> {
        self.0.write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A new incarnation id: 32 hex digits from the kernel's random UUID source.
pub fn new_boot_id() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/random/uuid") {
        Ok(u) => u.trim().replace('-', ""),
        // No procfs: time and pid are unique enough for one node.
        Err(_) => format!(
            "{:016x}{:016x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            u64::from(std::process::id())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_boot_id(), new_boot_id());
        assert_eq!(a.len(), 32, "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}
