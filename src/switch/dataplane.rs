//! The data-plane thread: one poll loop over every port fd, the control
//! line's waker and the delay line's timerfd (if its [`Clock`] moves by
//! itself). It reads frames in batches (a port gets `RX_BUDGET` frames,
//! then the others have their turn), captures and impairs them on
//! ingress, asks the sans-IO [`Fabric`] where they go and hands them to
//! the egress path (`egress.rs`); it applies [`Control`] messages between
//! turns, carries frames across in-switch cables, and releases held
//! frames when due, by the time its [`Clock`] tells.
//!
//! Owns: the poll set, the port runtimes, the delay line and its timer,
//! the buffer pool. Must not touch: the control plane's numbering (ports
//! and segments arrive already named), namespaces, processes.
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::clock::Clock;
use super::counters::{DropReason, PortCounters};
use super::delay::{DelayLine, Stage};
use super::egress::{gso_drop_reason, CaptureSink, WireBuffers};
use super::fabric::{Decision, Egress, Fabric, PortInfo, Segment};
use super::frame::{Frame, FrameError, VnetHdr, MAX_BUFFER_LEN, VNET_HDR_LEN};
use super::gso;
use super::handle::{Control, ControlLine, FdbEntry};
use super::impair;
use super::port::{self, PortIo};
use super::{CaptureId, PortId};

/// Frames read from one port before the others get a turn.
const RX_BUDGET: usize = 64;
/// Frames taken from a socket port in one system call.
const RX_BATCH: usize = 16;
/// Frames in flight between the ends of in-switch cables (LAN-to-LAN
/// links) before more are dropped: a loop of LANs floods, as real
/// switches do, but cannot take all memory.
pub(super) const HANDOFF_FRAMES: usize = 4096;
/// Hand-offs delivered per loop turn before the ports get their turn.
const HANDOFF_BUDGET: usize = 1024;
const WAKER: Token = Token(0);
const TIMER: Token = Token(usize::MAX);

