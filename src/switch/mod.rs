//! The userspace Ethernet switch.
//!
//! One data-plane thread polls every port fd (epoll through mio), asks the
//! sans-IO [`fabric::Fabric`] where each frame goes, and writes it out.
//! The control plane talks to that thread through [`Switch`], a handle that
//! sends [`Control`] messages and wakes the poller.
//!
//! Hot path rules: one reusable receive buffer, no allocation per frame
//! (egress queues recycle their buffers), bounded queues, drops counted per
//! port and reason, and a dead port never stalls the others.
//!
//! Owns: port fds once added, forwarding, counters. Must not touch:
//! namespaces, processes, the topology model.
pub mod counters;
pub mod fabric;
pub mod fdb;
pub mod frame;
pub mod gso;
pub mod impair;
pub mod port;
pub mod vlan;

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use counters::{DropReason, PortCounters};
use fabric::{Decision, Egress, Fabric, PortInfo, Segment};
use frame::{Frame, FrameError, MacAddr, ETH_HDR_LEN, MAX_BUFFER_LEN, VNET_HDR_LEN};
use port::PortIo;
use vlan::{Tagging, VlanMode};

pub type PortId = usize;
pub type SegmentId = usize;

/// Frames a port may hold while its fd is not writable.
pub const TX_QUEUE_FRAMES: usize = 256;
/// Frames read from one port before the others get a turn.
const RX_BUDGET: usize = 64;
const WAKER: Token = Token(0);

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("switch I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the switch data plane has stopped")]
    Stopped,
    #[error("switch refused: {0}")]
    Refused(String),
}

/// One learned station, as reported by [`Switch::fdb`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub vid: u16,
    pub mac: MacAddr,
    pub port: PortId,
    pub age: Duration,
}

type Ack = SyncSender<Result<(), String>>;

/// Messages from the control plane to the data-plane thread.
enum Control {
    AddSegment { id: SegmentId, segment: Segment, ack: Ack },
    RemoveSegment { id: SegmentId, ack: Ack },
    AddPort { id: PortId, info: PortInfo, io: Box<dyn PortIo>, counters: Arc<PortCounters>, ack: Ack },
    RemovePort { id: PortId, ack: Ack },
    SetPortUp { id: PortId, up: bool, ack: Ack },
    Fdb { segment: SegmentId, reply: Sender<Vec<FdbEntry>> },
    Shutdown,
}

/// The control plane's handle on the switch. Dropping it stops the data
/// plane and closes every port fd.
pub struct Switch {
    ctl: Sender<Control>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    next_port: PortId,
    next_segment: SegmentId,
}

impl Switch {
    pub fn start() -> Result<Switch, SwitchError> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (ctl, ctl_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("clonet-switch".into())
            .spawn(move || DataPlane::new(poll, ctl_rx).run())?;
        Ok(Switch { ctl, waker, thread: Some(thread), next_port: 1, next_segment: 1 })
    }

    fn send(&self, msg: Control) -> Result<(), SwitchError> {
        self.ctl.send(msg).map_err(|_| SwitchError::Stopped)?;
        self.waker.wake()?;
        Ok(())
    }

    fn call(&self, make: impl FnOnce(Ack) -> Control) -> Result<(), SwitchError> {
        let (ack, done) = mpsc::sync_channel(1);
        self.send(make(ack))?;
        done.recv().map_err(|_| SwitchError::Stopped)?.map_err(SwitchError::Refused)
    }

    pub fn add_segment(&mut self, segment: Segment) -> Result<SegmentId, SwitchError> {
        let id = self.next_segment;
        self.next_segment += 1;
        self.call(|ack| Control::AddSegment { id, segment, ack })?;
        Ok(id)
    }

    pub fn remove_segment(&mut self, id: SegmentId) -> Result<(), SwitchError> {
        self.call(|ack| Control::RemoveSegment { id, ack })
    }

    /// Hands `io` to the data plane as a new port of `segment`.
    pub fn add_port(
        &mut self,
        segment: SegmentId,
        io: Box<dyn PortIo>,
        mtu: usize,
        gso: bool,
        vlan: VlanMode,
    ) -> Result<(PortId, Arc<PortCounters>), SwitchError> {
        let id = self.next_port;
        self.next_port += 1;
        let counters = Arc::new(PortCounters::default());
        let info = PortInfo { segment, mtu, gso, up: true, vlan };
        let c = counters.clone();
        self.call(|ack| Control::AddPort { id, info, io, counters: c, ack })?;
        Ok((id, counters))
    }

