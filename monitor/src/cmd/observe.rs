//! `monitor observe` and `monitor report`: the CLI's questions to the collector.
//!
//! Observe prints each record as a table row, its JSON (`ndjson`) or an OCSF event (the
//! collector's own mapping, `monitor_collector::sink::ocsf`); `--top` keeps counters per rule
//! and kind instead and redraws them in place ([`Top`], rendered by the pure [`render_top`]).
//! Report prints the text report or JSON, and with `--html` writes the page of
//! [`crate::html`].

use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    cli::ObserveArgs, cli::ObserveFormat, cli::OutputFormat, cli::ReportArgs, client,
    client::parse_when,
};

use monitor_collector::{report, sink::ocsf};

use monitor_record::stored::StoredRecord;

use monitor_wire::{
    proto::ObserveRequest, proto::ReportRequest, proto::observe_client::ObserveClient,
    proto::report_client::ReportClient, proto::report_request::Subject,
};

fn status_error(s: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the collector answered {:?}: {}", s.code(), s.message())
}

/// Streams matching records to stdout until the stream ends (or forever with --follow); with
/// --top, the live counters instead.
pub async fn observe(args: ObserveArgs) -> anyhow::Result<()> {
    let now = monitor_record::time::unix_now_ns();
    let req = ObserveRequest {
        kind: args.kind,
        rule: args.rule,
        namespace: args.namespace.unwrap_or_default(),
        pod: args.pod.unwrap_or_default(),
        service: args.service.unwrap_or_default(),
        min_severity: args.severity.unwrap_or_default(),
        since_unix_nano: args
            .since
            .map(|s| parse_when("--since", &s, now))
            .transpose()?
            .unwrap_or(0),
        until_unix_nano: args
            .until
            .as_deref()
            .map(|s| parse_when("--until", s, now))
            .transpose()?
            .unwrap_or(0),
        follow: args.follow || (args.top && args.until.is_none()),
        limit: args.limit.unwrap_or(0),
        node: args.node.unwrap_or_default(),
    };
    let format = args.output.unwrap_or(if std::io::stdout().is_terminal() {
        ObserveFormat::Table
    } else {
        ObserveFormat::Ndjson
    });
    let channel = client::connect(&args.client.collector, &args.client.tls).await?;
    let mut stream = ObserveClient::new(channel)
        .observe(req)
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    if args.top {
        return top(&mut stream).await;
    }
    let mut out = std::io::stdout().lock();
    if format == ObserveFormat::Table {
        writeln!(out, "{}", client::table_header())?;
    }
    while let Some(rec) = stream.message().await.map_err(|s| status_error(&s))? {
        match format {
            ObserveFormat::Table => writeln!(out, "{}", client::table_row(&rec))?,
            ObserveFormat::Ndjson => writeln!(out, "{}", rec.json)?,
            ObserveFormat::Ocsf => {
                let stored = StoredRecord {
                    id: rec.id,
                    node: rec.node,
                    boot_id: rec.boot_id,
                    seq: rec.seq,
                    kind: rec.kind,
                    time_ns: rec.time_unix_nano,
                    json: rec.json,
                };
                let event = ocsf::to_ocsf(&stored, ocsf::DEFAULT_VENDOR);
                writeln!(out, "{event}")?;
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// How often `--top` redraws.
const TOP_EVERY: Duration = Duration::from_secs(1);

/// Counters of one violation rule, for `--top`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Occurrences (an aggregated record counts its `count`).
    pub occurrences: u64,
    /// Violation records.
    pub records: u64,
    /// The highest severity seen.
    pub severity: String,
    /// When the last one happened (Unix ns).
    pub last_ns: i64,
    /// The last one's source → destination and request.
    pub last: String,
}

/// What `--top` counts: records per kind, violations per rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Top {
    /// Records per kind.
    pub kinds: BTreeMap<String, u64>,
    /// Violations per rule.
    pub rules: BTreeMap<String, RuleCounters>,
    /// Time of the newest record (Unix ns).
    pub newest_ns: i64,
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

impl Top {
    /// Counts one record.
    pub fn add(&mut self, r: &monitor_wire::proto::ObservedRecord) {
        *self.kinds.entry(r.kind.clone()).or_default() += 1;
        self.newest_ns = self.newest_ns.max(r.time_unix_nano);
        if r.kind != "violation" {
            return;
        }
        let count = serde_json::from_str::<serde_json::Value>(&r.json)
            .ok()
            .and_then(|v| v.get("count").and_then(serde_json::Value::as_u64))
            .unwrap_or(1);
        let c = self.rules.entry(r.rule.clone()).or_default();
        c.occurrences += count;
        c.records += 1;
        if severity_rank(&r.severity) > severity_rank(&c.severity) {
            c.severity = r.severity.clone();
        }
        if r.time_unix_nano >= c.last_ns {
            c.last_ns = r.time_unix_nano;
            let peer = |p: Option<&monitor_wire::proto::Peer>| {
                p.map_or_else(
                    || "-".to_owned(),
                    |p| match (p.namespace.as_str(), p.pod.as_str(), p.service.as_str()) {
                        (_, "", "") => p.ip.clone(),
                        ("", pod, "") => pod.to_owned(),
                        (ns, "", svc) => format!("{ns}/{svc}"),
                        (ns, pod, _) => format!("{ns}/{pod}"),
                    },
                )
            };
            let request = if r.method.is_empty() {
                String::new()
            } else {
                format!(" {} {}", r.method, r.path)
            };
            c.last = format!(
                "{} -> {}{request}",
                peer(r.source.as_ref()),
                peer(r.destination.as_ref())
            );
        }
    }
}

/// Printable ASCII of `s`, at most `n` characters: a recorded string must not move the cursor.
fn cell(s: &str, n: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if clean.len() <= n {
        clean
    } else {
        format!("{}~", &clean[..n.saturating_sub(1)])
    }
}

/// The `--top` screen for `t`: a summary line, then one row per rule (most occurrences first),
/// every line at most `width` characters. A pure function of its inputs, without escape codes.
pub fn render_top(t: &Top, width: usize) -> String {
    let total: u64 = t.kinds.values().sum();
    let kinds: Vec<String> = t.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let newest = if t.newest_ns > 0 {
        client::rfc3339_secs(t.newest_ns)
    } else {
        "-".to_owned()
    };
    let mut lines = vec![
        format!(
            "records {total} ({}), newest {newest}",
            if kinds.is_empty() {
                "none yet".to_owned()
            } else {
                kinds.join(", ")
            }
        ),
        String::new(),
        format!(
            "{:<24} {:<8} {:>11} {:>8}  {:<20}  LAST",
            "RULE", "SEVERITY", "OCCURRENCES", "RECORDS", "LAST SEEN"
        ),
    ];
    let mut rules: Vec<(&String, &RuleCounters)> = t.rules.iter().collect();
    rules.sort_by(|a, b| b.1.occurrences.cmp(&a.1.occurrences).then(a.0.cmp(b.0)));
    if rules.is_empty() {
        lines.push("(no violations)".to_owned());
    }
    for (rule, c) in rules {
        lines.push(format!(
            "{:<24} {:<8} {:>11} {:>8}  {:<20}  {}",
            cell(rule, 24),
            cell(&c.severity, 8),
            c.occurrences,
            c.records,
            client::rfc3339_secs(c.last_ns),
            cell(&c.last, 200)
        ));
    }
    let mut out = String::new();
    for l in lines {
        out.push_str(&cell(&l, width));
        out.push('\n');
    }
    out
}

/// The terminal's width in columns, when stdout is one.
fn terminal_width() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `ws`, which lives across the call; on a
    // descriptor that is not a terminal it fails and writes nothing.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// Counts the stream's records and redraws [`render_top`] every second (in place on a
/// terminal; once at the end otherwise).
async fn top(
    stream: &mut tonic::Streaming<monitor_wire::proto::ObservedRecord>,
) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal();
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .or_else(terminal_width)
        .unwrap_or(200);
    let mut t = Top::default();
    let mut tick = tokio::time::interval(TOP_EVERY);
    let mut dirty = true;
    let draw = |t: &Top| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        // Home, clear the screen, then the frame.
        write!(out, "\x1b[H\x1b[2J{}", render_top(t, width))?;
        out.flush()?;
        Ok(())
    };
    loop {
        tokio::select! {
            msg = stream.message() => match msg.map_err(|s| status_error(&s))? {
                Some(rec) => {
                    t.add(&rec);
                    dirty = true;
                }
                None => break,
            },
            _ = tick.tick() => {
                if tty && dirty {
                    draw(&t)?;
                    dirty = false;
                }
            }
        }
    }
    if tty {
        draw(&t)?;
    } else {
        print!("{}", render_top(&t, width));
    }
    Ok(())
}

/// Asks for a report and prints it.
pub async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let now = monitor_record::time::unix_now_ns();
    let subject = match (args.path, args.rule, args.pod) {
        (Some(p), _, _) => Subject::Path(p),
        (_, Some(r), _) => Subject::Rule(r),
        (_, _, Some(p)) => Subject::Pod(p),
        _ => anyhow::bail!("give one of --path, --rule or --pod"),
    };
    let range = match (&args.since, &args.until) {
        (None, None) => "everything stored".to_owned(),
        (Some(s), None) => format!("--since {s}"),
        (None, Some(u)) => format!("--until {u}"),
        (Some(s), Some(u)) => format!("--since {s} --until {u}"),
    };
    let req = ReportRequest {
        subject: Some(subject),
        since_unix_nano: args
            .since
            .map(|s| parse_when("--since", &s, now))
            .transpose()?
            .unwrap_or(0),
        until_unix_nano: args
            .until
            .map(|s| parse_when("--until", &s, now))
            .transpose()?
            .unwrap_or(0),
        top: args.top,
    };
    let text = args.output.map_or_else(
        || std::io::stdout().is_terminal(),
        |o| o == OutputFormat::Table,
    );
    let channel = client::connect(&args.client.collector, &args.client.tls).await?;
    let resp = ReportClient::new(channel)
        .report(req)
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    if let Some(file) = &args.html {
        std::fs::write(file, crate::html::render(&resp, &range))
            .with_context(|| format!("--html {}: cannot write the page", file.display()))?;
        eprintln!(
            "report: {}, {} matched; page written to {}",
            resp.subject,
            resp.requests,
            file.display()
        );
        if args.output.is_none() {
            return Ok(());
        }
    }
    let mut out = std::io::stdout().lock();
    if text {
        write!(out, "{}", report::render(&resp))?;
    } else {
        let json =
            serde_json::to_string_pretty(&resp).context("cannot encode the report as JSON")?;
        writeln!(out, "{json}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_wire::proto::{ObservedRecord, Peer};

    fn violation(rule: &str, severity: &str, t: i64, json: &str) -> ObservedRecord {
        ObservedRecord {
            kind: "violation".into(),
            rule: rule.into(),
            severity: severity.into(),
            time_unix_nano: t,
            source: Some(Peer {
                namespace: "vantage".into(),
                pod: "svc-recommendation-engine-04".into(),
                ..Peer::default()
            }),
            destination: Some(Peer {
                namespace: "vantage".into(),
                service: "svc-user-profile-service".into(),
                ..Peer::default()
            }),
            method: "GET".into(),
            path: "/internal/admin/v0/users/lookup".into(),
            json: json.into(),
            ..ObservedRecord::default()
        }
    }

    const T0: i64 = 1_793_628_000_000_000_000; // 2026-11-02T14:00:00Z

    #[test]
    fn top_counts_occurrences_per_rule_and_renders_them_most_first() {
        let mut t = Top::default();
        t.add(&violation("new-edge", "low", T0, "{}"));
        t.add(&violation(
            "undocumented-endpoint",
            "critical",
            T0,
            "{\"count\":1}",
        ));
        t.add(&violation(
            "undocumented-endpoint",
            "critical",
            T0 + 60_000_000_000,
            "{\"count\":41,\"aggregated\":true}",
        ));
        t.add(&ObservedRecord {
            kind: "http".into(),
            time_unix_nano: T0 + 61_000_000_000,
            ..ObservedRecord::default()
        });
        let u = &t.rules["undocumented-endpoint"];
        assert_eq!((u.occurrences, u.records), (42, 2));
        let screen = render_top(&t, 200);
        let want = "\
records 4 (http 1, violation 3), newest 2026-11-02T14:01:01Z

RULE                     SEVERITY OCCURRENCES  RECORDS  LAST SEEN             LAST
undocumented-endpoint    critical          42        2  2026-11-02T14:01:00Z  vantage/svc-recommendation-engine-04 -> vantage/svc-user-profile-service GET /internal/admin/v0/users/lookup
new-edge                 low                1        1  2026-11-02T14:00:00Z  vantage/svc-recommendation-engine-04 -> vantage/svc-user-profile-service GET /internal/admin/v0/users/lookup
";
        assert_eq!(screen, want);
        // Narrow terminals: every line cut to the width.
        assert!(render_top(&t, 40).lines().all(|l| l.len() <= 40));
        assert_eq!(
            render_top(&Top::default(), 80).lines().last(),
            Some("(no violations)")
        );
    }

    #[test]
    fn observe_formats_keep_json_as_ndjson_and_top_excludes_them() {
        use clap::Parser as _;
        let parse = |args: &[&str]| crate::cli::Cli::try_parse_from(args);
        let output = |args: &[&str]| match parse(args).unwrap().command {
            crate::cli::Command::Observe(o) => (o.output, o.top),
            c => panic!("{c:?}"),
        };
        assert_eq!(
            output(&["monitor", "observe", "-o", "json"]),
            (Some(ObserveFormat::Ndjson), false)
        );
        assert_eq!(
            output(&["monitor", "observe", "--output", "ocsf"]),
            (Some(ObserveFormat::Ocsf), false)
        );
        assert_eq!(output(&["monitor", "observe", "--top"]), (None, true));
        assert!(parse(&["monitor", "observe", "--top", "-o", "table"]).is_err());
        assert!(parse(&["monitor", "observe", "-o", "ecs"]).is_err());
    }

    #[test]
    fn top_cells_cannot_carry_escape_codes() {
        let mut t = Top::default();
        let mut v = violation("x\x1b[2Jy", "high", T0, "{}");
        v.path = "/a\x1b]0;owned\x07\n".into();
        t.add(&v);
        let screen = render_top(&t, 300);
        assert!(
            !screen.contains('\x1b') && !screen.contains('\x07'),
            "{screen:?}"
        );
        assert_eq!(screen.lines().count(), 4);
    }
}
