//! What the incident must produce, checked against the records the agent wrote (and, seen
//! live, the reload report and the collector's copy): one [`Check`] per checklist line.

use std::time::Duration;

use serde_json::Value;

use super::phases::RELOAD_TIMEOUT;
use super::present::{s, short_message, violations};
use super::scenario::{BACKDOOR_POD, BLOCKED_ATTEMPTS, LOOKUP_ROUTE};
use crate::util;

/// A record's sequence number (0 when absent).
fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or(0)
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Met.
    pub ok: bool,
    /// What was expected, and what was found.
    pub text: String,
}

/// What the incident must produce (the expectations), checked against the records.
pub fn checklist(records: &[Value]) -> Vec<Check> {
    let vs = violations(records);
    let from_backdoor = |v: &&&Value| v["source"]["pod"] == BACKDOOR_POD;
    let mut checks = Vec::new();

    // 1. The first lookup raised undocumented-endpoint and sensitive-fields, from -04.
    let first = records.iter().find(|r| {
        r["kind"] == "http"
            && r["http"]["path"] == LOOKUP_ROUTE
            && r["source"]["pod"] == BACKDOOR_POD
    });
    checks.push(match first {
        None => Check {
            ok: false,
            text: format!("first lookup: no http record of {BACKDOOR_POD} calling {LOOKUP_ROUTE}"),
        },
        Some(h) => {
            let on_it: Vec<&&Value> = vs
                .iter()
                .filter(|v| v["flow_id"] == h["flow_id"] && v["aggregated"] == false)
                .filter(from_backdoor)
                .collect();
            let has = |rule: &str| on_it.iter().find(|v| v["rule"] == rule).map(|v| seq(v));
            let (u, sf) = (has("undocumented-endpoint"), has("sensitive-fields"));
            let show =
                |x: Option<u64>| x.map_or_else(|| "missing".to_owned(), |n| format!("seq {n}"));
            Check {
                ok: u.is_some() && sf.is_some(),
                text: format!(
                    "first lookup (http seq {}, ?state={}) raised undocumented-endpoint ({}) and \
                     sensitive-fields ({}), from {BACKDOOR_POD}",
                    seq(h),
                    h["http"]["query"]
                        .as_str()
                        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("state=")))
                        .unwrap_or("?"),
                    show(u),
                    show(sf)
                ),
            }
        }
    });

    // 2. response-size-anomaly once the baseline allows it.
    let rsa: Vec<&&Value> = vs
        .iter()
        .filter(|v| v["rule"] == "response-size-anomaly")
        .filter(from_backdoor)
        .collect();
    let rsa_total: u64 = rsa.iter().map(|v| v["count"].as_u64().unwrap_or(0)).sum();
    checks.push(Check {
        ok: !rsa.is_empty(),
        text: match rsa.first() {
            Some(v) => format!(
                "response-size-anomaly from {BACKDOOR_POD}: first at seq {}, {rsa_total} lookup(s) \
                 in all ({})",
                seq(v),
                short_message(v)
            ),
            None => format!("response-size-anomaly from {BACKDOOR_POD}: none"),
        },
    });

    // 3. quarantine-breach after the quarantine took effect.
    let reloaded = records
        .iter()
        .find(|r| r["kind"] == "policy" && r["event"] == "reloaded")
        .map(seq);
    let breaches: Vec<&&Value> = vs
        .iter()
        .filter(|v| v["rule"] == "quarantine-breach")
        .filter(from_backdoor)
        .collect();
    let breach_total: u64 = breaches
        .iter()
        .map(|v| v["count"].as_u64().unwrap_or(0))
        .sum();
    checks.push(Check {
        ok: reloaded.is_some_and(|r| breaches.iter().any(|v| seq(v) > r)),
        text: format!(
            "quarantine-breach after the quarantine (policy reloaded at seq {}): {}",
            reloaded.map_or_else(|| "never".to_owned(), |r| r.to_string()),
            match breaches.first() {
                Some(v) => format!(
                    "first at seq {}, {breach_total} blocked attempt(s) in all",
                    seq(v)
                ),
                None => "none".to_owned(),
            }
        ),
    });

    // 4. Nothing else raised a violation.
    let others: Vec<String> = vs
        .iter()
        .filter(|v| v["source"]["pod"] != BACKDOOR_POD)
        .map(|v| {
            format!(
                "seq {} {} from {}",
                seq(v),
                s(&v["rule"]),
                v["source"]["pod"]
                    .as_str()
                    .map_or_else(|| s(&v["source"]["ip"]), str::to_owned)
            )
        })
        .collect();
    checks.push(Check {
        ok: others.is_empty(),
        text: if others.is_empty() {
            format!(
                "no violation from any other source ({} violation record(s), all from \
                 {BACKDOOR_POD}): the documented, allowed traffic is quiet",
                vs.len()
            )
        } else {
            format!(
                "{} violation(s) from other sources: {}",
                others.len(),
                others.join("; ")
            )
        },
    });

    // 5. The quarantine held: attested, attempts blocked, nothing escaped, no lookup got through.
    let att = records
        .iter()
        .rev()
        .find(|r| r["kind"] == "quarantine" && r["pod"] == BACKDOOR_POD);
    let after: usize = reloaded.map_or(0, |r| {
        records
            .iter()
            .filter(|x| x["kind"] == "http" && x["source"]["pod"] == BACKDOOR_POD && seq(x) > r)
            .count()
    });
    checks.push(match att {
        Some(a) => {
            let blocked = a["attempts_blocked"].as_u64().unwrap_or(0);
            let escaped = a["escaped"].as_u64().unwrap_or(u64::MAX);
            Check {
                ok: a["mode"] == "enforce"
                    && blocked >= BLOCKED_ATTEMPTS as u64
                    && escaped == 0
                    && after == 0,
                text: format!(
                    "quarantine attested (seq {}): mode {}, {blocked} attempt(s) blocked, {} \
                     escaped; {after} exchange(s) of {BACKDOOR_POD} seen after it",
                    seq(a),
                    s(&a["mode"]),
                    s(&a["escaped"])
                ),
            }
        }
        None => Check {
            ok: false,
            text: format!("quarantine attestation of {BACKDOOR_POD}: none"),
        },
    });
    checks
}

/// Seen live: the reload must be reported promptly, not only when later traffic flushes it.
/// `reported` is how long after the edit the `policy` record appeared, if it did in time.
pub fn reload_check(reported: Option<Duration>) -> Check {
    Check {
        ok: reported.is_some(),
        text: match reported {
            Some(d) => format!(
                "the agent reported the quarantine edit (`policy` record) {} after it",
                util::fmt_duration(d)
            ),
            None => format!(
                "the agent reported the quarantine edit within {}: no `policy` record \
                 appeared on its stdout in that time",
                util::fmt_duration(RELOAD_TIMEOUT)
            ),
        },
    }
}

/// The collector holds all `written` records (it has `delivered`), and observe and report
/// answered from it (`cli_ok`).
pub fn collector_check(delivered: usize, written: usize, cli_ok: bool) -> Check {
    Check {
        ok: delivered == written && cli_ok,
        text: format!(
            "the collector holds every record the agent wrote ({delivered} of {written}), and \
             observe and report answer from it"
        ),
    }
}