    /// Removes a port; its fd is closed by the data plane.
    pub fn remove_port(&mut self, id: PortId) -> Result<(), SwitchError> {
        self.call(|ack| Control::RemovePort { id, ack })
    }

    /// Brings a port up or down: frames stop crossing it, and the node's
    /// interface loses carrier.
    pub fn set_port_up(&mut self, id: PortId, up: bool) -> Result<(), SwitchError> {
        self.call(|ack| Control::SetPortUp { id, up, ack })
    }

    /// The live MAC table of a LAN segment.
    pub fn fdb(&self, segment: SegmentId) -> Result<Vec<FdbEntry>, SwitchError> {
        let (reply, rx) = mpsc::channel();
        self.send(Control::Fdb { segment, reply })?;
        rx.recv().map_err(|_| SwitchError::Stopped)
    }

    /// Stops the data plane and closes every port. Idempotent.
    pub fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.send(Control::Shutdown);
            let _ = t.join();
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How a failed write affects a port.
enum WriteFailure {
    /// Only this frame is lost: the node's interface is down (EIO), or the
    /// kernel refused this one frame (no memory, too big).
    Frame(DropReason),
    /// The peer is gone: the port is dead.
    Port,
}

fn classify_write_error(e: &io::Error) -> WriteFailure {
    match e.raw_os_error() {
        Some(libc::EIO) => WriteFailure::Frame(DropReason::PortDown),
        Some(libc::EINVAL | libc::ENOBUFS | libc::ENOMEM | libc::EMSGSIZE) => {
            WriteFailure::Frame(DropReason::PortError)
        }
        _ => WriteFailure::Port,
    }
}

/// The data plane's state of one port.
struct PortRuntime {
    io: Box<dyn PortIo>,
    counters: Arc<PortCounters>,
    /// Frames waiting for the fd to become writable, oldest first.
    txq: VecDeque<Vec<u8>>,
    wants_write: bool,
    failed: bool,
    /// Already waiting in the backlog (it must appear there once).
    in_backlog: bool,
}

struct DataPlane {
    poll: Poll,
    ctl: Receiver<Control>,
    fabric: Fabric,
    ports: Vec<Option<PortRuntime>>,
    started: Instant,
    /// Ports that still had frames when their read budget ran out.
    backlog: VecDeque<PortId>,
    /// Recycled egress-queue buffers.
    pool: Vec<Vec<u8>>,
    /// Scratch list of egress ports for the frame being forwarded.
    egress: Vec<PortId>,
    rx_buf: Vec<u8>,
    /// Software offload buffers: segments, their spans, and scratch.
    soft_out: Vec<u8>,
    soft_spans: Vec<(usize, usize)>,
    soft_scratch: Vec<u8>,
}

fn token(port: PortId) -> Token {
    Token(port + 1)
}

impl DataPlane {
    fn new(poll: Poll, ctl: Receiver<Control>) -> DataPlane {
        DataPlane {
            poll,
            ctl,
            fabric: Fabric::default(),
            ports: Vec::new(),
            started: Instant::now(),
            backlog: VecDeque::new(),
            pool: Vec::new(),
            egress: Vec::with_capacity(64),
            rx_buf: vec![0u8; MAX_BUFFER_LEN],
            soft_out: Vec::new(),
            soft_spans: Vec::new(),
            soft_scratch: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = if self.backlog.is_empty() { None } else { Some(Duration::ZERO) };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("clonet: switch poll failed: {e}");
                return;
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let id = ev.token().0 - 1;
                if ev.is_writable() {
                    self.flush(id);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.drain(id);
                }
            }
            for _ in 0..self.backlog.len() {
                if let Some(id) = self.backlog.pop_front() {
                    if let Some(p) = self.ports.get_mut(id).and_then(Option::as_mut) {
                        p.in_backlog = false;
                    }
                    self.drain(id);
                }
            }
            if !self.control() {
                return;
            }
        }
    }

