//! `cargo xtask vm-test`: the lab and kernel-program tests on a second kernel, Debian's 6.1 cloud kernel, in a
//! qemu VM (TCG: no KVM needed; nested KVM stalls on these machines).
//!
//! 1. Fetch (cached under `<target>/vm-test/cache`, nothing installed): the kernel and its
//!    modules, busybox-static, and qemu unless the machine has it ([`fetch`]).
//! 2. Build the release `monitor`, the lab test binaries and the kernel-program tests
//!    (`monitor/tests/kernel.rs`, `BPF_PROG_TEST_RUN`) with `cargo test --no-run`, list each
//!    binary's tests, and drop the ones in [`plan::EXCLUDED`] (each printed with its reason).
//! 3. Build an initramfs ([`initramfs`]): busybox, the stripped binaries, the tools the tests
//!    run (iproute2, nsenter, setpriv, curl, nginx, wrk, bpftool, tcpdump, Python with the gRPC
//!    packages) with their libraries, the repository files the tests read at their own paths,
//!    the veth and bridge modules, and an init script ([`plan::init_script`]) that mounts
//!    proc/sys/cgroup2/bpffs/tracefs/debugfs, starts the agent once to log its kernel feature
//!    probe, runs each test alone (`--exact`, with a time limit) and powers off.
//! 4. Boot it, read the serial console (all of it kept in `<target>/vm-test/serial.log`), and
//!    report per test: passed, failed (with its output's tail), failed as expected (with the
//!    reason from [`plan::EXPECTED_FAILURES`]), excluded (with the reason), interrupted or not
//!    run. Fails unless every test that ran passed or failed as expected. The VM is killed (by
//!    PID) at the overall time limit or on Ctrl-C.

mod cpio;
mod fetch;
mod initramfs;
mod plan;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

pub use plan::{EXCLUDED, EXPECTED_FAILURES, Outcome};

use crate::packages::{KERNEL_TESTS, MONITOR_PACKAGE, TESTS_PACKAGE};
use crate::util;

/// Options of `cargo xtask vm-test`.
#[derive(Debug, Clone)]
pub struct VmTestOptions {
    /// Kernel package (default: the newest cached, else what `linux-image-cloud-amd64`
    /// depends on).
    pub kernel_package: Option<String>,
    /// Run only tests whose `binary::test` contains one of these.
    pub filter: Vec<String>,
    /// VM memory, MiB.
    pub memory_mib: u32,
    /// VM CPUs.
    pub cpus: u32,
    /// Per-test time limit inside the VM.
    pub test_timeout: Duration,
    /// Limit for the whole VM run.
    pub timeout: Duration,
    /// Echo the whole serial console.
    pub verbose: bool,
}

impl Default for VmTestOptions {
    fn default() -> Self {
        Self {
            kernel_package: None,
            filter: Vec::new(),
            memory_mib: 3072,
            cpus: 2,
            test_timeout: Duration::from_secs(600),
            timeout: Duration::from_secs(60 * 60),
            verbose: false,
        }
    }
}

/// Programs the lab tests (and the lab they build) run, found in the system directories.
const TOOLS: &[&str] = &[
    "ip", "nsenter", "setpriv", "curl", "nginx", "wrk", "bpftool", "tcpdump", "python3",
];

/// Kernel modules the lab needs that the cloud kernel builds as modules.
const MODULES: &[&str] = &["veth", "bridge"];

/// Python packages from Debian's dist-packages the test clients import (the gRPC client).
const PYTHON_PACKAGES: &[&str] = &["grpc", "grpc_tools", "google", "pkg_resources"];

/// Parts of the Python standard library nobody here imports.
const PYTHON_SKIP: &[&str] = &[
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
];

/// Repository files the tests read (at the same absolute path in the VM).
const REPO_FILES: &[&str] = &["tests/fixtures", "tests/clients", "deploy", "proto"];

