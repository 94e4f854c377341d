//! The `lab_api` Rhai module: lab-wide tools: listing and finding nodes,
//! the topology, reachability (`ping`, `rtt_us`), counters, waiting and
//! time, the host, JSON, assertions and text helpers.
//!
//! Owns: those functions and the defaults of `ping`. Must not touch: the
//! host, except through lab `Command`s and the `host_exec` scripts ask for.
use rhai::plugin::*;
use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext};

use super::{
    call, check_keys, deadline, dry_run, exec_map, lab_error, lab_topology, opt_int, port_counters, positive_ms,
    refuse_in_answer, refused, script_error, NodeRef, RhaiResult,
};
use crate::lab::command::PingTarget;
use crate::lab::{Command, Reply};

fn ping_rtt(ctx: &NativeCallContext, from: &NodeRef, to: PingTarget, timeout_ms: i64) -> RhaiResult<Option<u64>> {
    let timeout_ms = crate::vocab::Timeout::from_millis(positive_ms("ping", timeout_ms)?).map_err(refused("ping"))?;
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

/// Waits `ms` (at most an hour), ending early on Ctrl-C; a dry build does
/// not wait.
pub(super) fn pause(fn_name: &'static str, ms: i64, dry: bool) -> RhaiResult<()> {
    let end = deadline(fn_name, ms)?;
    if dry {
        return Ok(());
    }
    while std::time::Instant::now() < end {
        if crate::interrupt::requested() {
            return Err(EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into());
        }
        std::thread::sleep((end - std::time::Instant::now()).min(std::time::Duration::from_millis(20)));
    }
    Ok(())
}

/// Lab-wide tools: reachability, counters, time, the host, JSON.
#[export_module]
pub mod lab_api {
    use super::*;

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
            pause("wait_until", 50, dry_run(&ctx))?;
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
        Err(script_error(format!("{}{reason}", crate::script::SKIP_MARK)))
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

    /// Sets facts about the lab, shown by `clonet ls` and the web GUI and
    /// kept by saved labs: `description`, `author`, `version`, `email`,
    /// `web`, or any lower-case key; an empty string removes one.
    ///
    /// ```rhai
    /// lab_info(#{ description: "OSPF in one area", author: "A. Teacher" });
    /// assert(lab_info().author == "A. Teacher");
    /// ```
    #[rhai_fn(name = "lab_info", return_raw)]
    pub fn set_lab_info(ctx: NativeCallContext, info: Map) -> RhaiResult<()> {
        let info = info.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        call(&ctx, Command::SetLabInfo { info }).map(|_| ())
    }

    /// The facts the lab says about itself (see `lab_info(map)`), with its
    /// `name`.
    ///
    /// ```rhai
    /// print(lab_info().name);
    /// ```
    #[rhai_fn(name = "lab_info", return_raw)]
    pub fn lab_info(ctx: NativeCallContext) -> RhaiResult<Map> {
        let topo = lab_topology(&ctx)?;
        let mut map: Map = topo.about.iter().map(|(k, v)| (k.into(), v.clone().into())).collect();
        map.insert("name".into(), topo.lab.clone().into());
        Ok(map)
    }

    /// Pauses the script. Ctrl-C interrupts it.
    ///
    /// ```rhai
    /// sleep(100);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn sleep(ctx: NativeCallContext, ms: i64) -> RhaiResult<()> {
        pause("sleep", ms, dry_run(&ctx))
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
    pub fn host_exec(ctx: NativeCallContext, command: &str) -> RhaiResult<Map> {
        refuse_in_answer(&ctx, "host_exec")?;
        if dry_run(&ctx) {
            // A dry build changes nothing on the host: an empty success.
            return Ok(exec_map(crate::vocab::exec::ExecOutput::default()));
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| script_error(format!("host_exec(): {e}")))?;
        Ok(exec_map(crate::vocab::exec::ExecOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: false,
        }))
    }

    /// Prints `warning: TEXT` on stderr: something the user should know,
    /// that does not stop the script.
    ///
    /// ```rhai
    /// warn("r1 has no route to 10.0.9.0/24 yet");
    /// ```
    pub fn warn(text: &str) {
        crate::lab::progress::print_around(|| eprintln!("warning: {text}"));
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
    #[rhai_fn(return_raw)]
    pub fn env(ctx: NativeCallContext, name: &str) -> RhaiResult<Dynamic> {
        refuse_in_answer(&ctx, "env")?;
        Ok(match std::env::var(name) {
            Ok(v) => v.into(),
            Err(_) => Dynamic::UNIT,
        })
    }
}
