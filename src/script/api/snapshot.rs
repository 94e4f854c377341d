//! The `snapshot_api` Rhai module: snapshots of node disks, clones built
//! on them, and saving and loading a whole lab.
//!
//! Owns: those functions and the clone options. Must not touch: the host,
//! except through lab `Command`s.
use rhai::plugin::*;
use rhai::{Array, Dynamic, Map, NativeCallContext};

use super::{call, check_keys, opt_int, refused, script_error, NodeRef, RhaiResult, SnapshotRef};
use crate::lab::{Command, Reply};

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
