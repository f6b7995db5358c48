//! What the bench prints: one progress line per run, and the final table (machine and
//! settings; A, K, F, P1, P2 with CPU per request, wrk and p99 as ratios ± 95% CI with
//! verdicts; the other metrics; the agent's cost and zero-loss rates; the peers' output;
//! kernel cost; detection latency).

use std::fmt::Write as _;
use std::time::Duration;

use super::measure::{AgentUse, Detection, KernelCost, Machine, Run, Step};
use super::stats::{Interval, Metric};
use super::{BenchOptions, Variant};
use crate::util;

/// The progress line of one run.
pub(super) fn run_line(r: &Run) -> String {
    let mut line = format!(
        "  round {} {:<22} CPU {:>6.2} µs/req (client {:>4.0} server {:>4.0} observer {:>4.0} ms; node {:>5.0} ms)  p50 {:>5.0} µs p99 {:>6.0} µs  wrk {:>6.0} req/s",
        r.round,
        r.variant.label(),
        r.cpu.per_request_us,
        r.cpu.client_us / 1e3,
        r.cpu.server_us / 1e3,
        r.cpu.observer_us / 1e3,
        r.cpu.node_us / 1e3,
        r.open_loop.p50_us,
        r.open_loop.p99_us,
        r.wrk.rps,
    );
    if let Some(g) = r.iperf_gbps {
        let _ = write!(line, "  iperf3 {g:.2} Gbit/s");
    }
    if let Some(a) = &r.agent {
        let _ = write!(
            line,
            "  agent {:.1}% CPU, {:.0} rec/s, {:.1} MiB, losses {}, missing {}",
            a.cpu_pct, a.records_per_s, a.rss_peak_mib, a.losses, a.missing
        );
    }
    if let Some(p) = &r.peer {
        let _ = write!(line, "  {}", peer_text(r.variant, p));
    }
    line
}

/// What a peer's run produced.
fn peer_text(v: Variant, p: &super::PeerUse) -> String {
    let mib = p.bytes_written as f64 / (1 << 20) as f64;
    match v {
        Variant::P2 => format!(
            "tcpdump {} packets, {} dropped, {mib:.1} MiB",
            p.packets_captured.unwrap_or(0),
            p.packets_dropped.unwrap_or(0)
        ),
        _ => format!(
            "access log {} lines, {mib:.1} MiB",
            p.access_log_lines.unwrap_or(0)
        ),
    }
}

/// `1.064±0.010`, or `1.064` without an interval, `-` without a ratio.
fn ratio_text(i: &Interval) -> String {
    if !i.mean.is_finite() {
        "-".to_owned()
    } else if i.half.is_finite() {
        format!("{:.3}±{:.3}", i.mean, i.half)
    } else {
        format!("{:.3}", i.mean)
    }
}

