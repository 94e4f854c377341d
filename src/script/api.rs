//! The Rhai API, one `#[export_module]` per domain. Every function's doc
//! comment carries a runnable example; these texts are what `:help` and the
//! API reference show.
//!
//! Functions never touch the host: they build a [`Command`], hand it to the
//! lab found in the engine's tag, and turn the [`Reply`] into Rhai values.
use std::cell::RefCell;
use std::rc::Rc;

use rhai::plugin::*;
use rhai::{Array, Blob, Dynamic, EvalAltResult, Map, NativeCallContext};

use crate::lab::command::{LinkOptions, PingTarget};
use crate::lab::{Command, Lab, LabError, Reply};

/// The lab a script drives, shared with the engine through its tag.
pub type LabRef = Rc<RefCell<Lab>>;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// The one conversion from lab errors to script errors; the engine fills in
/// the position of the call that failed.
pub fn lab_error(e: LabError) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(e.to_string().into(), Position::NONE).into()
}

fn script_error(msg: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(msg.into().into(), Position::NONE).into()
}

fn lab_of(ctx: &NativeCallContext) -> RhaiResult<LabRef> {
    ctx.tag()
        .and_then(|t| t.clone().try_cast::<LabRef>())
        .ok_or_else(|| script_error("no lab is attached to this interpreter"))
}

/// Runs one command against the lab of the calling script.
pub fn call(ctx: &NativeCallContext, cmd: Command) -> RhaiResult<Reply> {
    let lab = lab_of(ctx)?;
    let reply = lab.borrow_mut().execute(cmd);
    reply.map_err(lab_error)
}

/// Checks that an options map has only known keys.
fn check_keys(fn_name: &str, opts: &Map, allowed: &[&str]) -> RhaiResult<()> {
    for k in opts.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(script_error(format!(
                "{fn_name}(): unknown option {:?} (known: {})",
                k.as_str(),
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn opt_str(fn_name: &str, opts: &Map, key: &str) -> RhaiResult<Option<String>> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .clone()
            .into_immutable_string()
            .map(|s| Some(s.to_string()))
            .map_err(|t| script_error(format!("{fn_name}(): option {key} must be a string, not {t}"))),
    }
}

fn opt_int(fn_name: &str, opts: &Map, key: &str) -> RhaiResult<Option<i64>> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .as_int()
            .map(Some)
            .map_err(|t| script_error(format!("{fn_name}(): option {key} must be an integer, not {t}"))),
    }
}

fn opt_cidr(fn_name: &str, opts: &Map, key: &str) -> RhaiResult<Option<crate::lab::addr::Cidr>> {
    opt_str(fn_name, opts, key)?
        .map(|s| s.parse().map_err(|e: crate::lab::addr::CidrError| script_error(format!("{fn_name}(): {key}: {e}"))))
        .transpose()
}

fn link_options(fn_name: &str, opts: &Map) -> RhaiResult<LinkOptions> {
    let mtu = opt_int(fn_name, opts, "mtu")?
        .map(|m| u32::try_from(m).map_err(|_| script_error(format!("{fn_name}(): mtu {m} is out of range"))))
        .transpose()?;
    Ok(LinkOptions { mtu })
}

fn positive_ms(fn_name: &str, ms: i64) -> RhaiResult<u64> {
    u64::try_from(ms).map_err(|_| script_error(format!("{fn_name}(): a time in ms must not be negative, got {ms}")))
}

/// A node of the lab, as scripts hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRef {
    pub name: String,
}

/// A point-to-point link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRef {
    pub name: String,
    pub a: (String, String),
    pub b: (String, String),
}

/// A LAN (a MAC-learning switch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanRef {
    pub name: String,
}

// Helpers shared by the exported functions (kept outside the modules so
// the plugin macro does not export them).

fn exec_map(out: crate::host::ExecOutput) -> Map {
    let mut m = Map::new();
    m.insert("status".into(), (out.status as i64).into());
    m.insert("ok".into(), (out.status == 0).into());
    m.insert("stdout".into(), String::from_utf8_lossy(&out.stdout).to_string().into());
    m.insert("stderr".into(), String::from_utf8_lossy(&out.stderr).to_string().into());
    m.insert("stdout_bytes".into(), Dynamic::from_blob(out.stdout as Blob));
    m.insert("stderr_bytes".into(), Dynamic::from_blob(out.stderr as Blob));
    m
}

