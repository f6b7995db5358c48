//! CEF (ArcSight Common Event Format, version 0) events made from stored records:
//! `CEF:0|<vendor>|monitor|<version>|<signature>|<name>|<severity>|<extensions>`.
//!
//! | record | signature | name | severity (0-10) |
//! |---|---|---|---|
//! | `violation` | the rule id | the rule's title | low 3, medium 5, high 8, critical 10 |
//! | `loss` | `loss` | `Records lost: <reason>` | 5 |
//! | `quarantine` | `quarantine` | `Quarantine attestation` | 8 if `escaped` > 0, else 1 |
//! | `policy` | `policy` | `Policy reloaded` / `Policy reload failed` | 1 / 5 |
//! | `http`, `flow` | the kind | `HTTP exchange` / `TCP flow ended` | 1 |
//!
//! Extensions: `rt` (record time, ms), `externalId` `<node>:<boot_id>:<seq>`, `dvchost` (node),
//! `cat` (kind), `msg`; endpoints `src`, `spt`, `shost` (pod or external host), `suser`
//! (service account), `cs4` namespace (`cs4Label=srcNamespace`), and `dst`, `dpt`, `dhost`,
//! `duser`, `cs5` (`dstNamespace`); violations add `cs1` rule, `cs2` route, `cs3` policy entry
//! (`file:rule[:line]`), `requestMethod`, `request` (path and redacted query), `cn1` HTTP status,
//! `cnt` count, `start`/`end` (first/last seen); loss adds `cs1` reason, `cs2` stage, `cnt`,
//! `start`/`end` (window); http adds `requestMethod`, `request` (URL), `cn1` status; flow adds
//! `out`/`in` (bytes to server/client), `start`/`end`, `cs1` close; quarantine adds `cs1` mode,
//! `cnt` (attempts blocked).
//!
//! Escaping: in header fields `\` → `\\` and `|` → `\|` (line breaks become spaces, as the
//! header cannot hold them); in extension values `\` → `\\`, `=` → `\=`, line feed → `\n`,
//! carriage return → `\r`.

use std::fmt::Write as _;

use serde_json::Value;

use super::{rule_title, uid_of};
use monitor_record::stored::StoredRecord;

/// Escapes a CEF header field.
pub fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value.
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// One CEF event before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CefEvent {
    /// Device Event Class ID: the rule for violations, else the kind.
    pub signature: String,
    /// Human-readable name.
    pub name: String,
    /// 0 (lowest) to 10.
    pub severity: u8,
    /// Extensions in order (keys are CEF names; values unescaped).
    pub extensions: Vec<(&'static str, String)>,
}

impl CefEvent {
    /// `CEF:0|vendor|product|version|signature|name|severity|k=v k=v ...`, escaped.
    pub fn render(&self, vendor: &str, product: &str, version: &str) -> String {
        let mut s = format!(
            "CEF:0|{}|{}|{}|{}|{}|{}|",
            escape_header(vendor),
            escape_header(product),
            escape_header(version),
            escape_header(&self.signature),
            escape_header(&self.name),
            self.severity.min(10),
        );
        for (i, (k, v)) in self.extensions.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            // Writing into a String cannot fail.
            let _ = write!(s, "{k}={}", escape_value(v));
        }
        s
    }
}

/// The CEF severity of a violation severity.
pub fn severity(severity: &str) -> u8 {
    match severity {
        "low" => 3,
        "medium" => 5,
        "high" => 8,
        "critical" => 10,
        _ => 5,
    }
}

