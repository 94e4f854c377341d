//! The Rhai API, one `#[export_module]` per domain. Every function's doc
//! comment carries a runnable example; these texts are what `:help` and the
//! API reference show.
//!
//! Functions never touch the host: they build a [`Command`], hand it to the
//! lab found in the engine's tag, and turn the [`Reply`] into Rhai values.

use rhai::plugin::*;
use rhai::{Array, Blob, Dynamic, EvalAltResult, Map, NativeCallContext};

use crate::lab::command::{LinkOptions, PingTarget};
use crate::lab::{Command, LabError, Reply};
use rhai::FnPtr;

/// Set for a dry build (`clonet graph`): the script runs against a host
/// that starts nothing, and `host_exec` and `sleep` do nothing either.
static DRY_RUN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_dry_run(on: bool) {
    DRY_RUN.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn dry_run() -> bool {
    DRY_RUN.load(std::sync::atomic::Ordering::Relaxed)
}

/// The lab a script drives, shared with the engine through its tag.
pub use crate::lab::handle::LabRef;

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
    let reply = lab.execute(cmd);
    reply.map_err(lab_error)
}

/// Binds a variable to every node and LAN of `topo` whose name can be a
/// variable and is not one already, so that a REPL attached to a running
/// lab can say `a.exec("…")` like the script that built it. Returns the
/// names bound.
pub fn bind_lab_names(
    engine: &rhai::Engine,
    scope: &mut rhai::Scope,
    topo: &crate::lab::topology::Topology,
) -> Vec<String> {
    // A name is a variable name when `let NAME = ();` compiles (keywords do not).
    let usable =
        |scope: &rhai::Scope, name: &str| !scope.contains(name) && engine.compile(format!("let {name} = ();")).is_ok();
    let mut bound = Vec::new();
    for name in &topo.order {
        if usable(scope, name) {
            scope.push(name.clone(), NodeRef { name: name.clone() });
            bound.push(name.clone());
        }
    }
    for name in topo.lans.keys() {
        if usable(scope, name) {
            scope.push(name.clone(), LanRef { name: name.clone() });
            bound.push(name.clone());
        }
    }
    bound
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

fn opt_number(fn_name: &str, opts: &Map, key: &str) -> RhaiResult<Option<f64>> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .as_float()
            .or_else(|_| v.as_int().map(|i| i as f64))
            .map(Some)
            .map_err(|t| script_error(format!("{fn_name}(): {key} must be a number, not {t}"))),
    }
}

fn opt_cidr(fn_name: &str, opts: &Map, key: &str) -> RhaiResult<Option<crate::vocab::addr::Cidr>> {
    opt_str(fn_name, opts, key)?
        .map(|s| s.parse().map_err(|e: crate::vocab::addr::CidrError| script_error(format!("{fn_name}(): {key}: {e}"))))
        .transpose()
}

/// A value the vocabulary refused, as the script error of `fn_name()`.
fn refused(fn_name: &str) -> impl Fn(crate::vocab::VocabError) -> Box<EvalAltResult> + '_ {
    move |e| script_error(format!("{fn_name}(): {e}"))
}

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

/// One port's counters as a script map.
fn port_map(p: crate::lab::command::PortReport) -> Dynamic {
    let mut m = Map::new();
    m.insert("node".into(), p.node.into());
    m.insert("iface".into(), p.iface.into());
    m.insert("segment".into(), p.segment.into());
    m.insert("rx_frames".into(), (p.counters.rx_frames as i64).into());
    m.insert("rx_bytes".into(), (p.counters.rx_bytes as i64).into());
    m.insert("tx_frames".into(), (p.counters.tx_frames as i64).into());
    m.insert("tx_bytes".into(), (p.counters.tx_bytes as i64).into());
    let by_reason = |d: std::collections::BTreeMap<String, u64>| -> Dynamic {
        d.into_iter().map(|(k, v)| (k.into(), (v as i64).into())).collect::<Map>().into()
    };
    m.insert("drops".into(), by_reason(p.counters.drops));
    m.insert("rx_drops".into(), by_reason(p.counters.rx_drops));
    m.insert("tx_drops".into(), by_reason(p.counters.tx_drops));
    m.into()
}

/// Every port's counters, optionally only those of one link or LAN.
fn port_counters(ctx: &NativeCallContext, segment: Option<&str>) -> RhaiResult<Array> {
    let Reply::Counters { ports } = call(ctx, Command::Counters)? else {
        return Err(script_error("unexpected reply"));
    };
    Ok(ports.into_iter().filter(|p| segment.is_none_or(|s| p.segment == s)).map(port_map).collect())
}

fn lab_topology(ctx: &NativeCallContext) -> RhaiResult<crate::lab::topology::Topology> {
    match call(ctx, Command::Topology)? {
        Reply::Topology(t) => Ok(t),
        _ => Err(script_error("unexpected reply")),
    }
}

fn link_ref(l: &crate::lab::topology::LinkModel) -> LinkRef {
    LinkRef { name: l.name.clone(), a: (l.a.node.clone(), l.a.iface.clone()), b: (l.b.node.clone(), l.b.iface.clone()) }
}

fn positive_ms(fn_name: &str, ms: i64) -> RhaiResult<u64> {
    u64::try_from(ms).map_err(|_| script_error(format!("{fn_name}(): a time in ms must not be negative, got {ms}")))
}

