//! Network plumbing of the lab: `ip` invocations for namespaces, the bridge and veth pairs,
//! joining a cgroup from a `pre_exec` hook, and running code inside a netns (probes).

use std::ffi::CString;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Runs `ip <args>` and fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    util::output(Command::new("ip").args(args)).map(drop)
}

/// Runs `ip -n <ns> <args>`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Whether a named network namespace exists (`/run/netns/<name>`).
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// A `pre_exec` hook body that moves the calling (child) process into a cgroup by writing
/// `0` ("myself") to `procs` (a `cgroup.procs` path). Only async-signal-safe calls.
pub fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated path; open/write/close are async-signal-safe
    // and we own the returned descriptor until we close it.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// The `cgroup.procs` path of a cgroup directory, as a C string for [`join_cgroup`].
pub fn cgroup_procs_cstring(cgroup_dir: &Path) -> Result<CString> {
    CString::new(cgroup_dir.join("cgroup.procs").as_os_str().as_bytes())
        .with_context(|| format!("cgroup path {} contains NUL", cgroup_dir.display()))
}

/// Runs `f` on a new thread that has joined network namespace `ns` (only that thread moves:
/// setns(CLONE_NEWNET) is per thread), and returns its result.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = Path::new("/run/netns").join(ns);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("cannot open network namespace {}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: the descriptor is a valid open netns file for the duration of the call;
            // setns only changes this thread's network namespace, and the thread ends with `f`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                bail!("setns into {ns}: {e}");
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread for {ns} panicked"))?
    })
}

/// Tries one TCP connect to `ip:port` with a short timeout (call inside the right netns).
pub fn tcp_connects(ip: IpAddr, port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_millis(200)).is_ok()
}
