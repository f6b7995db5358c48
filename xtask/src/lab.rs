//! The local lab: a small Kubernetes-like "node" built from network namespaces, veth pairs
//! and cgroups, described by an inventory file (see [`crate::inventory`]).
//!
//! Topology for lab prefix `P` (default `mlab`; every name ≤ 15 characters, so labs with
//! different prefixes coexist):
//!
//! - netns `P-node` holds the bridge `Pbr`;
//! - pod *i* is netns `P-pi` with `eth0` (veth peer `Ppi` on the bridge), the pod's first IPv4
//!   as /16 and first IPv6 (if any) as /64, `lo` up; its processes run in cgroup
//!   `<cgroup2 mount>/P/<pod cgroup>`;
//! - external *j* is netns `P-xj` (veth `Pxj`), on the same bridge but outside the lab's root
//!   cgroup `<cgroup2 mount>/P`, which is what the agent attaches to;
//! - with a [`Mesh`] ([`Lab::up_with_mesh`], `lab up --mesh istio`), every pod also gets
//!   Istio's iptables rules and a real sidecar proxy in its netns and cgroup ([`mesh`]).
//!
//! Nothing is created in the root network namespace: lab traffic never leaves the lab's own
//! namespaces. Every created thing is recorded in `/run/monitor-lab/P.json` before it exists
//! (see [`State`]) and is removed by [`Lab::down`], on `Drop`, when `up` fails half-way, and by
//! [`down_from_state`] (`cargo xtask lab down`) after a crash.

pub mod mesh;
mod net;
mod servers;
mod state;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

pub use mesh::{Mesh, Sidecar};
pub use servers::{ECHO_PY, SERVER_PY};

/// `program` as a command inside network namespace `netns`, entered with nsenter: unlike
/// `ip netns exec` it keeps this mount namespace (so /sys still shows the cgroup tree, which
/// the agent needs), and it execs, so the child's PID is the program's.
pub fn nsenter(netns: &str, program: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{netns}")).arg(program);
    c
}
pub use state::{LabProcess, ProcessId, STATE_DIR, State};

use crate::inventory::Inventory;
use crate::{cgroup, util};

/// Lab name prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "mlab";

/// Longest allowed prefix (keeps every interface name within 15 characters).
pub const MAX_PREFIX_LEN: usize = 8;

/// How long `up` waits for all servers to accept connections.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Inventory file (topology and servers).
    pub inventory: PathBuf,
    /// Name prefix for namespaces, interfaces, the root cgroup and the state file.
    pub prefix: String,
    /// cgroup2 mount to use instead of the one found in `/proc/self/mountinfo`.
    pub cgroup_mount: Option<PathBuf>,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            inventory: crate::default_inventory(),
            prefix: DEFAULT_PREFIX.to_string(),
            cgroup_mount: None,
        }
    }
}

/// A pod or external host of a running lab.
#[derive(Debug, Clone)]
pub struct Member {
    /// Name from the inventory.
    pub name: String,
    /// Its network namespace (`ip netns` name).
    pub netns: String,
    /// The bridge-side end of its veth pair (in the node netns).
    pub host_veth: String,
    /// IPv4 address of `eth0`.
    pub ipv4: Ipv4Addr,
    /// IPv6 address of `eth0`, if the inventory gives one.
    pub ipv6: Option<Ipv6Addr>,
    /// Its cgroup directory; `None` for externals.
    pub cgroup: Option<PathBuf>,
    /// Servers started in it, as `kind:port`.
    pub servers: Vec<String>,
}

impl Member {
    /// Whether this is an external host (no cgroup, outside the monitored tree).
    pub fn is_external(&self) -> bool {
        self.cgroup.is_none()
    }
}

/// A running lab. Dropping it tears it down (unless [`Lab::detach`]ed).
#[derive(Debug)]
pub struct Lab {
    inventory: Inventory,
    state: State,
    members: Vec<Member>,
    node_netns: String,
    bridge: String,
    /// Lab servers (and sidecars) we own (reaped on teardown).
    children: Vec<Child>,
    /// The mesh emulated, if any.
    mesh: Option<Mesh>,
    /// One per pod in mesh mode.
    sidecars: Vec<Sidecar>,
    down_done: bool,
    detached: bool,
}

impl Lab {
    /// Builds the lab described by `opts.inventory` and waits until every server accepts
    /// connections. On any error, everything created so far is removed before returning.
    pub fn up(opts: &LabOptions) -> Result<Lab> {
        Self::up_with_mesh(opts, None)
    }

