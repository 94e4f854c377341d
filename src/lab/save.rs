//! Writing a topology back out as a Rhai script that rebuilds it, like
//! Cloonix's `lst` (sans-IO: a `Topology` in, text out).
//!
//! Interface names, link names, addresses, VLANs, MTUs, routes, link
//! states and stopped nodes are all written explicitly, so running the
//! script in a lab of the same name gives the same topology, MACs included.
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use super::topology::{Iface, Topology};
use crate::vocab::NodeKind;
use crate::vocab::VlanMode;

/// Script variable names for nodes and LANs: `n_<name>` and `l_<name>`,
/// made unique.
fn variables(topo: &Topology) -> HashMap<String, String> {
    let mut used = HashSet::new();
    let mut vars = HashMap::new();
    let names = topo.order.iter().map(|n| ("n", n)).chain(topo.lans.keys().map(|l| ("l", l)));
    for (prefix, name) in names {
        let base = format!("{prefix}_{}", name.replace('-', "_"));
        let var = (1..).map(|i| if i == 1 { base.clone() } else { format!("{base}_{i}") }).find(|v| !used.contains(v));
        let var = var.expect("a free variable name exists");
        used.insert(var.clone());
        vars.insert(name.clone(), var);
    }
    vars
}

fn vlan_option(mode: &VlanMode) -> Option<String> {
    match mode {
        VlanMode::Access(v) if *v == crate::vocab::VlanId::DEFAULT => None,
        VlanMode::Access(v) => Some(format!("vlan: {v}")),
        VlanMode::Trunk(vs) => Some(format!("trunk: {vs:?}")),
    }
}

/// `key: value` words of a wire's impairments, as the API takes them.
fn impairment_options(imp: &crate::vocab::impair::LinkImpairment) -> Vec<String> {
    super::impairment::render(imp).iter().map(|(k, v)| format!("{k}: {}", super::impairment::to_rhai(v))).collect()
}

fn iface<'a>(topo: &'a Topology, node: &str, name: &str) -> &'a Iface {
    topo.nodes[node].iface(name).expect("the model references existing interfaces")
}

