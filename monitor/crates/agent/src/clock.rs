//! Kernel timestamps (`bpf_ktime_get_boot_ns`) to wall-clock time.

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Wall-clock time now, Unix nanoseconds (what delivery, the store and the CLI stamp with).
pub fn unix_now_ns() -> i64 {
    i64::try_from(now_ns(libc::CLOCK_REALTIME)).unwrap_or(i64::MAX)
}

/// Converts boot-time nanoseconds to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Realtime minus boottime, ns.
    offset: i128,
}

impl Clock {
    /// Samples both clocks now. Call again to follow a wall-clock step.
    pub fn new() -> Self {
        Self {
            offset: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_BOOTTIME),
        }
    }

    /// For timestamps that are already Unix nanoseconds (a capture file's).
    pub const fn unix() -> Self {
        Self { offset: 0 }
    }

    /// Boot-time nanoseconds now (the kernel programs' clock).
    pub fn boot_ns() -> u64 {
        u64::try_from(now_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
    }

    /// Wall-clock time of a kernel timestamp.
    pub fn wall(&self, boot_ns: u64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(boot_ns) + self.offset)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// RFC 3339 text of a kernel timestamp.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        self.wall(boot_ns)
            .format(&Rfc3339)
            .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_now_maps_to_wall_now() {
        let c = Clock::new();
        let wall = c.wall(Clock::boot_ns());
        let diff = (OffsetDateTime::now_utc() - wall).abs();
        assert!(diff < time::Duration::seconds(1), "{diff}");
        assert!(c.rfc3339(Clock::boot_ns()).ends_with('Z'));
    }
}