    /// [`Lab::up`], and with `mesh` an Istio-like sidecar in every pod (see [`mesh`]): the
    /// rules, certificates and proxies are in place and listening when this returns.
    ///
    /// (A separate entry point rather than a field of [`LabOptions`], whose struct literals
    /// elsewhere in the workspace name every field.)
    pub fn up_with_mesh(opts: &LabOptions, mesh: Option<Mesh>) -> Result<Lab> {
        let started = Instant::now();
        util::require_root("the lab")?;
        check_prefix(&opts.prefix)?;
        let prefix = opts.prefix.as_str();
        let inventory = Inventory::load(&opts.inventory)?;
        let mount = cgroup::cgroup2_mount(opts.cgroup_mount.as_deref())?;
        if let Some(st) = State::load(prefix)? {
            bail!(
                "lab {prefix:?} is already up (state file {}, built from {}); remove it with \
                 `cargo xtask lab down --prefix {prefix}`",
                State::path(prefix).display(),
                st.inventory.display()
            );
        }
        let inventory_path = std::fs::canonicalize(&opts.inventory)
            .with_context(|| format!("cannot resolve {}", opts.inventory.display()))?;
        let state = State::new(prefix, &inventory_path, &mount);
        let members = plan_members(prefix, &inventory, &state.root_cgroup);
        let node_netns = format!("{prefix}-node");
        let bridge = format!("{prefix}br");

        // Refuse to adopt things we did not record (a lab whose state file was deleted, or a
        // name clash with something else): we would remove them on `down`.
        let mut clashes: Vec<String> = std::iter::once(&node_netns)
            .chain(members.iter().map(|m| &m.netns))
            .filter(|ns| net::netns_exists(ns))
            .map(|ns| format!("netns {ns} (`ip netns del {ns}`)"))
            .collect();
        if state.root_cgroup.exists() {
            clashes.push(format!(
                "cgroup {} (`rmdir` it and its sub-directories)",
                state.root_cgroup.display()
            ));
        }
        if !clashes.is_empty() {
            bail!(
                "lab {prefix:?} has no state file but these already exist (a lab whose state \
                 was lost?): {}; remove them, or use another --prefix",
                clashes.join(", ")
            );
        }

        // Claim the prefix atomically: a concurrent `up` with the same prefix fails here
        // instead of racing us for the same names.
        state.claim()?;
        let mut lab = Lab {
            inventory,
            state,
            members,
            node_netns,
            bridge,
            children: Vec::new(),
            mesh,
            sidecars: Vec::new(),
            down_done: false,
            detached: false,
        };
        if let Err(e) = lab.build() {
            // Tear down now (not in Drop) so the caller sees teardown failures too.
            let td = lab.down();
            lab.detached = true;
            return Err(match td {
                Ok(()) => e.context(format!(
                    "lab {prefix:?} failed to come up (everything it created was removed)"
                )),
                Err(td) => e.context(format!(
                    "lab {prefix:?} failed to come up, and the teardown failed too: {td:#}"
                )),
            });
        }
        crate::outln!(
            "lab {prefix}: up in {} from {}{}; agent --cgroup {}",
            util::fmt_duration(started.elapsed()),
            lab.state.inventory.display(),
            mesh.map_or_else(String::new, |m| format!(" with mesh {m}")),
            lab.attach_cgroup().display()
        );
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let st = &mut self.state;
        st.save()?;
        std::fs::create_dir_all(&st.run_dir)
            .with_context(|| format!("cannot create {}", st.run_dir.display()))?;
        servers::write_scripts(&st.run_dir)?;

        // Node netns and bridge.
        create_netns(st, &self.node_netns)?;
        net::ip_in(
            &self.node_netns,
            &["link", "add", &self.bridge, "type", "bridge"],
        )?;
        net::ip_in(&self.node_netns, &["link", "set", &self.bridge, "up"])?;

        // One netns per pod and external, wired to the bridge.
        for m in &self.members {
            util::check_interrupted()?;
            create_netns(st, &m.netns)?;
            net::ip_in(
                &self.node_netns,
                &[
                    "link",
                    "add",
                    &m.host_veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &m.netns,
                ],
            )?;
            net::ip_in(
                &self.node_netns,
                &["link", "set", &m.host_veth, "master", &self.bridge, "up"],
            )?;
            let v4 = format!("{}/{}", m.ipv4, crate::inventory::LAB_V4_NET.1);
            net::ip_in(&m.netns, &["addr", "add", &v4, "dev", "eth0"])?;
            if let Some(v6) = m.ipv6 {
                let v6 = format!("{v6}/{}", crate::inventory::LAB_V6_NET.1);
                net::ip_in(&m.netns, &["addr", "add", &v6, "dev", "eth0", "nodad"])?;
            }
            net::ip_in(&m.netns, &["link", "set", "eth0", "up"])?;
        }

        // The lab's root cgroup and one cgroup per pod (creating intermediate directories).
        let root = st.root_cgroup.clone();
        create_cgroup(st, &root)?;
        for m in &self.members {
            let Some(cg) = &m.cgroup else { continue };
            let rel = cg.strip_prefix(&st.root_cgroup).unwrap_or(cg);
            let mut dir = st.root_cgroup.clone();
            for part in rel.components() {
                dir.push(part);
                if !dir.exists() {
                    create_cgroup(st, &dir)?;
                }
            }
        }

        self.start_servers()?;
        match self.mesh {
            Some(mesh) => self.start_mesh(mesh),
            None => Ok(()),
        }
    }