/// Kernel options worth showing next to the results (what the programs and the lab rely on).
const KERNEL_OPTIONS: &[&str] = &[
    "CONFIG_BPF_SYSCALL",
    "CONFIG_BPF_JIT",
    "CONFIG_CGROUP_BPF",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_KPROBES",
    "CONFIG_KPROBE_EVENTS",
    "CONFIG_FUNCTION_TRACER",
    "CONFIG_BPF_LSM",
    "CONFIG_SECURITY_LOCKDOWN_LSM",
    "CONFIG_VETH",
    "CONFIG_BRIDGE",
    "CONFIG_NET_SCH_INGRESS",
];

/// `OPTION=value` (or `OPTION unset`) for each of `options` in a kernel config file.
fn kernel_config(path: &Path, options: &[&str]) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    options
        .iter()
        .map(|o| {
            text.lines()
                .find(|l| l.split_once('=').is_some_and(|(k, _)| k == *o))
                .map_or_else(|| format!("{o}=n"), str::to_owned)
        })
        .collect()
}

/// Where things go inside the VM.
const VM_BUSYBOX: &str = "/vmtest/busybox";
const VM_MONITOR: &str = "/vmtest/monitor";
const VM_TESTS: &str = "/vmtest/tests";
const VM_MODULES: &str = "/vmtest/modules";

/// The result of one test, for the report and `results.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    /// `binary::test`.
    pub id: String,
    /// `passed`, `failed`, `expected-failure`, `unexpected-pass`, `excluded`,
    /// `interrupted` or `not-run`.
    pub status: &'static str,
    /// Seconds inside the VM, if it ran to the end.
    pub secs: Option<f64>,
    /// Exit code, for failures.
    pub exit_code: Option<i32>,
    /// Why: the exclusion or expected-failure reason.
    pub reason: Option<String>,
}

