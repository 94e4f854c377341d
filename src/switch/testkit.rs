//! Test fixtures for the switch's own unit tests: seqpacket pairs whose
//! one end becomes a switch port while the test holds the other, frames,
//! and waiting for counters that move just after a write.
//!
//! Owns: nothing outside tests. Must not touch: the data plane's
//! internals (tests drive the switch through [`Switch`] only).
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::counters::PortCounters;
use super::fabric::Segment;
use super::frame::{MAX_BUFFER_LEN, VNET_HDR_LEN};
use super::port::FdPort;
use super::{FakeClock, PortId, Switch};
use crate::vocab::VlanMode;

/// A seqpacket pair: one end becomes a switch port, the test holds the other.
pub(super) fn wire() -> (OwnedFd, UnixDatagram) {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_NONBLOCK).unwrap();
    let peer = UnixDatagram::from(b);
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    (a, peer)
}

pub(super) fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut b = vec![0u8; VNET_HDR_LEN];
    b.extend_from_slice(&dst);
    b.extend_from_slice(&src);
    b.extend_from_slice(&[0x08, 0x00]);
    b.resize(VNET_HDR_LEN + len, 0x5a);
    b
}

/// Waits (up to 2 s) for `cond`: counters move just after the write
/// that a peer may already have read.
pub(super) fn settled(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cond() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

pub(super) fn recv(peer: &UnixDatagram) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_BUFFER_LEN];
    peer.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// The frames `peer` has already been handed, without waiting for more.
pub(super) fn waiting(peer: &UnixDatagram) -> Vec<Vec<u8>> {
    peer.set_nonblocking(true).unwrap();
    let frames = std::iter::from_fn(|| recv(peer)).collect();
    peer.set_nonblocking(false).unwrap();
    frames
}

/// Moves `clock` (the switch's) on by `by`, lets the switch release what
/// has come due, and returns what `peer` has been handed by then.
pub(super) fn released_after(clock: &FakeClock, sw: &Switch, peer: &UnixDatagram, by: Duration) -> Vec<Vec<u8>> {
    clock.advance(by);
    sw.release_due().unwrap();
    waiting(peer)
}

/// Sends `frame` from `peer` (whose switch port counts into `counters`)
/// and returns once the data plane has read it and finished that turn:
/// an impaired frame is then held, from the clock's present time.
pub(super) fn ingested(sw: &Switch, peer: &UnixDatagram, counters: &PortCounters, frame: &[u8]) {
    let before = counters.snapshot().rx_frames;
    peer.send(frame).unwrap();
    assert!(settled(|| counters.snapshot().rx_frames == before + 1), "the switch never read the frame");
    // A control round trip: it is answered after the turn that read the frame.
    sw.release_due().unwrap();
}

/// A switch with one point-to-point link; the test holds both peers.
pub(super) struct Cable {
    pub(super) sw: Switch,
    pub(super) pa: UnixDatagram,
    pub(super) pb: UnixDatagram,
    pub(super) a: (PortId, Arc<PortCounters>),
    pub(super) b: (PortId, Arc<PortCounters>),
}

pub(super) fn cable(mtu_a: usize, mtu_b: usize, gso_b: bool) -> Cable {
    cable_on(Switch::start().unwrap(), mtu_a, mtu_b, gso_b)
}

/// [`cable`] on a switch the test started (e.g. on a fake clock).
pub(super) fn cable_on(mut sw: Switch, mtu_a: usize, mtu_b: usize, gso_b: bool) -> Cable {
    let seg = sw.add_segment(Segment::point_to_point()).unwrap();
    let (fa, pa) = wire();
    let (fb, pb) = wire();
    let a = sw.add_port(seg, Box::new(FdPort::socket(fa)), mtu_a, true, VlanMode::default()).unwrap();
    let b = sw.add_port(seg, Box::new(FdPort::socket(fb)), mtu_b, gso_b, VlanMode::default()).unwrap();
    Cable { sw, pa, pb, a, b }
}
