//! The userspace Ethernet switch.
//!
//! One data-plane thread polls every port fd (epoll through mio), asks the
//! sans-IO [`fabric::Fabric`] where each frame goes, and writes it out.
//! The control plane talks to that thread through [`Switch`], a handle that
//! sends [`Control`] messages and wakes the poller.
//!
//! Impaired directions ([`impair`]) hand their frames to a [`delay`] line;
//! a timerfd in the same poll set wakes the thread when the next one is
//! due, so delays are kept to the microsecond, not to epoll's millisecond.
//! Captures receive copies of the frames crossing chosen ports through
//! bounded channels (a slow reader loses copies, counted, never stalls
//! the switch).
//!
//! Hot path rules: one reusable receive buffer, no allocation per frame
//! on unimpaired, uncaptured ports (egress queues recycle their buffers),
//! bounded queues, drops counted per port, direction and reason, and a
//! dead port never stalls the others.
//!
//! Owns: port fds once added, forwarding, impairment state, captures,
//! counters. Must not touch: namespaces, processes, the topology model.
pub mod counters;
pub mod delay;
pub mod fabric;
pub mod fdb;
pub mod frame;
pub mod gso;
pub mod impair;
pub mod pcap;
pub mod port;
pub mod sniff;
pub mod vlan;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::vocab::MacAddr;
use crate::vocab::VlanMode;
use counters::{DropReason, PortCounters};
use delay::{DelayLine, Stage};
use fabric::{Decision, Egress, Fabric, PortInfo, Segment};
use frame::{Frame, FrameError, VnetHdr, ETH_HDR_LEN, MAX_BUFFER_LEN, VNET_HDR_LEN};
use port::PortIo;
use vlan::Tagging;

pub type PortId = usize;
pub type SegmentId = usize;
pub type CaptureId = usize;

/// Frames a port may hold while its fd is not writable.
pub const TX_QUEUE_FRAMES: usize = 256;
/// Copies a capture may hold before its reader falls behind and loses some.
pub const CAPTURE_QUEUE_FRAMES: usize = 8192;
/// Frames read from one port before the others get a turn.
const RX_BUDGET: usize = 64;
/// Frames taken from a socket port in one system call.
const RX_BATCH: usize = 16;
/// Frames in flight between the ends of in-switch cables (LAN-to-LAN
/// links) before more are dropped: a loop of LANs floods, as real
/// switches do, but cannot take all memory.
const HANDOFF_FRAMES: usize = 4096;
/// Hand-offs delivered per loop turn before the ports get their turn.
const HANDOFF_BUDGET: usize = 1024;
const WAKER: Token = Token(0);
const TIMER: Token = Token(usize::MAX);

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

/// Which frames of a port a capture gets: those the node sent (`rx`)
/// and/or those handed to it (`tx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapturePoint {
    pub port: PortId,
    pub rx: bool,
    pub tx: bool,
}

/// One captured frame: Ethernet bytes as they cross a wire (GSO
/// super-frames arrive segmented, offloaded checksums filled in).
#[derive(Clone, Debug)]
pub struct CapturedFrame {
    pub port: PortId,
    /// True for a frame handed to the node, false for one it sent.
    pub outgoing: bool,
    pub at: SystemTime,
    pub data: Vec<u8>,
}

/// The reading end of a capture. Dropping the switch's side (stop, or
/// shutdown) ends the stream.
pub struct CaptureFeed {
    pub id: CaptureId,
    pub frames: Receiver<CapturedFrame>,
    /// Copies lost because the reader fell behind.
    pub lost: Arc<AtomicU64>,
}

type Ack = SyncSender<Result<(), String>>;

/// Messages from the control plane to the data-plane thread.
enum Control {
    AddSegment { id: SegmentId, segment: Segment, ack: Ack },
    RemoveSegment { id: SegmentId, ack: Ack },
    AddPort { id: PortId, info: PortInfo, io: Box<dyn PortIo>, counters: Arc<PortCounters>, ack: Ack },
    AddCable { ends: [(PortId, PortInfo, Arc<PortCounters>); 2], ack: Ack },
    RemovePort { id: PortId, ack: Ack },
    SetPortUp { id: PortId, up: bool, ack: Ack },
    SetImpairment { id: PortId, stage: Stage, model: Option<Box<impair::Direction>>, ack: Ack },
    StartCapture { id: CaptureId, points: Vec<CapturePoint>, sink: CaptureSink, ack: Ack },
    StopCapture { id: CaptureId, ack: Ack },
    Fdb { segment: SegmentId, reply: Sender<Vec<FdbEntry>> },
    Shutdown,
}

