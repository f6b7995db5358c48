//! `cargo xtask demo`: replays the Vantage incident (DESIGN §1) on this machine.
//!
//! setup (fast path) → release build of `monitor` → lab up (Vantage inventory) → a copy of the
//! Vantage policy in the lab's run directory → the agent (root cgroup, the lab's node netns), attached
//! to the lab's root cgroup, with that copy → real curl traffic from the pods, in four phases:
//!
//! 1. background: the recommendation engines 01-03 read user preferences (enough calls for the
//!    response-size baseline), checkout reads them too, the gateway lists products, the scraper
//!    probes `/internal/health` and scrapes `/internal/metrics` on every service, the catalog
//!    flushes its own cache, checkout calls the partner API — all documented and allowed;
//! 2. the backdoor: `svc-recommendation-engine-04` calls the undocumented
//!    `GET /internal/admin/v0/users/lookup` with the seed's fields, one state after another;
//! 3. the response: the policy copy is rewritten to quarantine -04 in enforce mode; the agent
//!    reloads it (a `policy` record says so) and puts -04's cgroup in the kernel's drop set;
//! 4. -04 keeps trying: its connections hang (SYNs dropped) and time out.
//!
//! The agent runs in the lab's node netns and delivers over mTLS (certificates from `monitor
//! certs init`) to a collector there (`target/demo/collector.db`, NDJSON sink
//! `target/demo/collector-records.ndjson`); it also prints its records.
//!
//! → agent stopped with SIGINT → every record in `target/demo/records.ndjson`, and on screen the
//! violations table, the quarantine attestation and a checklist of what the incident must
//! produce (the command fails if an item is not met); then `monitor observe` and `monitor
//! report` on the collector's copy → lab down. A guard tears everything down
//! on error and on Ctrl-C.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, IsTerminal as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::inventory::ServerKind;
use crate::lab::{Lab, LabOptions};
use crate::util;

/// Lab prefix the demo uses by default (distinct from `lab up`'s, so both can coexist).
pub const DEMO_PREFIX: &str = "mdemo";

/// How long to wait for the agent's ready file.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The route the backdoor called.
pub const LOOKUP_ROUTE: &str = "/internal/admin/v0/users/lookup";

/// The fields the backdoor's queries asked for (DESIGN §1).
pub const LOOKUP_FIELDS: &str =
    "ssn_last4,email,phone,address_street,address_city,address_state,address_zip";

/// The US states the backdoor filtered by, in order (DESIGN §1).
pub const LOOKUP_STATES: [&str; 6] = ["CA", "NY", "TX", "FL", "IL", "PA"];

/// Records per response the backdoor asked for.
pub const LOOKUP_LIMIT: u32 = 48;

/// The quarantined pod, as the policy names it.
pub const QUARANTINED: &str = "vantage/svc-recommendation-engine-04";

/// The compromised replica.
pub const BACKDOOR_POD: &str = "svc-recommendation-engine-04";

/// Preference calls from replicas 01-03 before the backdoor starts: more than the policy's
/// `min_samples` (20), so the response-size baseline exists when the first lookup arrives.
pub const BASELINE_CALLS: usize = 27;

/// Lookups the quarantined pod still attempts (each one times out).
pub const BLOCKED_ATTEMPTS: usize = 3;

/// curl's `--max-time` for the attempts under quarantine (its SYN and one retransmission).
pub const BLOCKED_TIMEOUT_S: u32 = 2;

/// How long the kernel's quarantine set may take after the `reloaded` record.
pub const QUARANTINE_SETTLE: Duration = Duration::from_millis(1500);

const USER_PROFILE: &str = "svc-user-profile-service-0";
const CATALOG: &str = "svc-product-catalog-0";
const CHECKOUT: &str = "svc-checkout-0";
const GATEWAY: &str = "svc-api-gateway-0";
const SCRAPER: &str = "monitoring-scraper-0";
const PARTNER: &str = "partner-api";
const RECO: [&str; 4] = [
    "svc-recommendation-engine-01",
    "svc-recommendation-engine-02",
    "svc-recommendation-engine-03",
    BACKDOOR_POD,
];

