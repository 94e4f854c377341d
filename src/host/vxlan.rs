//! VXLAN endpoints: a LAN's port that is a UDP socket, each frame a
//! datagram with the VXLAN header (RFC 7348) in front, to and from one
//! remote VTEP: Linux's `vxlan` device, FRR EVPN, Open vSwitch, or
//! another clonet.
//!
//! The socket is bound to the endpoint's local port and not connected:
//! Linux sends from a source port it picks per flow, so datagrams are
//! taken from any port of the remote's address. A datagram from another
//! address, without the I flag, or of another VNI is counted and dropped
//! (shown in `info().detail`). Frames go out segmented (`gso` is false: a
//! VTEP takes no super-frames) and the kernel fragments a datagram larger
//! than the path (a frame of MTU 1500 needs 1550 bytes of underlay; give
//! the LAN's ports `mtu: 1450` to avoid fragments).
//!
//! Owns: the socket. Must not touch: the remote's settings (they are the
//! user's to match: VNI, port).
use std::io;
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{ExecOutput, ExecRequest, HostError, NodeSpec, ProcRecord, RunningNode};
use crate::switch::frame::VNET_HDR_LEN;
use crate::switch::port::PortIo;
use crate::switch::vxlan::{check, header, Refusal, VXLAN_HDR_LEN};
use crate::vocab::{Cidr, MacAddr, Route, VxlanSpec};

/// What an endpoint dropped, and why.
#[derive(Debug, Default)]
struct Dropped {
    /// Datagrams from an address that is not the remote's.
    foreign: AtomicU64,
    /// Datagrams of the remote that are not frames of this tunnel (no I
    /// flag, another VNI, too short).
    refused: AtomicU64,
    /// Frames the socket would not send (its buffer full, no route).
    unsent: AtomicU64,
}

/// Binds the endpoint's socket (its port comes with its LAN link).
pub fn start(spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError> {
    let tunnel = spec
        .options
        .vxlan
        .clone()
        .ok_or_else(|| HostError::start(spec.name.clone(), "a vxlan endpoint needs its vni and remote"))?;
    let socket = bind(&tunnel)
        .map_err(|e| HostError::start(spec.name.clone(), format!("binding UDP port {}: {e}", tunnel.local_port)))?;
    Ok(Box::new(VxlanEndpoint {
        name: spec.name.clone(),
        tunnel,
        socket: Some(socket),
        dropped: Arc::new(Dropped::default()),
    }))
}

/// The endpoint's socket: non-blocking, on `local_port` of every address
/// of the remote's family.
fn bind(tunnel: &VxlanSpec) -> io::Result<UdpSocket> {
    let any: std::net::IpAddr = if tunnel.remote.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = UdpSocket::bind((any, tunnel.local_port))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A running endpoint: its socket until its one port takes it.
pub struct VxlanEndpoint {
    name: String,
    tunnel: VxlanSpec,
    socket: Option<UdpSocket>,
    dropped: Arc<Dropped>,
}

impl VxlanEndpoint {
    fn no(&self, what: &str) -> HostError {
        HostError::start(self.name.clone(), format!("{what}: a vxlan endpoint runs nothing"))
    }
}

impl RunningNode for VxlanEndpoint {
    fn processes(&self) -> Vec<ProcRecord> {
        Vec::new()
    }

    fn pid(&self) -> i32 {
        0
    }

    fn pause(&mut self, _paused: bool) -> Result<(), HostError> {
        Err(self.no("pause"))
    }

    fn detail(&self) -> Option<String> {
        let t = &self.tunnel;
        let d = &self.dropped;
        Some(format!(
            "VXLAN VNI {} to {} port {} from port {}; dropped: {} from other addresses, {} not of this tunnel, {} unsent",
            t.vni,
            t.remote,
            t.port,
            t.local_port,
            d.foreign.load(Ordering::Relaxed),
            d.refused.load(Ordering::Relaxed),
            d.unsent.load(Ordering::Relaxed)
        ))
    }

    fn add_iface(&mut self, _ifname: &str, _mac: MacAddr, _mtu: u32) -> Result<Box<dyn PortIo>, HostError> {
        let socket = self.socket.take().ok_or_else(|| {
            HostError::start(self.name.clone(), "a vxlan endpoint has one port, on one LAN".to_string())
        })?;
        Ok(Box::new(VxlanPort {
            socket,
            remote: SocketAddr::new(self.tunnel.remote, self.tunnel.port),
            vni: self.tunnel.vni,
            dropped: self.dropped.clone(),
        }))
    }

    fn add_addr(&mut self, _ifname: &str, _cidr: Cidr) -> Result<(), HostError> {
        Err(self.no("an address"))
    }

    fn add_route(&mut self, _route: &Route) -> Result<(), HostError> {
        Err(self.no("a route"))
    }

    fn forget_iface(&mut self, _ifname: &str) {
        // The socket went with the port: a new link binds again.
        if self.socket.is_none() {
            self.socket = bind(&self.tunnel).ok();
        }
    }

    fn exec(&mut self, _req: &ExecRequest) -> Result<ExecOutput, HostError> {
        Err(self.no("exec"))
    }

    fn ping(&mut self, _target: std::net::IpAddr, _timeout: Duration) -> Result<Option<Duration>, HostError> {
        Err(self.no("ping"))
    }

    fn stop(&mut self) -> Result<(), HostError> {
        Ok(())
    }
}

/// The LAN's port: frames in and out of the tunnel.
struct VxlanPort {
    socket: UdpSocket,
    remote: SocketAddr,
    vni: u32,
    dropped: Arc<Dropped>,
}

impl PortIo for VxlanPort {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The datagram lands so that its frame starts where the switch's
        // buffer wants it, after the virtio-net header: no copy.
        const AT: usize = VNET_HDR_LEN - VXLAN_HDR_LEN;
        loop {
            let (n, from) = self.socket.recv_from(&mut buf[AT..])?;
            if from.ip() != self.remote.ip() {
                self.dropped.foreign.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match check(&buf[AT..AT + n], self.vni) {
                Ok(()) => {}
                Err(Refusal::Short | Refusal::NoVni | Refusal::OtherVni(_)) => {
                    self.dropped.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            // No offload: a zero virtio-net header.
            buf[..VNET_HDR_LEN].fill(0);
            return Ok(n - VXLAN_HDR_LEN + VNET_HDR_LEN);
        }
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.send_parts(&[buf])
    }

    fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let hdr = header(self.vni);
        let mut iov: Vec<IoSlice> = Vec::with_capacity(parts.len() + 1);
        iov.push(IoSlice::new(&hdr));
        // Leave the virtio-net header out, wherever the first parts end.
        let mut skip = VNET_HDR_LEN;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            iov.push(IoSlice::new(&p[skip..]));
            skip = 0;
        }
        let to = nix::sys::socket::SockaddrStorage::from(self.remote);
        match nix::sys::socket::sendmsg(
            self.socket.as_raw_fd(),
            &iov,
            &[],
            nix::sys::socket::MsgFlags::empty(),
            Some(&to),
        ) {
            Ok(_) => {}
            // A datagram lost, as on any network: counted, and the port goes on.
            Err(_) => {
                self.dropped.unsent.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn gso(&self) -> bool {
        false
    }
}
