//! Query strings and request targets: splitting, percent-decoding, key lists and redaction
//! (values replaced, keys kept). Shared by the agent (before anything is written), the policy
//! and the reports.
//!
//! Redaction covers every place a request target carries values: the query (pairs separated
//! by `&` or `;`), path parameters (`/cart;jsessionid=...`), the fragment (`#access_token=...`,
//! which some clients send) and the userinfo of an absolute-form target
//! (`http://user:pass@host/...`). A value is kept only when its key, percent-decoded, is in
//! the keep list (compared case-insensitively); userinfo is never kept.

/// Placeholder for redacted values.
pub const REDACTED: &str = "REDACTED";

/// Whether `c` separates query pairs: `&`, and `;` (which many servers accept as well).
fn is_pair_sep(c: char) -> bool {
    c == '&' || c == ';'
}

/// Splits a query into (key, value) pairs on `&` and `;`, percent-decoding keys for matching.
/// Values stay raw. A fragment (`#...`) is not part of the query and is ignored.
pub fn query_pairs(query: &str) -> Vec<(String, &str)> {
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split(is_pair_sep)
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

/// Whether the value of `key` (raw, as sent) may be written: its decoded form is in `keep`.
fn kept(key: &str, keep: &[String]) -> bool {
    if keep.is_empty() {
        return false;
    }
    let name = decode_component(key);
    keep.iter().any(|k| k.eq_ignore_ascii_case(&name))
}

/// Appends `pairs` (pieces separated by `&` or `;`, kept as sent) to `out`, each `key=value`
/// as `key=REDACTED` unless the key is kept. A piece without `=` is a key alone and stays.
fn push_redacted_pairs(out: &mut String, pairs: &str, keep: &[String]) {
    let mut rest = pairs;
    loop {
        let (piece, sep) = match rest.find(is_pair_sep) {
            Some(i) => (&rest[..i], Some(&rest[i..=i])),
            None => (rest, None),
        };
        match piece.split_once('=') {
            Some((k, _)) if !kept(k, keep) => {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(piece),
        }
        let Some(sep) = sep else { break };
        out.push_str(sep);
        rest = &rest[piece.len() + 1..];
    }
}

/// Redacts a query (without its `?`): every value is replaced by [`REDACTED`] except those of
/// `keep` keys (compared case-insensitively after percent-decoding), pairs split on `&` and
/// `;`. Keys and separators are kept as sent. A fragment (`#...`) is redacted the same way.
pub fn redact_query(query: &str, keep: &[String]) -> String {
    let mut out = String::with_capacity(query.len() + 16);
    push_query_and_fragment(&mut out, query, keep);
    out
}

/// The query (and fragment, if any) of a target, redacted, appended to `out`.
fn push_query_and_fragment(out: &mut String, query: &str, keep: &[String]) {
    match query.split_once('#') {
        Some((q, frag)) => {
            push_redacted_pairs(out, q, keep);
            out.push('#');
            push_redacted_pairs(out, frag, keep);
        }
        None => push_redacted_pairs(out, query, keep),
    }
}

/// Length of the `scheme://` prefix of an absolute-form target, if it has one.
fn scheme_len(target: &str) -> Option<usize> {
    let colon = target.find(':')?;
    let scheme = &target[..colon];
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && target[colon + 1..].starts_with("//")).then_some(colon + 3)
}

/// Appends a path (no query, no fragment) with the values of its segments' parameters
/// (`;key=value`) redacted unless kept.
fn push_redacted_path(out: &mut String, path: &str, keep: &[String]) {
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match segment.split_once(';') {
            Some((name, params)) => {
                out.push_str(name);
                out.push(';');
                push_redacted_pairs(out, params, keep);
            }
            None => out.push_str(segment),
        }
    }
}