    fn start_servers(&mut self) -> Result<()> {
        let ipv6 = Path::new("/proc/sys/net/ipv6").exists();
        let mut started = Vec::new();
        let hosts: Vec<_> = self
            .inventory
            .hosts()
            .map(|h| (h.name.to_string(), h.serve.to_vec()))
            .collect();
        for (name, serve) in hosts {
            if serve.is_empty() {
                continue;
            }
            util::check_interrupted()?;
            let host_dir = self.state.run_dir.join(&name);
            std::fs::create_dir_all(&host_dir)
                .with_context(|| format!("cannot create {}", host_dir.display()))?;
            for server in &serve {
                let plan = servers::prepare(&self.state.run_dir, &host_dir, server, ipv6)
                    .with_context(|| {
                        format!("{name}: preparing {}:{}", server.kind, server.port)
                    })?;
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&plan.log)
                    .with_context(|| format!("cannot open {}", plan.log.display()))?;
                let mut cmd = self.command_os(&name, &plan.program)?;
                cmd.args(&plan.args)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    // Own process group: a Ctrl-C in the terminal reaches xtask, which tears
                    // the lab down in order, rather than killing the servers under it.
                    .process_group(0);
                let child = cmd
                    .spawn()
                    .with_context(|| format!("{name}: cannot start {}", util::display_cmd(&cmd)))?;
                let id = ProcessId::of(child.id());
                self.children.push(child);
                if let Some(id) = id {
                    self.state.processes.push(LabProcess {
                        id,
                        pod: name.clone(),
                        what: plan.what.clone(),
                    });
                    self.state.save()?;
                }
                started.push((name.clone(), server.port, plan, id));
            }
        }
        self.wait_servers(&started)
    }

    /// Waits until every started server accepts TCP connections on its pod's IPv4 address,
    /// probing from inside the pod's netns.
    fn wait_servers(
        &self,
        started: &[(String, u16, servers::Plan, Option<ProcessId>)],
    ) -> Result<()> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        for (name, port, plan, id) in started {
            let m = self.member(name)?;
            let ip = IpAddr::V4(m.ipv4);
            let outcome = net::in_netns(&m.netns, || {
                loop {
                    if net::tcp_connects(ip, *port) {
                        return Ok(());
                    }
                    if id.is_none_or(|id| !id.running()) {
                        return Err("exited during start-up");
                    }
                    if util::interrupted() {
                        return Err("interrupted (Ctrl-C)");
                    }
                    if Instant::now() >= deadline {
                        return Err("does not accept connections");
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
            })?;
            if let Err(why) = outcome {
                // The run directory goes away with the teardown: keep a copy of the log.
                let kept = std::env::temp_dir().join(format!(
                    "monitor-lab-{}-{name}-{}.log",
                    self.state.prefix,
                    plan.what.replace(':', "-")
                ));
                let log = match std::fs::copy(&plan.log, &kept) {
                    Ok(_) => kept,
                    Err(_) => plan.log.clone(),
                };
                bail!(
                    "pod {name}: {} on {ip}:{port} {why} (timeout {}s); its log, kept in {}:\n{}",
                    plan.what,
                    SERVER_START_TIMEOUT.as_secs(),
                    log.display(),
                    indent(&util::tail_file(&log, 20))
                );
            }
        }
        Ok(())
    }

    /// The mesh this lab emulates, if any.
    pub fn mesh(&self) -> Option<Mesh> {
        self.mesh
    }

    /// The sidecars (mesh mode: one per pod, in inventory order; empty otherwise).
    pub fn sidecars(&self) -> &[Sidecar] {
        &self.sidecars
    }

    /// The sidecar of pod `pod` (mesh mode).
    pub fn sidecar(&self, pod: &str) -> Result<&Sidecar> {
        self.sidecars
            .iter()
            .find(|s| s.pod == pod)
            .with_context(|| {
                format!(
                    "lab {}: no sidecar in {pod:?} (mesh: {})",
                    self.prefix(),
                    self.mesh
                        .map_or_else(|| "off".to_string(), |m| m.to_string())
                )
            })
    }

    /// The lab's root cgroup: pass it to `monitor agent --cgroup`.
    pub fn attach_cgroup(&self) -> &Path {
        &self.state.root_cgroup
    }

    /// The lab name prefix.
    pub fn prefix(&self) -> &str {
        &self.state.prefix
    }

    /// The run directory (`/run/monitor-lab/<prefix>`): server configs and logs; removed on
    /// teardown, so a good place for test scratch files too.
    pub fn run_dir(&self) -> &Path {
        &self.state.run_dir
    }

    /// The (absolute) inventory file the lab was built from.
    pub fn inventory_path(&self) -> &Path {
        &self.state.inventory
    }

    /// The parsed inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Pods and externals, in inventory order (pods first).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// A pod or external by name.
    pub fn member(&self, pod: &str) -> Result<&Member> {
        self.members
            .iter()
            .find(|m| m.name == pod)
            .with_context(|| {
                let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
                format!(
                    "lab {}: no pod or external named {pod:?} (have: {})",
                    self.prefix(),
                    names.join(", ")
                )
            })
    }

    /// First IPv4 address of a pod or external.
    pub fn pod_ip(&self, pod: &str) -> Result<IpAddr> {
        Ok(IpAddr::V4(self.member(pod)?.ipv4))
    }

    /// IPv6 address of a pod or external, if it has one.
    pub fn pod_ipv6(&self, pod: &str) -> Result<Option<IpAddr>> {
        Ok(self.member(pod)?.ipv6.map(IpAddr::V6))
    }

    /// The node's network namespace (the bridge's side; where the agent's own connections,
    /// e.g. to a test collector on 127.0.0.1, stay private to the lab).
    pub fn node_netns(&self) -> &str {
        &self.node_netns
    }

    /// The network namespace name of a pod or external (for `ip netns exec`).
    pub fn netns(&self, pod: &str) -> Result<&str> {
        Ok(&self.member(pod)?.netns)
    }

    /// A command that runs `program` inside pod `pod`: in its netns (via `ip netns exec`) and
    /// in its cgroup (joined in a `pre_exec` hook, before `exec`, so every socket it opens
    /// belongs to the pod). For externals: netns only. Add arguments with `.arg()`.
    /// Short-lived commands may be run directly; long-running ones should go through
    /// [`Lab::spawn`] so teardown stops them.
    pub fn command(&self, pod: &str, program: &str) -> Result<Command> {
        self.command_os(pod, program.as_ref())
    }

    fn command_os(&self, pod: &str, program: &std::ffi::OsStr) -> Result<Command> {
        let m = self.member(pod)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &m.netns]).arg(program);
        if let Some(cg) = &m.cgroup {
            let procs = net::cgroup_procs_cstring(cg)?;
            // SAFETY: the hook runs in the forked child before exec and only makes
            // async-signal-safe calls (open/write/close), allocating nothing.
            unsafe {
                cmd.pre_exec(move || net::join_cgroup(&procs));
            }
        }
        Ok(cmd)
    }

    /// Spawns `cmd` (normally from [`Lab::command`]) and records its PID, so that
    /// [`Lab::down`] (and `cargo xtask lab down` after a crash) stops it if it is still
    /// running. The caller owns the returned `Child` and may wait for it; teardown only
    /// signals the PID while its start time still matches.
    pub fn spawn(&mut self, pod: &str, mut cmd: Command) -> Result<Child> {
        self.member(pod)?;
        let child = cmd
            .spawn()
            .with_context(|| format!("{pod}: cannot start {}", util::display_cmd(&cmd)))?;
        if let Some(id) = ProcessId::of(child.id()) {
            let program = cmd.get_args().nth(3).unwrap_or(cmd.get_program());
            self.state.processes.push(LabProcess {
                id,
                pod: pod.to_string(),
                what: program.to_string_lossy().into_owned(),
            });
            self.state.save()?;
        }
        Ok(child)
    }

    /// Waits until `ip:port` accepts a TCP connection, connecting from inside `from`'s netns.
    pub fn wait_tcp(&self, from: &str, ip: IpAddr, port: u16, timeout: Duration) -> Result<()> {
        let ns = self.netns(from)?;
        let deadline = Instant::now() + timeout;
        let ok = net::in_netns(ns, || {
            loop {
                if net::tcp_connects(ip, port) {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        })?;
        if !ok {
            bail!("{ip}:{port} does not accept connections from {from} after {timeout:?}");
        }
        Ok(())
    }

    /// Stops every process the lab started (by PID), removes the namespaces, the cgroups,
    /// the run directory and the state file. Idempotent; also called on `Drop`.
    pub fn down(&mut self) -> Result<()> {
        if self.down_done {
            return Ok(());
        }
        self.state.teardown(&mut self.children)?;
        self.down_done = true;
        crate::outln!("lab {}: down", self.state.prefix);
        Ok(())
    }

    /// Leaves the lab running when this value is dropped (for `cargo xtask lab up`): the
    /// state file no longer names an owner, and `cargo xtask lab down` removes the lab.
    /// Returns the state file path.
    pub fn detach(mut self) -> Result<PathBuf> {
        self.state.owner = None;
        self.state.save()?;
        self.detached = true;
        // Dropping a `Child` neither kills nor waits: the servers keep running.
        self.children.clear();
        Ok(State::path(&self.state.prefix))
    }

    /// A human-readable table of the lab's members.
    pub fn describe(&self) -> String {
        let width = self.members.iter().map(|m| m.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for m in &self.members {
            let ips = match m.ipv6 {
                Some(v6) => format!("{} {v6}", m.ipv4),
                None => m.ipv4.to_string(),
            };
            let cg = m.cgroup.as_ref().map_or_else(
                || "(external: no cgroup)".to_string(),
                |c| c.display().to_string(),
            );
            let mut serves = if m.servers.is_empty() {
                String::new()
            } else {
                format!("  serves {}", m.servers.join(" "))
            };
            if let Some(s) = self.sidecars.iter().find(|s| s.pod == m.name) {
                serves.push_str(&format!("  sidecar pid {}", s.pid));
            }
            out.push_str(&format!(
                "  {:<3} {:<width$}  netns {:<10} {:<26} {cg}{serves}\n",
                if m.is_external() { "ext" } else { "pod" },
                m.name,
                m.netns,
                ips,
            ));
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.detached || self.down_done {
            return;
        }
        if let Err(e) = self.down() {
            crate::errln!(
                "lab {}: teardown on drop failed: {e:#}\nrun `cargo xtask lab down --prefix {}`",
                self.state.prefix,
                self.state.prefix
            );
        }
    }
}

/// Removes the lab `prefix` recorded in its state file (crash recovery for
/// `cargo xtask lab down`). Refuses while the process that owns the lab is still running
/// (it will tear down itself); see [`down_from_state_opts`] to force.
pub fn down_from_state(prefix: &str) -> Result<()> {
    down_from_state_opts(prefix, false)
}

/// [`down_from_state`], with `force` to remove a lab even while its owner process runs.
pub fn down_from_state_opts(prefix: &str, force: bool) -> Result<()> {
    util::require_root("removing the lab")?;
    check_prefix(prefix)?;
    let Some(mut state) = State::load(prefix)? else {
        let leftovers = leftovers(prefix);
        if leftovers.is_empty() {
            crate::outln!(
                "lab {prefix}: nothing to remove (no state file {})",
                State::path(prefix).display()
            );
            return Ok(());
        }
        bail!(
            "lab {prefix}: no state file {}, but these exist and look like a lab's: {}; \
             they were not recorded, so they are left alone: remove them by hand",
            State::path(prefix).display(),
            leftovers.join(", ")
        );
    };
    if let Some(owner) = state.owner
        && owner.pid != std::process::id()
        && owner.running()
        && !force
    {
        let comm = std::fs::read_to_string(format!("/proc/{}/cmdline", owner.pid))
            .unwrap_or_default()
            .replace('\0', " ");
        bail!(
            "lab {prefix} belongs to running process {} ({}), which tears it down when it \
             ends; stop that process, or use --force",
            owner.pid,
            comm.trim()
        );
    }
    if force {
        // We take the lab over: a later `lab down` must not wait for the old owner.
        state.owner = None;
    }
    let n = state.netns.len();
    let p = state.processes.len();
    state.teardown(&mut Vec::new())?;
    crate::outln!(
        "lab {prefix}: down (removed {n} network namespaces, stopped up to {p} processes)"
    );
    Ok(())
}

/// Things that look like lab `prefix` but are not recorded: `(what, how to remove)`.
fn leftovers(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| {
                    rest == "node"
                        || rest
                            .strip_prefix(['p', 'x'])
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                });
            if ours {
                found.push(format!("netns {name} (`ip netns del {name}`)"));
            }
        }
    }
    if let Ok(mount) = cgroup::cgroup2_mount(None) {
        let cg = mount.join(prefix);
        if cg.is_dir() {
            found.push(format!("cgroup {}", cg.display()));
        }
    }
    found.sort();
    found
}

