//! Writing policy YAML by hand: scalars quoted only when they must be, comments that no
//! recorded string can break out of, and the sections of a base policy written back from its
//! schema types (`monitor_policy::schema` has no `Serialize`: it is the reading side).
//!
//! Every string that came from a record (paths, methods, pod and service names, labels) is
//! attacker-controlled: a path with a newline in a comment would end the comment and inject
//! policy. [`comment`] and [`scalar`] therefore write ASCII only, escaping everything else (YAML
//! 1.1 readers also break lines at U+0085, U+2028 and U+2029).

use std::fmt::Write as _;

use monitor_policy::schema::{
    Aggregation, Baselines, Caller, CallerKeyword, CallerSelector, Edge, Endpoint,
    ExternalDestination, Quarantine, QuarantineMode, Redaction, SensitiveFields,
};

/// Words a YAML 1.1 or 1.2 reader would not read as a plain string.
const SPECIAL: [&str; 14] = [
    "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "nan", "inf", ".nan", ".inf",
];

/// `s` as a YAML scalar: plain when it is unambiguous (letters, digits, `_./-`, not starting
/// with a digit, `-` or `.`), else double-quoted with every non-printable or non-ASCII
/// character escaped.
pub fn scalar(s: &str) -> String {
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'/' || b == b'_')
        && !SPECIAL.iter().any(|w| w.eq_ignore_ascii_case(s));
    if plain {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// `s` made safe for the inside of a `#` comment: printable ASCII kept, anything else
/// (newlines, control and non-ASCII characters) escaped as `\u{..}`.
pub fn comment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    out
}

