//! Port plumbing: how the data plane reads and writes one port's frames.
//!
//! Every buffer inside the switch starts with a virtio-net header. A port
//! whose fd speaks that layout natively (a TAP opened with `IFF_VNET_HDR`,
//! or a SOCK_SEQPACKET peer that does the same) is an `FdPort`.
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// The slices of one message made of `parts`, leaving out its first
/// `skip` bytes, in `iov` (at most 8 parts): how many slices, and how many
/// bytes they hold. Sans-IO, so what a peer receives can be checked
/// without a socket.
pub fn message_slices<'a>(
    parts: &[&'a [u8]],
    mut skip: usize,
    iov: &mut [IoSlice<'a>; 8],
) -> io::Result<(usize, usize)> {
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
    Ok((count, total))
}

/// Writes one message made of `parts`, leaving out its first `skip` bytes,
/// with one writev and no allocation (at most 8 parts).
fn write_message(fd: &OwnedFd, parts: &[&[u8]], skip: usize) -> io::Result<()> {
    let mut iov = [IoSlice::new(&[]); 8];
    let (count, total) = message_slices(parts, skip, &mut iov)?;
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
    /// Reads up to `bufs.len()` waiting frames, one per buffer (virtio-net
    /// header first), and their lengths into `lens`; returns how many (at
    /// least one), or `WouldBlock`. A length of 0 means the peer is gone.
    /// One `read` by default; sockets take a batch in one `recvmmsg`.
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        lens[0] = self.recv(&mut bufs[0])?;
        Ok(1)
    }
    /// Writes one frame, virtio-net header first.
    fn send(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes one frame given in pieces (to insert or remove a VLAN tag
    /// without copying the payload).
    fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()>;
    /// The fd the data plane polls.
    fn raw_fd(&self) -> RawFd;
    /// Called when the lab removes the port on purpose, before it is
    /// dropped (not when the switch shuts down).
    fn release(&mut self) {}
    /// Called when the port fails (its peer left, or broke the framing):
    /// a socket is shut down both ways, so the peer and anyone polling
    /// the socket see it closed at once. Nothing for a TAP.
    fn shut_down(&mut self) {}
    /// Whether the peer takes GSO super-frames and seeded checksums (a TAP
    /// with offloads does; raw sockets do not, and get segmented frames).
    fn gso(&self) -> bool {
        true
    }
    /// Gives or takes away carrier, as a cable would (link up/down).
    fn set_carrier(&mut self, _up: bool) -> io::Result<()> {
        Ok(())
    }
    /// Whether part of an accepted frame still waits to be written (byte
    /// streams only): the data plane then waits for the fd to be writable.
    fn has_pending(&self) -> bool {
        false
    }
    /// Writes what `has_pending` reports; `WouldBlock` if it cannot yet.
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One end of an in-switch cable ([`super::Switch::add_cable`]): it has no
/// fd and is never polled; the data plane hands what it sends to the
/// other end itself.
#[derive(Debug)]
pub struct CableEnd;

impl PortIo for CableEnd {
    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn send(&mut self, _buf: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "a cable end is written by the data plane"))
    }
    fn send_parts(&mut self, _parts: &[&[u8]]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "a cable end is written by the data plane"))
    }
    fn raw_fd(&self) -> RawFd {
        -1
    }
}

/// A message-preserving fd that carries `[virtio_net_hdr][frame]` per
/// read/write: a TAP with `IFF_VNET_HDR`, or a seqpacket socket.
#[derive(Debug)]
pub struct FdPort {
    fd: OwnedFd,
    is_tap: bool,
    /// A persistent TAP: made ordinary again when the lab removes the port,
    /// so that closing the fd deletes it (see `sys::tap::set_persistent`).
    persistent: bool,
}

impl FdPort {
    /// A TAP opened with `IFF_VNET_HDR`.
    pub fn tap(fd: OwnedFd) -> FdPort {
        FdPort { fd, is_tap: true, persistent: false }
    }

    /// A TAP made persistent (it lives in a node's namespace, and goes
    /// with it unless the port is removed first).
    pub fn persistent_tap(fd: OwnedFd) -> io::Result<FdPort> {
        crate::sys::tap::set_persistent(fd.as_fd(), true)?;
        Ok(FdPort { fd, is_tap: true, persistent: true })
    }

