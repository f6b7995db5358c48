//! The four phases of the demo played against the running lab and agent: background traffic,
//! the backdoor's lookups (with the first detection shown as it arrives), the quarantine edit
//! and its reload, and the blocked attempts. Each call is a real curl from inside a pod.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::agent::DemoAgent;
use super::present::{emphasize, s, say};
use super::scenario::{
    self, BACKDOOR_POD, BLOCKED_ATTEMPTS, BLOCKED_TIMEOUT_S, Call, LOOKUP_LIMIT, LOOKUP_ROUTE,
    LOOKUP_STATES, QUARANTINED, USER_PROFILE, lookup_target, quarantine_policy, replace_file,
};
use crate::inventory::ServerKind;
use crate::lab::Lab;
use crate::util;

/// How long the agent may take to report a policy edit (it checks the file every second).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the kernel's quarantine set may take after the `reloaded` record.
pub const QUARANTINE_SETTLE: Duration = Duration::from_millis(1500);

/// What one curl did.
struct Outcome {
    /// curl exited 0.
    ok: bool,
    /// curl's exit code.
    code: Option<i32>,
    /// HTTP status (`000` when there was no response).
    status: String,
    /// Body bytes received.
    bytes: String,
    elapsed: Duration,
    stderr: String,
}

/// The running demo: the lab and the agent.
pub(super) struct Demo<'a> {
    /// The lab the calls run in.
    pub(super) lab: &'a Lab,
    /// The agent watching it.
    pub(super) agent: &'a mut DemoAgent,
    /// When the agent's `policy` record for the quarantine edit appeared (after the edit).
    pub(super) reload_reported: Option<Duration>,
}

