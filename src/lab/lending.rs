//! Lending a node to a command that runs on it alone (an exec, a ping
//! from it, its console, pausing it), so that the command runs without
//! the lab and every other command goes on meanwhile.
//!
//! A running node is at home in the lab ([`NodeSlot::Home`]) or lent
//! ([`NodeSlot::Lent`]): the command holds the node itself, and the lab
//! keeps what it showed when it left (pid, processes, a killer) until it
//! is given back. The rules:
//!
//! - [`Lab::attempt`] lends the node to a one-node command, runs any other
//!   command at once, or answers [`Attempt::Busy`] when a node the command
//!   needs is lent: the caller waits for it without the lab's lock and
//!   tries again (`SharedLab` does). [`Lab::nodes_needed`] says which nodes
//!   a command needs; a node the lab touches that is lent anyway (a miss
//!   there) makes the command fail with [`LabError::Busy`] before it
//!   changes anything, never a panic or a wait.
//! - What the lab does to a lent node's wiring on behalf of other nodes
//!   (unplugging the node's end of a link that is deleted, telling it its
//!   peer stopped) waits in the slot and is done when the node is back.
//! - Stopping or deleting a lent node kills its processes at once (its
//!   `killer`), so the command holding it ends; the command's answer says
//!   the node was stopped, and the stop goes on once the node is back.
//! - A node given back to a lab that no longer has it (torn down) is
//!   stopped there and then.
//!
//! Owns: the slots of running nodes and the jobs that hold lent ones.
//! Must not touch: threads and waiting (`shared.rs`), the control socket.
use std::net::IpAddr;
use std::time::Duration;

use super::command::{CloneSource, Command, PingTarget, Reply};
use super::topology::{Attachment, IfaceRef};
use super::{Lab, LabError};
use crate::host::{ExecRequest, NodeKiller, ProcRecord, RunningNode};

/// A running node: at home in the lab, or lent to a command.
pub(super) enum NodeSlot {
    Home(Box<dyn RunningNode>),
    Lent(Lent),
}

/// What the lab keeps of a node while a command holds it.
pub(super) struct Lent {
    /// Which lending this is: only the node lent then is taken back.
    lease: u64,
    /// What the node showed when it left, for `node_info`, `lab_info` and
    /// the death watch.
    pid: Option<i32>,
    detail: Option<String>,
    processes: Vec<ProcRecord>,
    /// Ends the node's processes while the command holds it.
    killer: Box<dyn NodeKiller>,
    /// Why the lab ended the node while it was lent: the command that
    /// held it then answers this instead of its own result.
    ended: Option<Ending>,
    /// Changes to its wiring made meanwhile, done when it is back.
    pending: Vec<Pending>,
}

/// A change to a lent node's wiring, done when it is back.
enum Pending {
    /// Its interface was unplugged (a link or LAN port went away).
    Forget(String),
    /// The carrier of its interface on a link may have changed (the peer
    /// stopped or started): it is told the link's state as it is then.
    LinkState(String),
}

/// Why a node ended while a command held it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Stopped,
    Deleted,
    /// The lab ended (or lost the node some other way).
    LabEnded,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ending::Stopped => "it was stopped",
            Ending::Deleted => "it was deleted",
            Ending::LabEnded => "the lab ended",
        })
    }
}

impl NodeSlot {
    /// The node, when it is at home.
    pub(super) fn home(&self) -> Option<&dyn RunningNode> {
        match self {
            NodeSlot::Home(n) => Some(n.as_ref()),
            NodeSlot::Lent(_) => None,
        }
    }

    /// The host pid of its init if known without waiting (see `pid`).
    pub(super) fn pid_if_known(&self) -> Option<i32> {
        match self {
            NodeSlot::Home(n) => n.pid_if_known(),
            NodeSlot::Lent(l) => l.pid,
        }
    }

    /// The host pid of its init; waits for a node at home that is still
    /// starting, never for a lent one (0 if it did not know yet).
    pub(super) fn pid(&self) -> i32 {
        match self {
            NodeSlot::Home(n) => n.pid(),
            NodeSlot::Lent(l) => l.pid.unwrap_or(0),
        }
    }

    pub(super) fn detail(&self) -> Option<String> {
        match self {
            NodeSlot::Home(n) => n.detail(),
            NodeSlot::Lent(l) => l.detail.clone(),
        }
    }

    pub(super) fn processes(&self) -> Vec<ProcRecord> {
        match self {
            NodeSlot::Home(n) => n.processes(),
            NodeSlot::Lent(l) => l.processes.clone(),
        }
    }

