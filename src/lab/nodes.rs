//! The Lab's nodes: adding, deleting, stopping, starting (again, with
//! their interfaces, addresses, routes and impairments), noticing the ones
//! that died, their addresses and routes, and what `node_info` reports.
//!
//! Owns: the running nodes and their records in the run directory. Must
//! not touch: switch ports (only through `plug`/`unplug` in `wiring.rs`),
//! impairments (only through `impair_ops.rs`).
use super::command::{NodeInfo, NodeOptions, Reply};
use super::lending::NodeSlot;
use super::topology::{self, Attachment, IfaceRef, NewIface, TopologyError};
use super::{Lab, LabError};
use crate::host::NodeSpec;
use crate::vocab::addr::{Cidr, Route};
use crate::vocab::NodeKind;

impl Lab {
    pub(super) fn node_info(&self, node: &str) -> Result<NodeInfo, LabError> {
        self.node_info_with(node, NodeSlot::pid)
    }

    /// `node_info`, taking the pid as `pid` says: a node that is still
    /// starting may not know it without waiting. A lent node answers what
    /// it showed when it was lent, without waiting for its command.
    fn node_info_with(&self, node: &str, pid: impl Fn(&NodeSlot) -> i32) -> Result<NodeInfo, LabError> {
        let model = self.topo.node(node)?;
        Ok(NodeInfo {
            name: model.name.clone(),
            kind: model.kind,
            ifaces: model.ifaces.clone(),
            pid: self.nodes.get(node).map(pid).unwrap_or(0),
            // A node that died says why until it starts again.
            detail: self
                .nodes
                .get(node)
                .and_then(NodeSlot::detail)
                .or_else(|| model.death.as_ref().map(|why| format!("died: {why}"))),
            disk_bytes: self
                .run_dir
                .as_ref()
                .and_then(|r| self.host.disk_at_rest(model.kind, r.path(), node))
                .map_or(0, |p| crate::host::disks::bytes_on_disk(&p)),
            running: model.running,
            plug: self.plug_report(node),
        })
    }