fn run(ctx: &NativeCallContext, node: &NodeRef, argv: Vec<String>, options: &Map) -> RhaiResult<Map> {
    check_keys("exec", options, &["timeout_ms", "stdin"])?;
    let timeout = positive_ms("exec", opt_int("exec", options, "timeout_ms")?.unwrap_or(node_api::EXEC_TIMEOUT_MS))?;
    let stdin = match options.get("stdin") {
        None => Vec::new(),
        Some(v) if v.is_blob() => v.clone().into_blob().unwrap_or_default(),
        Some(v) => v.to_string().into_bytes(),
    };
    let request = crate::host::ExecRequest { argv, stdin, timeout: std::time::Duration::from_millis(timeout) };
    match call(ctx, Command::Exec { node: node.name.clone(), request })? {
        Reply::Exec(out) => Ok(exec_map(out)),
        _ => Err(script_error("unexpected reply")),
    }
}

fn add_link(ctx: &NativeCallContext, a: &NodeRef, b: &NodeRef, options: &Map) -> RhaiResult<LinkRef> {
    check_keys("link", options, &["ip_a", "ip_b", "mtu"])?;
    let cmd = Command::AddLink {
        a: a.name.clone(),
        b: b.name.clone(),
        ip_a: opt_cidr("link", options, "ip_a")?,
        ip_b: opt_cidr("link", options, "ip_b")?,
        options: link_options("link", options)?,
    };
    match call(ctx, cmd)? {
        Reply::Link(l) => Ok(LinkRef { name: l.name, a: (l.a.node, l.a.iface), b: (l.b.node, l.b.iface) }),
        _ => Err(script_error("unexpected reply")),
    }
}

fn join(ctx: &NativeCallContext, node: &NodeRef, lan: &LanRef, options: &Map) -> RhaiResult<String> {
    check_keys("link", options, &["ip", "mtu"])?;
    let cmd = Command::JoinLan {
        node: node.name.clone(),
        lan: lan.name.clone(),
        ip: opt_cidr("link", options, "ip")?,
        options: link_options("link", options)?,
    };
    match call(ctx, cmd)? {
        Reply::Iface { iface, .. } => Ok(iface),
        _ => Err(script_error("unexpected reply")),
    }
}

fn ping_rtt(ctx: &NativeCallContext, from: &NodeRef, to: PingTarget, timeout_ms: i64) -> RhaiResult<Option<u64>> {
    let timeout_ms = positive_ms("ping", timeout_ms)?;
    match call(ctx, Command::Ping { from: from.name.clone(), to, timeout_ms })? {
        Reply::Ping { rtt_us } => Ok(rtt_us),
        _ => Err(script_error("unexpected reply")),
    }
}

fn target(addr: &str) -> RhaiResult<PingTarget> {
    addr.parse().map(PingTarget::Addr).map_err(|_| script_error(format!("ping(): {addr:?} is not an IP address")))
}

/// Nodes: creating them, running commands in them, addressing them.
#[export_module]
pub mod node_api {
    use super::*;
    use crate::lab::topology::NodeKind;

    pub type Node = NodeRef;

    /// Default time limit of `exec`.
    pub const EXEC_TIMEOUT_MS: i64 = 60_000;

    /// Creates a node of the default kind, `ns` (namespaces running host
    /// programs). Its hostname is its name.
    ///
    /// ```rhai
    /// let a = node("a");
    /// print(a.name);   // a
    /// ```
    #[rhai_fn(return_raw)]
    pub fn node(ctx: NativeCallContext, name: &str) -> RhaiResult<Node> {
        node_with(ctx, name, Map::new())
    }

    /// Creates a node with options: `kind` (`"ns"`).
    ///
    /// ```rhai
    /// let r1 = node("r1", #{ kind: "ns" });
    /// ```
    #[rhai_fn(name = "node", return_raw)]
    pub fn node_with(ctx: NativeCallContext, name: &str, options: Map) -> RhaiResult<Node> {
        check_keys("node", &options, &["kind"])?;
        let kind = match opt_str("node", &options, "kind")? {
            None => NodeKind::Ns,
            Some(k) => NodeKind::parse(&k).map_err(|e| lab_error(e.into()))?,
        };
        call(&ctx, Command::AddNode { name: name.to_string(), kind })?;
        Ok(NodeRef { name: name.to_string() })
    }

    /// The node's name.
    ///
    /// ```rhai
    /// let a = node("a");
    /// assert(a.name == "a");
    /// ```
    #[rhai_fn(get = "name", pure)]
    pub fn name(node: &mut Node) -> String {
        node.name.clone()
    }