/// Runs `cargo xtask vm-test`.
pub fn run(opts: &VmTestOptions) -> Result<()> {
    let started = Instant::now();
    let mut phases: Vec<(&str, Duration)> = Vec::new();
    for tool in ["apt-get", "dpkg-deb", "ldd", "strip"] {
        if crate::setup::which(tool).is_none() {
            bail!(
                "vm-test needs `{tool}` on PATH (Debian: apt-get install binutils libc-bin dpkg apt)"
            );
        }
    }
    let target = util::target_dir()?;
    let work = target.join("vm-test");
    let cache = fetch::Cache {
        root: work.join("cache"),
    };

    // 1. Fetch.
    let t = Instant::now();
    let kernel = cache.kernel(opts.kernel_package.as_deref())?;
    let busybox = cache.busybox()?;
    let qemu = cache.qemu()?;
    crate::outln!(
        "vm-test: kernel {} ({}), qemu {}",
        kernel.release,
        kernel.package,
        qemu.origin
    );
    let config = kernel_config(&kernel.config, KERNEL_OPTIONS);
    crate::outln!("vm-test: {} config: {}", kernel.release, config.join(" "));
    phases.push(("fetch (cached after the first run)", t.elapsed()));
    util::check_interrupted()?;

    // 2. Build and list.
    let t = Instant::now();
    let (monitor, binaries) = build()?;
    let mut planned = Vec::new();
    let mut excluded = Vec::new();
    let mut filtered_out = 0usize;
    for (name, exe) in &binaries {
        let out = util::output(Command::new(exe).args(["--list", "--format", "terse"]))?;
        for test in plan::parse_test_list(&out) {
            let t = plan::PlannedTest {
                binary: name.clone(),
                test,
            };
            let id = t.id();
            if !opts.filter.is_empty() && !opts.filter.iter().any(|f| id.contains(f.as_str())) {
                filtered_out += 1;
            } else if let Some(x) = EXCLUDED.iter().find(|x| x.id == id) {
                excluded.push((id, x.reason));
            } else {
                planned.push(t);
            }
        }
    }
    if planned.is_empty() {
        bail!("no lab test to run (filter {:?})", opts.filter);
    }
    phases.push(("build monitor and the test binaries", t.elapsed()));
    util::check_interrupted()?;

    // 3. The initramfs.
    let t = Instant::now();
    let initrd = work.join("initramfs.cpio");
    let init_plan = assemble(
        &work,
        &kernel,
        &busybox,
        &monitor,
        &binaries,
        planned.clone(),
        opts,
        &initrd,
    )?;
    phases.push(("initramfs", t.elapsed()));
    util::check_interrupted()?;

    // 4. Boot and run.
    let t = Instant::now();
    crate::outln!(
        "vm-test: booting {} under qemu TCG ({} CPUs, {} MiB) to run {} test(s); serial \
         console in {}",
        kernel.release,
        opts.cpus,
        opts.memory_mib,
        init_plan.tests.len(),
        work.join("serial.log").display()
    );
    let (serial, vm_end) = boot(&qemu, &kernel, &initrd, &work, opts)?;
    phases.push(("VM: boot, probe, tests, power-off", t.elapsed()));

    // 5. Report.
    let reports = report(&serial, &planned, &excluded);
    let json = serde_json::json!({
        "kernel": serial.kernel,
        "kernel_package": kernel.package,
        "kernel_config": config,
        "qemu": qemu.origin,
        "probe": serial.probe,
        "tests": reports,
        "phases_s": phases.iter().map(|(n, d)| ((*n).to_owned(), d.as_secs_f64())).collect::<BTreeMap<_, _>>(),
        "total_s": started.elapsed().as_secs_f64(),
    });
    let json_path = work.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;

    crate::outln!(
        "\n==> agent start-up on {} (kernel feature probe)",
        serial.kernel.as_deref().unwrap_or("the VM")
    );
    if serial.probe.is_empty() {
        crate::outln!("  (no output)");
    }
    for l in &serial.probe {
        crate::outln!("  {l}");
    }
    let mut bad = 0usize;
    crate::outln!(
        "\n==> kernel and lab tests on {}",
        serial
            .kernel
            .as_deref()
            .unwrap_or("the VM (no kernel line)")
    );
    for r in &reports {
        let secs = r.secs.map_or(String::new(), |s| format!("{s:.1}s"));
        let why = r
            .reason
            .as_deref()
            .map_or(String::new(), |w| format!("  ({w})"));
        let code = r.exit_code.map_or(String::new(), |c| format!(" exit {c}"));
        crate::outln!("  {:<17} {secs:>7}  {}{code}{why}", r.status, r.id);
        if matches!(r.status, "failed" | "interrupted" | "not-run") {
            bad += 1;
        }
    }
    for (id, o) in serial.outcomes(&planned) {
        if let Outcome::Failed { output, .. } = o
            && !EXPECTED_FAILURES.iter().any(|x| x.id == id)
        {
            crate::outln!("\n==> {id}: last lines of its output");
            for l in output {
                crate::outln!("  | {l}");
            }
        }
    }
    let count = |s: &str| reports.iter().filter(|r| r.status == s).count();
    crate::outln!(
        "\n==> summary ({})",
        serial.kernel.as_deref().unwrap_or("?")
    );
    crate::outln!(
        "  {} passed, {} failed, {} expected failures, {} unexpected passes, {} excluded, {} \
         interrupted, {} not run{}",
        count("passed"),
        count("failed"),
        count("expected-failure"),
        count("unexpected-pass"),
        count("excluded"),
        count("interrupted"),
        count("not-run"),
        if filtered_out > 0 {
            format!(" ({filtered_out} left out by --filter)")
        } else {
            String::new()
        }
    );
    for (name, d) in &phases {
        crate::outln!("  {:<40} {:>9}", name, util::fmt_duration(*d));
    }
    crate::outln!(
        "  {:<40} {:>9}",
        "total wall time",
        util::fmt_duration(started.elapsed())
    );
    crate::outln!("  results: {}", json_path.display());
    if let Some(why) = vm_end {
        bail!("vm-test: {why}; see {}", work.join("serial.log").display());
    }
    if !serial.kernel_trouble.is_empty() {
        bail!(
            "vm-test: the kernel reported trouble: {}",
            serial.kernel_trouble.join(" | ")
        );
    }
    if bad > 0 {
        bail!(
            "vm-test: {bad} test(s) failed, were interrupted or did not run on {}",
            kernel.release
        );
    }
    crate::outln!(
        "vm-test: every test passed or failed as documented on {}",
        kernel.release
    );
    Ok(())
}

