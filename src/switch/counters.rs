//! Per-port counters, written by the data plane and read by anyone.
//!
//! Relaxed atomics: each counter is independently monotonic, which is all a
//! reader needs; no ordering between counters is promised.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// A virtio-net header that cannot be honoured.
    BadHeader,
    /// Larger than the egress port's MTU and not segmentable.
    Oversize,
    /// A GSO super-frame towards a port that cannot take one.
    GsoUnsupported,
    /// The egress queue was full.
    QueueFull,
    /// The egress port failed (peer gone).
    PortError,
    /// The port is administratively down.
    PortDown,
    /// Not allowed on the port's VLAN configuration.
    Vlan,
    /// Lost on purpose by the link's impairment (loss, Gilbert-Elliott).
    ImpairLoss,
    /// Framing no frame can have (a stream record of an impossible
    /// length): the peer is out of step, and its port is closed.
    Malformed,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::Runt,
        DropReason::BadHeader,
        DropReason::Oversize,
        DropReason::GsoUnsupported,
        DropReason::QueueFull,
        DropReason::PortError,
        DropReason::PortDown,
        DropReason::Vlan,
        DropReason::ImpairLoss,
        DropReason::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::BadHeader => "bad_header",
            DropReason::Oversize => "oversize",
            DropReason::GsoUnsupported => "gso_unsupported",
            DropReason::QueueFull => "queue_full",
            DropReason::PortError => "port_error",
            DropReason::PortDown => "port_down",
            DropReason::Vlan => "vlan",
            DropReason::ImpairLoss => "impair_loss",
            DropReason::Malformed => "malformed",
        }
    }
}

/// Live counters of one port. `rx` is what the node sent into the
/// switch, `tx` what the switch handed to the node; drops are kept per
/// direction too (a frame from the node lost at ingress is an rx drop, a
/// frame towards it lost at egress a tx drop).
#[derive(Debug, Default)]
pub struct PortCounters {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    rx_drops: [AtomicU64; DropReason::ALL.len()],
    tx_drops: [AtomicU64; DropReason::ALL.len()],
}

fn by_reason(counts: &[AtomicU64; DropReason::ALL.len()]) -> std::collections::BTreeMap<String, u64> {
    DropReason::ALL
        .iter()
        .map(|r| (r.name().to_string(), counts[*r as usize].load(Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

impl PortCounters {
    /// A frame of `bytes` (Ethernet bytes, no virtio header) arrived.
    pub fn rx(&self, bytes: usize) {
        self.rx_frames.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// A frame of `bytes` left through this port.
    pub fn tx(&self, bytes: usize) {
        self.tx_frames.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// `frames` frames of `bytes` in all were handed to the node at once
    /// (segments merged into one write).
    pub fn tx_many(&self, frames: u64, bytes: u64) {
        self.tx_frames.fetch_add(frames, Relaxed);
        self.tx_bytes.fetch_add(bytes, Relaxed);
    }

    /// A frame from the node was dropped on its way into the switch.
    pub fn rx_dropped(&self, reason: DropReason) {
        self.rx_drops[reason as usize].fetch_add(1, Relaxed);
    }

    /// A frame towards the node was dropped at this port.
    pub fn tx_dropped(&self, reason: DropReason) {
        self.tx_drops[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let rx_drops = by_reason(&self.rx_drops);
        let tx_drops = by_reason(&self.tx_drops);
        let mut drops = rx_drops.clone();
        for (k, v) in &tx_drops {
            *drops.entry(k.clone()).or_default() += v;
        }
        CounterSnapshot {
            rx_frames: self.rx_frames.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_frames: self.tx_frames.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            drops,
            rx_drops,
            tx_drops,
        }
    }
}

/// A copy of one port's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Drops by reason, both directions; reasons with no drop are left out.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Drops of frames from the node, by reason.
    #[serde(default)]
    pub rx_drops: std::collections::BTreeMap<String, u64>,
    /// Drops of frames towards the node, by reason.
    #[serde(default)]
    pub tx_drops: std::collections::BTreeMap<String, u64>,
}

impl CounterSnapshot {
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_direction_and_reason() {
        let c = PortCounters::default();
        c.rx(60);
        c.rx(1514);
        c.tx(60);
        c.rx_dropped(DropReason::Runt);
        c.rx_dropped(DropReason::Runt);
        c.tx_dropped(DropReason::Oversize);
        c.rx_dropped(DropReason::PortDown);
        c.tx_dropped(DropReason::PortDown);
        let s = c.snapshot();
        assert_eq!((s.rx_frames, s.rx_bytes, s.tx_frames, s.tx_bytes), (2, 1574, 1, 60));
        assert_eq!(s.drops.get("runt"), Some(&2));
        assert_eq!(s.drops.get("oversize"), Some(&1));
        assert_eq!(s.drops.get("queue_full"), None);
        assert_eq!(s.drops.get("port_down"), Some(&2));
        assert_eq!(s.rx_drops.get("oversize"), None);
        assert_eq!(s.tx_drops.get("oversize"), Some(&1));
        assert_eq!((s.rx_drops.get("port_down"), s.tx_drops.get("port_down")), (Some(&1), Some(&1)));
        assert_eq!(s.total_drops(), 5);
    }
}
