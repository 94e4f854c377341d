//! The `link_api` Rhai module: links between nodes, LANs (the switch's
//! MAC-learning segments), links between LANs, ports, impairments, and
//! their counters.
//!
//! Owns: the link and LAN functions scripts call, and reading their
//! options: MTU, VLANs, interface names and impairments. Must not touch:
//! the host, except through lab `Command`s.
use rhai::plugin::*;
use rhai::{Array, Dynamic, Map, NativeCallContext};

use super::{
    call, check_keys, lab_error, lab_topology, opt_cidr, opt_int, opt_str, port_counters, refused, script_error,
    LanRef, LinkRef, NodeRef, RhaiResult,
};
use crate::lab::command::LinkOptions;
use crate::lab::{Command, LabError, Reply};
use crate::vocab::NodeKind;

fn link_options(fn_name: &str, opts: &Map) -> RhaiResult<LinkOptions> {
    use crate::vocab::{Mtu, VlanId, VlanMode};
    let mtu = opt_int(fn_name, opts, "mtu")?.map(|m| Mtu::new(m).map_err(refused(fn_name))).transpose()?;
    let vid = |v: i64| VlanId::new(v).map_err(refused(fn_name));
    let access = opt_int(fn_name, opts, "vlan")?.map(vid).transpose()?;
    let trunk = match opts.get("trunk") {
        None => None,
        Some(v) => {
            let list = v
                .clone()
                .into_array()
                .map_err(|t| script_error(format!("{fn_name}(): trunk must be an array of VLAN ids, not {t}")))?;
            let mut vids = Vec::new();
            for x in list {
                let id =
                    x.as_int().map_err(|t| script_error(format!("{fn_name}(): VLAN ids are integers, not {t}")))?;
                vids.push(vid(id)?);
            }
            // Scripts may list a VLAN twice; the command carries it once.
            vids.sort_unstable();
            vids.dedup();
            Some(VlanMode::trunk(vids).map_err(refused(fn_name))?)
        }
    };
    let vlan = match (access, trunk) {
        (Some(_), Some(_)) => {
            return Err(script_error(format!("{fn_name}(): a port is either vlan or trunk, not both")))
        }
        (Some(v), None) => Some(VlanMode::Access(v)),
        (None, Some(t)) => Some(t),
        (None, None) => None,
    };
    Ok(LinkOptions { mtu, vlan, ..Default::default() })
}

/// A script value as an engine-neutral option value.
fn opt_value(key: &str, v: &Dynamic) -> RhaiResult<crate::lab::impairment::OptValue> {
    use crate::lab::impairment::OptValue;
    if let Ok(i) = v.as_int() {
        return Ok(OptValue::Int(i));
    }
    if let Ok(f) = v.as_float() {
        return Ok(OptValue::Number(f));
    }
    if v.is_string() {
        return Ok(OptValue::Text(v.clone().into_string().unwrap_or_default()));
    }
    if let Some(m) = v.clone().try_cast::<Map>() {
        return m
            .iter()
            .map(|(k, v)| Ok((k.to_string(), opt_value(k, v)?)))
            .collect::<RhaiResult<_>>()
            .map(OptValue::Map);
    }
    Err(script_error(format!("option {key}: {} is not a number, string or map", v.type_name())))
}

fn to_dynamic(v: &crate::lab::impairment::OptValue) -> Dynamic {
    use crate::lab::impairment::OptValue;
    match v {
        OptValue::Text(t) => t.clone().into(),
        OptValue::Number(n) => (*n).into(),
        OptValue::Int(i) => (*i).into(),
        OptValue::Map(m) => m.iter().map(|(k, v)| (k.into(), to_dynamic(v))).collect::<Map>().into(),
    }
}

/// The impairment options of a map (None when it has none).
fn impairment(fn_name: &str, opts: &Map) -> RhaiResult<Option<crate::vocab::impair::LinkImpairment>> {
    let values: Vec<(String, crate::lab::impairment::OptValue)> = opts
        .iter()
        .filter(|(k, _)| crate::lab::impairment::is_impairment_key(k))
        .map(|(k, v)| Ok((k.to_string(), opt_value(k, v)?)))
        .collect::<RhaiResult<_>>()?;
    crate::lab::impairment::parse(&values).map_err(|e| script_error(format!("{fn_name}(): {e}")))
}

