//! One-line summaries of Ethernet frames for live sniffing (sans-IO):
//! MACs, the VLAN tag, and the decoded L3/L4 headers (ARP, IPv4, IPv6,
//! ICMP, ICMPv6, TCP/UDP ports and flags), parsed with `etherparse`.
//!
//! Owns: decoding and wording. Must not touch: ports, captures, output.
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{ArpOperation, Icmpv4Type, Icmpv6Type, LinkSlice, NetSlice, SlicedPacket, TransportSlice};

use crate::vocab::MacAddr;

/// `src > dst [vlan N] <protocol summary>` for one Ethernet frame (no
/// virtio-net header). Frames it cannot decode are shown as far as they
/// parse, with the reason.
pub fn summarize(eth: &[u8]) -> String {
    let mut out = String::new();
    if eth.len() < 14 {
        return format!("runt frame of {} bytes", eth.len());
    }
    let mac = |b: &[u8]| MacAddr(b.try_into().expect("6 bytes")).to_string();
    let _ = write!(out, "{} > {}", mac(&eth[6..12]), mac(&eth[0..6]));
    let packet = match SlicedPacket::from_ethernet(eth) {
        Ok(p) => p,
        Err(e) => {
            let _ = write!(out, " undecodable: {e}");
            return out;
        }
    };
    for id in packet.vlan_ids() {
        let _ = write!(out, " vlan {}", id.value());
    }
    match &packet.net {
        Some(NetSlice::Arp(arp)) => {
            let ip = |b: &[u8]| <[u8; 4]>::try_from(b).map(|a| Ipv4Addr::from(a).to_string()).unwrap_or_default();
            let (sender, target) = (ip(arp.sender_protocol_addr()), ip(arp.target_protocol_addr()));
            match arp.operation() {
                ArpOperation::REQUEST => {
                    let _ = write!(out, " ARP who-has {target} tell {sender}");
                }
                ArpOperation::REPLY => {
                    let hw = <[u8; 6]>::try_from(arp.sender_hw_addr()).map(|m| MacAddr(m).to_string());
                    let _ = write!(out, " ARP {sender} is-at {}", hw.unwrap_or_default());
                }
                other => {
                    let _ = write!(out, " ARP operation {}", other.0);
                }
            }
        }
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let _ = write!(out, " IPv4 {} > {} ttl {}", h.source_addr(), h.destination_addr(), h.ttl());
            transport(&mut out, &packet.transport, h.protocol().0, ip.payload().fragmented);
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let (s, d): (Ipv6Addr, Ipv6Addr) = (h.source_addr(), h.destination_addr());
            let _ = write!(out, " IPv6 {s} > {d} hlim {}", h.hop_limit());
            transport(&mut out, &packet.transport, ip.payload().ip_number.0, ip.payload().fragmented);
        }
        None => {
            if let Some(LinkSlice::Ethernet2(e)) = &packet.link {
                let _ = write!(out, " ethertype 0x{:04x}", e.ether_type().0);
            }
        }
    }
    let _ = write!(out, " len {}", eth.len());
    out
}

fn tcp_flags(t: &etherparse::TcpSlice<'_>) -> String {
    let mut f = String::new();
    for (set, c) in [(t.syn(), 'S'), (t.fin(), 'F'), (t.rst(), 'R'), (t.psh(), 'P'), (t.ack(), '.')] {
        if set {
            f.push(c);
        }
    }
    f
}

fn transport(out: &mut String, t: &Option<TransportSlice<'_>>, proto: u8, fragmented: bool) {
    match t {
        Some(TransportSlice::Tcp(t)) => {
            let _ = write!(
                out,
                " TCP {} > {} [{}] seq {} win {} payload {}",
                t.source_port(),
                t.destination_port(),
                tcp_flags(t),
                t.sequence_number(),
                t.window_size(),
                t.payload().len()
            );
        }
        Some(TransportSlice::Udp(u)) => {
            let _ = write!(out, " UDP {} > {} payload {}", u.source_port(), u.destination_port(), u.payload().len());
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let _ = match i.icmp_type() {
                Icmpv4Type::EchoRequest(e) => write!(out, " ICMP echo request id {} seq {}", e.id, e.seq),
                Icmpv4Type::EchoReply(e) => write!(out, " ICMP echo reply id {} seq {}", e.id, e.seq),
                Icmpv4Type::DestinationUnreachable(_) => write!(out, " ICMP destination unreachable"),
                Icmpv4Type::TimeExceeded(_) => write!(out, " ICMP time exceeded"),
                _ => write!(out, " ICMP type {}", i.type_u8()),
            };
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let _ = match i.icmp_type() {
                Icmpv6Type::EchoRequest(e) => write!(out, " ICMPv6 echo request id {} seq {}", e.id, e.seq),
                Icmpv6Type::EchoReply(e) => write!(out, " ICMPv6 echo reply id {} seq {}", e.id, e.seq),
                Icmpv6Type::NeighborSolicitation => write!(out, " ICMPv6 neighbor solicitation"),
                Icmpv6Type::NeighborAdvertisement(_) => write!(out, " ICMPv6 neighbor advertisement"),
                Icmpv6Type::RouterSolicitation => write!(out, " ICMPv6 router solicitation"),
                Icmpv6Type::RouterAdvertisement(_) => write!(out, " ICMPv6 router advertisement"),
                _ => write!(out, " ICMPv6 type {}", i.type_u8()),
            };
        }
        Some(TransportSlice::Igmp(_)) => out.push_str(" IGMP"),
        None if fragmented => out.push_str(" fragment"),
        None => {
            let _ = write!(out, " protocol {proto}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn icmp_tcp_udp_and_vlan_tags_are_decoded() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(7, 3)
            .write(&mut f, &[0u8; 56])
            .unwrap();
        assert_eq!(
            summarize(&f),
            "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 ICMP echo request id 7 seq 3 len 98"
        );
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .single_vlan(10.try_into().unwrap())
            .ipv6([0xfe; 16], [0xfd; 16], 1)
            .tcp(40000, 5201, 1000, 64240)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        let s = summarize(&f);
        assert!(s.contains(" vlan 10 IPv6 fefe:"), "{s}");
        assert!(s.ends_with("TCP 40000 > 5201 [S] seq 1000 win 64240 payload 0 len 78"), "{s}");
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B).ipv4([1, 1, 1, 1], [2, 2, 2, 2], 5).udp(53, 9999).write(&mut f, b"hi").unwrap();
        assert!(summarize(&f).contains("UDP 53 > 9999 payload 2"));
    }

    #[test]
    fn arp_and_odd_frames_are_summarized() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&A);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&A);
        f.extend_from_slice(&[10, 0, 0, 1]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 0, 2]);
        assert_eq!(summarize(&f), "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.2 tell 10.0.0.1 len 42");
        assert_eq!(summarize(&[0u8; 10]), "runt frame of 10 bytes");
        let mut odd = B.to_vec();
        odd.extend_from_slice(&A);
        odd.extend_from_slice(&[0x88, 0xb5, 1, 2, 3]);
        assert!(summarize(&odd).contains("ethertype 0x88b5"), "{}", summarize(&odd));
    }
}
