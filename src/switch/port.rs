//! Port plumbing: how the data plane reads and writes one port's frames.
//!
//! Every buffer inside the switch starts with a virtio-net header. A port
//! whose fd speaks that layout natively (a TAP opened with `IFF_VNET_HDR`,
//! or a SOCK_SEQPACKET peer that does the same) is an `FdPort`.
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Writes one message made of `parts`, leaving out its first `skip` bytes,
/// with one writev and no allocation (at most 8 parts).
fn write_message(fd: &OwnedFd, parts: &[&[u8]], mut skip: usize) -> io::Result<()> {
    let mut iov = [IoSlice::new(&[]); 8];
    let (mut count, mut total) = (0, 0);
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        let slot = iov.get_mut(count).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many parts"))?;
        *slot = IoSlice::new(&p[skip..]);
        total += p.len() - skip;
        skip = 0;
        count += 1;
    }
    let n = nix::sys::uio::writev(fd, &iov[..count]).map_err(io::Error::from)?;
    if n != total {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write on a message port"));
    }
    Ok(())
}

/// The I/O side of a port, owned by the data plane thread.
pub trait PortIo: Send {
    /// Reads one frame, virtio-net header first. `Ok(0)` means the peer is gone.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame, virtio-net header first.
    fn send(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes one frame given in pieces (to insert or remove a VLAN tag
    /// without copying the payload).
    fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()>;
    /// The fd the data plane polls.
    fn raw_fd(&self) -> RawFd;
    /// Whether the peer takes GSO super-frames and seeded checksums (a TAP
    /// with offloads does; raw sockets do not, and get segmented frames).
    fn gso(&self) -> bool {
        true
    }
    /// Gives or takes away carrier, as a cable would (link up/down).
    fn set_carrier(&mut self, _up: bool) -> io::Result<()> {
        Ok(())
    }
}

/// A message-preserving fd that carries `[virtio_net_hdr][frame]` per
/// read/write: a TAP with `IFF_VNET_HDR`, or a seqpacket socket.
#[derive(Debug)]
pub struct FdPort {
    fd: OwnedFd,
    is_tap: bool,
}

impl FdPort {
    /// A TAP opened with `IFF_VNET_HDR`.
    pub fn tap(fd: OwnedFd) -> FdPort {
        FdPort { fd, is_tap: true }
    }

    /// A seqpacket socket whose peer uses the same layout.
    pub fn socket(fd: OwnedFd) -> FdPort {
        FdPort { fd, is_tap: false }
    }
}

impl PortIo for FdPort {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(&self.fd, buf).map_err(io::Error::from)
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        let n = nix::unistd::write(&self.fd, buf).map_err(io::Error::from)?;
        if n != buf.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write on a message port"));
        }
        Ok(())
    }

    fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        write_message(&self.fd, parts, 0)
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn set_carrier(&mut self, up: bool) -> io::Result<()> {
        if self.is_tap {
            crate::sys::tap::set_carrier(self.fd.as_raw_fd(), up)?;
        }
        Ok(())
    }
}

/// A message-preserving fd whose peer speaks raw Ethernet frames, one per
/// message, with no virtio-net header: UML's vector `bess` transport, or a
/// QEMU `dgram` netdev. The switch's header is added on receive (all zero:
/// no offload) and left out on send; frames that need an offload reach this
/// port already segmented or checksummed (see `gso`).
#[derive(Debug)]
pub struct RawPort {
    fd: OwnedFd,
}

impl RawPort {
    pub fn new(fd: OwnedFd) -> RawPort {
        RawPort { fd }
    }
}

impl PortIo for RawPort {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const HDR: usize = super::frame::VNET_HDR_LEN;
        let n = nix::unistd::read(&self.fd, &mut buf[HDR..]).map_err(io::Error::from)?;
        if n == 0 {
            return Ok(0);
        }
        buf[..HDR].fill(0);
        Ok(n + HDR)
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.send_parts(&[buf])
    }

    fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        // Leave the virtio-net header out, wherever the first parts end.
        write_message(&self.fd, parts, super::frame::VNET_HDR_LEN)
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn gso(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::frame::VNET_HDR_LEN;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn raw_ports_add_and_remove_the_virtio_header() {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::empty()).unwrap();
        let mut port = RawPort::new(a);
        let peer = UnixDatagram::from(b);
        peer.send(&[0xaa; 60]).unwrap();
        let mut buf = [0x55u8; 200];
        let n = port.recv(&mut buf).unwrap();
        assert_eq!(n, VNET_HDR_LEN + 60);
        assert!(buf[..VNET_HDR_LEN].iter().all(|b| *b == 0));
        assert!(buf[VNET_HDR_LEN..n].iter().all(|b| *b == 0xaa));
        // Header split across parts, as the VLAN path sends it.
        let hdr = [0u8; VNET_HDR_LEN];
        port.send_parts(&[&hdr[..4], &hdr[4..], &[1, 2, 3], &[4]]).unwrap();
        let mut got = [0u8; 16];
        assert_eq!(peer.recv(&mut got).unwrap(), 4);
        assert_eq!(&got[..4], &[1, 2, 3, 4]);
    }
}
