//! `cargo xtask test`: the whole test pipeline, as the README documents it and `.ci/run`
//! runs it.
//!
//! Steps, each announced, stopping at the first failure with a summary: setup (fast when
//! everything is there), rustfmt check, clippy with `-D warnings`, the workspace tests (unit
//! and `BPF_PROG_TEST_RUN` tests; root), the release build of the agent, the lab tests
//! (`monitor-tests`, one at a time, with `MONITOR_BIN` pointing at the release binary), then
//! the kernel and lab tests again on Debian's 6.1 kernel in a qemu VM (`cargo xtask vm-test`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::packages::{EBPF_PACKAGE, MONITOR_PACKAGE, TESTS_PACKAGE};
use crate::util;

/// Options of `cargo xtask test`.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Skip the lab tests (and the VM run, which is made of them).
    pub no_lab: bool,
    /// Skip the VM run on the second kernel (`cargo xtask vm-test`).
    pub no_vm: bool,
    /// cgroup2 mount for setup's check.
    pub cgroup_mount: Option<PathBuf>,
}

/// One pipeline step.
#[derive(Debug)]
enum Action {
    Setup,
    VmTest,
    Cargo {
        args: Vec<String>,
        env: Vec<(&'static str, PathBuf)>,
    },
}

impl Action {
    fn cargo(args: &[&str]) -> Self {
        Self::Cargo {
            args: args.iter().map(ToString::to_string).collect(),
            env: Vec::new(),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Setup => "cargo xtask setup".to_string(),
            Self::VmTest => "cargo xtask vm-test".to_string(),
            Self::Cargo { args, env } => {
                let mut s: String = env
                    .iter()
                    .map(|(k, v)| format!("{k}={} ", v.display()))
                    .collect();
                s.push_str("cargo ");
                s.push_str(&args.join(" "));
                s
            }
        }
    }

    fn run(&self, opts: &TestOptions) -> Result<()> {
        match self {
            Self::Setup => crate::setup::run(&crate::setup::SetupOptions {
                cgroup_mount: opts.cgroup_mount.clone(),
            }),
            Self::VmTest => crate::vmtest::run(&crate::vmtest::VmTestOptions::default()),
            Self::Cargo { args, env } => {
                let mut cmd = Command::new(util::cargo());
                cmd.args(args).current_dir(crate::repo_root());
                for (k, v) in env {
                    cmd.env(k, v);
                }
                util::run(&mut cmd)
            }
        }
    }
}

/// Runs the pipeline.
pub fn run(opts: &TestOptions) -> Result<()> {
    let started = Instant::now();
    let meta = util::cargo_metadata()?;
    let has = |name: &str| meta.packages.iter().any(|p| p.name == name);
    let monitor_bin = meta.target_directory.join("release/monitor");

    // `cargo test --workspace` minus the eBPF crate (no host tests) and the lab tests (run
    // last, separately, with MONITOR_BIN).
    let mut unit = vec!["test", "--workspace", "--release", "--no-fail-fast"];
    for p in [EBPF_PACKAGE, TESTS_PACKAGE] {
        if has(p) {
            unit.extend(["--exclude", p]);
        }
    }
    let mut plan = vec![
        Action::Setup,
        Action::cargo(&["fmt", "--all", "--check"]),
        Action::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        Action::cargo(&unit),
        Action::cargo(&["build", "--release", "-p", MONITOR_PACKAGE]),
    ];
    if opts.no_lab {
        crate::outln!("test: --no-lab: the lab tests ({TESTS_PACKAGE}) will not run");
    } else {
        if !has(TESTS_PACKAGE) {
            bail!(
                "the workspace has no {TESTS_PACKAGE} package (tests/Cargo.toml), so the lab \
                 tests cannot run; use --no-lab to run the rest"
            );
        }
        plan.push(Action::Cargo {
            args: [
                "test",
                "--release",
                "--no-fail-fast",
                "-p",
                TESTS_PACKAGE,
                "--",
                "--test-threads=1",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![("MONITOR_BIN", monitor_bin)],
        });
        if opts.no_vm {
            crate::outln!("test: --no-vm: the tests on the second kernel (vm-test) will not run");
        } else {
            plan.push(Action::VmTest);
        }
    }

    let total = plan.len();
    let mut outcomes: Vec<Option<(bool, Duration)>> = vec![None; total];
    let mut failure = None;
    for (i, action) in plan.iter().enumerate() {
        crate::outln!("\n==> [{}/{total}] {}", i + 1, action.name());
        let t = Instant::now();
        let r = util::check_interrupted().and_then(|()| action.run(opts));
        outcomes[i] = Some((r.is_ok(), t.elapsed()));
        if let Err(e) = r {
            failure = Some((i, e));
            break;
        }
    }

    crate::outln!("\n==> summary");
    for (i, (action, outcome)) in plan.iter().zip(&outcomes).enumerate() {
        let status = match outcome {
            Some((true, d)) => format!("ok      {:>9}", util::fmt_duration(*d)),
            Some((false, d)) => format!("FAILED  {:>9}", util::fmt_duration(*d)),
            None => format!("{:<17}", "not run"),
        };
        crate::outln!("  [{}/{total}] {status}  {}", i + 1, action.name());
    }
    crate::outln!(
        "  total wall time {}",
        util::fmt_duration(started.elapsed())
    );
    if let Some((i, e)) = failure {
        return Err(e.context(format!(
            "cargo xtask test: step {}/{total} `{}` failed",
            i + 1,
            plan[i].name()
        )));
    }
    crate::outln!("cargo xtask test: all {total} steps passed");
    Ok(())
}
