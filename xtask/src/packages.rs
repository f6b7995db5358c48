//! The workspace's package and test-target names that the test pipelines build and run:
//! `ci` (`cargo xtask test`) and `vmtest` (the same tests in a VM) both name them here, so
//! neither has to import the other for them.

/// Package name of the agent, CLI and collector crate (`monitor/`).
pub const MONITOR_PACKAGE: &str = "monitor";
/// Package name of the integration-test crate in `tests/` (the lab tests).
pub const TESTS_PACKAGE: &str = "monitor-tests";
/// Package name of the eBPF crate (built for bpfel by `monitor/build.rs`, not for the host).
pub const EBPF_PACKAGE: &str = "monitor-ebpf";
/// The kernel-program test target of [`MONITOR_PACKAGE`] (`monitor/tests/kernel.rs`,
/// `BPF_PROG_TEST_RUN`).
pub const KERNEL_TESTS: &str = "kernel";
