//! The bench's statistics: per-round ratios to the round's no-program baseline, their mean
//! with a 95% confidence interval, the A/A noise band, and the verdicts.
//!
//! For each metric and round, the baseline is the mean of the round's A1 and A2, and each
//! other variant's ratio is its value over that baseline (so a drift of the machine between
//! rounds cancels; within a round the order alternates). Over the rounds, a variant's ratio
//! is the mean of its per-round ratios ± t(0.975, n−1)·s/√n (Student's t: the per-round ratios
//! are few and their spread is estimated from them).
//!
//! The A/A band is the same interval for A2/A1, read as the largest distance from 1 it allows:
//! |mean − 1| + t·s/√n (with one round, |A2/A1 − 1|). It is what the bench cannot tell from
//! noise. A verdict is `better` or `worse` only if the variant's interval excludes 1 *and* its
//! ratio is farther from 1 than the band; otherwise `inconclusive`.

use serde::Serialize;

use super::Variant;
use super::measure::Run;

/// t(0.975, df) for df = 1..=30 (two-sided 95%).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// Student's t quantile for a two-sided 95% interval with `df` degrees of freedom (NaN for 0).
pub(super) fn t975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T975[df - 1],
        31..=40 => 2.021,
        41..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// A mean with its 95% confidence half-width.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Mean of the values (NaN if none).
    pub mean: f64,
    /// t·s/√n (NaN with fewer than two values).
    pub half: f64,
    /// How many values.
    pub n: usize,
}

impl Interval {
    /// The interval of `values`.
    pub(super) fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self {
                mean: f64::NAN,
                half: f64::NAN,
                n,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let half = if n < 2 {
            f64::NAN
        } else {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            t975(n - 1) * (var / n as f64).sqrt()
        };
        Self { mean, half, n }
    }

    /// Whether the interval contains `x` (false without a half-width).
    pub(super) fn contains(&self, x: f64) -> bool {
        self.half.is_finite() && (self.mean - x).abs() <= self.half
    }

    /// The A/A band of an interval of A2/A1 ratios: the largest distance from 1 it allows.
    pub(super) fn band(&self) -> f64 {
        if self.half.is_finite() {
            (self.mean - 1.0).abs() + self.half
        } else {
            (self.mean - 1.0).abs()
        }
    }
}

/// `inconclusive` if `ratio` is within `band` of 1 or its interval contains 1, else how much
/// better or worse (`n/a` without a ratio).
pub(super) fn verdict(ratio: &Interval, band: f64, higher_is_better: bool) -> String {
    let r = ratio.mean;
    if !r.is_finite() || !band.is_finite() {
        return "n/a".to_owned();
    }
    if (r - 1.0).abs() <= band || ratio.contains(1.0) {
        return "inconclusive".to_owned();
    }
    let better = (r > 1.0) == higher_is_better;
    format!(
        "{:+.1}% {}",
        (r - 1.0) * 100.0,
        if better { "better" } else { "worse" }
    )
}

/// One variant against the baseline, for one metric.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    /// K, F, P1 or P2.
    pub variant: Variant,
    /// Mean of its values, in the metric's unit.
    pub value: f64,
    /// Its ratio to the baseline over the rounds, with the 95% interval.
    pub ratio: Interval,
    /// The per-round ratios.
    pub per_round: Vec<f64>,
    /// better / worse / inconclusive.
    pub verdict: String,
}

/// One compared metric over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// Metric name.
    pub metric: &'static str,
    /// Whether a larger value is better (throughput) or worse (latency, cost).
    pub higher_is_better: bool,
    /// Mean of the A runs (the baseline), in the metric's unit.
    pub baseline: f64,
    /// A2/A1 per round.
    pub a_over_a: Vec<f64>,
    /// A2/A1 over the rounds, with the 95% interval.
    pub aa: Interval,
    /// The A/A band (see the module's doc).
    pub band: f64,
    /// K, F, P1, P2 (those that ran).
    pub variants: Vec<Compared>,
}

impl Metric {
    /// The comparison of `v`, if it ran.
    pub(super) fn of(&self, v: Variant) -> Option<&Compared> {
        self.variants.iter().find(|c| c.variant == v)
    }
}

/// Reads one metric from a run (`None` if that run does not have it).
type Get = fn(&Run) -> Option<f64>;

