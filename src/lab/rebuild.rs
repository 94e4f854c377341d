//! Rebuilding a saved lab (sans-IO): the commands that wire saved nodes
//! together again exactly as they were: LANs, links with their names,
//! interface names, MTUs and addresses, LAN ports with their VLANs, links
//! between LANs, extra addresses, routes, link states and stopped nodes.
//! The nodes themselves are made first, from their saved disks.
use serde::{Deserialize, Serialize};

use super::command::{Command, LinkOptions};
use super::topology::{Topology, UplinkModel};

/// What `save_lab` writes next to the disks: the topology and, per node,
/// the file or directory (relative to the save) holding its disk state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedLab {
    pub topology: Topology,
    pub disks: std::collections::BTreeMap<String, String>,
}

pub const SAVED_LAB_FILE: &str = "lab.json";

impl SavedLab {
    /// Reads a saved lab's `lab.json`. A saved lab is untrusted input: a
    /// name without its node, a link or LAN port on an interface its node
    /// does not have, or a disk outside the saved lab's directory, is
    /// refused here, before anything is built. Sans-IO.
    pub fn from_json(text: &[u8]) -> Result<SavedLab, String> {
        let saved: SavedLab = serde_json::from_slice(text).map_err(|e| format!("bad lab.json: {e}"))?;
        let topo = &saved.topology;
        if let Some(name) = topo.order.iter().find(|n| !topo.nodes.contains_key(*n)) {
            return Err(format!("no node {name:?} in lab.json"));
        }
        // `wiring` looks every interface up by these references.
        let ends = topo.links.values().flat_map(|l| [&l.a, &l.b]);
        let ports = topo.lans.values().flat_map(|lan| &lan.members);
        if let Some(end) = ends.chain(ports).find(|r| topo.nodes.get(&r.node).and_then(|n| n.iface(&r.iface)).is_none())
        {
            return Err(format!("lab.json wires interface {end}, which no saved node has"));
        }
        let outside = |rel: &String| rel.contains("..") || !std::path::Path::new(rel).is_relative();
        if let Some(rel) = saved.disks.values().find(|r| outside(r)) {
            return Err(format!("bad disk path {rel:?}"));
        }
        Ok(saved)
    }
}