    /// A seqpacket socket whose peer uses the same layout.
    pub fn socket(fd: OwnedFd) -> FdPort {
        FdPort { fd, is_tap: false, persistent: false }
    }
}

impl PortIo for FdPort {
    fn release(&mut self) {
        if self.persistent {
            let _ = crate::sys::tap::set_persistent(self.fd.as_fd(), false);
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(&self.fd, buf).map_err(io::Error::from)
    }

    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        if self.is_tap {
            lens[0] = self.recv(&mut bufs[0])?;
            return Ok(1);
        }
        crate::sys::socket::recv_many(self.fd.as_fd(), bufs, lens, 0)
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
            crate::sys::tap::set_carrier(self.fd.as_fd(), up)?;
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

/// Makes the raw frame of `len` bytes a `RawPort` read at
/// `buf[VNET_HDR_LEN..]` a switch buffer: a zero virtio-net header (no
/// offload) goes in front. Returns the buffer's length; a length of 0
/// (the peer is gone) stays 0.
pub fn raw_message_to_buffer(buf: &mut [u8], len: usize) -> usize {
    const HDR: usize = super::frame::VNET_HDR_LEN;
    if len == 0 {
        return 0;
    }
    buf[..HDR].fill(0);
    len + HDR
}

impl PortIo for RawPort {
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        const HDR: usize = super::frame::VNET_HDR_LEN;
        let n = crate::sys::socket::recv_many(self.fd.as_fd(), bufs, lens, HDR)?;
        for (buf, len) in bufs.iter_mut().zip(lens.iter_mut()).take(n) {
            *len = raw_message_to_buffer(buf, *len);
        }
        Ok(n)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const HDR: usize = super::frame::VNET_HDR_LEN;
        let n = nix::unistd::read(&self.fd, &mut buf[HDR..]).map_err(io::Error::from)?;
        Ok(raw_message_to_buffer(buf, n))
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

    fn shut_down(&mut self) {
        let _ = nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

/// Cuts a byte stream of `[u32 big-endian length][frame]` records (QEMU's
/// `-netdev stream`) into frames; one read may bring several (sans-IO).
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// What the next record of a stream is.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// A whole frame at `buf[range]`.
    Frame(std::ops::Range<usize>),
    /// More bytes are needed.
    Incomplete,
    /// A length no frame can have: the stream is out of step.
    Bad(usize),
}

impl Deframer {
    /// Room for one record of up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Deframer {
        Deframer { buf: vec![0; max_frame + 4], start: 0, end: 0 }
    }

    /// The next record in the buffer. `Frame` consumes it.
    pub fn next_record(&mut self) -> Record {
        let have = self.end - self.start;
        if have < 4 {
            return Record::Incomplete;
        }
        let b = &self.buf[self.start..];
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 14 || len + 4 > self.buf.len() {
            return Record::Bad(len);
        }
        if have < 4 + len {
            return Record::Incomplete;
        }
        let range = self.start + 4..self.start + 4 + len;
        self.start += 4 + len;
        Record::Frame(range)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Where the next read should land (after moving a partial record to
    /// the front).
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into `space()`.
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }
}

/// A SOCK_STREAM socket carrying QEMU's `-netdev stream` records: a 4-byte
/// big-endian length, then the raw frame (no virtio-net header). Frames
/// that need an offload reach it already segmented, as on a `RawPort`. A
/// frame the socket takes only in part is finished before the next one.
#[derive(Debug)]
pub struct StreamPort {
    fd: OwnedFd,
    rx: Deframer,
    /// The unwritten end of the last frame sent.
    tail: Vec<u8>,
}

/// The longest frame a stream record may carry: what a switch buffer
/// holds after its virtio-net header. A longer record puts the stream out
/// of step, as any other impossible length does.
pub const MAX_STREAM_FRAME: usize = super::frame::MAX_BUFFER_LEN - super::frame::VNET_HDR_LEN;

impl StreamPort {
    pub fn new(fd: OwnedFd) -> StreamPort {
        StreamPort { fd, rx: Deframer::new(MAX_STREAM_FRAME), tail: Vec::new() }
    }
}

impl PortIo for StreamPort {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const HDR: usize = super::frame::VNET_HDR_LEN;
        loop {
            match self.rx.next_record() {
                Record::Frame(r) => {
                    let len = r.len();
                    // Never a frame cut short: one the buffer cannot hold fails the port.
                    let Some(room) = buf.get_mut(HDR..HDR + len) else {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("a stream record of {len} bytes does not fit a {}-byte buffer", buf.len()),
                        ));
                    };
                    room.copy_from_slice(&self.rx.bytes()[r]);
                    buf[..HDR].fill(0);
                    return Ok(HDR + len);
                }
                Record::Bad(len) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("stream record of {len} bytes")))
                }
                Record::Incomplete => {
                    let n = nix::unistd::read(&self.fd, self.rx.space()).map_err(io::Error::from)?;
                    if n == 0 {
                        return Ok(0);
                    }
                    self.rx.filled(n);
                }
            }
        }
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.send_parts(&[buf])
    }

    fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.flush_pending()?;
        const HDR: usize = super::frame::VNET_HDR_LEN;
        let total: usize = parts.iter().map(|p| p.len()).sum::<usize>().saturating_sub(HDR);
        let len = (total as u32).to_be_bytes();
        let mut all: [&[u8]; 9] = [&[]; 9];
        all[0] = &len;
        let count = parts.len().min(8);
        all[1..=count].copy_from_slice(&parts[..count]);
        // Leave the virtio-net header out: it follows the 4 length bytes.
        let mut iov = [IoSlice::new(&[]); 9];
        let (mut used, mut skip) = (0, HDR);
        for (i, p) in all[..=count].iter().enumerate() {
            let p: &[u8] = if i == 0 {
                p
            } else if skip >= p.len() {
                skip -= p.len();
                continue;
            } else {
                let s = &p[skip..];
                skip = 0;
                s
            };
            iov[used] = IoSlice::new(p);
            used += 1;
        }
        let n = nix::sys::uio::writev(&self.fd, &iov[..used]).map_err(io::Error::from)?;
        if n < total + 4 {
            // Keep the rest: the stream must never carry half a frame
            // followed by another.
            let mut rest = Vec::with_capacity(total + 4 - n);
            let mut skip = n;
            for s in &iov[..used] {
                if skip >= s.len() {
                    skip -= s.len();
                } else {
                    rest.extend_from_slice(&s[skip..]);
                    skip = 0;
                }
            }
            self.tail = rest;
        }
        Ok(())
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn gso(&self) -> bool {
        false
    }

    fn shut_down(&mut self) {
        let _ = nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }

    fn has_pending(&self) -> bool {
        !self.tail.is_empty()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        while !self.tail.is_empty() {
            let n = nix::unistd::write(&self.fd, &self.tail).map_err(io::Error::from)?;
            self.tail.drain(..n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_NONBLOCK).unwrap()
    }

    #[test]
    fn a_socket_port_takes_a_burst_in_one_batch_and_sees_its_peer_go() {
        let (tx, rx) = seqpacket_pair();
        for len in [60, 1514, 100] {
            nix::unistd::write(&tx, &vec![7u8; len]).unwrap();
        }
        let mut port = RawPort::new(rx);
        let mut bufs = vec![vec![0xffu8; 2048]; 8];
        let mut lens = [0usize; 8];
        let hdr = crate::switch::frame::VNET_HDR_LEN;
        assert_eq!(port.recv_batch(&mut bufs, &mut lens).unwrap(), 3);
        assert_eq!(&lens[..3], &[60 + hdr, 1514 + hdr, 100 + hdr]);
        assert!(bufs[1][..hdr].iter().all(|b| *b == 0), "a zero virtio-net header is put in front");
        assert!(bufs[1][hdr..hdr + 1514].iter().all(|b| *b == 7));
        let err = port.recv_batch(&mut bufs, &mut lens).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(tx);
        assert!(port.recv_batch(&mut bufs, &mut lens).unwrap() >= 1);
        assert_eq!(lens[0], 0, "a closed peer reads as length 0");
    }

    #[test]
    fn a_message_port_batch_keeps_the_header_it_was_sent() {
        let (tx, rx) = seqpacket_pair();
        nix::unistd::write(&tx, &[1u8; 80]).unwrap();
        nix::unistd::write(&tx, &[2u8; 90]).unwrap();
        let mut port = FdPort::socket(rx);
        let mut bufs = vec![vec![0u8; 256]; 4];
        let mut lens = [0usize; 4];
        assert_eq!(port.recv_batch(&mut bufs, &mut lens).unwrap(), 2);
        assert_eq!(&lens[..2], &[80, 90]);
        assert_eq!(bufs[1][0], 2);
    }

    #[test]
    fn the_deframer_cuts_several_and_partial_records() {
        let mut d = Deframer::new(100);
        let mut stream = Vec::new();
        for (len, fill) in [(20u32, 1u8), (60, 2)] {
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(fill, len as usize));
        }
        // The first read brings one record and part of the next.
        let first = 30;
        d.space()[..first].copy_from_slice(&stream[..first]);
        d.filled(first);
        let Record::Frame(r) = d.next_record() else { panic!("a whole frame") };
        assert!(d.bytes()[r].iter().all(|b| *b == 1));
        assert_eq!(d.next_record(), Record::Incomplete);
        let rest = &stream[first..];
        d.space()[..rest.len()].copy_from_slice(rest);
        d.filled(rest.len());
        let Record::Frame(r) = d.next_record() else { panic!("the second frame") };
        assert_eq!(r.len(), 60);
        assert!(d.bytes()[r].iter().all(|b| *b == 2));
        assert_eq!(d.next_record(), Record::Incomplete);
        // A length that cannot be a frame.
        d.space()[..4].copy_from_slice(&5000u32.to_be_bytes());
        d.filled(4);
        assert_eq!(d.next_record(), Record::Bad(5000));
    }

    #[test]
    fn stream_ports_frame_with_a_length_and_no_virtio_header() {
        let (a, b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::empty(),
        )
        .unwrap();
        let mut port = StreamPort::new(a);
        let mut peer = std::os::unix::net::UnixStream::from(b);
        let hdr = [0u8; crate::switch::frame::VNET_HDR_LEN];
        port.send_parts(&[&hdr[..3], &hdr[3..], &[7u8; 20]]).unwrap();
        let mut got = [0u8; 24];
        std::io::Read::read_exact(&mut peer, &mut got).unwrap();
        assert_eq!(&got[..4], &20u32.to_be_bytes());
        assert!(got[4..].iter().all(|b| *b == 7));
        // Two records in one write come out as two frames.
        let mut two = Vec::new();
        for fill in [1u8, 2] {
            two.extend_from_slice(&30u32.to_be_bytes());
            two.extend(std::iter::repeat_n(fill, 30));
        }
        std::io::Write::write_all(&mut peer, &two).unwrap();
        let mut buf = vec![0u8; 200];
        for fill in [1u8, 2] {
            let n = port.recv(&mut buf).unwrap();
            assert_eq!(n, crate::switch::frame::VNET_HDR_LEN + 30);
            assert!(buf[crate::switch::frame::VNET_HDR_LEN..n].iter().all(|b| *b == fill));
        }
    }
    use crate::switch::frame::{MAX_BUFFER_LEN, VNET_HDR_LEN};
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn a_stream_record_is_taken_whole_up_to_a_full_buffer_and_a_longer_one_fails_the_port() {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::empty()).unwrap();
        let mut port = StreamPort::new(a);
        let mut peer = std::os::unix::net::UnixStream::from(b);
        let writer = std::thread::spawn(move || {
            for len in [MAX_STREAM_FRAME, MAX_STREAM_FRAME + 1] {
                let mut record = (len as u32).to_be_bytes().to_vec();
                record.resize(4 + len, 0x3c);
                std::io::Write::write_all(&mut peer, &record).unwrap();
            }
        });
        let mut buf = vec![0u8; MAX_BUFFER_LEN];
        assert_eq!(port.recv(&mut buf).unwrap(), MAX_BUFFER_LEN, "a full buffer, not a byte less");
        assert!(buf[VNET_HDR_LEN..].iter().all(|b| *b == 0x3c));
        let err = port.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        drop(port);
        let _ = writer.join();
    }

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
