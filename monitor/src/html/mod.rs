//! `monitor report --html FILE`: the report as one self-contained HTML page, drawn from the
//! `ReportResponse` the CLI fetched over gRPC (so it works against any collector).
//!
//! The charts are inline SVG written here, not a JavaScript chart library. The page is meant
//! to be opened anywhere (an air-gapped analyst's laptop, a ticket attachment, a browser that
//! blocks scripts) and must never fetch anything: there is no script at all, and a
//! Content-Security-Policy of `default-src 'none'` makes sure of it, so even markup that slipped
//! through escaping could not run or call out. A library would also be code to vendor, review
//! and keep patched. Nothing needs computing in the browser: the collector's query already
//! aggregated the figures (a few hundred shapes at most), so the page is as cheap over a
//! million records as over ten.
//!
//! Every string from records (paths, pods, query values: attacker-controlled) goes through
//! [`esc`] before it reaches the page, in text and attributes alike.
//!
//! Sections: the summary; requests (violations, for a rule) by day and by hour of day; the
//! callers → subject → destinations graph; by source, by status, by destination; kept filter
//! values, one chart per query key; query keys; response body bytes of the subject against
//! the destination's other routes (mean bars, maximum marks); violations by rule.

pub mod svg;

use std::fmt::Write as _;

use monitor_wire::proto::{Bucket, ReportResponse};

use crate::client::rfc3339_secs;
use svg::Row;

/// Days filled in between the first and last day at most (a longer range keeps the stored
/// days only).
const MAX_DAYS: i64 = 400;