    /// Hands the node out, leaving what the lab keeps of it meanwhile;
    /// `None` if it is lent already.
    fn lend(&mut self, lease: u64) -> Option<Box<dyn RunningNode>> {
        let NodeSlot::Home(node) = self else { return None };
        let lent = Lent {
            lease,
            pid: node.pid_if_known(),
            detail: node.detail(),
            processes: node.processes(),
            killer: node.killer(),
            ended: None,
            pending: Vec::new(),
        };
        match std::mem::replace(self, NodeSlot::Lent(lent)) {
            NodeSlot::Home(node) => Some(node),
            NodeSlot::Lent(_) => None,
        }
    }
}

/// What a one-node command does on its node.
enum NodeWork {
    Exec(ExecRequest),
    Ping { target: IpAddr, timeout: Duration },
    Console,
    Pause(bool),
}

/// A command that runs on one node alone, holding that node: run it
/// anywhere without the lab ([`NodeJob::run`]), then give the node back
/// ([`Lab::give_back`]).
pub struct NodeJob {
    node: String,
    lease: u64,
    running: Box<dyn RunningNode>,
    work: NodeWork,
}

impl NodeJob {
    /// Does the command's work on its node, on this thread. A panic here
    /// leaves the node in the job, so the caller can still give it back.
    pub fn run(&mut self) -> Result<Reply, LabError> {
        let node = self.running.as_mut();
        match &self.work {
            NodeWork::Exec(request) => Ok(Reply::Exec(node.exec(request)?)),
            NodeWork::Ping { target, timeout } => {
                let rtt = node.ping(*target, *timeout)?;
                Ok(Reply::Ping { rtt_us: rtt.map(|d| d.as_micros() as u64) })
            }
            NodeWork::Console => Ok(Reply::Console(node.console())),
            NodeWork::Pause(paused) => Ok(node.pause(*paused).map(|()| Reply::Done)?),
        }
    }
}

/// What came of trying a command on the lab.
pub enum Attempt {
    /// It ran on the lab (or was refused).
    Done(Result<Reply, LabError>),
    /// It runs on one node alone, which it now holds.
    Lent(NodeJob),
    /// It needs these nodes, lent to other commands: wait until they are
    /// back, then try it again.
    Busy { cmd: Command, nodes: Vec<String> },
}

/// The node a command runs on alone, if it is one of those: it uses
/// nothing of the lab but that node once it has started.
fn one_node(cmd: &Command) -> Option<&str> {
    match cmd {
        Command::Exec { node, .. } | Command::Console { node } | Command::PauseNode { node, .. } => Some(node),
        Command::Ping { from, .. } => Some(from),
        _ => None,
    }
}

impl Lab {
    /// Tries a command: lends the node to a one-node command, runs any
    /// other, or says which lent nodes it waits for. Stopping or deleting
    /// a lent node also kills it, so that its command ends soon.
    pub fn attempt(&mut self, cmd: Command) -> Attempt {
        // Before anything else, so a bad command changes nothing.
        if let Err(e) = cmd.check() {
            return Attempt::Done(Err(e.into()));
        }
        let lent: Vec<String> = self.nodes_needed(&cmd).into_iter().filter(|n| self.is_lent(n)).collect();
        if !lent.is_empty() {
            match &cmd {
                Command::StopNode { node } => self.end_lent(node, Ending::Stopped),
                Command::DeleteNode { node } => self.end_lent(node, Ending::Deleted),
                _ => {}
            }
            return Attempt::Busy { cmd, nodes: lent };
        }
        if one_node(&cmd).is_none() {
            return Attempt::Done(self.execute_on_lab(cmd));
        }
        // What `execute` does first, then the loan instead of the work.
        let lent = self.observed(|lab| {
            lab.notice_dead_nodes();
            lab.follow_node_events();
            lab.progress.done();
            lab.lend(cmd)
        });
        match lent {
            Ok(Ok(job)) => Attempt::Lent(job),
            Ok(Err(e)) => Attempt::Done(Err(e)),
            // Not reached: `one_node` said it is a one-node command.
            Err(cmd) => Attempt::Done(self.execute_on_lab(*cmd)),
        }
    }

    /// Runs a command that is not a one-node command on the lab.
    fn execute_on_lab(&mut self, cmd: Command) -> Result<Reply, LabError> {
        let stopped = match &cmd {
            Command::StopNode { node } | Command::DeleteNode { node } => Some(node.clone()),
            _ => None,
        };
        let result = self.execute_checked(cmd);
        // Done (or failed): from now on a dead node is a death again.
        if let Some(node) = stopped {
            self.stopping.remove(&node);
        }
        result
    }