/// The instant `ms` from now, at most an hour away: a script (perhaps a
/// student's answer) cannot hold the lab for longer in one call.
fn deadline(fn_name: &'static str, ms: i64) -> RhaiResult<std::time::Instant> {
    let wait = crate::vocab::Delay::new(fn_name, std::time::Duration::from_millis(positive_ms(fn_name, ms)?))
        .map_err(refused(fn_name))?;
    Ok(std::time::Instant::now() + wait.get())
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

/// A running capture into a pcap file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureRef {
    pub id: u64,
    pub target: String,
    pub file: String,
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
    let timeout_ms = opt_int("exec", options, "timeout_ms")?.unwrap_or(node_api::EXEC_TIMEOUT_MS);
    let timeout = crate::vocab::Timeout::from_millis(timeout_ms).map_err(refused("exec"))?;
    let stdin = match options.get("stdin") {
        None => Vec::new(),
        Some(v) if v.is_blob() => v.clone().into_blob().unwrap_or_default(),
        Some(v) => v.to_string().into_bytes(),
    };
    let request = crate::host::ExecRequest { argv, stdin, timeout };
    match call(ctx, Command::Exec { node: node.name.clone(), request })? {
        Reply::Exec(out) => Ok(exec_map(out)),
        _ => Err(script_error("unexpected reply")),
    }
}

fn add_link(ctx: &NativeCallContext, a: &NodeRef, b: &NodeRef, options: &Map) -> RhaiResult<LinkRef> {
    if options.contains_key("vlan") || options.contains_key("trunk") {
        return Err(lab_error(LabError::VlanOnLink));
    }
    check_keys("link", options, &with_impairment_keys(&["ip_a", "ip_b", "mtu", "iface_a", "iface_b", "name"]))?;
    let mut link_opts = link_options("link", options)?;
    link_opts.impair = impairment("link", options)?;
    link_opts.link_name = opt_str("link", options, "name")?;
    link_opts.name_a = opt_str("link", options, "iface_a")?;
    link_opts.name_b = opt_str("link", options, "iface_b")?;
    let cmd = Command::AddLink {
        a: a.name.clone(),
        b: b.name.clone(),
        ip_a: opt_cidr("link", options, "ip_a")?,
        ip_b: opt_cidr("link", options, "ip_b")?,
        options: link_opts,
    };
    match call(ctx, cmd)? {
        Reply::Link(l) => Ok(link_ref(&l)),
        _ => Err(script_error("unexpected reply")),
    }
}

fn join(ctx: &NativeCallContext, node: &NodeRef, lan: &LanRef, options: &Map) -> RhaiResult<String> {
    check_keys("link", options, &with_impairment_keys(&["ip", "mtu", "vlan", "trunk", "iface"]))?;
    let mut link_opts = link_options("link", options)?;
    link_opts.impair = impairment("link", options)?;
    link_opts.name_a = opt_str("link", options, "iface")?;
    let cmd = Command::JoinLan {
        node: node.name.clone(),
        lan: lan.name.clone(),
        ip: opt_cidr("link", options, "ip")?,
        options: link_opts,
    };
    match call(ctx, cmd)? {
        Reply::Iface { iface, .. } => Ok(iface),
        _ => Err(script_error("unexpected reply")),
    }
}

fn ping_rtt(ctx: &NativeCallContext, from: &NodeRef, to: PingTarget, timeout_ms: i64) -> RhaiResult<Option<u64>> {
    let timeout_ms = crate::vocab::Timeout::from_millis(timeout_ms).map_err(refused("ping"))?;
    match call(ctx, Command::Ping { from: from.name.clone(), to, timeout_ms })? {
        Reply::Ping { rtt_us } => Ok(rtt_us),
        _ => Err(script_error("unexpected reply")),
    }
}

/// One echo's round trip in µs, or `()` when unanswered (for `rtt_us`).
fn rtt_dynamic(ctx: &NativeCallContext, from: &NodeRef, to: PingTarget) -> RhaiResult<Dynamic> {
    Ok(match ping_rtt(ctx, from, to, lab_api::PING_TIMEOUT_MS)? {
        Some(us) => Dynamic::from(us as i64),
        None => Dynamic::UNIT,
    })
}

fn target(addr: &str) -> RhaiResult<PingTarget> {
    addr.parse().map(PingTarget::Addr).map_err(|_| script_error(format!("ping(): {addr:?} is not an IP address")))
}

/// Nodes: creating them, running commands in them, addressing them.
#[export_module]
pub mod node_api {
    use super::*;
    use crate::vocab::NodeKind;

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

