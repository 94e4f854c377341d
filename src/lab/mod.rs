//! The Lab engine: executes [`Command`]s against the topology model, the
//! node host and the switch, and owns every resource it creates.
//!
//! Every change is done host-side first and recorded in the model only
//! once it succeeded, so a failed command changes nothing. Teardown (on
//! drop, so also on error and panic) stops the switch, then the nodes, then
//! removes the run directory.
//!
//! This file holds the `Lab` itself, its accessors, the dispatch of
//! commands and teardown; the other methods sit in child modules by
//! concern: nodes (`nodes.rs`), LANs, links and ports (`wiring.rs`),
//! impairments and seeds (`impair_ops.rs`), snapshots, clones and saved
//! labs (`snapshot_ops.rs`), captures, counters and the MAC table
//! (`traffic.rs`), watchers and their events (`watching.rs`).
//!
//! A node can be lent to a command that runs on it alone (an exec, a
//! ping), which then holds the node without the lab (`lending.rs`); the
//! threads that share a lab wait for lent nodes in `shared.rs`.
//!
//! Owns: the topology, running nodes, switch ports and segments, the run
//! directory. Must not touch: Rhai, terminal output other than warnings.
pub mod capture;
pub mod command;
pub mod control;
pub mod errors;
pub mod events;
pub mod graph;
pub mod handle;
pub mod impairment;
pub mod lending;
pub mod names;
pub mod progress;
pub mod rebuild;
pub mod rundir;
pub mod save;
pub mod shared;
pub mod snapshot;
pub mod topology;

#[cfg(test)]
mod protocol_fuzz;

// The Lab's methods by concern, one `impl Lab` block each.
mod impair_ops;
mod nodes;
mod plugs;
mod snapshot_ops;
mod traffic;
mod watching;
mod wiring;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use command::PingTarget;
pub use command::{Command, Reply};