    /// The running nodes a command uses, which must be at home for it to
    /// run: those whose processes, interfaces, addresses or disks it
    /// changes or reads. Not the peers whose wiring changes with them
    /// (that waits in a lent node's slot). Every command is named, so a
    /// new one must say what it needs.
    pub fn nodes_needed(&self, cmd: &Command) -> Vec<String> {
        use Command::*;
        let one = |n: &String| vec![n.clone()];
        match cmd {
            AddNode { .. }
            | AddLan { .. }
            | DeleteLan { .. }
            | LinkLans { .. }
            | DeleteLink { .. }
            | Unlink { .. }
            | SetImpairment { .. }
            | Seed { .. }
            | SetLabInfo { .. }
            | StartCapture { .. }
            | StopCapture { .. }
            | NodeInfo { .. }
            | Snapshots
            | LoadLab { .. }
            | Counters
            | Fdb { .. }
            | Topology
            | LabInfo
            | Clone { source: CloneSource::Snapshot(_), .. } => vec![],
            DeleteNode { node }
            | StopNode { node }
            | StartNode { node }
            | Restore { node, .. }
            | JoinLan { node, .. }
            | SetIp { node, .. }
            | AddRoute { node, .. }
            | Exec { node, .. }
            | PauseNode { node, .. }
            | Console { node }
            | Snapshot { node, .. }
            | Clone { source: CloneSource::Node(node), .. }
            | Ping { from: node, .. } => one(node),
            AddLink { a, b, .. } => vec![a.clone(), b.clone()],
            // A kvm or uml end is told of the new state through its own
            // means, and the change is undone if that fails.
            SetLinkUp { link, .. } => {
                self.topo.links.get(link).map_or(vec![], |l| vec![l.a.node.clone(), l.b.node.clone()])
            }
            // A memory snapshot is dropped inside its node's disk.
            DeleteSnapshot { name } => self.snapshots.get(name).map_or(vec![], |r| vec![r.node.clone()]),
            SaveLab { .. } => self.nodes.keys().cloned().collect(),
        }
    }

    /// Whether `node` is lent to a command now.
    pub fn is_lent(&self, node: &str) -> bool {
        matches!(self.nodes.get(node), Some(NodeSlot::Lent(_)))
    }

    /// Whether any node is lent to a command now.
    pub fn has_lent(&self) -> bool {
        self.nodes.values().any(|s| matches!(s, NodeSlot::Lent(_)))
    }

    /// Kills a lent node's processes, once, and remembers why, so that the
    /// command holding it ends and answers that. The node, dead when it is
    /// back, is not reported as died: the stop that killed it runs then.
    fn end_lent(&mut self, node: &str, why: Ending) {
        if let Some(NodeSlot::Lent(l)) = self.nodes.get_mut(node) {
            if l.ended.is_none() {
                l.ended = Some(why);
                l.killer.kill();
                self.stopping.insert(node.to_string());
            }
        }
    }

    /// Kills every lent node (the lab is ending): see `end_lent`.
    pub fn end_every_lent(&mut self) {
        let lent: Vec<String> =
            self.nodes.iter().filter(|(_, s)| matches!(s, NodeSlot::Lent(_))).map(|(n, _)| n.clone()).collect();
        for node in lent {
            self.end_lent(&node, Ending::LabEnded);
        }
    }

    /// Lends its node to a one-node command (see `one_node`); any other
    /// command comes back unchanged.
    fn lend(&mut self, cmd: Command) -> Result<Result<NodeJob, LabError>, Box<Command>> {
        let (node, work) = match cmd {
            Command::Exec { node, request } => (node, NodeWork::Exec(request)),
            Command::Ping { from, to, timeout_ms } => {
                let target = match to {
                    PingTarget::Addr(a) => a,
                    PingTarget::Node(n) => match self.address_of(&n) {
                        Ok(a) => a,
                        Err(e) => return Ok(Err(e)),
                    },
                };
                (from, NodeWork::Ping { target, timeout: timeout_ms.get() })
            }
            Command::Console { node } => (node, NodeWork::Console),
            Command::PauseNode { node, paused } => (node, NodeWork::Pause(paused)),
            other => return Err(Box::new(other)),
        };
        Ok(self.lend_node(node, work))
    }