    /// Creates a node with options: `kind` (`"ns"`, `"uml"` or `"kvm"`);
    /// for ns nodes `rootfs` (a directory to use as the root's lower layer
    /// instead of the host's `/`: every ns node runs on a copy-on-write
    /// overlay, so it never changes the files under it);
    /// for uml and kvm nodes `mem` (MiB; default 64 for uml, 128 for kvm),
    /// `image` (a base disk image, never written: the node runs on a
    /// copy-on-write layer; default: the busybox image of `clonet image
    /// build`; for kvm any ext4 root file system, whole-disk or in a
    /// partition, which gets clonet's agent on its overlay) and `args`
    /// (an array of extra words: kernel command-line arguments for uml,
    /// QEMU arguments for kvm); for kvm nodes `cpus` (default 1) and
    /// `accel` (`"kvm"` or `"tcg"`, instead of the probed choice).
    /// Machines boot in the background: `node()` returns at once and the
    /// first use of the node waits for the boot, so nodes made one after
    /// another boot together.
    ///
    /// ```rhai
    /// let r1 = node("r1", #{ kind: "ns" });
    /// ```
    #[rhai_fn(name = "node", return_raw)]
    pub fn node_with(ctx: NativeCallContext, name: &str, options: Map) -> RhaiResult<Node> {
        check_keys("node", &options, &["kind", "mem", "image", "args", "cpus", "accel", "rootfs"])?;
        let kind = match opt_str("node", &options, "kind")? {
            None => NodeKind::Ns,
            Some(k) => k.parse().map_err(refused("node"))?,
        };
        let mem_mb =
            opt_int("node", &options, "mem")?.map(crate::vocab::MemMb::new).transpose().map_err(refused("node"))?;
        let image = opt_str("node", &options, "image")?.map(std::path::PathBuf::from);
        let args = match options.get("args") {
            None => Vec::new(),
            Some(v) => v
                .as_array_ref()
                .map_err(|t| script_error(format!("node(): args must be an array of strings, not {t}")))?
                .iter()
                .map(|a| {
                    a.clone()
                        .into_string()
                        .map_err(|t| script_error(format!("node(): args must be an array of strings, not {t}")))
                })
                .collect::<RhaiResult<Vec<String>>>()?,
        };
        let cpus =
            opt_int("node", &options, "cpus")?.map(crate::vocab::Cpus::new).transpose().map_err(refused("node"))?;
        let accel = opt_str("node", &options, "accel")?.map(|a| a.parse()).transpose().map_err(refused("node"))?;
        let rootfs = opt_str("node", &options, "rootfs")?.map(std::path::PathBuf::from);
        // Which options fit which kind is the lab's rule (`NodeOptions::check`).
        let options = crate::vocab::NodeOptions { mem_mb, cpus, accel, image, args, rootfs };
        call(&ctx, Command::AddNode { name: name.to_string(), kind, options })?;
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

    /// Attaches the terminal to the node's console until Ctrl-] (the node
    /// runs on): the serial console of a uml machine, or a shell inside an
    /// ns node (`exit` leaves). Input comes from stdin, so it also works
    /// with a pipe; with no input it returns at once.
    ///
    /// ```rhai
    /// let a = node("a");
    /// a.console();   // in the REPL: a shell in a; `exit` comes back
    /// ```
    #[rhai_fn(return_raw)]
    pub fn console(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<()> {
        let Reply::Console(target) = call(&ctx, Command::Console { node: node.name.clone() })? else {
            return Err(script_error("unexpected reply"));
        };
        crate::host::console::attach(&node.name, &target)
            .map_err(|e| script_error(format!("console of {}: {e}", node.name)))
    }

    /// Everything about the node as a map: `name`, `kind`, `pid`,
    /// `running`, `ifaces`, `detail` (for kvm nodes `accel=kvm` or
    /// `accel=tcg`; empty otherwise) and `disk_bytes` (what the node's own
    /// copy-on-write layer takes on disk, not counting its base).
    ///
    /// ```rhai
    /// let a = node("a");
    /// assert(a.info().kind == "ns");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn info(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<Map> {
        let Reply::Node(info) = call(&ctx, Command::NodeInfo { node: node.name.clone() })? else {
            return Err(script_error("unexpected reply"));
        };
        let mut m = Map::new();
        m.insert("name".into(), info.name.clone().into());
        m.insert("kind".into(), info.kind.to_string().into());
        m.insert("pid".into(), (info.pid as i64).into());
        m.insert("running".into(), info.running.into());
        m.insert("detail".into(), info.detail.clone().unwrap_or_default().into());
        m.insert("disk_bytes".into(), (info.disk_bytes as i64).into());
        m.insert("ifaces".into(), ifaces(ctx, node)?.into());
        Ok(m)
    }

    /// Freezes the node: a kvm machine's vCPUs stop (QMP `stop`), a uml
    /// machine waits (mconsole `stop`), an ns node's processes get SIGSTOP.
    /// Its interfaces stay plugged; frames sent to it wait or are dropped.
    ///
    /// ```rhai
    /// let a = node("a");
    /// a.pause();
    /// a.resume();
    /// ```
    #[rhai_fn(return_raw)]
    pub fn pause(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<()> {
        call(&ctx, Command::PauseNode { node: node.name.clone(), paused: true }).map(|_| ())
    }

    /// Lets a paused node go on.
    ///
    /// ```rhai
    /// let a = node("a");
    /// a.pause();
    /// a.resume();
    /// assert(a.exec("true").ok);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn resume(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<()> {
        call(&ctx, Command::PauseNode { node: node.name.clone(), paused: false }).map(|_| ())
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
        let cidr = cidr.parse().map_err(|e: crate::vocab::addr::CidrError| script_error(format!("set_ip(): {e}")))?;
        call(&ctx, Command::SetIp { node: node.name.clone(), iface: iface.to_string(), cidr })?;
        Ok(())
    }

    /// Whether the node runs (false between `stop()` and `start()`).
    ///
    /// ```rhai
    /// let a = node("a");
    /// assert(a.running);
    /// ```
    #[rhai_fn(get = "running", pure, return_raw)]
    pub fn running(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<bool> {
        match call(&ctx, Command::NodeInfo { node: node.name.clone() })? {
            Reply::Node(info) => Ok(info.running),
            _ => Err(script_error("unexpected reply")),
        }
    }

    /// Powers the node off: every process in it ends and its interfaces
    /// lose carrier; its configuration is kept for `start()`.
    ///
    /// ```rhai
    /// let a = node("a");
    /// a.stop();
    /// assert(!a.running);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn stop(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<()> {
        call(&ctx, Command::StopNode { node: node.name.clone() }).map(|_| ())
    }

    /// Powers a stopped node on: fresh namespaces with the same interfaces,
    /// MACs, addresses and routes.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// b.stop();
    /// b.start();
    /// assert(ping(a, b));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn start(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<()> {
        call(&ctx, Command::StartNode { node: node.name.clone() }).map(|_| ())
    }

    /// Removes the node, its links and its LAN ports from the lab.
    ///
    /// ```rhai
    /// let a = node("a");
    /// a.delete();
    /// assert(nodes().len() == 0);
    /// ```
    #[rhai_fn(name = "delete", return_raw)]
    pub fn delete_node(ctx: NativeCallContext, node: &mut Node) -> RhaiResult<()> {
        call(&ctx, Command::DeleteNode { node: node.name.clone() }).map(|_| ())
    }

