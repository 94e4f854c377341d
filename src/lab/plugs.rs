//! The Lab's plugs: the clients of a plug node (programs clonet did not
//! start) join its LAN as its interfaces `c1`, `c2`, … when they connect,
//! and leave it when they go. What each plug turned away is kept here.
//!
//! A plug's thread never takes the lab's lock in a way that could wait
//! for ever: its [`Notifier`] tries the lock, and gives up once the plug
//! is being stopped (by a command that holds the lock). Every command and
//! the ticker also look at the plugs' events first, so none is missed.
//!
//! Owns: following node events, plug statistics. Must not touch: sockets
//! (`host::plug`), switch ports (only through `join_lan`/`leave_lan`).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::command::{LinkOptions, PlugClientInfo, PlugReport};
use super::lending::NodeSlot;
use super::shared::WeakLab;
use super::topology::IfaceRef;
use super::{key, Lab, LabError};
use crate::host::{NodeEvent, Notifier};
use crate::vocab::NodeKind;

/// What a plug saw since it started (its report without the clients).
#[derive(Default)]
pub(super) struct PlugStats {
    joined: u64,
    left: u64,
    refused: u64,
    garbage: u64,
    /// Frames dropped from clients that have left (their ports are gone).
    dropped_by_gone: u64,
    last_refusal: Option<String>,
    /// Who each client is, by interface.
    peers: BTreeMap<String, String>,
}

/// The notifier a lab gives its nodes: it makes the lab follow their
/// events as soon as the lock is free.
pub(super) fn notifier(lab: WeakLab) -> Notifier {
    Notifier::new(move |stopping: &AtomicBool| loop {
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        let Some(shared) = lab.upgrade() else { return };
        let followed = match shared.try_lock() {
            Some(mut guard) => {
                if !guard.is_torn_down() {
                    guard.observed(Lab::follow_node_events);
                }
                true
            }
            None => false,
        };
        drop(shared);
        if followed {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    })
}

impl Lab {
    /// Follows what running nodes did by themselves: clients of plugs
    /// joining and leaving. A node lent to a command is looked at later.
    pub(super) fn follow_node_events(&mut self) {
        let plugs: Vec<String> = self
            .topo
            .nodes
            .values()
            .filter(|n| n.kind == NodeKind::Plug && n.running)
            .map(|n| n.name.clone())
            .collect();
        for name in plugs {
            let events = match self.nodes.get_mut(&name) {
                Some(NodeSlot::Home(n)) => n.take_events(),
                _ => continue,
            };
            for e in events {
                self.follow_plug(&name, e);
            }
        }
    }

    fn follow_plug(&mut self, plug: &str, event: NodeEvent) {
        let Some(lan) = self.topo.nodes.get(plug).and_then(|n| n.options.plug.as_ref()).map(|p| p.lan.clone()) else {
            return;
        };
        match event {
            NodeEvent::Joined { iface, peer } => {
                let spec = self.topo.nodes[plug].options.plug.clone().expect("looked at above");
                let options =
                    LinkOptions { mtu: spec.mtu, vlan: spec.vlan, name_a: Some(iface.clone()), ..Default::default() };
                match self.join_lan(plug, &lan, None, &options) {
                    Ok(_) => {
                        let stats = self.plugs.entry(plug.to_string()).or_default();
                        stats.joined += 1;
                        stats.peers.insert(iface, peer);
                    }
                    Err(e) => {
                        // The plug drops the client it could not place.
                        if let Ok(node) = self.running_mut(plug) {
                            node.forget_iface(&iface);
                        }
                        self.refused(plug, format!("{peer} could not join {lan}: {e}"));
                    }
                }
            }
            NodeEvent::Left { iface } => {
                let member = IfaceRef { node: plug.to_string(), iface: iface.clone() };
                let drops = self.ports.get(&key(&member)).map(|p| p.counters.snapshot().rx_drops).unwrap_or_default();
                let malformed = drops.get("malformed").is_some_and(|n| *n > 0);
                if self.topo.lan(&lan).is_ok_and(|l| l.members.contains(&member)) {
                    if let Err(e) = self.leave_lan(&member, &lan) {
                        eprintln!("clonet: plug {plug}: removing client {iface}: {e}");
                    }
                }
                let stats = self.plugs.entry(plug.to_string()).or_default();
                stats.left += 1;
                stats.garbage += u64::from(malformed);
                stats.dropped_by_gone += drops.values().sum::<u64>();
                stats.peers.remove(&iface);
            }
            NodeEvent::Refused { why } => self.refused(plug, why),
        }
    }

    fn refused(&mut self, plug: &str, why: String) {
        let stats = self.plugs.entry(plug.to_string()).or_default();
        stats.refused += 1;
        stats.last_refusal = Some(why);
    }

    /// A plug's report for `node_info`.
    pub(super) fn plug_report(&self, plug: &str) -> Option<PlugReport> {
        let model = self.topo.nodes.get(plug).filter(|n| n.kind == NodeKind::Plug)?;
        let stats = self.plugs.get(plug);
        let dropped_now: u64 = model
            .ifaces
            .iter()
            .filter_map(|i| self.ports.get(&(plug.to_string(), i.name.clone())))
            .map(|p| p.counters.snapshot().rx_drops.values().sum::<u64>())
            .sum();
        Some(PlugReport {
            clients: model
                .ifaces
                .iter()
                .map(|i| PlugClientInfo {
                    iface: i.name.clone(),
                    peer: stats.and_then(|s| s.peers.get(&i.name)).cloned().unwrap_or_default(),
                })
                .collect(),
            joined: stats.map_or(0, |s| s.joined),
            left: stats.map_or(0, |s| s.left),
            refused: stats.map_or(0, |s| s.refused),
            garbage: stats.map_or(0, |s| s.garbage),
            dropped: dropped_now + stats.map_or(0, |s| s.dropped_by_gone),
            last_refusal: stats.and_then(|s| s.last_refusal.clone()),
        })
    }

    /// A plug's clients leave its LAN (the plug stops, or goes).
    pub(super) fn drop_plug_clients(&mut self, plug: &str) -> Result<(), LabError> {
        let Some(model) = self.topo.nodes.get(plug).filter(|n| n.kind == NodeKind::Plug) else { return Ok(()) };
        let lan = model.options.plug.as_ref().map(|p| p.lan.clone()).unwrap_or_default();
        let members: Vec<IfaceRef> =
            model.ifaces.iter().map(|i| IfaceRef { node: plug.to_string(), iface: i.name.clone() }).collect();
        for m in members {
            let drops: u64 =
                self.ports.get(&key(&m)).map_or(0, |p| p.counters.snapshot().rx_drops.values().sum::<u64>());
            self.leave_lan(&m, &lan)?;
            if let Some(stats) = self.plugs.get_mut(plug) {
                stats.peers.remove(&m.iface);
                stats.left += 1;
                stats.dropped_by_gone += drops;
            }
        }
        Ok(())
    }

    /// The plugs whose clients join LAN `lan`.
    pub(super) fn plugs_on(&self, lan: &str) -> Vec<String> {
        self.topo
            .nodes
            .values()
            .filter(|n| n.kind == NodeKind::Plug && n.options.plug.as_ref().is_some_and(|p| p.lan == lan))
            .map(|n| n.name.clone())
            .collect()
    }
}
