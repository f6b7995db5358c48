//! Request-target normalisation: the view of a path that rules match on, built to defeat the
//! usual evasions. The raw target is kept in records; this is only for matching.
//!
//! Steps: take the path of an absolute-form target (`http://host/x` → `/x`); drop the query
//! and fragment; percent-decode until stable (so `%2e%2e` and `%252e` both become `..`); treat
//! `\` as `/`; drop `;parameters` from segments; collapse empty segments (`//`, trailing `/`);
//! resolve `.` and `..`. Matching against protected prefixes and the catalog is
//! case-insensitive, so [`Normalized::lower`] is what rules compare.

/// A normalised path and what was done to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The normalised path, original case (`/internal/admin/x`).
    pub path: String,
    /// The same, lower-cased: what rules compare.
    pub lower: String,
    /// Evasion-looking features of the raw target (`percent-encoding`, `dot-segments`, ...),
    /// for the violation message.
    pub notes: Vec<&'static str>,
}

/// Decodes `%XX` sequences; invalid ones are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Normalises a request target.
pub fn normalize(target: &str) -> Normalized {
    let mut notes = Vec::new();
    let mut rest = target;
    // Absolute form: scheme://authority/path
    let lower_start = rest.get(..8).unwrap_or(rest).to_ascii_lowercase();
    if lower_start.starts_with("http://") || lower_start.starts_with("https://") {
        notes.push("absolute-form");
        let after = &rest[rest.find("://").map_or(0, |i| i + 3)..];
        rest = after.find('/').map_or("/", |i| &after[i..]);
    }
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let mut decoded = path.to_owned();
    for round in 0..4 {
        if !decoded.contains('%') {
            break;
        }
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        notes.push(if round == 0 {
            "percent-encoding"
        } else {
            "double-percent-encoding"
        });
        decoded = next;
    }
    if decoded.contains('\\') {
        notes.push("backslash");
        decoded = decoded.replace('\\', "/");
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut saw_empty = false;
    let mut saw_dots = false;
    let mut saw_params = false;
    for raw in decoded.split('/').skip(1) {
        let seg = match raw.split_once(';') {
            Some((s, _)) => {
                saw_params = true;
                s
            }
            None => raw,
        };
        match seg {
            "" => saw_empty = true,
            "." => saw_dots = true,
            ".." => {
                saw_dots = true;
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    // A single trailing slash is ordinary; `//` inside is not.
    if saw_empty && decoded.trim_end_matches('/').contains("//") {
        notes.push("double-slash");
    }
    if saw_dots {
        notes.push("dot-segments");
    }
    if saw_params {
        notes.push("path-parameters");
    }
    if !decoded.starts_with('/') && !decoded.is_empty() {
        notes.push("relative");
    }
    let path = format!("/{}", segments.join("/"));
    let lower = path.to_lowercase();
    if lower != path && !notes.contains(&"percent-encoding") {
        // Case only matters where rules compare case-insensitively; note it for the message.
        notes.push("mixed-case");
    }
    Normalized { path, lower, notes }
}

/// True if normalised `path_lower` is `prefix` itself or below it. `prefix` is lower-case, may
/// end in `/`; `/internal/` covers `/internal` and `/internal/x` but not `/internalx`.
pub fn under(path_lower: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    path_lower
        .strip_prefix(p)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// True if normalised `path_lower` matches a catalog path (lower-case, see [`lower`]): exact,
/// or a subtree for `/**`.
pub fn matches_catalog(path_lower: &str, catalog: &str) -> bool {
    match catalog.strip_suffix("/**") {
        Some(base) => under(path_lower, base),
        None => path_lower == catalog.trim_end_matches('/'),
    }
}

/// A policy path (protected prefix, catalog path) in the case [`Normalized::lower`] uses; the
/// engine lowers each once per policy, not per request.
pub fn lower(policy_path: &str) -> String {
    policy_path.to_lowercase()
}

/// Route used for baselines: numeric, UUID and long hex segments become `{id}` so that
/// `/users/17` and `/users/18` share a baseline. Paths under a protected prefix are never
/// templated: an undocumented path must stay itself.
pub fn route(norm: &Normalized, protected: bool) -> String {
    if protected {
        return norm.lower.clone();
    }
    let templated: Vec<String> = norm
        .lower
        .split('/')
        .map(|s| {
            let is_id = (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                || (s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
            if is_id {
                "{id}".to_owned()
            } else {
                s.to_owned()
            }
        })
        .collect();
    templated.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(t: &str) -> String {
        normalize(t).lower
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(n("/internal/health"), "/internal/health");
        assert_eq!(
            n("/api/v2/users/preferences?user_id=7"),
            "/api/v2/users/preferences"
        );
        assert_eq!(n("/"), "/");
        assert!(normalize("/internal/health").notes.is_empty());
    }

    #[test]
    fn evasions_normalise_to_the_real_path() {
        assert_eq!(n("/internal/health/../admin/x"), "/internal/admin/x");
        assert_eq!(n("/internal/./admin//x/"), "/internal/admin/x");
        assert_eq!(n("//internal///admin/x"), "/internal/admin/x");
        assert_eq!(n("/%69nternal/admin/x"), "/internal/admin/x");
        assert_eq!(n("/internal/%2e%2e/internal/admin/x"), "/internal/admin/x");
        assert_eq!(n("/internal/%252e%252e/internal/admin"), "/internal/admin");
        assert_eq!(n("/INTERNAL/Admin/X"), "/internal/admin/x");
        assert_eq!(
            n("http://svc-user-profile-service/internal/admin/x?a=1"),
            "/internal/admin/x"
        );
        assert_eq!(n("HTTPS://h:8443/internal/admin"), "/internal/admin");
        assert_eq!(n("/internal\\admin\\x"), "/internal/admin/x");
        assert_eq!(n("/internal/health;x=1/../admin"), "/internal/admin");
        assert_eq!(n("/../../internal/admin"), "/internal/admin");
        let notes = normalize("/internal/health/../admin/x").notes;
        assert!(notes.contains(&"dot-segments"), "{notes:?}");
        assert!(normalize("/%69nternal").notes.contains(&"percent-encoding"));
        assert!(normalize("/a//b").notes.contains(&"double-slash"));
        assert!(!normalize("/a/b/").notes.contains(&"double-slash"));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(under("/internal/health", "/internal/"));
        assert!(under("/internal", "/internal/"));
        assert!(!under("/internalx/health", "/internal/"));
        assert!(matches_catalog("/internal/health", "/internal/health"));
        assert!(!matches_catalog("/internal/healthz", "/internal/health"));
        assert!(!matches_catalog("/internal/health/x", "/internal/health"));
        assert!(matches_catalog("/internal/debug/x/y", "/internal/debug/**"));
        assert!(matches_catalog("/internal/debug", "/internal/debug/**"));
    }

    #[test]
    fn routes_template_ids_but_not_protected_paths() {
        let r = |t: &str, p| route(&normalize(t), p);
        assert_eq!(
            r("/api/v2/users/1049/preferences", false),
            "/api/v2/users/{id}/preferences"
        );
        assert_eq!(
            r("/orders/3f2b9c1e-8d4a-4b7e-9a6c-1d2e3f4a5b6c", false),
            "/orders/{id}"
        );
        assert_eq!(
            r("/internal/admin/v0/users/lookup", true),
            "/internal/admin/v0/users/lookup"
        );
        assert_eq!(
            r("/internal/admin/v0/users/123", true),
            "/internal/admin/v0/users/123"
        );
    }
}
