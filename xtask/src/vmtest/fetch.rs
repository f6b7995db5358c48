//! What the VM needs from Debian, fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x` into a cache under the target directory: nothing is installed on the machine
//! (installing bookworm's `qemu-system-x86` would remove a newer `qemu-utils`, which the
//! machine needs), and a second run uses the cache without asking apt.
//!
//! - the kernel: Debian's 6.1 cloud kernel (`linux-image-cloud-amd64` points at the current
//!   `linux-image-6.1.0-N-cloud-amd64`), its `vmlinuz` and modules;
//! - `busybox-static`: the VM's shell and tools;
//! - qemu: the system's `qemu-system-x86_64` if installed, else `qemu-system-x86` and the
//!   packages it needs that the machine lacks (what `apt-get install -s` would install).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util;

/// The Debian metapackage that depends on the current 6.1 cloud kernel.
pub const KERNEL_META: &str = "linux-image-cloud-amd64";

/// Marker written into an unpacked directory once it is complete.
const COMPLETE: &str = ".complete";

/// The cache directory layout.
#[derive(Debug, Clone)]
pub struct Cache {
    /// `<target>/vm-test/cache`.
    pub root: PathBuf,
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// `uname -r`, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The compressed kernel image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the package.
    pub modules: PathBuf,
    /// `boot/config-<release>`.
    pub config: PathBuf,
}

/// How to run qemu.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// The `qemu-system-x86_64` binary.
    pub binary: PathBuf,
    /// `LD_LIBRARY_PATH` for an unpacked qemu (empty for the system's).
    pub library_path: Vec<PathBuf>,
    /// Firmware directories (`-L`), for an unpacked qemu.
    pub firmware: Vec<PathBuf>,
    /// Where it came from, for the report.
    pub origin: String,
}

impl Cache {
    fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    /// The kernel: `package` if given, else the newest one already in the cache, else what
    /// [`KERNEL_META`] depends on (downloaded).
    pub fn kernel(&self, package: Option<&str>) -> Result<Kernel> {
        let dir = self.root.join("kernel");
        let package = match package {
            Some(p) => p.to_owned(),
            None => match newest_cached_kernel(&dir) {
                Some(p) => p,
                None => resolve_kernel_package()?,
            },
        };
        let root = dir.join(&package);
        if !root.join(COMPLETE).exists() {
            crate::outln!("vm-test: fetching {package} (apt-get download)");
            self.unpack(std::slice::from_ref(&package), &root)?;
        }
        let release = package
            .strip_prefix("linux-image-")
            .unwrap_or(&package)
            .trim_end_matches("-unsigned")
            .to_owned();
        let k = Kernel {
            vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
            modules: root.join(format!("lib/modules/{release}")),
            config: root.join(format!("boot/config-{release}")),
            package,
            release,
        };
        for p in [&k.vmlinuz, &k.modules] {
            if !p.exists() {
                bail!(
                    "{} has no {}: not a kernel image package? remove {} and retry",
                    k.package,
                    p.display(),
                    root.display()
                );
            }
        }
        Ok(k)
    }

    /// The static busybox binary.
    pub fn busybox(&self) -> Result<PathBuf> {
        let root = self.root.join("busybox");
        if !root.join(COMPLETE).exists() {
            crate::outln!("vm-test: fetching busybox-static (apt-get download)");
            self.unpack(&["busybox-static".to_owned()], &root)?;
        }
        let bin = root.join("bin/busybox");
        if !bin.is_file() {
            bail!("busybox-static has no bin/busybox (in {})", root.display());
        }
        Ok(bin)
    }

    /// qemu: the system's if installed, else unpacked into the cache.
    pub fn qemu(&self) -> Result<Qemu> {
        if let Some(bin) = crate::setup::which("qemu-system-x86_64") {
            return Ok(Qemu {
                origin: format!("{} (installed)", bin.display()),
                binary: bin,
                library_path: Vec::new(),
                firmware: Vec::new(),
            });
        }
        let root = self.root.join("qemu");
        if !root.join(COMPLETE).exists() {
            let pkgs = retry_after_apt_update(qemu_packages)?;
            crate::outln!(
                "vm-test: fetching qemu-system-x86 and the {} package(s) it needs that this \
                 machine lacks, into {} (nothing is installed): {}",
                pkgs.len().saturating_sub(1),
                root.display(),
                pkgs.join(" ")
            );
            self.unpack(&pkgs, &root)?;
        }
        let q = Qemu {
            binary: root.join("usr/bin/qemu-system-x86_64"),
            library_path: vec![
                root.join("lib/x86_64-linux-gnu"),
                root.join("usr/lib/x86_64-linux-gnu"),
            ],
            firmware: vec![root.join("usr/share/qemu"), root.join("usr/share/seabios")],
            origin: format!("qemu-system-x86 unpacked in {}", root.display()),
        };
        let mut cmd = q.command();
        cmd.arg("--version");
        let out = util::output(&mut cmd).with_context(|| {
            format!(
                "the unpacked qemu does not run (a library missing?); remove {} to fetch it again",
                root.display()
            )
        })?;
        let version = out.lines().next().unwrap_or("").to_owned();
        Ok(Qemu {
            origin: format!("{} ({version})", q.origin),
            ..q
        })
    }