/// Option keys of `link()` plus every impairment key.
fn with_impairment_keys(keys: &[&'static str]) -> Vec<&'static str> {
    let mut all = keys.to_vec();
    all.extend(crate::lab::impairment::DIRECTION_KEYS);
    all.extend(crate::lab::impairment::LINK_KEYS);
    all
}

/// A MAC address option (`"02:00:00:00:00:01"`).
fn opt_mac(fn_name: &str, options: &Map, key: &str) -> RhaiResult<Option<crate::vocab::MacAddr>> {
    opt_str(fn_name, options, key)?
        .map(|text| text.parse().map_err(|e| script_error(format!("{fn_name}(): option {key}: {e}"))))
        .transpose()
}

/// An address option: a CIDR, or `"dhcp"` (then true).
fn ip_or_dhcp(options: &Map, key: &str) -> RhaiResult<(Option<crate::vocab::addr::Cidr>, bool)> {
    if opt_str("link", options, key)?.as_deref() == Some("dhcp") {
        return Ok((None, true));
    }
    Ok((opt_cidr("link", options, key)?, false))
}

fn link_ref(l: &crate::lab::topology::LinkModel) -> LinkRef {
    LinkRef { name: l.name.clone(), a: (l.a.node.clone(), l.a.iface.clone()), b: (l.b.node.clone(), l.b.iface.clone()) }
}

fn add_link(ctx: &NativeCallContext, a: &NodeRef, b: &NodeRef, options: &Map) -> RhaiResult<LinkRef> {
    if options.contains_key("vlan") || options.contains_key("trunk") {
        return Err(lab_error(LabError::VlanOnLink));
    }
    check_keys(
        "link",
        options,
        &with_impairment_keys(&["ip_a", "ip_b", "mtu", "iface_a", "iface_b", "mac_a", "mac_b", "name"]),
    )?;
    let mut link_opts = link_options("link", options)?;
    link_opts.impair = impairment("link", options)?;
    link_opts.link_name = opt_str("link", options, "name")?;
    link_opts.name_a = opt_str("link", options, "iface_a")?;
    link_opts.name_b = opt_str("link", options, "iface_b")?;
    link_opts.mac_a = opt_mac("link", options, "mac_a")?;
    link_opts.mac_b = opt_mac("link", options, "mac_b")?;
    let (ip_a, dhcp_a) = ip_or_dhcp(options, "ip_a")?;
    let (ip_b, dhcp_b) = ip_or_dhcp(options, "ip_b")?;
    (link_opts.dhcp_a, link_opts.dhcp_b) = (dhcp_a, dhcp_b);
    let cmd = Command::AddLink { a: a.name.clone(), b: b.name.clone(), ip_a, ip_b, options: link_opts };
    match call(ctx, cmd)? {
        Reply::Link(l) => Ok(link_ref(&l)),
        _ => Err(script_error("unexpected reply")),
    }
}

fn join(ctx: &NativeCallContext, node: &NodeRef, lan: &LanRef, options: &Map) -> RhaiResult<String> {
    check_keys("link", options, &with_impairment_keys(&["ip", "mtu", "vlan", "trunk", "iface", "mac"]))?;
    let mut link_opts = link_options("link", options)?;
    link_opts.impair = impairment("link", options)?;
    link_opts.name_a = opt_str("link", options, "iface")?;
    link_opts.mac_a = opt_mac("link", options, "mac")?;
    let (ip, dhcp) = ip_or_dhcp(options, "ip")?;
    link_opts.dhcp_a = dhcp;
    let cmd = Command::JoinLan { node: node.name.clone(), lan: lan.name.clone(), ip, options: link_opts };
    match call(ctx, cmd)? {
        Reply::Iface { iface, .. } => Ok(iface),
        _ => Err(script_error("unexpected reply")),
    }
}

/// The ports of a plug's clients, as `port()` gives a node's.
fn plug_clients(ctx: &NativeCallContext, node: &NodeRef) -> RhaiResult<Array> {
    let topo = lab_topology(ctx)?;
    let model = topo.node(&node.name).map_err(|e| lab_error(e.into()))?;
    let Some(spec) = model.options.plug.as_ref().filter(|_| model.kind == NodeKind::Plug) else {
        return Err(script_error(format!("{} is a {} node: only plugs have clients", node.name, model.kind)));
    };
    Ok(model
        .ifaces
        .iter()
        .map(|i| {
            Dynamic::from(LinkRef {
                name: format!("{}:{}", node.name, i.name),
                a: (node.name.clone(), i.name.clone()),
                b: (spec.lan.clone(), String::new()),
            })
        })
        .collect())
}

/// Links and LANs: wiring nodes together through the clonet switch.
#[export_module]
pub mod link_api {
    use super::*;

    pub type Link = LinkRef;
    pub type Lan = LanRef;

    /// Links two nodes point to point. Each gets a new interface (`eth0`,
    /// `eth1`, … in link order), a TAP pumped by the clonet switch.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b);
    /// print(l.name);   // a--b
    /// ```
    #[rhai_fn(return_raw)]
    pub fn link(ctx: NativeCallContext, a: NodeRef, b: NodeRef) -> RhaiResult<Link> {
        add_link(&ctx, &a, &b, &Map::new())
    }

    /// Links two nodes with options: `ip_a`, `ip_b` (CIDR, or `"dhcp"`:
    /// the node asks a DHCP server on the link, as one linked to a `nat`
    /// endpoint does by default), `mtu`,
    /// `iface_a`, `iface_b` to name the interfaces (default: next `ethN`),
    /// `mac_a`, `mac_b` to give their MAC addresses, `name` for the link itself (default `a--b`), and impairments,
    /// applied in netem's order to both directions (or per direction with
    /// `a_to_b: #{…}` / `b_to_a: #{…}`):
    /// `delay` and `jitter` (`"20ms"`, or a number of ms), `distribution`
    /// (`"uniform"`, `"normal"`, `"pareto"`), `loss` (%) with
    /// `loss_correlation` (%), or `loss_model: #{ gilbert: #{ p, r, h, k } }`
    /// (Gilbert-Elliott, in %: p good→bad, r bad→good, h/k the chance a
    /// frame is delivered in the bad/good state, default 0/100),
    /// `duplicate` (%), `reorder` (%) with `gap`, `corrupt` (%), `rate`
    /// (`"10mbit"`), `limit` (frames held, default 1000), and `seed` to make
    /// every random draw of the link reproducible.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24", delay: "5ms", seed: 1 });
    /// assert(ping(a, b));
    /// ```
    #[rhai_fn(name = "link", return_raw)]
    pub fn link_with(ctx: NativeCallContext, a: NodeRef, b: NodeRef, options: Map) -> RhaiResult<Link> {
        add_link(&ctx, &a, &b, &options)
    }

    /// Links two LANs, like a cable between two switches: by default an
    /// access link of VLAN 1; with `#{ trunk: [10, 20] }` a trunk carrying
    /// those VLANs tagged, with `#{ vlan: 10 }` VLAN 10 untagged. Loops of
    /// LANs are refused (there is no spanning tree).
    ///
    /// ```rhai
    /// let s1 = lan("s1"); let s2 = lan("s2");
    /// let a = node("a"); let b = node("b");
    /// link(a, s1, #{ vlan: 10, ip: "10.0.0.1/24" });
    /// link(b, s2, #{ vlan: 10, ip: "10.0.0.2/24" });
    /// link(s1, s2, #{ trunk: [10, 20] });
    /// assert(ping(a, b));
    /// ```
    #[rhai_fn(name = "link", return_raw)]
    pub fn link_lans_with(ctx: NativeCallContext, a: LanRef, b: LanRef, options: Map) -> RhaiResult<Link> {
        check_keys("link", &options, &["vlan", "trunk"])?;
        let vlan = link_options("link", &options)?.vlan;
        match call(&ctx, Command::LinkLans { a: a.name, b: b.name, vlan })? {
            Reply::Uplink(u) => Ok(LinkRef { name: u.name, a: (u.a, String::new()), b: (u.b, String::new()) }),
            _ => Err(script_error("unexpected reply")),
        }
    }

    /// Links two LANs with an access link of VLAN 1 (they become one LAN).
    ///
    /// ```rhai
    /// let s1 = lan("s1"); let s2 = lan("s2");
    /// print(link(s1, s2).name);   // s1==s2
    /// ```
    #[rhai_fn(name = "link", return_raw)]
    pub fn link_lans(ctx: NativeCallContext, a: LanRef, b: LanRef) -> RhaiResult<Link> {
        link_lans_with(ctx, a, b, Map::new())
    }

    /// Plugs a node into a LAN; returns the new interface's name.
    ///
    /// ```rhai
    /// let sw = lan("office");
    /// let h = node("h1");
    /// print(link(h, sw));   // eth0
    /// ```
    #[rhai_fn(name = "link", return_raw)]
    pub fn link_lan(ctx: NativeCallContext, node: NodeRef, lan: LanRef) -> RhaiResult<String> {
        join(&ctx, &node, &lan, &Map::new())
    }

    /// Plugs a node into a LAN with options: `ip` (CIDR, or `"dhcp"` when a
    /// node of the LAN serves DHCP), `mtu`, `iface`
    /// (the interface name), `mac` (instead of one derived from the
    /// names), and `vlan: 10` (an access port) or
    /// `trunk: [10, 20]` (tagged frames of those VLANs), and the
    /// impairments `link(a, b, #{…})` takes (a is the node, b the LAN).
    ///
    /// ```rhai
    /// let sw = lan("office");
    /// link(node("h1"), sw, #{ ip: "10.1.0.1/24" });
    /// link(node("h2"), sw, #{ iface: "lan0", mac: "02:00:00:00:00:02" });
    /// assert(get_node("h2").info().ifaces[0].mac == "02:00:00:00:00:02");
    /// ```
    #[rhai_fn(name = "link", return_raw)]
    pub fn link_lan_with(ctx: NativeCallContext, node: NodeRef, lan: LanRef, options: Map) -> RhaiResult<String> {
        join(&ctx, &node, &lan, &options)
    }

    /// Plugs an interface of the host's own into a LAN: a TAP called
    /// `name` in the network namespace clonet runs in, with `ip` (its
    /// prefix is the one route it adds), and the options of a LAN port
    /// (`mtu`, `vlan`, `trunk`, impairments). The host's programs reach
    /// the lab through it. It goes with the lab, and needs root.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// link(node("n"), sw, #{ ip: "10.9.0.2/24" });
    /// host_iface(sw, #{ name: "clonetex0", ip: "10.9.0.1/24" });
    /// assert(host_exec("ping -c 1 -W 2 10.9.0.2").ok);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn host_iface(ctx: NativeCallContext, lan: LanRef, options: Map) -> RhaiResult<NodeRef> {
        check_keys("host_iface", &options, &with_impairment_keys(&["name", "ip", "mtu", "vlan", "trunk"]))?;
        let name = opt_str("host_iface", &options, "name")?
            .ok_or_else(|| script_error("host_iface(): name (the interface's name on the host) is required"))?;
        call(&ctx, Command::AddNode { name: name.clone(), kind: NodeKind::Host, options: Default::default() })?;
        let mut port = options.clone();
        port.remove("name");
        port.insert("iface".into(), name.clone().into());
        let node = NodeRef { name: name.clone() };
        if let Err(e) = join(&ctx, &node, &lan, &port) {
            let _ = call(&ctx, Command::DeleteNode { node: name });
            return Err(e);
        }
        Ok(node)
    }

    /// Joins the LAN to another VXLAN tunnel endpoint (RFC 7348): Linux's
    /// own `vxlan` device, FRR EVPN, Open vSwitch, or another lab. Frames
    /// of the LAN go to `remote` (an address) on UDP `port` (default 4789)
    /// with VNI `vni`, and come back to `local_port` (default `port`) from
    /// any port of that address; the remote learns the LAN's MACs and the
    /// LAN learns the remote's, as on any port. Other options: `name`
    /// (default `vxlanVNI`), and those of a LAN port (`mtu`, `vlan`,
    /// `trunk`, impairments). A frame of MTU 1500 needs 1550 bytes of
    /// underlay: give the LAN's hosts `mtu: 1450` unless the kernel may
    /// fragment, and the tunnel the same `mtu` as the hosts (the switch
    /// cuts TCP super-frames to the tunnel port's MTU; the far side's
    /// hosts drop what is bigger than theirs). Datagrams from other
    /// addresses or of other VNIs are counted (`info().detail`) and
    /// dropped. Frames reach clonet as the remote sent them: a remote
    /// VTEP on the same machine fed through a veth leaves TCP checksums
    /// to offload, so turn it off there (`ethtool -K DEV tx off`); a real
    /// NIC fills them in.
    ///
    /// ```rhai
    /// // Two LANs joined by a tunnel over loopback, one port each way.
    /// let east = lan("east"); let west = lan("west");
    /// link(node("e"), east, #{ ip: "10.7.0.1/24" });
    /// link(node("w"), west, #{ ip: "10.7.0.2/24" });
    /// vxlan(east, #{ vni: 42, remote: "127.0.0.1", port: 47891, local_port: 47890 });
    /// let t = vxlan(west, #{ vni: 42, remote: "127.0.0.1", port: 47890, local_port: 47891, name: "back" });
    /// assert(get_node("e").exec("ping -c 1 -W 2 10.7.0.2").ok);
    /// print(t.info().detail);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn vxlan(ctx: NativeCallContext, lan: LanRef, options: Map) -> RhaiResult<NodeRef> {
        check_keys(
            "vxlan",
            &options,
            &with_impairment_keys(&["vni", "remote", "port", "local_port", "name", "mtu", "vlan", "trunk"]),
        )?;
        let vni = opt_int("vxlan", &options, "vni")?.ok_or_else(|| script_error("vxlan(): vni is required"))?;
        let remote = opt_str("vxlan", &options, "remote")?
            .ok_or_else(|| script_error("vxlan(): remote (the other VTEP's address) is required"))?;
        let remote: std::net::IpAddr =
            remote.parse().map_err(|_| script_error(format!("vxlan(): remote {remote:?} is not an address")))?;
        let port_of = |key: &str, default: i64| -> RhaiResult<u16> {
            let v = opt_int("vxlan", &options, key)?.unwrap_or(default);
            u16::try_from(v)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| script_error(format!("vxlan(): {key} {v} is not a UDP port (1..=65535)")))
        };
        let port = port_of("port", i64::from(crate::vocab::vxlan::VXLAN_PORT))?;
        let local_port = port_of("local_port", i64::from(port))?;
        let vni = u32::try_from(vni)
            .map_err(|_| script_error(format!("vxlan(): vni {vni} is out of range (0..=16777215)")))?;
        let name = opt_str("vxlan", &options, "name")?.unwrap_or_else(|| format!("vxlan{vni}"));
        let spec = crate::vocab::VxlanSpec { vni, remote, port, local_port };
        let node_options = crate::vocab::NodeOptions { vxlan: Some(spec), ..Default::default() };
        call(&ctx, Command::AddNode { name: name.clone(), kind: NodeKind::Vxlan, options: node_options })?;
        let mut port_options = options.clone();
        for k in ["vni", "remote", "port", "local_port", "name"] {
            port_options.remove(k);
        }
        port_options.insert("iface".into(), "tunnel".into());
        let node = NodeRef { name: name.clone() };
        if let Err(e) = join(&ctx, &node, &lan, &port_options) {
            let _ = call(&ctx, Command::DeleteNode { node: name });
            return Err(e);
        }
        Ok(node)
    }

    /// Opens a plug on the LAN: a socket at `path` (absolute, at most 88
    /// bytes) where programs clonet did not start join the LAN. Each client that
    /// connects becomes an interface of the plug (`c1`, `c2`, …) and a
    /// port of the LAN, with its own counters, impairments, capture and
    /// sniff (see `clients`); it goes when the client leaves. `protocol`:
    ///
    /// - `"qemu"`: `-netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH`
    /// - `"qemu-dgram"`: `-netdev dgram,id=n0,local.type=unix,local.path=OWN,remote.type=unix,remote.path=PATH`
    /// - `"uml"`: `vec0:transport=bess,dst=PATH`
    /// - `"vde"`: PATH is a directory (made by the plug) where `vde_plug`,
    ///   `vde_plug2tap -s PATH tap0`, QEMU's `-netdev vde,sock=PATH` and
    ///   UML's `vde` transport connect as to a `vde_switch`.
    ///
    /// Other options: `name` (default `plug1`, `plug2`, …), and the LAN
    /// port options of its clients: `mtu`, `vlan`, `trunk`. Nothing may
    /// be at `path` yet. Also written `sw.plug(#{…})`.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// link(node("n"), sw, #{ ip: "10.9.0.2/24" });
    /// let dir = host_exec("mktemp -d").stdout.trimmed();
    /// let vm = sw.plug(#{ protocol: "qemu", path: `${dir}/vm.sock` });
    /// // qemu-system-x86_64 … -netdev stream,id=n0,server=off,addr.type=unix,addr.path=DIR/vm.sock
    /// assert(vm.clients.len() == 0);
    /// vm.delete();
    /// host_exec(`rmdir ${dir}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn plug(ctx: NativeCallContext, lan: &mut Lan, options: Map) -> RhaiResult<NodeRef> {
        check_keys("plug", &options, &["protocol", "path", "name", "mtu", "vlan", "trunk"])?;
        let protocol = opt_str("plug", &options, "protocol")?
            .ok_or_else(|| script_error("plug(): protocol (qemu, qemu-dgram, uml or vde) is required"))?
            .parse::<crate::vocab::PlugProtocol>()
            .map_err(refused("plug"))?;
        let path = opt_str("plug", &options, "path")?
            .ok_or_else(|| script_error("plug(): path (where the plug listens) is required"))?;
        let name = match opt_str("plug", &options, "name")? {
            Some(n) => n,
            None => {
                let topo = lab_topology(&ctx)?;
                (1..).map(|i| format!("plug{i}")).find(|n| !topo.nodes.contains_key(n)).expect("a free name")
            }
        };
        let port = link_options("plug", &options)?;
        let spec = crate::vocab::PlugSpec {
            protocol,
            path: path.into(),
            lan: lan.name.clone(),
            vlan: port.vlan,
            mtu: port.mtu,
        };
        let options = crate::vocab::NodeOptions { plug: Some(spec), ..Default::default() };
        call(&ctx, Command::AddNode { name: name.clone(), kind: NodeKind::Plug, options })?;
        Ok(NodeRef { name })
    }

    /// The ports of a plug's clients now, as links whose `a` is the plug's
    /// interface and `b` its LAN: for `set()`, `counters()`, `capture` and
    /// `sniff`.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// let dir = host_exec("mktemp -d").stdout.trimmed();
    /// let vm = plug(sw, #{ protocol: "uml", path: `${dir}/uml.sock` });
    /// for port in vm.clients { port.set(#{ delay: "5ms" }); }
    /// vm.delete();
    /// host_exec(`rmdir ${dir}`);
    /// ```
    #[rhai_fn(get = "clients", pure, return_raw)]
    pub fn clients(ctx: NativeCallContext, node: &mut NodeRef) -> RhaiResult<Array> {
        plug_clients(&ctx, node)
    }

    /// Waits until the plug has at least `count` clients, for at most
    /// `timeout_ms`; returns whether it has them.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// let dir = host_exec("mktemp -d").stdout.trimmed();
    /// let vm = plug(sw, #{ protocol: "vde", path: `${dir}/switch` });
    /// // On the host: vde_plug2tap -s DIR/switch tap0 (or QEMU's -netdev vde,id=n0,sock=DIR/switch)
    /// if vm.wait_clients(1, 200) { print(vm.info().plug.clients); }
    /// vm.delete();
    /// host_exec(`rmdir ${dir}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn wait_clients(ctx: NativeCallContext, node: &mut NodeRef, count: i64, timeout_ms: i64) -> RhaiResult<bool> {
        let deadline = crate::script::api::deadline("wait_clients", timeout_ms)?;
        loop {
            if plug_clients(&ctx, node)?.len() as i64 >= count {
                return Ok(true);
            }
            // A dry build has no clients to wait for.
            if std::time::Instant::now() >= deadline || crate::script::api::dry_run(&ctx) {
                return Ok(false);
            }
            crate::script::api::lab::pause("wait_clients", 20, false)?;
        }
    }

    /// Creates a LAN: a MAC-learning switch inside clonet.
    ///
    /// ```rhai
    /// let sw = lan("office");
    /// for i in 1..=3 { link(node(`h${i}`), sw, #{ ip: `10.1.0.${i}/24` }); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn lan(ctx: NativeCallContext, name: &str) -> RhaiResult<Lan> {
        call(&ctx, Command::AddLan { name: name.to_string() })?;
        Ok(LanRef { name: name.to_string() })
    }

    /// A node's port on a LAN, as a link whose `a` is the node and `b` the
    /// LAN: for `set()`, `impairment` and `counters()`.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// let h = node("h");
    /// link(h, sw);
    /// port(h, sw).set(#{ delay: "10ms" });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn port(ctx: NativeCallContext, node: NodeRef, lan: LanRef) -> RhaiResult<Link> {
        let topo = lab_topology(&ctx)?;
        topo.node(&node.name).map_err(|e| lab_error(e.into()))?;
        let iface = topo.lan_port_of(&node.name, &lan.name).ok_or_else(|| {
            lab_error(crate::lab::topology::TopologyError::NotLinked(node.name.clone(), lan.name.clone()).into())
        })?;
        Ok(LinkRef { name: iface.to_string(), a: (node.name, iface.iface), b: (lan.name, String::new()) })
    }

    /// Replaces the link's impairments (see `link(a, b, #{…})` for the
    /// keys); `#{}` makes it plain again. A bad value is an error and the
    /// link keeps what it had. Returns the link.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// l.set(#{ delay: "20ms", jitter: "2ms", loss: 1, rate: "100mbit" });
    /// l.set(#{ a_to_b: #{ loss_model: #{ gilbert: #{ p: 5, r: 50 } } }, seed: 7 });
    /// l.set(#{});
    /// ```
    #[rhai_fn(return_raw)]
    pub fn set(ctx: NativeCallContext, link: &mut Link, options: Map) -> RhaiResult<Link> {
        check_keys("set", &options, &with_impairment_keys(&[]))?;
        let impair = impairment("set", &options)?.unwrap_or_default();
        call(&ctx, Command::SetImpairment { link: link.name.clone(), impair })?;
        Ok(link.clone())
    }

    /// The link's impairments, as the map `set()` takes.
    ///
    /// ```rhai
    /// let l = link(node("a"), node("b"), #{ delay: "20ms" });
    /// print(l.impairment);   // #{"delay": "20ms"}
    /// ```
    #[rhai_fn(get = "impairment", pure, return_raw)]
    pub fn get_impairment(ctx: NativeCallContext, link: &mut Link) -> RhaiResult<Map> {
        let topo = lab_topology(&ctx)?;
        let imp = topo
            .impairment(&link.name)
            .ok_or_else(|| lab_error(crate::lab::topology::TopologyError::NoSuchLink(link.name.clone()).into()))?;
        Ok(crate::lab::impairment::render(imp).iter().map(|(k, v)| (k.into(), to_dynamic(v))).collect())
    }

    /// The link's name, `a--b` (then `a--b#2`, … for parallel links).
    ///
    /// ```rhai
    /// let l = link(node("a"), node("b"));
    /// assert(l.name == "a--b");
    /// ```
    #[rhai_fn(get = "name", pure)]
    pub fn link_name(link: &mut Link) -> String {
        link.name.clone()
    }

    /// The link's two ends, as `["node:iface", "node:iface"]`.
    ///
    /// ```rhai
    /// let l = link(node("a"), node("b"));
    /// print(l.endpoints);   // ["a:eth0", "b:eth0"]
    /// ```
    #[rhai_fn(get = "endpoints", pure)]
    pub fn endpoints(link: &mut Link) -> Array {
        let end = |(node, iface): &(String, String)| {
            if iface.is_empty() {
                Dynamic::from(node.clone())
            } else {
                Dynamic::from(format!("{node}:{iface}"))
            }
        };
        vec![end(&link.a), end(&link.b)]
    }

    /// The LAN's name.
    ///
    /// ```rhai
    /// assert(lan("office").name == "office");
    /// ```
    #[rhai_fn(get = "name", pure)]
    pub fn lan_name(lan: &mut Lan) -> String {
        lan.name.clone()
    }

    /// The LAN's learned MAC table: maps of `mac`, `node`, `iface`, `age_ms`.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// let a = node("a"); let b = node("b");
    /// link(a, sw, #{ ip: "10.1.0.1/24" }); link(b, sw, #{ ip: "10.1.0.2/24" });
    /// ping(a, b);
    /// for e in sw.fdb() { print(`${e.mac} on ${e.node}:${e.iface}`); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn fdb(ctx: NativeCallContext, lan: &mut Lan) -> RhaiResult<Array> {
        match call(&ctx, Command::Fdb { lan: lan.name.clone() })? {
            Reply::Fdb { rows } => Ok(rows.into_iter().map(rhai::serde::to_dynamic).collect::<Result<_, _>>()?),
            _ => Err(script_error("unexpected reply")),
        }
    }

    /// Whether the link is administratively up.
    ///
    /// ```rhai
    /// let l = link(node("a"), node("b"));
    /// assert(l.is_up);
    /// ```
    #[rhai_fn(get = "is_up", pure, return_raw)]
    pub fn is_up(ctx: NativeCallContext, link: &mut Link) -> RhaiResult<bool> {
        let topo = lab_topology(&ctx)?;
        if let Some(u) = topo.uplinks.get(&link.name) {
            return Ok(u.up);
        }
        Ok(topo.link(&link.name).map_err(|e| lab_error(e.into()))?.up)
    }

    /// Takes the link down: frames stop, and both interfaces show
    /// NO-CARRIER.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// l.down();
    /// assert(!ping(a, b, #{ timeout_ms: 300 }));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn down(ctx: NativeCallContext, link: &mut Link) -> RhaiResult<()> {
        call(&ctx, Command::SetLinkUp { link: link.name.clone(), up: false }).map(|_| ())
    }

    /// Brings the link back up.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// l.down();
    /// l.up();
    /// assert(ping(a, b));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn up(ctx: NativeCallContext, link: &mut Link) -> RhaiResult<()> {
        call(&ctx, Command::SetLinkUp { link: link.name.clone(), up: true }).map(|_| ())
    }

    /// Removes the link; both interfaces disappear.
    ///
    /// ```rhai
    /// let l = link(node("a"), node("b"));
    /// l.delete();
    /// assert(links().len() == 0);
    /// ```
    #[rhai_fn(name = "delete", return_raw)]
    pub fn delete_link(ctx: NativeCallContext, link: &mut Link) -> RhaiResult<()> {
        call(&ctx, Command::DeleteLink { link: link.name.clone() }).map(|_| ())
    }

    /// The counters of the link's two switch ports (see `counters()`).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// ping(a, b);
    /// for p in l.counters() { print(`${p.node}: rx ${p.rx_frames}`); }
    /// ```
    #[rhai_fn(name = "counters", return_raw)]
    pub fn link_counters(ctx: NativeCallContext, link: &mut Link) -> RhaiResult<Array> {
        let topo = lab_topology(&ctx)?;
        if topo.uplinks.contains_key(&link.name) || topo.links.contains_key(&link.name) {
            return port_counters(&ctx, Some(&link.name));
        }
        // A LAN port: its own counters.
        let (node, iface) = link.a.clone();
        let all = port_counters(&ctx, None)?;
        let mine: Array = all
            .into_iter()
            .filter(|p| {
                p.clone().try_cast::<Map>().is_some_and(|m| {
                    m.get("node").map(|v| v.to_string()) == Some(node.clone())
                        && m.get("iface").map(|v| v.to_string()) == Some(iface.clone())
                })
            })
            .collect();
        if mine.is_empty() {
            return Err(lab_error(crate::lab::topology::TopologyError::NoSuchLink(link.name.clone()).into()));
        }
        Ok(mine)
    }

    /// The LAN's ports, as `"node:iface"`.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// link(node("a"), sw);
    /// print(sw.ports);   // ["a:eth0"]
    /// ```
    #[rhai_fn(get = "ports", pure, return_raw)]
    pub fn ports(ctx: NativeCallContext, lan: &mut Lan) -> RhaiResult<Array> {
        let topo = lab_topology(&ctx)?;
        let l = topo.lan(&lan.name).map_err(|e| lab_error(e.into()))?;
        Ok(l.members.iter().map(|m| Dynamic::from(m.to_string())).collect())
    }

    /// Removes the LAN; every port on it disappears.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// link(node("a"), sw);
    /// sw.delete();
    /// assert(lans().len() == 0);
    /// ```
    #[rhai_fn(name = "delete", return_raw)]
    pub fn delete_lan(ctx: NativeCallContext, lan: &mut Lan) -> RhaiResult<()> {
        call(&ctx, Command::DeleteLan { name: lan.name.clone() }).map(|_| ())
    }

    /// The counters of every port of the LAN.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// link(node("a"), sw);
    /// print(sw.counters());
    /// ```
    #[rhai_fn(name = "counters", return_raw)]
    pub fn lan_counters(ctx: NativeCallContext, lan: &mut Lan) -> RhaiResult<Array> {
        lab_topology(&ctx)?.lan(&lan.name).map_err(|e| lab_error(e.into()))?;
        port_counters(&ctx, Some(&lan.name))
    }

    /// Removes the link between two nodes (the first one, if several).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b);
    /// unlink(a, b);
    /// assert(a.ifaces.len() == 0);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn unlink(ctx: NativeCallContext, a: NodeRef, b: NodeRef) -> RhaiResult<()> {
        call(&ctx, Command::Unlink { a: a.name, b: b.name }).map(|_| ())
    }

    /// Unplugs a node from a LAN.
    ///
    /// ```rhai
    /// let sw = lan("sw"); let a = node("a");
    /// link(a, sw);
    /// unlink(a, sw);
    /// assert(sw.ports.len() == 0);
    /// ```
    #[rhai_fn(name = "unlink", return_raw)]
    pub fn unlink_lan(ctx: NativeCallContext, node: NodeRef, lan: LanRef) -> RhaiResult<()> {
        call(&ctx, Command::Unlink { a: node.name, b: lan.name }).map(|_| ())
    }

    /// Removes the link between two LANs.
    ///
    /// ```rhai
    /// let s1 = lan("s1"); let s2 = lan("s2");
    /// link(s1, s2);
    /// unlink(s1, s2);
    /// assert(links().len() == 0);
    /// ```
    #[rhai_fn(name = "unlink", return_raw)]
    pub fn unlink_lans(ctx: NativeCallContext, a: LanRef, b: LanRef) -> RhaiResult<()> {
        call(&ctx, Command::Unlink { a: a.name, b: b.name }).map(|_| ())
    }

    /// Every link of the lab, by name.
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// assert(links()[0].name == "a--b");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn links(ctx: NativeCallContext) -> RhaiResult<Array> {
        let topo = lab_topology(&ctx)?;
        let uplinks = topo.uplinks.values().map(|u| {
            Dynamic::from(LinkRef {
                name: u.name.clone(),
                a: (u.a.clone(), String::new()),
                b: (u.b.clone(), String::new()),
            })
        });
        Ok(topo.links.values().map(|l| Dynamic::from(link_ref(l))).chain(uplinks).collect())
    }

    /// Every LAN of the lab, by name.
    ///
    /// ```rhai
    /// lan("office");
    /// assert(lans()[0].name == "office");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn lans(ctx: NativeCallContext) -> RhaiResult<Array> {
        Ok(lab_topology(&ctx)?.lans.keys().map(|n| Dynamic::from(LanRef { name: n.clone() })).collect())
    }

    /// The existing LAN called `name` (for functions, which cannot see the
    /// script's variables).
    ///
    /// ```rhai
    /// lan("office");
    /// fn plug(n) { link(node(n), get_lan("office")) }
    /// plug("h1");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn get_lan(ctx: NativeCallContext, name: &str) -> RhaiResult<Lan> {
        lab_topology(&ctx)?.lan(name).map_err(|e| lab_error(e.into()))?;
        Ok(LanRef { name: name.to_string() })
    }

    /// The (first) existing link between nodes `a` and `b`, by name.
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// get_link("b", "a").down();
    /// ```
    #[rhai_fn(return_raw)]
    pub fn get_link(ctx: NativeCallContext, a: &str, b: &str) -> RhaiResult<Link> {
        let topo = lab_topology(&ctx)?;
        topo.node(a).map_err(|e| lab_error(e.into()))?;
        topo.node(b).map_err(|e| lab_error(e.into()))?;
        let l = topo
            .link_between(a, b)
            .ok_or_else(|| lab_error(crate::lab::topology::TopologyError::NotLinked(a.into(), b.into()).into()))?;
        Ok(link_ref(l))
    }

    /// `Link(name)`, for printing.
    ///
    /// ```rhai
    /// print(link(node("a"), node("b")));   // Link(a--b)
    /// ```
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn link_to_string(link: &mut Link) -> String {
        format!("Link({})", link.name)
    }

    /// `Lan(name)`, for printing.
    ///
    /// ```rhai
    /// print(lan("office"));   // Lan(office)
    /// ```
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn lan_to_string(lan: &mut Lan) -> String {
        format!("Lan({})", lan.name)
    }
}
