//! The one vocabulary that drives a lab: serde-serializable commands and
//! replies. Rhai functions build `Command`s; only the `Lab` executes them,
//! so a control socket or a GUI can later send the very same values.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::topology::{Iface, LinkModel, Topology};
use crate::switch::counters::CounterSnapshot;
use crate::vocab::addr::{Cidr, Route};
use crate::vocab::exec::{ExecOutput, ExecRequest};
use crate::vocab::impair::LinkImpairment;
use crate::vocab::node::check_path;
use crate::vocab::VlanMode;
use crate::vocab::{Cpus, MemMb, NodeKind, VocabError};

/// Options of a new link or LAN port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOptions {
    /// MTU of the created interfaces (default 1500).
    pub mtu: Option<crate::vocab::Mtu>,
    /// 802.1Q mode of a LAN port (default: access port of VLAN 1).
    pub vlan: Option<VlanMode>,
    /// Interface names (default: the next free `ethN`): of the first and
    /// second end of a link, or of a LAN port (`name_a`).
    #[serde(default)]
    pub name_a: Option<String>,
    #[serde(default)]
    pub name_b: Option<String>,
    /// MAC addresses (default: derived from the lab, node and interface
    /// names): of the first and second end, or of a LAN port (`mac_a`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_a: Option<crate::vocab::MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_b: Option<crate::vocab::MacAddr>,
    /// The link's own name (default: `a--b`, then `a--b#2`, …).
    #[serde(default)]
    pub link_name: Option<String>,
    /// Impairments of the new link or LAN port.
    #[serde(default)]
    pub impair: Option<LinkImpairment>,
    /// Whether the first (or only) and the second end get their address
    /// by DHCP (`ip: "dhcp"`); a node linked to a `nat` endpoint does
    /// without asking unless it is given an address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp_a: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp_b: bool,
}

/// A capture started into a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    pub id: u64,
    pub target: String,
    pub file: std::path::PathBuf,
}

pub use crate::vocab::NodeOptions;

/// What a clone is made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloneSource {
    Node(String),
    Snapshot(String),
}

/// One snapshot as reported to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub node: String,
    pub kind: NodeKind,
    /// Bytes the snapshot's own layer takes on disk.
    pub bytes: u64,
    /// Nodes built on it.
    pub users: Vec<String>,
}

/// Who a ping goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PingTarget {
    /// The first address of a node.
    Node(String),
    Addr(IpAddr),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    AddNode {
        name: String,
        kind: NodeKind,
        #[serde(default)]
        options: NodeOptions,
    },
    /// Removes a node with all its links and LAN ports.
    DeleteNode {
        node: String,
    },
    /// Powers a node off: its processes end, its interfaces lose carrier.
    StopNode {
        node: String,
    },
    /// Powers a stopped node on again with the same interfaces, addresses and routes.
    StartNode {
        node: String,
    },
    AddLan {
        name: String,
    },
    /// Removes a LAN and unplugs every port.
    DeleteLan {
        name: String,
    },
    /// A point-to-point link between two nodes.
    AddLink {
        a: String,
        b: String,
        ip_a: Option<Cidr>,
        ip_b: Option<Cidr>,
        options: LinkOptions,
    },
    /// A new interface of `node` plugged into `lan`.
    JoinLan {
        node: String,
        lan: String,
        ip: Option<Cidr>,
        options: LinkOptions,
    },
    /// Links two LANs, like a cable between two switches.
    LinkLans {
        a: String,
        b: String,
        vlan: Option<VlanMode>,
    },
    /// Removes a point-to-point link or a link between LANs.
    DeleteLink {
        link: String,
    },
    /// Removes the link between two nodes, or a node's port on a LAN
    /// (either name may be the LAN).
    Unlink {
        a: String,
        b: String,
    },
    SetLinkUp {
        link: String,
        up: bool,
    },
    /// Replaces the impairments of a link, a link between LANs, or a LAN
    /// port (`node:iface`); on a bad value the link keeps its settings.
    SetImpairment {
        link: String,
        impair: LinkImpairment,
    },
    /// Seeds every impaired direction that has no seed of its own (and
    /// re-seeds those already impaired), for reproducible runs.
    Seed {
        seed: u64,
    },
    /// Sets facts about the lab (`description`, `author`, …), shown by
    /// `clonet ls` and the GUI; an empty value removes one.
    SetLabInfo {
        info: std::collections::BTreeMap<String, String>,
    },
    /// Writes the frames of a link, LAN or port to a pcap file.
    StartCapture {
        target: String,
        file: std::path::PathBuf,
    },
    StopCapture {
        id: u64,
    },
    SetIp {
        node: String,
        iface: String,
        cidr: Cidr,
    },
    AddRoute {
        node: String,
        route: Route,
    },
    Exec {
        node: String,
        request: ExecRequest,
    },
    Ping {
        from: String,
        to: PingTarget,
        #[serde(with = "crate::vocab::units::timeout_ms")]
        timeout_ms: crate::vocab::Timeout,
    },
    NodeInfo {
        node: String,
    },
    /// Freezes a running node (every process, or the whole machine) or
    /// lets it go on; its interfaces stay as they are.
    PauseNode {
        node: String,
        paused: bool,
    },
    /// Freezes a node's disk as a named, read-only snapshot.
    Snapshot {
        node: String,
        name: String,
        /// Also the RAM and device state (kvm), for a restore that resumes.
        #[serde(default)]
        memory: bool,
    },
    /// A new node of the same kind whose disk is a copy-on-write layer
    /// over a snapshot (a running node is snapshotted first).
    Clone {
        source: CloneSource,
        name: String,
        #[serde(default)]
        mem_mb: Option<MemMb>,
        #[serde(default)]
        cpus: Option<Cpus>,
    },
    /// Brings a node's disk back to a snapshot (the node restarts).
    Restore {
        node: String,
        snapshot: String,
    },
    Snapshots,
    DeleteSnapshot {
        name: String,
    },
    /// Writes the topology and every node's disk state to a directory.
    SaveLab {
        dir: std::path::PathBuf,
    },
    /// Rebuilds a saved lab into this one.
    LoadLab {
        dir: std::path::PathBuf,
    },
    /// Where the node's console is reached (the client attaches itself).
    Console {
        node: String,
    },
    Counters,
    Fdb {
        lan: String,
    },
    Topology,
    /// Name, size and age of the lab.
    LabInfo,
}