    /// The node's kind: `"ns"`.
    ///
    /// ```rhai
    /// print(node("a").kind);   // ns
    /// ```
    #[rhai_fn(get = "kind", pure, return_raw)]
    pub fn kind(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<String> {
        match call(&ctx, Command::NodeInfo { node: node.name.clone() })? {
            Reply::Node(info) => Ok(info.kind.to_string()),
            _ => Err(script_error("unexpected reply")),
        }
    }

    /// The host pid of the node's init process (for `nsenter -t PID`).
    ///
    /// ```rhai
    /// let a = node("a");
    /// print(`nsenter -t ${a.pid} -n ip addr`);
    /// ```
    #[rhai_fn(get = "pid", pure, return_raw)]
    pub fn pid(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<i64> {
        match call(&ctx, Command::NodeInfo { node: node.name.clone() })? {
            Reply::Node(info) => Ok(info.pid as i64),
            _ => Err(script_error("unexpected reply")),
        }
    }

    /// The node's interfaces in order: maps of `name`, `mac`, `addrs`
    /// (CIDR strings) and `attached` (the link or LAN name).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24" });
    /// print(a.ifaces[0].addrs);   // ["10.0.0.1/24"]
    /// ```
    #[rhai_fn(get = "ifaces", pure, return_raw)]
    pub fn ifaces(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<Array> {
        let Reply::Node(info) = call(&ctx, Command::NodeInfo { node: node.name.clone() })? else {
            return Err(script_error("unexpected reply"));
        };
        Ok(info
            .ifaces
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("name".into(), i.name.clone().into());
                m.insert("mac".into(), i.mac.to_string().into());
                m.insert(
                    "addrs".into(),
                    i.addrs.iter().map(|a| Dynamic::from(a.to_string())).collect::<Array>().into(),
                );
                let attached = match &i.attachment {
                    crate::lab::topology::Attachment::Link(l) | crate::lab::topology::Attachment::Lan(l) => l.clone(),
                };
                m.insert("attached".into(), attached.into());
                m.into()
            })
            .collect())
    }

    /// Runs a shell command (`sh -c`) in the node and returns
    /// `#{status, ok, stdout, stderr, stdout_bytes, stderr_bytes}`. It fails
    /// after 60 s; a non-zero status is not an error.
    ///
    /// ```rhai
    /// let a = node("a");
    /// let r = a.exec("hostname");
    /// assert(r.status == 0 && r.stdout.trimmed() == "a");
    /// ```
    #[rhai_fn(name = "exec", return_raw)]
    pub fn exec(ctx: NativeCallContext, node: &mut Node, command: &str) -> RhaiResult<Map> {
        run(&ctx, node, vec!["sh".into(), "-c".into(), command.into()], &Map::new())
    }

    /// Runs a shell command with options: `timeout_ms`, `stdin` (string or blob).
    ///
    /// ```rhai
    /// let a = node("a");
    /// let r = a.exec("wc -c", #{ stdin: "hello", timeout_ms: 2000 });
    /// assert(r.stdout.trimmed() == "5");
    /// ```
    #[rhai_fn(name = "exec", return_raw)]
    pub fn exec_with(ctx: NativeCallContext, node: &mut Node, command: &str, options: Map) -> RhaiResult<Map> {
        run(&ctx, node, vec!["sh".into(), "-c".into(), command.into()], &options)
    }

    /// Runs a program with an explicit argument list, without a shell.
    ///
    /// ```rhai
    /// let a = node("a");
    /// let r = a.exec(["echo", "$HOME is not expanded"]);
    /// assert(r.stdout == "$HOME is not expanded\n");
    /// ```
    #[rhai_fn(name = "exec", return_raw)]
    pub fn exec_argv(ctx: NativeCallContext, node: &mut Node, argv: Array) -> RhaiResult<Map> {
        exec_argv_with(ctx, node, argv, Map::new())
    }

    /// Runs a program with an argument list and options (`timeout_ms`, `stdin`).
    ///
    /// ```rhai
    /// let a = node("a");
    /// try { a.exec(["sleep", "5"], #{ timeout_ms: 100 }); } catch (e) { print(e); }   // timed out
    /// ```
    #[rhai_fn(name = "exec", return_raw)]
    pub fn exec_argv_with(ctx: NativeCallContext, node: &mut Node, argv: Array, options: Map) -> RhaiResult<Map> {
        if argv.is_empty() {
            return Err(script_error("exec(): the argument list is empty"));
        }
        let argv: Vec<String> = argv.into_iter().map(|a| a.to_string()).collect();
        run(&ctx, node, argv, &options)
    }

    /// Adds an address (CIDR) to one of the node's interfaces.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b);
    /// a.set_ip("eth0", "10.0.0.1/24");
    /// a.set_ip("eth0", "fd00::1/64");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn set_ip(ctx: NativeCallContext, node: &mut Node, iface: &str, cidr: &str) -> RhaiResult<()> {
        let cidr = cidr.parse().map_err(|e: crate::lab::addr::CidrError| script_error(format!("set_ip(): {e}")))?;
        call(&ctx, Command::SetIp { node: node.name.clone(), iface: iface.to_string(), cidr })?;
        Ok(())
    }

