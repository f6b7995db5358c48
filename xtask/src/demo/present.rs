//! What the demo prints: the phase headings, records as one readable line each, the
//! violations table, the quarantine attestation and the checklist's lines.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;

use serde_json::Value;

/// A heading: `==> msg` after a blank line.
pub(super) fn say(msg: &str) {
    crate::outln!("\n==> {msg}");
}

/// A checklist line: `✓ text`, or `✗ text` emphasized.
pub(super) fn check_line(ok: bool, text: &str) -> String {
    let line = format!("  {} {text}", if ok { "✓" } else { "✗" });
    if ok { line } else { emphasize(&line) }
}

/// `line` made to stand out: bold red on a terminal, marked with `<<<<` otherwise.
pub(super) fn emphasize(line: &str) -> String {
    if std::io::stdout().is_terminal() {
        format!("\x1b[1;31m{line}\x1b[0m")
    } else {
        format!("{line}   <<<<")
    }
}

/// A JSON scalar as text (`?` when absent).
pub(super) fn s(v: &Value) -> String {
    scalar(Some(v)).unwrap_or_else(|| "?".into())
}

/// `3 http, 2 violation, ...`
pub(super) fn summarize_kinds(records: &[Value]) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        *kinds.entry(s(&r["kind"])).or_default() += 1;
    }
    let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} ({})", records.len(), parts.join(", "))
}

/// The violation records, in order.
pub(super) fn violations(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "violation")
        .collect()
}

/// A violation's message without the aggregation suffix, shortened: when the text before its
/// last `: ` only repeats the table's columns (it names the source), the part after it.
pub(super) fn short_message(v: &Value) -> String {
    const MAX: usize = 72;
    let msg = s(&v["message"]);
    let msg = match msg.rfind(" (repeated ") {
        Some(i) if msg.ends_with(" in this window)") => msg[..i].to_owned(),
        _ => msg,
    };
    let names: Vec<String> = [&v["source"]["pod"], &v["source"]["service"]]
        .into_iter()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect();
    let msg = match msg.rsplit_once(": ") {
        Some((head, tail))
            if msg.chars().count() > MAX && names.iter().any(|n| head.contains(n.as_str())) =>
        {
            tail.to_owned()
        }
        _ => msg,
    };
    if msg.chars().count() > MAX {
        let cut: String = msg.chars().take(MAX - 1).collect();
        format!("{cut}…")
    } else {
        msg
    }
}

