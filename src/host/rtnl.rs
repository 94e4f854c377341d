//! A small synchronous rtnetlink client for one network namespace.
//!
//! The socket is bound to the namespace it was created in, so a node keeps
//! one `Rtnl` made inside its netns and uses it from the engine thread.
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
            let mut off = 0;
            while off < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(e) = reply.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Sets a link's MAC and MTU (when given) and brings it up.
    pub fn set_link(&mut self, index: u32, mac: Option<MacAddr>, mtu: Option<u32>, up: bool) -> io::Result<()> {
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
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Adds an address to a link; the kernel adds the connected route.
    pub fn add_addr(&mut self, index: u32, cidr: Cidr) -> io::Result<()> {
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
        self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL)
    }
}

impl Rtnl {
    /// Adds a static route to `dst` via a gateway and/or out of a link.
    pub fn add_route(&mut self, dst: Prefix, via: Option<IpAddr>, oif: Option<u32>) -> io::Result<()> {
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
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL)
    }
}