impl Demo<'_> {
    /// Phase 1: documented, allowed traffic, printed one line per group of calls.
    pub(super) fn background(&mut self) -> Result<()> {
        say("phase 1: background traffic (documented and allowed)");
        for (label, calls) in scenario::background(self.lab) {
            self.group(label, &calls)?;
        }
        Ok(())
    }

    /// Runs calls that must succeed; prints one line for the group.
    fn group(&mut self, label: &str, calls: &[Call<'_>]) -> Result<()> {
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
        let mut to: Vec<&str> = Vec::new();
        for c in calls {
            let o = self.call(c)?;
            if !o.ok {
                bail!(
                    "curl from {} to {} {} {} failed (exit {:?}): {}",
                    c.from,
                    c.to,
                    c.method,
                    c.target,
                    o.code,
                    o.stderr.trim()
                );
            }
            *statuses.entry(o.status).or_default() += 1;
            *sizes.entry(o.bytes).or_default() += 1;
            if !to.contains(&c.to) {
                to.push(c.to);
            }
        }
        let Some(first) = calls.first() else {
            return Ok(());
        };
        let path = first.target.split('?').next().unwrap_or_default();
        let to = if to.len() == 1 {
            to[0].to_owned()
        } else {
            format!("{} services", to.len())
        };
        let fmt = |m: &BTreeMap<String, usize>, unit: &str| {
            m.iter()
                .map(|(k, n)| format!("{n}× {k}{unit}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        crate::outln!(
            "  {label:<32} → {to:<26} {} {path:<28} {:>3} call(s): {}; {}",
            first.method,
            calls.len(),
            fmt(&statuses, ""),
            fmt(&sizes, " B")
        );
        Ok(())
    }

    /// Phase 2: the backdoor's lookups, one per state; shows what the agent wrote for the
    /// first one as soon as it appears.
    pub(super) fn backdoor(&mut self) -> Result<()> {
        say(&format!(
            "phase 2: THE INCIDENT: {BACKDOOR_POD} calls the undocumented admin lookup"
        ));
        for (i, state) in LOOKUP_STATES.iter().enumerate() {
            let c = Call::get(BACKDOOR_POD, USER_PROFILE, lookup_target(state));
            let sent = Instant::now();
            let o = self.call(&c)?;
            crate::outln!(
                "{}",
                emphasize(&format!(
                    "  {:<28} → {:<26} GET {LOOKUP_ROUTE}?fields=ssn_last4,…&state={state}&limit={LOOKUP_LIMIT}  → {} ({} B)",
                    c.from, c.to, o.status, o.bytes
                ))
            );
            if !o.ok {
                bail!(
                    "the lookup from {BACKDOOR_POD} failed (exit {:?}): {}",
                    o.code,
                    o.stderr.trim()
                );
            }
            if i == 0 {
                self.show_first_detection(sent)?;
            }
        }
        crate::outln!(
            "  (repeats of the same rule and route are counted; the agent reports them as one \
             aggregated record when its window closes or when it stops)"
        );
        Ok(())
    }

    /// Waits for the first lookup's `http` record and prints the violations on its flow.
    fn show_first_detection(&mut self, sent: Instant) -> Result<()> {
        let is_lookup = |v: &Value| {
            v["kind"] == "http"
                && v["source"]["pod"] == BACKDOOR_POD
                && v["http"]["path"] == LOOKUP_ROUTE
        };
        let Some(http) = self.agent.wait_record(Duration::from_secs(3), is_lookup)? else {
            crate::outln!("    agent: no record of this lookup within 3 s");
            return Ok(());
        };
        let after = sent.elapsed();
        let found: Vec<String> = self
            .agent
            .records()
            .iter()
            .filter(|v| v["kind"] == "violation" && v["flow_id"] == http["flow_id"])
            .map(|v| {
                format!(
                    "{} ({}, seq {})",
                    s(&v["rule"]),
                    s(&v["severity"]),
                    s(&v["seq"])
                )
            })
            .collect();
        crate::outln!(
            "    agent, {} after curl started: {}",
            util::fmt_duration(after),
            if found.is_empty() {
                "no violation".to_owned()
            } else {
                found.join(", ")
            }
        );
        Ok(())
    }

    /// Phase 3: rewrites the policy copy to quarantine the pod, waits for the reload.
    pub(super) fn quarantine(&mut self, policy: &Path, original: &str) -> Result<()> {
        say(&format!(
            "phase 3: quarantine {QUARANTINED} (policy copy rewritten: mode enforce)"
        ));
        let already = self.agent.records().len();
        replace_file(policy, &quarantine_policy(original, QUARANTINED))?;
        let t0 = Instant::now();
        let is_policy = |v: &Value| v["kind"] == "policy";
        let rec = loop {
            let recs = self.agent.records();
            if let Some(v) = recs[already.min(recs.len())..]
                .iter()
                .find(|v| is_policy(v))
            {
                break v.clone();
            }
            if let Some(st) = self.agent.exited()? {
                bail!(
                    "the agent exited ({st}) after the policy edit; its log:\n{}",
                    self.agent.stderr_tail()
                );
            }
            if t0.elapsed() > RELOAD_TIMEOUT {
                // Reported, not worked around: the checklist marks it, and the demo goes on so
                // the rest of the incident can still be seen.
                crate::outln!(
                    "{}",
                    emphasize(&format!(
                        "  agent: no `policy` record on its stdout within {} of the edit of {} \
                         (it checks the file every second); continuing, the checklist will say so",
                        util::fmt_duration(RELOAD_TIMEOUT),
                        policy.display()
                    ))
                );
                return util::sleep_interruptible(QUARANTINE_SETTLE);
            }
            util::sleep_interruptible(Duration::from_millis(20))?;
        };
        self.reload_reported = Some(t0.elapsed());
        if rec["event"] != "reloaded" {
            bail!(
                "the agent refused the quarantine edit: {}",
                serde_json::to_string(&rec).unwrap_or_default()
            );
        }
        crate::outln!(
            "  agent: policy reloaded (seq {}) {} after the edit; waiting {} for the kernel's drop set",
            s(&rec["seq"]),
            util::fmt_duration(t0.elapsed()),
            util::fmt_duration(QUARANTINE_SETTLE)
        );
        util::sleep_interruptible(QUARANTINE_SETTLE)
    }

    /// Phase 4: the quarantined pod keeps trying; each attempt hangs and times out.
    pub(super) fn blocked(&mut self) -> Result<()> {
        say(&format!(
            "phase 4: {BACKDOOR_POD} keeps trying (curl -m {BLOCKED_TIMEOUT_S})"
        ));
        for state in LOOKUP_STATES.iter().take(BLOCKED_ATTEMPTS) {
            let c = Call::get(BACKDOOR_POD, USER_PROFILE, lookup_target(state));
            let o = self.call_with_timeout(&c, BLOCKED_TIMEOUT_S)?;
            let what = if o.ok {
                format!("{} ({} B): NOT BLOCKED", o.status, o.bytes)
            } else {
                format!(
                    "blocked: no connection after {} (curl exit {})",
                    util::fmt_duration(o.elapsed),
                    o.code.map_or_else(|| "?".to_owned(), |c| c.to_string())
                )
            };
            crate::outln!(
                "  {:<28} → {:<26} GET {LOOKUP_ROUTE}?…&state={state}  → {what}",
                c.from,
                c.to
            );
        }
        Ok(())
    }

    fn call(&mut self, c: &Call<'_>) -> Result<Outcome> {
        self.call_with_timeout(c, 5)
    }

    /// Runs one curl from `c.from` to `c.to`'s nginx and fails if the agent died meanwhile.
    fn call_with_timeout(&mut self, c: &Call<'_>, max_time_s: u32) -> Result<Outcome> {
        util::check_interrupted()?;
        let lab = self.lab;
        let ip = lab.pod_ip(c.to)?;
        let port = lab
            .inventory()
            .hosts()
            .find(|h| h.name == c.to)
            .and_then(|h| h.serve.iter().find(|s| s.kind == ServerKind::Nginx))
            .map(|s| s.port)
            .with_context(|| format!("{} runs no nginx server in the inventory", c.to))?;
        let host = lab
            .inventory()
            .pods
            .iter()
            .find(|p| p.name == c.to)
            .and_then(|p| {
                p.service.as_ref().map(|s| {
                    format!(
                        "{s}.{}.svc.cluster.local",
                        p.namespace.as_deref().unwrap_or("default")
                    )
                })
            })
            .unwrap_or_else(|| format!("{}.example.com", c.to));
        let url = format!("http://{ip}:{port}{}", c.target);
        let mut cmd = lab.command(c.from, "curl")?;
        cmd.args(["-sS", "--noproxy", "*", "--max-time"])
            .arg(max_time_s.to_string())
            .args([
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
                "-H",
            ])
            .arg(format!("Host: {host}"));
        if c.method == "POST" {
            cmd.args(["--data", ""]);
        }
        cmd.arg(&url);
        let t0 = Instant::now();
        let out = util::output_raw(&mut cmd)?;
        let elapsed = t0.elapsed();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut parts = text.split_whitespace();
        let status = parts.next().unwrap_or("---").to_owned();
        let bytes = parts.next().unwrap_or("?").to_owned();
        if let Some(st) = self.agent.exited()? {
            bail!(
                "the agent exited ({st}) during the traffic; its log:\n{}",
                self.agent.stderr_tail()
            );
        }
        Ok(Outcome {
            ok: out.status.success(),
            code: out.status.code(),
            status,
            bytes,
            elapsed,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