/// The backdoor's request target for one state.
pub fn lookup_target(state: &str) -> String {
    format!("{LOOKUP_ROUTE}?fields={LOOKUP_FIELDS}&state={state}&limit={LOOKUP_LIMIT}")
}

/// Options of `cargo xtask demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Inventory (must contain the Vantage pods).
    pub inventory: PathBuf,
    /// Lab prefix.
    pub prefix: String,
    /// cgroup2 mount override.
    pub cgroup_mount: Option<PathBuf>,
    /// Use an existing `monitor` binary instead of building it.
    pub no_build: bool,
    /// The agent binary (default `<target>/release/monitor`).
    pub monitor_bin: Option<PathBuf>,
    /// Extra arguments for `monitor agent`. A `--policy FILE` among them replaces the policy
    /// the demo copies (default: `policy.yaml` next to the inventory); the agent always runs
    /// with the copy, which the demo rewrites to quarantine the backdoored pod.
    pub agent_args: Vec<String>,
    /// Echo the agent's stderr (logs) live.
    pub agent_logs: bool,
}

fn say(msg: &str) {
    crate::outln!("\n==> {msg}");
}

/// Splits a `--policy FILE` / `--policy=FILE` out of the agent's extra arguments.
fn take_policy_arg(args: &[String]) -> (Option<PathBuf>, Vec<String>) {
    let mut policy = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--policy" {
            policy = it.next().map(PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--policy=") {
            policy = Some(PathBuf::from(p));
        } else {
            rest.push(a.clone());
        }
    }
    (policy, rest)
}

/// `original` with its top-level `quarantine:` section replaced by one that quarantines `pod`
/// (`namespace/name`) in enforce mode; everything else is kept as written. The section is the
/// `quarantine:` line and the indented lines under it; it is appended when there is none. The
/// new section has four lines, as the Vantage policy's, so later line numbers do not move.
pub fn quarantine_policy(original: &str, pod: &str) -> String {
    let section =
        format!("quarantine:\n  mode: enforce\n  pods: [{pod}]\n  network_policies: true\n");
    let lines: Vec<&str> = original.split_inclusive('\n').collect();
    let Some(start) = lines.iter().position(|l| {
        l.strip_prefix("quarantine:")
            .is_some_and(|r| r.trim().is_empty() || r.starts_with([' ', '#', '{']))
    }) else {
        let mut out = original.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&section);
        return out;
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim().is_empty() || !l.starts_with([' ', '\t']))
        .map_or(lines.len(), |n| start + 1 + n);
    let mut out: String = lines[..start].concat();
    out.push_str(&section);
    out.push_str(&lines[end..].concat());
    out
}

