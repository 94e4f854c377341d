//! The vocabulary every layer above shares: typed, validated values with
//! no I/O. MAC addresses, CIDRs and routes, VLAN ids and modes, node kinds
//! and options, link impairments, commands run in nodes, and the bounded numbers they are made
//! of (CPU counts, memory sizes, MTUs, durations, rates, probabilities,
//! timeouts).
//!
//! A value of one of these types is valid by construction: its
//! constructor and its serde `Deserialize` both check the range and name
//! the option in the error. So a `Command` that reaches the lab, from a
//! script, the control socket, the GUI or a saved lab, cannot carry a CPU
//! count of 0 or a delay of 1e300 s, and the arithmetic the switch and the
//! hosts do on these values cannot overflow.
//!
//! Owns: the shared words and their rules. Must not touch: anything above
//! it (it imports nothing from the crate), I/O, clocks.
pub mod addr;
pub mod exec;
pub mod hash;
pub mod impair;
pub mod mac;
pub mod node;
pub mod plug;
pub mod units;
pub mod vlan;
pub mod vxlan;

pub use addr::{Cidr, CidrError, Prefix, Route};
pub use hash::fnv1a;
pub use mac::MacAddr;
pub use node::{Accel, Bind, Forward, NodeKind, NodeOptions};
pub use plug::{PlugProtocol, PlugSpec};
pub use units::{Cpus, Delay, MemMb, Mtu, OutputLimit, Probability, QueueLimit, Rate, Timeout};
pub use vlan::{VlanId, VlanMode};
pub use vxlan::VxlanSpec;

/// Why a value is not part of the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabError {
    #[error("{option} {value} is out of range ({range})")]
    OutOfRange { option: &'static str, value: String, range: &'static str },
    #[error("{0:?} is not a time (use e.g. \"20ms\", \"1.5s\", \"250us\")")]
    NotATime(String),
    #[error("{0:?} is not a rate (use e.g. \"10mbit\", \"1gbit\", \"512kbit\")")]
    NotARate(String),
    #[error("unknown distribution {0:?} (uniform, normal or pareto)")]
    UnknownDistribution(String),
    #[error("unknown node kind {0:?} (ns, uml or kvm)")]
    UnknownKind(String),
    #[error("accel is \"kvm\" or \"tcg\", not {0:?}")]
    UnknownAccel(String),
    /// A value that breaks a rule other than a range.
    #[error("{option}: {why}")]
    Invalid { option: &'static str, why: String },
}

impl VocabError {
    pub fn invalid(option: &'static str, why: impl Into<String>) -> VocabError {
        VocabError::Invalid { option, why: why.into() }
    }
}
