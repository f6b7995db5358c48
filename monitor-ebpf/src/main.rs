//! The monitor's kernel programs: `cgroup_skb` egress and ingress on the pods' cgroup root.
//!
//! Both entry points are thin: they first check the quarantine (the only reason a packet is ever
//! dropped: its socket's cgroup is quarantined in enforce mode), then run the shared body and
//! return "pass". A monitor never drops traffic by accident; every error path ends in the pass
//! verdict.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod flow;
#[cfg(target_arch = "bpf")]
mod http;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod quarantine;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
    use monitor_common::Direction;

    /// `cgroup_skb` verdict that lets the packet through.
    const PASS: i32 = 1;
    /// `cgroup_skb` verdict that drops the packet (a sender gets `EPERM`).
    const DROP: i32 = 0;

    /// Every packet a socket under the cgroup root sends.
    #[cgroup_skb]
    pub fn monitor_egress(ctx: SkBuffContext) -> i32 {
        if crate::quarantine::enforce(&ctx, Direction::Egress) {
            return DROP;
        }
        crate::flow::observe(&ctx, Direction::Egress);
        PASS
    }

    /// Every packet a socket under the cgroup root receives.
    #[cgroup_skb]
    pub fn monitor_ingress(ctx: SkBuffContext) -> i32 {
        if crate::quarantine::enforce(&ctx, Direction::Ingress) {
            return DROP;
        }
        crate::flow::observe(&ctx, Direction::Ingress);
        PASS
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path, so this is never
    // reached at run time.
    unsafe { core::hint::unreachable_unchecked() }
}

/// Host builds (`cargo check --workspace`, clippy) compile this stub; the real object is built
/// for `bpfel-unknown-none` by `monitor/build.rs`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