/// A flow sequence of scalars: `[a, "b c"]`.
pub fn flow_list<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| scalar(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

/// A flow sequence of ports: `[80, 443]`.
pub fn port_list(ports: &[u16]) -> String {
    let parts: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// A caller as the policy writes it: `self`, `node`, `{service: NAME}`, ...
pub fn caller(c: &Caller) -> String {
    match c {
        Caller::Keyword(CallerKeyword::SelfService) => "self".to_owned(),
        Caller::Keyword(CallerKeyword::Node) => "node".to_owned(),
        Caller::Selector(CallerSelector {
            service,
            namespace,
            pod,
        }) => {
            let parts: Vec<String> = [("service", service), ("namespace", namespace), ("pod", pod)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {}", scalar(v))))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// One catalog entry, as a block sequence element indented by two spaces.
pub fn endpoint(out: &mut String, e: &Endpoint) {
    let _ = writeln!(out, "  - path: {}", scalar(&e.path));
    let _ = writeln!(out, "    services: {}", flow_list(&e.services));
    if !e.methods.is_empty() {
        let _ = writeln!(out, "    methods: {}", flow_list(&e.methods));
    }
    let callers: Vec<String> = e.callers.iter().map(caller).collect();
    let _ = writeln!(out, "    callers: [{}]", callers.join(", "));
    if let Some(d) = &e.description {
        let _ = writeln!(out, "    description: {}", scalar(d));
    }
}

/// An allowed edge in flow style: `{from: a, to: b, ports: [80]}`.
pub fn edge(e: &Edge) -> String {
    let mut s = format!("{{from: {}, to: {}", scalar(&e.from), scalar(&e.to));
    if !e.ports.is_empty() {
        let _ = write!(s, ", ports: {}", port_list(&e.ports));
    }
    s.push('}');
    s
}

/// An external destination as a block sequence element, each line after `prefix` (`"    "`
/// in `egress.external`, `"#   "` for a commented-out one).
pub fn external(out: &mut String, prefix: &str, x: &ExternalDestination) {
    let _ = writeln!(out, "{prefix}- name: {}", scalar(&x.name));
    let _ = writeln!(out, "{prefix}  cidrs: {}", flow_list(&x.cidrs));
    if !x.ports.is_empty() {
        let _ = writeln!(out, "{prefix}  ports: {}", port_list(&x.ports));
    }
    if !x.from.is_empty() {
        let _ = writeln!(out, "{prefix}  from: {}", flow_list(&x.from));
    }
}

/// `sensitive_fields:` as in the base.
pub fn sensitive_fields(out: &mut String, s: &SensitiveFields) {
    let _ = writeln!(out, "sensitive_fields:");
    let _ = writeln!(out, "  names: {}", flow_list(&s.names));
    let _ = writeln!(out, "  selector_keys: {}", flow_list(&s.selector_keys));
    let _ = writeln!(out, "  critical_at: {}", s.critical_at);
}

/// `redaction:` as in the base (nothing when it keeps no value: the default).
pub fn redaction(out: &mut String, r: &Redaction) {
    if !r.keep_values.is_empty() {
        let _ = writeln!(out, "redaction:");
        let _ = writeln!(out, "  keep_values: {}", flow_list(&r.keep_values));
    }
}

/// `quarantine:` as in the base.
pub fn quarantine(out: &mut String, q: &Quarantine) {
    let _ = writeln!(out, "quarantine:");
    let mode = match q.mode {
        QuarantineMode::Observe => "observe",
        QuarantineMode::Enforce => "enforce",
    };
    let _ = writeln!(out, "  mode: {mode}");
    let _ = writeln!(out, "  pods: {}", flow_list(&q.pods));
    if !q.selector.is_empty() {
        let pairs: Vec<String> = q
            .selector
            .iter()
            .map(|(k, v)| format!("{}: {}", scalar(k), scalar(v)))
            .collect();
        let _ = writeln!(out, "  selector: {{{}}}", pairs.join(", "));
    }
    let _ = writeln!(out, "  network_policies: {}", q.network_policies);
}

/// `baselines:` as in the base.
pub fn baselines(out: &mut String, b: &Baselines) {
    let _ = writeln!(out, "baselines:");
    if let Some(s) = &b.response_size {
        let _ = writeln!(
            out,
            "  response_size: {{factor: {}, min_samples: {}}}",
            s.factor, s.min_samples
        );
    }
    if let Some(r) = &b.rate {
        let _ = writeln!(
            out,
            "  rate: {{factor: {}, min_minutes: {}}}",
            r.factor, r.min_minutes
        );
    }
    if let Some(n) = &b.new_edges {
        let _ = writeln!(out, "  new_edges: {{learn_seconds: {}}}", n.learn_seconds);
    }
}

/// `aggregation:` as in the base (nothing for the default 60 s).
pub fn aggregation(out: &mut String, a: &Aggregation) {
    if a.window_seconds != Aggregation::default().window_seconds {
        let _ = writeln!(out, "aggregation:");
        let _ = writeln!(out, "  window_seconds: {}", a.window_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_plain_only_when_unambiguous() {
        assert_eq!(scalar("/internal/health"), "/internal/health");
        assert_eq!(scalar("svc-checkout"), "svc-checkout");
        assert_eq!(scalar("*"), "\"*\"");
        assert_eq!(scalar("10.0.0.1/32"), "\"10.0.0.1/32\"");
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar(""), "\"\"");
        assert_eq!(scalar("a: b"), "\"a: b\"");
        assert_eq!(scalar("x\ny\"\\"), "\"x\\u000Ay\\\"\\\\\"");
        assert_eq!(scalar("\u{2028}é"), "\"\\u2028\\u00E9\"");
        assert_eq!(scalar("\u{1F600}"), "\"\\U0001F600\"");
    }

    #[test]
    fn a_comment_cannot_end_its_line() {
        for evil in [
            "/a\nversion: 2",
            "/a\r\n- x",
            "/a\u{85}b",
            "/a\u{2028}b",
            "/a\u{0}",
        ] {
            let c = comment(evil);
            assert!(c.bytes().all(|b| (b' '..=b'~').contains(&b)), "{c}");
        }
        assert_eq!(comment("/a\nb"), "/a\\u{a}b");
    }

    #[test]
    fn quoted_scalars_read_back_as_the_same_string() {
        for s in [
            "*",
            "10.0.0.1/32",
            "a: b # c",
            "x\ny",
            "\u{2028}é\u{1F600}",
            "\"q\"\\",
        ] {
            let doc = format!("v: {}\n", scalar(s));
            let v: std::collections::BTreeMap<String, String> =
                serde_yaml_ng::from_str(&doc).unwrap();
            assert_eq!(v["v"], s, "{doc}");
        }
    }
}
