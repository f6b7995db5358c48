//! Value validators: what is wrong with one value on its own (a catalog path or prefix, an HTTP
//! method token, a field-name glob, a pod name, a CIDR), as a message and a hint. Pure functions;
//! [`super::checks`] positions what they find.

use std::net::IpAddr;

use crate::pattern::network;

/// What is wrong with a catalog path or prefix, with a hint; `None` when it is fine.
/// `subtree`: a trailing `/**` is allowed.
pub(super) fn path_problem(p: &str, subtree: bool) -> Option<(String, String)> {
    if p.is_empty() {
        return Some((
            "is empty".into(),
            "write an absolute path such as `/internal/health`".into(),
        ));
    }
    if !p.starts_with('/') {
        return Some((
            format!("`{p}` does not start with `/`"),
            format!("write `/{p}`"),
        ));
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some((
            format!(
                "`{}` contains whitespace or control characters",
                p.escape_debug()
            ),
            "request paths never contain them; remove them".into(),
        ));
    }
    if let Some(i) = p.find(['?', '#']) {
        return Some((
            format!("`{p}` contains a query or fragment (`{}`)", &p[i..i + 1]),
            format!(
                "endpoints are matched on the path alone: write `{}`",
                &p[..i]
            ),
        ));
    }
    if p.contains('\\') {
        return Some((
            format!("`{p}` contains `\\`"),
            format!(
                "requests' `\\` are read as `/` before matching: write `{}`",
                p.replace('\\', "/")
            ),
        ));
    }
    if p.contains(';') {
        return Some((
            format!("`{p}` contains `;`"),
            "path parameters (`;...`) are dropped from requests before matching, so this \
             would never match: remove them"
                .into(),
        ));
    }
    if p.contains('%') {
        return Some((
            format!("`{p}` contains `%`"),
            "requests are percent-decoded before matching: write the decoded characters".into(),
        ));
    }
    let body = if subtree {
        p.strip_suffix("/**").unwrap_or(p)
    } else {
        p
    };
    if body.contains('*') {
        return Some((
            format!("`{p}` contains `*`"),
            "only a trailing `/**` (the whole subtree) is supported, e.g. `/internal/debug/**`"
                .into(),
        ));
    }
    let fixed = normalised(body);
    let fixed = if body.len() < p.len() {
        format!("{fixed}/**")
    } else if p.ends_with('/') && !fixed.ends_with('/') {
        format!("{fixed}/")
    } else {
        fixed
    };
    if body.contains("//") {
        return Some((
            format!("`{p}` contains `//`"),
            format!("requests' `//` are collapsed before matching: write `{fixed}`"),
        ));
    }
    if body.split('/').any(|s| s == "." || s == "..") {
        return Some((
            format!("`{p}` contains a `.` or `..` segment"),
            format!("requests' dot segments are resolved before matching: write `{fixed}`"),
        ));
    }
    if p.chars().any(char::is_uppercase) {
        return Some((
            format!("`{p}` contains uppercase letters"),
            format!(
                "paths under protected prefixes are matched case-insensitively, so the case is \
                 ambiguous: write `{fixed}`"
            ),
        ));
    }
    None
}

/// A path as requests are matched: lowercase, `//` collapsed, dot segments resolved.
pub(super) fn normalised(p: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    format!("/{}", segs.join("/")).to_lowercase()
}

/// The path an endpoint covers: itself, or for `/a/b/**` the subtree root `/a/b`.
pub(super) fn subtree_root(p: &str) -> &str {
    p.strip_suffix("/**").unwrap_or(p)
}

/// The key duplicates are compared on: normalised, trailing `/` ignored, subtree marked.
pub(super) fn subtree_key(p: &str) -> String {
    let sub = p.ends_with("/**");
    let n = normalised(subtree_root(p));
    if sub { format!("{n}/**") } else { n }
}

/// Two endpoints' service lists share a service (`*` shares every one).
pub(super) fn overlap(a: &[String], b: &[String]) -> bool {
    a.iter().any(|s| s == "*" || b.contains(s)) || b.iter().any(|s| s == "*")
}

/// RFC 9110 `tchar`.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What is wrong with a sensitive field-name glob, with a hint; `None` when it is fine.
pub(super) fn glob_problem(n: &str) -> Option<(String, String)> {
    if n.is_empty() {
        return Some(("empty pattern".into(), "remove it".into()));
    }
    if n.chars().all(|c| c == '*' || c == '?') {
        return Some((
            format!("`{n}` matches every query key"),
            "name the fields: `ssn*`, `email`, `address_*`".into(),
        ));
    }
    if n.chars().any(|c| c.is_ascii_uppercase()) {
        return Some((
            format!("`{n}` contains uppercase letters"),
            format!(
                "names are matched case-insensitively: write `{}`",
                n.to_ascii_lowercase()
            ),
        ));
    }
    if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_-*?".contains(*c)))
    {
        return Some((
            format!("`{n}` contains `{c}`"),
            "patterns use letters, digits, `_`, `-`, and the wildcards `*` (any run) and `?` (one \
             character)"
                .into(),
        ));
    }
    None
}

/// `name` or `namespace/name`: a DNS-1123 label and a DNS-1123 subdomain.
pub(super) fn pod_name_problem(p: &str) -> Option<String> {
    let (ns, name) = match p.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, p),
    };
    if let Some(ns) = ns
        && !is_dns_label(ns)
    {
        return Some(format!("`{ns}` is not a namespace name (DNS-1123 label)"));
    }
    if name.contains('/') {
        return Some(format!("`{p}` has more than one `/`"));
    }
    let subdomain = name.len() <= 253 && !name.is_empty() && name.split('.').all(is_dns_label);
    (!subdomain).then(|| format!("`{name}` is not a pod name (DNS-1123 subdomain)"))
}

/// A DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, alphanumeric at both ends.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks `addr` or `addr/len`; the error and a hint (with the corrected network for host bits).
pub(super) fn check_cidr(c: &str) -> Result<(), (String, String)> {
    let (addr, len) = match c.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (c, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| {
        (
            format!("`{c}`: `{addr}` is not an IPv4 or IPv6 address"),
            "write a CIDR such as `203.0.113.0/24` or `2001:db8::/32`, or a single address".into(),
        )
    })?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let Some(len) = len else { return Ok(()) };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max && !len.starts_with('+'))
        .ok_or_else(|| {
            (
                format!("`{c}`: prefix length `{len}` is out of range"),
                format!(
                    "an {} prefix length is 0 to {max}",
                    if max == 32 { "IPv4" } else { "IPv6" }
                ),
            )
        })?;
    let network = network(ip, len);
    if network != ip {
        return Err((
            format!("`{c}` has host bits set"),
            format!(
                "the network is `{network}/{len}`; or write `{ip}/{max}` for the single address"
            ),
        ));
    }
    Ok(())
}
