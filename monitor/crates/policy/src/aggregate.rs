//! Aggregation of repeated violations. The first occurrence of each (source, rule, route) in a window is reported at once;
//! repeats within the window are counted and reported as one record when it closes. A new
//! combination is never held back by an older one.

use std::collections::HashMap;

use monitor_record::violation::{Rule, Violation};

/// Aggregation key: (source, rule, route).
type Key = (String, Rule, String);

#[derive(Debug)]
struct Window {
    start_ns: u64,
    repeats: u64,
    last_ns: u64,
    /// The first occurrence, re-emitted with the count at window end.
    sample: Violation,
    first_time: String,
}

/// Aggregates repeats of violations per (source, rule, route) and window.
#[derive(Debug)]
pub struct Aggregator {
    window_ns: u64,
    open: HashMap<Key, Window>,
}

impl Aggregator {
    /// Windows of `window_ns`.
    pub fn new(window_ns: u64) -> Self {
        Self {
            window_ns: window_ns.max(1),
            open: HashMap::new(),
        }
    }

    /// Changes the window length (policy reload); open windows keep their start.
    pub fn set_window(&mut self, window_ns: u64) {
        self.window_ns = window_ns.max(1);
    }

    /// Takes one occurrence at `now_ns` (its `time` already set); returns it if it must be
    /// reported now (the first of its key in the window), or `None` if it was counted.
    pub fn offer(&mut self, source: &str, v: Violation, now_ns: u64) -> Option<Violation> {
        let key = (source.to_owned(), v.rule, v.route.clone());
        match self.open.get_mut(&key) {
            Some(w) if now_ns.saturating_sub(w.start_ns) < self.window_ns => {
                w.repeats += 1;
                w.last_ns = now_ns;
                w.sample.last_seen = v.time.clone();
                None
            }
            _ => {
                self.open.insert(
                    key,
                    Window {
                        start_ns: now_ns,
                        repeats: 0,
                        last_ns: now_ns,
                        first_time: v.time.clone(),
                        sample: v.clone(),
                    },
                );
                Some(v)
            }
        }
    }

    /// Closes windows older than the window length at `now_ns` (or all with `flush`) and
    /// returns one summary per window that saw repeats.
    pub fn close_windows(&mut self, now_ns: u64, flush: bool) -> Vec<Violation> {
        let mut out = Vec::new();
        let window_ns = self.window_ns;
        self.open.retain(|_, w| {
            let expired = flush || now_ns.saturating_sub(w.start_ns) >= window_ns;
            if expired && w.repeats > 0 {
                let mut s = w.sample.clone();
                s.count = w.repeats;
                s.aggregated = true;
                s.first_seen = w.first_time.clone();
                s.time = s.last_seen.clone();
                s.message = format!(
                    "{} (repeated {} more time{} in this window)",
                    s.message,
                    w.repeats,
                    if w.repeats == 1 { "" } else { "s" }
                );
                out.push(s);
            }
            !expired
        });
        out.sort_by(|a, b| a.first_seen.cmp(&b.first_seen));
        out
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use monitor_record::{
        record::Endpoint,
        violation::{PolicyRef, Severity},
    };

    fn v(rule: Rule, route: &str, time: &str) -> Violation {
        Violation {
            rule,
            severity: Severity::High,
            time: time.into(),
            node: "n".into(),
            source: Endpoint::new(None, None, 0),
            destination: Endpoint::new(None, None, 0),
            http: None,
            route: route.into(),
            policy: PolicyRef {
                file: "p.yaml".into(),
                rule: "x".into(),
                line: None,
            },
            message: "m".into(),
            count: 1,
            aggregated: false,
            first_seen: time.into(),
            last_seen: time.into(),
            flow_id: None,
        }
    }

    #[test]
    fn first_occurrence_now_repeats_counted_new_combinations_never_held() {
        let mut a = Aggregator::new(60);
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/x", "t1"), 0)
                .is_some()
        );
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/x", "t2"), 10)
                .is_none()
        );
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/x", "t3"), 20)
                .is_none()
        );
        // Another rule, route or source: reported at once.
        assert!(
            a.offer("p", v(Rule::UndocumentedEndpoint, "/x", "t4"), 21)
                .is_some()
        );
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/y", "t5"), 22)
                .is_some()
        );
        assert!(
            a.offer("q", v(Rule::SensitiveFields, "/x", "t6"), 23)
                .is_some()
        );
        assert!(a.close_windows(59, false).is_empty());
        let sums = a.close_windows(60, false);
        assert_eq!(sums.len(), 1, "{sums:?}");
        assert_eq!((sums[0].count, sums[0].aggregated), (2, true));
        assert_eq!(
            (sums[0].first_seen.as_str(), sums[0].last_seen.as_str()),
            ("t1", "t3")
        );
        // Next window: first occurrence reported at once again.
        assert!(
            a.offer("p", v(Rule::SensitiveFields, "/x", "t7"), 70)
                .is_some()
        );
    }
}
