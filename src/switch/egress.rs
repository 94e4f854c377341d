//! The egress path of the data plane: what happens to a frame once the
//! fabric has chosen a port for it. 802.1Q tags pushed or stripped in
//! pieces, software GSO for ports without offloads ([`WireBuffers`]), the
//! port's egress impairment, copies to capture sinks, then the write
//! itself, queued while the fd is full, and what a failed write means
//! ([`classify_write_error`]).
//!
//! Owns: the write side of port fds, transmit queues, capture sinks.
//! Must not touch: the forwarding decision (the fabric's), the poll loop
//! and the delay line's timer (`dataplane`).
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use mio::unix::SourceFd;
use mio::Interest;

use super::counters::DropReason;
use super::dataplane::{token, DataPlane, HANDOFF_FRAMES};
use super::delay::Stage;
use super::frame::{Frame, ETH_HDR_LEN, VNET_HDR_LEN};
use super::gso;
use super::handle::CapturedFrame;
use super::vlan::{self, Tagging};
use super::PortId;

/// Frames a port may hold while its fd is not writable.
pub const TX_QUEUE_FRAMES: usize = 256;

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
pub(super) struct CaptureSink {
    pub(super) tx: SyncSender<CapturedFrame>,
    pub(super) lost: Arc<AtomicU64>,
}

/// Reusable buffers for frames cut into wire-sized pieces.
#[derive(Default)]
pub(crate) struct WireBuffers {
    pub(super) out: Vec<u8>,
    pub(super) spans: Vec<(usize, usize)>,
    scratch: Vec<u8>,
}

impl WireBuffers {
    /// Fills `out` with `frame` as the frames a real wire of `mtu` would
    /// carry, each with a zeroed virtio-net header: a GSO super-frame is
    /// segmented; with `finish`, a seeded checksum is completed.
    pub(crate) fn cut(&mut self, frame: &Frame<'_>, mtu: usize, finish: bool) -> Result<(), gso::GsoError> {
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

    /// The frames the last `cut` made, virtio-net header first.
    pub(crate) fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|&(start, end)| &self.out[start..end])
    }
}

pub(super) fn gso_drop_reason(e: gso::GsoError) -> DropReason {
    match e {
        gso::GsoError::MtuTooSmall => DropReason::Oversize,
        gso::GsoError::Unsupported => DropReason::GsoUnsupported,
        gso::GsoError::Malformed => DropReason::BadHeader,
    }
}

/// Asks the poll to report when port `id`'s fd takes writes again (a
/// frame waits in its queue, or part of one in the port).
fn want_write(registry: &mio::Registry, port: &mut super::dataplane::PortRuntime, id: PortId) {
    if !port.wants_write {
        port.wants_write = true;
        let fd = port.io.raw_fd();
        let _ = registry.reregister(&mut SourceFd(&fd), token(id), Interest::READABLE | Interest::WRITABLE);
    }
}

