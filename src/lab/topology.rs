//! The lab's topology model (sans-IO): nodes, their interfaces, point-to-
//! point links and LANs, MAC assignment and name resolution.
//!
//! The engine changes the model only after the host side of a change
//! succeeded, so the model always describes what really exists.
//!
//! Owns: names, interface numbering, MACs, addresses. Must not touch:
//! processes, fds, the switch.
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::names::{validate, NameError};
use crate::vocab::addr::{Cidr, Route};
use crate::vocab::fnv1a;
use crate::vocab::impair::LinkImpairment;
use crate::vocab::MacAddr;
use crate::vocab::{Mtu, NodeKind, NodeOptions, VlanMode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{0:?} is already used by a {1}")]
    Exists(String, &'static str),
    #[error("no node called {0:?}")]
    NoSuchNode(String),
    #[error("no LAN called {0:?}")]
    NoSuchLan(String),
    #[error("node {0:?} has no interface {1:?}")]
    NoSuchIface(String, String),
    #[error("a link needs two different nodes, got {0:?} twice")]
    SelfLink(String),
    #[error("node {0:?} already has the maximum of {1} interfaces")]
    TooManyIfaces(String, usize),
    #[error("{0} is already configured on {1}:{2}")]
    AddressExists(Cidr, String, String),
    #[error("invalid interface name {0:?}: up to 15 letters, digits, '-', '_' or '.', starting with a letter")]
    BadIfaceName(String),
    #[error("invalid link name {0:?}: up to 64 letters, digits, '_', '-', '#', '=' or '.'")]
    BadLinkName(String),
    #[error("node {0:?} already has an interface {1:?}")]
    IfaceExists(String, String),
    #[error("no link called {0:?}")]
    NoSuchLink(String),
    #[error("node {0:?} has no link to {1:?}")]
    NotLinked(String, String),
    #[error("node {1:?} already has a route to {0}")]
    RouteExists(String, String),
    #[error("LANs {0:?} and {1:?} are already connected: another link would make a loop")]
    LanLoop(String, String),
    #[error("node {0:?} is stopped (start it with .start())")]
    Stopped(String),
    #[error("MAC address {0} is not a unicast address")]
    GroupMac(MacAddr),
    #[error("MAC address {0} is already used in this lab")]
    MacInUse(MacAddr),
}

/// Most interfaces one node may have.
pub const MAX_IFACES: usize = 256;

/// An interface, named from the node's point of view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceRef {
    pub node: String,
    pub iface: String,
}

impl fmt::Display for IfaceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.iface)
    }
}

