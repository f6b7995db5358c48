//! Query strings: splitting, percent-decoding, key lists and redaction (values replaced, keys
//! kept). Shared by the agent (before anything is written), the policy and the reports.

/// Placeholder for redacted query values.
pub const REDACTED: &str = "REDACTED";

/// Splits a query into (key, value) pairs, percent-decoding keys for matching. Values stay raw.
pub fn query_pairs(query: &str) -> Vec<(String, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(k), v)
        })
        .collect()
}

/// Percent-decodes a query component (and `+` as space).
pub fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
            {
                let hexval = |c: u8| match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    _ => c - b'A' + 10,
                };
                out.push(hexval(b[i + 1]) * 16 + hexval(b[i + 2]));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Redacts a query: every value is replaced by [`REDACTED`] except those of `keep` keys
/// (compared case-insensitively after decoding). Keys are kept as sent.
pub fn redact_query(query: &str, keep: &[String]) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => {
                let name = decode_component(k);
                if keep.iter().any(|kk| kk.eq_ignore_ascii_case(&name)) {
                    format!("{k}={v}")
                } else {
                    format!("{k}={REDACTED}")
                }
            }
            None => p.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Distinct query keys in order.
pub fn query_keys(query: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in query_pairs(query) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_keys_and_kept_values_only() {
        let keep = vec!["state".to_owned(), "fields".to_owned()];
        assert_eq!(
            redact_query("fields=ssn_last4,email&state=CA&user_id=1049&flag", &keep),
            "fields=ssn_last4,email&state=CA&user_id=REDACTED&flag"
        );
        assert_eq!(
            redact_query("%73tate=NY&STATE=TX", &keep),
            "%73tate=NY&STATE=TX"
        );
        assert_eq!(redact_query("a=1&b=2", &[]), "a=REDACTED&b=REDACTED");
        assert_eq!(query_keys("a=1&b=2&a=3&%63=4"), ["a", "b", "c"]);
    }
}