    /// Applies pending control messages; false once asked to stop.
    fn control(&mut self) -> bool {
        while let Ok(msg) = self.ctl.try_recv() {
            match msg {
                Control::AddSegment { id, segment, ack } => {
                    let _ = ack.send(self.fabric.add_segment(id, segment).map_err(|e| format!("{e:?}")));
                }
                Control::RemoveSegment { id, ack } => {
                    self.fabric.remove_segment(id);
                    let _ = ack.send(Ok(()));
                }
                Control::AddPort { id, info, io, counters, ack } => {
                    let _ = ack.send(self.add_port(id, info, io, counters));
                }
                Control::RemovePort { id, ack } => {
                    self.remove_port(id);
                    let _ = ack.send(Ok(()));
                }
                Control::SetPortUp { id, up, ack } => {
                    let mut result = self.fabric.set_port_up(id, up).map_err(|e| format!("{e:?}"));
                    if let (Ok(()), Some(p)) = (&result, self.ports.get_mut(id).and_then(Option::as_mut)) {
                        result = p.io.set_carrier(up).map_err(|e| format!("setting carrier: {e}"));
                    }
                    let _ = ack.send(result);
                }
                Control::Fdb { segment, reply } => {
                    let now = self.started.elapsed();
                    let entries = match self.fabric.segment(segment) {
                        Some(Segment::Lan { fdb, .. }) => fdb
                            .entries(now)
                            .into_iter()
                            .map(|((vid, mac), port, age)| FdbEntry { vid, mac, port, age })
                            .collect(),
                        _ => Vec::new(),
                    };
                    let _ = reply.send(entries);
                }
                Control::Shutdown => return false,
            }
        }
        true
    }

    fn add_port(
        &mut self,
        id: PortId,
        info: PortInfo,
        io: Box<dyn PortIo>,
        counters: Arc<PortCounters>,
    ) -> Result<(), String> {
        let fd = io.raw_fd();
        self.fabric.add_port(id, info).map_err(|e| format!("{e:?}"))?;
        if let Err(e) = self.poll.registry().register(&mut SourceFd(&fd), token(id), Interest::READABLE) {
            self.fabric.remove_port(id);
            return Err(e.to_string());
        }
        if self.ports.len() <= id {
            self.ports.resize_with(id + 1, || None);
        }
        self.ports[id] = Some(PortRuntime {
            io,
            counters,
            txq: VecDeque::new(),
            wants_write: false,
            failed: false,
            in_backlog: false,
        });
        Ok(())
    }

