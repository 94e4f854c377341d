//! The Lab's snapshots, clones and saved labs: taking a snapshot (disk,
//! or disk and memory), cloning a node from one, restoring a node to one,
//! deleting one, and writing a whole lab to a directory and loading it back.
//!
//! Owns: snapshot layers in the run directory. Must not touch: the
//! registry's rules (`snapshot.rs`), the saved lab's format (`rebuild.rs`).
use super::command::{CloneSource, Reply, SnapshotInfo};
use super::{rebuild, snapshot, topology, Lab, LabError};
use crate::host::HostError;
use crate::vocab::NodeKind;

/// A node's interfaces as `name mac` words, in order.
fn iface_signature(model: &topology::NodeModel) -> Vec<String> {
    model.ifaces.iter().map(|i| format!("{} {}", i.name, i.mac)).collect()
}

impl Lab {
    /// Where snapshot layers live: `<run dir>/snapshots`.
    fn snapshot_dir(&mut self) -> Result<std::path::PathBuf, LabError> {
        let dir = self.run_dir_mut().path().join("snapshots");
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io("creating the snapshot directory")(e))?;
        Ok(dir)
    }

    pub(super) fn snapshot_info(&self, name: &str) -> Result<SnapshotInfo, LabError> {
        let r = self.snapshots.get(name)?;
        let bytes = crate::host::disks::bytes_on_disk(&r.layer);
        Ok(SnapshotInfo {
            name: r.name.clone(),
            node: r.node.clone(),
            kind: r.kind,
            bytes,
            users: r.users.iter().cloned().collect(),
        })
    }

    pub(super) fn take_snapshot(&mut self, node: &str, name: &str, memory: bool) -> Result<Reply, LabError> {
        self.snapshots.check_new(name)?;
        let model = self.topo.node(node)?.clone();
        let dir = self.snapshot_dir()?;
        let (layer, memory) = if memory {
            let (layer, state) = self.running_mut(node)?.snapshot_memory(&dir, name)?;
            (layer, Some(state))
        } else {
            (self.running_mut(node)?.snapshot(&dir, name)?, None)
        };
        let record = snapshot::SnapshotRecord {
            name: name.to_string(),
            node: node.to_string(),
            kind: model.kind,
            options: model.options.clone(),
            layer,
            users: Default::default(),
            memory,
            ifaces: iface_signature(&model),
        };
        self.snapshots.add(record)?;
        // A kvm node goes on, on an overlay over its own snapshot.
        if model.kind == NodeKind::Kvm {
            self.snapshots.add_user(name, node)?;
        }
        Ok(Reply::Snapshot(self.snapshot_info(name)?))
    }

    pub(super) fn clone_node(
        &mut self,
        source: CloneSource,
        name: &str,
        mem_mb: Option<crate::vocab::MemMb>,
        cpus: Option<crate::vocab::Cpus>,
    ) -> Result<Reply, LabError> {
        self.topo.check_new_node(name)?;
        let snap = match source {
            CloneSource::Snapshot(s) => s,
            CloneSource::Node(n) => {
                if !self.topo.node(&n)?.running {
                    return Err(LabError::CloneStopped(n));
                }
                // Snapshot the running node implicitly, under a free name.
                let base = format!("{n}-for-{name}");
                let auto = (1..)
                    .map(|i| if i == 1 { base.clone() } else { format!("{base}-{i}") })
                    .find(|s| self.snapshots.check_new(s).is_ok())
                    .ok_or_else(|| snapshot::SnapshotError::Exists(base.clone()))?;
                self.take_snapshot(&n, &auto, false)?;
                auto
            }
        };
        let r = self.snapshots.get(&snap)?.clone();
        let mut options = r.options.clone();
        options.mem_mb = mem_mb.or(options.mem_mb);
        options.cpus = cpus.or(options.cpus);
        let reply = self.add_node_on(name, r.kind, options, crate::host::DiskStart::From(r.layer.clone()))?;
        self.snapshots.add_user(&snap, name)?;
        Ok(reply)
    }

    pub(super) fn restore(&mut self, node: &str, snap: &str) -> Result<(), LabError> {
        let r = self.snapshots.get(snap)?.clone();
        let kind = self.topo.node(node)?.kind;
        if kind != r.kind {
            return Err(LabError::KindMismatch { node: node.into(), kind, snapshot: snap.into(), other: r.kind });
        }
        if r.memory.is_some() {
            // Resume in place: the same machine, with the NICs it had then.
            if r.node != node || iface_signature(self.topo.node(node)?) != r.ifaces {
                return Err(LabError::Saved {
                    path: r.layer.clone(),
                    why: format!("resuming snapshot {snap:?} needs node {:?} with the interfaces it had then", r.node),
                });
            }
            self.running_mut(node)?.restore_memory(snap)?;
            return Ok(());
        }
        if self.topo.node(node)?.running {
            self.stop_node(node)?;
        }
        self.start_node_on(node, crate::host::DiskStart::From(r.layer.clone()))?;
        self.snapshots.forget_user(node);
        self.snapshots.add_user(snap, node)?;
        Ok(())
    }

    /// Writes the topology and every node's disk state to `dir` (which
    /// must not exist, or be empty): running nodes through a snapshot,
    /// stopped ones from their disk at rest.
    pub(super) fn save_lab(&mut self, dir: &std::path::Path) -> Result<(), LabError> {
        let bad = |why: String| LabError::Saved { path: dir.to_path_buf(), why };
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(bad("already exists and is not empty".into()));
        }
        let disks_dir = dir.join("disks");
        std::fs::create_dir_all(&disks_dir).map_err(|e| bad(e.to_string()))?;
        let run_dir = self.run_dir_mut().path().to_path_buf();
        let scratch = self.snapshot_dir()?.join(".save");
        std::fs::create_dir_all(&scratch).map_err(|e| bad(e.to_string()))?;
        let mut disks = std::collections::BTreeMap::new();
        for name in self.topo.order.clone() {
            let kind = self.topo.node(&name)?.kind;
            if matches!(kind, NodeKind::Nat | NodeKind::Host | NodeKind::Plug | NodeKind::Vxlan) {
                // They keep nothing on disk: they are made again on load.
                continue;
            }
            let (layer, temporary) = if self.nodes.contains_key(&name) {
                (self.running_mut(&name)?.snapshot(&scratch, &format!(".save-{name}"))?, kind != NodeKind::Kvm)
            } else {
                match self.host.disk_at_rest(kind, &run_dir, &name) {
                    Some(p) => (p, false),
                    None => continue,
                }
            };
            let saved = self.host.export_disk(kind, &layer, &disks_dir, &name);
            // A kvm node goes on over its snapshot: that one stays.
            if temporary {
                let _ = if layer.is_dir() { std::fs::remove_dir_all(&layer) } else { std::fs::remove_file(&layer) };
            }
            disks.insert(name.clone(), format!("disks/{}", saved?));
        }
        let saved = rebuild::SavedLab { topology: self.topo.clone(), disks };
        let json = serde_json::to_vec_pretty(&saved).expect("serializes");
        crate::host::files::write_output(&dir.join(rebuild::SAVED_LAB_FILE), &json).map_err(|e| bad(e.to_string()))?;
        Ok(())
    }

    /// Rebuilds a saved lab into this one: its nodes on their saved disks,
    /// then every LAN, link, address, route and state.
    pub(super) fn load_lab(&mut self, dir: &std::path::Path) -> Result<(), LabError> {
        let bad = |why: String| LabError::Saved { path: dir.to_path_buf(), why };
        let text =
            std::fs::read(dir.join(rebuild::SAVED_LAB_FILE)).map_err(|e| bad(format!("not a saved lab ({e})")))?;
        let saved = rebuild::SavedLab::from_json(&text).map_err(bad)?;
        let run_dir = self.run_dir_mut().path().to_path_buf();
        for name in &saved.topology.order {
            let model = &saved.topology.nodes[name];
            if model.kind == NodeKind::Plug {
                // Made with the wiring, once its LAN is there.
                continue;
            }
            let disk = match saved.disks.get(name) {
                Some(rel) => {
                    let layer = self.host.import_disk(model.kind, &dir.join(rel), &run_dir, name)?;
                    crate::host::DiskStart::From(layer)
                }
                None => crate::host::DiskStart::Fresh,
            };
            self.add_node_on(name, model.kind, model.options.clone(), disk)?;
        }
        for cmd in rebuild::wiring(&saved.topology) {
            self.execute(cmd)?;
        }
        Ok(())
    }

    pub(super) fn delete_snapshot(&mut self, name: &str) -> Result<(), LabError> {
        let r = self.snapshots.remove(name)?;
        let _ = if r.layer.is_dir() { std::fs::remove_dir_all(&r.layer) } else { std::fs::remove_file(&r.layer) };
        if r.memory.is_some() {
            // The state lives inside the node's overlay (a qcow2 internal
            // snapshot): drop it there, if the node still runs on it.
            if let Ok(n) = self.running_mut(&r.node) {
                let _ = n.forget_memory(name);
            }
        }
        Ok(())
    }
}
