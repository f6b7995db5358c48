//! The Prometheus side checked with Prometheus' own tool: the alert rules in
//! `deploy/prometheus/alerts.yaml` load (`promtool check rules`) and behave as their unit tests
//! say (`promtool test rules deploy/prometheus/alerts_test.yaml`); the agent's and the
//! collector's expositions, with every family holding a series, pass `promtool check metrics`;
//! and every metric name the rules use is one the code exports, so a rename in the code cannot
//! leave an alert silently watching nothing.
//!
//! Needs `promtool` (Debian's `prometheus` package; `cargo xtask setup` installs it): the tests
//! fail, rather than skip, without it. No root, no network, no listener: the metrics are built
//! and encoded in-process.

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use monitor_collector::{metrics::CollectorMetrics, metrics::SinkLabel};

use monitor_wire::exporter::Exporter as _;

use monitor_agent::{
    metrics::KindLabel, metrics::LossLabel, metrics::Metrics, metrics::ResultLabel,
    metrics::RuleLabel,
};
use serde_yaml_ng::Value;

const ALERTS: &str = "deploy/prometheus/alerts.yaml";
const ALERTS_TEST: &str = "deploy/prometheus/alerts_test.yaml";

/// Series Prometheus makes itself, which the rules may use besides the code's metrics.
const PROMETHEUS_SERIES: &[&str] = &["up"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the monitor crate sits in the workspace root")
        .to_path_buf()
}

/// Runs promtool in the repository root, feeding `stdin` if given.
fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}); `cargo xtask setup` installs Debian's prometheus \
                 package for promtool"
            )
        });
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes())
            .expect("writing the exposition to promtool");
    }
    child.wait_with_output().expect("waiting for promtool")
}

fn output_text(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The agent's metrics with a series in every family.
fn agent_exposition() -> String {
    let m = Metrics::new();
    m.record("http");
    m.records.get_or_create(&KindLabel { kind: "flow" }).inc();
    m.lost
        .get_or_create(&LossLabel {
            stage: "kernel".into(),
            reason: "ringbuf-full".into(),
        })
        .inc_by(2);
    m.lost
        .get_or_create(&LossLabel {
            stage: "spool".into(),
            reason: "cap".into(),
        })
        .inc();
    m.policy_reloads
        .get_or_create(&ResultLabel {
            result: "failed".into(),
        })
        .inc();
    m.policy_last_reload_successful.set(0);
    m.violations
        .get_or_create(&RuleLabel {
            rule: "undocumented-endpoint",
            severity: "high",
        })
        .inc();
    m.attached.set(1);
    m.quarantined_pods.set(1);
    m.spool_bytes.set(4096);
    m.spool_max_bytes.set(256 << 20);
    m.delivery_connected.set(1);
    m.delivered.inc_by(10);
    m.delivery_errors.inc();
    m.encode()
}

/// The collector's metrics with a series in every family.
fn collector_exposition() -> String {
    let m = CollectorMetrics::new();
    m.ingested(10, 1);
    m.batches.inc();
    m.store_errors.inc();
    m.agents_connected.set(2);
    m.sequence_gaps.inc_by(3);
    m.tls_handshake_failures.inc();
    let sink = SinkLabel {
        sink: "ndjson:/var/log/monitor/records.ndjson".into(),
    };
    m.sink_delivered.get_or_create(&sink).inc_by(10);
    m.sink_errors.get_or_create(&sink).inc();
    m.sink_lag.get_or_create(&sink).set(5);
    m.encode()
}

/// The family name of a `# HELP`/`# TYPE`/`# UNIT` line.
fn meta_name(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("# ")?;
    let (kind, rest) = rest.split_once(' ')?;
    matches!(kind, "HELP" | "TYPE" | "UNIT").then_some(())?;
    let name = rest.split(' ').next()?;
    Some((kind, name))
}

/// The metric name of a sample line.
fn sample_name(line: &str) -> Option<&str> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    line.split(['{', ' ']).next()
}

