//! `cargo xtask demo`: replays the Vantage incident (DESIGN §1) on this machine.
//!
//! setup (fast path) → release build of `monitor` → lab up (Vantage inventory) → the agent in
//! the root netns and cgroup, attached to the lab's root cgroup → real curl traffic from the
//! pods: normal calls, probes and scrapes, the same-service cache flush, one call to the
//! partner API, and the backdoor's `GET /internal/admin/v0/users/lookup` from
//! `svc-recommendation-engine-04` → agent stopped with SIGINT → its records printed, the lookup
//! highlighted → lab down. A guard tears everything down on error and on Ctrl-C.

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
    "svc-recommendation-engine-04",
];

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
    /// Extra arguments for `monitor agent` (e.g. a policy file).
    pub agent_args: Vec<String>,
    /// Echo the agent's stderr (logs) live.
    pub agent_logs: bool,
}

fn say(msg: &str) {
    crate::outln!("\n==> {msg}");
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
    let ready = lab.run_dir().join("ready");
    say(&format!(
        "starting the agent (root netns and cgroup), attached to {}",
        lab.attach_cgroup().display()
    ));
    let mut agent = Agent::start(
        &bin,
        lab.inventory_path(),
        lab.attach_cgroup(),
        &ready,
        &opts.agent_args,
        &out_dir.join("agent.log"),
        opts.agent_logs,
    )?;
    agent.wait_ready(&ready)?;
    crate::outln!(
        "agent ready (pid {}) after {}",
        agent.pid,
        util::fmt_duration(agent.started.elapsed())
    );

    drive_traffic(&lab, &mut agent)?;

    say("letting the agent drain (1 s), then stopping it with SIGINT");
    util::sleep_interruptible(Duration::from_secs(1))?;
    let stopped = agent.stop()?;
    let records_file = out_dir.join("records.ndjson");
    std::fs::write(&records_file, stopped.stdout.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", records_file.display()))?;
    if !stopped.status.success() {
        crate::outln!(
            "warning: the agent exited with {} after SIGINT; its log:\n{}",
            stopped.status,
            stopped.stderr_tail
        );
    }

    say(&format!(
        "records from the agent ({} lines; also in {})",
        stopped.stdout.len(),
        records_file.display()
    ));
    let lookups = print_records(&stopped.stdout);

    say("tearing the lab down");
    lab.down()?;
    crate::outln!(
        "\ndemo finished in {}: {} record(s) mention {LOOKUP_ROUTE}; agent log in {}",
        util::fmt_duration(started.elapsed()),
        lookups,
        out_dir.join("agent.log").display()
    );
    if stopped.stdout.is_empty() {
        bail!(
            "the agent printed no records on stdout; see its log {}",
            out_dir.join("agent.log").display()
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

fn drive_traffic(lab: &Lab, agent: &mut Agent) -> Result<()> {
    let get = |from: &'static str, to: &'static str, target: String| Call {
        from,
        to,
        method: "GET",
        target,
    };

    say("normal traffic: recommendation engines 01-03 read user preferences");
    let mut n = 1000;
    for from in &RECO[..3] {
        for _ in 0..3 {
            n += 7;
            call(
                lab,
                agent,
                &get(
                    from,
                    USER_PROFILE,
                    format!("/api/v2/users/preferences?user_id={n}"),
                ),
                false,
            )?;
        }
    }
    call(
        lab,
        agent,
        &get(
            CHECKOUT,
            USER_PROFILE,
            "/api/v2/users/preferences?user_id=4242".into(),
        ),
        false,
    )?;
    for page in 1..=2 {
        call(
            lab,
            agent,
            &get(GATEWAY, CATALOG, format!("/api/v1/products?page={page}")),
            false,
        )?;
    }

    say("platform traffic: the scraper probes /internal/health and scrapes /internal/metrics");
    let servers: Vec<String> = lab
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
    for to in &servers {
        for target in ["/internal/health", "/internal/metrics"] {
            call(
                lab,
                agent,
                &Call {
                    from: SCRAPER,
                    to,
                    method: "GET",
                    target: target.into(),
                },
                false,
            )?;
        }
    }

    say("svc-product-catalog flushes its own cache (same service: documented and allowed)");
    call(
        lab,
        agent,
        &Call {
            from: CATALOG,
            to: CATALOG,
            method: "POST",
            target: "/internal/admin/cache/flush".into(),
        },
        false,
    )?;

    say("svc-checkout calls the partner API (external)");
    call(
        lab,
        agent,
        &get(CHECKOUT, PARTNER, "/v1/ping".into()),
        false,
    )?;

    say("THE INCIDENT: svc-recommendation-engine-04 calls the undocumented admin lookup");
    for state in ["CA", "NY", "TX"] {
        let target = format!(
            "{LOOKUP_ROUTE}?fields=ssn_last4,email,phone,address_street,address_city,\
             address_state,address_zip&state={state}&limit=48"
        );
        call(lab, agent, &get(RECO[3], USER_PROFILE, target), true)?;
    }
    Ok(())
}

/// Runs one curl from `c.from` to `c.to`'s nginx, prints the outcome, and fails if the agent
/// died in the meantime.
fn call(lab: &Lab, agent: &mut Agent, c: &Call<'_>, highlight: bool) -> Result<()> {
    util::check_interrupted()?;
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
    cmd.args([
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
    ])
    .args(["-w", "%{http_code} %{size_download}", "-H"])
    .arg(format!("Host: {host}"));
    if c.method == "POST" {
        cmd.args(["--data", ""]);
    }
    cmd.arg(&url);
    let out = util::output_raw(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.split_whitespace();
    let status = parts.next().unwrap_or("---");
    let bytes = parts.next().unwrap_or("?");
    let line = format!(
        "  {:<28} → {:<26} {} {}  → {status} ({bytes} B)",
        c.from, c.to, c.method, c.target
    );
    crate::outln!("{}", if highlight { emphasize(&line) } else { line });
    if !out.status.success() {
        bail!(
            "curl from {} to {url} failed ({}): {}",
            c.from,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if let Some(st) = agent.exited()? {
        bail!(
            "the agent exited ({st}) during the traffic; its log:\n{}",
            agent.stderr_tail()
        );
    }
    Ok(())
}

fn emphasize(line: &str) -> String {
    if std::io::stdout().is_terminal() {
        format!("\x1b[1;31m{line}\x1b[0m")
    } else {
        format!("{line}   <<<<")
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
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr: Option<JoinHandle<()>>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn start(
        bin: &Path,
        inventory: &Path,
        cgroup: &Path,
        ready: &Path,
        extra: &[String],
        log: &Path,
        echo_logs: bool,
    ) -> Result<Self> {
        let _ = std::fs::remove_file(ready);
        let mut cmd = Command::new(bin);
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
        let stdout = std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
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
            stderr: Some(stderr),
            stderr_lines,
        })
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
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
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
            let _ = util::signal(self.pid, libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = util::signal(self.pid, libc::SIGKILL);
                let _ = self.child.wait();
            }
        }
    }
}

/// Prints the records one per line; returns how many mention the lookup route.
pub fn print_records(lines: &[String]) -> usize {
    let mut lookups = 0;
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let is_lookup = line.contains(LOOKUP_ROUTE);
        let text = match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                let kind = v
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                *kinds.entry(kind).or_default() += 1;
                describe_record(&v)
            }
            Err(_) => format!("(not JSON) {line}"),
        };
        if is_lookup {
            lookups += 1;
            crate::outln!("{}", emphasize(&text));
        } else {
            crate::outln!("{text}");
        }
    }
    let counts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    crate::outln!("-- {} record(s): {}", lines.len(), counts.join(", "));
    lookups
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
}