struct Ext(Vec<(&'static str, String)>);

impl Ext {
    fn add(&mut self, k: &'static str, v: impl ToString) {
        self.0.push((k, v.to_string()));
    }

    fn opt_str(&mut self, k: &'static str, v: &Value, field: &str) {
        if let Some(s) = v.get(field).and_then(Value::as_str) {
            self.add(k, s);
        }
    }

    fn opt_num(&mut self, k: &'static str, v: &Value, field: &str) {
        if let Some(n) = v.get(field).and_then(Value::as_u64) {
            self.add(k, n);
        }
    }

    fn opt_time(&mut self, k: &'static str, v: &Value, field: &str) {
        if let Some(ms) = v.get(field).and_then(rfc3339_ms) {
            self.add(k, ms);
        }
    }

    fn labelled(&mut self, k: &'static str, label: &'static str, value: Option<&str>) {
        if let Some(val) = value {
            self.add(k, val);
            self.0.push((label_key(k), label.to_owned()));
        }
    }

    fn endpoints(&mut self, v: &Value) {
        let null = Value::Null;
        for (e, ip, port, host, user, ns, ns_label) in [
            (
                v.get("source").unwrap_or(&null),
                "src",
                "spt",
                "shost",
                "suser",
                "cs4",
                "srcNamespace",
            ),
            (
                v.get("destination").unwrap_or(&null),
                "dst",
                "dpt",
                "dhost",
                "duser",
                "cs5",
                "dstNamespace",
            ),
        ] {
            self.opt_str(ip, e, "ip");
            self.opt_num(port, e, "port");
            self.opt_str(host, e, "pod");
            self.opt_str(user, e, "service_account");
            self.labelled(ns, ns_label, e.get("namespace").and_then(Value::as_str));
        }
    }
}

fn label_key(k: &'static str) -> &'static str {
    match k {
        "cs1" => "cs1Label",
        "cs2" => "cs2Label",
        "cs3" => "cs3Label",
        "cs4" => "cs4Label",
        "cs5" => "cs5Label",
        "cs6" => "cs6Label",
        "cn1" => "cn1Label",
        "cn2" => "cn2Label",
        _ => "cn3Label",
    }
}

fn rfc3339_ms(v: &Value) -> Option<i64> {
    monitor_record::time::parse_rfc3339_ns(v.as_str()?).map(|ns| ns.div_euclid(1_000_000))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Maps one stored record to a CEF event (see the module documentation).
pub fn event_of(r: &StoredRecord) -> CefEvent {
    let v: Value = serde_json::from_str(&r.json).unwrap_or(Value::Null);
    let null = Value::Null;
    let mut x = Ext(Vec::new());
    x.add("rt", r.time_ns.div_euclid(1_000_000));
    x.add("externalId", uid_of(r));
    x.add("dvchost", &r.node);
    x.add("cat", &r.kind);
    let (signature, name, severity) = match r.kind.as_str() {
        "violation" => {
            let rule = str_of(&v, "rule").unwrap_or("unknown");
            x.endpoints(&v);
            x.labelled("cs1", "rule", Some(rule));
            x.labelled("cs2", "route", str_of(&v, "route"));
            if let Some(p) = v.get("policy") {
                let mut s = format!(
                    "{}:{}",
                    str_of(p, "file").unwrap_or(""),
                    str_of(p, "rule").unwrap_or("")
                );
                if let Some(line) = p.get("line").and_then(Value::as_u64) {
                    let _ = write!(s, ":{line}");
                }
                x.labelled("cs3", "policy", Some(&s));
            }
            if let Some(h) = v.get("http") {
                x.opt_str("requestMethod", h, "method");
                if let Some(path) = str_of(h, "path") {
                    match str_of(h, "query") {
                        Some(q) => x.add("request", format!("{path}?{q}")),
                        None => x.add("request", path),
                    }
                }
                if let Some(s) = h.get("status").and_then(Value::as_u64) {
                    x.add("cn1", s);
                    x.add("cn1Label", "httpStatus");
                }
            }
            x.opt_num("cnt", &v, "count");
            x.opt_time("start", &v, "first_seen");
            x.opt_time("end", &v, "last_seen");
            x.opt_str("msg", &v, "message");
            (
                rule.to_owned(),
                rule_title(rule),
                severity(str_of(&v, "severity").unwrap_or("")),
            )
        }
        "loss" => {
            let reason = str_of(&v, "reason").unwrap_or("unknown");
            x.labelled("cs1", "reason", Some(reason));
            x.labelled("cs2", "stage", str_of(&v, "stage"));
            x.opt_num("cnt", &v, "count");
            x.opt_time("start", &v, "window_start");
            x.opt_time("end", &v, "time");
            x.add(
                "msg",
                format!(
                    "{} lost at stage {} ({reason})",
                    v.get("count").and_then(Value::as_u64).unwrap_or(0),
                    str_of(&v, "stage").unwrap_or("?"),
                ),
            );
            ("loss".to_owned(), format!("Records lost: {reason}"), 5)
        }
        "http" => {
            let h = v.get("http").unwrap_or(&null);
            x.endpoints(&v);
            x.opt_str("requestMethod", h, "method");
            if let Some(t) = str_of(h, "target") {
                match str_of(h, "host") {
                    Some(host) => x.add("request", format!("http://{host}{t}")),
                    None => x.add("request", t),
                }
            }
            if let Some(s) = h.get("status").and_then(Value::as_u64) {
                x.add("cn1", s);
                x.add("cn1Label", "httpStatus");
            }
            ("http".to_owned(), "HTTP exchange".to_owned(), 1)
        }
        "flow" => {
            x.endpoints(&v);
            x.opt_num("out", &v, "bytes_to_server");
            x.opt_num("in", &v, "bytes_to_client");
            x.add("start", r.time_ns.div_euclid(1_000_000));
            x.opt_time("end", &v, "end_time");
            x.labelled("cs1", "close", str_of(&v, "close"));
            ("flow".to_owned(), "TCP flow ended".to_owned(), 1)
        }
        "policy" => {
            let failed = str_of(&v, "event") == Some("reload-failed");
            x.labelled("cs1", "event", str_of(&v, "event"));
            x.labelled("cs2", "file", str_of(&v, "file"));
            if let Some(errs) = v.get("errors").and_then(Value::as_array) {
                let text: Vec<&str> = errs.iter().filter_map(Value::as_str).collect();
                x.add("msg", text.join("\n"));
            }
            if failed {
                ("policy".to_owned(), "Policy reload failed".to_owned(), 5)
            } else {
                ("policy".to_owned(), "Policy reloaded".to_owned(), 1)
            }
        }
        "quarantine" => {
            let escaped = v.get("escaped").and_then(Value::as_u64).unwrap_or(0);
            x.opt_str("shost", &v, "pod");
            x.labelled("cs4", "srcNamespace", str_of(&v, "namespace"));
            x.labelled("cs1", "mode", str_of(&v, "mode"));
            x.opt_num("cnt", &v, "attempts_blocked");
            x.add(
                "msg",
                format!(
                    "quarantined since {} ({}): {} attempts blocked, {escaped} escaped",
                    str_of(&v, "since").unwrap_or("?"),
                    str_of(&v, "reason").unwrap_or("?"),
                    v.get("attempts_blocked")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                ),
            );
            let sev = if escaped > 0 { 8 } else { 1 };
            (
                "quarantine".to_owned(),
                "Quarantine attestation".to_owned(),
                sev,
            )
        }
        kind => (kind.to_owned(), format!("{kind} record"), 1),
    };
    CefEvent {
        signature,
        name,
        severity,
        extensions: x.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        sink::testdata, sink::testdata::BOOT, sink::testdata::NODE, sink::testdata::stored,
    };

    #[test]
    fn escaping_of_header_and_extension_values() {
        assert_eq!(escape_header(r"a|b\c=d"), r"a\|b\\c=d");
        assert_eq!(escape_header("two\nlines\r"), "two lines ");
        assert_eq!(escape_value("a|b=c\\d\ne\rf"), r"a|b\=c\\d\ne\rf");
        let ev = CefEvent {
            signature: "sig|1".into(),
            name: r"back\slash".into(),
            severity: 12,
            extensions: vec![("msg", "x=1\ny".into()), ("cs1", "p|q".into())],
        };
        assert_eq!(
            ev.render("ven|dor", "monitor", "1.0"),
            r"CEF:0|ven\|dor|monitor|1.0|sig\|1|back\\slash|10|msg=x\=1\ny cs1=p|q"
        );
    }

    #[test]
    fn violation_with_special_characters_in_its_message() {
        let r = stored(&testdata::violation_with("a|b=c\\d\ne"), 1, 3);
        let ev = event_of(&r);
        assert_eq!(ev.signature, "sensitive-fields");
        assert_eq!(ev.name, "Sensitive fields in query");
        assert_eq!(ev.severity, 8);
        let text = ev.render("acme", "monitor", "0.1.0");
        assert!(
            text.starts_with(
                "CEF:0|acme|monitor|0.1.0|sensitive-fields|Sensitive fields in query|8|"
            ),
            "{text}"
        );
        assert!(text.ends_with(r" msg=a|b\=c\\d\ne"), "{text}");
        for part in [
            "rt=1795328572775 ",
            &format!("externalId={NODE}:{BOOT}:3 "),
            "src=10.77.0.24 spt=53202 shost=svc-recommendation-engine-04 suser=recommender ",
            "cs4=vantage cs4Label=srcNamespace ",
            "dst=10.77.0.10 dpt=80 dhost=svc-user-profile-service-0 ",
            "cs1=sensitive-fields cs1Label=rule ",
            "cs3=/etc/monitor/policy.yaml:sensitive_fields[0]:42 cs3Label=policy ",
            "requestMethod=GET request=/internal/admin/v0/users/lookup?fields\\=ssn_last4,email&state\\=REDACTED ",
            "cn1=200 cn1Label=httpStatus cnt=1 ",
        ] {
            assert!(text.contains(part), "missing `{part}` in {text}");
        }
        assert!(!text.contains('\n'), "a CEF event is one line");
    }
}
