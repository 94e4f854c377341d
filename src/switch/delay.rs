//! The delay line (sans-IO): frames held back by an impairment, each with
//! the time it may go on, released in time order (and in arrival order
//! for equal times, so a plain delay never reorders).
//!
//! Owns: held frames and their release times. Must not touch: fds, the
//! clock (the data plane passes `now`).
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::PortId;

/// Where a held frame re-enters the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Into the switch from `port` (a LAN port's node-to-LAN direction):
    /// it is forwarded when released.
    Ingress,
    /// Out of the switch through `port`: it is written when released.
    Egress,
}

/// A released frame (virtio-net header first).
#[derive(Debug, PartialEq, Eq)]
pub struct Held {
    pub at: Duration,
    pub port: PortId,
    pub stage: Stage,
    pub frame: Vec<u8>,
}

struct Entry {
    seq: u64,
    held: Held,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so the max-heap pops the earliest (then oldest) entry.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.held.at, other.seq).cmp(&(self.held.at, self.seq))
    }
}

#[derive(Default)]
pub struct DelayLine {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl DelayLine {
    pub fn hold(&mut self, at: Duration, port: PortId, stage: Stage, frame: Vec<u8>) {
        self.seq += 1;
        self.heap.push(Entry { seq: self.seq, held: Held { at, port, stage, frame } });
    }

    /// When the next frame is due, if any is held.
    pub fn next_due(&self) -> Option<Duration> {
        self.heap.peek().map(|e| e.held.at)
    }

    /// The next frame due at or before `now`.
    pub fn release(&mut self, now: Duration) -> Option<Held> {
        if self.heap.peek()?.held.at <= now {
            self.heap.pop().map(|e| e.held)
        } else {
            None
        }
    }

    /// Takes away every frame held for `port` (it is being removed), and
    /// returns their buffers for reuse.
    pub fn forget_port(&mut self, port: PortId) -> Vec<Vec<u8>> {
        let mut freed = Vec::new();
        let kept: Vec<Entry> = std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .filter_map(|e| {
                if e.held.port == port {
                    freed.push(e.held.frame);
                    None
                } else {
                    Some(e)
                }
            })
            .collect();
        self.heap = kept.into();
        freed
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn releases_in_time_order_and_fifo_for_equal_times() {
        let mut d = DelayLine::default();
        d.hold(5 * MS, 1, Stage::Egress, vec![1]);
        d.hold(2 * MS, 2, Stage::Ingress, vec![2]);
        d.hold(5 * MS, 1, Stage::Egress, vec![3]);
        assert_eq!(d.next_due(), Some(2 * MS));
        assert_eq!(d.release(MS), None, "nothing is due yet");
        let order: Vec<u8> = std::iter::from_fn(|| d.release(10 * MS)).map(|h| h.frame[0]).collect();
        assert_eq!(order, [2, 1, 3]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_removed_port_loses_its_held_frames() {
        let mut d = DelayLine::default();
        d.hold(MS, 1, Stage::Egress, vec![1]);
        d.hold(MS, 2, Stage::Egress, vec![2]);
        d.hold(2 * MS, 1, Stage::Ingress, vec![3]);
        assert_eq!(d.forget_port(1).len(), 2);
        assert_eq!(d.len(), 1);
        assert_eq!(d.release(MS).map(|h| h.port), Some(2));
    }
}