/// Builds the release `monitor` and the test binaries that run in the VM: the lab tests and
/// the kernel (`BPF_PROG_TEST_RUN`) tests. Returns the monitor binary and `(test target name,
/// executable)` for each test binary.
fn build() -> Result<(PathBuf, Vec<(String, PathBuf)>)> {
    let root = crate::repo_root();
    util::run(
        Command::new(util::cargo())
            .args(["build", "--release", "-p", MONITOR_PACKAGE])
            .current_dir(&root),
    )?;
    let mut bins = Vec::new();
    for selection in [
        &["-p", TESTS_PACKAGE][..],
        &["-p", MONITOR_PACKAGE, "--test", KERNEL_TESTS][..],
    ] {
        let out = util::output(
            Command::new(util::cargo())
                .args(["test", "--release", "--no-run"])
                .args(selection)
                .arg("--message-format=json-render-diagnostics")
                .current_dir(&root)
                .stderr(Stdio::inherit()),
        )?;
        let found = parse_test_executables(&out);
        if found.is_empty() {
            bail!(
                "`cargo test --no-run {}` built no test binary",
                selection.join(" ")
            );
        }
        bins.extend(found);
    }
    bins.sort();
    Ok((util::target_dir()?.join("release/monitor"), bins))
}

/// `(target name, executable)` of the test targets in cargo's JSON messages.
fn parse_test_executables(json_lines: &str) -> Vec<(String, PathBuf)> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["target"]["kind"] == serde_json::json!(["test"]))
        .filter_map(|m| {
            Some((
                m["target"]["name"].as_str()?.to_owned(),
                PathBuf::from(m["executable"].as_str()?),
            ))
        })
        .collect()
}

/// The first file named `name` in the system's program directories.
fn system_tool(name: &str) -> Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{name} is not installed in /usr/sbin, /usr/bin, /sbin or /bin: run `cargo xtask setup`")
        })
}

/// `strip --strip-debug` of `src` into `dir` (the VM does not need the debug info).
fn stripped(src: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dst = dir.join(name);
    util::output(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dst)
            .arg(src),
    )?;
    Ok(dst)
}

