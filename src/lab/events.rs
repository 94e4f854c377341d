//! What changed in a lab, as events for watchers (attached clients, the
//! web GUI): found by comparing the topology before and after a command,
//! so a change is reported the same way whoever made it (a script, an
//! attached REPL, the GUI, a node that died). Sans-IO.
//!
//! Events say what changed, not the whole new state: a client that draws
//! the lab fetches the topology again (`Command::Topology`) when one comes.
use serde::{Deserialize, Serialize};

use super::command::PortReport;
use super::topology::{NodeModel, Topology};
use crate::vocab::NodeKind;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    NodeAdded {
        node: String,
        kind: NodeKind,
    },
    NodeRemoved {
        node: String,
    },
    /// A stopped node runs again.
    NodeUp {
        node: String,
    },
    /// A node was stopped (or died: `NodeDead` comes first).
    NodeDown {
        node: String,
    },
    /// A node's process exited without the lab asking.
    NodeDead {
        node: String,
        /// Why, when the node could say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// Interfaces, addresses or routes of a node changed.
    NodeChanged {
        node: String,
    },
    LanAdded {
        lan: String,
    },
    LanRemoved {
        lan: String,
    },
    /// A node's port (`node:iface`) joined or left a LAN.
    LanJoined {
        lan: String,
        port: String,
    },
    LanLeft {
        lan: String,
        port: String,
    },
    /// A point-to-point link or a link between LANs.
    LinkAdded {
        link: String,
    },
    LinkRemoved {
        link: String,
    },
    LinkUp {
        link: String,
    },
    LinkDown {
        link: String,
    },
    /// The impairments of a link, link between LANs or LAN port changed.
    Impaired {
        target: String,
    },
    /// Every port's counters (sent about once a second to watchers).
    Counters {
        ports: Vec<PortReport>,
    },
    /// This watcher fell behind and lost events: fetch the topology again.
    Lagged,
}

fn node_events(name: &str, before: Option<&NodeModel>, after: Option<&NodeModel>, out: &mut Vec<Event>) {
    let node = name.to_string();
    match (before, after) {
        (None, Some(a)) => {
            out.push(Event::NodeAdded { node, kind: a.kind });
        }
        (Some(_), None) => out.push(Event::NodeRemoved { node }),
        (Some(b), Some(a)) => {
            if a.died && !b.died {
                out.push(Event::NodeDead { node: node.clone(), why: a.death.clone() });
            }
            if a.running != b.running {
                out.push(if a.running {
                    Event::NodeUp { node: node.clone() }
                } else {
                    Event::NodeDown { node: node.clone() }
                });
            }
            let ifaces_moved = a.ifaces.len() != b.ifaces.len()
                || a.ifaces
                    .iter()
                    .zip(&b.ifaces)
                    .any(|(x, y)| x.name != y.name || x.addrs != y.addrs || x.mtu != y.mtu);
            if ifaces_moved || a.routes != b.routes {
                out.push(Event::NodeChanged { node: node.clone() });
            }
            for ia in &a.ifaces {
                if let Some(ib) = b.iface(&ia.name) {
                    if ia.impair != ib.impair && matches!(ia.attachment, super::topology::Attachment::Lan(_)) {
                        out.push(Event::Impaired { target: format!("{name}:{}", ia.name) });
                    }
                }
            }
        }
        (None, None) => {}
    }
}

