//! IP and TCP header parsing. In `cgroup_skb` the packet starts at the IP header.

use aya_ebpf::programs::SkBuffContext;
use monitor_common::flow::{FAMILY_V4, FAMILY_V6};
use network_types::{
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
};

/// IANA protocol number of TCP.
const IPPROTO_TCP: u8 = 6;

/// What the flow table and the HTTP capture need from one TCP packet.
pub struct Segment {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Source address, network order; IPv4 in the first four bytes.
    pub src: [u8; 16],
    /// Destination address, network order.
    pub dst: [u8; 16],
    /// Source port, host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// Sequence number of the first payload byte.
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Offset of the TCP payload from the start of the packet.
    pub payload_off: u32,
    /// TCP payload bytes (a GSO super-packet's whole payload).
    pub payload_len: u32,
    /// Packet length from the IP header on.
    pub wire_len: u32,
}

/// Parses the IP and TCP headers. `None` for anything that is not TCP over IPv4/IPv6 without
/// IPv6 extension headers, and for fragments after the first.
#[inline(always)]
pub fn parse(ctx: &SkBuffContext) -> Option<Segment> {
    let wire_len = ctx.len();
    let first: u8 = ctx.load(0).ok()?;
    let (family, src, dst, l4_off, ip_len) = match first >> 4 {
        4 => {
            let ip: Ipv4Hdr = ctx.load(0).ok()?;
            if ip.proto != IPPROTO_TCP {
                return None;
            }
            // A non-first fragment carries no TCP header.
            if u16::from_be_bytes(ip.frags) & 0x1fff != 0 {
                return None;
            }
            let ihl = u32::from(ip.vihl & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&ip.src_addr);
            dst[..4].copy_from_slice(&ip.dst_addr);
            // tot_len is 0 for BIG TCP super-packets; the skb length is then authoritative.
            let tot = u32::from(u16::from_be_bytes(ip.tot_len));
            let ip_len = if tot == 0 || tot > wire_len {
                wire_len
            } else {
                tot
            };
            (FAMILY_V4, src, dst, ihl, ip_len)
        }
        6 => {
            let ip: Ipv6Hdr = ctx.load(0).ok()?;
            if ip.next_hdr != IPPROTO_TCP {
                return None;
            }
            let pl = u32::from(u16::from_be_bytes(ip.payload_len));
            let ip_len = if pl == 0 || pl + 40 > wire_len {
                wire_len
            } else {
                pl + 40
            };
            (FAMILY_V6, ip.src_addr, ip.dst_addr, 40, ip_len)
        }
        _ => return None,
    };
    let tcp: TcpHdr = ctx.load(l4_off as usize).ok()?;
    let doff = u32::from(tcp.doff()) * 4;
    if doff < 20 {
        return None;
    }
    let payload_off = l4_off + doff;
    Some(Segment {
        family,
        src,
        dst,
        sport: u16::from_be_bytes(tcp.source),
        dport: u16::from_be_bytes(tcp.dest),
        // A SYN takes one sequence number before its payload (TCP Fast Open data).
        seq: u32::from_be_bytes(tcp.seq).wrapping_add(u32::from(tcp.syn() != 0)),
        syn: tcp.syn() != 0,
        ack: tcp.ack() != 0,
        fin: tcp.fin() != 0,
        rst: tcp.rst() != 0,
        payload_off,
        payload_len: ip_len.saturating_sub(payload_off),
        wire_len,
    })
}
