//! The Rhai API, one `#[export_module]` per domain, each in its own file:
//! nodes (`node.rs`), links and LANs (`link.rs`), lab-wide tools (`lab.rs`),
//! snapshots and clones (`snapshot.rs`), captures and sniffing
//! (`capture.rs`), benchmark rows (`bench.rs`), labs of other tools
//! (`import.rs`). Every function's doc
//! comment carries a runnable example; these texts are what `:help` and
//! the API reference show.
//!
//! Functions never touch the host: they build a [`Command`], hand it to the
//! lab found in the engine's tag, and turn the [`Reply`] into Rhai values.
//!
//! Owns: what the domains share: the handles scripts hold (`NodeRef`,
//! `LinkRef`, `LanRef`, `SnapshotRef`, `CaptureRef`), running a command
//! (`call`) and turning its errors into script errors, reading option maps
//! (`check_keys`, `opt_*`, `refused`), times in ms, the topology and port
//! counters as scripts see them, `exec`'s result map, the dry-run switch,
//! and binding a lab's names in a REPL. Helpers stay outside the
//! `#[export_module]` modules so that the plugin macro does not export
//! them. Must not touch: the host, except through lab `Command`s.

mod bench;
mod capture;
mod import;
mod lab;
mod link;
mod node;
mod snapshot;

pub use bench::bench_api;
pub use capture::capture_api;
pub use import::import_api;
pub use lab::lab_api;
pub use link::link_api;
pub use node::node_api;
pub use snapshot::snapshot_api;

use rhai::{Array, Blob, Dynamic, EvalAltResult, Map, NativeCallContext, Position};

use crate::lab::{Command, LabError, Reply};

/// Whether the calling script is a dry build (`clonet graph`): it runs
/// against a host that starts nothing, and `host_exec` and `sleep` do
/// nothing either.
fn dry_run(ctx: &NativeCallContext) -> bool {
    context_of(ctx).is_some_and(|c| c.dry_run)
}

/// The calling script's context (none on a bare engine).
fn context_of(ctx: &NativeCallContext) -> Option<super::context::ScriptContext> {
    ctx.tag().and_then(|t| t.clone().try_cast::<super::context::ScriptContext>())
}

/// The lab a script drives, shared with the engine through its tag.
pub use crate::lab::handle::LabRef;

// The domain files import this by name, which shadows the non-generic
// `RhaiResult` that their `use rhai::plugin::*` brings.
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
    context_of(ctx).map(|c| c.lab).ok_or_else(|| script_error("no lab is attached to this interpreter"))
}

/// Refuses, in a student's answer, what reaches the host outside the lab
/// (`what` names it), noting the attempt for the grader.
fn refuse_in_answer(ctx: &NativeCallContext, what: &str) -> RhaiResult<()> {
    match context_of(ctx).and_then(|c| c.answer) {
        Some(guard) => {
            guard.record(what);
            Err(script_error(super::context::AnswerGuard::refusal(what)))
        }
        None => Ok(()),
    }
}

/// Runs one command against the lab of the calling script.
pub fn call(ctx: &NativeCallContext, cmd: Command) -> RhaiResult<Reply> {
    if let Some(what) = cmd.host_reach() {
        refuse_in_answer(ctx, what)?;
    }
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

/// A snapshot: a named, read-only disk state of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRef {
    pub name: String,
}

fn exec_map(out: crate::vocab::exec::ExecOutput) -> Map {
    let mut m = Map::new();
    m.insert("status".into(), (out.status as i64).into());
    m.insert("ok".into(), (out.status == 0).into());
    m.insert("stdout".into(), String::from_utf8_lossy(&out.stdout).to_string().into());
    m.insert("stderr".into(), String::from_utf8_lossy(&out.stderr).to_string().into());
    m.insert("stdout_bytes".into(), Dynamic::from_blob(out.stdout as Blob));
    m.insert("stderr_bytes".into(), Dynamic::from_blob(out.stderr as Blob));
    m.insert("truncated".into(), out.truncated.into());
    m
}
