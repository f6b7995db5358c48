//! One captured frame to a TCP segment: the link layer (Ethernet with VLAN tags, Linux cooked
//! SLL and SLL2, raw IP) is stripped, then etherparse reads the IPv4/IPv6 and TCP headers.
//! Frames cut short by the capture's snap length still give their segment: the payload length
//! comes from the IP header, the bytes from what was captured.

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// The link-layer header types (pcap `LINKTYPE_*`) this reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `LINKTYPE_ETHERNET` (1).
    Ethernet,
    /// `LINKTYPE_RAW` (101) or `LINKTYPE_IPV4`/`LINKTYPE_IPV6` (228/229): the frame is an IP packet.
    RawIp,
    /// `LINKTYPE_LINUX_SLL` (113): `tcpdump -i any` before libpcap 1.10.
    LinuxSll,
    /// `LINKTYPE_LINUX_SLL2` (276): `tcpdump -i any` from libpcap 1.10.
    LinuxSll2,
}

impl Link {
    /// The link type of a pcap `LINKTYPE_*` number, if supported.
    pub fn from_linktype(n: u32) -> Option<Self> {
        match n {
            1 => Some(Self::Ethernet),
            101 | 228 | 229 => Some(Self::RawIp),
            // DLT_RAW on some BSD-derived writers.
            12 | 14 => Some(Self::RawIp),
            113 => Some(Self::LinuxSll),
            276 => Some(Self::LinuxSll2),
            _ => None,
        }
    }
}

/// A TCP segment as the flow table needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    /// `FAMILY_V4` or `FAMILY_V6` (monitor_common::flow).
    pub family: u8,
    /// Source address, network byte order; IPv4 uses the first four bytes.
    pub src: [u8; 16],
    /// Destination address, as `src`.
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number of the first payload byte.
    pub seq: u32,
    /// IP packet length from its header (what the kernel counts as bytes).
    pub wire_len: u32,
    /// Payload length from the IP header (may exceed `payload.len()` when the capture cut it).
    pub payload_len: u32,
    /// The payload bytes captured.
    pub payload: &'a [u8],
    /// TCP flags.
    pub syn: bool,
    /// TCP flags.
    pub ack: bool,
    /// TCP flags.
    pub fin: bool,
    /// TCP flags.
    pub rst: bool,
}

/// What a frame was, when it was not a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTcp {
    /// Some other protocol (UDP, ARP, ICMP...): ignored, as the kernel programs ignore it.
    Other,
    /// The headers could not be read (cut before the TCP header, or malformed).
    Undecodable,
    /// An IP fragment: not reassembled (TCP over IP fragments is rare; counted).
    Fragment,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Decodes one frame of link type `link`.
