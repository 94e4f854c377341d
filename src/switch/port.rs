//! Port plumbing: how the data plane reads and writes one port's frames.
//!
//! Every buffer inside the switch starts with a virtio-net header. A port
//! whose fd speaks that layout natively (a TAP opened with `IFF_VNET_HDR`,
//! or a SOCK_SEQPACKET peer that does the same) is an `FdPort`.
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The I/O side of a port, owned by the data plane thread.
pub trait PortIo: Send {
    /// Reads one frame, virtio-net header first. `Ok(0)` means the peer is gone.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame, virtio-net header first.
    fn send(&mut self, buf: &[u8]) -> io::Result<()>;
    /// The fd the data plane polls.
    fn raw_fd(&self) -> RawFd;
}

/// A message-preserving fd that carries `[virtio_net_hdr][frame]` per
/// read/write: a TAP with `IFF_VNET_HDR`, or a seqpacket socket.
#[derive(Debug)]
pub struct FdPort {
    fd: OwnedFd,
}

impl FdPort {
    pub fn new(fd: OwnedFd) -> FdPort {
        FdPort { fd }
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

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
