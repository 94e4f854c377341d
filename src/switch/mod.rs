//! The userspace Ethernet switch.
//!
//! One data-plane thread (`dataplane.rs`) polls every port fd (epoll
//! through mio), asks the sans-IO [`fabric::Fabric`] where each frame goes,
//! and hands it to the egress path (`egress.rs`), which writes it out.
//! The control plane talks to that thread through [`Switch`]
//! (`handle.rs`), a handle that sends control messages and wakes the
//! poller.
//!
//! Impaired directions ([`impair`]) hand their frames to a [`delay`] line;
//! a timerfd in the same poll set wakes the thread when the next one is
//! due, so delays are kept to the microsecond, not to epoll's millisecond.
//! The data plane reads the time from a [`Clock`]: the host's monotonic
//! clock, or in tests a [`FakeClock`] that stands still until moved (then
//! [`Switch::release_due`] takes the timer's place).
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
pub mod clock;
pub mod counters;
pub mod delay;
pub mod fabric;
pub mod fdb;
pub mod frame;
pub mod gro;
pub mod gso;
pub mod impair;
pub mod pcap;
pub mod port;
pub mod sniff;
pub mod vlan;
pub mod vxlan;

mod dataplane;
mod egress;
mod handle;
#[cfg(test)]
mod testkit;

pub use clock::{Clock, FakeClock, MonotonicClock};
pub use egress::TX_QUEUE_FRAMES;
// For the fuzz targets (`crate::fuzzing`): the egress path's cutting, sans-IO.
pub(crate) use egress::WireBuffers;
pub use handle::{
    CaptureControl, CaptureFeed, CapturePoint, CapturedFrame, FdbEntry, Switch, SwitchError, CAPTURE_QUEUE_FRAMES,
};

pub type PortId = usize;
pub type SegmentId = usize;
pub type CaptureId = usize;