/// The violations as a table, in sequence order.
pub fn violations_table(records: &[Value]) -> String {
    let vs = violations(records);
    if vs.is_empty() {
        return "  (no violation records)".to_owned();
    }
    let name = |e: &Value| {
        e["pod"]
            .as_str()
            .or_else(|| e["service"].as_str())
            .map_or_else(|| s(&e["ip"]), str::to_owned)
    };
    let rows: Vec<[String; 7]> = vs
        .iter()
        .map(|v| {
            let count = if v["aggregated"] == true {
                format!("+{} (agg.)", s(&v["count"]))
            } else {
                s(&v["count"])
            };
            let request = match v["http"]["method"].as_str() {
                Some(m) => format!("{m} {}", s(&v["http"]["path"])),
                None => s(&v["route"]),
            };
            [
                s(&v["seq"]),
                s(&v["rule"]),
                s(&v["severity"]),
                count,
                format!("{} → {}", name(&v["source"]), name(&v["destination"])),
                request,
                short_message(v),
            ]
        })
        .collect();
    let header = [
        "seq",
        "rule",
        "severity",
        "count",
        "source pod → destination",
        "request",
        "message",
    ];
    let mut width = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt_row = |cells: [&str; 7]| {
        let mut line = String::from(" ");
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            if i == 0 {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else if i == cells.len() - 1 {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("  ");
        }
        line.trim_end().to_owned()
    };
    let mut out = vec![fmt_row(header)];
    for r in &rows {
        out.push(fmt_row([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]));
    }
    out.join("\n")
}

/// The last quarantine attestation per pod, one line each.
pub fn attestation(records: &[Value]) -> String {
    let mut last: BTreeMap<String, &Value> = BTreeMap::new();
    for r in records.iter().filter(|r| r["kind"] == "quarantine") {
        last.insert(format!("{}/{}", s(&r["namespace"]), s(&r["pod"])), r);
    }
    if last.is_empty() {
        return "  (no quarantine record)".to_owned();
    }
    last.iter()
        .map(|(pod, r)| {
            format!(
                "  {pod} (seq {}, {}): mode {}, since {}; {} connection attempt(s) blocked, \
                 {} packet(s) / {} B dropped, {} escaped\n  reason: {}",
                s(&r["seq"]),
                s(&r["time"]),
                s(&r["mode"]),
                s(&r["since"]),
                s(&r["attempts_blocked"]),
                s(&r["packets_dropped"]),
                s(&r["bytes_dropped"]),
                s(&r["escaped"]),
                s(&r["reason"]),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first of several dotted paths present in `v`.
fn pick<'a>(v: &'a Value, paths: &[&str]) -> Option<&'a Value> {
    paths.iter().find_map(|p| {
        p.split('.')
            .try_fold(v, |cur, key| cur.get(key))
            .filter(|x| !x.is_null())
    })
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A peer (source or destination) as `pod` or `service` or `ip:port`.
fn peer(v: &Value, side: &[&str]) -> String {
    let Some(p) = side.iter().find_map(|k| v.get(*k)) else {
        return "?".into();
    };
    if let Some(s) = p.as_str() {
        return s.to_string();
    }
    let name = scalar(pick(
        p,
        &[
            "pod",
            "pod.name",
            "name",
            "service",
            "service.name",
            "external",
            "external.name",
        ],
    ));
    let ip = scalar(pick(p, &["ip", "addr", "address"]));
    let port = scalar(pick(p, &["port"]));
    match (name, ip, port) {
        (Some(n), _, Some(port)) => format!("{n}:{port}"),
        (Some(n), _, None) => n,
        (None, Some(ip), Some(port)) => format!("{ip}:{port}"),
        (None, Some(ip), None) => ip,
        _ => "?".into(),
    }
}

/// One readable line for a record: kind, source → destination, method target, status, bytes.
pub fn describe_record(v: &Value) -> String {
    let kind = scalar(v.get("kind")).unwrap_or_else(|| "?".into());
    let src = peer(v, &["source", "src", "client"]);
    let dst = peer(v, &["destination", "dst", "server"]);
    match kind.as_str() {
        "loss" | "lost" => format!("{kind:<6} {}", compact(v)),
        _ => {
            let method = scalar(pick(v, &["http.method", "http.request.method", "method"]));
            let target = scalar(pick(
                v,
                &[
                    "http.target",
                    "http.request.target",
                    "target",
                    "url",
                    "http.url",
                ],
            ))
            .or_else(|| {
                let path = scalar(pick(v, &["http.path", "path", "http.request.path"]))?;
                Some(match scalar(pick(v, &["http.query", "query"])) {
                    Some(q) if !q.is_empty() => format!("{path}?{q}"),
                    _ => path,
                })
            });
            let status = scalar(pick(
                v,
                &[
                    "http.status",
                    "http.response.status",
                    "status",
                    "http.status_code",
                ],
            ));
            let bytes = scalar(pick(
                v,
                &[
                    "http.response_body_bytes",
                    "http.response_bytes",
                    "http.response.bytes",
                    "http.response.body_bytes",
                    "response_bytes",
                    "bytes",
                    "bytes_in",
                ],
            ));
            let mut s = match scalar(v.get("observer")) {
                Some(o) => format!("{kind:<6} ({o:<6}) {src} → {dst}"),
                None => format!("{kind:<6} {src} → {dst}"),
            };
            if let Some(m) = method {
                s.push_str(&format!("  {m}"));
            }
            if let Some(t) = target {
                s.push_str(&format!(" {t}"));
            }
            if let Some(st) = status {
                s.push_str(&format!("  {st}"));
            }
            if let Some(b) = bytes {
                s.push_str(&format!("  {b} B"));
            }
            if let (Some(up), Some(down)) = (
                scalar(v.get("bytes_to_server")),
                scalar(v.get("bytes_to_client")),
            ) {
                s.push_str(&format!("  {up} B → / ← {down} B"));
            }
            if let Some(close) = scalar(v.get("close")) {
                s.push_str(&format!("  ({close})"));
            }
            if let Some(rule) = scalar(pick(v, &["rule", "violation.rule"])) {
                s.push_str(&format!("  [{rule}]"));
            }
            s
        }
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
