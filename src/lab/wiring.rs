//! The Lab's wiring: LANs, links between nodes, links between LANs
//! (in-switch cables), plugging node interfaces into switch segments and
//! unplugging them, a link's up/down state, and swapping the port of a
//! NIC that reconnected. Keeps the capture port directory current.
//!
//! Owns: switch segments and ports. Must not touch: node lifecycles
//! (`nodes.rs`), impairment values (`impair_ops.rs` applies them).
use super::command::{LinkOptions, Reply};
use super::topology::{IfaceRef, NewIface, TopologyError};
use super::{capture, key, Lab, LabError, PortHandle};
use crate::switch::fabric::Segment;
use crate::switch::{PortId, SegmentId};
use crate::vocab::addr::Cidr;
use crate::vocab::{Mtu, NodeKind, VlanMode};

impl Lab {
    pub(super) fn add_lan(&mut self, name: &str) -> Result<Reply, LabError> {
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
    pub(super) fn plug(
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
    pub(super) fn unplug(&mut self, node: &str, ifname: &str) {
        let key = (node.to_string(), ifname.to_string());
        self.withdraw_port(&key);
        if let Some(p) = self.ports.remove(&key) {
            let _ = self.switch().remove_port(p.id);
        }
        self.forget_iface(node, ifname);
    }

    pub(super) fn add_link(
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
        let ia = self.topo.plan_iface(a, options.name_a.as_deref(), options.mac_a, mtu)?;
        let ib = self.topo.plan_iface(b, options.name_b.as_deref(), options.mac_b, mtu)?;
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
        // DHCP where asked, and by default on the node linked to a nat endpoint.
        let nat = |n: &str| self.topo.nodes.get(n).is_some_and(|m| m.kind == NodeKind::Nat);
        let dhcp_a = options.dhcp_a || (ip_a.is_none() && nat(b) && !nat(a));
        let dhcp_b = options.dhcp_b || (ip_b.is_none() && nat(a) && !nat(b));
        let addressed = addressed.and_then(|()| if dhcp_a { self.dhcp(a, &ifa) } else { Ok(()) }).and_then(|()| {
            if dhcp_b {
                self.dhcp(b, &ifb)
            } else {
                Ok(())
            }
        });
        if let Err(e) = addressed {
            // A failed command changes nothing: take the new link away again.
            let _ = self.delete_link(&name);
            return Err(e);
        }
        Ok(Reply::Link(self.topo.links[&name].clone()))
    }

    pub(super) fn join_lan(
        &mut self,
        node: &str,
        lan: &str,
        ip: Option<Cidr>,
        options: &LinkOptions,
    ) -> Result<Reply, LabError> {
        let mtu = Self::mtu(options)?;
        self.topo.lan(lan)?;
        self.running(node)?;
        let new = self.topo.plan_iface(node, options.name_a.as_deref(), options.mac_a, mtu)?;
        let vlan = options.vlan.clone().unwrap_or_default();
        let seg = self.segment(lan)?;
        self.plug(node, &new, seg, lan, vlan.clone())?;
        let ifname = new.name.clone();
        let member = self.topo.add_lan_member(lan, node, new, vlan)?;
        let configured = ip
            .map_or(Ok(()), |c| self.set_ip(node, &ifname, c))
            .and_then(|()| match &options.impair {
                Some(imp) => self.set_impairment(&member.to_string(), imp.clone()),
                None => Ok(()),
            })
            .and_then(|()| if options.dhcp_a { self.dhcp(node, &ifname) } else { Ok(()) });
        if let Err(e) = configured {
            let _ = self.leave_lan(&member, lan);
            return Err(e);
        }
        Ok(Reply::Iface { node: node.to_string(), iface: ifname })
    }

    /// Joins two LANs with an in-switch cable (two ports that hand frames
    /// to each other): like a cable between two switches.
    pub(super) fn link_lans(&mut self, a: &str, b: &str, vlan: VlanMode) -> Result<Reply, LabError> {
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

    pub(super) fn delete_link(&mut self, name: &str) -> Result<(), LabError> {
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

    pub(super) fn leave_lan(&mut self, member: &IfaceRef, lan: &str) -> Result<(), LabError> {
        self.unplug(&member.node, &member.iface);
        self.topo.remove_lan_member(lan, member);
        self.write_hosts()?;
        Ok(())
    }

    pub(super) fn unlink(&mut self, a: &str, b: &str) -> Result<(), LabError> {
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

    pub(super) fn delete_lan(&mut self, name: &str) -> Result<(), LabError> {
        self.topo.lan(name)?;
        // A plug serves one LAN: it goes with it.
        for plug in self.plugs_on(name) {
            self.delete_node(&plug)?;
        }
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

    /// Makes the ports of a link carry frames only while the link is up and
    /// both its nodes run; a stopped node's peer sees its carrier drop.
    pub(super) fn apply_link_state(&mut self, name: &str) -> Result<(), LabError> {
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
            self.tell_link(end, up)?;
        }
        Ok(())
    }

    pub(super) fn set_link_up(&mut self, name: &str, up: bool) -> Result<(), LabError> {
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

    /// Swaps the switch port of `end` for `io` (a NIC that reconnected),
    /// keeping its counters and impairments.
    pub(super) fn replace_port(
        &mut self,
        end: &IfaceRef,
        io: Box<dyn crate::switch::port::PortIo>,
    ) -> Result<(), LabError> {
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
}

/// The DHCP client a node runs (busybox's `udhcpc`, in ns nodes the
/// host's and in clonet's images their own), and the script it calls with
/// the lease: the address, the default route, the resolvers (where the
/// node's `/etc/resolv.conf` may be written). `IFACE` is replaced by the
/// interface, a name the topology has checked.
const DHCP_CLIENT: &str = r#"s=/tmp/.clonet-dhcp-IFACE
cat > "$s" <<'CLONET_EOF'
#!/bin/sh
case "$1" in bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface" || exit 1
    [ -z "$router" ] || ip route replace default via "${router%% *}" dev "$interface"
    [ -z "$dns" ] || { for d in $dns; do echo "nameserver $d"; done > /etc/resolv.conf; } 2>/dev/null
    ;;
esac
exit 0
CLONET_EOF
chmod 700 "$s"
command -v busybox >/dev/null || { echo "busybox (its udhcpc) is not in the node" >&2; exit 127; }
busybox udhcpc -i IFACE -n -q -t 10 -T 1 -s "$s" 2>&1 | tail -n 3 >&2
ip -4 -o addr show dev IFACE | grep -q inet"#;

impl Lab {
    /// Runs a DHCP client on `node`'s `iface` until it has an address (at
    /// most about 10 s). The address is the DHCP server's to give: the
    /// topology records none.
    pub(super) fn dhcp(&mut self, node: &str, iface: &str) -> Result<(), LabError> {
        let request = crate::vocab::exec::ExecRequest {
            argv: vec!["sh".into(), "-c".into(), DHCP_CLIENT.replace("IFACE", iface)],
            stdin: Vec::new(),
            timeout: crate::vocab::Timeout::new(std::time::Duration::from_secs(30))?,
            max_output: Default::default(),
            user: None,
            cwd: None,
        };
        let out = self.running_mut(node)?.exec(&request)?;
        if out.status != 0 {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let why = if why.is_empty() { "no lease (is a DHCP server on the link?)".to_string() } else { why };
            return Err(LabError::Dhcp { node: node.to_string(), iface: iface.to_string(), why });
        }
        Ok(())
    }
}