    fn remove_port(&mut self, id: PortId) {
        self.fabric.remove_port(id);
        if let Some(p) = self.ports.get_mut(id).and_then(Option::take) {
            let fd: RawFd = p.io.raw_fd();
            if !p.failed {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            self.pool.extend(p.txq);
        }
    }

    /// Marks a port dead: it is deregistered and no longer read, so one
    /// broken peer cannot spin the loop; the control plane removes it.
    fn fail(&mut self, id: PortId) {
        if let Some(p) = self.ports.get_mut(id).and_then(Option::as_mut) {
            if !p.failed {
                p.failed = true;
                let fd = p.io.raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                self.pool.extend(p.txq.drain(..));
            }
        }
    }

    /// Reads and forwards up to `RX_BUDGET` frames from one port.
    fn drain(&mut self, id: PortId) {
        let mut buf = std::mem::take(&mut self.rx_buf);
        let now = self.started.elapsed();
        for _ in 0..RX_BUDGET {
            let Some(port) = self.ports.get_mut(id).and_then(Option::as_mut) else { break };
            if port.failed {
                break;
            }
            match port.io.recv(&mut buf) {
                Ok(0) => {
                    port.counters.dropped(DropReason::PortError);
                    self.fail(id);
                    break;
                }
                Ok(n) => self.forward(id, &buf[..n], now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rx_buf = buf;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    port.counters.dropped(DropReason::PortError);
                    self.fail(id);
                    break;
                }
            }
        }
        if let Some(p) = self.ports.get_mut(id).and_then(Option::as_mut) {
            if !p.failed && !p.in_backlog {
                p.in_backlog = true;
                self.backlog.push_back(id);
            }
        }
        self.rx_buf = buf;
    }

    fn forward(&mut self, ingress: PortId, buf: &[u8], now: Duration) {
        // Borrow only the `ports` field here, so `fabric` and `egress` stay usable.
        let Some(counters) = self.ports.get(ingress).and_then(Option::as_ref).map(|p| &p.counters) else { return };
        let frame = match Frame::parse(buf) {
            Ok(f) => f,
            Err(e) => {
                counters.rx(buf.len().saturating_sub(VNET_HDR_LEN));
                counters.dropped(match e {
                    FrameError::Runt => DropReason::Runt,
                    FrameError::BadVnetHdr => DropReason::BadHeader,
                });
                return;
            }
        };
        counters.rx(frame.eth.len());
        self.egress.clear();
        let cls = match self.fabric.decide(ingress, &frame, now) {
            Decision::Unicast(p, cls) => {
                self.egress.push(p);
                cls
            }
            Decision::Flood(ports, cls) => {
                self.egress.extend(ports.iter().copied().filter(|p| *p != ingress));
                cls
            }
            Decision::Drop(reason) => {
                counters.dropped(reason);
                return;
            }
            Decision::Nowhere => return,
        };
        for i in 0..self.egress.len() {
            let out = self.egress[i];
            match self.fabric.admit(out, &frame, cls) {
                Egress::Send(tagging) => self.transmit_tagged(out, buf, &frame, tagging),
                Egress::Soft { tagging, mtu } => self.transmit_soft(out, &frame, tagging, mtu),
                Egress::NotMember => {}
                Egress::Drop(reason) => {
                    if let Some(p) = self.ports.get(out).and_then(Option::as_ref) {
                        p.counters.dropped(reason)
                    }
                }
            }
        }
    }

    /// Sends a frame to a port without offloads: a GSO frame is cut into
    /// segments that fit `mtu`, a frame with a seeded checksum gets it
    /// finished. Buffers are reused, so nothing is allocated once warm.
    fn transmit_soft(&mut self, id: PortId, frame: &Frame<'_>, tagging: Tagging, mtu: usize) {
        let mut out = std::mem::take(&mut self.soft_out);
        let mut spans = std::mem::take(&mut self.soft_spans);
        let mut scratch = std::mem::take(&mut self.soft_scratch);
        out.clear();
        spans.clear();
        let result = if frame.vnet.is_gso() {
            gso::segment(frame, mtu, &mut scratch, |seg| {
                spans.push((out.len(), out.len() + seg.len()));
                out.extend_from_slice(seg);
            })
            .map(|_| ())
        } else {
            out.resize(VNET_HDR_LEN, 0);
            out.extend_from_slice(frame.eth);
            spans.push((0, out.len()));
            gso::complete_checksum(&frame.vnet, &mut out[VNET_HDR_LEN..])
        };
        match result {
            Ok(()) => {
                for &(start, end) in &spans {
                    if let Ok(seg) = Frame::parse(&out[start..end]) {
                        self.transmit_tagged(id, &out[start..end], &seg, tagging);
                    }
                }
            }
            Err(e) => {
                let reason = match e {
                    gso::GsoError::MtuTooSmall => DropReason::Oversize,
                    gso::GsoError::Unsupported => DropReason::GsoUnsupported,
                    gso::GsoError::Malformed => DropReason::BadHeader,
                };
                if let Some(p) = self.ports.get(id).and_then(Option::as_ref) {
                    p.counters.dropped(reason);
                }
            }
        }
        self.soft_out = out;
        self.soft_spans = spans;
        self.soft_scratch = scratch;
    }

    /// Sends `buf` with its 802.1Q tag pushed or stripped as asked, in
    /// pieces, so the payload is never copied.
    fn transmit_tagged(&mut self, id: PortId, buf: &[u8], frame: &Frame<'_>, tagging: Tagging) {
        let eth = frame.eth;
        let mut hdr = [0u8; VNET_HDR_LEN];
        match tagging {
            Tagging::AsIs => self.transmit(id, &[buf], eth.len()),
            Tagging::Strip => {
                vlan::shift_vnet(&frame.vnet, -4).write(&mut hdr);
                self.transmit(id, &[&hdr, &eth[..12], &eth[16..]], eth.len() - 4)
            }
            Tagging::Push(vid) => {
                vlan::shift_vnet(&frame.vnet, 4).write(&mut hdr);
                let t = vlan::TPID.to_be_bytes();
                let v = vid.to_be_bytes();
                let tag = [t[0], t[1], v[0], v[1]];
                self.transmit(id, &[&hdr, &eth[..12], &tag, &eth[12..]], eth.len() + 4)
            }
        }
    }

    /// Sends one frame given as `parts` (virtio-net header first).
    fn transmit(&mut self, id: PortId, parts: &[&[u8]], eth_len: usize) {
        let Some(port) = self.ports.get_mut(id).and_then(Option::as_mut) else { return };
        if port.failed {
            port.counters.dropped(DropReason::PortError);
            return;
        }
        if port.txq.is_empty() {
            let sent = if let [whole] = parts { port.io.send(whole) } else { port.io.send_parts(parts) };
            match sent {
                Ok(()) => {
                    port.counters.tx(eth_len);
                    if port.io.has_pending() && !port.wants_write {
                        port.wants_write = true;
                        let fd = port.io.raw_fd();
                        let _ = self.poll.registry().reregister(
                            &mut SourceFd(&fd),
                            token(id),
                            Interest::READABLE | Interest::WRITABLE,
                        );
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    match classify_write_error(&e) {
                        WriteFailure::Frame(reason) => port.counters.dropped(reason),
                        WriteFailure::Port => {
                            port.counters.dropped(DropReason::PortError);
                            self.fail(id);
                        }
                    }
                    return;
                }
            }
        }
        if port.txq.len() >= TX_QUEUE_FRAMES {
            port.counters.dropped(DropReason::QueueFull);
            return;
        }
        let mut copy = self.pool.pop().unwrap_or_default();
        copy.clear();
        for p in parts {
            copy.extend_from_slice(p);
        }
        port.txq.push_back(copy);
        if !port.wants_write {
            port.wants_write = true;
            let fd = port.io.raw_fd();
            let _ =
                self.poll.registry().reregister(&mut SourceFd(&fd), token(id), Interest::READABLE | Interest::WRITABLE);
        }
    }

    /// Writes queued frames until the fd would block again.
    fn flush(&mut self, id: PortId) {
        let Some(port) = self.ports.get_mut(id).and_then(Option::as_mut) else { return };
        let mut broken = false;
        match port.io.flush_pending() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => broken = true,
        }
        while let Some(frame) = port.txq.front().filter(|_| !broken) {
            match port.io.send(frame) {
                Ok(()) => {
                    port.counters.tx(frame.len().saturating_sub(VNET_HDR_LEN).max(ETH_HDR_LEN));
                    let done = port.txq.pop_front().expect("front exists");
                    self.pool.push(done);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => match classify_write_error(&e) {
                    WriteFailure::Frame(reason) => {
                        port.counters.dropped(reason);
                        let lost = port.txq.pop_front().expect("front exists");
                        self.pool.push(lost);
                    }
                    WriteFailure::Port => {
                        port.counters.dropped(DropReason::PortError);
                        broken = true;
                        break;
                    }
                },
            }
        }
        if broken {
            self.fail(id);
            return;
        }
        if port.wants_write && !port.io.has_pending() {
            port.wants_write = false;
            let fd = port.io.raw_fd();
            let _ = self.poll.registry().reregister(&mut SourceFd(&fd), token(id), Interest::READABLE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::port::FdPort;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;

    /// A seqpacket pair: one end becomes a switch port, the test holds the other.
    fn wire() -> (OwnedFd, std::os::unix::net::UnixDatagram) {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_NONBLOCK).unwrap();
        let peer = UnixDatagram::from(b);
        peer.set_nonblocking(false).unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        (a, peer)
    }

    fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
        let mut b = vec![0u8; VNET_HDR_LEN];
        b.extend_from_slice(&dst);
        b.extend_from_slice(&src);
        b.extend_from_slice(&[0x08, 0x00]);
        b.resize(VNET_HDR_LEN + len, 0x5a);
        b
    }

    /// Waits (up to 2 s) for `cond`: counters move just after the write
    /// that a peer may already have read.
    fn settled(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !cond() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        cond()
    }

    fn recv(peer: &UnixDatagram) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_BUFFER_LEN];
        peer.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    }

    #[test]
    fn lan_forwards_floods_and_counts_through_real_fds() {
        let mut sw = Switch::start().unwrap();
        let lan = sw.add_segment(Segment::lan()).unwrap();
        let mut peers = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (fd, peer) = wire();
            let (id, c) = sw.add_port(lan, Box::new(FdPort::socket(fd)), 1500, true, VlanMode::default()).unwrap();
            peers.push(peer);
            ids.push((id, c));
        }
        let a = [2, 0, 0, 0, 0, 1];
        let b = [2, 0, 0, 0, 0, 2];
        // A broadcasts: B and C get it, A does not.
        let bcast = frame([0xff; 6], a, 60);
        peers[0].send(&bcast).unwrap();
        assert_eq!(recv(&peers[1]).unwrap(), bcast);
        assert_eq!(recv(&peers[2]).unwrap(), bcast);
        peers[0].set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert!(recv(&peers[0]).is_none(), "never back to the ingress port");
        // B answers A: unicast to A only.
        let reply = frame(a, b, 60);
        peers[1].send(&reply).unwrap();
        assert_eq!(recv(&peers[0]).unwrap(), reply);
        peers[2].set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert!(recv(&peers[2]).is_none(), "learned unicast is not flooded");
        // A runt is counted and dropped.
        peers[0].send(&[0u8; 20]).unwrap();
        assert!(settled(|| ids[0].1.snapshot().drops.get("runt") == Some(&1)));
        assert!(settled(|| ids[0].1.snapshot().tx_frames == 1 && ids[2].1.snapshot().tx_frames == 1));
        let sa = ids[0].1.snapshot();
        assert_eq!(sa.rx_frames, 2);
        assert_eq!(sa.tx_frames, 1);
        assert_eq!(sa.drops.get("runt"), Some(&1));
        assert_eq!(ids[2].1.snapshot().tx_frames, 1);
        let fdb = sw.fdb(lan).unwrap();
        assert_eq!(
            fdb.iter().map(|e| (e.vid, e.mac, e.port)).collect::<Vec<_>>(),
            vec![(1, MacAddr(a), ids[0].0), (1, MacAddr(b), ids[1].0)]
        );
    }