/// `s` escaped for HTML text and double- or single-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters of `s`, with `…` when cut.
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 6px;border-bottom:1px solid #dde2ea;padding-bottom:3px}
p.summary{color:#3c4656;margin:0}p.note{color:#5d6878;font-size:12px;margin:4px 0}
svg{width:100%;height:auto;display:block}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}svg text.axis{fill:#5d6878;font-size:11px}
rect.bar{fill:#3b6ea5}rect.bar.subject{fill:#c0392b}line.grid{stroke:#e7ebf0}line.axis-line{stroke:#9aa4b2}
line.mark{stroke:#1d2330;stroke-width:2}path.edge{fill:none;stroke:#9db4d0;stroke-opacity:.8}
g.node rect{fill:#eef3f9;stroke:#3b6ea5}g.node.subject rect{fill:#fbeceb;stroke:#c0392b}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left}
";

fn section(out: &mut String, id: &str, title: &str, body: &str) {
    let _ = writeln!(
        out,
        "<section id=\"{}\"><h2>{}</h2>{body}</section>",
        esc(id),
        esc(title)
    );
}

fn none() -> String {
    "<p class=\"note\">(none)</p>".to_owned()
}

fn bucket_rows(b: &[Bucket]) -> Vec<Row> {
    b.iter()
        .map(|b| Row {
            label: b.key.clone(),
            value: b.count as f64,
            text: thousands(b.count),
            ..Row::default()
        })
        .collect()
}

fn bucket_chart(chart: &str, b: &[Bucket]) -> String {
    if b.is_empty() {
        none()
    } else {
        svg::rows(chart, &bucket_rows(b))
    }
}

/// The days from the first to the last bucket, the missing ones at 0 (so the axis is time).
fn days(by_day: &[Bucket]) -> Vec<(String, u64)> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let parsed: Option<Vec<(time::Date, u64)>> = by_day
        .iter()
        .map(|b| time::Date::parse(&b.key, &fmt).ok().map(|d| (d, b.count)))
        .collect();
    let as_given = || by_day.iter().map(|b| (b.key.clone(), b.count)).collect();
    let Some(parsed) = parsed else {
        return as_given();
    };
    let (Some(first), Some(last)) = (parsed.first(), parsed.last()) else {
        return Vec::new();
    };
    if (last.0 - first.0).whole_days() > MAX_DAYS || last.0 < first.0 {
        return as_given();
    }
    let mut out = Vec::new();
    let mut day = first.0;
    let mut it = parsed.iter().peekable();
    while day <= last.0 {
        let mut n = 0;
        while let Some((d, c)) = it.peek() {
            if *d == day {
                n += c;
                it.next();
            } else {
                break;
            }
        }
        out.push((day.format(&fmt).unwrap_or_default(), n));
        match day.next_day() {
            Some(d) => day = d,
            None => break,
        }
    }
    out
}

fn sizes(resp: &ReportResponse) -> String {
    let mut rows = Vec::new();
    let stat = |s: &monitor_wire::proto::ByteStats, highlight: bool| Row {
        label: if highlight {
            format!("{} (subject)", s.route)
        } else {
            s.route.clone()
        },
        value: s.mean_bytes,
        text: format!(
            "mean {} B, max {} B, {} req",
            thousands(s.mean_bytes.round() as u64),
            thousands(s.max_bytes),
            thousands(s.requests)
        ),
        highlight,
        mark: Some(s.max_bytes as f64),
    };
    if let Some(own) = &resp.response_bytes {
        rows.push(stat(own, true));
    }
    rows.extend(resp.other_routes.iter().map(|s| stat(s, false)));
    let mut out = svg::rows("response-bytes", &rows);
    out.push_str(
        "<p class=\"note\">Bars: mean response body bytes; marks: the largest. The other routes \
         are the destination service's, from every caller.</p>",
    );
    if resp.other_routes.is_empty() {
        out.push_str(
            "<p class=\"note\">No other routes of the destination service in the range.</p>",
        );
    }
    out
}

fn filter_values(resp: &ReportResponse) -> String {
    if resp.filter_values.is_empty() {
        return "<p class=\"note\">No kept (unredacted) query values: the policy's \
                `redaction.keep_values` decides which values records keep.</p>"
            .to_owned();
    }
    // One chart per key, keys in order of first appearance (most requested first).
    let mut keys: Vec<&str> = Vec::new();
    for f in &resp.filter_values {
        if !keys.contains(&f.key.as_str()) {
            keys.push(&f.key);
        }
    }
    let mut out = String::new();
    for k in keys {
        let rows: Vec<Row> = resp
            .filter_values
            .iter()
            .filter(|f| f.key == k)
            .map(|f| Row {
                label: f.value.clone(),
                value: f.count as f64,
                text: thousands(f.count),
                ..Row::default()
            })
            .collect();
        let _ = write!(out, "<h3>{}</h3>", esc(k));
        out.push_str(&svg::rows(&format!("filter:{k}"), &rows));
    }
    out
}

/// The whole page for `resp`; `range` says what time range was asked for (as given).
pub fn render(resp: &ReportResponse, range: &str) -> String {
    let rule_subject = resp.subject.starts_with("rule ");
    let unit = if rule_subject {
        "violations"
    } else {
        "requests"
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>monitor report: {}</title><style>{STYLE}</style></head><body>\n",
        esc(&resp.subject)
    );
    let _ = write!(out, "<header><h1>Report: {}</h1>", esc(&resp.subject));
    if resp.requests == 0 {
        let _ = writeln!(
            out,
            "<p class=\"summary\">No matching records in the time range ({}).</p></header></body></html>",
            esc(range)
        );
        return out;
    }
    let _ = writeln!(
        out,
        "<p class=\"summary\">{} {unit} matched, first {}, last {} (asked: {}). Figures \
         aggregated by the collector; times UTC.</p></header>",
        thousands(resp.requests),
        esc(&rfc3339_secs(resp.first_seen_unix_nano)),
        esc(&rfc3339_secs(resp.last_seen_unix_nano)),
        esc(range)
    );
    let day_slots = days(&resp.by_day);
    let every = day_slots.len().div_ceil(16).max(1);
    section(
        &mut out,
        "by-day",
        &format!(
            "{} by day",
            if rule_subject {
                "Violations"
            } else {
                "Requests"
            }
        ),
        &svg::columns("by-day", &day_slots, every),
    );
    let hours: Vec<(String, u64)> = resp
        .hours_of_day
        .iter()
        .map(|b| (b.key.clone(), b.count))
        .collect();
    section(
        &mut out,
        "hours",
        &format!(
            "{} by hour of day",
            if rule_subject {
                "Violations"
            } else {
                "Requests"
            }
        ),
        &svg::columns("hours-of-day", &hours, 1),
    );
    let sources: Vec<(String, u64)> = resp
        .by_source
        .iter()
        .map(|b| (b.key.clone(), b.count))
        .collect();
    let dests: Vec<(String, u64)> = resp
        .by_destination
        .iter()
        .map(|b| (b.key.clone(), b.count))
        .collect();
    section(
        &mut out,
        "graph",
        "Callers → subject → destinations",
        &svg::graph("graph", &sources, &resp.subject, &dests),
    );
    section(
        &mut out,
        "by-source",
        "By source",
        &bucket_chart("by-source", &resp.by_source),
    );
    section(
        &mut out,
        "by-status",
        "By status",
        &bucket_chart("by-status", &resp.by_status),
    );
    section(
        &mut out,
        "by-destination",
        "By destination",
        &bucket_chart("by-destination", &resp.by_destination),
    );
    section(
        &mut out,
        "filter-values",
        "Filter values (kept, not redacted)",
        &filter_values(resp),
    );
    section(
        &mut out,
        "query-keys",
        "Query keys (requests containing the key)",
        &bucket_chart("query-keys", &resp.query_keys),
    );
    section(
        &mut out,
        "response-bytes",
        "Response body bytes",
        &sizes(resp),
    );
    let mut violations = bucket_chart("by-rule", &resp.by_rule);
    if !rule_subject {
        violations.push_str(
            "<p class=\"note\">Violations among the subject's requests, per rule. For a rule's \
             violations over time, run the report with <code>--rule RULE</code>.</p>",
        );
    }
    section(&mut out, "violations", "Violations by rule", &violations);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(key: &str, count: u64) -> Bucket {
        Bucket {
            key: key.into(),
            count,
        }
    }

    #[test]
    fn escaping_and_numbers() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(clip("abcdef", 4), "abc…");
    }

    #[test]
    fn missing_days_are_zero_slots() {
        let d = days(&[b("2026-11-02", 1), b("2026-11-05", 2)]);
        assert_eq!(
            d,
            [
                ("2026-11-02", 1),
                ("2026-11-03", 0),
                ("2026-11-04", 0),
                ("2026-11-05", 2)
            ]
            .map(|(k, n)| (k.to_owned(), n))
        );
        assert_eq!(days(&[b("not a day", 1)]), [("not a day".to_owned(), 1)]);
    }

    #[test]
    fn recorded_strings_are_escaped_everywhere() {
        let evil = "/api/<script>alert(1)</script>\"'";
        let resp = ReportResponse {
            subject: format!("path {evil}"),
            requests: 2,
            by_day: vec![b("2026-11-02", 2)],
            by_source: vec![b(evil, 2)],
            by_destination: vec![b(evil, 2)],
            by_status: vec![b("200", 2)],
            query_keys: vec![b(evil, 1)],
            filter_values: vec![monitor_wire::proto::FilterValue {
                key: evil.into(),
                value: evil.into(),
                count: 1,
            }],
            by_rule: vec![b(evil, 1)],
            other_routes: vec![monitor_wire::proto::ByteStats {
                route: evil.into(),
                requests: 1,
                mean_bytes: 10.0,
                max_bytes: 10,
            }],
            ..ReportResponse::default()
        };
        let page = render(&resp, evil);
        assert!(!page.contains("<script"), "{page}");
        assert!(
            !page.contains("\"'"),
            "an unescaped quote could end an attribute"
        );
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
