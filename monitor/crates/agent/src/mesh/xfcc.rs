//! `x-forwarded-client-cert` (XFCC) and SPIFFE IDs: how a service mesh sidecar tells the
//! application who called it over mTLS.
//!
//! Envoy's format (also what the lab's haproxy sidecar writes): elements separated by `,`, each
//! a list of `Key=Value` pairs separated by `;`, values optionally in double quotes (inside
//! which `,` and `;` are literal and `\"` is a quote). Keys: `By` (this proxy's own identity),
//! `Hash` (SHA-256 of the peer certificate), `Cert`, `Chain`, `Subject`, `URI` (the peer
//! certificate's URI SAN: its SPIFFE ID), `DNS`. Each proxy on the way appends one element
//! (Envoy's `APPEND_FORWARD`) or replaces the header (`SANITIZE_SET`, a sidecar's default), so
//! the **last** element is the immediate peer of the proxy that delivered the request.
//!
//! Pure parsing, bounded by the input: never panics.

/// A SPIFFE ID of the Kubernetes form `spiffe://<trust domain>/ns/<namespace>/sa/<account>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    /// The whole ID as it was written.
    pub id: String,
    /// Trust domain (`cluster.local` by default in Istio).
    pub trust_domain: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes service account.
    pub service_account: String,
}

/// What the last XFCC element says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A SPIFFE ID of the Kubernetes form.
    Spiffe(SpiffeId),
    /// A `URI` that is not a Kubernetes SPIFFE ID (kept as written).
    OtherUri(String),
    /// The element has no `URI` (a certificate without a URI SAN).
    NoUri,
}

/// The caller named by the last element of an XFCC header value; `None` for an empty value.
pub fn caller(value: &str) -> Option<Caller> {
    let element = split_unquoted(value, b',')
        .into_iter()
        .rev()
        .find(|e| !e.trim().is_empty())?;
    let uri = split_unquoted(element, b';').into_iter().find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("uri")
            .then(|| unquote(v.trim()))
    });
    Some(match uri {
        None => Caller::NoUri,
        Some(u) => match spiffe(&u) {
            Some(id) => Caller::Spiffe(id),
            None => Caller::OtherUri(u),
        },
    })
}

/// Parses `spiffe://<td>/ns/<namespace>/sa/<service account>` (nothing before or after).
pub fn spiffe(uri: &str) -> Option<SpiffeId> {
    let rest = uri.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/');
    let td = parts.next()?;
    let (ns_key, ns, sa_key, sa) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns_key != "ns" || sa_key != "sa" {
        return None;
    }
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'%');
    if !(ok(td) && ok(ns) && ok(sa)) {
        return None;
    }
    Some(SpiffeId {
        id: uri.to_owned(),
        trust_domain: td.to_owned(),
        namespace: ns.to_owned(),
        service_account: sa.to_owned(),
    })
}

/// Splits at `sep` outside double quotes (a backslash escapes the next byte inside them).
fn split_unquoted(s: &str, sep: u8) -> Vec<&str> {
    let bytes = s.as_bytes();
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            // `sep` is ASCII, so `i` is on a character boundary.
            out.push(s.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    out.push(s.get(start..).unwrap_or_default());
    out
}

/// A value without its surrounding quotes, escapes resolved.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "By=spiffe://cluster.local/ns/vantage/sa/user-profile;Hash=0a1b;\
                       Subject=\"\";URI=spiffe://cluster.local/ns/vantage/sa/recommendation-engine";

    fn sa(c: Option<Caller>) -> Option<(String, String)> {
        match c {
            Some(Caller::Spiffe(id)) => Some((id.namespace, id.service_account)),
            _ => None,
        }
    }

    #[test]
    fn the_lab_sidecars_header_names_the_caller() {
        let Some(Caller::Spiffe(id)) = caller(LAB) else {
            panic!("{:?}", caller(LAB));
        };
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(id.namespace, "vantage");
        assert_eq!(id.service_account, "recommendation-engine");
        assert_eq!(
            id.id,
            "spiffe://cluster.local/ns/vantage/sa/recommendation-engine"
        );
    }

    #[test]
    fn the_last_element_is_the_immediate_peer_and_quotes_protect_separators() {
        let v = "By=a;URI=spiffe://td/ns/first/sa/x,\
                 By=b;Subject=\"CN=x, O=y; z \\\"q\\\"\";uri=\"spiffe://td/ns/last/sa/y\"";
        assert_eq!(sa(caller(v)), Some(("last".into(), "y".into())));
        // A trailing empty element (a sloppy proxy) does not hide the real one.
        assert_eq!(
            sa(caller(&format!("{LAB}, "))),
            Some(("vantage".into(), "recommendation-engine".into()))
        );
    }

    #[test]
    fn what_is_not_a_kubernetes_spiffe_id_is_said_so() {
        assert_eq!(caller(""), None);
        assert_eq!(caller("By=x;Hash=y"), Some(Caller::NoUri));
        assert_eq!(
            caller("URI=https://example.com/x"),
            Some(Caller::OtherUri("https://example.com/x".into()))
        );
        for bad in [
            "spiffe://td/ns/a/sa",
            "spiffe://td/ns/a/sa/b/extra",
            "spiffe://td/namespace/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns//sa/b",
            "spiffe://td/ns/a b/sa/b",
            "spiffe://td/ns/%61/sa/b",
        ] {
            assert_eq!(spiffe(bad), None, "{bad}");
        }
        // Unterminated quotes and stray backslashes never panic.
        for odd in [
            "URI=\"spiffe://td/ns/a/sa/b",
            "\\",
            "\"",
            "URI=\"\\",
            ";;,,==",
        ] {
            let _ = caller(odd);
        }
    }
}