/// Starts the data-plane thread, with an empty fabric and time read from
/// `clock`, and returns the line to it.
pub(super) fn spawn(clock: Box<dyn Clock>) -> io::Result<(ControlLine, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    // A clock that stands still between its owner's moves has nothing a
    // timerfd could follow; its owner wakes the data plane instead.
    let timer = if clock.moves_by_itself() {
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .map_err(io::Error::from)?;
        poll.registry().register(&mut SourceFd(&timer.as_fd().as_raw_fd()), TIMER, Interest::READABLE)?;
        Some(timer)
    } else {
        None
    };
    let (ctl, ctl_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("clonet-switch".into())
        .spawn(move || DataPlane::new(poll, timer, ctl_rx, clock).run())?;
    Ok((ControlLine { ctl, waker }, thread))
}

/// One impaired direction of a port: the model and how many of its
/// frames wait in the delay line (for the queue limit).
pub(super) struct Impaired {
    model: Box<impair::Direction>,
    held: usize,
    /// Frames must be cut to wire size first (see `Params::per_wire_frame`).
    per_wire_frame: bool,
}

/// The data plane's state of one port.
pub(super) struct PortRuntime {
    pub(super) io: Box<dyn PortIo>,
    /// For an end of an in-switch cable: the other end, whose ingress
    /// gets what this port sends (its `io` is a fd-less `CableEnd`).
    pub(super) cable_to: Option<PortId>,
    pub(super) counters: Arc<PortCounters>,
    /// Frames waiting for the fd to become writable, oldest first.
    pub(super) txq: VecDeque<Vec<u8>>,
    pub(super) wants_write: bool,
    pub(super) failed: bool,
    /// Already waiting in the backlog (it must appear there once).
    in_backlog: bool,
    /// Impairment of the frames the node sends (LAN ports).
    ingress: Option<Impaired>,
    /// Impairment of the frames handed to the node.
    pub(super) egress: Option<Impaired>,
    /// Captures that copy what the node sends / what it is handed.
    pub(super) captures_rx: Vec<CaptureId>,
    pub(super) captures_tx: Vec<CaptureId>,
    /// TCP segments merged for this port during this turn (`gro.rs`):
    /// only for a port that takes GSO frames, sent at the turn's end.
    pub(super) merged: Option<super::gro::Held>,
    pub(super) takes_gso: bool,
}

impl PortRuntime {
    fn impaired(&mut self, stage: Stage) -> &mut Option<Impaired> {
        match stage {
            Stage::Ingress => &mut self.ingress,
            Stage::Egress => &mut self.egress,
        }
    }

    fn count_drop(&self, stage: Stage, reason: DropReason) {
        match stage {
            Stage::Ingress => self.counters.rx_dropped(reason),
            Stage::Egress => self.counters.tx_dropped(reason),
        }
    }
}

/// Flips one bit of a held frame (virtio-net header first). A frame whose
/// checksum the receiver would still compute gets it completed first, as
/// netem does, so the damage is visible to the receiver's checks.
fn corrupt(buf: &mut [u8], bit: usize) {
    if let Some(hdr) = VnetHdr::parse(buf) {
        if hdr.flags & VnetHdr::F_NEEDS_CSUM != 0 && !hdr.is_gso() {
            let _ = gso::complete_checksum(&hdr, &mut buf[VNET_HDR_LEN..]);
            VnetHdr { flags: 0, ..hdr }.write(&mut buf[..VNET_HDR_LEN]);
        }
    }
    let eth = &mut buf[VNET_HDR_LEN..];
    if let Some(byte) = eth.get_mut(bit / 8) {
        *byte ^= 1 << (bit % 8);
    }
}

pub(super) struct DataPlane {
    pub(super) poll: Poll,
    ctl: Receiver<Control>,
    pub(super) fabric: Fabric,
    pub(super) ports: Vec<Option<PortRuntime>>,
    /// Read once per wake-up (and per impaired frame), never per plain frame.
    pub(super) clock: Box<dyn Clock>,
    /// Ports that still had frames when their read budget ran out.
    backlog: VecDeque<PortId>,
    /// Frames crossing in-switch cables: (receiving end, frame).
    pub(super) handoff: VecDeque<(PortId, Vec<u8>)>,
    /// Recycled egress-queue and delay-line buffers.
    pub(super) pool: Vec<Vec<u8>>,
    /// Scratch list of egress ports for the frame being forwarded.
    egress: Vec<PortId>,
    /// Receive buffers: one per frame of a batch (`recv_batch`).
    rx_bufs: Vec<Vec<u8>>,
    /// Software offload buffers (egress), ingress impairment and capture
    /// buffers: separate, since a capture happens while a frame is cut.
    pub(super) soft: WireBuffers,
    held_in: WireBuffers,
    pub(super) cap: WireBuffers,
    pub(super) cap_whole: Vec<u8>,
    /// Frames held back by impairments, and the timer that releases them
    /// (none when the clock does not move by itself).
    delay: DelayLine,
    timer: Option<TimerFd>,
    armed_for: Option<Duration>,
    pub(super) captures: HashMap<CaptureId, CaptureSink>,
    /// Ports holding merged segments to send at the end of this turn.
    pub(super) merging: Vec<PortId>,
}

pub(super) fn token(port: PortId) -> Token {
    Token(port + 1)
}

impl DataPlane {
    fn new(poll: Poll, timer: Option<TimerFd>, ctl: Receiver<Control>, clock: Box<dyn Clock>) -> DataPlane {
        DataPlane {
            poll,
            ctl,
            fabric: Fabric::default(),
            ports: Vec::new(),
            clock,
            backlog: VecDeque::new(),
            handoff: VecDeque::new(),
            pool: Vec::new(),
            egress: Vec::with_capacity(64),
            rx_bufs: vec![vec![0u8; MAX_BUFFER_LEN]; RX_BATCH],
            soft: WireBuffers::default(),
            held_in: WireBuffers::default(),
            cap: WireBuffers::default(),
            cap_whole: Vec::new(),
            delay: DelayLine::default(),
            timer,
            armed_for: None,
            captures: HashMap::new(),
            merging: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let busy = !self.backlog.is_empty() || !self.handoff.is_empty();
            let timeout = if busy { Some(Duration::ZERO) } else { None };
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
                if ev.token() == TIMER {
                    if let Some(timer) = &self.timer {
                        let _ = nix::unistd::read(timer.as_fd(), &mut [0u8; 8]);
                    }
                    self.armed_for = None;
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
            self.deliver_handoffs();
            self.release_due();
            self.send_merged();
            if !self.control() {
                return;
            }
            self.arm_timer();
        }
    }

    /// Applies pending control messages; false once asked to stop.
    fn control(&mut self) -> bool {
        while let Ok(msg) = self.ctl.try_recv() {
            match msg {
                Control::AddSegment { id, segment, ack } => {
                    let _ = ack.send(self.fabric.add_segment(id, segment).map_err(|e| e.to_string()));
                }
                Control::RemoveSegment { id, ack } => {
                    self.fabric.remove_segment(id);
                    let _ = ack.send(Ok(()));
                }
                Control::AddPort { id, info, io, counters, ack } => {
                    let _ = ack.send(self.add_port(id, info, io, counters, None));
                }
                Control::AddCable { ends: [(a, info_a, c_a), (b, info_b, c_b)], ack } => {
                    let mut result = self.add_port(a, info_a, Box::new(port::CableEnd), c_a, Some(b));
                    if result.is_ok() {
                        result = self.add_port(b, info_b, Box::new(port::CableEnd), c_b, Some(a));
                        if result.is_err() {
                            self.remove_port(a);
                        }
                    }
                    let _ = ack.send(result);
                }
                Control::RemovePort { id, ack } => {
                    self.remove_port(id);
                    let _ = ack.send(Ok(()));
                }
                Control::SetPortUp { id, up, ack } => {
                    let mut result = self.fabric.set_port_up(id, up).map_err(|e| e.to_string());
                    if let (Ok(()), Some(p)) = (&result, self.ports.get_mut(id).and_then(Option::as_mut)) {
                        result = p.io.set_carrier(up).map_err(|e| format!("setting carrier: {e}"));
                    }
                    let _ = ack.send(result);
                }
                Control::SetImpairment { id, stage, model, ack } => {
                    let _ = ack.send(self.set_impairment(id, stage, model));
                }
                Control::StartCapture { id, points, sink, ack } => {
                    for pt in &points {
                        if let Some(p) = self.ports.get_mut(pt.port).and_then(Option::as_mut) {
                            if pt.rx {
                                p.captures_rx.push(id);
                            }
                            if pt.tx {
                                p.captures_tx.push(id);
                            }
                        }
                    }
                    self.captures.insert(id, sink);
                    let _ = ack.send(Ok(()));
                }
                Control::StopCapture { id, ack } => {
                    for p in self.ports.iter_mut().flatten() {
                        p.captures_rx.retain(|c| *c != id);
                        p.captures_tx.retain(|c| *c != id);
                    }
                    // Dropping the sender ends the reader's stream.
                    self.captures.remove(&id);
                    let _ = ack.send(Ok(()));
                }
                Control::Fdb { segment, reply } => {
                    let now = self.clock.now();
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
                Control::ReleaseDue { ack } => {
                    self.release_due();
                    self.send_merged();
                    let _ = ack.send(Ok(()));
                }
                Control::Shutdown => return false,
            }
        }
        true
    }

    fn set_impairment(
        &mut self,
        id: PortId,
        stage: Stage,
        model: Option<Box<impair::Direction>>,
    ) -> Result<(), String> {
        let port = self.ports.get_mut(id).and_then(Option::as_mut).ok_or_else(|| format!("no port {id}"))?;
        let slot = port.impaired(stage);
        // Frames already held keep counting against the limit of the new model.
        let held = slot.as_ref().map_or(0, |i| i.held);
        *slot = model.map(|model| Impaired { per_wire_frame: model.params.per_wire_frame(), model, held });
        if stage == Stage::Egress {
            // An egress that draws per frame works on wire frames: GSO
            // super-frames are cut first.
            let shaped = port.egress.as_ref().is_some_and(|i| i.per_wire_frame);
            self.fabric.set_port_shaped(id, shaped).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn add_port(
        &mut self,
        id: PortId,
        info: PortInfo,
        io: Box<dyn PortIo>,
        counters: Arc<PortCounters>,
        cable_to: Option<PortId>,
    ) -> Result<(), String> {
        let fd = io.raw_fd();
        let gso = info.gso;
        self.fabric.add_port(id, info).map_err(|e| e.to_string())?;
        let polled = cable_to.is_none();
        if polled {
            if let Err(e) = self.poll.registry().register(&mut SourceFd(&fd), token(id), Interest::READABLE) {
                self.fabric.remove_port(id);
                return Err(e.to_string());
            }
        }
        if self.ports.len() <= id {
            self.ports.resize_with(id + 1, || None);
        }
        self.ports[id] = Some(PortRuntime {
            io,
            cable_to,
            counters,
            txq: VecDeque::new(),
            wants_write: false,
            failed: false,
            in_backlog: false,
            ingress: None,
            egress: None,
            captures_rx: Vec::new(),
            captures_tx: Vec::new(),
            merged: None,
            takes_gso: gso && cable_to.is_none(),
        });
        Ok(())
    }

    fn remove_port(&mut self, id: PortId) {
        self.fabric.remove_port(id);
        let freed = self.delay.forget_port(id);
        self.pool.extend(freed);
        if let Some(mut p) = self.ports.get_mut(id).and_then(Option::take) {
            p.io.release();
            let fd: RawFd = p.io.raw_fd();
            if !p.failed && p.cable_to.is_none() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            self.pool.extend(p.txq);
        }
    }

    /// Marks a port dead: it is deregistered and no longer read, so one
    /// broken peer cannot spin the loop; the control plane removes it.
    pub(super) fn fail(&mut self, id: PortId) {
        if let Some(p) = self.ports.get_mut(id).and_then(Option::as_mut) {
            if !p.failed {
                p.failed = true;
                // Tell the peer (and whoever watches the socket for it):
                // the port is closed, though its fd lives until removed.
                p.io.shut_down();
                let fd = p.io.raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                self.pool.extend(p.txq.drain(..));
            }
        }
    }

    /// Reads and handles up to `RX_BUDGET` frames from one port.
    fn drain(&mut self, id: PortId) {
        let mut bufs = std::mem::take(&mut self.rx_bufs);
        let mut lens = [0usize; RX_BATCH];
        let now = self.clock.now();
        let mut handled = 0;
        'reading: while handled < RX_BUDGET {
            let Some(port) = self.ports.get_mut(id).and_then(Option::as_mut) else { break };
            if port.failed {
                break;
            }
            match port.io.recv_batch(&mut bufs, &mut lens) {
                Ok(n) => {
                    for (buf, &len) in bufs.iter().zip(&lens).take(n) {
                        if len == 0 {
                            if let Some(port) = self.ports.get(id).and_then(Option::as_ref) {
                                port.counters.rx_dropped(DropReason::PortError);
                            }
                            self.fail(id);
                            break 'reading;
                        }
                        self.receive(id, &buf[..len], now);
                    }
                    handled += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rx_bufs = bufs;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    port.counters.rx_dropped(if e.kind() == io::ErrorKind::InvalidData {
                        DropReason::Malformed
                    } else {
                        DropReason::PortError
                    });
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
        self.rx_bufs = bufs;
    }

    /// One frame the node of port `id` sent: counted, captured, then
    /// impaired or forwarded.
    fn receive(&mut self, id: PortId, buf: &[u8], now: Duration) {
        let Some(port) = self.ports.get(id).and_then(Option::as_ref) else { return };
        let frame = match Frame::parse(buf) {
            Ok(f) => f,
            Err(e) => {
                port.counters.rx(buf.len().saturating_sub(VNET_HDR_LEN));
                port.counters.rx_dropped(match e {
                    FrameError::Runt => DropReason::Runt,
                    FrameError::BadVnetHdr => DropReason::BadHeader,
                });
                return;
            }
        };
        port.counters.rx(frame.eth.len());
        let impaired = port.ingress.is_some();
        if !port.captures_rx.is_empty() {
            self.capture(id, false, &frame);
        }
        if impaired {
            self.hold_ingress(id, buf, &frame, now);
        } else {
            self.forward(id, buf, &frame, now);
        }
    }

    /// Impairs a frame on its way into the switch, as wire-sized frames
    /// (or whole, for a plain delay).
    fn hold_ingress(&mut self, id: PortId, buf: &[u8], frame: &Frame<'_>, now: Duration) {
        let whole = self
            .ports
            .get(id)
            .and_then(Option::as_ref)
            .and_then(|p| p.ingress.as_ref())
            .is_some_and(|i| !i.per_wire_frame);
        if whole {
            self.impair(id, Stage::Ingress, &[buf], frame.eth.len(), now);
            return;
        }
        let mtu = self.fabric.port(id).map_or(frame.eth.len(), |p| p.mtu);
        let mut wire = std::mem::take(&mut self.held_in);
        match wire.cut(frame, mtu, false) {
            Ok(()) => {
                for piece in wire.frames() {
                    self.impair(id, Stage::Ingress, &[piece], piece.len() - VNET_HDR_LEN, now);
                }
            }
            Err(e) => {
                if let Some(p) = self.ports.get(id).and_then(Option::as_ref) {
                    p.counters.rx_dropped(gso_drop_reason(e));
                }
            }
        }
        self.held_in = wire;
    }

    /// Asks the direction's model what becomes of one frame (given as
    /// `parts`, virtio-net header first) and holds each copy until it is due.
    pub(super) fn impair(&mut self, id: PortId, stage: Stage, parts: &[&[u8]], eth_len: usize, now: Duration) {
        let Some(port) = self.ports.get_mut(id).and_then(Option::as_mut) else { return };
        let Some(imp) = port.impaired(stage).as_mut() else { return };
        let verdict = imp.model.on_frame(now, eth_len, imp.held);
        imp.held += verdict.departures.len();
        for d in &verdict.drops {
            port.count_drop(
                stage,
                match d {
                    impair::Drop::Loss => DropReason::ImpairLoss,
                    impair::Drop::QueueFull => DropReason::QueueFull,
                },
            );
        }
        for dep in verdict.departures {
            let mut copy = self.pool.pop().unwrap_or_default();
            copy.clear();
            for p in parts {
                copy.extend_from_slice(p);
            }
            if let Some(bit) = dep.flip_bit {
                corrupt(&mut copy, bit);
            }
            self.delay.hold(dep.at, id, stage, copy);
        }
    }

    /// Lets every held frame that is due go on.
    fn release_due(&mut self) {
        let now = self.clock.now();
        while let Some(h) = self.delay.release(now) {
            if let Some(p) = self.ports.get_mut(h.port).and_then(Option::as_mut) {
                if let Some(imp) = p.impaired(h.stage).as_mut() {
                    imp.held = imp.held.saturating_sub(1);
                }
            }
            match h.stage {
                Stage::Egress => {
                    let up = self.fabric.port(h.port).is_some_and(|p| p.up);
                    if up {
                        self.send_now(h.port, &[&h.frame], h.frame.len() - VNET_HDR_LEN);
                    } else if let Some(p) = self.ports.get(h.port).and_then(Option::as_ref) {
                        p.counters.tx_dropped(DropReason::PortDown);
                    }
                }
                Stage::Ingress => {
                    if let Ok(f) = Frame::parse(&h.frame) {
                        self.forward(h.port, &h.frame, &f, now);
                    }
                }
            }
            self.pool.push(h.frame);
        }
    }

    /// Sets the timer for the next held frame (never 0: that would disarm it).
    /// Without a timer, the clock's owner asks for releases (`ReleaseDue`).
    fn arm_timer(&mut self) {
        let Some(timer) = &self.timer else { return };
        let Some(due) = self.delay.next_due() else {
            self.armed_for = None;
            return;
        };
        if self.armed_for == Some(due) {
            return;
        }
        let wait = due.saturating_sub(self.clock.now()).max(Duration::from_nanos(1));
        match timer.set(Expiration::OneShot(TimeSpec::from_duration(wait)), TimerSetTimeFlags::empty()) {
            Ok(()) => self.armed_for = Some(due),
            Err(e) => eprintln!("clonet: switch timer: {e}"),
        }
    }

    fn forward(&mut self, ingress: PortId, buf: &[u8], frame: &Frame<'_>, now: Duration) {
        // Borrow only the `ports` field here, so `fabric` and `egress` stay usable.
        let Some(counters) = self.ports.get(ingress).and_then(Option::as_ref).map(|p| &p.counters) else { return };
        self.egress.clear();
        let cls = match self.fabric.decide(ingress, frame, now) {
            Decision::Unicast(p, cls) => {
                self.egress.push(p);
                cls
            }
            Decision::Flood(ports, cls) => {
                self.egress.extend(ports.iter().copied().filter(|p| *p != ingress));
                cls
            }
            Decision::Drop(reason) => {
                counters.rx_dropped(reason);
                return;
            }
            Decision::Nowhere => return,
        };
        for i in 0..self.egress.len() {
            let out = self.egress[i];
            match self.fabric.admit(out, frame, cls) {
                Egress::Send(tagging) => self.transmit_tagged(out, buf, frame, tagging),
                Egress::Soft { tagging, mtu } => self.transmit_soft(out, frame, tagging, mtu),
                Egress::NotMember => {}
                Egress::Drop(reason) => {
                    if let Some(p) = self.ports.get(out).and_then(Option::as_ref) {
                        p.counters.tx_dropped(reason)
                    }
                }
            }
        }
    }

    /// Hands the frames sent into in-switch cables to the other ends, as
    /// if those ports had received them (their ingress impairments and
    /// captures apply). Frames a hand-off forwards into another cable are
    /// delivered in the same turn, up to `HANDOFF_BUDGET`.
    fn deliver_handoffs(&mut self) {
        let now = self.clock.now();
        for _ in 0..HANDOFF_BUDGET {
            let Some((to, frame)) = self.handoff.pop_front() else { break };
            self.receive(to, &frame, now);
            self.pool.push(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::switch::port::FdPort;
    use crate::switch::testkit::{frame, recv, settled, wire};
    use crate::switch::{fabric::Segment, SegmentId, Switch};
    use crate::vocab::MacAddr;
    use crate::vocab::VlanMode;

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
    fn an_in_switch_cable_carries_frames_between_lans_and_a_loop_of_them_stays_bounded() {
        let mut sw = Switch::start().unwrap();
        let lans: Vec<SegmentId> = (0..3).map(|_| sw.add_segment(Segment::lan()).unwrap()).collect();
        let [(c01, c01_counters), _] = sw.add_cable([lans[0], lans[1]], VlanMode::default()).unwrap();
        sw.add_cable([lans[1], lans[2]], VlanMode::default()).unwrap();
        let (fa, pa) = wire();
        let (fz, pz) = wire();
        sw.add_port(lans[0], Box::new(FdPort::socket(fa)), 1500, true, VlanMode::default()).unwrap();
        let (_, z_counters) =
            sw.add_port(lans[2], Box::new(FdPort::socket(fz)), 1500, true, VlanMode::default()).unwrap();
        let (a, z) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 9]);
        // Across two cables, both ways; the answer is unicast (learned).
        let hello = frame([0xff; 6], a, 60);
        pa.send(&hello).unwrap();
        assert_eq!(recv(&pz).unwrap(), hello);
        let answer = frame(a, z, 60);
        pz.send(&answer).unwrap();
        assert_eq!(recv(&pa).unwrap(), answer);
        let s = c01_counters.snapshot();
        assert_eq!((s.tx_frames, s.rx_frames), (1, 1), "the cable end counts what crosses it");
        // A third cable closes a loop: a broadcast then circles, as between
        // real switches without STP, but the hand-off queue is bounded, the
        // data plane keeps answering and the storm stops when the loop is cut.
        let [(loop_end, _), _] = sw.add_cable([lans[2], lans[0]], VlanMode::default()).unwrap();
        pa.send(&frame([0xff; 6], a, 60)).unwrap();
        assert!(settled(|| z_counters.snapshot().tx_frames > 100), "the broadcast circles");
        sw.remove_port(loop_end).unwrap();
        assert!(sw.fdb(lans[1]).is_ok(), "the data plane still answers");
        std::thread::sleep(Duration::from_millis(50));
        let after_cut = z_counters.snapshot().tx_frames;
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(z_counters.snapshot().tx_frames, after_cut, "no frame circles once the loop is cut");
        // Cutting a cable end stops the traffic across it.
        sw.remove_port(c01).unwrap();
        pz.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        while recv(&pz).is_some() {}
        pa.send(&frame([0xff; 6], a, 60)).unwrap();
        assert!(recv(&pz).is_none(), "nothing crosses a cut cable");
    }
}
