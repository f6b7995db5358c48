//! What the bench prints: one progress line per run, and the final table (machine, ratios
//! with verdicts, the agent's cost and zero-loss rates, kernel cost, detection latency).

use std::time::Duration;

use super::Variant;
use super::measure::{AgentUse, Detection, KernelCost, Machine, Ratio, Run, Step};
use crate::util;

/// The progress line of one run.
pub(super) fn run_line(r: &Run) -> String {
    format!(
        "  round {} {:<22} wrk {:>8.0} req/s  open-loop p50 {:>6.0} µs p99 {:>7.0} µs  iperf3 {:>6.2} Gbit/s{}",
        r.round,
        r.variant.label(),
        r.wrk.rps,
        r.open_loop.p50_us,
        r.open_loop.p99_us,
        r.iperf_gbps,
        r.agent
            .as_ref()
            .map(|a| format!(
                "  agent {:.1}% CPU, {:.0} rec/s, {:.1} MiB, losses {}, missing {}",
                a.cpu_pct, a.records_per_s, a.rss_peak_mib, a.losses, a.missing
            ))
            .unwrap_or_default()
    )
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; every part of the report named there"
)]
/// The final table.
pub(super) fn table(
    m: &Machine,
    summary: &[Ratio],
    kernel: &KernelCost,
    det: &Detection,
    runs: &[Run],
    steps: &[Step],
    rounds: u32,
    wall: Duration,
) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "machine: Linux {}, {} ({} cores), {} MiB; load (1 min) {:.2} at start, {:.2} at end",
        m.kernel, m.cpu, m.cores, m.memory_mib, m.load_start, m.load_end
    );
    let _ = writeln!(
        t,
        "{rounds} round(s) of A1/K/F/A2 interleaved; A = no program, K = kernel side only \
         (--drain-only), F = full agent"
    );
    let _ = writeln!(
        t,
        "{:<30} {:>12} {:>8} {:>8} {:>10}  {:<16} {:<16}",
        "metric", "A (mean)", "K/A", "F/A", "A/A noise", "K verdict", "F verdict"
    );
    for r in summary {
        let _ = writeln!(
            t,
            "{:<30} {:>12.2} {:>8.3} {:>8.3} {:>9.1}%  {:<16} {:<16}",
            r.metric,
            r.baseline,
            r.k_over_a,
            r.f_over_a,
            r.noise * 100.0,
            r.k_verdict,
            r.f_verdict
        );
    }
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
            join(a.iter().map(|x| x.cpu_pct_per_10k), 1),
            join(a.iter().map(|x| x.rss_peak_mib), 1),
        );
    }
    for st in steps {
        let _ = writeln!(
            t,
            "  step-down {:?}: open loop at {:.0} req/s: {:.0} records/s, losses {}, missing {}",
            st.variant, st.rate, st.records_per_s, st.losses, st.missing
        );
    }
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
    let _ = writeln!(
        t,
        "detection latency (lookup sent → violation on the agent's stdout): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({}/{} detected)",
        det.p50_ms, det.p99_ms, det.max_ms, det.detected, det.sent
    );
    let _ = write!(t, "bench wall time: {}", util::fmt_duration(wall));
    t
}

/// `v` formatted with `prec` decimals, comma-separated.
fn join(v: impl Iterator<Item = f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .collect::<Vec<_>>()
        .join(", ")
}
