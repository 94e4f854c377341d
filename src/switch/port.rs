//! Port plumbing: how the data plane reads and writes one port's frames.
//!
//! Every buffer inside the switch starts with a virtio-net header. A port
//! whose fd speaks that layout natively (a TAP opened with `IFF_VNET_HDR`,
//! or a SOCK_SEQPACKET peer that does the same) is an `FdPort`.
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

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
        let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let n = nix::sys::uio::writev(&self.fd, &iov).map_err(io::Error::from)?;
        if n != total {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write on a message port"));
        }
        Ok(())
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
