//! `cargo xtask setup`: makes a fresh machine (Debian, Linux ≥ 6.6, root) able to build and
//! test the monitor, idempotently.
//!
//! Each item is checked first and reported on one line, "already OK" or "installing X because
//! Y": root, Debian packages, the nightly toolchain with `rust-src`, `bpf-linker` 0.13 built
//! against nightly's own LLVM 22; then kernel checks that cannot be installed (cgroup v2,
//! BTF). Every failure names the missing piece and the command that fixes it. When everything
//! is present this takes well under a second.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Debian packages the build, the lab and the tests need.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "curl",
    "nginx-light",
    "wrk",
    "iperf3",
    "bpftool",
    "python3",
    "tcpdump",
    "protobuf-compiler",
    // The syslog sink's end-to-end test runs a real rsyslog with TLS (gnutls driver).
    "rsyslog",
    "rsyslog-gnutls",
    // The non-Rust gRPC client of the tests (tests/clients/observe.py): Debian's Python gRPC.
    "python3-grpcio",
    "python3-grpc-tools",
    // promtool lints the metrics' names and checks and unit-tests the alert rules.
    "prometheus",
    // The lab's mesh mode (`cargo xtask lab up --mesh istio`) emulates Istio: haproxy is the
    // sidecar proxy (it reads a REDIRECTed connection's original destination), iptables
    // (iptables-nft) loads istio-init's rules in each pod's netns, openssl issues the pods'
    // SPIFFE certificates.
    "haproxy",
    "iptables",
    "openssl",
    // `cargo xtask vm-test` strips the binaries it packs into the VM's initramfs. (It fetches
    // the 6.1 kernel, busybox-static and qemu itself with `apt-get download` into the target
    // directory, installing nothing: bookworm's qemu-system-x86 would replace a newer
    // qemu-utils.)
    "binutils",
    // The HTML report's test loads the page in headless Chromium (console errors, bars, a
    // screenshot).
    "chromium",
];

/// The bpf-linker release the eBPF build uses.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The LLVM major version of the nightly toolchain that bpf-linker is built against.
pub const LLVM_MAJOR: &str = "22";

/// Options of `cargo xtask setup`.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// cgroup2 mount to check instead of the one in `/proc/self/mountinfo`.
    pub cgroup_mount: Option<PathBuf>,
}

fn report(item: &str, msg: &str) {
    crate::outln!("setup: {item:<22} {msg}");
}

/// Runs every setup step; stops at the first failure.
pub fn run(opts: &SetupOptions) -> Result<()> {
    let started = Instant::now();

    if !util::is_root() {
        bail!(
            "setup: not running as root (euid {}): installing packages, creating network \
             namespaces and cgroups and loading BPF programs need root; run \
             `sudo -E env PATH=$PATH cargo xtask setup`",
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() }
        );
    }
    report("root", "already OK (euid 0)");

    debian_packages()?;
    util::check_interrupted()?;
    let sysroot = nightly_toolchain()?;
    rust_src(&sysroot)?;
    util::check_interrupted()?;
    bpf_linker(&sysroot)?;

    // Checks only: these cannot be installed by us.
    let mount = crate::cgroup::cgroup2_mount(opts.cgroup_mount.as_deref())
        .context("setup: cgroup v2 check failed")?;
    report(
        "cgroup v2",
        &format!("already OK (mounted at {})", mount.display()),
    );
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    if !btf.exists() {
        bail!(
            "setup: kernel BTF missing: {} does not exist; the kernel must be built with \
             CONFIG_DEBUG_INFO_BTF=y (use a distribution kernel ≥ 5.8, e.g. Debian's \
             linux-image-amd64)",
            btf.display()
        );
    }
    report("kernel BTF", &format!("already OK ({})", btf.display()));
    crate::outln!("setup: done in {}", util::fmt_duration(started.elapsed()));
    Ok(())
}

fn debian_packages() -> Result<()> {
    let item = "debian packages";
    if which("dpkg-query").is_none() || which("apt-get").is_none() {
        bail!(
            "setup: dpkg-query/apt-get not found: this setup supports Debian-based systems; \
             install by hand: {}",
            DEBIAN_PACKAGES.join(" ")
        );
    }
    let out = util::output_raw(
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Package} ${db:Status-Abbrev}\n"])
            .args(DEBIAN_PACKAGES),
    )?;
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the known ones.
    let listing = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !listing.lines().any(|l| {
                let mut f = l.split_whitespace();
                f.next() == Some(p) && f.next().is_some_and(|st| st.starts_with("ii"))
            })
        })
        .collect();
    if missing.is_empty() {
        report(item, &format!("already OK ({})", DEBIAN_PACKAGES.join(" ")));
        return Ok(());
    }
    report(
        item,
        &format!(
            "installing {} because dpkg does not list them as installed",
            missing.join(" ")
        ),
    );
    let fix = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
        missing.join(" ")
    );
    util::run(Command::new("apt-get").arg("update"))
        .with_context(|| format!("setup: apt-get update failed; fix apt, then run `{fix}`"))?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(&missing),
    )
    .with_context(|| format!("setup: installing Debian packages failed; try `{fix}`"))?;
    report(item, "installed");
    Ok(())
}

