//! The control plane's side of the switch: the [`Switch`] handle, the
//! sendable [`CaptureControl`], the [`Control`] messages they send and the
//! [`ControlLine`] that carries them (a queue plus the poller's waker), and
//! the public types of their answers.
//!
//! Owns: port and segment numbering, the data-plane thread's lifetime.
//! Must not touch: port fds, frames, the forwarding state (all of that
//! lives on the data-plane thread, reached only through messages).
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use mio::Waker;

use super::clock::{Clock, MonotonicClock};
use super::counters::PortCounters;
use super::dataplane;
use super::delay::Stage;
use super::egress::CaptureSink;
use super::fabric::{PortInfo, Segment};
use super::impair;
use super::port::PortIo;
use super::{CaptureId, PortId, SegmentId};
use crate::vocab::MacAddr;
use crate::vocab::VlanMode;

/// Copies a capture may hold before its reader falls behind and loses some.
pub const CAPTURE_QUEUE_FRAMES: usize = 8192;

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

pub(super) type Ack = SyncSender<Result<(), String>>;

/// Messages from the control plane to the data-plane thread.
pub(super) enum Control {
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
    ReleaseDue { ack: Ack },
    Shutdown,
}

/// The way to the data-plane thread: a message queue and the waker that
/// makes the poller read it.
#[derive(Clone)]
pub(super) struct ControlLine {
    pub(super) ctl: Sender<Control>,
    pub(super) waker: Arc<Waker>,
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
    /// Starts a switch on the host's monotonic clock.
    pub fn start() -> Result<Switch, SwitchError> {
        Switch::with_clock(MonotonicClock::new())
    }

    /// Starts a switch whose data plane reads the time from `clock`; with
    /// a [`FakeClock`](super::FakeClock), held frames leave only when the
    /// test moves it and calls [`Switch::release_due`].
    pub fn with_clock(clock: impl Clock) -> Result<Switch, SwitchError> {
        let (line, thread) = dataplane::spawn(Box::new(clock))?;
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

    /// Makes the data plane release every held frame due by its clock now,
    /// and waits until it has: a released frame that leaves through a
    /// port has been written (or queued) when this returns; one that
    /// crosses an in-switch cable arrives on the next turn. Needed only
    /// with a clock that does not move by itself.
    pub fn release_due(&self) -> Result<(), SwitchError> {
        self.call(|ack| Control::ReleaseDue { ack })
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