pub fn decode(link: Link, frame: &[u8]) -> Result<Segment<'_>, NotTcp> {
    let sliced = match link {
        Link::Ethernet => LaxSlicedPacket::from_ethernet(frame).map_err(|_| NotTcp::Undecodable)?,
        Link::RawIp => LaxSlicedPacket::from_ip(frame).map_err(|_| NotTcp::Undecodable)?,
        Link::LinuxSll | Link::LinuxSll2 => {
            // SLL: protocol at bytes 14..16 of a 16-byte header; SLL2: at 0..2 of 20 bytes.
            let (proto_at, len) = if link == Link::LinuxSll {
                (14, 16)
            } else {
                (0, 20)
            };
            let Some(hdr) = frame.get(..len) else {
                return Err(NotTcp::Undecodable);
            };
            let proto = u16::from_be_bytes([hdr[proto_at], hdr[proto_at + 1]]);
            if proto != ETHERTYPE_IPV4 && proto != ETHERTYPE_IPV6 {
                return Err(NotTcp::Other);
            }
            LaxSlicedPacket::from_ip(&frame[len..]).map_err(|_| NotTcp::Undecodable)?
        }
    };
    let (family, src, dst, wire_len, ip_payload_len, fragmented) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&h.source());
            dst[..4].copy_from_slice(&h.destination());
            let total = u32::from(h.total_len());
            let hl = u32::from(h.ihl()) * 4;
            (
                monitor_common::flow::FAMILY_V4,
                src,
                dst,
                total,
                total.saturating_sub(hl),
                v4.payload().fragmented,
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let ext_len = v6.extensions().slice().len() as u32;
            let payload = u32::from(h.payload_length());
            (
                monitor_common::flow::FAMILY_V6,
                h.source(),
                h.destination(),
                payload + 40,
                payload.saturating_sub(ext_len),
                v6.payload().fragmented,
            )
        }
        _ => return Err(NotTcp::Other),
    };
    let tcp = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => t,
        Some(_) => return Err(NotTcp::Other),
        None if fragmented => return Err(NotTcp::Fragment),
        None => {
            let proto = sliced
                .net
                .as_ref()
                .and_then(|n| n.ip_payload_ref())
                .map(|p| p.ip_number);
            return Err(if proto == Some(etherparse::IpNumber::TCP) {
                NotTcp::Undecodable
            } else {
                NotTcp::Other
            });
        }
    };
    if fragmented {
        return Err(NotTcp::Fragment);
    }
    let header_len = u32::from(tcp.data_offset()) * 4;
    let payload_len = ip_payload_len.saturating_sub(header_len);
    let payload = tcp.payload();
    let payload = &payload[..payload.len().min(payload_len as usize)];
    Ok(Segment {
        family,
        src,
        dst,
        sport: tcp.source_port(),
        dport: tcp.destination_port(),
        seq: tcp.sequence_number(),
        wire_len,
        payload_len,
        payload,
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_v4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1000, 65535)
            .ack(1)
            .psh();
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn ethernet_ipv4_tcp_with_payload() {
        let f = tcp_v4(b"GET / HTTP/1.1\r\n\r\n");
        let s = decode(Link::Ethernet, &f).unwrap();
        assert_eq!((s.sport, s.dport, s.seq), (40000, 80, 1000));
        assert_eq!(s.payload, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(s.payload_len, 18);
        assert_eq!(s.wire_len, 20 + 20 + 18);
        assert_eq!(&s.src[..4], &[10, 0, 0, 1]);
        assert!(s.ack && !s.syn && !s.fin && !s.rst);
    }

    #[test]
    fn a_frame_cut_by_the_snap_length_keeps_its_declared_length() {
        let f = tcp_v4(&[b'x'; 1000]);
        let s = decode(Link::Ethernet, &f[..14 + 40 + 100]).unwrap();
        assert_eq!(s.payload_len, 1000);
        assert_eq!(s.payload.len(), 100);
    }

    #[test]
    fn cooked_and_raw_captures_and_ipv6() {
        let b = PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(5000, 8080, 7, 1000)
            .syn();
        let mut ip = Vec::new();
        b.write(&mut ip, &[]).unwrap();
        let raw = decode(Link::RawIp, &ip).unwrap();
        assert!(raw.syn && raw.family == monitor_common::flow::FAMILY_V6);
        assert_eq!(raw.wire_len, 60);
        let mut sll = vec![0, 4, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x86, 0xdd];
        sll.extend_from_slice(&ip);
        assert_eq!(decode(Link::LinuxSll, &sll).unwrap(), raw);
        let mut sll2 = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        assert_eq!(decode(Link::LinuxSll2, &sll2).unwrap(), raw);
    }

    #[test]
    fn other_protocols_and_garbage_are_told_apart() {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(53, 53);
        let mut udp = Vec::new();
        b.write(&mut udp, b"x").unwrap();
        assert_eq!(decode(Link::Ethernet, &udp), Err(NotTcp::Other));
        let f = tcp_v4(b"hello");
        assert_eq!(
            decode(Link::Ethernet, &f[..14 + 24]),
            Err(NotTcp::Undecodable)
        );
        assert_eq!(decode(Link::RawIp, &[0x45, 0, 0]), Err(NotTcp::Undecodable));
        assert_eq!(decode(Link::LinuxSll, &[0; 10]), Err(NotTcp::Undecodable));
    }
}