/// What an interface is plugged into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attachment {
    Link(String),
    Lan(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iface {
    pub name: String,
    pub mac: MacAddr,
    pub mtu: Mtu,
    pub addrs: Vec<Cidr>,
    pub attachment: Attachment,
    /// 802.1Q mode of a LAN port (None on point-to-point links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<VlanMode>,
    /// Impairments of a LAN port (a link keeps its own in `LinkModel`).
    #[serde(default, skip_serializing_if = "LinkImpairment::is_noop")]
    pub impair: LinkImpairment,
    /// Whether the MAC was given (`mac:`) rather than derived from the
    /// names: a saved lab then keeps it even under another lab name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mac_given: bool,
}

/// An interface about to be created: planned by `next_iface`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewIface {
    pub name: String,
    pub mac: MacAddr,
    pub mtu: Mtu,
    pub mac_given: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeModel {
    pub name: String,
    pub kind: NodeKind,
    /// What the node was made with (kept to restart it and for `:save`).
    #[serde(default)]
    pub options: NodeOptions,
    pub ifaces: Vec<Iface>,
    /// Static routes added through clonet, re-applied when it restarts.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// False between `stop()` and `start()`.
    pub running: bool,
    /// Its process exited without the lab asking (until it starts again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub died: bool,
    /// Why it died, when the node could say (an image's main program
    /// that exited, with its status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub death: Option<String>,
}

impl NodeModel {
    pub fn iface(&self, name: &str) -> Option<&Iface> {
        self.ifaces.iter().find(|i| i.name == name)
    }

    /// The first address configured on the node, in interface order.
    pub fn first_addr(&self) -> Option<IpAddr> {
        self.ifaces.iter().flat_map(|i| i.addrs.iter()).map(|c| c.addr).next()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkModel {
    pub name: String,
    pub a: IfaceRef,
    pub b: IfaceRef,
    /// Administrative state: `down()` takes carrier away on both ends.
    pub up: bool,
    #[serde(default, skip_serializing_if = "LinkImpairment::is_noop")]
    pub impair: LinkImpairment,
}

impl LinkModel {
    /// Whether this link joins nodes `x` and `y`, in either order.
    pub fn joins(&self, x: &str, y: &str) -> bool {
        (self.a.node == x && self.b.node == y) || (self.a.node == y && self.b.node == x)
    }
}

/// A link between two LANs, like a cable between two switches. As a trunk
/// it carries several VLANs tagged; as an access link it joins one VLAN of
/// each side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkModel {
    pub name: String,
    pub a: String,
    pub b: String,
    pub vlan: VlanMode,
    pub up: bool,
    #[serde(default, skip_serializing_if = "LinkImpairment::is_noop")]
    pub impair: LinkImpairment,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanModel {
    pub name: String,
    pub members: Vec<IfaceRef>,
}

/// Everything the lab has, by name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Topology {
    pub lab: String,
    pub nodes: BTreeMap<String, NodeModel>,
    pub lans: BTreeMap<String, LanModel>,
    pub links: BTreeMap<String, LinkModel>,
    /// Links between two LANs (switch-to-switch), by name.
    #[serde(default)]
    pub uplinks: BTreeMap<String, UplinkModel>,
    /// Node names in creation order (for stable listings and hosts files).
    pub order: Vec<String>,
    /// What the lab says about itself: `description`, `author`, … (`lab_info`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub about: BTreeMap<String, String>,
    #[serde(skip)]
    macs: HashSet<MacAddr>,
}

/// The most facts a lab keeps about itself, and their sizes.
pub const MAX_ABOUT: usize = 16;
pub const MAX_ABOUT_KEY: usize = 32;
pub const MAX_ABOUT_VALUE: usize = 1024;

/// Sort key that orders `eth2` before `eth10`: the name with its trailing
/// number taken as a number.
pub fn natural_key(name: &str) -> (&str, u64, &str) {
    let digits_at = name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, digits) = name.split_at(digits_at);
    (stem, digits.parse().unwrap_or(0), name)
}

impl Topology {
    pub fn new(lab: &str) -> Topology {
        Topology { lab: lab.to_string(), ..Default::default() }
    }

    /// Merges facts about the lab; an empty value removes one. Keys are
    /// lower-case words (`[a-z][a-z0-9_]*`), values one line of printable
    /// text: they are shown in terminals and web pages.
    pub fn set_about(&mut self, info: &BTreeMap<String, String>) -> Result<(), String> {
        for (k, v) in info {
            let key_ok = k.len() <= MAX_ABOUT_KEY
                && k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !key_ok {
                return Err(format!("{k:?} is not a key of lab_info (lower-case letters, digits and _)"));
            }
            if v.len() > MAX_ABOUT_VALUE || v.chars().any(char::is_control) {
                return Err(format!("lab_info {k}: one line of at most {MAX_ABOUT_VALUE} bytes"));
            }
        }
        let mut about = self.about.clone();
        for (k, v) in info {
            if v.is_empty() {
                about.remove(k);
            } else {
                about.insert(k.clone(), v.clone());
            }
        }
        if about.len() > MAX_ABOUT {
            return Err(format!("a lab keeps at most {MAX_ABOUT} facts about itself"));
        }
        self.about = about;
        Ok(())
    }

    /// What already carries `name`: nodes, LANs and links share one set of
    /// names, so a name always means one thing.
    fn name_taken(&self, name: &str) -> Option<&'static str> {
        if self.nodes.contains_key(name) {
            Some("node")
        } else if self.lans.contains_key(name) {
            Some("LAN")
        } else if self.links.contains_key(name) || self.uplinks.contains_key(name) {
            Some("link")
        } else {
            None
        }
    }

    fn check_free(&self, name: &str) -> Result<(), TopologyError> {
        match self.name_taken(name) {
            Some(kind) => Err(TopologyError::Exists(name.to_string(), kind)),
            None => Ok(()),
        }
    }

    /// Checks that a node may be added, without adding it.
    pub fn check_new_node(&self, name: &str) -> Result<(), TopologyError> {
        validate("node", name)?;
        self.check_free(name)
    }

    pub fn add_node(&mut self, name: &str, kind: NodeKind) -> Result<&NodeModel, TopologyError> {
        self.add_node_with(name, kind, NodeOptions::default())
    }

    pub fn add_node_with(
        &mut self,
        name: &str,
        kind: NodeKind,
        options: NodeOptions,
    ) -> Result<&NodeModel, TopologyError> {
        self.check_new_node(name)?;
        self.order.push(name.to_string());
        Ok(self.nodes.entry(name.to_string()).or_insert(NodeModel {
            name: name.to_string(),
            kind,
            options,
            ifaces: vec![],
            routes: vec![],
            running: true,
            died: false,
            death: None,
        }))
    }

    pub fn remove_node(&mut self, name: &str) -> Option<NodeModel> {
        let n = self.nodes.remove(name)?;
        self.order.retain(|o| o != name);
        for i in &n.ifaces {
            self.macs.remove(&i.mac);
        }
        Some(n)
    }

    pub fn check_new_lan(&self, name: &str) -> Result<(), TopologyError> {
        validate("LAN", name)?;
        self.check_free(name)
    }

    pub fn add_lan(&mut self, name: &str) -> Result<&LanModel, TopologyError> {
        self.check_new_lan(name)?;
        Ok(self.lans.entry(name.to_string()).or_insert(LanModel { name: name.to_string(), members: vec![] }))
    }

    pub fn node(&self, name: &str) -> Result<&NodeModel, TopologyError> {
        self.nodes.get(name).ok_or_else(|| TopologyError::NoSuchNode(name.to_string()))
    }

    pub fn lan(&self, name: &str) -> Result<&LanModel, TopologyError> {
        self.lans.get(name).ok_or_else(|| TopologyError::NoSuchLan(name.to_string()))
    }

    /// The name and MAC the next interface of `node` gets: `ethN` with the
    /// lowest free N, and a MAC derived from lab, node and interface names,
    /// unique within the lab.
    pub fn next_iface(&self, node: &str, mtu: Mtu) -> Result<NewIface, TopologyError> {
        self.plan_iface(node, None, None, mtu)
    }

    /// Plans interface `name` of `node`, or the next `ethN` when no name
    /// is given. A given name must be a valid, unused interface name, and
    /// a given MAC a unicast address no other interface of the lab has.
    pub fn plan_iface(
        &self,
        node: &str,
        name: Option<&str>,
        mac: Option<MacAddr>,
        mtu: Mtu,
    ) -> Result<NewIface, TopologyError> {
        let n = self.node(node)?;
        if n.ifaces.len() >= MAX_IFACES {
            return Err(TopologyError::TooManyIfaces(node.to_string(), MAX_IFACES));
        }
        let name = match name {
            Some(given) => {
                let ok = given.len() < 16
                    && given.starts_with(|c: char| c.is_ascii_alphabetic())
                    && given.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    && given != "lo";
                if !ok {
                    return Err(TopologyError::BadIfaceName(given.to_string()));
                }
                if n.iface(given).is_some() {
                    return Err(TopologyError::IfaceExists(node.to_string(), given.to_string()));
                }
                given.to_string()
            }
            None => {
                let index = (0..).find(|i| n.iface(&format!("eth{i}")).is_none()).expect("some index is free");
                format!("eth{index}")
            }
        };
        if let Some(mac) = mac {
            if mac.is_group() || mac == MacAddr([0; 6]) {
                return Err(TopologyError::GroupMac(mac));
            }
            if self.macs.contains(&mac) {
                return Err(TopologyError::MacInUse(mac));
            }
            return Ok(NewIface { name, mac, mtu, mac_given: true });
        }
        let mut salt = 0u32;
        loop {
            let h = fnv1a(&[self.lab.as_bytes(), node.as_bytes(), name.as_bytes(), &salt.to_le_bytes()]);
            let b = h.to_be_bytes();
            let mac = MacAddr::local_unicast([b[0], b[1], b[2], b[3], b[4], b[5]]);
            if !self.macs.contains(&mac) {
                return Ok(NewIface { name, mac, mtu, mac_given: false });
            }
            salt += 1;
        }
    }

    /// Adds an interface, keeping each node's list in natural name order
    /// (eth2 before eth10), whatever order they were created in.
    fn push_iface(&mut self, node: &str, new: NewIface, attachment: Attachment, vlan: Option<VlanMode>) -> IfaceRef {
        self.macs.insert(new.mac);
        let n = self.nodes.get_mut(node).expect("checked by next_iface");
        let at = n.ifaces.partition_point(|i| natural_key(&i.name) < natural_key(&new.name));
        n.ifaces.insert(
            at,
            Iface {
                name: new.name.clone(),
                mac: new.mac,
                mtu: new.mtu,
                addrs: vec![],
                attachment,
                vlan,
                impair: Default::default(),
                mac_given: new.mac_given,
            },
        );
        IfaceRef { node: node.to_string(), iface: new.name }
    }

    fn drop_iface(&mut self, r: &IfaceRef) {
        if let Some(n) = self.nodes.get_mut(&r.node) {
            if let Some(pos) = n.ifaces.iter().position(|i| i.name == r.iface) {
                let i = n.ifaces.remove(pos);
                self.macs.remove(&i.mac);
            }
        }
    }

    /// A unique link name for `a`–`b`: `a--b`, then `a--b#2`, ….
    pub fn link_name(&self, a: &str, b: &str) -> String {
        self.free_name(format!("{a}--{b}"))
    }

    /// `base`, or `base#2`, `base#3`, … whichever is not taken.
    fn free_name(&self, base: String) -> String {
        if self.name_taken(&base).is_none() {
            return base;
        }
        (2..).map(|i| format!("{base}#{i}")).find(|n| self.name_taken(n).is_none()).expect("a free name exists")
    }

    /// Checks a link name given by the user: unused, and made of letters,
    /// digits and `_ - # = .`, at most 64 characters.
    pub fn check_link_name(&self, name: &str) -> Result<(), TopologyError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '#' | '=' | '.'));
        if !ok {
            return Err(TopologyError::BadLinkName(name.to_string()));
        }
        self.check_free(name)
    }

    /// Records a point-to-point link whose interfaces were planned with
    /// `next_iface` and created on the host.
    pub fn add_link(
        &mut self,
        name: &str,
        a: (&str, NewIface),
        b: (&str, NewIface),
    ) -> Result<&LinkModel, TopologyError> {
        if a.0 == b.0 {
            return Err(TopologyError::SelfLink(a.0.to_string()));
        }
        self.node(a.0)?;
        self.node(b.0)?;
        let ra = self.push_iface(a.0, a.1, Attachment::Link(name.to_string()), None);
        let rb = self.push_iface(b.0, b.1, Attachment::Link(name.to_string()), None);
        Ok(self.links.entry(name.to_string()).or_insert(LinkModel {
            name: name.to_string(),
            a: ra,
            b: rb,
            up: true,
            impair: Default::default(),
        }))
    }

    pub fn link(&self, name: &str) -> Result<&LinkModel, TopologyError> {
        self.links.get(name).ok_or_else(|| TopologyError::NoSuchLink(name.to_string()))
    }

    /// The first link (by name) between two nodes, in either direction.
    pub fn link_between(&self, a: &str, b: &str) -> Option<&LinkModel> {
        self.links.values().find(|l| l.joins(a, b))
    }

    /// Forgets a link and its two interfaces.
    pub fn remove_link(&mut self, name: &str) -> Option<LinkModel> {
        let l = self.links.remove(name)?;
        self.drop_iface(&l.a);
        self.drop_iface(&l.b);
        Some(l)
    }

    /// The impairments of a link, a link between LANs, or a LAN port
    /// named `node:iface`.
    pub fn impairment(&self, name: &str) -> Option<&LinkImpairment> {
        if let Some(l) = self.links.get(name) {
            return Some(&l.impair);
        }
        if let Some(u) = self.uplinks.get(name) {
            return Some(&u.impair);
        }
        let (node, iface) = name.split_once(':')?;
        self.nodes.get(node)?.iface(iface).map(|i| &i.impair)
    }

    pub fn impairment_mut(&mut self, name: &str) -> Option<&mut LinkImpairment> {
        if let Some(l) = self.links.get_mut(name) {
            return Some(&mut l.impair);
        }
        if let Some(u) = self.uplinks.get_mut(name) {
            return Some(&mut u.impair);
        }
        let (node, iface) = name.split_once(':')?;
        self.nodes.get_mut(node)?.ifaces.iter_mut().find(|i| i.name == iface).map(|i| &mut i.impair)
    }

    pub fn set_link_up(&mut self, name: &str, up: bool) -> Result<(), TopologyError> {
        self.links.get_mut(name).ok_or_else(|| TopologyError::NoSuchLink(name.to_string()))?.up = up;
        Ok(())
    }

    /// Records an interface of `node` plugged into `lan`.
    pub fn add_lan_member(
        &mut self,
        lan: &str,
        node: &str,
        iface: NewIface,
        vlan: VlanMode,
    ) -> Result<IfaceRef, TopologyError> {
        self.lan(lan)?;
        self.node(node)?;
        let r = self.push_iface(node, iface, Attachment::Lan(lan.to_string()), Some(vlan));
        self.lans.get_mut(lan).expect("checked").members.push(r.clone());
        Ok(r)
    }

    /// The first interface of `node` plugged into `lan`.
    pub fn lan_port_of(&self, node: &str, lan: &str) -> Option<IfaceRef> {
        self.lans.get(lan)?.members.iter().find(|m| m.node == node).cloned()
    }

    /// Unplugs one interface from its LAN and forgets it.
    pub fn remove_lan_member(&mut self, lan: &str, member: &IfaceRef) {
        if let Some(l) = self.lans.get_mut(lan) {
            l.members.retain(|m| m != member);
        }
        self.drop_iface(member);
    }

    /// Forgets a LAN whose members were removed.
    /// Whether LANs `a` and `b` are already joined through uplinks.
    pub fn lans_connected(&self, a: &str, b: &str) -> bool {
        let mut seen = vec![a.to_string()];
        let mut todo = vec![a.to_string()];
        while let Some(l) = todo.pop() {
            if l == b {
                return true;
            }
            for u in self.uplinks.values() {
                for (x, y) in [(&u.a, &u.b), (&u.b, &u.a)] {
                    if *x == l && !seen.contains(y) {
                        seen.push(y.clone());
                        todo.push(y.clone());
                    }
                }
            }
        }
        false
    }

    /// Checks that LANs `a` and `b` may be joined: both exist, and the
    /// link would not close a loop (there is no spanning tree to break it).
    pub fn check_new_uplink(&self, a: &str, b: &str) -> Result<(), TopologyError> {
        self.lan(a)?;
        self.lan(b)?;
        if a == b || self.lans_connected(a, b) {
            return Err(TopologyError::LanLoop(a.to_string(), b.to_string()));
        }
        Ok(())
    }

    /// A unique name for a link between LANs: `a==b`.
    pub fn uplink_name(&self, a: &str, b: &str) -> String {
        self.free_name(format!("{a}=={b}"))
    }

    pub fn add_uplink(&mut self, a: &str, b: &str, vlan: VlanMode) -> Result<&UplinkModel, TopologyError> {
        self.check_new_uplink(a, b)?;
        let name = self.uplink_name(a, b);
        Ok(self.uplinks.entry(name.clone()).or_insert(UplinkModel {
            name,
            a: a.into(),
            b: b.into(),
            vlan,
            up: true,
            impair: Default::default(),
        }))
    }

    pub fn uplink_between(&self, a: &str, b: &str) -> Option<&UplinkModel> {
        self.uplinks.values().find(|u| (u.a == a && u.b == b) || (u.a == b && u.b == a))
    }

    pub fn remove_lan(&mut self, name: &str) -> Option<LanModel> {
        self.lans.remove(name)
    }

    pub fn set_running(&mut self, node: &str, running: bool) -> Result<(), TopologyError> {
        let n = self.nodes.get_mut(node).ok_or_else(|| TopologyError::NoSuchNode(node.to_string()))?;
        n.running = running;
        if running {
            n.died = false;
            n.death = None;
        }
        Ok(())
    }

    /// Records that a node's process exited on its own, and why if known.
    pub fn mark_died(&mut self, node: &str, why: Option<String>) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.died = true;
            n.death = why;
        }
    }

    pub fn add_route(&mut self, node: &str, route: Route) -> Result<(), TopologyError> {
        let n = self.nodes.get_mut(node).ok_or_else(|| TopologyError::NoSuchNode(node.to_string()))?;
        if n.routes.iter().any(|r| r.dst == route.dst) {
            return Err(TopologyError::RouteExists(route.dst.to_string(), node.to_string()));
        }
        n.routes.push(route);
        Ok(())
    }

    pub fn check_new_addr(&self, node: &str, iface: &str, cidr: Cidr) -> Result<(), TopologyError> {
        let n = self.node(node)?;
        let i = n.iface(iface).ok_or_else(|| TopologyError::NoSuchIface(node.to_string(), iface.to_string()))?;
        if i.addrs.iter().any(|a| a.addr == cidr.addr) {
            return Err(TopologyError::AddressExists(cidr, node.to_string(), iface.to_string()));
        }
        Ok(())
    }

    pub fn add_addr(&mut self, node: &str, iface: &str, cidr: Cidr) -> Result<(), TopologyError> {
        self.check_new_addr(node, iface, cidr)?;
        let n = self.nodes.get_mut(node).expect("checked");
        n.ifaces.iter_mut().find(|i| i.name == iface).expect("checked").addrs.push(cidr);
        Ok(())
    }

    /// An `/etc/hosts` that resolves every node with an address to its
    /// first address, in creation order.
    pub fn hosts_file(&self) -> String {
        let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str(&format!("# clonet lab {}\n", self.lab));
        for name in &self.order {
            if let Some(addr) = self.nodes.get(name).and_then(NodeModel::first_addr) {
                out.push_str(&format!("{addr}\t{name}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::units::test_values::vid;

    fn two_nodes() -> Topology {
        let mut t = Topology::new("lab");
        t.add_node("a", NodeKind::Ns).unwrap();
        t.add_node("b", NodeKind::Ns).unwrap();
        t
    }

    fn link(t: &mut Topology, a: &str, b: &str) -> String {
        let ia = t.next_iface(a, Mtu::ETHERNET).unwrap();
        let ib = t.next_iface(b, Mtu::ETHERNET).unwrap();
        let name = t.link_name(a, b);
        t.add_link(&name, (a, ia), (b, ib)).unwrap();
        name
    }

    #[test]
    fn interfaces_are_numbered_in_link_order() {
        let mut t = two_nodes();
        t.add_node("c", NodeKind::Ns).unwrap();
        assert_eq!(link(&mut t, "a", "b"), "a--b");
        assert_eq!(link(&mut t, "a", "c"), "a--c");
        assert_eq!(link(&mut t, "a", "b"), "a--b#2");
        let names: Vec<_> = t.node("a").unwrap().ifaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1", "eth2"]);
        assert_eq!(t.links["a--c"].b, IfaceRef { node: "c".into(), iface: "eth0".into() });
    }

    #[test]
    fn macs_are_deterministic_local_and_unique() {
        let mut t1 = two_nodes();
        let mut t2 = two_nodes();
        for t in [&mut t1, &mut t2] {
            link(t, "a", "b");
            link(t, "a", "b");
        }
        let macs =
            |t: &Topology| -> Vec<MacAddr> { t.nodes.values().flat_map(|n| n.ifaces.iter().map(|i| i.mac)).collect() };
        assert_eq!(macs(&t1), macs(&t2), "same lab, same MACs");
        let set: HashSet<_> = macs(&t1).into_iter().collect();
        assert_eq!(set.len(), 4);
        assert!(macs(&t1).iter().all(|m| m.is_local() && !m.is_group()));
        let mut other = Topology::new("lab2");
        other.add_node("a", NodeKind::Ns).unwrap();
        assert_ne!(
            other.next_iface("a", Mtu::ETHERNET).unwrap().mac,
            t1.node("a").unwrap().ifaces[0].mac,
            "the lab name is part of the MAC"
        );
    }

    #[test]
    fn names_are_validated_and_unique_across_nodes_and_lans() {
        let mut t = two_nodes();
        assert!(matches!(t.add_node("a", NodeKind::Ns), Err(TopologyError::Exists(..))));
        assert!(matches!(t.add_lan("a"), Err(TopologyError::Exists(_, "node"))));
        assert!(matches!(t.add_node("../x", NodeKind::Ns), Err(TopologyError::Name(_))));
        t.add_lan("office").unwrap();
        assert!(matches!(t.add_node("office", NodeKind::Ns), Err(TopologyError::Exists(_, "LAN"))));
    }

    #[test]
    fn self_links_are_refused() {
        let mut t = two_nodes();
        let i = t.next_iface("a", Mtu::ETHERNET).unwrap();
        assert!(matches!(t.add_link("x", ("a", i.clone()), ("a", i)), Err(TopologyError::SelfLink(_))));
    }

    #[test]
    fn lan_members_and_addresses_feed_the_hosts_file() {
        let mut t = two_nodes();
        t.add_lan("sw").unwrap();
        for n in ["b", "a"] {
            let i = t.next_iface(n, Mtu::ETHERNET).unwrap();
            t.add_lan_member("sw", n, i, VlanMode::default()).unwrap();
        }
        t.add_addr("b", "eth0", "10.1.0.2/24".parse().unwrap()).unwrap();
        t.add_addr("a", "eth0", "10.1.0.1/24".parse().unwrap()).unwrap();
        assert!(matches!(
            t.add_addr("a", "eth0", "10.1.0.1/16".parse().unwrap()),
            Err(TopologyError::AddressExists(..))
        ));
        assert!(matches!(t.add_addr("a", "eth7", "10.1.0.9/24".parse().unwrap()), Err(TopologyError::NoSuchIface(..))));
        assert_eq!(t.lans["sw"].members.len(), 2);
        let hosts = t.hosts_file();
        let pos_a = hosts.find("10.1.0.1\ta\n").unwrap();
        let pos_b = hosts.find("10.1.0.2\tb\n").unwrap();
        assert!(pos_a < pos_b, "creation order: {hosts}");
    }

    #[test]
    fn removing_a_link_frees_its_interfaces_for_reuse() {
        let mut t = two_nodes();
        let first = link(&mut t, "a", "b");
        link(&mut t, "a", "b");
        let mac0 = t.node("a").unwrap().ifaces[0].mac;
        assert_eq!(t.link_between("b", "a").unwrap().name, "a--b");
        t.remove_link(&first).unwrap();
        assert_eq!(t.node("a").unwrap().ifaces.len(), 1);
        assert_eq!(t.next_iface("a", Mtu::ETHERNET).unwrap().name, "eth0", "the lowest free name comes back");
        assert_eq!(t.next_iface("a", Mtu::ETHERNET).unwrap().mac, mac0, "and so does its MAC");
        assert_eq!(t.link_between("a", "b").unwrap().name, "a--b#2");
    }

    #[test]
    fn lan_members_can_leave() {
        let mut t = two_nodes();
        t.add_lan("sw").unwrap();
        let i = t.next_iface("a", Mtu::ETHERNET).unwrap();
        let r = t.add_lan_member("sw", "a", i, VlanMode::Access(vid(10))).unwrap();
        assert_eq!(t.node("a").unwrap().ifaces[0].vlan, Some(VlanMode::Access(vid(10))));
        assert_eq!(t.lan_port_of("a", "sw"), Some(r.clone()));
        t.remove_lan_member("sw", &r);
        assert!(t.lans["sw"].members.is_empty());
        assert!(t.node("a").unwrap().ifaces.is_empty());
    }

    #[test]
    fn nodes_lans_and_links_share_one_set_of_names() {
        let mut t = two_nodes();
        t.add_lan("a--b").unwrap();
        assert_eq!(link(&mut t, "a", "b"), "a--b#2", "the LAN holds the plain name");
        let ia = t.next_iface("a", Mtu::ETHERNET).unwrap();
        let ib = t.next_iface("b", Mtu::ETHERNET).unwrap();
        t.add_link("core1", ("a", ia), ("b", ib)).unwrap();
        assert!(matches!(t.add_lan("core1"), Err(TopologyError::Exists(_, "link"))));
        assert!(matches!(t.check_link_name("a"), Err(TopologyError::Exists(_, "node"))));
    }

    #[test]
    fn lan_uplinks_refuse_loops() {
        let mut t = Topology::new("lab");
        for l in ["s1", "s2", "s3"] {
            t.add_lan(l).unwrap();
        }
        t.add_uplink("s1", "s2", VlanMode::Trunk(vec![vid(10)])).unwrap();
        t.add_uplink("s2", "s3", VlanMode::Trunk(vec![vid(10)])).unwrap();
        assert!(matches!(t.add_uplink("s3", "s1", VlanMode::default()), Err(TopologyError::LanLoop(..))));
        assert!(matches!(t.add_uplink("s1", "s1", VlanMode::default()), Err(TopologyError::LanLoop(..))));
        assert_eq!(t.uplink_between("s2", "s1").unwrap().name, "s1==s2");
    }

    #[test]
    fn kinds_parse_with_clear_errors() {
        assert_eq!(str::parse::<NodeKind>("ns").unwrap(), NodeKind::Ns);
        assert_eq!(str::parse::<NodeKind>("kvm").unwrap(), NodeKind::Kvm);
        assert_eq!(str::parse::<NodeKind>("uml").unwrap(), NodeKind::Uml);
        assert!(str::parse::<NodeKind>("docker").unwrap_err().to_string().contains("unknown node kind"));
    }
}