    /// `Node(name)`, for printing.
    ///
    /// ```rhai
    /// print(node("a"));   // Node(a)
    /// ```
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn to_string(node: &mut Node) -> String {
        format!("Node({})", node.name)
    }

    /// `Node(name)`, for debugging.
    ///
    /// ```rhai
    /// debug(node("a"));
    /// ```
    #[rhai_fn(global, name = "to_debug", pure)]
    pub fn to_debug(node: &mut Node) -> String {
        format!("Node({})", node.name)
    }
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

    /// Links two nodes with options: `ip_a`, `ip_b` (CIDR) and `mtu`.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// assert(ping(a, b));
    /// ```
    #[rhai_fn(name = "link", return_raw)]
    pub fn link_with(ctx: NativeCallContext, a: NodeRef, b: NodeRef, options: Map) -> RhaiResult<Link> {
        add_link(&ctx, &a, &b, &options)
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

    /// Plugs a node into a LAN with options: `ip` (CIDR) and `mtu`.
    ///
    /// ```rhai
    /// let sw = lan("office");
    /// link(node("h1"), sw, #{ ip: "10.1.0.1/24" });
    /// ```
    #[rhai_fn(name = "link", return_raw)]
    pub fn link_lan_with(ctx: NativeCallContext, node: NodeRef, lan: LanRef, options: Map) -> RhaiResult<String> {
        join(&ctx, &node, &lan, &options)
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
        vec![format!("{}:{}", link.a.0, link.a.1).into(), format!("{}:{}", link.b.0, link.b.1).into()]
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
            Reply::Fdb(rows) => Ok(rows.into_iter().map(|r| rhai::serde::to_dynamic(r)).collect::<Result<_, _>>()?),
            _ => Err(script_error("unexpected reply")),
        }
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

/// Lab-wide tools: reachability, counters, time, the host, JSON.
#[export_module]
pub mod lab_api {
    use super::*;
    use std::time::Duration;

    /// Default time `ping` waits for an answer.
    pub const PING_TIMEOUT_MS: i64 = 2_000;

    /// Whether `a` gets an ICMP echo answer from `b`'s first address within
    /// 2 s. Uses clonet's built-in ICMP echo, so no `ping` binary is needed.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// if !ping(a, b) { print("unreachable"); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ping(ctx: NativeCallContext, a: NodeRef, b: NodeRef) -> RhaiResult<bool> {
        Ok(ping_rtt(&ctx, &a, PingTarget::Node(b.name), PING_TIMEOUT_MS)?.is_some())
    }

    /// Whether `a` gets an ICMP echo answer from an address (IPv4 or IPv6).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// assert(ping(a, "10.0.0.2"));
    /// ```
    #[rhai_fn(name = "ping", return_raw)]
    pub fn ping_addr(ctx: NativeCallContext, a: NodeRef, addr: &str) -> RhaiResult<bool> {
        Ok(ping_rtt(&ctx, &a, target(addr)?, PING_TIMEOUT_MS)?.is_some())
    }

    /// `ping` with options: `timeout_ms`.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// assert(ping(a, b, #{ timeout_ms: 500 }));
    /// ```
    #[rhai_fn(name = "ping", return_raw)]
    pub fn ping_with(ctx: NativeCallContext, a: NodeRef, b: NodeRef, options: Map) -> RhaiResult<bool> {
        check_keys("ping", &options, &["timeout_ms"])?;
        let t = opt_int("ping", &options, "timeout_ms")?.unwrap_or(PING_TIMEOUT_MS);
        Ok(ping_rtt(&ctx, &a, PingTarget::Node(b.name), t)?.is_some())
    }

    /// The round-trip time of one ICMP echo from `a` to `b`, in
    /// microseconds, or `()` when unanswered within 2 s.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// print(`${rtt_us(a, b)} µs`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn rtt_us(ctx: NativeCallContext, a: NodeRef, b: NodeRef) -> RhaiResult<Dynamic> {
        Ok(match ping_rtt(&ctx, &a, PingTarget::Node(b.name), PING_TIMEOUT_MS)? {
            Some(us) => Dynamic::from(us as i64),
            None => Dynamic::UNIT,
        })
    }

