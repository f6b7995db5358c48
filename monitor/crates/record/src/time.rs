//! Time as records carry it: RFC 3339 text and Unix nanoseconds.
//!
//! One formatter and one parser for the whole workspace (agent records, the store's columns,
//! sinks, reports), so a time written by one part is read back identically by every other.

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Nanoseconds per second.
pub const NS_PER_SEC: i64 = 1_000_000_000;

/// Wall-clock time now, Unix nanoseconds (what delivery, the store and the CLI stamp with).
pub fn unix_now_ns() -> i64 {
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 3339 time (`2026-11-22T06:22:52.775828885Z`, any fraction length, `Z` or a
/// `±HH:MM` offset) into Unix nanoseconds. Hand-written because it runs once per stored record
/// and the formats agents write are this narrow; the sinks use it too (one parser). A leap second (`:60`) counts as `:59`.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                frac = frac * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            frac *= 10;
        }
    }
    let offset_s = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_s;
    secs.checked_mul(NS_PER_SEC)?.checked_add(frac)
}

/// Formats Unix nanoseconds as RFC 3339 UTC, as agents write times (`None` out of range).
pub fn format_rfc3339(ns: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()?
        .format(&Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_times() {
        assert_eq!(
            parse_rfc3339_ns("2026-11-22T06:22:52.775828885Z"),
            Some(1_795_328_572_775_828_885)
        );
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T01:00:00.5+01:00"),
            Some(500_000_000)
        );
        assert_eq!(parse_rfc3339_ns("1969-12-31T23:59:59Z"), Some(-NS_PER_SEC));
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T00:00:00Z"),
            Some(1_709_164_800 * NS_PER_SEC)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T06:22:52",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T06:22:52.Z",
            "2026-11-22T06:22:52Zjunk",
            "２026-11-22T06:22:52Z",
        ] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Formatting then parsing gives the same instant, for every nanosecond in 1900..2200.
        #[test]
        fn rfc3339_round_trip(ns in -2_208_988_800_000_000_000i64..7_258_118_400_000_000_000i64) {
            let s = format_rfc3339(ns).unwrap_or_default();
            proptest::prop_assert_eq!(parse_rfc3339_ns(&s), Some(ns), "{}", s);
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn rfc3339_arbitrary_text(s in ".{0,40}") {
            let _ = parse_rfc3339_ns(&s);
        }
    }
}