    fn spec(
        &mut self,
        name: &str,
        kind: NodeKind,
        options: NodeOptions,
        disk: crate::host::DiskStart,
    ) -> Result<NodeSpec, LabError> {
        // What the node boots from is found before it starts (the host
        // keeps images once found), so a start itself only starts.
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
            notify: self.me.clone().map(super::plugs::notifier),
        })
    }

    pub(super) fn add_node(&mut self, name: &str, kind: NodeKind, options: NodeOptions) -> Result<Reply, LabError> {
        self.add_node_on(name, kind, options, crate::host::DiskStart::Fresh)
    }

    pub(super) fn add_node_on(
        &mut self,
        name: &str,
        kind: NodeKind,
        options: NodeOptions,
        disk: crate::host::DiskStart,
    ) -> Result<Reply, LabError> {
        self.topo.check_new_node(name)?;
        // Every way a node is made (a command, a clone, a saved lab being
        // loaded) passes here, so the options' rules hold for all of them.
        options.check(kind)?;
        if let Some(plug) = &options.plug {
            self.topo.lan(&plug.lan)?;
        }
        let spec = self.spec(name, kind, options.clone(), disk)?;
        let running = self.host.start_node(&spec)?;
        let procs = running.processes();
        self.nodes.insert(name.to_string(), NodeSlot::Home(running));
        self.topo.add_node_with(name, kind, options)?;
        self.run_dir_mut().record_node(name, procs)?;
        // Not waiting for a node that is still starting (0: not known yet).
        Ok(Reply::Node(self.node_info_with(name, |n| n.pid_if_known().unwrap_or(0))?))
    }

    pub(super) fn delete_node(&mut self, name: &str) -> Result<(), LabError> {
        let model = self.topo.node(name)?.clone();
        for i in &model.ifaces {
            match &i.attachment {
                Attachment::Link(l) => self.delete_link(l)?,
                Attachment::Lan(l) => self.leave_lan(&IfaceRef { node: name.to_string(), iface: i.name.clone() }, l)?,
            }
        }
        self.remove_and_stop(name);
        self.plugs.remove(name);
        self.topo.remove_node(name);
        self.snapshots.forget_user(name);
        self.run_dir_mut().forget_node(name)?;
        self.write_hosts()?;
        Ok(())
    }

    /// Finds nodes whose process died behind the lab's back (a crash, an
    /// OOM kill, a `kill -9`), says so, and marks them stopped: their ports
    /// are unplugged, their peers lose carrier, everything else goes on.
    /// `start()` brings such a node back.
    /// A lent node is looked at once it is back (a dead one stays a
    /// suspect until then), and one the lab killed to stop it is not.
    pub(super) fn notice_dead_nodes(&mut self) {
        let running = self.nodes.iter().map(|(name, n)| (name.as_str(), n.processes()));
        let suspects = self.death_watch.suspects(running);
        let dead: Vec<String> = suspects
            .into_iter()
            .filter(|name| !self.stopping.contains(name))
            .filter(|name| self.nodes.get(name).and_then(NodeSlot::home).is_some_and(|n| !n.alive()))
            .collect();
        for name in dead {
            let why = self.nodes.get(&name).and_then(NodeSlot::home).and_then(|n| n.death());
            eprintln!(
                "clonet: node {name} died ({}); it is marked stopped",
                why.as_deref().unwrap_or("its process exited")
            );
            self.topo.mark_died(&name, why);
            let _ = self.stop_node(&name);
        }
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

    pub(super) fn stop_node(&mut self, name: &str) -> Result<(), LabError> {
        self.running(name)?;
        // A plug's interfaces are its clients: they go with it for good.
        self.drop_plug_clients(name)?;
        let ifaces: Vec<String> = self.topo.node(name)?.ifaces.iter().map(|i| i.name.clone()).collect();
        for i in &ifaces {
            self.unplug(name, i);
        }
        // Whatever stop says, the node is gone from the lab's point of view.
        self.remove_and_stop(name);
        self.topo.set_running(name, false)?;
        self.run_dir_mut().forget_node(name)?;
        for l in self.links_of(name) {
            self.apply_link_state(&l)?;
        }
        Ok(())
    }

    pub(super) fn start_node(&mut self, name: &str) -> Result<(), LabError> {
        self.start_node_on(name, crate::host::DiskStart::Keep)
    }

    pub(super) fn start_node_on(&mut self, name: &str, disk: crate::host::DiskStart) -> Result<(), LabError> {
        let model = self.topo.node(name)?.clone();
        if model.running {
            return Ok(());
        }
        let spec = self.spec(name, model.kind, model.options.clone(), disk)?;
        let running = self.host.start_node(&spec)?;
        let procs = running.processes();
        self.nodes.insert(name.to_string(), NodeSlot::Home(running));
        // From here on the node runs: on a failure below, stop it again so
        // the model (stopped) stays true.
        let restored = self.restore_node(&model);
        if let Err(e) = restored {
            let ifaces: Vec<String> = model.ifaces.iter().map(|i| i.name.clone()).collect();
            for i in &ifaces {
                self.unplug(name, i);
            }
            self.remove_and_stop(name);
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
            let new = NewIface { name: i.name.clone(), mac: i.mac, mtu: i.mtu, mac_given: i.mac_given };
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

    pub(super) fn set_ip(&mut self, node: &str, iface: &str, cidr: Cidr) -> Result<(), LabError> {
        self.topo.check_new_addr(node, iface, cidr)?;
        self.running_mut(node)?.add_addr(iface, cidr)?;
        self.topo.add_addr(node, iface, cidr)?;
        self.write_hosts()?;
        Ok(())
    }

    pub(super) fn add_route(&mut self, node: &str, route: Route) -> Result<(), LabError> {
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
}