/// promtool 2.42 reads the Prometheus text format (0.0.4), not OpenMetrics: there a counter
/// family is named without `_total` and its samples with it, which the 0.0.4 parser takes for
/// two families (and reports "no help text"). Prometheus scraping OpenMetrics stores the
/// samples as `NAME_total` under that family's HELP and TYPE, which is what the 0.0.4 form
/// below says; `# UNIT` and `# EOF` have no 0.0.4 equivalent.
fn to_text_format(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        match meta_name(line) {
            Some(("UNIT", _)) => continue,
            Some((kind, name)) if counters.contains(name) => {
                let rest = &line[format!("# {kind} {name}").len()..];
                out.push_str(&format!("# {kind} {name}_total{rest}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The names registered in a metrics source file (`registry.register("name", ...)`), with the
/// registry's prefix.
fn registered_names(source: &str, prefix: &str) -> BTreeSet<String> {
    let path = repo_root().join(source);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.split(".register(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(format!("{prefix}_{}", rest.split('"').next()?))
        })
        .collect()
}

/// Fails unless every metric registered in `source` is in the exposition (prometheus-client
/// leaves out a family with no series, which would then escape the lint and the rules check:
/// give it one in this test), and promtool's lint prints nothing.
fn assert_lint_clean(source: &str, prefix: &str, openmetrics: &str) {
    let families: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(meta_name)
        .map(|(_, n)| n)
        .collect();
    let registered = registered_names(source, prefix);
    assert!(
        !registered.is_empty(),
        "no registry.register calls found in {source}"
    );
    for name in &registered {
        assert!(
            families.contains(name.as_str()),
            "{name} (registered in {source}) has no series in the exposition; give it one in \
             this test so it is linted and known to the rules check\n{openmetrics}"
        );
    }
    let text = to_text_format(openmetrics);
    let out = promtool(&["check", "metrics"], Some(&text));
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{source}: promtool check metrics reports problems with these names:\n{}\n\
         exposition as linted:\n{text}",
        output_text(&out)
    );
}

#[test]
fn agent_metrics_pass_promtool_lint() {
    assert_lint_clean(
        "monitor/crates/agent/src/metrics.rs",
        "monitor",
        &agent_exposition(),
    );
}

#[test]
fn collector_metrics_pass_promtool_lint() {
    assert_lint_clean(
        "monitor/crates/collector/src/metrics.rs",
        "monitor_collector",
        &collector_exposition(),
    );
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = promtool(&["check", "rules", ALERTS], None);
    assert!(
        out.status.success(),
        "promtool check rules {ALERTS} failed:\n{}",
        output_text(&out)
    );
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let out = promtool(&["test", "rules", ALERTS_TEST], None);
    assert!(
        out.status.success(),
        "promtool test rules {ALERTS_TEST} failed:\n{}",
        output_text(&out)
    );
}

fn load_rules() -> Vec<Value> {
    let path = repo_root().join(ALERTS);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let groups = doc["groups"].as_sequence().expect("a `groups` list");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn every_metric_in_the_rules_is_exported() {
    let exported: BTreeSet<String> = [agent_exposition(), collector_exposition()]
        .iter()
        .flat_map(|t| t.lines().filter_map(sample_name).map(str::to_owned))
        .collect();
    let rules = load_rules();
    assert!(!rules.is_empty(), "{ALERTS} holds no rules");
    let mut missing = Vec::new();
    for rule in &rules {
        let name = rule["alert"].as_str().or(rule["record"].as_str());
        let expr = rule["expr"].as_str().expect("every rule has an expr");
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{name:?}: no metric found in {expr:?}");
        for metric in names {
            if !exported.contains(&metric) && !PROMETHEUS_SERIES.contains(&metric.as_str()) {
                missing.push(format!("{}: {metric}", name.unwrap_or("?")));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{ALERTS} uses metrics the code does not export (a counter's series is NAME_total):\n  \
         {}\nexported: {exported:?}",
        missing.join("\n  ")
    );
}

#[test]
fn every_alert_has_for_severity_and_annotations() {
    for rule in load_rules() {
        let Some(alert) = rule["alert"].as_str() else {
            continue;
        };
        assert!(rule["for"].as_str().is_some(), "{alert}: no `for`");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{alert}: severity {severity:?}, expected warning or critical"
        );
        for key in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{alert}: no `{key}` annotation"
            );
        }
        let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_default();
        assert!(
            runbook.starts_with("deploy/README.md#"),
            "{alert}: runbook {runbook:?} should point at a section of deploy/README.md"
        );
    }
}

/// PromQL words that look like identifiers but are not metric names; aggregations are here
/// because `sum by (x) (...)` puts a word, not `(`, after them.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers
/// (`{...}`), ranges (`[...]`) and grouping lists (`by (...)`, `on (...)`, ...), that are not
/// keywords and not followed by `(` (functions, aggregations).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_parens = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if matches!(chars[i], '"' | '\'' | '`') {
                        let q = chars[i];
                        i += 1;
                        while i < chars.len() && chars[i] != q {
                            i += if chars[i] == '\\' { 2 } else { 1 };
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_parens => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                skip_parens = false;
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations (`0.8`, `5m`, `1e3`, `0x1f`).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    skip_parens = next == Some(&'(');
                } else if !KEYWORDS.contains(&word.as_str()) && next != Some(&'(') {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"sum by (job, instance) (increase(monitor_lost_total{stage="x{y}"}[5m] offset 1h)) > 0.8
           or on (instance) group_left (node) (monitor_a / (monitor_b > 0) unless monitor_c offset 5m)
           and up{job=~"(.+/)?monitor-agent"} == bool 1e3 or absent(monitor_d)"#,
    );
    let expected: BTreeSet<String> = [
        "monitor_lost_total",
        "monitor_a",
        "monitor_b",
        "monitor_c",
        "up",
        "monitor_d",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);
}