/// The commands that re-create everything but the nodes (plugs, which
/// need their LAN, excepted), in order.
pub fn wiring(topo: &Topology) -> Vec<Command> {
    let mut cmds = Vec::new();
    let mtu = |m: crate::vocab::Mtu| (m != crate::vocab::Mtu::ETHERNET).then_some(m);
    if !topo.about.is_empty() {
        cmds.push(Command::SetLabInfo { info: topo.about.clone() });
    }
    for name in topo.lans.keys() {
        cmds.push(Command::AddLan { name: name.clone() });
    }
    // Plugs listen again once their LAN is there; their clients are
    // programs of their own, which connect again.
    let plug = |node: &str| topo.nodes.get(node).is_some_and(|n| n.kind == crate::vocab::NodeKind::Plug);
    for name in topo.order.iter().filter(|n| plug(n)) {
        let n = &topo.nodes[name];
        cmds.push(Command::AddNode { name: name.clone(), kind: n.kind, options: n.options.clone() });
    }
    let mut extra_addrs = Vec::new();
    let iface = |node: &str, name: &str| topo.nodes[node].iface(name).expect("the model references its interfaces");
    for l in topo.links.values() {
        let (ia, ib) = (iface(&l.a.node, &l.a.iface), iface(&l.b.node, &l.b.iface));
        for (r, i) in [(&l.a, ia), (&l.b, ib)] {
            extra_addrs.extend(i.addrs.iter().skip(1).map(|a| (r.node.clone(), i.name.clone(), *a)));
        }
        cmds.push(Command::AddLink {
            a: l.a.node.clone(),
            b: l.b.node.clone(),
            ip_a: ia.addrs.first().copied(),
            ip_b: ib.addrs.first().copied(),
            options: LinkOptions {
                mtu: mtu(ia.mtu),
                vlan: None,
                name_a: Some(ia.name.clone()),
                name_b: Some(ib.name.clone()),
                mac_a: ia.mac_given.then_some(ia.mac),
                mac_b: ib.mac_given.then_some(ib.mac),
                link_name: Some(l.name.clone()),
                impair: (!l.impair.is_noop()).then(|| l.impair.clone()),
                ..Default::default()
            },
        });
        if !l.up {
            cmds.push(Command::SetLinkUp { link: l.name.clone(), up: false });
        }
    }
    for lan in topo.lans.values() {
        for m in lan.members.iter().filter(|m| !plug(&m.node)) {
            let i = iface(&m.node, &m.iface);
            extra_addrs.extend(i.addrs.iter().skip(1).map(|a| (m.node.clone(), i.name.clone(), *a)));
            cmds.push(Command::JoinLan {
                node: m.node.clone(),
                lan: lan.name.clone(),
                ip: i.addrs.first().copied(),
                options: LinkOptions {
                    mtu: mtu(i.mtu),
                    vlan: i.vlan.clone(),
                    name_a: Some(i.name.clone()),
                    name_b: None,
                    mac_a: i.mac_given.then_some(i.mac),
                    link_name: None,
                    impair: (!i.impair.is_noop()).then(|| i.impair.clone()),
                    ..Default::default()
                },
            });
        }
    }
    for UplinkModel { a, b, vlan, up, impair, .. } in topo.uplinks.values() {
        cmds.push(Command::LinkLans { a: a.clone(), b: b.clone(), vlan: Some(vlan.clone()) });
        if !impair.is_noop() {
            let (x, y) = if a <= b { (a, b) } else { (b, a) };
            cmds.push(Command::SetImpairment { link: format!("{x}=={y}"), impair: impair.clone() });
        }
        if !up {
            // LAN links are named after their ends when re-created.
            let (x, y) = if a <= b { (a, b) } else { (b, a) };
            cmds.push(Command::SetLinkUp { link: format!("{x}=={y}"), up: false });
        }
    }
    for (node, iface, cidr) in extra_addrs {
        cmds.push(Command::SetIp { node, iface, cidr });
    }
    for name in &topo.order {
        for r in &topo.nodes[name].routes {
            cmds.push(Command::AddRoute { node: name.clone(), route: r.clone() });
        }
    }
    for name in &topo.order {
        if !topo.nodes[name].running {
            cmds.push(Command::StopNode { node: name.clone() });
        }
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::addr::Route;
    use crate::vocab::units::test_values::vid;
    use crate::vocab::NodeKind;
    use crate::vocab::VlanMode;

    #[test]
    fn a_saved_lab_that_wires_a_missing_interface_is_refused() {
        let mut t = Topology::new("lab");
        for n in ["a", "b"] {
            t.add_node(n, NodeKind::Ns).unwrap();
        }
        t.add_lan("sw").unwrap();
        let ia = t.next_iface("a", crate::vocab::Mtu::ETHERNET).unwrap();
        let ib = t.next_iface("b", crate::vocab::Mtu::ETHERNET).unwrap();
        t.add_link("ab", ("a", ia), ("b", ib)).unwrap();
        let ib = t.next_iface("b", crate::vocab::Mtu::ETHERNET).unwrap();
        t.add_lan_member("sw", "b", ib, VlanMode::default()).unwrap();
        let saved = SavedLab { topology: t, disks: Default::default() };
        let json = serde_json::to_value(&saved).unwrap();
        assert!(SavedLab::from_json(json.to_string().as_bytes()).is_ok());
        for (pointer, wrong) in [
            ("/topology/links/ab/a/iface", "eth7"),
            ("/topology/links/ab/b/node", "ghost"),
            ("/topology/lans/sw/members/0/iface", "et}1"),
        ] {
            let mut edited = json.clone();
            *edited.pointer_mut(pointer).unwrap() = wrong.into();
            let why = SavedLab::from_json(edited.to_string().as_bytes()).unwrap_err();
            assert!(why.contains("which no saved node has"), "{pointer}: {why}");
        }
    }

    #[test]
    fn every_detail_comes_back_in_order() {
        let mut t = Topology::new("lab");
        for n in ["a", "b", "c"] {
            t.add_node(n, NodeKind::Ns).unwrap();
        }
        t.add_lan("sw").unwrap();
        t.add_lan("sw2").unwrap();
        let ia = t.plan_iface("a", Some("eth3"), None, crate::vocab::Mtu::new(9000).unwrap()).unwrap();
        let ib = t.next_iface("b", crate::vocab::Mtu::new(9000).unwrap()).unwrap();
        t.add_link("ab", ("a", ia), ("b", ib)).unwrap();
        t.add_addr("a", "eth3", "10.0.0.1/24".parse().unwrap()).unwrap();
        t.add_addr("a", "eth3", "fd00::1/64".parse().unwrap()).unwrap();
        t.set_link_up("ab", false).unwrap();
        let ic = t.next_iface("c", crate::vocab::Mtu::ETHERNET).unwrap();
        t.add_lan_member("sw", "c", ic, VlanMode::Trunk(vec![vid(10), vid(20)])).unwrap();
        t.add_uplink("sw", "sw2", VlanMode::Access(vid(30))).unwrap();
        t.add_route("a", Route { dst: "default".parse().unwrap(), via: Some("10.0.0.2".parse().unwrap()), dev: None })
            .unwrap();
        t.set_running("c", false).unwrap();
        let cmds: Vec<String> = wiring(&t).iter().map(|c| serde_json::to_string(c).unwrap()).collect();
        let find = |needle: &str| {
            cmds.iter().position(|c| c.contains(needle)).unwrap_or_else(|| panic!("{needle} in {cmds:#?}"))
        };
        let link = find(r#""op":"add_link""#);
        assert!(cmds[link].contains(r#""name_a":"eth3""#) && cmds[link].contains(r#""mtu":9000"#), "{}", cmds[link]);
        assert!(cmds[link].contains(r#""link_name":"ab""#) && cmds[link].contains("10.0.0.1/24"), "{}", cmds[link]);
        assert!(find(r#""op":"add_lan","name":"sw""#) < link, "LANs first");
        assert!(find(r#""op":"set_link_up","link":"ab","up":false"#) > link);
        assert!(
            cmds[find(r#""op":"join_lan""#)].contains("Trunk") || cmds[find(r#""op":"join_lan""#)].contains("trunk")
        );
        assert!(find(r#""op":"set_ip""#) > find(r#""op":"join_lan""#), "extra addresses after the interfaces");
        assert!(cmds[find(r#""op":"set_ip""#)].contains("fd00::1/64"));
        assert!(find(r#""op":"add_route""#) > find(r#""op":"set_ip""#));
        assert_eq!(find(r#""op":"stop_node","node":"c""#), cmds.len() - 1, "stopped nodes last");
    }
}