/// A value with a precision that suits its size.
fn value_text(v: f64) -> String {
    if !v.is_finite() {
        "-".to_owned()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The three columns of one metric for one row: value, ratio ± CI, verdict (for the A row:
/// the baseline, A2/A1 ± CI, the band).
fn cells(m: Option<&Metric>, v: Option<Variant>) -> (String, String, String) {
    let dash = || ("-".to_owned(), "-".to_owned(), String::new());
    let Some(m) = m else { return dash() };
    match v {
        None => (
            value_text(m.baseline),
            format!("A/A {}", ratio_text(&m.aa)),
            if m.band.is_finite() {
                format!("band {:.1}%", m.band * 100.0)
            } else {
                "band n/a".to_owned()
            },
        ),
        Some(v) => match m.of(v) {
            Some(c) => (value_text(c.value), ratio_text(&c.ratio), c.verdict.clone()),
            None => dash(),
        },
    }
}

/// The main table: A, then each compared variant that ran; CPU per request, wrk requests/s
/// and open-loop p99, each as value, ratio ± CI and verdict.
pub(super) fn main_table(summary: &[Metric]) -> String {
    let find = |prefix: &str| summary.iter().find(|m| m.metric.starts_with(prefix));
    let cols = [find("CPU per request"), find("wrk"), find("open-loop p99")];
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<22} | {:>9} {:<19} {:<14} | {:>8} {:<19} {:<14} | {:>7} {:<19} {:<14}",
        "variant",
        "CPU µs/req",
        "ratio ± 95% CI",
        "verdict",
        "wrk req/s",
        "ratio ± 95% CI",
        "verdict",
        "p99 µs",
        "ratio ± 95% CI",
        "verdict"
    );
    let mut rows: Vec<(String, Option<Variant>)> = vec![("A (no program)".to_owned(), None)];
    for v in super::stats::COMPARED {
        if cols.iter().flatten().any(|m| m.of(v).is_some()) {
            rows.push((v.label().to_owned(), Some(v)));
        }
    }
    for (label, v) in rows {
        let _ = write!(t, "{label:<22}");
        for (m, w) in cols.iter().zip([10, 9, 7]) {
            let (value, ratio, verdict) = cells(*m, v);
            let _ = write!(t, " | {value:>w$} {ratio:<19} {verdict:<14}");
        }
        t.truncate(t.trim_end().len());
        t.push('\n');
    }
    t
}

/// How quiet the node was during the open-loop phases: the others' load (median, max), the
/// phases run again and those left out.
fn phases_line(runs: &[Run], quiet: f64, gave_up: bool) -> String {
    let mut other: Vec<f64> = runs.iter().map(|r| r.cpu.other_cores() * 100.0).collect();
    if other.is_empty() {
        return String::new();
    }
    other.sort_by(f64::total_cmp);
    let repeated = runs.iter().filter(|r| r.cpu.attempts > 1).count();
    let disturbed = runs.iter().filter(|r| r.cpu.disturbed).count();
    format!(
        "open-loop phases: {}; other load on the node (besides lab, observer, bench) median {:.0}%, max {:.0}% of a core; {}\n",
        runs.len(),
        other[other.len() / 2],
        other[other.len() - 1],
        if quiet.is_finite() {
            format!(
                "quiet threshold {:.0}%: {repeated} run again, {disturbed} disturbed on every attempt (left out of the CPU figures){}",
                quiet * 100.0,
                if gave_up {
                    "; the node did not get quiet, so later phases count as they were (disturbed)"
                } else {
                    ""
                }
            )
        } else {
            "no quiet threshold (every phase counted)".to_owned()
        }
    )
}

/// One line per metric not in the main table: baseline, band, each variant's ratio and
/// verdict.
fn other_metrics(summary: &[Metric]) -> String {
    let mut t = String::new();
    for m in summary.iter().filter(|m| {
        !(m.metric.starts_with("CPU per request")
            || m.metric.starts_with("wrk")
            || m.metric.starts_with("open-loop p99"))
    }) {
        let (value, ratio, band) = cells(Some(m), None);
        let mut line = format!("{}: A {value} ({ratio}, {band})", m.metric);
        for c in &m.variants {
            let _ = write!(
                line,
                "; {:?} {} {}",
                c.variant,
                ratio_text(&c.ratio),
                c.verdict
            );
        }
        let _ = writeln!(t, "{line}");
    }
    t
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; every part of the report named there"
)]
/// The final table.
pub(super) fn table(
    m: &Machine,
    opts: &BenchOptions,
    summary: &[Metric],
    kernel: Option<&KernelCost>,
    det: Option<&Detection>,
    runs: &[Run],
    steps: &[Step],
    rounds: u32,
    gave_up: bool,
    wall: Duration,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "machine: Linux {}, {} ({} cores), {} MiB; load (1 min) {:.2} at start, {:.2} at end",
        m.kernel, m.cpu, m.cores, m.memory_mib, m.load_start, m.load_end
    );
    let mut order = vec!["A1", "K", "F"];
    if runs.iter().any(|r| r.variant == Variant::P1) {
        order.extend(["P1", "P2"]);
    }
    order.push("A2");
    let _ = writeln!(
        t,
        "{rounds} round(s) of {} interleaved (even rounds reversed); open loop {} req/s for {} s \
         over {} connections{}",
        order.join("/"),
        opts.rate,
        opts.open_loop.as_secs_f64(),
        opts.conns,
        m.pinning.as_ref().map_or_else(
            || ", not pinned".to_owned(),
            |p| format!(
                ", pinned: lab (client, nginx, proxy) on CPU {}, observer (agent, tcpdump) and bench on CPU {}",
                p.lab, p.observer
            )
        )
    );
    let _ = writeln!(
        t,
        "A = no program; K = kernel side only (--drain-only); F = full agent; P1 = haproxy \
         (mode http, httplog to a file) in front of nginx; P2 = tcpdump -s 0 -w on the server \
         pod's veth"
    );
    let _ = writeln!(
        t,
        "CPU/req = (lab cgroup + observer) CPU over the open-loop phase / requests; ratio = mean \
         of per-round ratios to the round's A ± t·s/√n; A/A band = |A2/A1 - 1| + its CI; \
         inconclusive within the band or when the CI contains 1"
    );
    t.push_str(&phases_line(runs, opts.quiet, gave_up));
    t.push_str(&main_table(summary));
    t.push_str(&other_metrics(summary));
    let agent = |v: Variant| -> Vec<&AgentUse> {
        runs.iter()
            .filter(|r| r.variant == v)
            .filter_map(|r| r.agent.as_ref())
            .collect()
    };
    for (v, what) in [
        (Variant::K, "drain-only (ring records)"),
        (Variant::F, "full agent (http records)"),
    ] {
        let a = agent(v);
        if a.is_empty() {
            continue;
        }
        let zero: Vec<&&AgentUse> = a
            .iter()
            .filter(|x| x.losses == 0 && x.missing <= 0)
            .collect();
        let best = zero.iter().map(|x| x.records_per_s).fold(0.0, f64::max);
        let stepped = steps
            .iter()
            .filter(|st| st.variant == v && st.losses == 0 && st.missing <= 0)
            .map(|st| st.records_per_s)
            .fold(0.0, f64::max);
        let lossy: Vec<String> = a
            .iter()
            .filter(|x| x.losses > 0 || x.missing > 0)
            .map(|x| {
                format!(
                    "{:.0}/s lost {} missing {}",
                    x.records_per_s, x.losses, x.missing
                )
            })
            .collect();
        let _ = writeln!(
            t,
            "{what}: highest zero-loss rate {} records/s{}; CPU {} % of a core per 10k records/s; peak RSS {} MiB",
            if !zero.is_empty() {
                format!("≥ {best:.0} (wrk at full rate: no loss)")
            } else if stepped > 0.0 {
                format!("{stepped:.0} (open-loop step down)")
            } else {
                "not found".to_owned()
            },
            if lossy.is_empty() {
                String::new()
            } else {
                format!(" (loss in: {})", lossy.join(", "))
            },
            span(a.iter().map(|x| x.cpu_pct_per_10k)),
            span(a.iter().map(|x| x.rss_peak_mib)),
        );
    }
    for st in steps {
        let _ = writeln!(
            t,
            "  step-down {:?}: open loop at {:.0} req/s: {:.0} records/s, losses {}, missing {}",
            st.variant, st.rate, st.records_per_s, st.losses, st.missing
        );
    }
    for v in [Variant::P1, Variant::P2] {
        let texts: Vec<String> = runs
            .iter()
            .filter(|r| r.variant == v)
            .filter_map(|r| r.peer.as_ref().map(|p| peer_text(v, p)))
            .collect();
        if let Some(last) = texts.last() {
            let _ = writeln!(
                t,
                "{}: per run (open loop + wrk): {last} in the last of {} runs",
                v.label(),
                texts.len()
            );
        }
    }
    if let Some(kernel) = kernel {
        let _ = writeln!(
            t,
            "kernel (bpf_stats, full agent, under wrk): {:.0} ns per program run (= per packet per hook), {:.1} runs per request; {}",
            kernel.ns_per_run,
            kernel.runs_per_request,
            kernel
                .programs
                .iter()
                .map(|(n, c, ns)| format!("{n} {c} runs {ns:.0} ns"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(det) = det {
        let _ = writeln!(
            t,
            "detection latency (lookup sent → violation on the agent's stdout): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({}/{} detected)",
            det.p50_ms, det.p99_ms, det.max_ms, det.detected, det.sent
        );
    }
    let _ = write!(t, "bench wall time: {}", util::fmt_duration(wall));
    t
}

/// `min-max` of the values with one decimal (`x` if they are all equal, `-` if none).
fn span(v: impl Iterator<Item = f64>) -> String {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !lo.is_finite() {
        "-".to_owned()
    } else if format!("{lo:.1}") == format!("{hi:.1}") {
        format!("{lo:.1}")
    } else {
        format!("{lo:.1}-{hi:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::Compared;
    use super::*;

    fn interval(mean: f64, half: f64) -> Interval {
        Interval { mean, half, n: 10 }
    }

    fn metric(name: &'static str, baseline: f64, k: Option<(f64, f64, &str)>) -> Metric {
        Metric {
            metric: name,
            higher_is_better: false,
            baseline,
            a_over_a: vec![1.0],
            aa: interval(1.002, 0.011),
            band: 0.013,
            variants: k
                .map(|(value, ratio, verdict)| Compared {
                    variant: Variant::K,
                    value,
                    ratio: interval(ratio, 0.01),
                    per_round: vec![ratio],
                    verdict: verdict.to_owned(),
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn main_table_rows_and_columns() {
        let summary = vec![
            metric(
                "CPU per request (µs, lab + observer)",
                45.25,
                Some((48.1, 1.0625, "+6.2% worse")),
            ),
            metric(
                "wrk requests/s",
                25417.0,
                Some((24000.0, 0.944, "inconclusive")),
            ),
            metric("open-loop p99 latency (µs)", 290.0, None),
        ];
        let t = main_table(&summary);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("variant") && lines[0].contains("CPU µs/req"));
        // The A row: baselines, A/A ratios with their CI, bands.
        assert!(lines[1].starts_with("A (no program)"), "{t}");
        assert!(lines[1].contains("45.25 A/A 1.002±0.011"), "{t}");
        assert!(lines[1].contains("band 1.3%"), "{t}");
        assert!(lines[1].contains("25417 A/A 1.002±0.011"), "{t}");
        assert!(lines[1].contains("290.0 A/A"), "{t}");
        // K: its values, ratios and verdicts; no p99 comparison: dashes.
        assert!(lines[2].starts_with("K (kernel side only)"), "{t}");
        assert!(lines[2].contains("48.10 1.062±0.010"), "{t}");
        assert!(lines[2].contains("+6.2% worse"), "{t}");
        assert!(lines[2].contains("24000 0.944±0.010"), "{t}");
        assert!(lines[2].trim_end().ends_with("- -"), "{t}");
        // The columns line up: every row has its separators at the header's positions.
        let bars = |l: &str| l.char_indices().filter(|(_, c)| *c == '|').count();
        assert!(lines.iter().all(|l| bars(l) == 3), "{t}");
        let at = |l: &str| l.chars().position(|c| c == '|');
        assert_eq!(at(lines[1]), at(lines[0]));
        assert_eq!(at(lines[2]), at(lines[0]));
    }

    #[test]
    fn texts() {
        assert_eq!(ratio_text(&interval(1.0644, 0.0102)), "1.064±0.010");
        assert_eq!(ratio_text(&interval(0.9, f64::NAN)), "0.900");
        assert_eq!(ratio_text(&interval(f64::NAN, f64::NAN)), "-");
        assert_eq!(value_text(25417.4), "25417");
        assert_eq!(value_text(290.04), "290.0");
        assert_eq!(value_text(45.254), "45.25");
        assert_eq!(span([4.8, 3.1, 4.3].into_iter()), "3.1-4.8");
        assert_eq!(span([47.0].into_iter()), "47.0");
        assert_eq!(span(std::iter::empty()), "-");
        let others = other_metrics(&[metric(
            "iperf3 throughput (Gbit/s)",
            14.2,
            Some((14.0, 0.986, "inconclusive")),
        )]);
        assert_eq!(
            others,
            "iperf3 throughput (Gbit/s): A 14.20 (A/A 1.002±0.011, band 1.3%); K 0.986±0.010 \
             inconclusive\n"
        );
    }
}