/// The metrics compared, in the table's order: the headline first.
pub(super) const METRICS: [(&str, bool, Get); 6] = [
    ("CPU per request (µs, lab + observer)", false, |r| {
        (!r.cpu.disturbed).then_some(r.cpu.per_request_us)
    }),
    ("wrk requests/s", true, |r| Some(r.wrk.rps)),
    ("open-loop p99 latency (µs)", false, |r| {
        Some(r.open_loop.p99_us)
    }),
    ("open-loop p50 latency (µs)", false, |r| {
        Some(r.open_loop.p50_us)
    }),
    ("node CPU per request (µs, all processes)", false, |r| {
        (!r.cpu.disturbed).then_some(r.cpu.node_per_request_us)
    }),
    ("iperf3 throughput (Gbit/s)", true, |r| r.iperf_gbps),
];

/// The variants compared with the baseline.
pub(super) const COMPARED: [Variant; 4] = [Variant::K, Variant::F, Variant::P1, Variant::P2];

/// One [`Metric`] per entry of [`METRICS`], over the rounds that have both A runs.
pub(super) fn summarize(runs: &[Run]) -> Vec<Metric> {
    let mut rounds: Vec<u32> = runs.iter().map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    METRICS
        .iter()
        .map(|&(metric, higher_is_better, get)| {
            let of = |round: u32, v: Variant| {
                runs.iter()
                    .find(|r| r.round == round && r.variant == v)
                    .and_then(get)
                    .filter(|x| x.is_finite())
            };
            let (mut base, mut aa) = (Vec::new(), Vec::new());
            let mut per: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); COMPARED.len()];
            for &round in &rounds {
                let (Some(a1), Some(a2)) = (of(round, Variant::A1), of(round, Variant::A2)) else {
                    continue;
                };
                let a = (a1 + a2) / 2.0;
                if a <= 0.0 || a1 <= 0.0 {
                    continue;
                }
                base.push(a);
                aa.push(a2 / a1);
                for (i, &v) in COMPARED.iter().enumerate() {
                    if let Some(x) = of(round, v) {
                        per[i].0.push(x);
                        per[i].1.push(x / a);
                    }
                }
            }
            let aa_int = Interval::of(&aa);
            let band = aa_int.band();
            let variants = COMPARED
                .iter()
                .zip(per)
                .filter(|(_, (values, _))| !values.is_empty())
                .map(|(&variant, (values, ratios))| {
                    let ratio = Interval::of(&ratios);
                    Compared {
                        variant,
                        value: Interval::of(&values).mean,
                        verdict: verdict(&ratio, band, higher_is_better),
                        ratio,
                        per_round: ratios,
                    }
                })
                .collect();
            Metric {
                metric,
                higher_is_better,
                baseline: Interval::of(&base).mean,
                a_over_a: aa,
                aa: aa_int,
                band,
                variants,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn t_quantiles() {
        assert!(t975(0).is_nan());
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(9), 2.262);
        assert_eq!(t975(30), 2.042);
        assert_eq!(t975(35), 2.021);
        assert_eq!(t975(1000), 1.960);
    }

    #[test]
    fn intervals() {
        // mean 1.02, sample sd 0.02 (values 1.00, 1.02, 1.04), n = 3: t(2) = 4.303.
        let i = Interval::of(&[1.00, 1.02, 1.04]);
        assert!(close(i.mean, 1.02));
        assert!(close(i.half, 4.303 * 0.02 / 3f64.sqrt()));
        assert_eq!(i.n, 3);
        assert!(i.contains(1.0) && !i.contains(1.08));
        assert!(close(i.band(), 0.02 + i.half));
        let one = Interval::of(&[0.97]);
        assert!(one.half.is_nan() && !one.contains(0.97));
        assert!(close(one.band(), 0.03));
        assert!(Interval::of(&[]).mean.is_nan());
    }

    #[test]
    fn verdicts() {
        let tight = |m: f64| Interval {
            mean: m,
            half: 0.005,
            n: 10,
        };
        // Outside the band and the interval excludes 1.
        assert_eq!(verdict(&tight(1.10), 0.02, false), "+10.0% worse");
        assert_eq!(verdict(&tight(0.90), 0.02, true), "-10.0% worse");
        assert_eq!(verdict(&tight(0.90), 0.02, false), "-10.0% better");
        assert_eq!(verdict(&tight(1.05), 0.02, true), "+5.0% better");
        // Within the band.
        assert_eq!(verdict(&tight(1.015), 0.02, false), "inconclusive");
        // Outside the band, but the interval contains 1.
        let wide = Interval {
            mean: 1.05,
            half: 0.06,
            n: 3,
        };
        assert_eq!(verdict(&wide, 0.02, false), "inconclusive");
        // One round: no interval, the band alone decides.
        let single = Interval {
            mean: 1.30,
            half: f64::NAN,
            n: 1,
        };
        assert_eq!(verdict(&single, 0.2, false), "+30.0% worse");
        assert_eq!(verdict(&tight(f64::NAN), 0.02, false), "n/a");
        assert_eq!(verdict(&tight(1.1), f64::NAN, false), "n/a");
    }

    fn run(round: u32, variant: Variant, cpu_us: f64, rps: f64) -> Run {
        use super::super::measure::Wrk;
        use super::super::{CpuUse, OpenLoopReport};
        Run {
            round,
            variant,
            cpu: CpuUse {
                lab_us: cpu_us * 1e4,
                client_us: 0.0,
                server_us: 0.0,
                observer_us: 0.0,
                requests: 10_000,
                per_request_us: cpu_us,
                node_us: 0.0,
                node_per_request_us: cpu_us,
                self_us: 0.0,
                other_us: 0.0,
                wall_s: 5.0,
                disturbed: false,
                attempts: 1,
            },
            open_loop: OpenLoopReport {
                rate: 2000.0,
                scheduled: 10_000,
                ok: 10_000,
                errors: 0,
                p50_us: 100.0,
                p90_us: 150.0,
                p99_us: 200.0,
                max_us: 300.0,
                late: 0,
                achieved_rps: 2000.0,
            },
            wrk: Wrk {
                rps,
                requests: 0,
                served: 0,
            },
            iperf_gbps: (!matches!(variant, Variant::P1)).then_some(10.0),
            agent: None,
            peer: None,
        }
    }

    #[test]
    fn summary_over_rounds() {
        use Variant::{A1, A2, F, K, P1};
        // Round 1: A = (50 + 52)/2 = 51; round 2: A = (60 + 60)/2 = 60 (the machine drifted
        // between rounds; the per-round ratios do not see it). K costs 10% in both rounds;
        // F 20% and 24%; P1 runs in round 1 only. Round 3 has no A2: left out.
        let runs = vec![
            run(1, A1, 50.0, 1000.0),
            run(1, K, 56.1, 900.0),
            run(1, F, 61.2, 800.0),
            run(1, P1, 102.0, 500.0),
            run(1, A2, 52.0, 1000.0),
            run(2, A2, 60.0, 1000.0),
            run(2, F, 74.4, 800.0),
            run(2, K, 66.0, 900.0),
            run(2, A1, 60.0, 1000.0),
            run(3, A1, 10.0, 1.0),
            run(3, K, 99.0, 1.0),
        ];
        let s = summarize(&runs);
        assert_eq!(s.len(), METRICS.len());
        let cpu = &s[0];
        assert!(cpu.metric.starts_with("CPU per request"));
        assert!(close(cpu.baseline, 55.5));
        assert_eq!(cpu.a_over_a.len(), 2);
        assert!(close(cpu.a_over_a[0], 1.04) && close(cpu.a_over_a[1], 1.0));
        // A/A: mean 1.02, sd 0.02828, t(1) = 12.706: half 0.2541; band 0.02 + 0.2541.
        let half = 12.706 * (0.0008f64 / 2.0).sqrt();
        assert!(close(cpu.aa.half, half));
        assert!(close(cpu.band, 0.02 + half));
        let k = cpu.of(K).unwrap();
        assert!(close(k.ratio.mean, 1.1) && close(k.ratio.half, 0.0));
        assert_eq!(k.per_round.len(), 2);
        // K is 10% worse with no spread at all, but the band (27%) is wider: inconclusive.
        assert_eq!(k.verdict, "inconclusive");
        let f = cpu.of(F).unwrap();
        assert!(close(f.ratio.mean, 1.22));
        assert!(close(f.value, (61.2 + 74.4) / 2.0));
        let p1 = cpu.of(P1).unwrap();
        assert!(close(p1.ratio.mean, 2.0) && p1.ratio.half.is_nan() && p1.ratio.n == 1);
        assert_eq!(p1.verdict, "+100.0% worse");
        assert!(cpu.of(Variant::P2).is_none());
        // wrk: A/A exactly 1 in both rounds: band 0; K's 0.9 in both: conclusive.
        let wrk = &s[1];
        assert!(close(wrk.band, 0.0));
        assert_eq!(wrk.of(K).unwrap().verdict, "-10.0% worse");
        // iperf3 is not measured under P1.
        let iperf = s.iter().find(|m| m.metric.starts_with("iperf3")).unwrap();
        assert!(iperf.of(P1).is_none() && iperf.of(K).is_some());
        // A disturbed phase is left out of the CPU figures only.
        let mut disturbed = runs.clone();
        disturbed[1].cpu.disturbed = true;
        let s = summarize(&disturbed);
        assert_eq!(s[0].of(K).unwrap().per_round.len(), 1);
        assert_eq!(s[1].of(K).unwrap().per_round.len(), 2);
    }
}