/// Appends an authority (`host:port`, or `userinfo@host:port`) with the userinfo redacted.
fn push_redacted_authority(out: &mut String, authority: &str) {
    match authority.rsplit_once('@') {
        Some((_, host)) => {
            out.push_str(REDACTED);
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
}

/// Redacts a request target as sent (origin-form `/path;params?query#fragment`, absolute-form
/// `scheme://userinfo@host/path...`, or authority-form `host:port`): userinfo replaced by
/// [`REDACTED`], values of path parameters, query pairs and fragment pairs replaced unless
/// their key is in `keep`. Everything else is kept as sent.
pub fn redact_target(target: &str, keep: &[String]) -> String {
    let mut out = String::with_capacity(target.len() + 16);
    let mut rest = target;
    if let Some(n) = scheme_len(target) {
        out.push_str(&target[..n]);
        rest = &target[n..];
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        push_redacted_authority(&mut out, &rest[..end]);
        rest = &rest[end..];
    } else if !rest.starts_with('/') && !rest.starts_with('*') {
        // Authority-form (CONNECT), or something else that does not start with a path: any
        // `user@` before the first `/` is userinfo.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        push_redacted_authority(&mut out, &rest[..end]);
        rest = &rest[end..];
    }
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    push_redacted_path(&mut out, &rest[..path_end], keep);
    let rest = &rest[path_end..];
    if let Some(q) = rest.strip_prefix('?') {
        out.push('?');
        push_query_and_fragment(&mut out, q, keep);
    } else if let Some(frag) = rest.strip_prefix('#') {
        out.push('#');
        push_redacted_pairs(&mut out, frag, keep);
    }
    out
}

/// Redacts the path part of a target (what [`crate::record::split_target`] gives as the path):
/// the same as [`redact_target`], which it is.
pub fn redact_path(path: &str, keep: &[String]) -> String {
    redact_target(path, keep)
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
    use proptest::prelude::*;

    use super::*;

    fn keep(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn redaction_keeps_keys_and_kept_values_only() {
        let keep = keep(&["state", "fields"]);
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

    #[test]
    fn semicolons_separate_pairs_too() {
        let keep = keep(&["state"]);
        assert_eq!(
            redact_query("state=CA;token=abc&x=1;;y", &keep),
            "state=CA;token=REDACTED&x=REDACTED;;y"
        );
        assert_eq!(query_keys("a=1;b=2&c"), ["a", "b", "c"]);
        assert_eq!(
            query_pairs("a=1;b=2#c=3"),
            [("a".to_owned(), "1"), ("b".to_owned(), "2")]
        );
    }

    #[test]
    fn percent_encoded_keys_match_after_decoding() {
        let keep = keep(&["state", "page size"]);
        assert_eq!(
            redact_query("st%61te=CA&page+size=10&page%20size=20&%74oken=x", &keep),
            "st%61te=CA&page+size=10&page%20size=20&%74oken=REDACTED"
        );
    }

    #[test]
    fn targets_redact_path_parameters_userinfo_and_fragments() {
        let keep = keep(&["state"]);
        assert_eq!(
            redact_target(
                "/cart;jsessionid=0AB12F/items;v=2?state=CA&id=7#t=xyz",
                &keep
            ),
            "/cart;jsessionid=REDACTED/items;v=REDACTED?state=CA&id=REDACTED#t=REDACTED"
        );
        assert_eq!(
            redact_target("http://user:s3cret@api.internal:8080/x;state=NY?q=1", &keep),
            "http://REDACTED@api.internal:8080/x;state=NY?q=REDACTED"
        );
        assert_eq!(
            redact_target("https://a@b@host?x=1", &keep),
            "https://REDACTED@host?x=REDACTED"
        );
        assert_eq!(
            redact_target("user:pw@proxy.example:443", &keep),
            "REDACTED@proxy.example:443"
        );
        assert_eq!(redact_target("/plain/path", &keep), "/plain/path");
        assert_eq!(redact_target("*", &keep), "*");
        assert_eq!(
            redact_target("/p#access_token=abc&state=ok", &keep),
            "/p#access_token=REDACTED&state=ok"
        );
        assert_eq!(redact_path("/a;b=c;d/e", &keep), "/a;b=REDACTED;d/e");
        assert_eq!(
            redact_query("a=1#frag=2", &keep),
            "a=REDACTED#frag=REDACTED"
        );
    }

    /// Keys: letters and `_`, sometimes percent-encoded (so the redactor must decode to
    /// match). Values: 6 to 12 digits, so no value can be a substring of a key (an encoded
    /// key has at most two digits in a row), of `REDACTED`, or of anything else written.
    fn key() -> impl Strategy<Value = String> {
        "[a-z_]{1,8}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[0-9]{6,12}"
    }

    fn encode_some(k: &str, mask: u32) -> String {
        k.chars()
            .enumerate()
            .map(|(i, c)| {
                if (mask >> (i % 32)) & 1 == 1 {
                    format!("%{:02X}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn no_value_of_a_key_not_kept_is_ever_written(
            pairs in prop::collection::vec((key(), value(), any::<u32>(), any::<bool>()), 1..12),
            kept_keys in prop::collection::vec(key(), 0..4),
            seps in prop::collection::vec(prop::sample::select(vec!["&", ";", "&&", ";&"]), 12),
            path_params in prop::collection::vec((key(), value()), 0..3),
            frag in prop::option::of((key(), value())),
            userinfo in prop::option::of(value()),
        ) {
            let mut q = String::new();
            for (i, (k, v, mask, upper)) in pairs.iter().enumerate() {
                if i > 0 {
                    q.push_str(seps[i % seps.len()]);
                }
                let k = if *upper { k.to_ascii_uppercase() } else { k.clone() };
                q.push_str(&encode_some(&k, *mask));
                q.push('=');
                q.push_str(v);
            }
            let mut path = String::from("/api");
            for (k, v) in &path_params {
                path.push_str(&format!("/seg;{k}={v}"));
            }
            let mut target = match &userinfo {
                Some(u) => format!("http://u:{u}@host{path}?{q}"),
                None => format!("{path}?{q}"),
            };
            if let Some((k, v)) = &frag {
                target.push_str(&format!("#{k}={v}"));
            }
            let is_kept = |k: &str| kept_keys.iter().any(|kk| kk.eq_ignore_ascii_case(k));
            let items: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v, _, _)| (k.as_str(), v.as_str()))
                .chain(path_params.iter().chain(frag.iter()).map(|(k, v)| (k.as_str(), v.as_str())))
                .collect();
            // A value may be written only if its key is kept (or the same value also belongs
            // to a kept key).
            let allowed = |v: &str| items.iter().any(|(k2, v2)| *v2 == v && is_kept(k2));
            let redacted_q = redact_query(&q, &kept_keys);
            let redacted_t = redact_target(&target, &kept_keys);
            for (k, v, _, _) in &pairs {
                if !allowed(v) {
                    prop_assert!(!redacted_q.contains(v.as_str()), "{v} in {redacted_q}");
                }
                if is_kept(k) {
                    prop_assert!(redacted_q.contains(v.as_str()), "kept {v} missing: {redacted_q}");
                    prop_assert!(redacted_t.contains(v.as_str()), "kept {v} missing: {redacted_t}");
                }
            }
            for (_, v) in &items {
                if !allowed(v) {
                    prop_assert!(!redacted_t.contains(v), "{v} in {redacted_t}");
                }
            }
            if let Some(u) = &userinfo {
                prop_assert!(!redacted_t.contains(u.as_str()), "userinfo in {redacted_t}");
            }
            // Keys survive, in order: the pair count is unchanged.
            prop_assert_eq!(query_keys(&redacted_q), query_keys(&q));
        }
    }
}
