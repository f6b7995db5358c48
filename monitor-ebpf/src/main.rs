//! The monitor's kernel programs, all on the pods' cgroup root: `cgroup_skb` egress and
//! ingress (the flow table and HTTP capture), and the socket-level programs that tell them what
//! a socket is before its first packet: `cgroup/connect4` and `cgroup/connect6` (the
//! destination the application asked for, before NAT, and the caller's uid/gid) and `sock_ops`
//! (which end opened the connection).
//!
//! Every entry point is thin. The `cgroup_skb` ones first check the quarantine (the only reason
//! a packet is ever dropped: its socket's cgroup is quarantined in enforce mode), then run the
//! shared body and return "pass"; the connect hooks always allow the connection, and `sock_ops`
//! never changes a reply. A monitor never drops traffic by accident; every error path ends in
//! the pass verdict.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod connect;
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
    use aya_ebpf::{
        macros::{cgroup_skb, cgroup_sock_addr, sock_ops},
        programs::{SkBuffContext, SockAddrContext, SockOpsContext},
    };
    use monitor_common::{
        Direction,
        flow::{FAMILY_V4, FAMILY_V6},
    };

    /// `cgroup_skb` verdict that lets the packet through.
    const PASS: i32 = 1;
    /// `cgroup_skb` verdict that drops the packet (a sender gets `EPERM`).
    const DROP: i32 = 0;
    /// `cgroup/connect*` verdict that lets `connect()` proceed (0 would fail it with `EPERM`).
    const ALLOW: i32 = 1;
    /// `sock_ops` return value: 1 is "ok" (the reply field, left untouched, is what counts).
    const SOCK_OPS_OK: u32 = 1;

    /// Every IPv4 TCP `connect()` of a socket under the cgroup root (before NAT).
    #[cgroup_sock_addr(connect4)]
    pub fn monitor_conn4(ctx: SockAddrContext) -> i32 {
        crate::connect::on_connect(&ctx, FAMILY_V4);
        ALLOW
    }

    /// Every IPv6 TCP `connect()` of a socket under the cgroup root (before NAT).
    #[cgroup_sock_addr(connect6)]
    pub fn monitor_conn6(ctx: SockAddrContext) -> i32 {
        crate::connect::on_connect(&ctx, FAMILY_V6);
        ALLOW
    }

    /// TCP events of sockets under the cgroup root; only passive establishment is used.
    #[sock_ops]
    pub fn monitor_sockops(ctx: SockOpsContext) -> u32 {
        crate::connect::on_sock_ops(&ctx);
        SOCK_OPS_OK
    }

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