    #[test]
    fn gso_frames_towards_a_port_without_offloads_are_segmented() {
        let mut sw = Switch::start().unwrap();
        let seg = sw.add_segment(Segment::point_to_point()).unwrap();
        let (fa, pa) = wire();
        let (fb, pb) = wire();
        sw.add_port(seg, Box::new(FdPort::socket(fa)), 65535, true, VlanMode::default()).unwrap();
        let (_, cb) = sw.add_port(seg, Box::new(FdPort::socket(fb)), 1500, false, VlanMode::default()).unwrap();
        pa.send(&gso::gso_frame(false, 20_000, 0x18)).unwrap();
        let mut payload = 0;
        let mut segments = 0;
        while payload < 20_000 {
            let s = recv(&pb).expect("a segment");
            assert!(s.len() - VNET_HDR_LEN <= 1514, "fits the MTU: {}", s.len());
            payload += gso::verify(&s, false).2;
            segments += 1;
        }
        assert_eq!(payload, 20_000);
        assert_eq!(segments, 20_000usize.div_ceil(1500 - 20 - 32));
        assert!(settled(|| cb.snapshot().tx_frames == segments as u64), "{:?}", cb.snapshot());
        assert!(cb.snapshot().drops.is_empty(), "{:?}", cb.snapshot());
    }