    /// Adds a static route: `dst` is a prefix or `"default"`, `via` the
    /// next hop's address.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// a.add_route("10.9.0.0/16", "10.0.0.2");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn add_route(ctx: NativeCallContext, node: &mut Node, dst: &str, via: &str) -> RhaiResult<()> {
        let mut m = Map::new();
        m.insert("via".into(), via.into());
        add_route_with(ctx, node, dst, m)
    }

    /// Adds a static route with options `via` (next hop) and/or `dev`
    /// (interface).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24" });
    /// a.add_route("default", #{ dev: "eth0" });
    /// ```
    #[rhai_fn(name = "add_route", return_raw)]
    pub fn add_route_with(ctx: NativeCallContext, node: &mut Node, dst: &str, options: Map) -> RhaiResult<()> {
        check_keys("add_route", &options, &["via", "dev"])?;
        let dst = dst.parse().map_err(|e: crate::vocab::addr::CidrError| script_error(format!("add_route(): {e}")))?;
        let via = opt_str("add_route", &options, "via")?
            .map(|v| v.parse().map_err(|_| script_error(format!("add_route(): via {v:?} is not an IP address"))))
            .transpose()?;
        let dev = opt_str("add_route", &options, "dev")?;
        if via.is_none() && dev.is_none() {
            return Err(script_error("add_route(): give via, dev, or both"));
        }
        let route = crate::vocab::addr::Route { dst, via, dev };
        call(&ctx, Command::AddRoute { node: node.name.clone(), route }).map(|_| ())
    }

    /// Sets a kernel parameter inside the node, as `sysctl -w` would:
    /// `key` is dotted (`net.ipv4.ip_forward`).
    ///
    /// ```rhai
    /// let r = node("r");
    /// r.sysctl("net.ipv4.ip_forward", "1");
    /// assert(r.exec("cat /proc/sys/net/ipv4/ip_forward").stdout.trimmed() == "1");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn sysctl(ctx: NativeCallContext, node: &mut Node, key: &str, value: &str) -> RhaiResult<()> {
        let valid = !key.is_empty()
            && !key.contains("..")
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !valid {
            return Err(script_error(format!("sysctl(): invalid key {key:?}")));
        }
        // As sysctl(8): dots separate levels, a slash stands for a dot in a name.
        let path: String = format!(
            "/proc/sys/{}",
            key.chars()
                .map(|c| match c {
                    '.' => '/',
                    '/' => '.',
                    c => c,
                })
                .collect::<String>()
        );
        let argv = vec![
            "sh".into(),
            "-c".into(),
            "printf '%s\\n' \"$1\" > \"$2\"".into(),
            "sysctl".into(),
            value.into(),
            path,
        ];
        let out = run(&ctx, node, argv, &Map::new())?;
        if out.get("ok").and_then(|v| v.as_bool().ok()) != Some(true) {
            let err = out.get("stderr").map(|e| e.to_string()).unwrap_or_default();
            return Err(script_error(format!("sysctl(): cannot set {key}: {}", err.trim())));
        }
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

    /// Links two nodes with options: `ip_a`, `ip_b` (CIDR), `mtu`,
    /// `iface_a`, `iface_b` to name the interfaces (default: next `ethN`),
    /// `name` for the link itself (default `a--b`), and impairments,
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

    /// Plugs a node into a LAN with options: `ip` (CIDR), `mtu`, `iface`
    /// (the interface name), and `vlan: 10` (an access port) or
    /// `trunk: [10, 20]` (tagged frames of those VLANs), and the
    /// impairments `link(a, b, #{…})` takes (a is the node, b the LAN).
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

/// Lab-wide tools: reachability, counters, time, the host, JSON.
#[export_module]
pub mod lab_api {
    use super::*;
    use std::time::Duration;

    /// Default time `ping` waits for an answer.
    pub const PING_TIMEOUT_MS: i64 = 2_000;

