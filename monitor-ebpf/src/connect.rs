//! The socket-level programs: what a TCP socket is before its first packet.
//!
//! - `cgroup/connect4`, `cgroup/connect6` ([`on_connect`]): the destination the application
//!   passed to `connect()`, seen before netfilter rewrites it (a mesh's REDIRECT to its
//!   sidecar, kube-proxy's DNAT), and the calling process's uid/gid.
//! - `sock_ops` ([`on_sock_ops`]): a connection accepted by a listener became established, so
//!   the remote end opened it.
//!
//! Both store a [`SockOrigin`] under the socket cookie in `SOCK_ORIGIN`; the flow table reads
//! and deletes it when the socket's flow opens (`flow::open`). Neither program ever refuses
//! anything: the connect hook's verdict is always "allow" and `sock_ops` never sets a reply,
//! so every path, the error paths included, leaves the connection as it was.

use aya_ebpf::{
    bindings::BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    helpers::{bpf_get_current_uid_gid, bpf_get_socket_cookie},
    programs::{SockAddrContext, SockOpsContext},
};
use monitor_common::{
    flow::FAMILY_V4,
    sock::{ORIGIN_CONNECT, ORIGIN_PASSIVE, SockOrigin},
};

use crate::maps::SOCK_ORIGIN;

/// IANA protocol number of TCP (`bpf_sock_addr::protocol`).
const IPPROTO_TCP: u32 = 6;

/// A TCP `connect()`: remembers the destination asked for and the caller's uid/gid. Other
/// protocols (a connected UDP socket) are left alone: the flow table tracks TCP only.
#[inline(always)]
pub fn on_connect(ctx: &SockAddrContext, family: u8) {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the program's context, valid for this run; the verifier allows 4-byte
    // reads of `protocol`, `user_port`, `user_ip4` (connect4) and `user_ip6` (connect6).
    let protocol = unsafe { (*sa).protocol };
    if protocol != IPPROTO_TCP {
        return;
    }
    let mut addr = [0u8; 16];
    if family == FAMILY_V4 {
        // SAFETY: as above (connect4).
        let ip = unsafe { (*sa).user_ip4 };
        // Network byte order as stored: the bytes in memory are the address.
        addr[..4].copy_from_slice(&ip.to_ne_bytes());
    } else {
        // SAFETY: as above (connect6); constant indices, one 4-byte read each.
        let words = unsafe {
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ]
        };
        for (i, w) in words.iter().enumerate() {
            addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
    }
    // SAFETY: as above. The port is in network byte order in the low 16 bits.
    let port = u16::from_be(unsafe { (*sa).user_port } as u16);
    // SAFETY: the context pointer is what the helper takes.
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    if cookie == 0 {
        return;
    }
    // The low half is the uid, the high half the gid.
    let ids = bpf_get_current_uid_gid();
    let origin = SockOrigin {
        flags: ORIGIN_CONNECT,
        family,
        port,
        uid: ids as u32,
        gid: (ids >> 32) as u32,
        addr,
    };
    // A failed update leaves the flow without its origin: the agent then reports the
    // addresses on the wire, as before the hook existed.
    let _ = SOCK_ORIGIN.insert(&cookie, &origin, 0);
}

/// A `sock_ops` callback: only the passive establishment of an accepted connection is noted.
#[inline(always)]
pub fn on_sock_ops(ctx: &SockOpsContext) {
    if ctx.op() != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        return;
    }
    // SAFETY: the context pointer is what the helper takes.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    if cookie == 0 {
        return;
    }
    let origin = SockOrigin {
        flags: ORIGIN_PASSIVE,
        ..SockOrigin::default()
    };
    let _ = SOCK_ORIGIN.insert(&cookie, &origin, 0);
}