/// Ensures the nightly toolchain exists; returns its sysroot.
fn nightly_toolchain() -> Result<PathBuf> {
    let item = "rust nightly";
    if which("rustup").is_none() {
        bail!(
            "setup: rustup not found on PATH: install it with `curl --proto '=https' --tlsv1.2 \
             -sSf https://sh.rustup.rs | sh -s -- -y`, then `. $HOME/.cargo/env`"
        );
    }
    let list = util::output(Command::new("rustup").args(["toolchain", "list"]))?;
    let have = list
        .lines()
        .any(|l| l.starts_with("nightly-") || l.starts_with("nightly "));
    if have {
        report(item, "already OK");
    } else {
        report(
            item,
            "installing nightly because `rustup toolchain list` has none (the eBPF build needs -Z build-std)",
        );
        util::run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
            .context("setup: installing nightly failed; run `rustup toolchain install nightly --profile minimal`")?;
    }
    let sysroot = util::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("setup: cannot run nightly rustc; try `rustup toolchain install nightly --profile minimal --force`")?;
    Ok(PathBuf::from(sysroot.trim()))
}

fn rust_src(sysroot: &Path) -> Result<()> {
    let item = "nightly rust-src";
    let src = sysroot.join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        report(item, "already OK");
        return Ok(());
    }
    report(
        item,
        "installing rust-src because build-std needs core's source and it is missing",
    );
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("setup: run `rustup component add rust-src --toolchain nightly`")?;
    Ok(())
}

fn bpf_linker(sysroot: &Path) -> Result<()> {
    let item = "bpf-linker";
    let want_minor = BPF_LINKER_VERSION
        .rsplit_once('.')
        .map_or(BPF_LINKER_VERSION, |(mm, _)| mm);
    // Run it the way the eBPF build does (through `rustup run nightly`, which puts nightly's
    // libLLVM on the library path), so a binary whose rpath went stale still counts.
    let why = match util::output_raw(Command::new("rustup").args([
        "run",
        "nightly",
        "bpf-linker",
        "--version",
    ])) {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if v.strip_prefix("bpf-linker ")
                .is_some_and(|ver| ver.starts_with(&format!("{want_minor}.")))
            {
                report(item, &format!("already OK ({v})"));
                return Ok(());
            }
            format!("it reports {v:?}, not {want_minor}")
        }
        Ok(o) => format!(
            "`bpf-linker --version` fails: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
        ),
        Err(_) => "it is not installed".to_string(),
    };
    let why = if which("bpf-linker").is_none() {
        "it is not installed".to_string()
    } else {
        why
    };
    report(
        item,
        &format!("installing bpf-linker {BPF_LINKER_VERSION} because {why}"),
    );

    let prefix = util::target_dir()
        .unwrap_or_else(|_| crate::repo_root().join("target"))
        .join("llvm-nightly");
    llvm_prefix(sysroot, &prefix)?;
    let mut cmd = Command::new(util::cargo());
    cmd.env("LLVM_PREFIX", &prefix).args([
        "install",
        "bpf-linker",
        "--locked",
        "--force",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        &format!("llvm-{LLVM_MAJOR}"),
    ]);
    let shown = util::display_cmd(&cmd);
    crate::outln!("setup: running {shown} (about a minute)");
    util::run(&mut cmd)
        .with_context(|| format!("setup: building bpf-linker failed; retry by hand: `{shown}`"))?;
    report(item, "installed");
    Ok(())
}

/// Makes `prefix/lib` an LLVM prefix for building bpf-linker against the exact libLLVM that
/// the nightly toolchain at `sysroot` ships: symlinks `libLLVM.so`, `libLLVM.so.<major>.1` and
/// the library's own soname to `<sysroot>/lib/libLLVM.so.<major>.1-rust-*`.
pub fn llvm_prefix(sysroot: &Path, prefix: &Path) -> Result<()> {
    let lib = sysroot.join("lib");
    let pattern = format!("libLLVM.so.{LLVM_MAJOR}.1-rust-");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&pattern))
        })
        .with_context(|| {
            format!(
                "setup: no {pattern}* in {}: nightly's LLVM is not {LLVM_MAJOR} (see `rustc \
                 +nightly -vV`); bpf-linker {BPF_LINKER_VERSION} needs LLVM {LLVM_MAJOR}: \
                 install a nightly that uses it, e.g. `rustup toolchain install nightly-<date>`",
                lib.display()
            )
        })?;
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    let soname = llvm.file_name().map(PathBuf::from).unwrap_or_default();
    for name in [
        PathBuf::from("libLLVM.so"),
        PathBuf::from(format!("libLLVM.so.{LLVM_MAJOR}.1")),
        soname,
    ] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("cannot create symlink {}", link.display()))?;
    }
    Ok(())
}

/// Finds an executable on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_prefix_links_nightly_libllvm() {
        let dir = std::env::temp_dir().join(format!("xtask-llvm-{}", std::process::id()));
        let sysroot = dir.join("sysroot");
        std::fs::create_dir_all(sysroot.join("lib")).unwrap();
        let real = sysroot.join("lib/libLLVM.so.22.1-rust-1.97.0-nightly");
        std::fs::write(&real, b"elf").unwrap();
        std::fs::write(sysroot.join("lib/librustc_driver-x.so"), b"").unwrap();
        let prefix = dir.join("prefix");
        llvm_prefix(&sysroot, &prefix).unwrap();
        llvm_prefix(&sysroot, &prefix).unwrap(); // idempotent
        for name in [
            "libLLVM.so",
            "libLLVM.so.22.1",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
        ] {
            assert_eq!(
                std::fs::read_link(prefix.join("lib").join(name)).unwrap(),
                real
            );
        }
        std::fs::remove_file(&real).unwrap();
        let err = llvm_prefix(&sysroot, &prefix).unwrap_err().to_string();
        assert!(err.contains("nightly's LLVM is not 22"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