/// The way to the data-plane thread: a message queue and the waker that
/// makes the poller read it.
#[derive(Clone)]
struct ControlLine {
    ctl: Sender<Control>,
    waker: Arc<Waker>,
}

impl ControlLine {
    fn send(&self, msg: Control) -> Result<(), SwitchError> {
        self.ctl.send(msg).map_err(|_| SwitchError::Stopped)?;
        self.waker.wake()?;
        Ok(())
    }

    /// Sends a message and waits for the data plane's answer.
    fn call(&self, make: impl FnOnce(Ack) -> Control) -> Result<(), SwitchError> {
        let (ack, done) = mpsc::sync_channel(1);
        self.send(make(ack))?;
        done.recv().map_err(|_| SwitchError::Stopped)?.map_err(SwitchError::Refused)
    }
}

/// The control plane's handle on the switch. Dropping it stops the data
/// plane and closes every port fd.
pub struct Switch {
    line: ControlLine,
    thread: Option<JoinHandle<()>>,
    next_port: PortId,
    next_segment: SegmentId,
    captures: CaptureControl,
}

/// A handle that only starts and stops captures; it can be cloned and
/// sent to other threads (a capture server), unlike [`Switch`].
#[derive(Clone)]
pub struct CaptureControl {
    line: ControlLine,
    next: Arc<AtomicUsize>,
}

impl CaptureControl {
    fn call(&self, make: impl FnOnce(Ack) -> Control) -> Result<(), SwitchError> {
        self.line.call(make)
    }

    /// Starts copying the frames of `points` to a new feed.
    pub fn start(&self, points: Vec<CapturePoint>) -> Result<CaptureFeed, SwitchError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, frames) = mpsc::sync_channel(CAPTURE_QUEUE_FRAMES);
        let lost = Arc::new(AtomicU64::new(0));
        let sink = CaptureSink { tx, lost: lost.clone() };
        self.call(|ack| Control::StartCapture { id, points, sink, ack })?;
        Ok(CaptureFeed { id, frames, lost })
    }

    /// Stops a capture: its feed ends once the copies in flight are read.
    pub fn stop(&self, id: CaptureId) -> Result<(), SwitchError> {
        self.call(|ack| Control::StopCapture { id, ack })
    }
}

impl Switch {
    pub fn start() -> Result<Switch, SwitchError> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .map_err(io::Error::from)?;
        poll.registry().register(&mut SourceFd(&timer.as_fd().as_raw_fd()), TIMER, Interest::READABLE)?;
        let (ctl, ctl_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("clonet-switch".into())
            .spawn(move || DataPlane::new(poll, timer, ctl_rx).run())?;
        let line = ControlLine { ctl, waker };
        let captures = CaptureControl { line: line.clone(), next: Arc::new(AtomicUsize::new(1)) };
        Ok(Switch { line, thread: Some(thread), next_port: 1, next_segment: 1, captures })
    }

    fn send(&self, msg: Control) -> Result<(), SwitchError> {
        self.line.send(msg)
    }

    fn call(&self, make: impl FnOnce(Ack) -> Control) -> Result<(), SwitchError> {
        self.line.call(make)
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
        let counters = Arc::new(PortCounters::default());
        let id = self.readd_port(segment, io, mtu, gso, vlan, counters.clone())?;
        Ok((id, counters))
    }

    /// Adds a port that takes over from a removed one (a NIC that
    /// reconnected), counting on in the same counters.
    pub fn readd_port(
        &mut self,
        segment: SegmentId,
        io: Box<dyn PortIo>,
        mtu: usize,
        gso: bool,
        vlan: VlanMode,
        counters: Arc<PortCounters>,
    ) -> Result<PortId, SwitchError> {
        let id = self.next_port;
        self.next_port += 1;
        let info = PortInfo { segment, mtu, gso, up: true, vlan, shaped: false };
        self.call(|ack| Control::AddPort { id, info, io, counters, ack })?;
        Ok(id)
    }

