//! The demo from start to end: setup, the release build, the lab, the policy copy,
//! certificates, the collector and the agent, the four phases ([`super::phases`]), then the
//! records, the checklist, the collector's copy through `monitor observe` and `monitor
//! report`, and the teardown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::DemoOptions;
use super::agent::{COLLECTOR_URL, DemoAgent, DemoCollector};
use super::checks::{checklist, collector_check, reload_check};
use super::phases::Demo;
use super::present::{
    attestation, check_line, describe_record, emphasize, s, say, summarize_kinds, violations_table,
};
use super::scenario::{self, BACKDOOR_POD, LOOKUP_ROUTE};
use crate::harness::collector::CollectorFiles;
use crate::lab::{Lab, LabOptions};
use crate::util;

/// Splits a `--policy FILE` / `--policy=FILE` out of the agent's extra arguments.
pub(super) fn take_policy_arg(args: &[String]) -> (Option<PathBuf>, Vec<String>) {
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
    let missing: Vec<&str> = scenario::pods()
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
    let collector = DemoCollector::start(
        &bin,
        lab.node_netns(),
        CollectorFiles {
            listen: "127.0.0.1:7443",
            certs: &certs,
            store: &store,
            sink: &sink_file,
            ready: &lab.run_dir().join("collector-ready"),
        },
        &out_dir.join("collector.log"),
    )?;
    crate::outln!("collector ready (pid {})", collector.pid());
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
    let mut agent = DemoAgent::start(
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
        agent.pid(),
        util::fmt_duration(agent.started().elapsed())
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
    checks.insert(2, reload_check(reload_reported));
    for c in &checks {
        crate::outln!("{}", check_line(c.ok, &c.text));
    }

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
    checks.push(collector_check(delivered, records.len(), cli_ok));
    if let Some(c) = checks.last() {
        crate::outln!("{}", check_line(c.ok, &c.text));
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    let total_checks = checks.len();
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