impl DataPlane {
    /// Copies a frame to the captures of port `id` (what the node sent,
    /// or, `outgoing`, what it is handed), cut as a wire carries it.
    pub(super) fn capture(&mut self, id: PortId, outgoing: bool, frame: &Frame<'_>) {
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
        for piece in self.cap.frames() {
            let data = piece[VNET_HDR_LEN..].to_vec();
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

    /// Sends a frame to a port without offloads: a GSO frame is cut into
    /// segments that fit `mtu`, a frame with a seeded checksum gets it
    /// finished. Buffers are reused, so nothing is allocated once warm.
    pub(super) fn transmit_soft(&mut self, id: PortId, frame: &Frame<'_>, tagging: Tagging, mtu: usize) {
        let mut wire = std::mem::take(&mut self.soft);
        match wire.cut(frame, mtu, true) {
            Ok(()) => {
                for piece in wire.frames() {
                    if let Ok(seg) = Frame::parse(piece) {
                        self.transmit_tagged(id, piece, &seg, tagging);
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
    pub(super) fn transmit_tagged(&mut self, id: PortId, buf: &[u8], frame: &Frame<'_>, tagging: Tagging) {
        let (mut hdr, mut tag) = ([0u8; VNET_HDR_LEN], [0u8; 4]);
        let out = vlan::retag(buf, frame, tagging, &mut hdr, &mut tag);
        self.transmit(id, out.parts(), out.eth_len)
    }

    /// Sends one frame given as `parts` (virtio-net header first), through
    /// the port's egress impairment if it has one.
    fn transmit(&mut self, id: PortId, parts: &[&[u8]], eth_len: usize) {
        let impaired = self.ports.get(id).and_then(Option::as_ref).is_some_and(|p| p.egress.is_some());
        if impaired {
            let now = self.clock.now();
            self.impair(id, Stage::Egress, parts, eth_len, now);
        } else {
            self.send_now(id, parts, eth_len);
        }
    }

    /// Writes one frame to the port now, or queues it while the fd is full.
    pub(super) fn send_now(&mut self, id: PortId, parts: &[&[u8]], eth_len: usize) {
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
        if port.takes_gso && port.egress.is_none() && !port.txq.is_empty() && port.merged.is_some() {
            // Backed up: what it merged goes into the queue first, then this.
            self.send_held(id);
        } else if port.takes_gso && port.egress.is_none() && port.txq.is_empty() {
            let merged = match (&mut port.merged, parts) {
                (Some(held), [whole]) => held.merge(whole),
                _ => false,
            };
            if merged {
                return;
            }
            // Whatever does not continue the run follows what it holds.
            if port.merged.is_some() {
                self.send_held(id);
            }
            if let [whole] = parts {
                let buf = self.pool.pop().unwrap_or_default();
                match super::gro::Held::start(whole, buf) {
                    Ok(held) => {
                        let port = self.ports[id].as_mut().expect("looked up above");
                        port.merged = Some(held);
                        self.merging.push(id);
                        return;
                    }
                    Err(buf) => self.pool.push(buf),
                }
            }
        }
        let Some(port) = self.ports.get_mut(id).and_then(Option::as_mut) else { return };
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
                    if port.io.has_pending() {
                        want_write(self.poll.registry(), port, id);
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
        want_write(self.poll.registry(), port, id);
    }

    /// Sends what every port merged this turn (`gro.rs`).
    pub(super) fn send_merged(&mut self) {
        while let Some(id) = self.merging.pop() {
            self.send_held(id);
        }
    }

    /// Sends the frame port `id` merged, counting each segment in it as
    /// the frame it was on the wire.
    fn send_held(&mut self, id: PortId) {
        let Some(port) = self.ports.get_mut(id).and_then(Option::as_mut) else { return };
        let Some(held) = port.merged.take() else { return };
        let (segs, bytes) = (held.segs, held.wire_bytes);
        if port.failed {
            for _ in 0..segs {
                port.counters.tx_dropped(DropReason::PortError);
            }
            self.pool.push(held.finish());
            return;
        }
        let frame = held.finish();
        let sent = if port.txq.is_empty() { port.io.send(&frame) } else { Err(io::ErrorKind::WouldBlock.into()) };
        match sent {
            Ok(()) => {
                port.counters.tx_many(segs, bytes);
                self.pool.push(frame);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && port.txq.len() < TX_QUEUE_FRAMES => {
                // Counted when it is written (`flush`), as one frame.
                port.txq.push_back(frame);
                want_write(self.poll.registry(), port, id);
            }
            Err(e) => {
                let reason = if e.kind() == io::ErrorKind::WouldBlock {
                    DropReason::QueueFull
                } else {
                    match classify_write_error(&e) {
                        WriteFailure::Frame(reason) => reason,
                        WriteFailure::Port => DropReason::PortError,
                    }
                };
                for _ in 0..segs {
                    port.counters.tx_dropped(reason);
                }
                self.pool.push(frame);
                if reason == DropReason::PortError {
                    self.fail(id);
                }
            }
        }
    }

    /// Writes queued frames until the fd would block again.
    pub(super) fn flush(&mut self, id: PortId) {
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
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::switch::delay::Stage;
    use crate::switch::frame::{ETH_HDR_LEN, VNET_HDR_LEN};
    use crate::switch::testkit::{cable, cable_on, frame, ingested, recv, released_after, settled, Cable};
    use crate::switch::{gso, impair, CapturePoint, FakeClock, Switch};

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
    fn tcp_segments_of_one_turn_reach_a_gso_port_merged_and_a_plain_port_as_they_came() {
        const MS: Duration = Duration::from_millis(1);
        for gso_b in [true, false] {
            let clock = FakeClock::new();
            let switch = Switch::with_clock(clock.clone()).unwrap();
            let Cable { mut sw, pa, pb, a: (ida, ca), b: (_, cb) } = cable_on(switch, 1500, 1500, gso_b);
            // Held on the way in, the three leave in one turn.
            let delay = impair::Params { delay: crate::vocab::Delay::new("delay", MS).unwrap(), ..Default::default() };
            sw.set_impairment(ida, Stage::Ingress, Some((delay, 1))).unwrap();
            let segs: Vec<Vec<u8>> =
                (0..3u32).map(|i| crate::switch::gro::tcp_segment(1 + i * 1000, &[i as u8; 1000], 0x10, 100)).collect();
            for s in &segs {
                ingested(&sw, &pa, &ca, s);
            }
            let got = released_after(&clock, &sw, &pb, MS);
            if gso_b {
                assert_eq!(got.len(), 1, "one merged frame");
                let hdr = crate::switch::frame::VnetHdr::parse(&got[0]).unwrap();
                assert_eq!((hdr.gso_type, hdr.gso_size), (1, 1000));
                assert_eq!(got[0].len(), segs[0].len() + 2000);
            } else {
                assert_eq!(got, segs, "a port without offloads gets each segment as it came");
            }
            assert!(settled(|| cb.snapshot().tx_frames == 3), "each segment counted: {:?}", cb.snapshot());
        }
    }

    #[test]
    fn an_impaired_egress_holds_each_frame_its_exact_delay_and_loses_and_a_capture_sees_what_left() {
        const MS: Duration = Duration::from_millis(1);
        const NS: Duration = Duration::from_nanos(1);
        const NOTHING: Vec<Vec<u8>> = Vec::new();
        let clock = FakeClock::new();
        let switch = Switch::with_clock(clock.clone()).unwrap();
        let Cable { mut sw, pa, pb, a: (_, ca), b: (idb, cb) } = cable_on(switch, 1500, 1500, true);
        let delay = impair::Params { delay: crate::vocab::Delay::new("delay", 30 * MS).unwrap(), ..Default::default() };
        sw.set_impairment(idb, Stage::Egress, Some((delay, 1))).unwrap();
        let feed = sw.start_capture(vec![CapturePoint { port: idb, rx: false, tx: true }]).unwrap();
        let (first, second) = (frame([2; 6], [4; 6], 60), frame([2; 6], [4; 6], 61));
        // One frame at 0 ms, one at 10 ms: each is held 30 ms from its own
        // arrival, not a nanosecond less, and they leave in that order.
        ingested(&sw, &pa, &ca, &first);
        clock.advance(10 * MS);
        ingested(&sw, &pa, &ca, &second);
        assert_eq!(released_after(&clock, &sw, &pb, 20 * MS - NS), NOTHING, "nothing before 30 ms");
        assert_eq!(released_after(&clock, &sw, &pb, NS), vec![first.clone()], "the first frame at 30 ms");
        assert_eq!(released_after(&clock, &sw, &pb, 10 * MS - NS), NOTHING, "the second is still held");
        assert_eq!(released_after(&clock, &sw, &pb, NS), vec![second.clone()], "the second frame at 40 ms");
        for sent in [&first, &second] {
            let copy = feed.frames.try_recv().expect("captured as it left");
            assert!(copy.outgoing && copy.port == idb);
            assert_eq!(copy.data, sent[VNET_HDR_LEN..]);
        }
        // Everything lost: counted as impairment loss towards b, never held.
        let lossy = impair::Params {
            loss: impair::LossModel::Random {
                p: crate::vocab::Probability::ONE,
                correlation: crate::vocab::Probability::ZERO,
            },
            ..Default::default()
        };
        sw.set_impairment(idb, Stage::Egress, Some((lossy, 1))).unwrap();
        for _ in 0..3 {
            ingested(&sw, &pa, &ca, &first);
        }
        assert_eq!(cb.snapshot().tx_drops.get("impair_loss"), Some(&3), "{:?}", cb.snapshot());
        assert_eq!(released_after(&clock, &sw, &pb, Duration::from_secs(3600)), NOTHING, "lost frames never arrive");
        // Plain again: frames cross at once; the capture ends when stopped.
        sw.set_impairment(idb, Stage::Egress, None).unwrap();
        pa.send(&first).unwrap();
        assert_eq!(recv(&pb).unwrap(), first);
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
