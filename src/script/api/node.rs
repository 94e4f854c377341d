//! The `node_api` Rhai module: creating nodes, running commands in them,
//! reading what they are, addressing and routing them, powering them off
//! and on, and their consoles.
//!
//! Owns: the node functions scripts call and the `exec` options. Must not
//! touch: the host, except through lab `Command`s.
use rhai::plugin::*;
use rhai::{Array, Dynamic, Map, NativeCallContext};

use super::{
    call, check_keys, context_of, exec_map, opt_int, opt_str, positive_ms, refused, script_error, NodeRef, RhaiResult,
};
use crate::lab::{Command, Reply};

fn run(ctx: &NativeCallContext, node: &NodeRef, argv: Vec<String>, options: &Map) -> RhaiResult<Map> {
    check_keys("exec", options, &["timeout_ms", "stdin", "max_output", "user", "cwd"])?;
    let user = opt_str("exec", options, "user")?;
    let cwd = opt_str("exec", options, "cwd")?;
    let timeout_ms = opt_int("exec", options, "timeout_ms")?.unwrap_or(node_api::EXEC_TIMEOUT_MS);
    let timeout = crate::vocab::Timeout::from_millis(positive_ms("exec", timeout_ms)?).map_err(refused("exec"))?;
    let stdin = match options.get("stdin") {
        None => Vec::new(),
        Some(v) if v.is_blob() => v.clone().into_blob().unwrap_or_default(),
        Some(v) => v.to_string().into_bytes(),
    };
    let max_output = match opt_int("exec", options, "max_output")? {
        Some(bytes) => crate::vocab::OutputLimit::new(bytes).map_err(refused("exec"))?,
        None => crate::vocab::OutputLimit::DEFAULT,
    };
    let request = crate::vocab::exec::ExecRequest { argv, stdin, timeout, max_output, user, cwd };
    match call(ctx, Command::Exec { node: node.name.clone(), request })? {
        Reply::Exec(out) => Ok(exec_map(out)),
        _ => Err(script_error("unexpected reply")),
    }
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

    /// Creates a `nat` endpoint: the lab's way out, a passt user-mode
    /// network stack. Link one node to it: the node gets `10.0.2.15/24`
    /// and a default route through `10.0.2.2` by DHCP (unless the link
    /// gives it an address), the host's resolvers, the host's loopback at
    /// `10.0.2.2`, and connections beyond with the host's own address. The
    /// link is a link like any: counters, impairments, captures, down/up.
    /// passt serves one node: for more, make that node a router.
    ///
    /// ```rhai
    /// let gw = nat("gw");
    /// let n = node("n");
    /// link(n, gw);
    /// assert(n.exec("ip -4 addr show eth0").stdout.contains("10.0.2.15/24"));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn nat(ctx: NativeCallContext, name: &str) -> RhaiResult<Node> {
        nat_with(ctx, name, Map::new())
    }

    /// Creates a `nat` endpoint with options: `forward`, an array of
    /// `"tcp:HOST_PORT:NODE_PORT"` or `"udp:…"`: connections to that port
    /// of the host's loopback (127.0.0.1 only) reach the linked node's.
    ///
    /// ```rhai
    /// let gw = nat("gw", #{ forward: ["tcp:18080:80"] });
    /// link(node("web"), gw);
    /// ```
    #[rhai_fn(name = "nat", return_raw)]
    pub fn nat_with(ctx: NativeCallContext, name: &str, options: Map) -> RhaiResult<Node> {
        check_keys("nat", &options, &["forward"])?;
        let forward = match options.get("forward") {
            None => Vec::new(),
            Some(v) => {
                v.as_array_ref()
                    .map_err(|t| script_error(format!("nat(): forward must be an array of strings, not {t}")))?
                    .iter()
                    .map(|f| {
                        let text = f.clone().into_string().map_err(|t| {
                            script_error(format!("nat(): forward must be an array of strings, not {t}"))
                        })?;
                        text.parse::<crate::vocab::Forward>().map_err(refused("nat"))
                    })
                    .collect::<RhaiResult<Vec<_>>>()?
            }
        };
        let options = crate::vocab::NodeOptions { forward, ..Default::default() };
        call(&ctx, Command::AddNode { name: name.to_string(), kind: NodeKind::Nat, options })?;
        Ok(NodeRef { name: name.to_string() })
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
    /// ns nodes also take `binds`, an array of `"SOURCE:TARGET"` or
    /// `"SOURCE:TARGET:ro"`: a host directory or file shown at TARGET in
    /// the node, shared with the host (writes reach it unless `:ro`); a
    /// relative SOURCE is found from the script's directory. And `env`, a
    /// map of environment variables for every command run in the node.
    /// An ns node's `image` is a container image for its root: a registry
    /// reference (`"quay.io/frrouting/frr:9.1.0"`, pulled on first use),
    /// `"oci:DIR[:TAG]"`, `"docker-archive:FILE"` or `"oci-archive:FILE"`;
    /// its layers lie under the node's copy-on-write layer, its `Env` is
    /// the environment of `exec`, and its Entrypoint and Cmd run as the
    /// node's main program (in its WorkingDir, as its User; a shell alone
    /// is not run), or `cmd` (an array; `[]` runs none). When that
    /// program ends, the node dies (as a container does), and
    /// `info().detail` says how it ended.
    /// An ns node's `mem` (MiB) and `cpus` (whole CPUs of time) are
    /// limits, set in a control group of the node's own that every process
    /// run in it joins, as Docker's `--memory` and `--cpus`; where clonet
    /// cannot make one (an ordinary user without a delegated group), the
    /// node runs without them and `info().detail` says why.
    ///
    /// ```rhai
    /// let r1 = node("r1", #{ kind: "ns" });
    /// let h = node("h", #{ binds: ["/usr/share/doc:/doc:ro"], env: #{ GREETING: "hi" } });
    /// assert(h.exec("echo $GREETING; test -d /doc && ! touch /doc/x 2>/dev/null").stdout == "hi\n");
    /// let small = node("small", #{ mem: 64, cpus: 1 });
    /// print(small.info().detail);   // limits: mem 64 MiB, cpus 1
    /// ```
    #[rhai_fn(name = "node", return_raw)]
    pub fn node_with(ctx: NativeCallContext, name: &str, options: Map) -> RhaiResult<Node> {
        check_keys(
            "node",
            &options,
            &["kind", "mem", "image", "args", "cpus", "accel", "rootfs", "binds", "env", "cmd"],
        )?;
        let kind = match opt_str("node", &options, "kind")? {
            None => NodeKind::Ns,
            Some(k) => k.parse().map_err(refused("node"))?,
        };
        let mem_mb =
            opt_int("node", &options, "mem")?.map(crate::vocab::MemMb::new).transpose().map_err(refused("node"))?;
        // An ns node's image is a container image; a machine's, a disk.
        let image_text = opt_str("node", &options, "image")?;
        let (image, oci) = match kind {
            NodeKind::Ns => (None, image_text),
            _ => (image_text.map(std::path::PathBuf::from), None),
        };
        let cmd = match options.get("cmd") {
            None => None,
            Some(v) => Some(
                v.as_array_ref()
                    .map_err(|t| script_error(format!("node(): cmd must be an array of strings, not {t}")))?
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<String>>(),
            ),
        };
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
        // A student's answer may not reach beyond its lab: no registry, no
        // image file of the host's.
        if oci.is_some() {
            if let Some(guard) = context_of(&ctx).and_then(|c| c.answer) {
                guard.record("image");
                return Err(script_error(crate::script::context::AnswerGuard::refusal("image")));
            }
        }
        let binds = node_binds(&ctx, &options)?;
        let env = node_env(&options)?;
        // Which options fit which kind is the lab's rule (`NodeOptions::check`).
        let options = crate::vocab::NodeOptions {
            mem_mb,
            cpus,
            accel,
            image,
            args,
            rootfs,
            binds,
            env,
            oci,
            cmd,
            ..Default::default()
        };
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
    /// copy-on-write layer takes on disk, not counting its base); a plug
    /// adds `plug`: its `clients` (`iface` and `peer`, who it is), and how
    /// many `joined`, `left`, were `refused` (with `last_refusal`) or cut
    /// off for `garbage`, and how many frames from its clients the switch
    /// `dropped` (runts and the like, of clients that left too).
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
        if let Some(plug) = &info.plug {
            let clients: Array = plug
                .clients
                .iter()
                .map(|c| {
                    let mut cm = Map::new();
                    cm.insert("iface".into(), c.iface.clone().into());
                    cm.insert("peer".into(), c.peer.clone().into());
                    Dynamic::from(cm)
                })
                .collect();
            let mut pm = Map::new();
            pm.insert("clients".into(), clients.into());
            pm.insert("joined".into(), (plug.joined as i64).into());
            pm.insert("left".into(), (plug.left as i64).into());
            pm.insert("refused".into(), (plug.refused as i64).into());
            pm.insert("garbage".into(), (plug.garbage as i64).into());
            pm.insert("dropped".into(), (plug.dropped as i64).into());
            pm.insert("last_refusal".into(), plug.last_refusal.clone().unwrap_or_default().into());
            m.insert("plug".into(), pm.into());
        }
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

    /// Runs a shell command with options: `timeout_ms`, `stdin` (string or
    /// blob), `max_output` (bytes kept of stdout and of stderr, 16 MiB
    /// unless given, at most 256 MiB; past it, `truncated` is true); on ns
    /// nodes also `user` (a name or uid, optionally `:group`, looked up in
    /// the node's own /etc/passwd; root unless given) and `cwd` (the
    /// node's `/`, or an image's WorkingDir, unless given).
    ///
    /// ```rhai
    /// let a = node("a");
    /// let r = a.exec("wc -c", #{ stdin: "hello", timeout_ms: 2000 });
    /// assert(r.stdout.trimmed() == "5");
    /// let cut = a.exec("echo 0123456789", #{ max_output: 4 });
    /// assert(cut.stdout == "0123" && cut.truncated);
    /// let who = a.exec("id -u; pwd", #{ user: "nobody", cwd: "/tmp" });
    /// assert(who.stdout == "65534\n/tmp\n");
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

    /// Runs a program with an argument list and options (those of a shell
    /// command's: `timeout_ms`, `stdin`, `max_output`, `user`, `cwd`).
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
        let path = crate::vocab::node::sysctl_path(key).map_err(refused("sysctl"))?;
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

/// The `binds` option: relative sources found from the script's
/// directory. A student's answer may not show host files to its nodes.
fn node_binds(ctx: &NativeCallContext, options: &Map) -> RhaiResult<Vec<crate::vocab::Bind>> {
    let Some(v) = options.get("binds") else { return Ok(Vec::new()) };
    let list = v
        .as_array_ref()
        .map_err(|t| script_error(format!("node(): binds must be an array of strings, not {t}")))?
        .clone();
    let context = context_of(ctx);
    if let Some(guard) = context.as_ref().and_then(|c| c.answer.clone()).filter(|_| !list.is_empty()) {
        guard.record("binds");
        return Err(script_error(crate::script::context::AnswerGuard::refusal("binds")));
    }
    let base = context.map(|c| c.script_dir).unwrap_or_else(|| ".".into());
    list.into_iter()
        .map(|item| {
            let text = item
                .into_string()
                .map_err(|t| script_error(format!("node(): binds must be an array of strings, not {t}")))?;
            let mut bind = crate::vocab::Bind::parse(&text).map_err(refused("node"))?;
            if bind.source.is_relative() {
                bind.source = base.join(&bind.source);
            }
            bind.source = std::path::absolute(&bind.source)
                .map_err(|e| script_error(format!("node(): binds: {}: {e}", bind.source.display())))?;
            Ok(bind)
        })
        .collect()
}

/// The `env` option: a map of strings (numbers and booleans are written out).
fn node_env(options: &Map) -> RhaiResult<std::collections::BTreeMap<String, String>> {
    let Some(v) = options.get("env") else { return Ok(Default::default()) };
    let map = v
        .read_lock::<Map>()
        .ok_or_else(|| script_error(format!("node(): env must be a map of strings, not {}", v.type_name())))?;
    Ok(map.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}