/// The events that take `before` to `after`, in a stable order: nodes,
/// LANs, links; additions before changes before removals within each.
pub fn diff(before: &Topology, after: &Topology) -> Vec<Event> {
    let mut out = Vec::new();
    for (name, a) in &after.nodes {
        node_events(name, before.nodes.get(name), Some(a), &mut out);
    }
    for (name, b) in &before.nodes {
        if !after.nodes.contains_key(name) {
            node_events(name, Some(b), None, &mut out);
        }
    }
    for (name, a) in &after.lans {
        let old = before.lans.get(name);
        if old.is_none() {
            out.push(Event::LanAdded { lan: name.clone() });
        }
        let old_members = old.map(|l| l.members.as_slice()).unwrap_or_default();
        for m in a.members.iter().filter(|m| !old_members.contains(m)) {
            out.push(Event::LanJoined { lan: name.clone(), port: m.to_string() });
        }
        for m in old_members.iter().filter(|m| !a.members.contains(m)) {
            out.push(Event::LanLeft { lan: name.clone(), port: m.to_string() });
        }
    }
    for name in before.lans.keys().filter(|n| !after.lans.contains_key(*n)) {
        out.push(Event::LanRemoved { lan: name.clone() });
    }
    // Point-to-point links and links between LANs alike: (up, impairment).
    let links = |t: &Topology| -> std::collections::BTreeMap<String, (bool, crate::vocab::impair::LinkImpairment)> {
        t.links
            .values()
            .map(|l| (l.name.clone(), (l.up, l.impair.clone())))
            .chain(t.uplinks.values().map(|u| (u.name.clone(), (u.up, u.impair.clone()))))
            .collect()
    };
    let (lb, la) = (links(before), links(after));
    for (name, (up, impair)) in &la {
        match lb.get(name) {
            None => out.push(Event::LinkAdded { link: name.clone() }),
            Some((was_up, was_impair)) => {
                if up != was_up {
                    out.push(if *up {
                        Event::LinkUp { link: name.clone() }
                    } else {
                        Event::LinkDown { link: name.clone() }
                    });
                }
                if impair != was_impair {
                    out.push(Event::Impaired { target: name.clone() });
                }
            }
        }
    }
    for name in lb.keys().filter(|n| !la.contains_key(*n)) {
        out.push(Event::LinkRemoved { link: name.clone() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::impair::LinkImpairment;

    fn lab() -> Topology {
        let mut t = Topology::new("t");
        for n in ["a", "b"] {
            t.add_node(n, NodeKind::Ns).unwrap();
        }
        t
    }

    #[test]
    fn nodes_links_and_lans_coming_and_going_are_events() {
        let before = lab();
        let mut after = before.clone();
        after.add_node("c", NodeKind::Uml).unwrap();
        after.remove_node("a");
        after.add_lan("sw").unwrap();
        let events = diff(&before, &after);
        assert_eq!(
            events,
            vec![
                Event::NodeAdded { node: "c".into(), kind: NodeKind::Uml },
                Event::NodeRemoved { node: "a".into() },
                Event::LanAdded { lan: "sw".into() },
            ]
        );
        assert!(diff(&after, &after).is_empty(), "no change, no event");
    }

    #[test]
    fn link_state_impairments_and_deaths_are_events() {
        let mut before = lab();
        let x = before.plan_iface("a", None, None, crate::vocab::Mtu::ETHERNET).unwrap();
        let y = before.plan_iface("b", None, None, crate::vocab::Mtu::ETHERNET).unwrap();
        before.add_link("a--b", ("a", x), ("b", y)).unwrap();
        let link = before.links.keys().next().unwrap().clone();
        let mut after = before.clone();
        after.links.get_mut(&link).unwrap().up = false;
        after.links.get_mut(&link).unwrap().impair = LinkImpairment { seed: Some(1), ..Default::default() };
        let b = after.nodes.get_mut("b").unwrap();
        b.running = false;
        b.died = true;
        let events = diff(&before, &after);
        assert_eq!(
            events,
            vec![
                Event::NodeDead { node: "b".into(), why: None },
                Event::NodeDown { node: "b".into() },
                Event::LinkDown { link: link.clone() },
                Event::Impaired { target: link.clone() },
            ]
        );
        let json = serde_json::to_string(&events[2]).unwrap();
        assert_eq!(json, format!(r#"{{"event":"link_down","link":"{link}"}}"#));
    }
}