impl Command {
    /// What of the host outside the lab this command reaches, if it does:
    /// files and directories at paths it names, or arguments it adds to
    /// host programs. A student's answer may not send such a command.
    pub fn host_reach(&self) -> Option<&'static str> {
        match self {
            Command::AddNode { options, .. } if options.rootfs.is_some() => Some("a node rootfs (a host directory)"),
            Command::AddNode { options, .. } if options.image.is_some() => Some("a node image (a host file)"),
            Command::AddNode { options, .. } if !options.args.is_empty() => {
                Some("node args (arguments to UML or QEMU on the host)")
            }
            Command::AddNode { kind: NodeKind::Nat, .. } => Some("a nat endpoint (the host's network and loopback)"),
            Command::AddNode { kind: NodeKind::Host, .. } => Some("a host interface (the host's network)"),
            Command::AddNode { options, .. } if options.plug.is_some() => Some("a plug (a socket at a host path)"),
            Command::AddNode { kind: NodeKind::Plug, .. } => Some("a plug (a socket at a host path)"),
            Command::AddNode { kind: NodeKind::Vxlan, .. } => Some("a vxlan endpoint (the host's network)"),
            Command::AddNode { options, .. } if options.vxlan.is_some() => {
                Some("a vxlan endpoint (the host's network)")
            }
            Command::StartCapture { .. } => Some("capture files (host files)"),
            Command::SaveLab { .. } | Command::LoadLab { .. } => Some("saved labs (host directories)"),
            _ => None,
        }
    }
}

impl LinkOptions {
    fn check(&self) -> Result<(), VocabError> {
        if let Some(v) = &self.vlan {
            v.check()?;
        }
        if let Some(i) = &self.impair {
            i.check()?;
        }
        Ok(())
    }
}

impl Command {
    /// The rules a command must follow whoever sent it (a script, the
    /// control socket, the GUI, a saved or imported lab), beyond the
    /// ranges its typed values carry: which options fit a node's kind,
    /// trunks without repeats, impairment parameters that go together,
    /// and bounded, well-formed words and paths. Names are checked by the
    /// topology; whether things exist, by the lab.
    pub fn check(&self) -> Result<(), VocabError> {
        match self {
            Command::AddNode { kind, options, .. } => options.check(*kind),
            Command::AddLink { options, .. } | Command::JoinLan { options, .. } => options.check(),
            Command::LinkLans { vlan: Some(v), .. } => v.check(),
            Command::SetImpairment { impair, .. } => impair.check(),
            Command::Exec { request, .. } => request.check(),
            Command::StartCapture { file, .. } => check_path("file", file),
            Command::SaveLab { dir } | Command::LoadLab { dir } => check_path("dir", dir),
            _ => Ok(()),
        }
    }
}

