//! The two kinds of pattern a policy uses: globs over field names (`ssn*`, `?ob`) and
//! address ranges (`10.0.0.0/8`). Shared by the linter (which checks them) and the engine
//! (which matches with them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Glob match with `*` (any run) and `?` (one character), ASCII case-insensitive. Iterative,
/// O(pattern × text), and allocation-free: it runs per query key of every exchange, and query
/// keys are attacker-controlled, so no backtracking blow-up either.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let next = |t: &str, i: usize| t[i..].chars().next();
    // Byte offsets of the next pattern and text characters; the last `*` and where it resumes.
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while let Some(c) = next(s, si) {
        match next(pat, pi) {
            Some(p) if p == '?' || p.eq_ignore_ascii_case(&c) => {
                pi += p.len_utf8();
                si += c.len_utf8();
            }
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + next(s, ss).map_or(1, char::len_utf8);
                    star = Some((sp, si));
                }
                None => return false,
            },
        }
    }
    pat[pi..].chars().all(|c| c == '*')
}

/// `ip` with every bit past the first `len` cleared: the network it belongs to.
pub fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::from(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::from(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// Parses `addr/len` or a bare address (a full-length prefix).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, n) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = a.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if n.is_empty() {
        max
    } else {
        n.trim().parse().ok()?
    };
    (len <= max).then_some((ip, len))
}

/// True if `ip` is inside `cidr` (same family only).
pub fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    parse_cidr(cidr).is_some_and(|(net, len)| {
        net.is_ipv4() == ip.is_ipv4() && network(net, len) == network(ip, len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_ranges() {
        assert!(glob_match("ssn*", "SSN_last4"));
        assert!(glob_match("?ob", "dob"));
        assert!(!glob_match("email", "emails"));
        assert!(
            glob_match("?ob", "éob"),
            "`?` is one character, not one byte"
        );
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbbd"));
        // No exponential backtracking on many stars against a long key.
        let long = "a".repeat(10_000);
        assert!(!glob_match("*a*a*a*a*a*a*a*a*b", &long));
        assert!(cidr_contains(
            "10.77.200.0/24",
            "10.77.200.1".parse().unwrap()
        ));
        assert!(!cidr_contains(
            "10.77.200.0/24",
            "10.77.201.1".parse().unwrap()
        ));
        assert!(cidr_contains("10.77.200.1", "10.77.200.1".parse().unwrap()));
        assert!(cidr_contains("fd77::/64", "fd77::10".parse().unwrap()));
        assert!(!cidr_contains("fd77::/64", "10.77.0.1".parse().unwrap()));
        assert!(cidr_contains("0.0.0.0/0", "192.0.2.1".parse().unwrap()));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
    }
}