/// Replaces `path` with `text` the safe way (a file next to it, renamed over it), as an
/// operator should edit a policy the agent watches.
pub fn replace_file(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Runs the demo.
pub fn run(opts: &DemoOptions) -> Result<()> {
    let started = Instant::now();
    say("setup (checking the machine)");
    crate::setup::run(&crate::setup::SetupOptions {
        cgroup_mount: opts.cgroup_mount.clone(),
    })?;
    util::check_interrupted()?;

    let target = util::target_dir()?;
    let bin = opts
        .monitor_bin
        .clone()
        .unwrap_or_else(|| target.join("release/monitor"));
    if opts.no_build {
        say(&format!(
            "using the existing agent {} (--no-build)",
            bin.display()
        ));
    } else {
        say("building the agent: cargo build --release -p monitor");
        util::run(
            Command::new(util::cargo())
                .args(["build", "--release", "-p", "monitor"])
                .current_dir(crate::repo_root()),
        )
        .context("building the agent failed")?;
    }
    if !bin.is_file() {
        bail!(
            "agent binary {} does not exist: build it with `cargo build --release -p monitor` \
             (or pass --monitor-bin)",
            bin.display()
        );
    }
    let (policy_arg, agent_args) = take_policy_arg(&opts.agent_args);
    let policy_src = policy_arg.unwrap_or_else(|| {
        opts.inventory
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("policy.yaml")
    });
    let policy_text = std::fs::read_to_string(&policy_src).with_context(|| {
        format!(
            "cannot read the policy {} (the demo uses the policy.yaml next to the inventory, \
             or --agent-arg=--policy=FILE)",
            policy_src.display()
        )
    })?;
    util::check_interrupted()?;

    say(&format!("lab up: {}", opts.inventory.display()));
    let mut lab = Lab::up(&LabOptions {
        inventory: opts.inventory.clone(),
        prefix: opts.prefix.clone(),
        cgroup_mount: opts.cgroup_mount.clone(),
    })?;
    crate::outln!("{}", lab.describe().trim_end());
    let missing: Vec<&str> = [USER_PROFILE, CATALOG, CHECKOUT, GATEWAY, SCRAPER, PARTNER]
        .into_iter()
        .chain(RECO)
        .filter(|p| lab.member(p).is_err())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: the demo needs these pods, which the inventory lacks: {} (use the Vantage \
             example, deploy/examples/vantage/inventory.yaml)",
            opts.inventory.display(),
            missing.join(", ")
        );
    }

    let out_dir = target.join("demo");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    // The agent watches this copy; phase 3 rewrites it. The lab's run dir goes with the lab.
    let policy = lab.run_dir().join("policy.yaml");
    std::fs::write(&policy, &policy_text)
        .with_context(|| format!("cannot write {}", policy.display()))?;
    crate::outln!(
        "policy: {} (a copy of {})",
        policy.display(),
        policy_src.display()
    );
    let ready = lab.run_dir().join("ready");
    say(&format!(
        "starting the agent (root cgroup, node netns), attached to {}",
        lab.attach_cgroup().display()
    ));
    say("certificates and the collector (mTLS on 127.0.0.1:7443 in the lab's node netns)");
    let certs = lab.run_dir().join("certs");
    let out = Command::new(&bin)
        .args(["certs", "init", "--out"])
        .arg(&certs)
        .output()
        .context("cannot run monitor certs init")?;
    if !out.status.success() {
        bail!(
            "monitor certs init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    crate::outln!("{}", String::from_utf8_lossy(&out.stdout).trim_end());
    let sink_file = out_dir.join("collector-records.ndjson");
    let store = out_dir.join("collector.db");
    for f in [&sink_file, &store] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_file(store.with_extension("db-wal"));
    let _ = std::fs::remove_file(store.with_extension("db-shm"));
    let collector = Collector::start(
        &bin,
        lab.node_netns(),
        &certs,
        &store,
        &sink_file,
        &out_dir.join("collector.log"),
        &lab.run_dir().join("collector-ready"),
    )?;
    crate::outln!("collector ready (pid {})", collector.pid);
    let mut extra = vec![
        "--policy".to_owned(),
        policy.display().to_string(),
        "--collector".to_owned(),
        COLLECTOR_URL.to_owned(),
        "--tls-dir".to_owned(),
        certs.display().to_string(),
        "--spool-dir".to_owned(),
        lab.run_dir().join("spool").display().to_string(),
        "--stdout".to_owned(),
    ];
    extra.extend(agent_args);
    let mut agent = Agent::start(
        &bin,
        lab.node_netns(),
        lab.inventory_path(),
        lab.attach_cgroup(),
        &ready,
        &extra,
        &out_dir.join("agent.log"),
        opts.agent_logs,
    )?;
    agent.wait_ready(&ready)?;
    crate::outln!(
        "agent ready (pid {}) after {}",
        agent.pid,
        util::fmt_duration(agent.started.elapsed())
    );

    let mut demo = Demo {
        lab: &lab,
        agent: &mut agent,
        reload_reported: None,
    };
    demo.background()?;
    demo.backdoor()?;
    demo.quarantine(&policy, &policy_text)?;
    demo.blocked()?;
    let reload_reported = demo.reload_reported;

    say("letting the agent drain (0.5 s), then stopping it with SIGINT");
    util::sleep_interruptible(Duration::from_millis(500))?;
    let stopped = agent.stop()?;
    let records_file = out_dir.join("records.ndjson");
    std::fs::write(&records_file, stopped.stdout.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", records_file.display()))?;
    if let Ok(text) = std::fs::read_to_string(&policy) {
        let _ = std::fs::write(out_dir.join("policy.yaml"), text);
    }
    if !stopped.status.success() {
        crate::outln!(
            "warning: the agent exited with {} after SIGINT; its log:\n{}",
            stopped.status,
            stopped.stderr_tail
        );
    }
    let records: Vec<Value> = stopped
        .stdout
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let not_json = stopped
        .stdout
        .iter()
        .filter(|l| !l.trim().is_empty() && serde_json::from_str::<Value>(l).is_err())
        .count();

    say(&format!(
        "records: {} (all in {}; the policy as last edited in {})",
        summarize_kinds(&records),
        records_file.display(),
        out_dir.join("policy.yaml").display()
    ));
    if not_json > 0 {
        crate::outln!("warning: {not_json} line(s) of the agent's stdout are not JSON");
    }
    say(&format!("evidence: the http records of {BACKDOOR_POD}"));
    for r in records
        .iter()
        .filter(|r| r["kind"] == "http" && r["source"]["pod"] == BACKDOOR_POD)
    {
        crate::outln!("  seq {:>4}  {}", s(&r["seq"]), describe_record(r));
    }
    say("violations");
    crate::outln!("{}", violations_table(&records));
    say("quarantine attestation");
    crate::outln!("{}", attestation(&records));
    say("checklist: what the incident must produce vs what the agent wrote");
    let mut checks = checklist(&records);
    // Seen live: the reload must be reported promptly, not only when later traffic flushes it.
    checks.insert(
        2,
        Check {
            ok: reload_reported.is_some(),
            text: match reload_reported {
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
        },
    );
    for c in &checks {
        let line = format!("  {} {}", if c.ok { "✓" } else { "✗" }, c.text);
        crate::outln!("{}", if c.ok { line } else { emphasize(&line) });
    }
    let failed = checks.iter().filter(|c| !c.ok).count();

    // The same incident through the collector: what a SIEM and an investigator see.
    let delivered = collector.wait_records(records.len(), Duration::from_secs(10));
    say(&format!(
        "the collector (over mTLS): {delivered} of {} records in its store and NDJSON sink {}",
        records.len(),
        sink_file.display()
    ));
    let cli = |args: &[&str]| -> Result<String> {
        let mut cmd = crate::lab::nsenter(lab.node_netns(), &bin);
        cmd.args(args)
            .args(["--collector", COLLECTOR_URL, "--tls-dir"])
            .arg(&certs)
            .args(["--output", "table"]);
        crate::outln!("$ {}", util::display_cmd(&cmd));
        let out = cmd.output().context("cannot run the monitor CLI")?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut cli_ok = true;
    for args in [
        &["observe", "--kind", "violation"][..],
        &["report", "--path", LOOKUP_ROUTE][..],
    ] {
        match cli(args) {
            Ok(text) => crate::outln!("{}", text.trim_end()),
            Err(e) => {
                cli_ok = false;
                crate::outln!("{}", emphasize(&format!("monitor {}: {e:#}", args[0])));
            }
        }
    }
    let collector_ok = delivered == records.len() && cli_ok;
    let collector_line = format!(
        "  {} the collector holds every record the agent wrote ({delivered} of {}), and observe \
         and report answer from it",
        if collector_ok { "✓" } else { "✗" },
        records.len()
    );
    crate::outln!(
        "{}",
        if collector_ok {
            collector_line
        } else {
            emphasize(&collector_line)
        }
    );
    let failed = failed + usize::from(!collector_ok);
    let total_checks = checks.len() + 1;
    drop(collector);

    say("tearing the lab down");
    lab.down()?;
    crate::outln!(
        "\ndemo finished in {}: {} of {} checks passed; agent log in {}",
        util::fmt_duration(started.elapsed()),
        total_checks - failed,
        total_checks,
        out_dir.join("agent.log").display()
    );
    if stopped.stdout.is_empty() {
        bail!(
            "the agent printed no records on stdout; see its log {}",
            out_dir.join("agent.log").display()
        );
    }
    if failed > 0 {
        bail!(
            "{failed} of {} checklist item(s) failed (marked ✗ above); the records are in {}",
            total_checks,
            records_file.display()
        );
    }
    Ok(())
}

/// One HTTP exchange made with curl from a pod.
struct Call<'a> {
    from: &'a str,
    to: &'a str,
    method: &'a str,
    target: String,
}

impl<'a> Call<'a> {
    fn get(from: &'a str, to: &'a str, target: impl Into<String>) -> Self {
        Self {
            from,
            to,
            method: "GET",
            target: target.into(),
        }
    }
}

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

/// How long the agent may take to report a policy edit (it checks the file every second).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The running demo: the lab and the agent.
struct Demo<'a> {
    lab: &'a Lab,
    agent: &'a mut Agent,
    /// When the agent's `policy` record for the quarantine edit appeared (after the edit).
    reload_reported: Option<Duration>,
}

impl Demo<'_> {
    /// Phase 1: documented, allowed traffic, printed one line per group of calls.
    fn background(&mut self) -> Result<()> {
        say("phase 1: background traffic (documented and allowed)");
        // Preferences from replicas 01-03, round-robin, each call on its own connection.
        let mut n = 1000;
        let prefs: Vec<Call<'_>> = (0..BASELINE_CALLS)
            .map(|i| {
                n += 7;
                Call::get(
                    RECO[i % 3],
                    USER_PROFILE,
                    format!("/api/v2/users/preferences?user_id={n}"),
                )
            })
            .collect();
        self.group("svc-recommendation-engine-01..03", &prefs)?;
        let checkout: Vec<Call<'_>> = (0..2)
            .map(|i| {
                Call::get(
                    CHECKOUT,
                    USER_PROFILE,
                    format!("/api/v2/users/preferences?user_id={}", 4242 + i),
                )
            })
            .collect();
        self.group(CHECKOUT, &checkout)?;
        let products: Vec<Call<'_>> = (1..=2)
            .map(|page| Call::get(GATEWAY, CATALOG, format!("/api/v1/products?page={page}")))
            .collect();
        self.group(GATEWAY, &products)?;

        // The monitoring stack probes and scrapes every service that serves both routes.
        let servers: Vec<String> = self
            .lab
            .inventory()
            .pods
            .iter()
            .filter(|p| {
                p.lab.serve.iter().any(|s| {
                    s.kind == ServerKind::Nginx
                        && s.routes.contains_key("/internal/health")
                        && s.routes.contains_key("/internal/metrics")
                })
            })
            .map(|p| p.name.clone())
            .collect();
        for target in ["/internal/health", "/internal/metrics"] {
            let calls: Vec<Call<'_>> = servers
                .iter()
                .map(|to| Call::get(SCRAPER, to, target))
                .collect();
            self.group(SCRAPER, &calls)?;
        }
        // The catalog flushes its own cache (same service: the runbook allows it).
        self.group(
            CATALOG,
            &[Call {
                from: CATALOG,
                to: CATALOG,
                method: "POST",
                target: "/internal/admin/cache/flush".into(),
            }],
        )?;
        // Checkout calls the payment partner (an approved external destination).
        self.group(CHECKOUT, &[Call::get(CHECKOUT, PARTNER, "/v1/ping")])?;
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
    fn backdoor(&mut self) -> Result<()> {
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
    fn quarantine(&mut self, policy: &Path, original: &str) -> Result<()> {
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
    fn blocked(&mut self) -> Result<()> {
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

fn emphasize(line: &str) -> String {
    if std::io::stdout().is_terminal() {
        format!("\x1b[1;31m{line}\x1b[0m")
    } else {
        format!("{line}   <<<<")
    }
}

/// A JSON scalar as text (`?` when absent).
fn s(v: &Value) -> String {
    scalar(Some(v)).unwrap_or_else(|| "?".into())
}

/// A record's sequence number (0 when absent).
fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or(0)
}

/// `3 http, 2 violation, ...`
fn summarize_kinds(records: &[Value]) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        *kinds.entry(s(&r["kind"])).or_default() += 1;
    }
    let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} ({})", records.len(), parts.join(", "))
}

fn violations(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "violation")
        .collect()
}

/// A violation's message without the aggregation suffix, shortened: when the text before its
/// last `: ` only repeats the table's columns (it names the source), the part after it.
fn short_message(v: &Value) -> String {
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

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Met.
    pub ok: bool,
    /// What was expected, and what was found.
    pub text: String,
}

/// What the incident must produce (the issue's expectations), checked against the records.
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

/// Where the demo's collector listens (inside the lab's node netns).
pub const COLLECTOR_URL: &str = "https://127.0.0.1:7443";

/// The demo's collector; stopped (SIGTERM, then SIGKILL) on drop.
struct Collector {
    child: Child,
    pid: u32,
    sink: PathBuf,
}

impl Collector {
    fn start(
        bin: &Path,
        netns: &str,
        certs: &Path,
        store: &Path,
        sink: &Path,
        log: &Path,
        ready: &Path,
    ) -> Result<Self> {
        let _ = std::fs::remove_file(ready);
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = crate::lab::nsenter(netns, bin);
        cmd.args(["collector", "--listen", "127.0.0.1:7443", "--tls-dir"])
            .arg(certs)
            .arg("--store")
            .arg(store)
            .arg("--sink")
            .arg(format!("ndjson:file={}", sink.display()))
            .arg("--ready-file")
            .arg(ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .process_group(0);
        crate::outln!("$ {}", util::display_cmd(&cmd));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start the collector {}", bin.display()))?;
        let mut c = Self {
            pid: child.id(),
            child,
            sink: sink.to_owned(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready.exists() {
            if let Some(st) = c.child.try_wait()? {
                bail!(
                    "the collector exited ({st}) at start; its log: {}",
                    log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the collector is not listening after {READY_TIMEOUT:?}; its log: {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(c)
    }

    /// Waits until the sink holds `n` records (or `timeout`); returns how many it holds.
    fn wait_records(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let have = std::fs::read_to_string(&self.sink)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if have >= n || Instant::now() >= deadline {
                return have;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        util::stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(8));
    }
}

/// What the stopped agent left.
struct Stopped {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr_tail: String,
}

/// The running agent; killed on drop if still running.
struct Agent {
    child: Child,
    pid: u32,
    started: Instant,
    stdout: Option<JoinHandle<()>>,
    /// Lines written on stdout so far (records).
    stdout_lines: Arc<Mutex<Vec<String>>>,
    stderr: Option<JoinHandle<()>>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, every argument named there"
    )]
    fn start(
        bin: &Path,
        netns: &str,
        inventory: &Path,
        cgroup: &Path,
        ready: &Path,
        extra: &[String],
        log: &Path,
        echo_logs: bool,
    ) -> Result<Self> {
        let _ = std::fs::remove_file(ready);
        let mut cmd = crate::lab::nsenter(netns, bin);
        cmd.arg("agent")
            .arg("--inventory")
            .arg(inventory)
            .arg("--cgroup")
            .arg(cgroup)
            .arg("--ready-file")
            .arg(ready)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: Ctrl-C reaches xtask, which stops the agent in order.
            .process_group(0);
        crate::outln!("$ {}", util::display_cmd(&cmd));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start the agent {}", bin.display()))?;
        let pid = child.id();
        let out = child.stdout.take().context("agent stdout")?;
        let err = child.stderr.take().context("agent stderr")?;
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stdout_lines);
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut v) = lines.lock() {
                    v.push(line);
                }
            }
        });
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr_lines);
        let mut logfile = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = writeln!(logfile, "{line}");
                if echo_logs {
                    crate::errln!("agent: {line}");
                }
                if let Ok(mut v) = sink.lock() {
                    v.push(line);
                }
            }
        });
        Ok(Self {
            child,
            pid,
            started: Instant::now(),
            stdout: Some(stdout),
            stdout_lines,
            stderr: Some(stderr),
            stderr_lines,
        })
    }

    /// The records written so far (lines that are not JSON are skipped).
    fn records(&self) -> Vec<Value> {
        self.stdout_lines
            .lock()
            .map(|v| {
                v.iter()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for a record matching `pred`.
    fn wait_record(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.records().into_iter().find(|v| pred(v)) {
                return Ok(Some(v));
            }
            if self.exited()?.is_some() || Instant::now() >= deadline {
                return Ok(None);
            }
            util::sleep_interruptible(Duration::from_millis(10))?;
        }
    }

    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().context("waiting for the agent")
    }

    fn stderr_tail(&self) -> String {
        let lines = self
            .stderr_lines
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let tail = &lines[lines.len().saturating_sub(40)..];
        if tail.is_empty() {
            "    (empty)".to_string()
        } else {
            tail.iter()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }

    fn wait_ready(&mut self, ready: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready.exists() {
                return Ok(());
            }
            if let Some(st) = self.exited()? {
                self.join_stderr();
                bail!(
                    "the agent exited ({st}) before it was ready; its stderr:\n{}",
                    self.stderr_tail()
                );
            }
            util::check_interrupted()?;
            if Instant::now() >= deadline {
                bail!(
                    "the agent did not create its ready file {} within {}s; its stderr so far:\n{}",
                    ready.display(),
                    READY_TIMEOUT.as_secs(),
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn join_stderr(&mut self) {
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }

    /// SIGINT by PID, wait up to 10 s (then SIGKILL), collect the output.
    fn stop(mut self) -> Result<Stopped> {
        util::signal(self.pid, libc::SIGINT)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = self.exited()? {
                break st;
            }
            if Instant::now() >= deadline {
                crate::outln!("the agent did not stop within 10 s of SIGINT; sending SIGKILL");
                util::signal(self.pid, libc::SIGKILL)?;
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(h) = self.stdout.take() {
            let _ = h.join();
        }
        let stdout = self
            .stdout_lines
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        self.join_stderr();
        Ok(Stopped {
            status,
            stdout,
            stderr_tail: self.stderr_tail(),
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            crate::errln!("stopping the agent (pid {})", self.pid);
        }
        util::stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(5));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_nested_http_record() {
        let v: Value = serde_json::from_str(
            r#"{"kind":"http","source":{"pod":"svc-recommendation-engine-04","ip":"10.77.0.24"},
                "destination":{"pod":"svc-user-profile-service-0","port":80},
                "http":{"method":"GET","path":"/internal/admin/v0/users/lookup","query":"state=CA",
                        "status":200,"response_bytes":9612}}"#,
        )
        .unwrap();
        assert_eq!(
            describe_record(&v),
            "http   svc-recommendation-engine-04 → svc-user-profile-service-0:80  GET \
             /internal/admin/v0/users/lookup?state=CA  200  9612 B"
        );
    }

    #[test]
    fn describes_flat_and_loss_records() {
        let v: Value = serde_json::from_str(
            r#"{"kind":"flow","src":"10.77.0.1:5000","dst":"10.77.0.2:80","bytes":10}"#,
        )
        .unwrap();
        assert_eq!(
            describe_record(&v),
            "flow   10.77.0.1:5000 → 10.77.0.2:80  10 B"
        );
        let v: Value = serde_json::from_str(
            r#"{"kind":"flow","observer":"client","source":{"kind":"pod","pod":"a","port":4000},
                "destination":{"kind":"external","pod":"partner-api","port":80},
                "bytes_to_server":120,"bytes_to_client":900,"close":"fin"}"#,
        )
        .unwrap();
        assert_eq!(
            describe_record(&v),
            "flow   (client) a:4000 → partner-api:80  120 B → / ← 900 B  (fin)"
        );
        let v: Value =
            serde_json::from_str(r#"{"kind":"loss","stage":"ringbuf","count":3}"#).unwrap();
        assert!(describe_record(&v).starts_with("loss   {"));
    }

    #[test]
    fn quarantine_edit_replaces_only_the_section_and_keeps_line_numbers() {
        let policy =
            std::fs::read_to_string(crate::repo_root().join("deploy/examples/vantage/policy.yaml"))
                .unwrap();
        let edited = quarantine_policy(&policy, QUARANTINED);
        assert_eq!(edited.lines().count(), policy.lines().count());
        assert!(edited.contains(
            "quarantine:\n  mode: enforce\n  pods: [vantage/svc-recommendation-engine-04]\n  network_policies: true\n\n"
        ));
        let changed: Vec<(&str, &str)> = policy
            .lines()
            .zip(edited.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(
            changed,
            [
                ("  mode: observe", "  mode: enforce"),
                (
                    "  pods: []",
                    "  pods: [vantage/svc-recommendation-engine-04]"
                )
            ]
        );
        // No section: appended. A flow mapping: replaced.
        assert_eq!(
            quarantine_policy("version: 1", "a/b"),
            "version: 1\nquarantine:\n  mode: enforce\n  pods: [a/b]\n  network_policies: true\n"
        );
        assert_eq!(
            quarantine_policy(
                "version: 1\nquarantine: {pods: [x]}\naggregation: {}\n",
                "a/b"
            ),
            "version: 1\nquarantine:\n  mode: enforce\n  pods: [a/b]\n  network_policies: true\naggregation: {}\n"
        );
    }

    #[test]
    fn policy_argument_is_taken_out_of_the_agent_arguments() {
        let args = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            take_policy_arg(&args(&["--policy", "p.yaml", "--idle-timeout", "5s"])),
            (
                Some(PathBuf::from("p.yaml")),
                args(&["--idle-timeout", "5s"])
            )
        );
        assert_eq!(
            take_policy_arg(&args(&["--policy=q.yaml"])),
            (Some(PathBuf::from("q.yaml")), vec![])
        );
        assert_eq!(take_policy_arg(&args(&["-v"])), (None, args(&["-v"])));
    }

    fn rec(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn checklist_passes_on_the_incident_and_names_what_is_missing() {
        let src = r#"{"kind":"pod","pod":"svc-recommendation-engine-04","service":"svc-recommendation-engine"}"#;
        let viol = |seq: u32, rule: &str, flow: u32, agg: bool| {
            rec(&format!(
                r#"{{"seq":{seq},"kind":"violation","rule":"{rule}","severity":"critical","source":{src},
                   "destination":{{"pod":"svc-user-profile-service-0"}},"flow_id":{flow},"count":1,
                   "aggregated":{agg},"route":"{LOOKUP_ROUTE}","message":"m"}}"#
            ))
        };
        let mut records = vec![
            viol(1, "undocumented-endpoint", 7, false),
            viol(2, "sensitive-fields", 7, false),
            viol(3, "response-size-anomaly", 7, false),
            rec(&format!(
                r#"{{"seq":4,"kind":"http","source":{src},"flow_id":7,
                   "http":{{"path":"{LOOKUP_ROUTE}","query":"fields=ssn_last4&state=CA"}}}}"#
            )),
            rec(r#"{"seq":5,"kind":"policy","event":"reloaded"}"#),
            viol(6, "quarantine-breach", 0, false),
            rec(
                r#"{"seq":7,"kind":"quarantine","namespace":"vantage","pod":"svc-recommendation-engine-04",
                    "mode":"enforce","attempts_blocked":6,"escaped":0}"#,
            ),
        ];
        let checks = checklist(&records);
        assert_eq!(checks.len(), 5);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        assert!(checks[0].text.contains("?state=CA"), "{}", checks[0].text);

        // A violation from another pod, and a lookup that got through after the quarantine.
        records.push(rec(
            r#"{"seq":8,"kind":"violation","rule":"egress-not-allowed","source":{"pod":"svc-checkout-0"}}"#,
        ));
        records.push(rec(&format!(
            r#"{{"seq":9,"kind":"http","source":{src},"flow_id":9,"http":{{"path":"{LOOKUP_ROUTE}"}}}}"#
        )));
        let checks = checklist(&records);
        let failed: Vec<usize> = (0..checks.len()).filter(|&i| !checks[i].ok).collect();
        assert_eq!(failed, [3, 4], "{checks:#?}");
        assert!(
            checks[3]
                .text
                .contains("seq 8 egress-not-allowed from svc-checkout-0")
        );
    }

    #[test]
    fn violations_table_shortens_messages() {
        let v = rec(
            r#"{"seq":12,"kind":"violation","rule":"quarantine-breach","severity":"critical","count":5,
                "aggregated":true,"route":"tcp/80",
                "source":{"pod":"svc-recommendation-engine-04","service":"svc-recommendation-engine"},
                "destination":{"pod":"svc-user-profile-service-0"},
                "message":"traffic from a quarantined pod (pod vantage/svc-recommendation-engine-04 is listed; mode enforce): svc-recommendation-engine-04 (svc-recommendation-engine) → svc-user-profile-service-0 (svc-user-profile-service): connection attempt to port 80 blocked in the kernel (repeated 5 more times in this window)"}"#,
        );
        let t = violations_table(&[v]);
        let row = t.lines().nth(1).unwrap();
        assert!(row.starts_with("  12  quarantine-breach  critical  +5 (agg.)  svc-recommendation-engine-04 → svc-user-profile-service-0  tcp/80"), "{t}");
        assert!(
            row.ends_with("connection attempt to port 80 blocked in the kernel"),
            "{t}"
        );
    }
}