/// Builds the initramfs at `out`; returns the plan its init script follows.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; each is a distinct input"
)]
fn assemble(
    work: &Path,
    kernel: &fetch::Kernel,
    busybox: &Path,
    monitor: &Path,
    binaries: &[(String, PathBuf)],
    tests: Vec<plan::PlannedTest>,
    opts: &VmTestOptions,
    out: &Path,
) -> Result<plan::InitPlan> {
    let mut tree = initramfs::Tree::new();
    let strip_dir = work.join("stripped");
    tree.add_file_as(Path::new(VM_BUSYBOX), busybox, 0o755)?;
    tree.add_file_as(
        Path::new(VM_MONITOR),
        &stripped(monitor, &strip_dir, "monitor")?,
        0o755,
    )?;
    for (name, exe) in binaries {
        if tests.iter().any(|t| &t.binary == name) {
            let s = stripped(exe, &strip_dir, &format!("test-{name}"))?;
            tree.add_file_as(&Path::new(VM_TESTS).join(name), &s, 0o755)?;
        }
    }
    for tool in TOOLS {
        tree.add_host(&system_tool(tool)?)?;
    }
    // The tests run `sh -c` scripts that call iproute2's `ip`: busybox's sh would run its own
    // `ip` applet instead, so the VM gets the host's /bin/sh (dash).
    tree.add_host(Path::new("/bin/sh"))?;
    // Service and protocol names (wrk resolves `http`).
    for f in ["/etc/services", "/etc/protocols"] {
        if Path::new(f).exists() {
            tree.add_host(Path::new(f))?;
        }
    }
    // Python: the standard library of the interpreter /usr/bin/python3 is, and the packages
    // the gRPC client imports.
    let python = std::fs::canonicalize(system_tool("python3")?)?;
    let version = python
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.starts_with("python3."))
        .context("/usr/bin/python3 does not point at a python3.X binary")?
        .to_owned();
    let stdlib = Path::new("/usr/lib").join(&version);
    tree.add_host_tree(&stdlib, &|rel: &Path| {
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        !first.is_some_and(|f| PYTHON_SKIP.contains(&f.as_str()) || f.starts_with("config-"))
    })?;
    let dist = Path::new("/usr/lib/python3/dist-packages");
    for pkg in PYTHON_PACKAGES {
        let p = dist.join(pkg);
        if !p.exists() {
            bail!(
                "{} is missing: run `cargo xtask setup` (python3-grpcio, python3-grpc-tools)",
                p.display()
            );
        }
        tree.add_host_tree(&p, &|_| true)?;
    }
    let repo = crate::repo_root();
    for f in REPO_FILES {
        tree.add_host_tree(&repo.join(f), &|_| true)?;
    }
    // The host's users and groups (system accounts only; no passwords): tcpdump drops to its
    // own user, nginx and curl look names up.
    for f in ["/etc/passwd", "/etc/group"] {
        tree.add_host(Path::new(f))?;
    }
    tree.add_bytes(
        Path::new("/etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
        0o644,
    );
    for d in ["/tmp", "/root", "/var/tmp", "/run", "/var/log"] {
        tree.add_dir(Path::new(d));
    }

    // Kernel modules the lab needs, dependencies first.
    let read_deps = |p: &Path| -> Result<Vec<String>> {
        Ok(initramfs::module_depends(
            &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        ))
    };
    let mut modules = Vec::new();
    for ko in initramfs::module_load_order(&kernel.modules, MODULES, &read_deps)? {
        let name = ko.file_name().context("module path")?;
        let dest = Path::new(VM_MODULES).join(name);
        tree.add_file_as(&dest, &ko, 0o644)?;
        modules.push(dest);
    }

    let plan = plan::InitPlan {
        modules,
        test_dir: PathBuf::from(VM_TESTS),
        monitor: PathBuf::from(VM_MONITOR),
        probe_inventory: repo.join("tests/fixtures/lab.yaml"),
        tests,
        test_timeout_s: opts.test_timeout.as_secs().max(1),
        failure_lines: 150,
    };
    tree.add_bytes(
        Path::new("/init"),
        plan::init_script(&plan, Path::new(VM_BUSYBOX)),
        0o755,
    );
    tree.add_libraries()?;
    tree.write_cpio(out)?;
    let (n, bytes) = tree.size();
    crate::outln!(
        "vm-test: initramfs {} ({n} entries, {} MiB)",
        out.display(),
        bytes >> 20
    );
    Ok(plan)
}

/// Kills the VM (our child, by PID) if it is still running when dropped.
struct VmGuard(Child);