/// A running lab as `clonet ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabInfo {
    pub name: String,
    /// The clonet process that runs the lab.
    pub pid: u32,
    pub nodes: usize,
    /// Nodes running (the others are stopped).
    pub running: usize,
    pub lans: usize,
    /// Point-to-point links and links between LANs.
    pub links: usize,
    pub uptime_s: u64,
    #[serde(default)]
    pub script: Option<std::path::PathBuf>,
    /// Clients following the lab's changes.
    #[serde(default)]
    pub watchers: usize,
    /// What the lab says about itself (`lab_info`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub about: std::collections::BTreeMap<String, String>,
}

/// One node as reported to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub kind: NodeKind,
    pub ifaces: Vec<Iface>,
    /// Host pid of the node's init (0 while stopped).
    pub pid: i32,
    pub running: bool,
    /// Kind-specific facts, e.g. `accel=tcg` for kvm nodes.
    #[serde(default)]
    pub detail: Option<String>,
    /// Bytes the node's own disk layer takes (COW file, overlay, upper
    /// directory), not counting the base it sits on.
    #[serde(default)]
    pub disk_bytes: u64,
    /// A plug's clients and what it turned away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plug: Option<PlugReport>,
}

/// What a plug has seen: its clients now (interface and who it is), and
/// since it started, how many joined, left, were refused (a handshake
/// that was not VDE, a datagram with no address to answer, a full plug)
/// or were cut off for garbage (a stream out of step), and how many
/// frames its clients sent that the switch dropped (runts, malformed…),
/// those of clients that left included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlugReport {
    pub clients: Vec<PlugClientInfo>,
    pub joined: u64,
    pub left: u64,
    pub refused: u64,
    pub garbage: u64,
    #[serde(default)]
    pub dropped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlugClientInfo {
    pub iface: String,
    pub peer: String,
}

/// The counters of one switch port, named by what it connects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReport {
    pub node: String,
    pub iface: String,
    /// The link or LAN the port belongs to.
    pub segment: String,
    pub counters: CounterSnapshot,
}

/// One learned station of a LAN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRow {
    pub vlan: u16,
    pub mac: String,
    pub node: String,
    pub iface: String,
    pub age_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Node(NodeInfo),
    Link(LinkModel),
    /// The interface a `JoinLan` created.
    Iface {
        node: String,
        iface: String,
    },
    Uplink(super::topology::UplinkModel),
    Exec(ExecOutput),
    /// Round-trip time in microseconds, or None when unanswered.
    Ping {
        rtt_us: Option<u64>,
    },
    // Lists are fields of struct variants: an internally tagged enum
    // cannot carry a bare sequence.
    Counters {
        ports: Vec<PortReport>,
    },
    Fdb {
        rows: Vec<FdbRow>,
    },
    Topology(Topology),
    Console(crate::host::console::ConsoleTarget),
    Snapshot(SnapshotInfo),
    Snapshots {
        snapshots: Vec<SnapshotInfo>,
    },
    Capture(CaptureInfo),
    LabInfo(LabInfo),
    /// A capture ended: frames written, copies lost to a slow writer.
    CaptureStopped {
        frames: u64,
        lost: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_json() {
        let c = Command::AddLink {
            a: "a".into(),
            b: "b".into(),
            ip_a: Some("10.0.0.1/24".parse().unwrap()),
            ip_b: None,
            options: LinkOptions::default(),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""op":"add_link""#), "{json}");
        let back: Command = serde_json::from_str(&json).unwrap();
        assert!(matches!(back, Command::AddLink { ip_a: Some(_), .. }));
        let r = serde_json::to_string(&Reply::Ping { rtt_us: Some(42) }).unwrap();
        assert_eq!(r, r#"{"reply":"ping","rtt_us":42}"#);
    }

    #[test]
    fn every_reply_with_a_list_or_an_enum_goes_through_json_and_back() {
        let snapshot = SnapshotInfo { name: "s".into(), node: "a".into(), kind: NodeKind::Ns, bytes: 1, users: vec![] };
        let port =
            PortReport { node: "a".into(), iface: "eth0".into(), segment: "a--b".into(), counters: Default::default() };
        let row =
            FdbRow { vlan: 1, mac: "02:00:00:00:00:01".into(), node: "a".into(), iface: "eth0".into(), age_ms: 5 };
        let console = crate::host::console::ConsoleTarget::Socket("/run/x".into());
        for reply in [
            Reply::Counters { ports: vec![port] },
            Reply::Fdb { rows: vec![row] },
            Reply::Snapshots { snapshots: vec![snapshot] },
            Reply::Console(console),
            Reply::Done,
        ] {
            let json = serde_json::to_string(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
            let back: Reply = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(format!("{back:?}"), format!("{reply:?}"));
        }
    }
}
