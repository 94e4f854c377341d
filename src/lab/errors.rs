//! What kind of failure a lab error is, so that a client of a lab in
//! another process (a remote script, the GUI, a program on the control
//! socket) can tell "you asked for something wrong" from "the host
//! failed" without reading the message, and a remote error keeps its
//! kind across the socket.
//!
//! Owns: the kinds and the mapping of every lab error to one. Must not
//! touch: the messages themselves (those are the errors' own `Display`).
use serde::{Deserialize, Serialize};

use super::snapshot::SnapshotError;
use super::topology::TopologyError;
use super::LabError;
use crate::host::HostError;

/// The kinds of failure, as the control protocol names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The command breaks a rule: a value out of range, a bad name, a
    /// malformed request. Sending it again will fail again.
    Invalid,
    /// A node, LAN, link, interface or snapshot it names does not exist.
    NotFound,
    /// It would clash with what exists: a name in use, an address already
    /// set, a loop of LANs.
    Conflict,
    /// Something it needs is not in the right state (a stopped node).
    State,
    /// The host could not do it (a program or system call failed, a
    /// node did not start, a command timed out). Also what an answer
    /// that names no kind is taken for.
    #[default]
    Host,
    /// The switch refused or has stopped.
    Switch,
    /// Not available for this node kind, on this host, or for an
    /// attached lab.
    Unsupported,
    /// The lab cannot be reached, or has ended.
    Unavailable,
    /// The client may not drive this lab (another user).
    Denied,
}

/// A failure reported by a lab in another process: its kind, kept across
/// the control socket, and its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RemoteError {
        RemoteError { kind, message: message.into() }
    }
}

impl TopologyError {
    pub fn kind(&self) -> ErrorKind {
        use TopologyError::*;
        match self {
            Name(_) | SelfLink(_) | BadIfaceName(_) | BadLinkName(_) | GroupMac(_) => ErrorKind::Invalid,
            NoSuchNode(_) | NoSuchLan(_) | NoSuchIface(..) | NoSuchLink(_) | NotLinked(..) => ErrorKind::NotFound,
            Exists(..) | TooManyIfaces(..) | AddressExists(..) | IfaceExists(..) | RouteExists(..) | LanLoop(..)
            | MacInUse(_) => ErrorKind::Conflict,
            Stopped(_) => ErrorKind::State,
        }
    }
}

impl LabError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            LabError::Topology(e) => e.kind(),
            LabError::Host(HostError::Unsupported(_)) => ErrorKind::Unsupported,
            LabError::Host(HostError::Gone(_)) => ErrorKind::State,
            LabError::Host(_) | LabError::RunDir(_) | LabError::Saved { .. } | LabError::Capture(_) => ErrorKind::Host,
            LabError::Switch(_) => ErrorKind::Switch,
            LabError::Address(_) | LabError::Invalid(_) | LabError::VlanOnLink | LabError::PortOfLink(..) => {
                ErrorKind::Invalid
            }
            LabError::NoAddress(_) => ErrorKind::NotFound,
            LabError::Snapshot(SnapshotError::Name(_)) => ErrorKind::Invalid,
            LabError::Snapshot(SnapshotError::Exists(_)) => ErrorKind::Conflict,
            LabError::Snapshot(SnapshotError::NoSuch(_)) => ErrorKind::NotFound,
            LabError::Snapshot(SnapshotError::InUse { .. }) => ErrorKind::Conflict,
            LabError::KindMismatch { .. } => ErrorKind::Invalid,
            LabError::CloneStopped(_) => ErrorKind::State,
            LabError::NotLocal(_) => ErrorKind::Unsupported,
            LabError::Busy(_) | LabError::EndedWhileBusy { .. } => ErrorKind::State,
            LabError::Ended => ErrorKind::Unavailable,
            LabError::Panicked(_) | LabError::Dhcp { .. } => ErrorKind::Host,
            LabError::Remote(e) => e.kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_travel_as_snake_case_words() {
        assert_eq!(serde_json::to_string(&ErrorKind::NotFound).unwrap(), r#""not_found""#);
        let e = LabError::Topology(TopologyError::NoSuchNode("x".into()));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let bad = LabError::Invalid(crate::vocab::Cpus::new(0).unwrap_err());
        assert_eq!(bad.kind(), ErrorKind::Invalid);
        let remote = LabError::Remote(RemoteError::new(ErrorKind::Conflict, "taken"));
        assert_eq!((remote.kind(), remote.to_string()), (ErrorKind::Conflict, "taken".to_string()));
    }
}