    /// Joins two segments with an in-switch cable: two ports without fds,
    /// each handing what it sends straight to the other's ingress (no
    /// system call, one copy). Removing either port cuts the cable.
    pub fn add_cable(
        &mut self,
        segments: [SegmentId; 2],
        vlan: VlanMode,
    ) -> Result<[(PortId, Arc<PortCounters>); 2], SwitchError> {
        let ids = [self.next_port, self.next_port + 1];
        self.next_port += 2;
        let end = |i: usize| {
            // Inside the switch any size fits, and GSO frames pass whole.
            let info = PortInfo {
                segment: segments[i],
                mtu: u16::MAX as usize,
                gso: true,
                up: true,
                vlan: vlan.clone(),
                shaped: false,
            };
            (ids[i], info, Arc::new(PortCounters::default()))
        };
        let ends = [end(0), end(1)];
        let handles = [(ids[0], ends[0].2.clone()), (ids[1], ends[1].2.clone())];
        self.call(|ack| Control::AddCable { ends, ack })?;
        Ok(handles)
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

    /// Impairs the frames entering the switch from port `id` (`Ingress`)
    /// or leaving through it (`Egress`), with a generator seeded by
    /// `seed`; `None` (or no-op parameters) makes the direction plain
    /// again. Frames already held still leave at their time.
    pub fn set_impairment(
        &mut self,
        id: PortId,
        stage: Stage,
        params: Option<(impair::Params, u64)>,
    ) -> Result<(), SwitchError> {
        let model = params.filter(|(p, _)| !p.is_noop()).map(|(p, seed)| Box::new(impair::Direction::new(p, seed)));
        self.call(|ack| Control::SetImpairment { id, stage, model, ack })
    }

    /// Starts copying the frames of `points` to a new feed.
    pub fn start_capture(&mut self, points: Vec<CapturePoint>) -> Result<CaptureFeed, SwitchError> {
        self.captures.start(points)
    }

    /// Stops a capture: its feed ends once the copies in flight are read.
    pub fn stop_capture(&mut self, id: CaptureId) -> Result<(), SwitchError> {
        self.captures.stop(id)
    }

    /// A sendable handle for starting and stopping captures.
    pub fn capture_control(&self) -> CaptureControl {
        self.captures.clone()
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

/// The switch's side of one capture.
struct CaptureSink {
    tx: SyncSender<CapturedFrame>,
    lost: Arc<AtomicU64>,
}

/// One impaired direction of a port: the model and how many of its
/// frames wait in the delay line (for the queue limit).
struct Impaired {
    model: Box<impair::Direction>,
    held: usize,
    /// Frames must be cut to wire size first (see `Params::per_wire_frame`).
    per_wire_frame: bool,
}

/// The data plane's state of one port.
struct PortRuntime {
    io: Box<dyn PortIo>,
    /// For an end of an in-switch cable: the other end, whose ingress
    /// gets what this port sends (its `io` is a fd-less `CableEnd`).
    cable_to: Option<PortId>,
    counters: Arc<PortCounters>,
    /// Frames waiting for the fd to become writable, oldest first.
    txq: VecDeque<Vec<u8>>,
    wants_write: bool,
    failed: bool,
    /// Already waiting in the backlog (it must appear there once).
    in_backlog: bool,
    /// Impairment of the frames the node sends (LAN ports).
    ingress: Option<Impaired>,
    /// Impairment of the frames handed to the node.
    egress: Option<Impaired>,
    /// Captures that copy what the node sends / what it is handed.
    captures_rx: Vec<CaptureId>,
    captures_tx: Vec<CaptureId>,
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

/// Reusable buffers for frames cut into wire-sized pieces.
#[derive(Default)]
struct WireBuffers {
    out: Vec<u8>,
    spans: Vec<(usize, usize)>,
    scratch: Vec<u8>,
}

impl WireBuffers {
    /// Fills `out` with `frame` as the frames a real wire of `mtu` would
    /// carry, each with a zeroed virtio-net header: a GSO super-frame is
    /// segmented; with `finish`, a seeded checksum is completed.
    fn cut(&mut self, frame: &Frame<'_>, mtu: usize, finish: bool) -> Result<(), gso::GsoError> {
        self.out.clear();
        self.spans.clear();
        if frame.vnet.is_gso() {
            let (out, spans) = (&mut self.out, &mut self.spans);
            gso::segment(frame, mtu, &mut self.scratch, |seg| {
                spans.push((out.len(), out.len() + seg.len()));
                out.extend_from_slice(seg);
            })?;
            return Ok(());
        }
        self.out.resize(VNET_HDR_LEN, 0);
        self.out.extend_from_slice(frame.eth);
        self.spans.push((0, self.out.len()));
        if finish {
            gso::complete_checksum(&frame.vnet, &mut self.out[VNET_HDR_LEN..])?;
        } else {
            frame.vnet.write(&mut self.out[..VNET_HDR_LEN]);
        }
        Ok(())
    }
}

fn gso_drop_reason(e: gso::GsoError) -> DropReason {
    match e {
        gso::GsoError::MtuTooSmall => DropReason::Oversize,
        gso::GsoError::Unsupported => DropReason::GsoUnsupported,
        gso::GsoError::Malformed => DropReason::BadHeader,
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

struct DataPlane {
    poll: Poll,
    ctl: Receiver<Control>,
    fabric: Fabric,
    ports: Vec<Option<PortRuntime>>,
    started: Instant,
    /// Ports that still had frames when their read budget ran out.
    backlog: VecDeque<PortId>,
    /// Frames crossing in-switch cables: (receiving end, frame).
    handoff: VecDeque<(PortId, Vec<u8>)>,
    /// Recycled egress-queue and delay-line buffers.
    pool: Vec<Vec<u8>>,
    /// Scratch list of egress ports for the frame being forwarded.
    egress: Vec<PortId>,
    /// Receive buffers: one per frame of a batch (`recv_batch`).
    rx_bufs: Vec<Vec<u8>>,
    /// Software offload buffers (egress), ingress impairment and capture
    /// buffers: separate, since a capture happens while a frame is cut.
    soft: WireBuffers,
    held_in: WireBuffers,
    cap: WireBuffers,
    cap_whole: Vec<u8>,
    /// Frames held back by impairments, and the timer that releases them.
    delay: DelayLine,
    timer: TimerFd,
    armed_for: Option<Duration>,
    captures: HashMap<CaptureId, CaptureSink>,
}

fn token(port: PortId) -> Token {
    Token(port + 1)
}

impl DataPlane {
    fn new(poll: Poll, timer: TimerFd, ctl: Receiver<Control>) -> DataPlane {
        DataPlane {
            poll,
            ctl,
            fabric: Fabric::default(),
            ports: Vec::new(),
            started: Instant::now(),
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
                    let _ = nix::unistd::read(self.timer.as_fd(), &mut [0u8; 8]);
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
                    let _ = ack.send(self.fabric.add_segment(id, segment).map_err(|e| format!("{e:?}")));
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
                    let mut result = self.fabric.set_port_up(id, up).map_err(|e| format!("{e:?}"));
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
            self.fabric.set_port_shaped(id, shaped).map_err(|e| format!("{e:?}"))?;
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
        self.fabric.add_port(id, info).map_err(|e| format!("{e:?}"))?;
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

    /// Reads and handles up to `RX_BUDGET` frames from one port.
    fn drain(&mut self, id: PortId) {
        let mut bufs = std::mem::take(&mut self.rx_bufs);
        let mut lens = [0usize; RX_BATCH];
        let now = self.started.elapsed();
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
                Err(_) => {
                    port.counters.rx_dropped(DropReason::PortError);
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
                for &(start, end) in &wire.spans {
                    self.impair(id, Stage::Ingress, &[&wire.out[start..end]], end - start - VNET_HDR_LEN, now);
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
    fn impair(&mut self, id: PortId, stage: Stage, parts: &[&[u8]], eth_len: usize, now: Duration) {
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
        let now = self.started.elapsed();
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
    fn arm_timer(&mut self) {
        let Some(due) = self.delay.next_due() else {
            self.armed_for = None;
            return;
        };
        if self.armed_for == Some(due) {
            return;
        }
        let wait = due.saturating_sub(self.started.elapsed()).max(Duration::from_nanos(1));
        match self.timer.set(Expiration::OneShot(TimeSpec::from_duration(wait)), TimerSetTimeFlags::empty()) {
            Ok(()) => self.armed_for = Some(due),
            Err(e) => eprintln!("clonet: switch timer: {e}"),
        }
    }

    /// Copies a frame to the captures of port `id` (what the node sent,
    /// or, `outgoing`, what it is handed), cut as a wire carries it.
    fn capture(&mut self, id: PortId, outgoing: bool, frame: &Frame<'_>) {
        let mtu = self.fabric.port(id).map_or(frame.eth.len(), |p| p.mtu);
        let Some(port) = self.ports.get(id).and_then(Option::as_ref) else { return };
        let ids = if outgoing { &port.captures_tx } else { &port.captures_rx };
        if self.cap.cut(frame, mtu, true).is_err() {
            // Not segmentable (e.g. UDP GSO): keep the frame as it came.
            self.cap.out.clear();
            self.cap.out.resize(VNET_HDR_LEN, 0);
            self.cap.out.extend_from_slice(frame.eth);
            self.cap.spans.clear();
            self.cap.spans.push((0, self.cap.out.len()));
        }
        let at = SystemTime::now();
        for &(start, end) in &self.cap.spans {
            let data = self.cap.out[start + VNET_HDR_LEN..end].to_vec();
            for cid in ids {
                if let Some(sink) = self.captures.get(cid) {
                    let copy = CapturedFrame { port: id, outgoing, at, data: data.clone() };
                    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sink.tx.try_send(copy) {
                        sink.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
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

    /// Sends a frame to a port without offloads: a GSO frame is cut into
    /// segments that fit `mtu`, a frame with a seeded checksum gets it
    /// finished. Buffers are reused, so nothing is allocated once warm.
    fn transmit_soft(&mut self, id: PortId, frame: &Frame<'_>, tagging: Tagging, mtu: usize) {
        let mut wire = std::mem::take(&mut self.soft);
        match wire.cut(frame, mtu, true) {
            Ok(()) => {
                for &(start, end) in &wire.spans {
                    if let Ok(seg) = Frame::parse(&wire.out[start..end]) {
                        self.transmit_tagged(id, &wire.out[start..end], &seg, tagging);
                    }
                }
            }
            Err(e) => {
                if let Some(p) = self.ports.get(id).and_then(Option::as_ref) {
                    p.counters.tx_dropped(gso_drop_reason(e));
                }
            }
        }
        self.soft = wire;
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

    /// Sends one frame given as `parts` (virtio-net header first), through
    /// the port's egress impairment if it has one.
    fn transmit(&mut self, id: PortId, parts: &[&[u8]], eth_len: usize) {
        let impaired = self.ports.get(id).and_then(Option::as_ref).is_some_and(|p| p.egress.is_some());
        if impaired {
            let now = self.started.elapsed();
            self.impair(id, Stage::Egress, parts, eth_len, now);
        } else {
            self.send_now(id, parts, eth_len);
        }
    }

    /// Writes one frame to the port now, or queues it while the fd is full.
    fn send_now(&mut self, id: PortId, parts: &[&[u8]], eth_len: usize) {
        if self.ports.get(id).and_then(Option::as_ref).is_some_and(|p| !p.captures_tx.is_empty()) {
            let mut whole = std::mem::take(&mut self.cap_whole);
            whole.clear();
            for p in parts {
                whole.extend_from_slice(p);
            }
            if let Ok(f) = Frame::parse(&whole) {
                self.capture(id, true, &f);
            }
            self.cap_whole = whole;
        }
        let Some(port) = self.ports.get_mut(id).and_then(Option::as_mut) else { return };
        if port.failed {
            port.counters.tx_dropped(DropReason::PortError);
            return;
        }
        if let Some(peer) = port.cable_to {
            if self.handoff.len() >= HANDOFF_FRAMES {
                port.counters.tx_dropped(DropReason::QueueFull);
                return;
            }
            port.counters.tx(eth_len);
            let mut copy = self.pool.pop().unwrap_or_default();
            copy.clear();
            for p in parts {
                copy.extend_from_slice(p);
            }
            self.handoff.push_back((peer, copy));
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
                        WriteFailure::Frame(reason) => port.counters.tx_dropped(reason),
                        WriteFailure::Port => {
                            port.counters.tx_dropped(DropReason::PortError);
                            self.fail(id);
                        }
                    }
                    return;
                }
            }
        }
        if port.txq.len() >= TX_QUEUE_FRAMES {
            port.counters.tx_dropped(DropReason::QueueFull);
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

    /// Hands the frames sent into in-switch cables to the other ends, as
    /// if those ports had received them (their ingress impairments and
    /// captures apply). Frames a hand-off forwards into another cable are
    /// delivered in the same turn, up to `HANDOFF_BUDGET`.
    fn deliver_handoffs(&mut self) {
        let now = self.started.elapsed();
        for _ in 0..HANDOFF_BUDGET {
            let Some((to, frame)) = self.handoff.pop_front() else { break };
            self.receive(to, &frame, now);
            self.pool.push(frame);
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
                        port.counters.tx_dropped(reason);
                        let lost = port.txq.pop_front().expect("front exists");
                        self.pool.push(lost);
                    }
                    WriteFailure::Port => {
                        port.counters.tx_dropped(DropReason::PortError);
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

    /// A switch with one point-to-point link; the test holds both peers.
    struct Cable {
        sw: Switch,
        pa: UnixDatagram,
        pb: UnixDatagram,
        a: (PortId, Arc<PortCounters>),
        b: (PortId, Arc<PortCounters>),
    }

    fn cable(mtu_a: usize, mtu_b: usize, gso_b: bool) -> Cable {
        let mut sw = Switch::start().unwrap();
        let seg = sw.add_segment(Segment::point_to_point()).unwrap();
        let (fa, pa) = wire();
        let (fb, pb) = wire();
        let a = sw.add_port(seg, Box::new(FdPort::socket(fa)), mtu_a, true, VlanMode::default()).unwrap();
        let b = sw.add_port(seg, Box::new(FdPort::socket(fb)), mtu_b, gso_b, VlanMode::default()).unwrap();
        Cable { sw, pa, pb, a, b }
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

    #[test]
    fn gso_frames_towards_a_port_without_offloads_are_segmented() {
        let Cable { sw: _sw, pa, pb, b: (_, cb), .. } = cable(65535, 1500, false);
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
    fn an_impaired_egress_delays_and_loses_and_a_capture_sees_what_left() {
        let Cable { mut sw, pa, pb, b: (idb, cb), .. } = cable(1500, 1500, true);
        let delay = impair::Params { delay: crate::vocab::Delay::from_millis(30).unwrap(), ..Default::default() };
        sw.set_impairment(idb, Stage::Egress, Some((delay, 1))).unwrap();
        let feed = sw.start_capture(vec![CapturePoint { port: idb, rx: false, tx: true }]).unwrap();
        let sent = frame([2; 6], [4; 6], 60);
        let t0 = Instant::now();
        pa.send(&sent).unwrap();
        assert_eq!(recv(&pb).unwrap(), sent);
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(30) && took < Duration::from_millis(200), "delayed {took:?}");
        let copy = feed.frames.recv_timeout(Duration::from_secs(1)).unwrap();
        assert!(copy.outgoing && copy.port == idb);
        assert_eq!(copy.data, sent[VNET_HDR_LEN..]);
        // Everything lost: counted as impairment loss towards b.
        let lossy = impair::Params {
            loss: impair::LossModel::Random {
                p: crate::vocab::Probability::ONE,
                correlation: crate::vocab::Probability::ZERO,
            },
            ..Default::default()
        };
        sw.set_impairment(idb, Stage::Egress, Some((lossy, 1))).unwrap();
        for _ in 0..3 {
            pa.send(&sent).unwrap();
        }
        pb.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        assert!(recv(&pb).is_none(), "lost frames never arrive");
        assert!(settled(|| cb.snapshot().tx_drops.get("impair_loss") == Some(&3)), "{:?}", cb.snapshot());
        // Plain again: frames cross at once; the capture ends when stopped.
        sw.set_impairment(idb, Stage::Egress, None).unwrap();
        pa.send(&sent).unwrap();
        assert_eq!(recv(&pb).unwrap(), sent);
        sw.stop_capture(feed.id).unwrap();
        let rest: Vec<_> = feed.frames.iter().collect();
        assert_eq!(rest.len(), 1, "only the last frame was delivered while capturing");
        assert_eq!(feed.lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn oversize_frames_are_dropped_at_egress_and_a_dead_peer_is_isolated() {
        let Cable { sw: _sw, pa, pb, a: (_, ca), b: (_, cb) } = cable(1500, 1500, true);
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