    #[test]
    fn oversize_frames_are_dropped_at_egress_and_a_dead_peer_is_isolated() {
        let mut sw = Switch::start().unwrap();
        let seg = sw.add_segment(Segment::point_to_point()).unwrap();
        let (fa, pa) = wire();
        let (fb, pb) = wire();
        let (_, ca) = sw.add_port(seg, Box::new(FdPort::socket(fa)), 1500, true, VlanMode::default()).unwrap();
        let (_, cb) = sw.add_port(seg, Box::new(FdPort::socket(fb)), 1500, true, VlanMode::default()).unwrap();
        pa.send(&frame([2; 6], [4; 6], ETH_HDR_LEN + 1501)).unwrap();
        pa.send(&frame([2; 6], [4; 6], ETH_HDR_LEN + 1500)).unwrap();
        assert_eq!(recv(&pb).unwrap().len(), VNET_HDR_LEN + ETH_HDR_LEN + 1500);
        assert_eq!(cb.snapshot().drops.get("oversize"), Some(&1));
        drop(pb);
        pa.send(&frame([2; 6], [4; 6], 60)).unwrap();
        assert!(settled(|| ca.snapshot().rx_frames == 3 && cb.snapshot().drops.contains_key("port_error")));
        assert_eq!(ca.snapshot().rx_frames, 3);
        assert!(cb.snapshot().drops.contains_key("port_error"), "{:?}", cb.snapshot());
    }
}
