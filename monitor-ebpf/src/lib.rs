//! Exists so `monitor/build.rs` can declare a build-dependency on this crate (cargo then rebuilds
//! the agent when the kernel programs change). The programs live in the `monitor` binary target.
#![no_std]