    /// Every node of the lab, in creation order.
    ///
    /// ```rhai
    /// node("a"); node("b");
    /// for n in nodes() { print(n.name); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn nodes(ctx: NativeCallContext) -> RhaiResult<Array> {
        Ok(lab_topology(&ctx)?.order.iter().map(|n| Dynamic::from(NodeRef { name: n.clone() })).collect())
    }

    /// The existing node called `name` (for functions, which cannot see the
    /// script's variables).
    ///
    /// ```rhai
    /// node("a");
    /// fn host() { get_node("a").exec("hostname").stdout }
    /// print(host());
    /// ```
    #[rhai_fn(return_raw)]
    pub fn get_node(ctx: NativeCallContext, name: &str) -> RhaiResult<NodeRef> {
        lab_topology(&ctx)?.node(name).map_err(|e| lab_error(e.into()))?;
        Ok(NodeRef { name: name.to_string() })
    }

    /// The whole topology as a map: `lab`, `nodes` (by name, with kind,
    /// interfaces, routes, running), `links` (by name), `lans` (by name),
    /// `order`.
    ///
    /// ```rhai
    /// link(node("a"), node("b"), #{ ip_a: "10.0.0.1/24" });
    /// let t = topology();
    /// print(t.nodes.a.ifaces[0].addrs);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn topology(ctx: NativeCallContext) -> RhaiResult<Dynamic> {
        rhai::serde::to_dynamic(super::lab_topology(&ctx)?)
    }

    /// Calls `condition` every 50 ms until it returns true (then returns
    /// true) or `timeout_ms` passes (then returns false).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// assert(wait_until(|| ping(a, b, #{ timeout_ms: 200 }), 5000));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn wait_until(ctx: NativeCallContext, condition: FnPtr, timeout_ms: i64) -> RhaiResult<bool> {
        let end = deadline("wait_until", timeout_ms)?;
        loop {
            let v: Dynamic = condition.call_within_context(&ctx, ())?;
            if v.as_bool().map_err(|t| script_error(format!("wait_until(): the condition returned {t}, not a bool")))? {
                return Ok(true);
            }
            if std::time::Instant::now() >= end {
                return Ok(false);
            }
            sleep(50)?;
        }
    }

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

    /// `ping` to an address, with options: `timeout_ms`.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// assert(!ping(a, "10.0.0.77", #{ timeout_ms: 300 }));
    /// ```
    #[rhai_fn(name = "ping", return_raw)]
    pub fn ping_addr_with(ctx: NativeCallContext, a: NodeRef, addr: &str, options: Map) -> RhaiResult<bool> {
        check_keys("ping", &options, &["timeout_ms"])?;
        let t = opt_int("ping", &options, "timeout_ms")?.unwrap_or(PING_TIMEOUT_MS);
        Ok(ping_rtt(&ctx, &a, target(addr)?, t)?.is_some())
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
        rtt_dynamic(&ctx, &a, PingTarget::Node(b.name))
    }

    /// The round-trip time of one ICMP echo from `a` to an address, in
    /// microseconds, or `()` when unanswered within 2 s.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// print(`${rtt_us(a, "10.0.0.2")} µs`);
    /// ```
    #[rhai_fn(name = "rtt_us", return_raw)]
    pub fn rtt_us_addr(ctx: NativeCallContext, a: NodeRef, addr: &str) -> RhaiResult<Dynamic> {
        rtt_dynamic(&ctx, &a, target(addr)?)
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
        port_counters(&ctx, None)
    }

    /// The items of an array as text, separated by `sep`.
    ///
    /// ```rhai
    /// assert(["a", 1, true].join(", ") == "a, 1, true");
    /// ```
    #[rhai_fn(global)]
    pub fn join(items: Array, sep: &str) -> String {
        items.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(sep)
    }

    /// Whether `text` matches the regular expression `pattern` (Rust
    /// `regex` syntax; anywhere in the text unless anchored).
    ///
    /// ```rhai
    /// assert("eth0: state UP".matches_regex(`state (UP|UNKNOWN)`));
    /// assert(!"10.0.0.1".matches_regex(`^192\.`));
    /// ```
    #[rhai_fn(global, return_raw)]
    pub fn matches_regex(text: &str, pattern: &str) -> RhaiResult<bool> {
        let re = regex::Regex::new(pattern)
            .map_err(|e| script_error(format!("matches_regex(): {pattern:?} is not a regular expression: {e}")))?;
        Ok(re.is_match(text))
    }

    /// Skips the running test of `clonet test` (counted as skipped, not
    /// failed), e.g. when a tool it needs is missing. Elsewhere it is an
    /// error saying why.
    ///
    /// ```rhai
    /// fn test_ospf() {
    ///     if !host_exec("command -v vtysh").ok { skip("FRR is not installed"); }
    /// }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn skip(reason: &str) -> RhaiResult<()> {
        Err(script_error(format!("{}{reason}", crate::testing::SKIP_MARK)))
    }

    /// Seeds every impaired link direction that has no `seed` of its own:
    /// two runs with the same seed drop, duplicate, corrupt and delay
    /// exactly the same frames. Links impaired before the call are
    /// re-seeded too.
    ///
    /// ```rhai
    /// seed(42);
    /// link(node("a"), node("b"), #{ loss: 10 });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn seed(ctx: NativeCallContext, seed: i64) -> RhaiResult<()> {
        let seed = u64::try_from(seed).map_err(|_| script_error(format!("seed(): {seed} is negative")))?;
        call(&ctx, Command::Seed { seed }).map(|_| ())
    }

    /// Pauses the script. Ctrl-C interrupts it.
    ///
    /// ```rhai
    /// sleep(100);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn sleep(ms: i64) -> RhaiResult<()> {
        let end = deadline("sleep", ms)?;
        if dry_run() {
            return Ok(());
        }
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
        if dry_run() {
            // A dry build changes nothing on the host: an empty success.
            return Ok(exec_map(crate::host::ExecOutput::default()));
        }
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

/// A snapshot: a named, read-only disk state of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRef {
    pub name: String,
}

fn snapshot_map(info: &crate::lab::command::SnapshotInfo) -> Map {
    let mut m = Map::new();
    m.insert("name".into(), info.name.clone().into());
    m.insert("node".into(), info.node.clone().into());
    m.insert("kind".into(), info.kind.to_string().into());
    m.insert("bytes".into(), (info.bytes as i64).into());
    let users: Array = info.users.iter().map(|u| Dynamic::from(u.clone())).collect();
    m.insert("users".into(), users.into());
    m
}

fn clone_with(
    ctx: &NativeCallContext,
    source: crate::lab::command::CloneSource,
    name: &str,
    options: &Map,
) -> RhaiResult<NodeRef> {
    check_keys("clone", options, &["mem", "cpus"])?;
    let mem_mb =
        opt_int("clone", options, "mem")?.map(crate::vocab::MemMb::new).transpose().map_err(refused("clone"))?;
    let cpus = opt_int("clone", options, "cpus")?.map(crate::vocab::Cpus::new).transpose().map_err(refused("clone"))?;
    call(ctx, Command::Clone { source, name: name.to_string(), mem_mb, cpus })?;
    Ok(NodeRef { name: name.to_string() })
}

/// Snapshots and clones: freezing disk states, and new nodes built on them
/// without copying the base.
#[export_module]
pub mod snapshot_api {
    use super::*;
    use crate::lab::command::CloneSource;

    pub type Snapshot = SnapshotRef;