/// The script that rebuilds `topo`.
pub fn to_script(topo: &Topology) -> String {
    let vars = variables(topo);
    let mut out = String::new();
    let _ = writeln!(out, "// Topology of clonet lab {:?}, written by :save.", topo.lab);
    let _ = writeln!(out, "// Run it with `clonet run --name {} FILE` to rebuild the same lab.", topo.lab);
    if !topo.about.is_empty() {
        let facts: Vec<String> = topo.about.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
        let _ = writeln!(out, "lab_info(#{{ {} }});", facts.join(", "));
    }
    for name in &topo.order {
        let n = &topo.nodes[name];
        let kind = match n.kind {
            NodeKind::Ns => {
                let mut o = Vec::new();
                if let Some(r) = &n.options.rootfs {
                    o.push(format!("rootfs: {:?}", r.display().to_string()));
                }
                if let Some(image) = &n.options.oci {
                    o.push(format!("image: {image:?}"));
                }
                if let Some(cmd) = &n.options.cmd {
                    o.push(format!("cmd: {cmd:?}"));
                }
                if !n.options.binds.is_empty() {
                    let binds: Vec<String> = n
                        .options
                        .binds
                        .iter()
                        .map(|b| {
                            let ro = if b.read_only { ":ro" } else { "" };
                            format!("{:?}", format!("{}:{}{ro}", b.source.display(), b.target))
                        })
                        .collect();
                    o.push(format!("binds: [{}]", binds.join(", ")));
                }
                if !n.options.env.is_empty() {
                    let vars: Vec<String> = n.options.env.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
                    o.push(format!("env: #{{ {} }}", vars.join(", ")));
                }
                if o.is_empty() {
                    String::new()
                } else {
                    format!(", #{{ {} }}", o.join(", "))
                }
            }
            NodeKind::Nat | NodeKind::Host | NodeKind::Plug | NodeKind::Vxlan => String::new(),
            NodeKind::Uml | NodeKind::Kvm => {
                let mut o = vec![format!("kind: \"{}\"", n.kind)];
                if let Some(mem) = n.options.mem_mb {
                    o.push(format!("mem: {mem}"));
                }
                if let Some(cpus) = n.options.cpus {
                    o.push(format!("cpus: {cpus}"));
                }
                if let Some(accel) = &n.options.accel {
                    o.push(format!("accel: {accel:?}"));
                }
                if let Some(image) = &n.options.image {
                    o.push(format!("image: {:?}", image.display().to_string()));
                }
                if !n.options.args.is_empty() {
                    o.push(format!("args: {:?}", n.options.args));
                }
                format!(", #{{ {} }}", o.join(", "))
            }
        };
        if matches!(n.kind, NodeKind::Host | NodeKind::Plug | NodeKind::Vxlan) {
            // Written with its LAN (`host_iface`, `plug`, `vxlan`), below.
            continue;
        }
        if n.kind == NodeKind::Nat {
            let forward: Vec<String> = n.options.forward.iter().map(|f| f.to_string()).collect();
            let options = if forward.is_empty() { String::new() } else { format!(", #{{ forward: {forward:?} }}") };
            let _ = writeln!(out, "let {} = nat({name:?}{options});", vars[name]);
            continue;
        }
        let _ = writeln!(out, "let {} = node({name:?}{kind});", vars[name]);
    }
    for name in topo.lans.keys() {
        let _ = writeln!(out, "let {} = lan({name:?});", vars[name]);
    }
    for name in &topo.order {
        let n = &topo.nodes[name];
        let Some(p) = n.options.plug.as_ref().filter(|_| n.kind == NodeKind::Plug) else { continue };
        let mut o = vec![
            format!("name: {name:?}"),
            format!("protocol: {:?}", p.protocol.name()),
            format!("path: {:?}", p.path.display().to_string()),
        ];
        if let Some(mtu) = p.mtu {
            o.push(format!("mtu: {mtu}"));
        }
        o.extend(p.vlan.as_ref().and_then(vlan_option));
        // Its clients are programs of their own: they connect again.
        let _ = writeln!(out, "let {} = plug({}, #{{ {} }});", vars[name], vars[&p.lan], o.join(", "));
    }
    let mut extra_addrs = Vec::new();
    let mut opts_of = |i: &Iface, node: &str, key_ip: &str, key_iface: &str| {
        let mut o = vec![format!("{key_iface}: {:?}", i.name)];
        if i.mac_given {
            o.push(format!("{}: \"{}\"", key_iface.replace("iface", "mac"), i.mac));
        }
        if let Some(first) = i.addrs.first() {
            o.push(format!("{key_ip}: \"{first}\""));
        }
        for a in i.addrs.iter().skip(1) {
            extra_addrs.push(format!("{}.set_ip({:?}, \"{a}\");", vars[node], i.name));
        }
        o
    };
    for l in topo.links.values() {
        let (ia, ib) = (iface(topo, &l.a.node, &l.a.iface), iface(topo, &l.b.node, &l.b.iface));
        let mut o = vec![format!("name: {:?}", l.name)];
        o.extend(opts_of(ia, &l.a.node, "ip_a", "iface_a"));
        o.extend(opts_of(ib, &l.b.node, "ip_b", "iface_b"));
        if ia.mtu != crate::vocab::Mtu::ETHERNET {
            o.push(format!("mtu: {}", ia.mtu));
        }
        o.extend(impairment_options(&l.impair));
        let down = if l.up { "" } else { ".down()" };
        let _ = writeln!(out, "link({}, {}, #{{ {} }}){down};", vars[&l.a.node], vars[&l.b.node], o.join(", "));
    }
    for lan in topo.lans.values() {
        for m in &lan.members {
            if topo.nodes.get(&m.node).is_some_and(|n| n.kind == NodeKind::Plug) {
                continue;
            }
            let i = iface(topo, &m.node, &m.iface);
            let mut o = opts_of(i, &m.node, "ip", "iface");
            if i.mtu != crate::vocab::Mtu::ETHERNET {
                o.push(format!("mtu: {}", i.mtu));
            }
            o.extend(i.vlan.as_ref().and_then(vlan_option));
            o.extend(impairment_options(&i.impair));
            if let Some(v) = topo.nodes.get(&m.node).and_then(|n| n.options.vxlan.as_ref()) {
                o[0] = format!("name: {:?}", m.node);
                o.insert(
                    1,
                    format!("vni: {}, remote: \"{}\", port: {}, local_port: {}", v.vni, v.remote, v.port, v.local_port),
                );
                let _ = writeln!(out, "let {} = vxlan({}, #{{ {} }});", vars[&m.node], vars[&lan.name], o.join(", "));
                continue;
            }
            if topo.nodes.get(&m.node).is_some_and(|n| n.kind == NodeKind::Host) {
                o[0] = format!("name: {:?}", m.node);
                let _ =
                    writeln!(out, "let {} = host_iface({}, #{{ {} }});", vars[&m.node], vars[&lan.name], o.join(", "));
                continue;
            }
            let _ = writeln!(out, "link({}, {}, #{{ {} }});", vars[&m.node], vars[&lan.name], o.join(", "));
        }
    }
    for u in topo.uplinks.values() {
        let o = vlan_option(&u.vlan).map(|v| format!(", #{{ {v} }}")).unwrap_or_default();
        let down = if u.up { "" } else { ".down()" };
        let set = if u.impair.is_noop() {
            String::new()
        } else {
            format!(".set(#{{ {} }})", impairment_options(&u.impair).join(", "))
        };
        let _ = writeln!(out, "link({}, {}{o}){set}{down};", vars[&u.a], vars[&u.b]);
    }
    for line in extra_addrs {
        let _ = writeln!(out, "{line}");
    }
    for name in &topo.order {
        let n = &topo.nodes[name];
        for r in &n.routes {
            let mut o = Vec::new();
            if let Some(via) = r.via {
                o.push(format!("via: \"{via}\""));
            }
            if let Some(dev) = &r.dev {
                o.push(format!("dev: {dev:?}"));
            }
            let _ = writeln!(out, "{}.add_route(\"{}\", #{{ {} }});", vars[name], r.dst, o.join(", "));
        }
    }
    for name in &topo.order {
        if !topo.nodes[name].running {
            let _ = writeln!(out, "{}.stop();", vars[name]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::addr::Route;
    use crate::vocab::units::test_values::{delay, p as prob, vid};
    use crate::vocab::NodeKind;

    fn sample() -> Topology {
        let mut t = Topology::new("lab");
        for n in ["a", "b-1", "b_1"] {
            t.add_node(n, NodeKind::Ns).unwrap();
        }
        let options = crate::vocab::NodeOptions {
            mem_mb: Some(crate::vocab::MemMb::new(128).unwrap()),
            cpus: None,
            accel: None,
            rootfs: None,
            image: Some("/img/disk.img".into()),
            args: vec!["eth0=daemon,,unix,/tmp/ctl".into()],
            forward: Vec::new(),
            plug: None,
            ..Default::default()
        };
        t.add_node_with("u", NodeKind::Uml, options).unwrap();
        let forward = vec!["tcp:8080:80".parse().unwrap()];
        t.add_node_with("gw", NodeKind::Nat, crate::vocab::NodeOptions { forward, ..Default::default() }).unwrap();
        t.add_lan("sw").unwrap();
        t.add_lan("sw2").unwrap();
        let ia = t.plan_iface("a", Some("eth3"), None, crate::vocab::Mtu::new(9000).unwrap()).unwrap();
        let ib = t.next_iface("b-1", crate::vocab::Mtu::new(9000).unwrap()).unwrap();
        t.add_link("a--b-1#2", ("a", ia), ("b-1", ib)).unwrap();
        t.add_addr("a", "eth3", "10.0.0.1/24".parse().unwrap()).unwrap();
        t.add_addr("a", "eth3", "fd00::1/64".parse().unwrap()).unwrap();
        t.set_link_up("a--b-1#2", false).unwrap();
        let i = t.next_iface("b_1", crate::vocab::Mtu::ETHERNET).unwrap();
        t.add_lan_member("sw", "b_1", i, VlanMode::Trunk(vec![vid(10), vid(20)])).unwrap();
        t.add_uplink("sw", "sw2", VlanMode::Access(vid(30))).unwrap();
        t.add_route("a", Route { dst: "default".parse().unwrap(), via: Some("10.0.0.2".parse().unwrap()), dev: None })
            .unwrap();
        t.set_running("b_1", false).unwrap();
        let delayed = crate::vocab::impair::Params {
            delay: delay(std::time::Duration::from_millis(20)),
            loss: crate::switch::impair::LossModel::Random { p: prob(0.015), correlation: prob(0.0) },
            ..Default::default()
        };
        t.links.get_mut("a--b-1#2").unwrap().impair =
            crate::vocab::impair::LinkImpairment { a_to_b: delayed.clone(), b_to_a: delayed.clone(), seed: Some(9) };
        t.uplinks.values_mut().next().unwrap().impair =
            crate::vocab::impair::LinkImpairment { a_to_b: delayed, b_to_a: Default::default(), seed: None };
        t
    }

    #[test]
    fn writes_every_detail_explicitly() {
        let s = to_script(&sample());
        let expected = [
            r#"let n_a = node("a");"#,
            r#"let n_b_1 = node("b-1");"#,
            r#"let n_b_1_2 = node("b_1");"#,
            r#"let n_u = node("u", #{ kind: "uml", mem: 128, image: "/img/disk.img", args: ["eth0=daemon,,unix,/tmp/ctl"] });"#,
            r#"let n_gw = nat("gw", #{ forward: ["tcp:8080:80"] });"#,
            r#"let l_sw = lan("sw");"#,
            r#"link(n_a, n_b_1, #{ name: "a--b-1#2", iface_a: "eth3", ip_a: "10.0.0.1/24", iface_b: "eth0", mtu: 9000, delay: "20ms", loss: 1.5, seed: 9 }).down();"#,
            r#"link(n_b_1_2, l_sw, #{ iface: "eth0", trunk: [10, 20] });"#,
            r#"link(l_sw, l_sw2, #{ vlan: 30 }).set(#{ a_to_b: #{ delay: "20ms", loss: 1.5 }, b_to_a: #{} });"#,
            r#"n_a.set_ip("eth3", "fd00::1/64");"#,
            r#"n_a.add_route("default", #{ via: "10.0.0.2" });"#,
            r#"n_b_1_2.stop();"#,
        ];
        for line in expected {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in:\n{s}");
        }
    }

    #[test]
    fn a_plug_is_written_with_its_lan_and_its_clients_are_not() {
        let mut t = sample();
        let spec = crate::vocab::PlugSpec {
            protocol: crate::vocab::PlugProtocol::Vde,
            path: "/tmp/lab/vde".into(),
            lan: "sw".into(),
            vlan: Some(VlanMode::Access(crate::vocab::VlanId::new(10).unwrap())),
            mtu: None,
        };
        let options = crate::vocab::NodeOptions { plug: Some(spec), ..Default::default() };
        t.add_node_with("vms", NodeKind::Plug, options).unwrap();
        let client = t.plan_iface("vms", Some("c1"), None, crate::vocab::Mtu::ETHERNET).unwrap();
        t.add_lan_member("sw", "vms", client, VlanMode::default()).unwrap();
        let s = to_script(&t);
        let plug = r#"let n_vms = plug(l_sw, #{ name: "vms", protocol: "vde", path: "/tmp/lab/vde", vlan: 10 });"#;
        assert!(s.lines().any(|l| l == plug), "missing {plug:?} in:\n{s}");
        assert!(!s.contains("link(n_vms"), "a client is a program of its own: {s}");
        let lan_at = s.find(r#"lan("sw")"#).unwrap();
        assert!(s.find(plug).unwrap() > lan_at, "after its LAN");
        crate::script::bare_engine(std::path::Path::new(".")).compile(&s).expect("valid Rhai");
    }

    #[test]
    fn a_vxlan_endpoint_is_written_with_its_lan_and_its_tunnel() {
        let mut t = sample();
        let spec =
            crate::vocab::VxlanSpec { vni: 42, remote: "10.77.0.2".parse().unwrap(), port: 4789, local_port: 4790 };
        let options = crate::vocab::NodeOptions { vxlan: Some(spec), ..Default::default() };
        t.add_node_with("vx", NodeKind::Vxlan, options).unwrap();
        let port = t.plan_iface("vx", Some("tunnel"), None, crate::vocab::Mtu::new(1450).unwrap()).unwrap();
        t.add_lan_member("sw", "vx", port, VlanMode::default()).unwrap();
        let s = to_script(&t);
        let line = r#"let n_vx = vxlan(l_sw, #{ name: "vx", vni: 42, remote: "10.77.0.2", port: 4789, local_port: 4790, mtu: 1450 });"#;
        assert!(s.lines().any(|l| l == line), "missing {line:?} in:\n{s}");
        assert!(!s.contains("node(\"vx\""), "not a node of its own: {s}");
        crate::script::bare_engine(std::path::Path::new(".")).compile(&s).expect("valid Rhai");
    }

    #[test]
    fn the_script_compiles() {
        let engine = crate::script::bare_engine(std::path::Path::new("."));
        engine.compile(to_script(&sample())).expect("valid Rhai");
    }
}
