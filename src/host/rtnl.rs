//! A small synchronous rtnetlink client for one network namespace.
//!
//! The socket is bound to the namespace it was created in, so a node keeps
//! one `Rtnl` made inside its netns and uses it from the engine thread.
//! The requests are built, and the kernel's answers read, by sans-IO
//! functions ([`link_request`], [`address_request`], [`route_request`],
//! [`acknowledgement`]); `Rtnl` only sends and receives. Nodes reach it
//! through the [`Netlink`] trait, which tests replace.
//!
//! Owns: the rtnetlink wire format of the requests clonet makes. Must not
//! touch: which requests a node needs (its callers decide).
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::syscall::Netlink;
use crate::vocab::addr::{Cidr, Prefix};
use crate::vocab::MacAddr;

pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// Opens a route netlink socket in the calling thread's namespace.
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    fn request(&mut self, msg: RouteNetlinkMessage, extra_flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut rx = vec![0u8; 16384];
        loop {
            let n = self.socket.recv(&mut &mut rx[..], 0)?;
            if let Some(answer) = acknowledgement(&rx[..n], self.seq) {
                return answer;
            }
        }
    }
}

/// The kernel's answer to request `seq` in one datagram of replies: `None`
/// if the datagram does not hold it, else the acknowledgement or the
/// error the kernel gave.
pub fn acknowledgement(datagram: &[u8], seq: u32) -> Option<io::Result<()>> {
    let mut off = 0;
    while off < datagram.len() {
        let reply = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[off..]) {
            Ok(reply) => reply,
            Err(e) => return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))),
        };
        let len = reply.header.length as usize;
        if reply.header.sequence_number == seq {
            if let NetlinkPayload::Error(e) = reply.payload {
                return Some(match e.code {
                    None => Ok(()),
                    Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                });
            }
        }
        if len == 0 {
            break;
        }
        // Messages are aligned to 4 bytes.
        off += (len + 3) & !3;
    }
    None
}

/// The request that sets a link's MAC and MTU (when given) and its up flag.
pub fn link_request(index: u32, mac: Option<MacAddr>, mtu: Option<u32>, up: bool) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.change_mask = LinkFlags::Up;
    if up {
        msg.header.flags = LinkFlags::Up;
    }
    if let Some(mac) = mac {
        msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    RouteNetlinkMessage::SetLink(msg)
}

/// The request that adds an address to a link, with the IPv4 broadcast
/// address of its prefix (none on /31 and /32 point-to-point links).
pub fn address_request(index: u32, cidr: Cidr) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = match cidr.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.prefix_len = cidr.prefix;
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(cidr.addr));
    msg.attributes.push(AddressAttribute::Address(cidr.addr));
    if let IpAddr::V4(v4) = cidr.addr {
        if cidr.prefix < 31 {
            let mask = u32::MAX.checked_shr(cidr.prefix as u32).unwrap_or(0);
            let brd = u32::from(v4) | mask;
            msg.attributes.push(AddressAttribute::Broadcast(brd.into()));
        }
    }
    RouteNetlinkMessage::NewAddress(msg)
}

/// The request that adds a static route to `dst` via a gateway and/or out
/// of a link, in the main table (a route without gateway is on-link).
pub fn route_request(dst: Prefix, via: Option<IpAddr>, oif: Option<u32>) -> RouteNetlinkMessage {
    let to_route_addr = |ip: IpAddr| match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    };
    let mut msg = RouteMessage::default();
    msg.header.address_family = if dst.addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    msg.header.destination_prefix_length = dst.len;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = if via.is_some() { RouteScope::Universe } else { RouteScope::Link };
    msg.header.kind = RouteType::Unicast;
    if dst.len > 0 {
        msg.attributes.push(RouteAttribute::Destination(to_route_addr(dst.addr)));
    }
    if let Some(gw) = via {
        msg.attributes.push(RouteAttribute::Gateway(to_route_addr(gw)));
    }
    if let Some(index) = oif {
        msg.attributes.push(RouteAttribute::Oif(index));
    }
    RouteNetlinkMessage::NewRoute(msg)
}

impl Netlink for Rtnl {
    fn set_link(&mut self, index: u32, mac: Option<MacAddr>, mtu: Option<u32>, up: bool) -> io::Result<()> {
        self.request(link_request(index, mac, mtu, up), 0)
    }

    fn add_addr(&mut self, index: u32, cidr: Cidr) -> io::Result<()> {
        self.request(address_request(index, cidr), NLM_F_CREATE | NLM_F_EXCL)
    }