    /// Freezes the node's disk as it is now into a read-only snapshot
    /// called `name`; the node carries on. uml: the COW file is copied
    /// while the machine holds still; kvm: a live external qcow2 snapshot.
    ///
    /// ```rhai
    /// let u = node("u", #{ kind: "uml" });
    /// u.exec("echo hello > /root/note");
    /// let s = snapshot(u, "u-note");
    /// print(s.bytes);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn snapshot(ctx: NativeCallContext, node: NodeRef, name: &str) -> RhaiResult<Snapshot> {
        call(&ctx, Command::Snapshot { node: node.name.clone(), name: name.to_string(), memory: false })?;
        Ok(SnapshotRef { name: name.to_string() })
    }

    /// A snapshot with options: `memory: true` (kvm) also saves the
    /// machine's RAM and device state, and `restore` then resumes it where
    /// it was, running programs included, instead of booting.
    ///
    /// ```rhai
    /// let k = node("k", #{ kind: "kvm" });
    /// k.exec("echo before > /tmp/in-ram");
    /// let s = snapshot(k, "live", #{ memory: true });
    /// k.exec("echo after > /tmp/in-ram");
    /// restore(k, s);
    /// assert(k.exec("cat /tmp/in-ram").stdout == "before\n");
    /// ```
    #[rhai_fn(name = "snapshot", return_raw)]
    pub fn snapshot_with(ctx: NativeCallContext, node: NodeRef, name: &str, options: Map) -> RhaiResult<Snapshot> {
        check_keys("snapshot", &options, &["memory"])?;
        let memory = match options.get("memory") {
            None => false,
            Some(v) => {
                v.as_bool().map_err(|t| script_error(format!("snapshot(): memory is true or false, not {t}")))?
            }
        };
        call(&ctx, Command::Snapshot { node: node.name.clone(), name: name.to_string(), memory })?;
        Ok(SnapshotRef { name: name.to_string() })
    }

    /// A new node called `name`, of the same kind and options, whose disk
    /// is a copy-on-write layer over the snapshot: it has the snapshot's
    /// files, its own hostname and MACs.
    ///
    /// ```rhai
    /// let u = node("u", #{ kind: "uml" });
    /// let s = snapshot(u, "base");
    /// let c = clone(s, "c1");
    /// assert(c.kind == "uml");
    /// ```
    #[rhai_fn(name = "clone", return_raw)]
    pub fn clone_snapshot(ctx: NativeCallContext, snapshot: Snapshot, name: &str) -> RhaiResult<NodeRef> {
        clone_with(&ctx, CloneSource::Snapshot(snapshot.name), name, &Map::new())
    }

    /// A clone of a snapshot with options: `mem` (MiB), `cpus` (kvm).
    ///
    /// ```rhai
    /// let u = node("u", #{ kind: "uml" });
    /// let c = clone(snapshot(u, "base"), "c1", #{ mem: 96 });
    /// ```
    #[rhai_fn(name = "clone", return_raw)]
    pub fn clone_snapshot_with(
        ctx: NativeCallContext,
        snapshot: Snapshot,
        name: &str,
        options: Map,
    ) -> RhaiResult<NodeRef> {
        clone_with(&ctx, CloneSource::Snapshot(snapshot.name), name, &options)
    }

    /// A clone of a running node: it is snapshotted first (the snapshot is
    /// called `<node>-for-<name>`).
    ///
    /// ```rhai
    /// let u = node("u", #{ kind: "uml" });
    /// let c = clone(u, "u2");
    /// print(snapshots());
    /// ```
    #[rhai_fn(name = "clone", return_raw)]
    pub fn clone_node(ctx: NativeCallContext, node: NodeRef, name: &str) -> RhaiResult<NodeRef> {
        clone_with(&ctx, CloneSource::Node(node.name), name, &Map::new())
    }

    /// A clone of a running node with options: `mem` (MiB), `cpus` (kvm).
    ///
    /// ```rhai
    /// let u = node("u", #{ kind: "uml" });
    /// let c = clone(u, "u2", #{ mem: 96 });
    /// ```
    #[rhai_fn(name = "clone", return_raw)]
    pub fn clone_node_with(ctx: NativeCallContext, node: NodeRef, name: &str, options: Map) -> RhaiResult<NodeRef> {
        clone_with(&ctx, CloneSource::Node(node.name), name, &options)
    }

    /// Brings the node's disk back to the snapshot (of a node of the same
    /// kind); the node restarts with the same interfaces and addresses.
    ///
    /// ```rhai
    /// let u = node("u", #{ kind: "uml" });
    /// let s = snapshot(u, "clean");
    /// u.exec("touch /root/mess");
    /// restore(u, s);
    /// assert(!u.exec("test -e /root/mess").ok);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn restore(ctx: NativeCallContext, node: NodeRef, snapshot: Snapshot) -> RhaiResult<()> {
        call(&ctx, Command::Restore { node: node.name, snapshot: snapshot.name }).map(|_| ())
    }

    /// Every snapshot of the lab: maps of `name`, `node`, `kind`, `bytes`
    /// (what its own layer takes on disk) and `users` (nodes built on it).
    ///
    /// ```rhai
    /// let u = node("u", #{ kind: "uml" });
    /// snapshot(u, "s1");
    /// assert(snapshots()[0].name == "s1");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn snapshots(ctx: NativeCallContext) -> RhaiResult<Array> {
        match call(&ctx, Command::Snapshots)? {
            Reply::Snapshots { snapshots: list } => Ok(list.iter().map(|i| snapshot_map(i).into()).collect()),
            _ => Err(script_error("unexpected reply")),
        }
    }

    /// Deletes a snapshot; refused while a node is built on it.
    ///
    /// ```rhai
    /// let u = node("u", #{ kind: "uml" });
    /// snapshot(u, "s1");
    /// delete_snapshot("s1");
    /// assert(snapshots().len() == 0);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn delete_snapshot(ctx: NativeCallContext, name: &str) -> RhaiResult<()> {
        call(&ctx, Command::DeleteSnapshot { name: name.to_string() }).map(|_| ())
    }

    /// Writes the whole lab to directory `dir` (new, or empty): the
    /// topology with every link option, and every node's disk state.
    /// `load_lab(dir)` or `clonet run --restore DIR` rebuild it.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// a.exec("echo kept > /root/note");
    /// let dir = host_exec("mktemp -d").stdout.trimmed();
    /// save_lab(`${dir}/saved`);
    /// host_exec(`rm -rf ${dir}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn save_lab(ctx: NativeCallContext, dir: &str) -> RhaiResult<()> {
        call(&ctx, Command::SaveLab { dir: dir.into() }).map(|_| ())
    }

    /// Rebuilds a lab written by `save_lab` into this one: same nodes on
    /// their saved disks, same links, addresses, routes and states.
    ///
    /// ```rhai
    /// let a = node("a");
    /// a.exec("echo kept > /root/note");
    /// let dir = host_exec("mktemp -d").stdout.trimmed();
    /// save_lab(`${dir}/saved`);
    /// a.delete();
    /// load_lab(`${dir}/saved`);
    /// assert(get_node("a").exec("cat /root/note").stdout == "kept\n");
    /// host_exec(`rm -rf ${dir}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn load_lab(ctx: NativeCallContext, dir: &str) -> RhaiResult<()> {
        call(&ctx, Command::LoadLab { dir: dir.into() }).map(|_| ())
    }

    /// A snapshot by name (to clone or restore from it).
    ///
    /// ```rhai
    /// let u = node("u", #{ kind: "uml" });
    /// snapshot(u, "s1");
    /// let c = clone(get_snapshot("s1"), "c1");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn get_snapshot(ctx: NativeCallContext, name: &str) -> RhaiResult<Snapshot> {
        match call(&ctx, Command::Snapshots)? {
            Reply::Snapshots { snapshots: list } if list.iter().any(|i| i.name == name) => {
                Ok(SnapshotRef { name: name.to_string() })
            }
            _ => Err(script_error(format!("no snapshot called {name:?}"))),
        }
    }

    /// The snapshot's name.
    ///
    /// ```rhai
    /// let s = snapshot(node("u", #{ kind: "uml" }), "s1");
    /// assert(s.name == "s1");
    /// ```
    #[rhai_fn(get = "name", pure)]
    pub fn name(s: &mut Snapshot) -> String {
        s.name.clone()
    }

    /// Bytes the snapshot's own layer takes on disk.
    ///
    /// ```rhai
    /// let s = snapshot(node("u", #{ kind: "uml" }), "s1");
    /// print(s.bytes);
    /// ```
    #[rhai_fn(get = "bytes", pure, return_raw)]
    pub fn bytes(ctx: NativeCallContext, s: &mut Snapshot) -> RhaiResult<i64> {
        match call(&ctx, Command::Snapshots)? {
            Reply::Snapshots { snapshots: list } => list
                .iter()
                .find(|i| i.name == s.name)
                .map(|i| i.bytes as i64)
                .ok_or_else(|| script_error(format!("no snapshot called {:?}", s.name))),
            _ => Err(script_error("unexpected reply")),
        }
    }

    /// `Snapshot(name)`.
    ///
    /// ```rhai
    /// print(snapshot(node("u", #{ kind: "uml" }), "s1"));   // Snapshot(s1)
    /// ```
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn to_string(s: &mut Snapshot) -> String {
        format!("Snapshot({})", s.name)
    }
}