    fn lend_node(&mut self, node: String, work: NodeWork) -> Result<NodeJob, LabError> {
        // Says why not: no such node, stopped, or lent already.
        self.running(&node)?;
        let lease = self.next_lease;
        self.next_lease += 1;
        let running = self.nodes.get_mut(&node).and_then(|s| s.lend(lease)).ok_or(LabError::Busy(node.clone()))?;
        Ok(NodeJob { node, lease, running, work })
    }

    /// Takes back the node a job held, does what waited for it, and
    /// returns the job's answer: `result`, or why the node ended meanwhile.
    pub fn give_back(&mut self, job: NodeJob, result: Result<Reply, LabError>) -> Result<Reply, LabError> {
        let NodeJob { node, lease, mut running, .. } = job;
        let ours = matches!(self.nodes.get(&node), Some(NodeSlot::Lent(l)) if l.lease == lease);
        let Some(slot) = self.nodes.get_mut(&node).filter(|_| ours) else {
            // The lab no longer has this node: it ended with the lab, so
            // it stops here.
            if let Err(e) = running.stop() {
                eprintln!("clonet: stopping node {node}: {e}");
            }
            return Err(LabError::EndedWhileBusy { node, why: Ending::LabEnded });
        };
        let NodeSlot::Lent(lent) = std::mem::replace(slot, NodeSlot::Home(running)) else {
            return result;
        };
        for change in lent.pending {
            match change {
                Pending::Forget(iface) => {
                    if let Some(NodeSlot::Home(n)) = self.nodes.get_mut(&node) {
                        n.forget_iface(&iface);
                    }
                }
                Pending::LinkState(iface) => {
                    if let Err(e) = self.tell_link_state(&node, &iface) {
                        eprintln!("clonet: telling {node}:{iface} its link's state: {e}");
                    }
                }
            }
        }
        match lent.ended {
            Some(why) => Err(LabError::EndedWhileBusy { node, why }),
            None => result,
        }
    }

    /// Forgets interface `iface` of a running node, now or, for a lent
    /// one, once it is back.
    pub(super) fn forget_iface(&mut self, node: &str, iface: &str) {
        match self.nodes.get_mut(node) {
            Some(NodeSlot::Home(n)) => n.forget_iface(iface),
            Some(NodeSlot::Lent(l)) => l.pending.push(Pending::Forget(iface.to_string())),
            None => {}
        }
    }

    /// Tells a running node whether its cable on `end` carries frames (a
    /// kvm or uml NIC does not see the switch port's carrier), now or, for
    /// a lent one, once it is back. A NIC that reconnected gets its new
    /// port in the switch.
    pub(super) fn tell_link(&mut self, end: &IfaceRef, up: bool) -> Result<(), LabError> {
        let routes = self.topo.nodes.get(&end.node).map(|m| m.routes.clone()).unwrap_or_default();
        let fresh = match self.nodes.get_mut(&end.node) {
            Some(NodeSlot::Home(n)) => n.set_link(&end.iface, up, &routes)?,
            Some(NodeSlot::Lent(l)) => {
                l.pending.push(Pending::LinkState(end.iface.clone()));
                None
            }
            None => None,
        };
        if let Some(io) = fresh {
            self.replace_port(end, io)?;
        }
        Ok(())
    }

    /// Tells `node:iface` the state its link has now (see `tell_link`).
    fn tell_link_state(&mut self, node: &str, iface: &str) -> Result<(), LabError> {
        let link = match self.topo.nodes.get(node).and_then(|m| m.iface(iface)).map(|i| &i.attachment) {
            Some(Attachment::Link(l)) => l.clone(),
            _ => return Ok(()),
        };
        let Ok(model) = self.topo.link(&link) else { return Ok(()) };
        let both_running =
            [&model.a.node, &model.b.node].iter().all(|n| self.topo.nodes.get(*n).is_some_and(|m| m.running));
        let up = model.up && both_running;
        self.tell_link(&IfaceRef { node: node.to_string(), iface: iface.to_string() }, up)
    }

    /// Takes a node out of the lab and stops it: at once if it is at home;
    /// a lent one is killed, and stopped when its command gives it back.
    pub(super) fn remove_and_stop(&mut self, name: &str) {
        self.stopping.remove(name);
        match self.nodes.remove(name) {
            Some(NodeSlot::Home(mut n)) => {
                if let Err(e) = n.stop() {
                    eprintln!("clonet: stopping node {name}: {e}");
                }
            }
            Some(NodeSlot::Lent(l)) => l.killer.kill(),
            None => {}
        }
    }
}
