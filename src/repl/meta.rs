//! The REPL's meta commands as text (sans-IO: a topology or counters in,
//! lines out).
use std::fmt::Write;

use crate::lab::command::PortReport;
use crate::lab::topology::{Attachment, Topology};

pub const COMMANDS: &[(&str, &str)] = &[
    (":help", "[FN]  the API reference, or one function's entry"),
    (":nodes", "nodes, their state and interfaces"),
    (":links", "links and their state"),
    (":net", "the topology as text"),
    (":counters", "per-port switch counters"),
    (":save", "FILE  write a script that rebuilds this topology"),
    (":load", "FILE  run a script into this lab"),
    (":quit", "tear the lab down and leave (also Ctrl-D)"),
];

/// `:nodes`; `facts` gives a node's pid and kind-specific detail.
pub fn nodes(t: &Topology, facts: &dyn Fn(&str) -> (i32, Option<String>)) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<16} {:<9} {:<8} {:>8}  interfaces", "node", "kind", "state", "pid");
    for name in &t.order {
        let n = &t.nodes[name];
        let ifaces: Vec<String> = n
            .ifaces
            .iter()
            .map(|i| {
                let addrs: Vec<String> = i.addrs.iter().map(|a| a.to_string()).collect();
                if addrs.is_empty() {
                    i.name.clone()
                } else {
                    format!("{} {}", i.name, addrs.join(" "))
                }
            })
            .collect();
        let state = if n.running { "running" } else { "stopped" };
        let (pid, detail) = facts(name);
        // kvm nodes show how they run: "kvm/tcg" or "kvm/kvm".
        let kind = match detail.as_deref().and_then(|d| d.strip_prefix("accel=")) {
            Some(accel) => format!("{}/{accel}", n.kind),
            None => n.kind.to_string(),
        };
        let _ = writeln!(out, "{:<16} {:<9} {:<8} {:>8}  {}", name, kind, state, pid, ifaces.join(", "));
    }
    out
}

/// `:links`.
pub fn links(t: &Topology) -> String {
    let mut out = String::new();
    for l in t.links.values() {
        let _ = writeln!(out, "{:<24} {} <-> {}  {}", l.name, l.a, l.b, if l.up { "up" } else { "DOWN" });
    }
    for u in t.uplinks.values() {
        let _ = writeln!(out, "{:<24} {} <-> {}  {:?}  {}", u.name, u.a, u.b, u.vlan, if u.up { "up" } else { "DOWN" });
    }
    if out.is_empty() {
        out.push_str("no links\n");
    }
    out
}

/// `:net`: every node with what each interface is plugged into, then LANs.
pub fn net(t: &Topology) -> String {
    let mut out = String::new();
    for name in &t.order {
        let n = &t.nodes[name];
        let stopped = if n.running { "" } else { " (stopped)" };
        // What is not a node of its own says what it is.
        let what = match (n.kind, &n.options.plug) {
            (crate::vocab::NodeKind::Nat, _) => " [nat: the host's network]".to_string(),
            (crate::vocab::NodeKind::Host, _) => " [an interface of the host]".to_string(),
            (crate::vocab::NodeKind::Vxlan, _) => match &n.options.vxlan {
                Some(v) => format!(" [vxlan VNI {} to {} port {}]", v.vni, v.remote, v.port),
                None => " [vxlan]".to_string(),
            },
            (crate::vocab::NodeKind::Plug, Some(p)) => {
                format!(" [{} plug at {}: its clients join LAN {}]", p.protocol, p.path.display(), p.lan)
            }
            _ => String::new(),
        };
        let _ = writeln!(out, "{name}{what}{stopped}");
        for i in &n.ifaces {
            let peer = match &i.attachment {
                Attachment::Link(l) => {
                    let link = &t.links[l];
                    let other = if link.a.node == *name && link.a.iface == i.name { &link.b } else { &link.a };
                    format!("{other} via {l}{}", if link.up { "" } else { " DOWN" })
                }
                Attachment::Lan(l) => match &i.vlan {
                    Some(v) if *v != Default::default() => format!("LAN {l} {v:?}"),
                    _ => format!("LAN {l}"),
                },
            };
            let addrs: Vec<String> = i.addrs.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(out, "  {:<6} -> {peer}  {}", i.name, addrs.join(" "));
        }
    }
    for l in t.lans.values() {
        let members: Vec<String> = l.members.iter().map(|m| m.to_string()).collect();
        let _ = writeln!(out, "LAN {}: {}", l.name, members.join(", "));
    }
    for u in t.uplinks.values() {
        let _ = writeln!(out, "LAN {} <-> LAN {} ({:?})", u.a, u.b, u.vlan);
    }
    if out.is_empty() {
        out.push_str("the lab is empty\n");
    }
    out
}

/// `:counters`.
pub fn counters(ports: &[PortReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<24} {:>10} {:>12} {:>10} {:>12}  drops (rx: from the node, tx: to it)",
        "port", "segment", "rx frames", "rx bytes", "tx frames", "tx bytes"
    );
    for p in ports {
        let c = &p.counters;
        let drops: Vec<String> = c
            .rx_drops
            .iter()
            .map(|(k, v)| format!("rx:{k}={v}"))
            .chain(c.tx_drops.iter().map(|(k, v)| format!("tx:{k}={v}")))
            .collect();
        let _ = writeln!(
            out,
            "{:<20} {:<24} {:>10} {:>12} {:>10} {:>12}  {}",
            format!("{}:{}", p.node, p.iface),
            p.segment,
            c.rx_frames,
            c.rx_bytes,
            c.tx_frames,
            c.tx_bytes,
            drops.join(" ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::NodeKind;
    use crate::vocab::VlanMode;

    fn sample() -> Topology {
        let mut t = Topology::new("lab");
        t.add_node("a", NodeKind::Ns).unwrap();
        t.add_node("b", NodeKind::Ns).unwrap();
        t.add_lan("sw").unwrap();
        let ia = t.next_iface("a", crate::vocab::Mtu::ETHERNET).unwrap();
        let ib = t.next_iface("b", crate::vocab::Mtu::ETHERNET).unwrap();
        t.add_link("a--b", ("a", ia), ("b", ib)).unwrap();
        t.add_addr("a", "eth0", "10.0.0.1/24".parse().unwrap()).unwrap();
        let i = t.next_iface("b", crate::vocab::Mtu::ETHERNET).unwrap();
        t.add_lan_member("sw", "b", i, VlanMode::Access(crate::vocab::VlanId::new(10).unwrap())).unwrap();
        t.set_link_up("a--b", false).unwrap();
        t
    }

    #[test]
    fn net_shows_peers_lans_and_state() {
        let text = net(&sample());
        assert!(text.contains("  eth0   -> b:eth0 via a--b DOWN  10.0.0.1/24"), "{text}");
        assert!(text.contains("  eth1   -> LAN sw Access(10)"), "{text}");
        assert!(text.contains("LAN sw: b:eth1"), "{text}");
    }

    #[test]
    fn nodes_and_links_are_tabulated() {
        let t = sample();
        let text = nodes(&t, &|n| (42, (n == "b").then(|| "accel=tcg".to_string())));
        assert!(text.contains("b                kvm/tcg") || text.contains("/tcg"), "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with("a "), "{text}");
        assert!(text.contains("eth0 10.0.0.1/24"), "{text}");
        assert!(links(&t).contains("a:eth0 <-> b:eth0  DOWN"), "{}", links(&t));
    }
}