    fn add_route(&mut self, dst: Prefix, via: Option<IpAddr>, oif: Option<u32>) -> io::Result<()> {
        self.request(route_request(dst, via, oif), NLM_F_CREATE | NLM_F_EXCL)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use netlink_packet_core::ErrorMessage;

    use super::*;

    fn address_attributes(cidr: &str) -> (AddressFamily, Vec<AddressAttribute>) {
        let RouteNetlinkMessage::NewAddress(msg) = address_request(3, cidr.parse().unwrap()) else {
            panic!("not an address request")
        };
        assert_eq!((msg.header.index, msg.header.prefix_len), (3, cidr.parse::<Cidr>().unwrap().prefix));
        (msg.header.family, msg.attributes)
    }

    #[test]
    fn an_ipv4_address_gets_its_broadcast_except_on_point_to_point_prefixes() {
        let (family, attrs) = address_attributes("10.1.2.3/24");
        assert_eq!(family, AddressFamily::Inet);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            attrs,
            vec![
                AddressAttribute::Local(ip),
                AddressAttribute::Address(ip),
                AddressAttribute::Broadcast("10.1.2.255".parse().unwrap()),
            ]
        );
        for p2p in ["10.0.0.0/31", "10.0.0.1/32"] {
            let (_, attrs) = address_attributes(p2p);
            assert!(!attrs.iter().any(|a| matches!(a, AddressAttribute::Broadcast(_))), "{p2p}");
        }
        let (family, attrs) = address_attributes("fd00::1/64");
        assert_eq!(family, AddressFamily::Inet6);
        assert_eq!(attrs.len(), 2, "no broadcast in IPv6: {attrs:?}");
    }

    #[test]
    fn a_default_route_via_a_gateway_names_no_destination_and_an_on_link_route_has_link_scope() {
        let gw: IpAddr = "10.0.0.1".parse().unwrap();
        let RouteNetlinkMessage::NewRoute(default) = route_request("0.0.0.0/0".parse().unwrap(), Some(gw), None) else {
            panic!("not a route request")
        };
        assert_eq!(default.header.scope, RouteScope::Universe);
        assert_eq!(
            (default.header.table, default.header.protocol),
            (RouteHeader::RT_TABLE_MAIN, RouteProtocol::Static)
        );
        assert_eq!(default.attributes, vec![RouteAttribute::Gateway(RouteAddress::Inet("10.0.0.1".parse().unwrap()))]);
        let RouteNetlinkMessage::NewRoute(on_link) = route_request("fd00:1::/48".parse().unwrap(), None, Some(4))
        else {
            panic!("not a route request")
        };
        assert_eq!(on_link.header.scope, RouteScope::Link);
        assert_eq!(
            (on_link.header.address_family, on_link.header.destination_prefix_length),
            (AddressFamily::Inet6, 48)
        );
        assert_eq!(
            on_link.attributes,
            vec![RouteAttribute::Destination(RouteAddress::Inet6("fd00:1::".parse().unwrap())), RouteAttribute::Oif(4)]
        );
    }

    #[test]
    fn a_link_request_changes_only_the_up_flag_and_the_given_attributes() {
        let mac: MacAddr = "02:00:00:00:00:07".parse().unwrap();
        let RouteNetlinkMessage::SetLink(msg) = link_request(5, Some(mac), Some(9000), true) else { panic!() };
        assert_eq!((msg.header.index, msg.header.flags, msg.header.change_mask), (5, LinkFlags::Up, LinkFlags::Up));
        assert_eq!(msg.attributes, vec![LinkAttribute::Address(mac.0.to_vec()), LinkAttribute::Mtu(9000)]);
        let RouteNetlinkMessage::SetLink(down) = link_request(1, None, None, false) else { panic!() };
        assert_eq!((down.header.flags, down.header.change_mask), (LinkFlags::empty(), LinkFlags::Up));
        assert!(down.attributes.is_empty());
    }

    /// One datagram holding the kernel's answers with these sequence numbers and codes.
    fn answers(replies: &[(u32, i32)]) -> Vec<u8> {
        let mut datagram = Vec::new();
        for &(seq, code) in replies {
            let mut header = NetlinkHeader::default();
            header.sequence_number = seq;
            let mut error = ErrorMessage::default();
            error.code = NonZeroI32::new(code);
            let mut msg = NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(error));
            msg.finalize();
            let mut buf = vec![0u8; msg.buffer_len()];
            msg.serialize(&mut buf);
            datagram.extend_from_slice(&buf);
        }
        datagram
    }

    #[test]
    fn the_answer_to_our_request_is_found_among_others_and_its_errno_kept() {
        let eexist = -(nix::errno::Errno::EEXIST as i32);
        assert!(matches!(acknowledgement(&answers(&[(6, 0), (7, 0)]), 7), Some(Ok(()))));
        let err = acknowledgement(&answers(&[(6, 0), (7, eexist)]), 7).unwrap().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::EEXIST as i32));
        assert!(acknowledgement(&answers(&[(5, eexist)]), 7).is_none(), "an answer to another request");
        let torn = acknowledgement(&[1, 2, 3], 7).unwrap().unwrap_err();
        assert_eq!(torn.kind(), io::ErrorKind::InvalidData);
    }
}
