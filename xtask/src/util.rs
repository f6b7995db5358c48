//! Small helpers shared by the xtask commands: running external programs with errors that
//! name the command, the Ctrl-C flag, and process identity checks (so we only ever signal
//! processes we started, by PID).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Renders a command line for messages (`prog arg1 'arg with space'`).
pub fn display_cmd(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), quote(v));
        }
    }
    s.push_str(&quote(cmd.get_program()));
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited stdio; fails (naming the command) unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display_cmd(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` with captured output; fails (naming the command and quoting its stderr) unless
/// it exits with status 0. Returns stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = output_raw(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display_cmd(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with captured output and stdin from /dev/null, whatever its exit status.
pub fn output_raw(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", display_cmd(cmd)))
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with a message saying what needs root, unless we are root.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} needs root (network namespaces, cgroups and BPF need CAP_SYS_ADMIN, \
             CAP_NET_ADMIN and CAP_BPF); run it as root, e.g. `sudo -E cargo xtask ...`"
        );
    }
    Ok(())
}

static CLI_OUTPUT: AtomicBool = AtomicBool::new(false);

/// Switches [`crate::outln!`]/[`crate::errln!`] to ignore write errors (the binary does this).
pub fn set_cli_output() {
    CLI_OUTPUT.store(true, Ordering::Relaxed);
}

/// Whether [`set_cli_output`] was called.
pub fn cli_output() -> bool {
    CLI_OUTPUT.load(Ordering::Relaxed)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs a SIGINT/SIGTERM handler that only sets a flag, so long-running commands can stop
/// at the next check point and tear down what they created (guards run on the way out).
pub fn install_interrupt_handler() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; `sa` is
        // fully initialised (zeroed, then the fields we use are set) before sigaction reads it.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&raw mut sa.sa_mask);
            libc::sigaction(sig, &raw const sa, std::ptr::null_mut());
        }
    }
}

/// Whether Ctrl-C (or SIGTERM) was received since [`install_interrupt_handler`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with "interrupted" if Ctrl-C was received.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted (Ctrl-C)");
    }
    Ok(())
}

/// Sleeps for `d`, waking early (with an error) on Ctrl-C.
pub fn sleep_interruptible(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`, clock ticks since boot),
/// used with the PID to recognise a process we started even after PID reuse.
/// `None` if the process does not exist.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts with field 3 (state); start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a process is still running: exists and is not a zombie.
pub fn process_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Sends `sig` to `pid` (one process, never a group). Missing processes are not an error.
pub fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        bail!("pid {pid} out of range");
    };
    if raw <= 0 {
        bail!("refusing to signal pid {pid}");
    }
    // SAFETY: kill has no memory-safety preconditions; raw > 0 targets exactly one process.
    let rc = unsafe { libc::kill(raw, sig) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("kill({pid}, {sig})"));
        }
    }
    Ok(())
}

/// Stops a child we started, if it is still running: `sig` to its PID, then SIGKILL if it has
/// not exited within `grace`; reaps it either way.
pub fn stop_child(child: &mut std::process::Child, sig: libc::c_int, grace: Duration) {
    let _ = stop_child_then(child, sig, grace, || {});
}

/// [`stop_child`] that calls `before_kill` just before it sends SIGKILL (to say so), and
/// returns the exit status (`None` if the child could not be waited for).
pub fn stop_child_then(
    child: &mut std::process::Child,
    sig: libc::c_int,
    grace: Duration,
    before_kill: impl FnOnce(),
) -> Option<std::process::ExitStatus> {
    match child.try_wait() {
        Ok(None) => {}
        Ok(Some(status)) => return Some(status),
        Err(_) => return None,
    }
    let pid = child.id();
    let _ = signal(pid, sig);
    let deadline = Instant::now() + grace;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if matches!(child.try_wait(), Ok(None)) {
        before_kill();
        let _ = signal(pid, libc::SIGKILL);
    }
    child.wait().ok()
}

/// `CLOCK_MONOTONIC` in seconds: the clock of Python's `time.clock_gettime(CLOCK_MONOTONIC)`
/// in the lab's pods (network namespaces share it), so times taken there and here compare.
pub fn monotonic_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The last `max_lines` lines of a (log) file, for error messages; empty if unreadable.
pub fn tail_file(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

/// The cargo target directory of the workspace (honours `CARGO_TARGET_DIR` and config), from
/// `cargo metadata`.
pub fn target_dir() -> Result<PathBuf> {
    Ok(cargo_metadata()?.target_directory)
}

/// The parts of `cargo metadata --no-deps` that xtask uses.
#[derive(Debug, serde::Deserialize)]
pub struct Metadata {
    /// Absolute target directory.
    pub target_directory: PathBuf,
    /// Workspace packages.
    pub packages: Vec<MetadataPackage>,
}

/// One workspace package in [`Metadata`].
#[derive(Debug, serde::Deserialize)]
pub struct MetadataPackage {
    /// Package name.
    pub name: String,
    /// Path of its `Cargo.toml`.
    pub manifest_path: PathBuf,
}

/// Runs `cargo metadata --no-deps` in the workspace root.
pub fn cargo_metadata() -> Result<Metadata> {
    let out = output(
        Command::new(cargo())
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(crate::repo_root()),
    )?;
    serde_json::from_str(&out).context("cannot parse `cargo metadata` output")
}

/// The cargo executable that runs us (`$CARGO`), or `cargo`.
pub fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Formats a duration as `1m02.3s` / `4.56s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 60.0 {
        let m = (secs / 60.0).floor();
        format!("{m:.0}m{:04.1}s", secs - m * 60.0)
    } else {
        format!("{secs:.2}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id();
        let a = process_start_time(me).expect("own stat");
        assert_eq!(Some(a), process_start_time(me));
        assert!(process_running(me));
    }

    #[test]
    fn display_quotes_odd_args() {
        let mut c = Command::new("curl");
        c.args(["-w", "%{http_code}", "http://10.77.0.10/x?a=1&b=2"]);
        assert_eq!(
            display_cmd(&c),
            "curl -w '%{http_code}' 'http://10.77.0.10/x?a=1&b=2'"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(4560)), "4.56s");
        assert_eq!(fmt_duration(Duration::from_millis(62_300)), "1m02.3s");
    }
}
