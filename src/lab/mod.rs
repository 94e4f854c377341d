//! The Lab engine: executes [`Command`]s against the topology model, the
//! node host and the switch, and owns every resource it creates.
//!
//! Every change is done host-side first and recorded in the model only
//! once it succeeded, so a failed command changes nothing. Teardown (on
//! drop, so also on error and panic) stops the switch, then the nodes, then
//! removes the run directory.
//!
//! Owns: the topology, running nodes, switch ports and segments, the run
//! directory. Must not touch: Rhai, terminal output other than warnings.
pub mod capture;
pub mod command;
pub mod control;
pub mod events;
pub mod graph;
pub mod handle;
pub mod impairment;
pub mod names;
pub mod progress;
pub mod rebuild;
pub mod rundir;
pub mod save;
pub mod snapshot;
pub mod topology;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use command::{CloneSource, FdbRow, LinkOptions, NodeInfo, NodeOptions, PingTarget, PortReport, SnapshotInfo};
pub use command::{Command, Reply};

use crate::host::{HostError, NodeHost, NodeSpec, RunningNode};
use crate::switch::counters::PortCounters;
use crate::switch::fabric::Segment;
use crate::switch::{PortId, SegmentId, Switch, SwitchError};
use crate::vocab::addr::{Cidr, CidrError, Route};
use crate::vocab::impair::LinkImpairment;
use crate::vocab::VlanMode;
use crate::vocab::{Mtu, NodeKind};
use rundir::{RunDir, RunDirError};
use topology::{Attachment, IfaceRef, NewIface, Topology, TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error(transparent)]
    Address(#[from] CidrError),
    #[error("node {0:?} has no address to reach")]
    NoAddress(String),
    #[error("VLAN options apply to LAN ports, not to point-to-point links")]
    VlanOnLink,
    /// A command that breaks the vocabulary's rules (see `Command::check`).
    #[error(transparent)]
    Invalid(#[from] crate::vocab::VocabError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("node {node:?} is a {kind} node, snapshot {snapshot:?} is of a {other} node")]
    KindMismatch { node: String, kind: NodeKind, snapshot: String, other: NodeKind },
    #[error("node {0:?} is stopped: start it, or clone one of its snapshots")]
    CloneStopped(String),
    #[error("{path}: {why}")]
    Saved { path: std::path::PathBuf, why: String },
    #[error("{0}")]
    Capture(String),
    #[error("{0:?} is a port of link {1:?}: set the link's impairments (a_to_b / b_to_a)")]
    PortOfLink(String, String),
    /// An error reported by a lab served by another process.
    #[error("{0}")]
    Remote(String),
    #[error("{0} needs the lab in this process (it is attached)")]
    NotLocal(&'static str),
}

/// What impairments apply to: a link, a link between LANs, or a LAN port.
#[derive(Clone, Debug)]
enum Wire {
    Link(String),
    Uplink(String),
    LanPort(IfaceRef),
}

/// A node's interfaces as `name mac` words, in order.
fn iface_signature(model: &topology::NodeModel) -> Vec<String> {
    model.ifaces.iter().map(|i| format!("{} {}", i.name, i.mac)).collect()
}

/// A switch port and what it is plugged into.
struct PortHandle {
    id: PortId,
    counters: Arc<PortCounters>,
    segment: String,
}

pub struct Lab {
    topo: Topology,
    host: Box<dyn NodeHost>,
    /// Running nodes (a stopped node is in the model only).
    nodes: HashMap<String, Box<dyn RunningNode>>,
    /// The terminal's progress line for big labs.
    progress: progress::BuildProgress,
    /// Which running nodes may have died since the last command.
    death_watch: crate::host::deathwatch::DeathWatch,
    /// Switch ports by (node, interface).
    ports: HashMap<(String, String), PortHandle>,
    /// Switch segments by link or LAN name.
    segments: HashMap<String, SegmentId>,
    /// The two switch ports of each link between LANs, by its name.
    uplink_ports: HashMap<String, [PortHandle; 2]>,
    switch: Option<Switch>,
    run_dir: Option<RunDir>,
    snapshots: snapshot::Snapshots,
    /// The lab-wide seed of impaired directions without their own.
    seed: Option<u64>,
    /// Every switch port, shared with the capture server.
    directory: capture::PortDirectory,
    /// The control socket's server, once the lab is shared (`control::share`).
    control: Option<control::Server>,
    /// Clients that follow the lab's changes.
    watchers: Vec<Watcher>,
    next_watcher: u64,
    started: std::time::Instant,
    file_captures: HashMap<u64, capture::FileCapture>,
    next_capture: u64,
}

/// A client following the lab's changes (see `Lab::watch`).
struct Watcher {
    id: u64,
    lines: std::sync::mpsc::SyncSender<String>,
    /// Events were lost since the last one it got.
    lagged: bool,
}

fn key(r: &IfaceRef) -> (String, String) {
    (r.node.clone(), r.iface.clone())
}

impl Lab {
    /// Creates the lab's run directory and starts its switch.
    pub fn new(name: &str, host: Box<dyn NodeHost>, run_base: &Path, script: Option<&Path>) -> Result<Lab, LabError> {
        names::validate("lab", name).map_err(TopologyError::from)?;
        let run_dir = RunDir::create(run_base, name, script, host.as_ref())?;
        let mut lab = Lab {
            topo: Topology::new(name),
            host,
            nodes: HashMap::new(),
            death_watch: Default::default(),
            progress: Default::default(),
            ports: HashMap::new(),
            segments: HashMap::new(),
            uplink_ports: HashMap::new(),
            switch: None,
            run_dir: Some(run_dir),
            snapshots: Default::default(),
            seed: None,
            directory: Default::default(),
            control: None,
            watchers: Vec::new(),
            next_watcher: 1,
            started: std::time::Instant::now(),
            file_captures: HashMap::new(),
            next_capture: 1,
        };
        lab.write_hosts()?;
        lab.switch = Some(Switch::start()?);
        Ok(lab)
    }

    /// Makes the lab a shared one and serves it on its control socket.
    pub fn serve(self) -> Result<control::SharedLab, LabError> {
        let shared = Arc::new(std::sync::Mutex::new(self));
        let server = control::Server::start(&shared).map_err(HostError::io("starting the control socket"))?;
        control::lock(&shared).control = Some(server);
        Ok(shared)
    }

    /// Whether `teardown` ran: the lab has no nodes, switch or run directory.
    pub fn is_torn_down(&self) -> bool {
        self.run_dir.is_none()
    }

    /// Every switch port, as captures name them.
    pub fn port_directory(&self) -> capture::PortDirectory {
        self.directory.clone()
    }

    /// A handle that starts and stops captures without the lab.
    pub fn capture_control(&self) -> crate::switch::CaptureControl {
        self.switch.as_ref().expect("the switch lives until teardown").capture_control()
    }

    /// Starts sending event lines to `lines`; returns the watcher's id.
    pub fn watch(&mut self, lines: std::sync::mpsc::SyncSender<String>) -> u64 {
        let id = self.next_watcher;
        self.next_watcher += 1;
        self.watchers.push(Watcher { id, lines, lagged: false });
        id
    }

    pub fn unwatch(&mut self, id: u64) {
        self.watchers.retain(|w| w.id != id);
    }

    /// Sends events to every watcher without ever waiting: a watcher whose
    /// queue is full loses them and is told so (`lagged`) once it has room.
    fn publish(&mut self, events: &[events::Event]) {
        use std::sync::mpsc::TrySendError;
        if events.is_empty() {
            return;
        }
        let lines: Vec<String> = events.iter().map(|e| serde_json::to_string(e).expect("events serialize")).collect();
        self.watchers.retain_mut(|w| {
            if w.lagged {
                match w.lines.try_send(serde_json::to_string(&events::Event::Lagged).expect("serializes")) {
                    Ok(()) => w.lagged = false,
                    Err(TrySendError::Full(_)) => return true,
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            for line in &lines {
                match w.lines.try_send(line.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        w.lagged = true;
                        return true;
                    }
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
    }

    /// What the control socket's ticker does about once a second: notice
    /// nodes that died, and send every port's counters to watchers.
    pub fn tick(&mut self) {
        let before = (!self.watchers.is_empty()).then(|| self.topo.clone());
        self.notice_dead_nodes();
        if let Some(before) = before {
            let mut changes = events::diff(&before, &self.topo);
            changes.push(events::Event::Counters { ports: self.counters() });
            self.publish(&changes);
        }
    }

    /// Name, size and age of the lab, for `clonet ls`.
    pub fn info(&self) -> command::LabInfo {
        command::LabInfo {
            name: self.topo.lab.clone(),
            pid: std::process::id(),
            nodes: self.topo.nodes.len(),
            running: self.nodes.len(),
            lans: self.topo.lans.len(),
            links: self.topo.links.len() + self.topo.uplinks.len(),
            uptime_s: self.started.elapsed().as_secs(),
            script: self.run_dir.as_ref().and_then(|r| r.state().script.clone()),
            watchers: self.watchers.len(),
        }
    }

    pub fn name(&self) -> &str {
        &self.topo.lab
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Host pid of a running node's init, 0 when stopped or unknown.
    pub fn node_pid(&self, node: &str) -> i32 {
        self.nodes.get(node).map_or(0, |n| n.pid())
    }

    /// Kind-specific facts of a running node (kvm: `accel=…`).
    pub fn node_detail(&self, node: &str) -> Option<String> {
        self.nodes.get(node).and_then(|n| n.detail())
    }

    pub fn run_dir(&self) -> Option<&Path> {
        self.run_dir.as_ref().map(RunDir::path)
    }

    fn switch(&mut self) -> &mut Switch {
        self.switch.as_mut().expect("the switch lives until teardown")
    }

    fn run_dir_mut(&mut self) -> &mut RunDir {
        self.run_dir.as_mut().expect("the run directory lives until teardown")
    }

    fn write_hosts(&mut self) -> Result<std::path::PathBuf, LabError> {
        let content = self.topo.hosts_file();
        Ok(self.run_dir_mut().write_in_place("hosts", &content)?)
    }

    /// The switch segment of a link or LAN.
    fn segment(&self, name: &str) -> Result<SegmentId, LabError> {
        self.segments.get(name).copied().ok_or_else(|| TopologyError::NoSuchLink(name.to_string()).into())
    }

    fn running(&self, node: &str) -> Result<&dyn RunningNode, LabError> {
        self.topo.node(node)?;
        self.nodes.get(node).map(|b| b.as_ref()).ok_or_else(|| TopologyError::Stopped(node.to_string()).into())
    }

    fn running_mut(&mut self, node: &str) -> Result<&mut Box<dyn RunningNode>, LabError> {
        self.topo.node(node)?;
        self.nodes.get_mut(node).ok_or_else(|| TopologyError::Stopped(node.to_string()).into())
    }

    /// Executes one command.
    pub fn execute(&mut self, cmd: Command) -> Result<Reply, LabError> {
        // Before anything else, so a bad command changes nothing.
        cmd.check()?;
        let before = (!self.watchers.is_empty()).then(|| self.topo.clone());
        let reply = self.execute_and_show(cmd);
        if let Some(before) = before {
            self.publish(&events::diff(&before, &self.topo));
        }
        reply
    }

    fn execute_and_show(&mut self, cmd: Command) -> Result<Reply, LabError> {
        self.notice_dead_nodes();
        let building = matches!(
            cmd,
            Command::AddNode { .. }
                | Command::AddLan { .. }
                | Command::AddLink { .. }
                | Command::JoinLan { .. }
                | Command::LinkLans { .. }
        );
        let reply = self.execute_command(cmd);
        if building {
            self.progress.building(self.topo.nodes.len(), self.topo.links.len());
        } else {
            self.progress.done();
        }
        reply
    }

    fn execute_command(&mut self, cmd: Command) -> Result<Reply, LabError> {
        match cmd {
            Command::AddNode { name, kind, options } => self.add_node(&name, kind, options),
            Command::DeleteNode { node } => self.delete_node(&node).map(|()| Reply::Done),
            Command::StopNode { node } => self.stop_node(&node).map(|()| Reply::Done),
            Command::StartNode { node } => self.start_node(&node).map(|()| Reply::Done),
            Command::AddLan { name } => self.add_lan(&name),
            Command::DeleteLan { name } => self.delete_lan(&name).map(|()| Reply::Done),
            Command::AddLink { a, b, ip_a, ip_b, options } => self.add_link(&a, &b, ip_a, ip_b, &options),
            Command::JoinLan { node, lan, ip, options } => self.join_lan(&node, &lan, ip, &options),
            Command::LinkLans { a, b, vlan } => self.link_lans(&a, &b, vlan.unwrap_or_default()),
            Command::DeleteLink { link } => self.delete_link(&link).map(|()| Reply::Done),
            Command::Unlink { a, b } => self.unlink(&a, &b).map(|()| Reply::Done),
            Command::SetLinkUp { link, up } => self.set_link_up(&link, up).map(|()| Reply::Done),
            Command::SetImpairment { link, impair } => self.set_impairment(&link, impair).map(|()| Reply::Done),
            Command::Seed { seed } => self.set_seed(seed).map(|()| Reply::Done),
            Command::StartCapture { target, file } => self.start_capture(&target, &file),
            Command::StopCapture { id } => self.stop_capture(id),
            Command::SetIp { node, iface, cidr } => self.set_ip(&node, &iface, cidr).map(|()| Reply::Done),
            Command::AddRoute { node, route } => self.add_route(&node, route).map(|()| Reply::Done),
            Command::Exec { node, request } => Ok(Reply::Exec(self.running_mut(&node)?.exec(&request)?)),
            Command::Ping { from, to, timeout_ms } => {
                let target = match to {
                    PingTarget::Addr(a) => a,
                    PingTarget::Node(n) => self.address_of(&n)?,
                };
                let rtt = self.running_mut(&from)?.ping(target, timeout_ms.get())?;
                Ok(Reply::Ping { rtt_us: rtt.map(|d| d.as_micros() as u64) })
            }
            Command::NodeInfo { node } => Ok(Reply::Node(self.node_info(&node)?)),
            Command::LabInfo => Ok(Reply::LabInfo(self.info())),
            Command::Console { node } => Ok(Reply::Console(self.running(&node)?.console())),
            Command::Snapshot { node, name, memory } => self.take_snapshot(&node, &name, memory),
            Command::Clone { source, name, mem_mb, cpus } => self.clone_node(source, &name, mem_mb, cpus),
            Command::Restore { node, snapshot } => self.restore(&node, &snapshot).map(|()| Reply::Done),
            Command::Snapshots => {
                let names: Vec<String> = self.snapshots.all().map(|r| r.name.clone()).collect();
                Ok(Reply::Snapshots(names.iter().map(|n| self.snapshot_info(n)).collect::<Result<_, _>>()?))
            }
            Command::DeleteSnapshot { name } => self.delete_snapshot(&name).map(|()| Reply::Done),
            Command::SaveLab { dir } => self.save_lab(&dir).map(|()| Reply::Done),
            Command::LoadLab { dir } => self.load_lab(&dir).map(|()| Reply::Done),
            Command::PauseNode { node, paused } => {
                self.running_mut(&node)?.pause(paused).map(|()| Reply::Done).map_err(Into::into)
            }
            Command::Counters => Ok(Reply::Counters(self.counters())),
            Command::Fdb { lan } => self.fdb(&lan),
            Command::Topology => Ok(Reply::Topology(self.topo.clone())),
        }
    }

    fn node_info(&self, node: &str) -> Result<NodeInfo, LabError> {
        self.node_info_with(node, |n| n.pid())
    }

    /// `node_info`, taking the pid as `pid` says: a node that is still
    /// starting may not know it without waiting.
    fn node_info_with(&self, node: &str, pid: impl Fn(&dyn RunningNode) -> i32) -> Result<NodeInfo, LabError> {
        let model = self.topo.node(node)?;
        Ok(NodeInfo {
            name: model.name.clone(),
            kind: model.kind,
            ifaces: model.ifaces.clone(),
            pid: self.nodes.get(node).map(|n| pid(n.as_ref())).unwrap_or(0),
            detail: self.nodes.get(node).and_then(|n| n.detail()),
            disk_bytes: self
                .run_dir
                .as_ref()
                .and_then(|r| self.host.disk_at_rest(model.kind, r.path(), node))
                .map_or(0, |p| crate::host::disks::bytes_on_disk(&p)),
            running: model.running,
        })
    }

    /// The address a node is reached at: its first configured address.
    pub fn address_of(&self, node: &str) -> Result<IpAddr, LabError> {
        self.topo.node(node)?.first_addr().ok_or_else(|| LabError::NoAddress(node.to_string()))
    }

    fn spec(
        &mut self,
        name: &str,
        kind: NodeKind,
        options: NodeOptions,
        disk: crate::host::DiskStart,
    ) -> Result<NodeSpec, LabError> {
        let boot = self.host.resolve_boot(name, kind, &options)?;
        let hosts_file = self.write_hosts()?;
        let run_dir = self.run_dir_mut().path().to_path_buf();
        Ok(NodeSpec {
            lab: self.topo.lab.clone(),
            name: name.to_string(),
            kind,
            hosts_file,
            run_dir,
            options,
            disk,
            boot,
        })
    }

    fn add_node(&mut self, name: &str, kind: NodeKind, options: NodeOptions) -> Result<Reply, LabError> {
        self.add_node_on(name, kind, options, crate::host::DiskStart::Fresh)
    }

    fn add_node_on(
        &mut self,
        name: &str,
        kind: NodeKind,
        options: NodeOptions,
        disk: crate::host::DiskStart,
    ) -> Result<Reply, LabError> {
        self.topo.check_new_node(name)?;
        let spec = self.spec(name, kind, options.clone(), disk)?;
        let running = self.host.start_node(&spec)?;
        let procs = running.processes();
        self.nodes.insert(name.to_string(), running);
        self.topo.add_node_with(name, kind, options)?;
        self.run_dir_mut().record_node(name, procs)?;
        // Not waiting for a node that is still starting (0: not known yet).
        Ok(Reply::Node(self.node_info_with(name, |n| n.pid_if_known().unwrap_or(0))?))
    }

    fn add_lan(&mut self, name: &str) -> Result<Reply, LabError> {
        self.topo.check_new_lan(name)?;
        let seg = self.switch().add_segment(Segment::lan())?;
        self.segments.insert(name.to_string(), seg);
        self.topo.add_lan(name)?;
        Ok(Reply::Done)
    }

    fn mtu(options: &LinkOptions) -> Result<Mtu, LabError> {
        Ok(options.mtu.unwrap_or(Mtu::ETHERNET))
    }

    /// Creates a node interface and plugs it into switch segment `seg`.
    fn plug(
        &mut self,
        node: &str,
        new: &NewIface,
        seg: SegmentId,
        segment_name: &str,
        vlan: VlanMode,
    ) -> Result<(), LabError> {
        self.host.make_room_for_interfaces(self.ports.len() + 1);
        let io = self.running_mut(node)?.add_iface(&new.name, new.mac, new.mtu.get())?;
        let gso = io.gso();
        let (id, counters) = self.switch().add_port(seg, io, new.mtu.get() as usize, gso, vlan)?;
        let lan = self.topo.lans.contains_key(segment_name);
        self.publish_port((node.to_string(), new.name.clone()), id, segment_name, lan);
        self.ports.insert(
            (node.to_string(), new.name.clone()),
            PortHandle { id, counters, segment: segment_name.to_string() },
        );
        Ok(())
    }

    /// Undoes `plug`: the switch closes the fd, so the TAP disappears.
    fn unplug(&mut self, node: &str, ifname: &str) {
        let key = (node.to_string(), ifname.to_string());
        self.withdraw_port(&key);
        if let Some(p) = self.ports.remove(&key) {
            let _ = self.switch().remove_port(p.id);
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.forget_iface(ifname);
        }
    }

    fn add_link(
        &mut self,
        a: &str,
        b: &str,
        ip_a: Option<Cidr>,
        ip_b: Option<Cidr>,
        options: &LinkOptions,
    ) -> Result<Reply, LabError> {
        if a == b {
            return Err(TopologyError::SelfLink(a.to_string()).into());
        }
        if options.vlan.is_some() {
            return Err(LabError::VlanOnLink);
        }
        let mtu = Self::mtu(options)?;
        self.running(a)?;
        self.running(b)?;
        let ia = self.topo.plan_iface(a, options.name_a.as_deref(), mtu)?;
        let ib = self.topo.plan_iface(b, options.name_b.as_deref(), mtu)?;
        let name = match &options.link_name {
            Some(n) => {
                self.topo.check_link_name(n)?;
                n.clone()
            }
            None => self.topo.link_name(a, b),
        };
        let seg = self.switch().add_segment(Segment::point_to_point())?;
        let plugged = self.plug(a, &ia, seg, &name, VlanMode::default()).and_then(|()| {
            self.plug(b, &ib, seg, &name, VlanMode::default()).inspect_err(|_| self.unplug(a, &ia.name))
        });
        if let Err(e) = plugged {
            let _ = self.switch().remove_segment(seg);
            return Err(e);
        }
        self.segments.insert(name.clone(), seg);
        let (ifa, ifb) = (ia.name.clone(), ib.name.clone());
        self.topo.add_link(&name, (a, ia), (b, ib))?;
        let addressed = ip_a
            .map_or(Ok(()), |c| self.set_ip(a, &ifa, c))
            .and_then(|()| ip_b.map_or(Ok(()), |c| self.set_ip(b, &ifb, c)))
            .and_then(|()| match &options.impair {
                Some(imp) => self.set_impairment(&name, imp.clone()),
                None => Ok(()),
            });
        if let Err(e) = addressed {
            // A failed command changes nothing: take the new link away again.
            let _ = self.delete_link(&name);
            return Err(e);
        }
        Ok(Reply::Link(self.topo.links[&name].clone()))
    }

    fn join_lan(&mut self, node: &str, lan: &str, ip: Option<Cidr>, options: &LinkOptions) -> Result<Reply, LabError> {
        let mtu = Self::mtu(options)?;
        self.topo.lan(lan)?;
        self.running(node)?;
        let new = self.topo.plan_iface(node, options.name_a.as_deref(), mtu)?;
        let vlan = options.vlan.clone().unwrap_or_default();
        let seg = self.segment(lan)?;
        self.plug(node, &new, seg, lan, vlan.clone())?;
        let ifname = new.name.clone();
        let member = self.topo.add_lan_member(lan, node, new, vlan)?;
        let configured = ip.map_or(Ok(()), |c| self.set_ip(node, &ifname, c)).and_then(|()| match &options.impair {
            Some(imp) => self.set_impairment(&member.to_string(), imp.clone()),
            None => Ok(()),
        });
        if let Err(e) = configured {
            let _ = self.leave_lan(&member, lan);
            return Err(e);
        }
        Ok(Reply::Iface { node: node.to_string(), iface: ifname })
    }

    /// Joins two LANs with an in-switch cable (two ports that hand frames
    /// to each other): like a cable between two switches.
    fn link_lans(&mut self, a: &str, b: &str, vlan: VlanMode) -> Result<Reply, LabError> {
        self.topo.check_new_uplink(a, b)?;
        let name = self.topo.uplink_name(a, b);
        let (seg_a, seg_b) = (self.segment(a)?, self.segment(b)?);
        let [(id_a, c_a), (id_b, c_b)] = self.switch().add_cable([seg_a, seg_b], vlan.clone())?;
        self.publish_port((a.to_string(), name.clone()), id_a, &name, false);
        self.publish_port((b.to_string(), name.clone()), id_b, &name, false);
        self.uplink_ports.insert(
            name.clone(),
            [
                PortHandle { id: id_a, counters: c_a, segment: name.clone() },
                PortHandle { id: id_b, counters: c_b, segment: name.clone() },
            ],
        );
        Ok(Reply::Uplink(self.topo.add_uplink(a, b, vlan)?.clone()))
    }

    fn delete_uplink(&mut self, name: &str) -> Result<(), LabError> {
        if let Some(u) = self.topo.uplinks.get(name).cloned() {
            self.withdraw_port(&(u.a.clone(), name.to_string()));
            self.withdraw_port(&(u.b.clone(), name.to_string()));
        }
        if let Some(ports) = self.uplink_ports.remove(name) {
            for p in ports {
                self.switch().remove_port(p.id)?;
            }
        }
        self.topo.uplinks.remove(name);
        Ok(())
    }

    fn delete_link(&mut self, name: &str) -> Result<(), LabError> {
        if self.topo.uplinks.contains_key(name) {
            return self.delete_uplink(name);
        }
        let link = self.topo.link(name)?.clone();
        self.unplug(&link.a.node, &link.a.iface);
        self.unplug(&link.b.node, &link.b.iface);
        if let Some(seg) = self.segments.remove(name) {
            self.switch().remove_segment(seg)?;
        }
        self.topo.remove_link(name);
        self.write_hosts()?;
        Ok(())
    }

    fn leave_lan(&mut self, member: &IfaceRef, lan: &str) -> Result<(), LabError> {
        self.unplug(&member.node, &member.iface);
        self.topo.remove_lan_member(lan, member);
        self.write_hosts()?;
        Ok(())
    }

    fn unlink(&mut self, a: &str, b: &str) -> Result<(), LabError> {
        if self.topo.lans.contains_key(a) && self.topo.lans.contains_key(b) {
            let name = self
                .topo
                .uplink_between(a, b)
                .ok_or_else(|| TopologyError::NotLinked(a.to_string(), b.to_string()))?
                .name
                .clone();
            return self.delete_uplink(&name);
        }
        for (node, lan) in [(a, b), (b, a)] {
            if self.topo.lans.contains_key(lan) {
                self.topo.node(node)?;
                let member = self
                    .topo
                    .lan_port_of(node, lan)
                    .ok_or_else(|| TopologyError::NotLinked(node.to_string(), lan.to_string()))?;
                return self.leave_lan(&member, lan);
            }
        }
        self.topo.node(a)?;
        self.topo.node(b)?;
        let name = self
            .topo
            .link_between(a, b)
            .ok_or_else(|| TopologyError::NotLinked(a.to_string(), b.to_string()))?
            .name
            .clone();
        self.delete_link(&name)
    }

    fn delete_lan(&mut self, name: &str) -> Result<(), LabError> {
        let lan = self.topo.lan(name)?.clone();
        let uplinks: Vec<String> =
            self.topo.uplinks.values().filter(|u| u.a == name || u.b == name).map(|u| u.name.clone()).collect();
        for u in uplinks {
            self.delete_uplink(&u)?;
        }
        for m in &lan.members {
            self.unplug(&m.node, &m.iface);
            self.topo.remove_lan_member(name, m);
        }
        if let Some(seg) = self.segments.remove(name) {
            self.switch().remove_segment(seg)?;
        }
        self.topo.remove_lan(name);
        self.write_hosts()?;
        Ok(())
    }

    fn delete_node(&mut self, name: &str) -> Result<(), LabError> {
        let model = self.topo.node(name)?.clone();
        for i in &model.ifaces {
            match &i.attachment {
                Attachment::Link(l) => self.delete_link(l)?,
                Attachment::Lan(l) => self.leave_lan(&IfaceRef { node: name.to_string(), iface: i.name.clone() }, l)?,
            }
        }
        if let Some(mut n) = self.nodes.remove(name) {
            if let Err(e) = n.stop() {
                eprintln!("clonet: stopping node {name}: {e}");
            }
        }
        self.topo.remove_node(name);
        self.snapshots.forget_user(name);
        self.run_dir_mut().forget_node(name)?;
        self.write_hosts()?;
        Ok(())
    }

    /// Where snapshot layers live: `<run dir>/snapshots`.
    fn snapshot_dir(&mut self) -> Result<std::path::PathBuf, LabError> {
        let dir = self.run_dir_mut().path().join("snapshots");
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io("creating the snapshot directory")(e))?;
        Ok(dir)
    }

    fn snapshot_info(&self, name: &str) -> Result<SnapshotInfo, LabError> {
        let r = self.snapshots.get(name)?;
        let bytes = crate::host::disks::bytes_on_disk(&r.layer);
        Ok(SnapshotInfo {
            name: r.name.clone(),
            node: r.node.clone(),
            kind: r.kind,
            bytes,
            users: r.users.iter().cloned().collect(),
        })
    }

    fn take_snapshot(&mut self, node: &str, name: &str, memory: bool) -> Result<Reply, LabError> {
        self.snapshots.check_new(name)?;
        let model = self.topo.node(node)?.clone();
        let dir = self.snapshot_dir()?;
        let (layer, memory) = if memory {
            let (layer, state) = self.running_mut(node)?.snapshot_memory(&dir, name)?;
            (layer, Some(state))
        } else {
            (self.running_mut(node)?.snapshot(&dir, name)?, None)
        };
        let record = snapshot::SnapshotRecord {
            name: name.to_string(),
            node: node.to_string(),
            kind: model.kind,
            options: model.options.clone(),
            layer,
            users: Default::default(),
            memory,
            ifaces: iface_signature(&model),
        };
        self.snapshots.add(record)?;
        // A kvm node goes on, on an overlay over its own snapshot.
        if model.kind == NodeKind::Kvm {
            self.snapshots.add_user(name, node)?;
        }
        Ok(Reply::Snapshot(self.snapshot_info(name)?))
    }

    fn clone_node(
        &mut self,
        source: CloneSource,
        name: &str,
        mem_mb: Option<crate::vocab::MemMb>,
        cpus: Option<crate::vocab::Cpus>,
    ) -> Result<Reply, LabError> {
        self.topo.check_new_node(name)?;
        let snap = match source {
            CloneSource::Snapshot(s) => s,
            CloneSource::Node(n) => {
                if !self.topo.node(&n)?.running {
                    return Err(LabError::CloneStopped(n));
                }
                // Snapshot the running node implicitly, under a free name.
                let base = format!("{n}-for-{name}");
                let auto = (1..)
                    .map(|i| if i == 1 { base.clone() } else { format!("{base}-{i}") })
                    .find(|s| self.snapshots.check_new(s).is_ok())
                    .ok_or_else(|| snapshot::SnapshotError::Exists(base.clone()))?;
                self.take_snapshot(&n, &auto, false)?;
                auto
            }
        };
        let r = self.snapshots.get(&snap)?.clone();
        let mut options = r.options.clone();
        options.mem_mb = mem_mb.or(options.mem_mb);
        options.cpus = cpus.or(options.cpus);
        let reply = self.add_node_on(name, r.kind, options, crate::host::DiskStart::From(r.layer.clone()))?;
        self.snapshots.add_user(&snap, name)?;
        Ok(reply)
    }

    fn restore(&mut self, node: &str, snap: &str) -> Result<(), LabError> {
        let r = self.snapshots.get(snap)?.clone();
        let kind = self.topo.node(node)?.kind;
        if kind != r.kind {
            return Err(LabError::KindMismatch { node: node.into(), kind, snapshot: snap.into(), other: r.kind });
        }
        if r.memory.is_some() {
            // Resume in place: the same machine, with the NICs it had then.
            if r.node != node || iface_signature(self.topo.node(node)?) != r.ifaces {
                return Err(LabError::Saved {
                    path: r.layer.clone(),
                    why: format!("resuming snapshot {snap:?} needs node {:?} with the interfaces it had then", r.node),
                });
            }
            self.running_mut(node)?.restore_memory(snap)?;
            return Ok(());
        }
        if self.topo.node(node)?.running {
            self.stop_node(node)?;
        }
        self.start_node_on(node, crate::host::DiskStart::From(r.layer.clone()))?;
        self.snapshots.forget_user(node);
        self.snapshots.add_user(snap, node)?;
        Ok(())
    }

    /// Writes the topology and every node's disk state to `dir` (which
    /// must not exist, or be empty): running nodes through a snapshot,
    /// stopped ones from their disk at rest.
    fn save_lab(&mut self, dir: &std::path::Path) -> Result<(), LabError> {
        let bad = |why: String| LabError::Saved { path: dir.to_path_buf(), why };
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(bad("already exists and is not empty".into()));
        }
        let disks_dir = dir.join("disks");
        std::fs::create_dir_all(&disks_dir).map_err(|e| bad(e.to_string()))?;
        let run_dir = self.run_dir_mut().path().to_path_buf();
        let scratch = self.snapshot_dir()?.join(".save");
        std::fs::create_dir_all(&scratch).map_err(|e| bad(e.to_string()))?;
        let mut disks = std::collections::BTreeMap::new();
        for name in self.topo.order.clone() {
            let kind = self.topo.node(&name)?.kind;
            let (layer, temporary) = match self.nodes.get_mut(&name) {
                Some(n) => (n.snapshot(&scratch, &format!(".save-{name}"))?, kind != NodeKind::Kvm),
                None => match self.host.disk_at_rest(kind, &run_dir, &name) {
                    Some(p) => (p, false),
                    None => continue,
                },
            };
            let saved = self.host.export_disk(kind, &layer, &disks_dir, &name);
            // A kvm node goes on over its snapshot: that one stays.
            if temporary {
                let _ = if layer.is_dir() { std::fs::remove_dir_all(&layer) } else { std::fs::remove_file(&layer) };
            }
            disks.insert(name.clone(), format!("disks/{}", saved?));
        }
        let saved = rebuild::SavedLab { topology: self.topo.clone(), disks };
        let json = serde_json::to_vec_pretty(&saved).expect("serializes");
        std::fs::write(dir.join(rebuild::SAVED_LAB_FILE), json).map_err(|e| bad(e.to_string()))?;
        Ok(())
    }

    /// Rebuilds a saved lab into this one: its nodes on their saved disks,
    /// then every LAN, link, address, route and state.
    fn load_lab(&mut self, dir: &std::path::Path) -> Result<(), LabError> {
        let bad = |why: String| LabError::Saved { path: dir.to_path_buf(), why };
        let text =
            std::fs::read(dir.join(rebuild::SAVED_LAB_FILE)).map_err(|e| bad(format!("not a saved lab ({e})")))?;
        let saved: rebuild::SavedLab = serde_json::from_slice(&text).map_err(|e| bad(format!("bad lab.json: {e}")))?;
        let run_dir = self.run_dir_mut().path().to_path_buf();
        for name in &saved.topology.order {
            let model = &saved.topology.nodes[name];
            let disk = match saved.disks.get(name) {
                Some(rel) if !rel.contains("..") => {
                    let layer = self.host.import_disk(model.kind, &dir.join(rel), &run_dir, name)?;
                    crate::host::DiskStart::From(layer)
                }
                Some(rel) => return Err(bad(format!("bad disk path {rel:?}"))),
                None => crate::host::DiskStart::Fresh,
            };
            self.add_node_on(name, model.kind, model.options.clone(), disk)?;
        }
        for cmd in rebuild::wiring(&saved.topology) {
            self.execute(cmd)?;
        }
        Ok(())
    }

    fn delete_snapshot(&mut self, name: &str) -> Result<(), LabError> {
        let r = self.snapshots.remove(name)?;
        let _ = if r.layer.is_dir() { std::fs::remove_dir_all(&r.layer) } else { std::fs::remove_file(&r.layer) };
        if r.memory.is_some() {
            // The state lives inside the node's overlay (a qcow2 internal
            // snapshot): drop it there, if the node still runs on it.
            if let Some(n) = self.nodes.get_mut(&r.node) {
                let _ = n.forget_memory(name);
            }
        }
        Ok(())
    }

    /// Finds nodes whose process died behind the lab's back (a crash, an
    /// OOM kill, a `kill -9`), says so, and marks them stopped: their ports
    /// are unplugged, their peers lose carrier, everything else goes on.
    /// `start()` brings such a node back.
    fn notice_dead_nodes(&mut self) {
        let running = self.nodes.iter().map(|(name, n)| (name.as_str(), n.processes()));
        let suspects = self.death_watch.suspects(running);
        let dead: Vec<String> =
            suspects.into_iter().filter(|name| self.nodes.get(name).is_some_and(|n| !n.alive())).collect();
        for name in dead {
            eprintln!("clonet: node {name} died (its process exited); it is marked stopped");
            self.topo.mark_died(&name);
            let _ = self.stop_node(&name);
        }
    }

    /// Makes the ports of a link carry frames only while the link is up and
    /// both its nodes run; a stopped node's peer sees its carrier drop.
    fn apply_link_state(&mut self, name: &str) -> Result<(), LabError> {
        let link = self.topo.link(name)?.clone();
        let both_running =
            [&link.a.node, &link.b.node].iter().all(|n| self.topo.nodes.get(*n).is_some_and(|m| m.running));
        let up = link.up && both_running;
        for end in [&link.a, &link.b] {
            if let Some(id) = self.ports.get(&key(end)).map(|p| p.id) {
                self.switch().set_port_up(id, up)?;
            }
            // Machines whose NIC is not a TAP learn of the cable through
            // their own means (kvm: QMP set_link).
            let routes = self.topo.nodes.get(&end.node).map(|m| m.routes.clone()).unwrap_or_default();
            let fresh = match self.nodes.get_mut(&end.node) {
                Some(n) => n.set_link(&end.iface, up, &routes)?,
                None => None,
            };
            if let Some(io) = fresh {
                self.replace_port(end, io)?;
            }
        }
        Ok(())
    }

    fn set_link_up(&mut self, name: &str, up: bool) -> Result<(), LabError> {
        if self.topo.uplinks.contains_key(name) {
            let ids: Vec<PortId> = self.uplink_ports.get(name).map_or(vec![], |p| p.iter().map(|h| h.id).collect());
            for id in ids {
                self.switch().set_port_up(id, up)?;
            }
            self.topo.uplinks.get_mut(name).expect("checked").up = up;
            return Ok(());
        }
        let was_up = self.topo.link(name)?.up;
        self.topo.set_link_up(name, up)?;
        if let Err(e) = self.apply_link_state(name) {
            // Leave the model and the ports as they were.
            self.topo.set_link_up(name, was_up)?;
            let _ = self.apply_link_state(name);
            return Err(e);
        }
        Ok(())
    }

    fn links_of(&self, node: &str) -> Vec<String> {
        self.topo.nodes.get(node).map_or(vec![], |n| {
            n.ifaces
                .iter()
                .filter_map(|i| match &i.attachment {
                    Attachment::Link(l) => Some(l.clone()),
                    Attachment::Lan(_) => None,
                })
                .collect()
        })
    }

    fn stop_node(&mut self, name: &str) -> Result<(), LabError> {
        self.running(name)?;
        let ifaces: Vec<String> = self.topo.node(name)?.ifaces.iter().map(|i| i.name.clone()).collect();
        for i in &ifaces {
            self.unplug(name, i);
        }
        if let Some(mut n) = self.nodes.remove(name) {
            // Whatever stop says, the node is gone from the lab's point of view.
            if let Err(e) = n.stop() {
                eprintln!("clonet: stopping node {name}: {e}");
            }
        }
        self.topo.set_running(name, false)?;
        self.run_dir_mut().forget_node(name)?;
        for l in self.links_of(name) {
            self.apply_link_state(&l)?;
        }
        Ok(())
    }

    fn start_node(&mut self, name: &str) -> Result<(), LabError> {
        self.start_node_on(name, crate::host::DiskStart::Keep)
    }

    fn start_node_on(&mut self, name: &str, disk: crate::host::DiskStart) -> Result<(), LabError> {
        let model = self.topo.node(name)?.clone();
        if model.running {
            return Ok(());
        }
        let spec = self.spec(name, model.kind, model.options.clone(), disk)?;
        let running = self.host.start_node(&spec)?;
        let procs = running.processes();
        self.nodes.insert(name.to_string(), running);
        // From here on the node runs: on a failure below, stop it again so
        // the model (stopped) stays true.
        let restored = self.restore_node(&model);
        if let Err(e) = restored {
            let ifaces: Vec<String> = model.ifaces.iter().map(|i| i.name.clone()).collect();
            for i in &ifaces {
                self.unplug(name, i);
            }
            if let Some(mut n) = self.nodes.remove(name) {
                let _ = n.stop();
            }
            return Err(e);
        }
        self.topo.set_running(name, true)?;
        self.run_dir_mut().record_node(name, procs)?;
        for l in self.links_of(name) {
            self.apply_link_state(&l)?;
        }
        // Its new ports start plain: give them their impairments again.
        for i in &model.ifaces {
            let wire = Self::wire_of(name, i);
            if !self.impairment_of(&wire).is_noop() {
                self.apply_impairment(&wire)?;
            }
        }
        Ok(())
    }

    /// Re-creates a restarted node's interfaces, addresses and routes.
    fn restore_node(&mut self, model: &topology::NodeModel) -> Result<(), LabError> {
        for i in &model.ifaces {
            let seg_name = match &i.attachment {
                Attachment::Link(l) | Attachment::Lan(l) => l.clone(),
            };
            let seg = self.segment(&seg_name)?;
            let new = NewIface { name: i.name.clone(), mac: i.mac, mtu: i.mtu };
            self.plug(&model.name, &new, seg, &seg_name, i.vlan.clone().unwrap_or_default())?;
            let node = self.running_mut(&model.name)?;
            for a in &i.addrs {
                node.add_addr(&i.name, *a)?;
            }
        }
        let node = self.running_mut(&model.name)?;
        for r in &model.routes {
            node.add_route(r)?;
        }
        Ok(())
    }

    fn set_ip(&mut self, node: &str, iface: &str, cidr: Cidr) -> Result<(), LabError> {
        self.topo.check_new_addr(node, iface, cidr)?;
        self.running_mut(node)?.add_addr(iface, cidr)?;
        self.topo.add_addr(node, iface, cidr)?;
        self.write_hosts()?;
        Ok(())
    }

    fn add_route(&mut self, node: &str, route: Route) -> Result<(), LabError> {
        let model = self.topo.node(node)?;
        if model.routes.iter().any(|r| r.dst == route.dst) {
            return Err(TopologyError::RouteExists(route.dst.to_string(), node.to_string()).into());
        }
        if let Some(dev) = &route.dev {
            model.iface(dev).ok_or_else(|| TopologyError::NoSuchIface(node.to_string(), dev.clone()))?;
        }
        self.running_mut(node)?.add_route(&route)?;
        self.topo.add_route(node, route)?;
        Ok(())
    }

    /// Swaps the switch port of `end` for `io` (a NIC that reconnected),
    /// keeping its counters and impairments.
    fn replace_port(&mut self, end: &IfaceRef, io: Box<dyn crate::switch::port::PortIo>) -> Result<(), LabError> {
        let Some(old) = self.ports.remove(&key(end)) else { return Ok(()) };
        let _ = self.switch().remove_port(old.id);
        let iface = self.topo.node(&end.node)?.iface(&end.iface).cloned();
        let Some(iface) = iface else { return Ok(()) };
        let seg = self.segment(&old.segment)?;
        let gso = io.gso();
        let vlan = iface.vlan.clone().unwrap_or_default();
        let id = self.switch().readd_port(seg, io, iface.mtu.get() as usize, gso, vlan, old.counters.clone())?;
        let lan = self.topo.lans.contains_key(&old.segment);
        self.publish_port(key(end), id, &old.segment, lan);
        let segment = old.segment.clone();
        self.ports.insert(key(end), PortHandle { id, counters: old.counters, segment });
        let wire = Self::wire_of(&end.node, &iface);
        if !self.impairment_of(&wire).is_noop() {
            self.apply_impairment(&wire)?;
        }
        Ok(())
    }

    fn publish_port(&self, key: (String, String), id: PortId, segment: &str, lan: bool) {
        if let Ok(mut d) = self.directory.lock() {
            d.insert(key, capture::PortEntry { id, segment: segment.to_string(), lan });
        }
    }

    fn withdraw_port(&self, key: &(String, String)) {
        if let Ok(mut d) = self.directory.lock() {
            d.remove(key);
        }
    }

    /// What a name given to `set`/`SetImpairment` is.
    fn wire(&self, name: &str) -> Result<Wire, LabError> {
        if self.topo.links.contains_key(name) {
            return Ok(Wire::Link(name.to_string()));
        }
        if self.topo.uplinks.contains_key(name) {
            return Ok(Wire::Uplink(name.to_string()));
        }
        if let Some((node, iface)) = name.split_once(':') {
            let model = self.topo.node(node)?;
            let i = model.iface(iface).ok_or_else(|| TopologyError::NoSuchIface(node.into(), iface.into()))?;
            return match &i.attachment {
                Attachment::Lan(_) => Ok(Wire::LanPort(IfaceRef { node: node.into(), iface: iface.into() })),
                Attachment::Link(l) => Err(LabError::PortOfLink(name.to_string(), l.clone())),
            };
        }
        Err(TopologyError::NoSuchLink(name.to_string()).into())
    }

    fn impairment_of(&self, wire: &Wire) -> LinkImpairment {
        self.topo.impairment(&Self::wire_name(wire)).cloned().unwrap_or_default()
    }

    fn store_impairment(&mut self, wire: &Wire, imp: LinkImpairment) {
        if let Some(slot) = self.topo.impairment_mut(&Self::wire_name(wire)) {
            *slot = imp;
        }
    }

    /// The wire an interface of `node` is plugged into.
    fn wire_of(node: &str, iface: &topology::Iface) -> Wire {
        match &iface.attachment {
            Attachment::Link(l) => Wire::Link(l.clone()),
            Attachment::Lan(_) => Wire::LanPort(IfaceRef { node: node.to_string(), iface: iface.name.clone() }),
        }
    }

    fn wire_name(wire: &Wire) -> String {
        match wire {
            Wire::Link(n) | Wire::Uplink(n) => n.clone(),
            Wire::LanPort(r) => r.to_string(),
        }
    }

    /// Where each direction (a→b, b→a) of a wire is impaired: a link's
    /// direction towards b leaves the switch through b's port; a LAN
    /// port's node-to-LAN direction enters through it.
    fn impair_points(&self, wire: &Wire) -> [Option<(PortId, crate::switch::delay::Stage)>; 2] {
        use crate::switch::delay::Stage;
        let port = |r: &IfaceRef| self.ports.get(&key(r)).map(|p| p.id);
        match wire {
            Wire::Link(l) => match self.topo.links.get(l) {
                Some(m) => [port(&m.b).map(|p| (p, Stage::Egress)), port(&m.a).map(|p| (p, Stage::Egress))],
                None => [None, None],
            },
            Wire::Uplink(u) => match self.uplink_ports.get(u) {
                // Port 0 sits in LAN a: frames for b leave through it.
                Some([pa, pb]) => [Some((pa.id, Stage::Egress)), Some((pb.id, Stage::Egress))],
                None => [None, None],
            },
            Wire::LanPort(r) => [port(r).map(|p| (p, Stage::Ingress)), port(r).map(|p| (p, Stage::Egress))],
        }
    }

    /// The seed of one direction: the wire's own, else the lab's (mixed
    /// with the wire's name), else a fresh random one.
    fn direction_seed(&self, imp: &LinkImpairment, name: &str, direction: u8) -> u64 {
        match imp.seed.map(|s| (s, "")).or(self.seed.map(|s| (s, name))) {
            Some((seed, name)) => crate::vocab::fnv1a(&[&seed.to_le_bytes(), name.as_bytes(), &[direction]]),
            None => {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u8(direction);
                h.finish()
            }
        }
    }

    /// Hands a wire's impairments (from the model) to the switch.
    fn apply_impairment(&mut self, wire: &Wire) -> Result<(), LabError> {
        let imp = self.impairment_of(wire);
        let name = Self::wire_name(wire);
        let points = self.impair_points(wire);
        for (dir, point) in points.into_iter().enumerate() {
            let Some((port, stage)) = point else { continue };
            let params = if dir == 0 { &imp.a_to_b } else { &imp.b_to_a };
            let seed = self.direction_seed(&imp, &name, dir as u8);
            self.switch().set_impairment(port, stage, Some((params.clone(), seed)))?;
        }
        Ok(())
    }

    fn set_impairment(&mut self, name: &str, imp: LinkImpairment) -> Result<(), LabError> {
        let wire = self.wire(name)?;
        let old = self.impairment_of(&wire);
        self.store_impairment(&wire, imp);
        if let Err(e) = self.apply_impairment(&wire) {
            self.store_impairment(&wire, old);
            let _ = self.apply_impairment(&wire);
            return Err(e);
        }
        Ok(())
    }

    fn set_seed(&mut self, seed: u64) -> Result<(), LabError> {
        self.seed = Some(seed);
        let mut wires: Vec<Wire> = self.topo.links.keys().map(|l| Wire::Link(l.clone())).collect();
        wires.extend(self.topo.uplinks.keys().map(|u| Wire::Uplink(u.clone())));
        for n in self.topo.nodes.values() {
            for i in n.ifaces.iter().filter(|i| matches!(i.attachment, Attachment::Lan(_))) {
                wires.push(Self::wire_of(&n.name, i));
            }
        }
        for w in wires {
            if !self.impairment_of(&w).is_noop() {
                self.apply_impairment(&w)?;
            }
        }
        Ok(())
    }

    /// Opens a feed of the frames a target names, with each frame's label.
    pub fn open_capture(&mut self, target: &str) -> Result<(crate::switch::CaptureFeed, capture::Labels), LabError> {
        let taps = {
            let d = self.directory.lock().map_err(|_| LabError::Capture("lab state poisoned".into()))?;
            capture::resolve(&d, target).map_err(LabError::Capture)?
        };
        let feed = self.switch().start_capture(taps.iter().map(|t| t.point).collect())?;
        Ok((feed, capture::labels(&taps)))
    }

    pub fn close_capture(&mut self, id: crate::switch::CaptureId) -> Result<(), LabError> {
        Ok(self.switch().stop_capture(id)?)
    }

    fn start_capture(&mut self, target: &str, file: &Path) -> Result<Reply, LabError> {
        let (feed, _) = self.open_capture(target)?;
        let feed_id = feed.id;
        let cap = match capture::FileCapture::start(target, file, feed) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.close_capture(feed_id);
                return Err(LabError::Capture(format!("cannot write {}: {e}", file.display())));
            }
        };
        let id = self.next_capture;
        self.next_capture += 1;
        let info = command::CaptureInfo { id, target: target.to_string(), file: cap.file.clone() };
        self.file_captures.insert(id, cap);
        Ok(Reply::Capture(info))
    }

    fn stop_capture(&mut self, id: u64) -> Result<Reply, LabError> {
        let cap =
            self.file_captures.remove(&id).ok_or_else(|| LabError::Capture(format!("no capture {id} is running")))?;
        self.close_capture(cap.feed_id)?;
        let frames = cap
            .writer
            .join()
            .map_err(|_| LabError::Capture("the capture writer failed".into()))?
            .map_err(|e| LabError::Capture(format!("writing {}: {e}", cap.file.display())))?;
        Ok(Reply::CaptureStopped { frames, lost: cap.lost.load(std::sync::atomic::Ordering::Relaxed) })
    }

    /// Counters of every port, in node creation and interface order.
    pub fn counters(&self) -> Vec<PortReport> {
        let mut out = Vec::new();
        for name in &self.topo.order {
            let Some(node) = self.topo.nodes.get(name) else { continue };
            for i in &node.ifaces {
                if let Some(p) = self.ports.get(&(name.clone(), i.name.clone())) {
                    out.push(PortReport {
                        node: name.clone(),
                        iface: i.name.clone(),
                        segment: p.segment.clone(),
                        counters: p.counters.snapshot(),
                    });
                }
            }
        }
        for u in self.topo.uplinks.values() {
            if let Some(ports) = self.uplink_ports.get(&u.name) {
                for (lan, p) in [&u.a, &u.b].into_iter().zip(ports) {
                    out.push(PortReport {
                        node: lan.clone(),
                        iface: u.name.clone(),
                        segment: u.name.clone(),
                        counters: p.counters.snapshot(),
                    });
                }
            }
        }
        out
    }

    fn fdb(&mut self, lan: &str) -> Result<Reply, LabError> {
        self.topo.lan(lan)?;
        let seg = self.segment(lan)?;
        let entries = self.switch().fdb(seg)?;
        let by_port: HashMap<PortId, &(String, String)> = self.ports.iter().map(|(k, p)| (p.id, k)).collect();
        let rows = entries
            .into_iter()
            .map(|e| {
                let (node, iface) = by_port.get(&e.port).map(|k| (k.0.clone(), k.1.clone())).unwrap_or_default();
                FdbRow { vlan: e.vid, mac: e.mac.to_string(), node, iface, age_ms: e.age.as_millis() as u64 }
            })
            .collect();
        Ok(Reply::Fdb(rows))
    }

    /// Stops everything the lab created. Safe to call more than once.
    pub fn teardown(&mut self) {
        if let Some(mut sw) = self.switch.take() {
            sw.shutdown();
        }
        // The switch is gone, so every capture feed has ended: let the
        // writers finish their files.
        for (_, c) in self.file_captures.drain() {
            let _ = c.writer.join();
        }
        if let Ok(mut d) = self.directory.lock() {
            d.clear();
        }
        self.ports.clear();
        self.uplink_ports.clear();
        let mut names: Vec<String> = self.topo.order.clone();
        names.extend(self.nodes.keys().filter(|k| !self.topo.order.contains(k)).cloned().collect::<Vec<_>>());
        self.progress.step(self.nodes.len(), format!("tearing down {} nodes", self.nodes.len()));
        for node in self.nodes.values_mut() {
            node.begin_stop();
        }
        for name in names {
            if let Some(mut node) = self.nodes.remove(&name) {
                if let Err(e) = node.stop() {
                    eprintln!("clonet: stopping node {name}: {e}");
                }
                if let Some(rd) = self.run_dir.as_mut() {
                    let _ = rd.forget_node(&name);
                }
            }
        }
        self.progress.done();
        // Last: clients wait (the lab is locked) until now, and the
        // server's executor thread started some of the nodes stopped above.
        if let Some(mut server) = self.control.take() {
            server.shutdown();
        }
        self.watchers.clear();
        if let Some(rd) = self.run_dir.take() {
            self.host.release(rd.path());
            if let Err(e) = rd.remove() {
                eprintln!("clonet: removing run directory: {e}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::vocab::units::test_values::{delay, limit, p as prob, rate};
    #[allow(unused_imports)]
    use crate::vocab::VlanId;
    use std::time::Duration;
    #[allow(dead_code)]
    fn vid(v: u16) -> VlanId {
        VlanId::new(v).unwrap()
    }
    use crate::host::fake::FakeHost;
    use crate::switch::frame::VNET_HDR_LEN;

    fn lab(host: &FakeHost) -> (Lab, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Lab::new("t", Box::new(host.clone()), dir.path(), None).unwrap(), dir)
    }

    #[test]
    fn builds_a_link_and_frames_cross_the_real_switch() {
        let host = FakeHost::default();
        let (mut lab, dir) = lab(&host);
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns })
            .unwrap();
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: "b".into(), kind: NodeKind::Ns })
            .unwrap();
        let reply = lab
            .execute(Command::AddLink {
                a: "a".into(),
                b: "b".into(),
                ip_a: Some("10.0.0.1/24".parse().unwrap()),
                ip_b: Some("10.0.0.2/24".parse().unwrap()),
                options: LinkOptions::default(),
            })
            .unwrap();
        assert!(matches!(reply, Reply::Link(ref l) if l.name == "a--b"));
        let calls = host.calls();
        assert_eq!(calls[0], "start a");
        assert!(calls.iter().any(|c| c == "addr a:eth0 10.0.0.1/24"), "{calls:?}");
        let hosts = std::fs::read_to_string(dir.path().join("t/hosts")).unwrap();
        assert!(hosts.contains("10.0.0.2\tb"), "{hosts}");

        let wa = host.wire("a", "eth0").unwrap();
        let wb = host.wire("b", "eth0").unwrap();
        wb.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        frame.resize(VNET_HDR_LEN + 60, 0);
        wa.send(&frame).unwrap();
        let mut buf = [0u8; 2048];
        assert_eq!(wb.recv(&mut buf).unwrap(), frame.len());
        // Counters move just after the write the peer already read.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while lab.counters()[1].counters.tx_frames == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let c = lab.counters();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].counters.rx_frames, c[1].counters.tx_frames), (1, 1));
        assert_eq!(c[0].segment, "a--b");
    }

    #[test]
    fn a_trunk_towards_a_node_carries_tagged_frames() {
        let host = FakeHost::default();
        let (mut lab, _dir) = lab(&host);
        lab.execute(Command::AddLan { name: "sw".into() }).unwrap();
        for (n, vlan) in [
            ("h", VlanMode::Access(vid(10))),
            ("r", VlanMode::Trunk(vec![vid(10), vid(20)])),
            ("g", VlanMode::Access(vid(20))),
        ] {
            lab.execute(Command::AddNode { options: NodeOptions::default(), name: n.into(), kind: NodeKind::Ns })
                .unwrap();
            let options = LinkOptions { vlan: Some(vlan), ..Default::default() };
            lab.execute(Command::JoinLan { node: n.into(), lan: "sw".into(), ip: None, options }).unwrap();
        }
        let wire = |n: &str| {
            let w = host.wire(n, "eth0").unwrap();
            w.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            w
        };
        let (h, r, g) = (wire("h"), wire("r"), wire("g"));
        let mut buf = [0u8; 2048];
        // Untagged from the VLAN 10 access port: tagged 10 on the trunk.
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        frame.resize(VNET_HDR_LEN + 60, 0x11);
        h.send(&frame).unwrap();
        let n = r.recv(&mut buf).unwrap();
        assert_eq!(n, frame.len() + 4);
        let eth = &buf[VNET_HDR_LEN..n];
        assert_eq!(&eth[12..16], &[0x81, 0x00, 0x00, 10], "802.1Q tag with VID 10");
        assert_eq!(&eth[16..18], &[0x08, 0x06], "the original EtherType follows the tag");
        assert!(g.recv(&mut buf).is_err(), "VLAN 20 sees nothing");
        // Tagged 20 from the trunk: untagged on the VLAN 20 access port only.
        let mut tagged = vec![0u8; VNET_HDR_LEN];
        tagged.extend_from_slice(&[0xff; 6]);
        tagged.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00, 20, 0x08, 0x06]);
        tagged.resize(VNET_HDR_LEN + 64, 0x22);
        r.send(&tagged).unwrap();
        let n = g.recv(&mut buf).unwrap();
        assert_eq!(n, tagged.len() - 4);
        assert_eq!(&buf[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14], &[0x08, 0x06]);
        assert!(h.recv(&mut buf).is_err(), "VLAN 10 sees nothing");
        let fdb = match lab.execute(Command::Fdb { lan: "sw".into() }).unwrap() {
            Reply::Fdb(rows) => rows,
            _ => unreachable!(),
        };
        assert_eq!(fdb.iter().map(|r| (r.node.as_str(), r.vlan)).collect::<Vec<_>>(), vec![("h", 10), ("r", 20)]);
    }

    #[test]
    fn a_link_whose_address_fails_is_taken_away_again() {
        let host = FakeHost::default();
        let (mut lab, _dir) = lab(&host);
        for n in ["a", "b"] {
            lab.execute(Command::AddNode { options: NodeOptions::default(), name: n.into(), kind: NodeKind::Ns })
                .unwrap();
        }
        lab.execute(Command::AddLan { name: "sw".into() }).unwrap();
        let refused: Cidr = "10.66.0.1/24".parse().unwrap();
        host.fail_addr(refused);
        let before = lab.topology().clone();
        let link = Command::AddLink {
            a: "a".into(),
            b: "b".into(),
            ip_a: None,
            ip_b: Some(refused),
            options: LinkOptions::default(),
        };
        assert!(lab.execute(link).is_err());
        let join =
            Command::JoinLan { node: "a".into(), lan: "sw".into(), ip: Some(refused), options: LinkOptions::default() };
        assert!(lab.execute(join).is_err());
        assert_eq!(lab.topology().links, before.links);
        assert_eq!(lab.topology().lans, before.lans);
        assert_eq!(lab.topology().nodes, before.nodes);
        assert!(lab.counters().is_empty(), "no switch port left behind");
    }

    #[test]
    fn failed_commands_change_nothing() {
        let host = FakeHost::default();
        let (mut lab, _dir) = lab(&host);
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns })
            .unwrap();
        assert!(lab
            .execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns })
            .is_err());
        assert!(lab
            .execute(Command::AddNode { options: NodeOptions::default(), name: "x/y".into(), kind: NodeKind::Ns })
            .is_err());
        let e = lab
            .execute(Command::JoinLan {
                node: "a".into(),
                lan: "nolan".into(),
                ip: None,
                options: LinkOptions::default(),
            })
            .unwrap_err();
        assert!(e.to_string().contains("no LAN called \"nolan\""), "{e}");
        let e = lab
            .execute(Command::AddLink {
                a: "a".into(),
                b: "a".into(),
                ip_a: None,
                ip_b: None,
                options: LinkOptions::default(),
            })
            .unwrap_err();
        assert!(matches!(e, LabError::Topology(TopologyError::SelfLink(_))));
        assert_eq!(host.calls(), vec!["start a".to_string()]);
        assert!(lab.topology().node("a").unwrap().ifaces.is_empty());
    }

    #[test]
    fn a_half_made_link_is_rolled_back() {
        let host = FakeHost::default();
        let (mut lab, _dir) = lab(&host);
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns })
            .unwrap();
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: "b".into(), kind: NodeKind::Ns })
            .unwrap();
        host.fail_ifaces_on("b");
        let link = |lab: &mut Lab| {
            lab.execute(Command::AddLink {
                a: "a".into(),
                b: "b".into(),
                ip_a: None,
                ip_b: None,
                options: LinkOptions::default(),
            })
        };
        assert!(link(&mut lab).is_err());
        assert!(lab.counters().is_empty(), "a's port was removed again");
        assert!(lab.topology().links.is_empty());
        assert!(lab.topology().node("a").unwrap().ifaces.is_empty());
        // a's end of the half-made link was closed by the switch.
        let wire = host.wire("a", "eth0").unwrap();
        assert!(wire.send(&[0u8; 64]).is_err(), "the port's fd is closed");
    }

    #[test]
    fn a_panic_still_tears_the_lab_down() {
        let host = FakeHost::default();
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let h = host.clone();
        let result = std::panic::catch_unwind(move || {
            let mut lab = Lab::new("p", Box::new(h), &base, None).unwrap();
            lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns })
                .unwrap();
            panic!("something broke");
        });
        assert!(result.is_err());
        assert!(host.calls().contains(&"stop a".to_string()));
        assert!(!dir.path().join("p").exists(), "run directory removed while unwinding");
    }

    #[test]
    fn teardown_stops_nodes_and_removes_the_run_directory() {
        let host = FakeHost::default();
        let (mut lab, dir) = lab(&host);
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns })
            .unwrap();
        lab.execute(Command::AddLan { name: "sw".into() }).unwrap();
        lab.execute(Command::JoinLan { node: "a".into(), lan: "sw".into(), ip: None, options: LinkOptions::default() })
            .unwrap();
        assert!(dir.path().join("t/state.json").exists());
        drop(lab);
        assert!(host.calls().contains(&"stop a".to_string()));
        assert!(!dir.path().join("t").exists());
    }
}