use crate::host::{HostError, NodeHost, RunningNode};
use crate::switch::counters::PortCounters;
use crate::switch::{PortId, SegmentId, Switch, SwitchError};
use crate::vocab::addr::CidrError;
use crate::vocab::NodeKind;
use rundir::{RunDir, RunDirError};
use topology::{IfaceRef, Topology, TopologyError};

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
    #[error(transparent)]
    Remote(#[from] errors::RemoteError),
    #[error("{0} needs the lab in this process (it is attached)")]
    NotLocal(&'static str),
    /// The node is lent to another command (see `lending.rs`).
    #[error("node {0:?} is busy with another command (an exec, a ping); try again once it is done")]
    Busy(String),
    /// The node of a command that ran on it alone ended meanwhile.
    #[error("node {node:?} ended while the command ran on it: {why}")]
    EndedWhileBusy { node: String, why: lending::Ending },
    #[error("the lab has ended")]
    Ended,
    #[error("node {node:?} got no address by DHCP on {iface}: {why}")]
    Dhcp { node: String, iface: String, why: String },
    /// A bug: the command panicked (and the lab went on without it).
    #[error("the command failed inside clonet: {0}")]
    Panicked(String),
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
    /// Running nodes (a stopped node is in the model only), at home or
    /// lent to a command (`lending.rs`).
    nodes: HashMap<String, lending::NodeSlot>,
    /// The number of the next lending of a node.
    next_lease: u64,
    /// Nodes killed while lent because a stop or delete asked for them:
    /// dead on purpose, so not reported as died before that stop or
    /// delete runs.
    stopping: std::collections::HashSet<String>,
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
    /// The lab's own shared handle, once it is shared: what its nodes'
    /// notifiers reach it by (`plugs.rs`).
    me: Option<shared::WeakLab>,
    /// What each plug saw, by node name.
    plugs: HashMap<String, plugs::PlugStats>,
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
            next_lease: 1,
            stopping: Default::default(),
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
            me: None,
            plugs: HashMap::new(),
        };
        lab.write_hosts()?;
        lab.switch = Some(Switch::start()?);
        Ok(lab)
    }

    /// Makes the lab a shared one and serves it on its control socket.
    pub fn serve(self) -> Result<shared::SharedLab, LabError> {
        let shared = shared::SharedLab::new(self);
        let server = control::Server::start(&shared).map_err(HostError::io("starting the control socket"))?;
        shared.lock().control = Some(server);
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
            about: self.topo.about.clone(),
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
        self.nodes.get(node).map_or(0, lending::NodeSlot::pid)
    }

    /// Kind-specific facts of a running node (kvm: `accel=…`).
    pub fn node_detail(&self, node: &str) -> Option<String> {
        self.nodes.get(node).and_then(lending::NodeSlot::detail)
    }

    /// The address a node is reached at: its first configured address.
    pub fn address_of(&self, node: &str) -> Result<IpAddr, LabError> {
        self.topo.node(node)?.first_addr().ok_or_else(|| LabError::NoAddress(node.to_string()))
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

    /// A running node at home: an error says why not (no such node,
    /// stopped, lent to another command).
    fn running(&self, node: &str) -> Result<&dyn RunningNode, LabError> {
        self.topo.node(node)?;
        match self.nodes.get(node) {
            Some(lending::NodeSlot::Home(n)) => Ok(n.as_ref()),
            Some(lending::NodeSlot::Lent(_)) => Err(LabError::Busy(node.to_string())),
            None => Err(TopologyError::Stopped(node.to_string()).into()),
        }
    }

    fn running_mut(&mut self, node: &str) -> Result<&mut dyn RunningNode, LabError> {
        self.topo.node(node)?;
        match self.nodes.get_mut(node) {
            Some(lending::NodeSlot::Home(n)) => Ok(n.as_mut()),
            Some(lending::NodeSlot::Lent(_)) => Err(LabError::Busy(node.to_string())),
            None => Err(TopologyError::Stopped(node.to_string()).into()),
        }
    }

    /// Executes one command here and now, one-node commands included
    /// (those on a lent node fail as busy; `SharedLab::execute` waits).
    pub fn execute(&mut self, cmd: Command) -> Result<Reply, LabError> {
        // Before anything else, so a bad command changes nothing.
        cmd.check()?;
        self.execute_checked(cmd)
    }

    /// Executes a command that passed `Command::check`.
    fn execute_checked(&mut self, cmd: Command) -> Result<Reply, LabError> {
        self.observed(|lab| lab.execute_and_show(cmd))
    }

    /// Runs `f`, then tells watchers what it changed in the topology.
    fn observed<T>(&mut self, f: impl FnOnce(&mut Lab) -> T) -> T {
        let before = (!self.watchers.is_empty()).then(|| self.topo.clone());
        let result = f(self);
        if let Some(before) = before {
            self.publish(&events::diff(&before, &self.topo));
        }
        result
    }

    fn execute_and_show(&mut self, cmd: Command) -> Result<Reply, LabError> {
        self.notice_dead_nodes();
        self.follow_node_events();
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
            Command::SetLabInfo { info } => {
                self.topo.set_about(&info).map_err(|e| crate::vocab::VocabError::invalid("lab_info", e))?;
                Ok(Reply::Done)
            }
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
                Ok(Reply::Snapshots {
                    snapshots: names.iter().map(|n| self.snapshot_info(n)).collect::<Result<_, _>>()?,
                })
            }
            Command::DeleteSnapshot { name } => self.delete_snapshot(&name).map(|()| Reply::Done),
            Command::SaveLab { dir } => self.save_lab(&dir).map(|()| Reply::Done),
            Command::LoadLab { dir } => self.load_lab(&dir).map(|()| Reply::Done),
            Command::PauseNode { node, paused } => {
                self.running_mut(&node)?.pause(paused).map(|()| Reply::Done).map_err(Into::into)
            }
            Command::Counters => Ok(Reply::Counters { ports: self.counters() }),
            Command::Fdb { lan } => self.fdb(&lan),
            Command::Topology => Ok(Reply::Topology(self.topo.clone())),
        }
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
        // A lent node is killed here and stopped when its command gives it
        // back (`SharedLab::teardown` waits for that first).
        self.end_every_lent();
        for slot in self.nodes.values_mut() {
            if let lending::NodeSlot::Home(node) = slot {
                node.begin_stop();
            }
        }
        for name in names {
            if self.nodes.contains_key(&name) {
                self.remove_and_stop(&name);
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
mod tests;