    /// Per-port counters of the switch: maps of `node`, `iface`, `segment`,
    /// `rx_frames`, `rx_bytes`, `tx_frames`, `tx_bytes` and `drops` (a map
    /// by reason). `rx` is what the switch received from the node.
    ///
    /// ```rhai
    /// for p in counters() { print(`${p.node}:${p.iface} rx=${p.rx_frames} tx=${p.tx_frames}`); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn counters(ctx: NativeCallContext) -> RhaiResult<Array> {
        let Reply::Counters(ports) = call(&ctx, Command::Counters)? else {
            return Err(script_error("unexpected reply"));
        };
        ports
            .into_iter()
            .map(|p| {
                let mut m = Map::new();
                m.insert("node".into(), p.node.into());
                m.insert("iface".into(), p.iface.into());
                m.insert("segment".into(), p.segment.into());
                m.insert("rx_frames".into(), (p.counters.rx_frames as i64).into());
                m.insert("rx_bytes".into(), (p.counters.rx_bytes as i64).into());
                m.insert("tx_frames".into(), (p.counters.tx_frames as i64).into());
                m.insert("tx_bytes".into(), (p.counters.tx_bytes as i64).into());
                let drops: Map = p.counters.drops.into_iter().map(|(k, v)| (k.into(), (v as i64).into())).collect();
                m.insert("drops".into(), drops.into());
                Ok(m.into())
            })
            .collect()
    }

    /// Pauses the script. Ctrl-C interrupts it.
    ///
    /// ```rhai
    /// sleep(100);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn sleep(ms: i64) -> RhaiResult<()> {
        let ms = positive_ms("sleep", ms)?;
        let end = std::time::Instant::now() + Duration::from_millis(ms);
        while std::time::Instant::now() < end {
            if crate::interrupt::requested() {
                return Err(EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into());
            }
            std::thread::sleep((end - std::time::Instant::now()).min(Duration::from_millis(20)));
        }
        Ok(())
    }

    /// Runs a shell command on the host (outside every node), as the user
    /// running clonet, and returns the same map as `exec`. Meant for
    /// baselines and glue; lab traffic belongs inside nodes.
    ///
    /// ```rhai
    /// let r = host_exec("uname -r");
    /// print(r.stdout);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn host_exec(command: &str) -> RhaiResult<Map> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| script_error(format!("host_exec(): {e}")))?;
        Ok(exec_map(crate::host::ExecOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        }))
    }

    /// Parses JSON text into maps, arrays and scalars.
    ///
    /// ```rhai
    /// let v = parse_json(`{"a": [1, 2]}`);
    /// assert(v.a[1] == 2);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn parse_json(text: &str) -> RhaiResult<Dynamic> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| script_error(format!("parse_json(): {e}")))?;
        rhai::serde::to_dynamic(v)
    }

    /// Fails the script with "assertion failed" when `condition` is false.
    ///
    /// ```rhai
    /// assert(1 + 1 == 2);
    /// ```
    #[rhai_fn(name = "assert", return_raw)]
    pub fn assert(condition: bool) -> RhaiResult<()> {
        if condition {
            Ok(())
        } else {
            Err(script_error("assertion failed"))
        }
    }

    /// Fails the script with `message` when `condition` is false.
    ///
    /// ```rhai
    /// let hosts = 3;
    /// assert(hosts > 2, `need more than 2 hosts, have ${hosts}`);
    /// ```
    #[rhai_fn(name = "assert", return_raw)]
    pub fn assert_msg(condition: bool, message: &str) -> RhaiResult<()> {
        if condition {
            Ok(())
        } else {
            Err(script_error(format!("assertion failed: {message}")))
        }
    }

    /// A copy of a string without leading and trailing whitespace. (Rhai's
    /// own `trim()` changes the string in place and returns nothing.)
    ///
    /// ```rhai
    /// let a = node("a");
    /// assert(a.exec("hostname").stdout.trimmed() == "a");
    /// ```
    #[rhai_fn(pure)]
    pub fn trimmed(text: &mut ImmutableString) -> String {
        text.trim().to_string()
    }

    /// The value of a host environment variable, or `()` when unset.
    ///
    /// ```rhai
    /// let secs = env("BENCH_SECONDS") ?? "5";
    /// ```
    pub fn env(name: &str) -> Dynamic {
        match std::env::var(name) {
            Ok(v) => v.into(),
            Err(_) => Dynamic::UNIT,
        }
    }
}