/// Validates a lab prefix: 1-8 characters, lowercase ASCII letters and digits, starting with
/// a letter (names derived from it must fit the 15-character interface name limit).
pub fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!(
            "lab prefix {prefix:?}: use 1-{MAX_PREFIX_LEN} lowercase letters or digits, starting \
             with a letter"
        );
    }
    Ok(())
}

/// Derives names, addresses and cgroups of every member from the inventory.
fn plan_members(prefix: &str, inv: &Inventory, root_cgroup: &Path) -> Vec<Member> {
    let mut pods = 0usize;
    let mut exts = 0usize;
    inv.hosts()
        .map(|h| {
            let (netns, host_veth) = if h.cgroup.is_some() {
                pods += 1;
                (
                    format!("{prefix}-p{}", pods - 1),
                    format!("{prefix}p{}", pods - 1),
                )
            } else {
                exts += 1;
                (
                    format!("{prefix}-x{}", exts - 1),
                    format!("{prefix}x{}", exts - 1),
                )
            };
            Member {
                name: h.name.to_string(),
                netns,
                host_veth,
                // validate() guarantees an IPv4 address.
                ipv4: h.ipv4().unwrap_or(Ipv4Addr::UNSPECIFIED),
                ipv6: h.ipv6(),
                cgroup: h.cgroup.map(|c| root_cgroup.join(c.trim_matches('/'))),
                servers: h
                    .serve
                    .iter()
                    .map(|s| format!("{}:{}", s.kind, s.port))
                    .collect(),
            }
        })
        .collect()
}