    /// Downloads `packages` and unpacks them all into `dest` (replaced), then marks it complete.
    fn unpack(&self, packages: &[String], dest: &Path) -> Result<()> {
        let debs = self.debs();
        std::fs::create_dir_all(&debs)
            .with_context(|| format!("cannot create {}", debs.display()))?;
        let files = retry_after_apt_update(|| apt_download(packages, &debs))?;
        let _ = std::fs::remove_dir_all(dest);
        std::fs::create_dir_all(dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        for f in &files {
            util::output(Command::new("dpkg-deb").arg("-x").arg(f).arg(dest))?;
        }
        std::fs::write(dest.join(COMPLETE), packages.join("\n"))
            .with_context(|| format!("cannot write {}", dest.join(COMPLETE).display()))?;
        Ok(())
    }
}

impl Qemu {
    /// A command running this qemu (with its library path).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        if !self.library_path.is_empty() {
            c.env(
                "LD_LIBRARY_PATH",
                std::env::join_paths(&self.library_path).unwrap_or_default(),
            );
        }
        for f in &self.firmware {
            c.arg("-L").arg(f);
        }
        c
    }
}

/// Runs `f`; if it fails, runs `apt-get update` once (stale or missing package lists on a fresh
/// machine) and tries again.
fn retry_after_apt_update<T>(f: impl Fn() -> Result<T>) -> Result<T> {
    match f() {
        Ok(v) => Ok(v),
        Err(first) => {
            crate::outln!("vm-test: {first:#}; running apt-get update and trying again");
            util::run(Command::new("apt-get").arg("update"))
                .context("apt-get update failed (needs root and Debian's package registry)")?;
            f()
        }
    }
}

/// The newest `linux-image-6.1.*` directory already unpacked in `dir`.
fn newest_cached_kernel(dir: &Path) -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().join(COMPLETE).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("linux-image-6.1."))
        .collect();
    found.sort_by_key(|n| abi_number(n));
    found.pop()
}

/// The ABI number `N` of `linux-image-6.1.0-N-cloud-amd64` (0 if none).
fn abi_number(package: &str) -> u32 {
    package
        .strip_prefix("linux-image-6.1.0-")
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What [`KERNEL_META`] depends on, from `apt-cache depends` (after `apt-get update` if apt
/// knows nothing about it).
fn resolve_kernel_package() -> Result<String> {
    let query = || -> Option<String> {
        let out = util::output(Command::new("apt-cache").args(["depends", KERNEL_META])).ok()?;
        parse_depends(&out, "linux-image-6.1.")
    };
    if let Some(p) = query() {
        return Ok(p);
    }
    crate::outln!("vm-test: apt does not know {KERNEL_META}; running apt-get update");
    util::run(Command::new("apt-get").arg("update"))
        .context("apt-get update failed (needs root and Debian's package registry)")?;
    query().with_context(|| {
        format!(
            "apt-cache depends {KERNEL_META} names no linux-image-6.1.* package: is this \
             Debian 12 (bookworm)? pass --kernel-package linux-image-6.1.0-N-cloud-amd64"
        )
    })
}

/// The first `Depends:` target starting with `prefix` in `apt-cache depends` output.
pub fn parse_depends(out: &str, prefix: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with(prefix))
        .map(str::to_owned)
}

/// `qemu-system-x86` and the packages installing it would add here (`apt-get install -s`).
fn qemu_packages() -> Result<Vec<String>> {
    let out = util::output(Command::new("apt-get").args([
        "install",
        "-s",
        "--no-install-recommends",
        "qemu-system-x86",
    ]))
    .context("cannot ask apt what qemu-system-x86 needs (run `apt-get update`?)")?;
    let pkgs = parse_simulated_installs(&out);
    if !pkgs.iter().any(|p| p == "qemu-system-x86") {
        bail!("apt-get install -s qemu-system-x86 would not install it:\n{out}");
    }
    Ok(pkgs)
}

/// Package names of the `Inst` lines of `apt-get install -s` output.
pub fn parse_simulated_installs(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `apt-get download` of `packages` into `dir`; returns the `.deb` files.
fn apt_download(packages: &[String], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "-o", "APT::Sandbox::User=root", "download"])
        .args(packages)
        .current_dir(dir);
    util::output(&mut cmd).with_context(|| {
        format!(
            "cannot download {} from Debian's registry (try `apt-get update` first)",
            packages.join(" ")
        )
    })?;
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    packages
        .iter()
        .map(|p| {
            let prefix = format!("{p}_");
            entries
                .iter()
                .filter(|e| {
                    e.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                })
                .max_by_key(|e| std::fs::metadata(e).and_then(|m| m.modified()).ok())
                .cloned()
                .with_context(|| format!("apt-get download left no {p}_*.deb in {}", dir.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_and_simulated_installs() {
        let deps = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(deps, "linux-image-6.1.").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            parse_depends("x\n  Depends: foo\n", "linux-image-6.1."),
            None
        );
        let sim = "NOTE: This is only a simulation!\nRemv qemu-utils [1:10]\n\
                   Inst libfdt1 (1.6.1-4+b1 Debian:12.15/oldstable [amd64])\n\
                   Inst qemu-system-x86 (1:7.2 Debian [amd64])\nConf libfdt1 (1.6.1-4+b1)\n";
        assert_eq!(
            parse_simulated_installs(sim),
            vec!["libfdt1".to_owned(), "qemu-system-x86".to_owned()]
        );
        assert_eq!(abi_number("linux-image-6.1.0-56-cloud-amd64"), 56);
        assert_eq!(abi_number("linux-image-6.1.0-9-cloud-amd64"), 9);
    }
}