fn start_capture(ctx: &NativeCallContext, target: String, file: &str) -> RhaiResult<CaptureRef> {
    let path = std::path::absolute(file).map_err(|e| script_error(format!("capture(): {file:?}: {e}")))?;
    match call(ctx, Command::StartCapture { target, file: path })? {
        Reply::Capture(c) => Ok(CaptureRef { id: c.id, target: c.target, file: c.file.display().to_string() }),
        _ => Err(script_error("unexpected reply")),
    }
}

fn sniff_frames(ctx: &NativeCallContext, target: &str, count: i64, options: &Map) -> RhaiResult<i64> {
    check_keys("sniff", options, &["timeout_ms"])?;
    let count = u64::try_from(count).map_err(|_| script_error(format!("sniff(): {count} frames is negative")))?;
    let timeout = positive_ms("sniff", opt_int("sniff", options, "timeout_ms")?.unwrap_or(10_000))?;
    let lab = lab_of(ctx)?;
    let opened = lab.local_lab().ok_or(LabError::NotLocal("sniff()")).and_then(|mut l| l.open_capture(target));
    let (feed, labels) = opened.map_err(lab_error)?;
    let start = std::time::SystemTime::now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout);
    let mut seen = 0;
    while seen < count && !crate::interrupt::requested() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match feed.frames.recv_timeout(left.min(std::time::Duration::from_millis(100))) {
            Ok(f) => {
                println!("{}", crate::lab::capture::sniff_line(&f, start, &labels));
                seen += 1;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(mut l) = lab.local_lab() {
        l.close_capture(feed.id).map_err(lab_error)?;
    }
    Ok(seen as i64)
}

/// Captures and live sniffing: what crosses links, LANs and ports.
#[export_module]
pub mod capture_api {
    use super::*;

    pub type Capture = CaptureRef;

    /// Writes the frames a link carries (as each end receives them, after
    /// impairments) to a pcap file that `tshark -r` and Wireshark read;
    /// GSO super-frames are written as the frames a wire would carry.
    /// Returns a handle; `stop()` ends it (the lab's end does too).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// let c = capture(l, "/tmp/a-b.pcap");
    /// ping(a, b);
    /// print(c.stop());   // #{"file": "/tmp/a-b.pcap", "frames": 4, "lost": 0}
    /// ```
    #[rhai_fn(return_raw)]
    pub fn capture(ctx: NativeCallContext, link: LinkRef, file: &str) -> RhaiResult<Capture> {
        start_capture(&ctx, link.name, file)
    }

    /// Captures every frame the LAN's ports send.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// link(node("a"), sw);
    /// let c = capture(sw, "/tmp/sw.pcap");
    /// c.stop();
    /// ```
    #[rhai_fn(name = "capture", return_raw)]
    pub fn capture_lan(ctx: NativeCallContext, lan: LanRef, file: &str) -> RhaiResult<Capture> {
        start_capture(&ctx, lan.name, file)
    }

    /// Captures by name: a link (`"a--b"`), a LAN, or one port
    /// (`"node:iface"`, both directions).
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// let c = capture("a:eth0", "/tmp/a.pcap");
    /// c.stop();
    /// ```
    #[rhai_fn(name = "capture", return_raw)]
    pub fn capture_named(ctx: NativeCallContext, target: &str, file: &str) -> RhaiResult<Capture> {
        start_capture(&ctx, target.to_string(), file)
    }

    /// Stops the capture and closes its file: `#{ frames, lost, file }`
    /// (`lost` counts copies dropped because the disk fell behind).
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// let c = capture("a--b", "/tmp/ab.pcap");
    /// let r = c.stop();
    /// assert(r.lost == 0);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn stop(ctx: NativeCallContext, capture: &mut Capture) -> RhaiResult<Map> {
        match call(&ctx, Command::StopCapture { id: capture.id })? {
            Reply::CaptureStopped { frames, lost } => {
                let mut m = Map::new();
                m.insert("frames".into(), (frames as i64).into());
                m.insert("lost".into(), (lost as i64).into());
                m.insert("file".into(), capture.file.clone().into());
                Ok(m)
            }
            _ => Err(script_error("unexpected reply")),
        }
    }

    /// The pcap file being written.
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// print(capture("a--b", "/tmp/ab.pcap").file);
    /// ```
    #[rhai_fn(get = "file", pure)]
    pub fn file(capture: &mut Capture) -> String {
        capture.file.clone()
    }

    /// Prints the next `n` frames crossing a link (or LAN, or `node:iface`
    /// port), one line each: time, direction, MACs, VLAN tag, and the
    /// decoded ARP / IPv4 / IPv6 / ICMP / TCP / UDP summary. Waits at most
    /// 10 s; returns how many frames it printed.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// exec(a, "ping -c 3 -i 0.2 10.0.0.2 >/dev/null 2>&1 &");
    /// sniff(l, 4);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn sniff(ctx: NativeCallContext, link: LinkRef, n: i64) -> RhaiResult<i64> {
        sniff_frames(&ctx, &link.name, n, &Map::new())
    }

    /// `sniff` with options: `timeout_ms` (default 10000).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b);
    /// assert(sniff(l, 1, #{ timeout_ms: 100 }) <= 1);
    /// ```
    #[rhai_fn(name = "sniff", return_raw)]
    pub fn sniff_with(ctx: NativeCallContext, link: LinkRef, n: i64, options: Map) -> RhaiResult<i64> {
        sniff_frames(&ctx, &link.name, n, &options)
    }

    /// Sniffs a LAN (every frame its ports send).
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// link(node("a"), sw);
    /// sniff(sw, 1, #{ timeout_ms: 100 });
    /// ```
    #[rhai_fn(name = "sniff", return_raw)]
    pub fn sniff_lan(ctx: NativeCallContext, lan: LanRef, n: i64, options: Map) -> RhaiResult<i64> {
        sniff_frames(&ctx, &lan.name, n, &options)
    }

    /// Sniffs by name: a link, a LAN or a `node:iface` port.
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// sniff("a:eth0", 1, #{ timeout_ms: 100 });
    /// ```
    #[rhai_fn(name = "sniff", return_raw)]
    pub fn sniff_named(ctx: NativeCallContext, target: &str, n: i64, options: Map) -> RhaiResult<i64> {
        sniff_frames(&ctx, target, n, &options)
    }

    /// `Capture(target -> file)`, for printing.
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// print(capture("a--b", "/tmp/ab.pcap"));
    /// ```
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn capture_to_string(capture: &mut Capture) -> String {
        format!("Capture({} -> {})", capture.target, capture.file)
    }
}