impl Drop for VmGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Boots the VM and reads its console until it powers off. Returns what was read and, if the
/// VM did not end normally, why.
fn boot(
    qemu: &fetch::Qemu,
    kernel: &fetch::Kernel,
    initrd: &Path,
    work: &Path,
    opts: &VmTestOptions,
) -> Result<(plan::Serial, Option<String>)> {
    let mut cmd = qemu.command();
    cmd.args(["-accel", "tcg", "-machine", "q35"])
        .args(["-m", &opts.memory_mib.to_string()])
        .args(["-smp", &opts.cpus.to_string()])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::outln!("vm-test: {}", util::display_cmd(&cmd));
    // If we die without tearing down (SIGKILL), the VM goes with us.
    // SAFETY: the hook runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", qemu.binary.display()))?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let mut vm = VmGuard(child);
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2.send(format!("qemu: {line}")).is_err() {
                break;
            }
        }
    });
    let log_path = work.join("serial.log");
    let mut log = std::io::BufWriter::new(
        std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?,
    );
    let mut serial = plan::Serial::default();
    let deadline = Instant::now() + opts.timeout;
    let end = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if line.starts_with("qemu: ") {
                    crate::outln!("  {line}");
                }
                let echo = serial.feed(&line);
                if opts.verbose {
                    crate::outln!("  | {line}");
                } else if let Some(e) = echo {
                    crate::outln!("{e}");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = vm.0.wait()?;
                break if serial.done {
                    None
                } else {
                    Some(format!("the VM ended ({status}) before the last test"))
                };
            }
        }
        if util::interrupted() {
            break Some("interrupted (Ctrl-C): VM killed".to_owned());
        }
        if Instant::now() > deadline {
            break Some(format!(
                "the VM run exceeded {} (--timeout-min) and was killed",
                util::fmt_duration(opts.timeout)
            ));
        }
    };
    let _ = log.flush();
    drop(vm);
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    serial.attach_outputs(&text);
    Ok((serial, end))
}

/// One report line per listed test.
fn report(
    serial: &plan::Serial,
    planned: &[plan::PlannedTest],
    excluded: &[(String, &'static str)],
) -> Vec<TestReport> {
    let mut out: Vec<TestReport> = serial
        .outcomes(planned)
        .into_iter()
        .map(|(id, o)| {
            let expected = EXPECTED_FAILURES.iter().find(|x| x.id == id);
            let reason = expected.map(|x| x.reason.to_owned());
            match o {
                Outcome::Passed { secs } => TestReport {
                    status: if expected.is_some() {
                        "unexpected-pass"
                    } else {
                        "passed"
                    },
                    secs: Some(secs),
                    exit_code: None,
                    reason,
                    id,
                },
                Outcome::Failed { code, secs, .. } => TestReport {
                    status: if expected.is_some() {
                        "expected-failure"
                    } else {
                        "failed"
                    },
                    secs: Some(secs),
                    exit_code: Some(code),
                    reason,
                    id,
                },
                Outcome::Interrupted => TestReport {
                    status: "interrupted",
                    secs: None,
                    exit_code: None,
                    reason: Some("the VM ended while it ran".to_owned()),
                    id,
                },
                Outcome::NotRun => TestReport {
                    status: "not-run",
                    secs: None,
                    exit_code: None,
                    reason: Some("the VM ended before it".to_owned()),
                    id,
                },
            }
        })
        .collect();
    out.extend(excluded.iter().map(|(id, why)| TestReport {
        id: id.clone(),
        status: "excluded",
        secs: None,
        exit_code: None,
        reason: Some((*why).to_owned()),
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_executables_from_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"xtask"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"lab"},"executable":"/t/release/deps/lab-1"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            parse_test_executables(json),
            vec![("lab".to_owned(), PathBuf::from("/t/release/deps/lab-1"))]
        );
    }

    #[test]
    fn lists_name_real_tests() {
        for x in EXCLUDED {
            assert!(x.id.contains("::") && !x.reason.is_empty(), "{x:?}");
        }
        for x in EXPECTED_FAILURES {
            assert!(x.id.contains("::") && !x.reason.is_empty(), "{x:?}");
        }
    }
}