fn create_netns(st: &mut State, name: &str) -> Result<()> {
    st.netns.push(name.to_string());
    st.save()?;
    net::ip(&["netns", "add", name])?;
    net::ip_in(name, &["link", "set", "lo", "up"])
}

fn create_cgroup(st: &mut State, dir: &Path) -> Result<()> {
    st.cgroups.push(dir.to_path_buf());
    st.save()?;
    std::fs::create_dir(dir).with_context(|| format!("cannot create cgroup {}", dir.display()))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        check_prefix("mlab").unwrap();
        check_prefix("t1").unwrap();
        assert!(check_prefix("").is_err());
        assert!(check_prefix("1lab").is_err());
        assert!(check_prefix("mLab").is_err());
        assert!(check_prefix("mlab-x").is_err());
        assert!(check_prefix("abcdefghi").is_err());
    }

    #[test]
    fn names_fit_ifnamsiz() {
        let mut yaml = String::from("node: n\npods:\n");
        for i in 0..120 {
            yaml.push_str(&format!(
                "  - {{name: p{i}, ips: [\"10.77.1.{}\"], cgroup: p{i}}}\n",
                i + 1
            ));
        }
        yaml.push_str("externals:\n  - {name: x, ips: [\"10.77.200.1\"]}\n");
        let inv = Inventory::parse(&yaml, "t").unwrap();
        inv.validate().unwrap();
        let members = plan_members("abcdefgh", &inv, Path::new("/cg/abcdefgh"));
        for m in &members {
            assert!(m.netns.len() <= 15 && m.host_veth.len() <= 15, "{m:?}");
        }
        assert_eq!(members[119].netns, "abcdefgh-p119");
        assert_eq!(members[120].netns, "abcdefgh-x0");
        assert_eq!(members[120].cgroup, None);
        assert_eq!(members[0].cgroup, Some(PathBuf::from("/cg/abcdefgh/p0")));
    }
}