/// Reporting benchmark figures (`scripts/bench/`, `clonet bench`).
#[export_module]
pub mod bench_api {
    use super::*;
    use crate::testing::bench::{self, BenchRow};

    /// Reports one benchmark figure: clonet's `value` in `unit`, and the
    /// baseline measured in the same run, with the ratio of the two and
    /// whether `target` was met. `target` is `">= N"` or `"<= N"` on the
    /// value, or `">= Nx"` / `"<= Nx"` on the ratio. The row is printed;
    /// `clonet bench` also gathers it into its table and `--json`.
    ///
    /// ```rhai
    /// bench_row(#{ row: "a", what: "TCP ns<->ns, 1 stream", unit: "Gbit/s",
    ///              value: 11.3, baseline: "Linux bridge", baseline_value: 16.7,
    ///              target: ">= 1.0x" });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn bench_row(ctx: NativeCallContext, fields: Map) -> RhaiResult<()> {
        const F: &str = "bench_row";
        check_keys(F, &fields, &["row", "what", "unit", "value", "baseline", "baseline_value", "target"])?;
        let need = |k: &str| script_error(format!("{F}(): {k} is required"));
        let row = opt_str(F, &fields, "row")?.ok_or_else(|| need("row"))?;
        let what = opt_str(F, &fields, "what")?.ok_or_else(|| need("what"))?;
        let unit = opt_str(F, &fields, "unit")?.unwrap_or_default();
        let value = opt_number(F, &fields, "value")?.ok_or_else(|| need("value"))?;
        let baseline = match (opt_str(F, &fields, "baseline")?, opt_number(F, &fields, "baseline_value")?) {
            (Some(name), Some(v)) => Some((name, v)),
            (None, None) => None,
            _ => return Err(script_error(format!("{F}(): baseline and baseline_value go together"))),
        };
        let target = opt_str(F, &fields, "target")?;
        let source = ctx.call_source().unwrap_or("script");
        let lab = std::path::Path::new(source).file_stem().map(|s| s.to_string_lossy().to_string());
        let r = BenchRow::new(&lab.unwrap_or_default(), &row, &what, &unit, value, baseline, target)
            .map_err(|e| script_error(format!("{F}(): {e}")))?;
        bench::announce(&r);
        bench::record(r);
        Ok(())
    }
}
