//! Disk layers on the host: where a stopped node's disk rests, and how a
//! layer (a snapshot, or a disk at rest) is exported to a saved lab and
//! imported back. Layer formats, by kind:
//! - uml: a COW file over the base image (its header names the base);
//! - kvm: a qcow2 file with a backing chain (exported flattened);
//! - ns: a directory holding `upper/` and `lower` (the overlay layers it
//!   sits on, `:`-separated, the base last).
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_command as run, HostError};
/// Kept here too: the engine measures disk layers through the host.
pub use crate::image::bytes_on_disk;
use crate::vocab::NodeKind;

/// Where a node's disk rests while it is stopped, in the lab's run dir.
pub fn at_rest(kind: NodeKind, run_dir: &Path, node: &str) -> PathBuf {
    match kind {
        NodeKind::Uml => super::guest::machine_dir(run_dir, node).join(super::uml::COW_FILE),
        NodeKind::Kvm => super::guest::machine_dir(run_dir, node).join(super::kvm::OVERLAY_FILE),
        NodeKind::Nat | NodeKind::Host | NodeKind::Plug | NodeKind::Vxlan => super::guest::machine_dir(run_dir, node),
        NodeKind::Ns => match std::fs::read_link(run_dir.join("ns-btrfs")) {
            Ok(storage) if storage.join(node).is_dir() => storage.join(node),
            _ => run_dir.join("ns").join(node),
        },
    }
}

/// Copies `layer` into `dest` (a saved lab's directory) and returns the
/// saved name, relative to `dest`.
pub fn export(kind: NodeKind, layer: &Path, dest: &Path, node: &str) -> Result<String, HostError> {
    let what = format!("saving the disk of {node}");
    match kind {
        NodeKind::Nat | NodeKind::Host | NodeKind::Plug | NodeKind::Vxlan => {
            Err(HostError::Unsupported("a nat endpoint, host interface or plug has no disk"))
        }
        NodeKind::Uml => {
            let name = format!("{node}.cow");
            super::guest::sparse_copy(layer, &dest.join(&name))?;
            Ok(name)
        }
        NodeKind::Kvm => {
            let name = format!("{node}.qcow2");
            run(
                Command::new("qemu-img").args(["convert", "-U", "-O", "qcow2"]).arg(layer).arg(dest.join(&name)),
                &what,
            )?;
            Ok(name)
        }
        NodeKind::Ns => {
            // Every layer but the base: the node's own, then those under it.
            let lower = std::fs::read_to_string(layer.join("lower")).unwrap_or_default();
            if lower.is_empty() || lower.trim() == super::helpers::WHOLE_ROOT {
                return Err(HostError::Unsupported("save_lab cannot save ns nodes on btrfs roots yet"));
            }
            let mut chain: Vec<String> = lower.trim().split(':').map(str::to_string).collect();
            let base = chain.pop().unwrap_or_else(|| "/".into());
            let dir = dest.join(node);
            std::fs::create_dir_all(&dir).map_err(HostError::io(what.clone()))?;
            let mut layers = vec![layer.join("upper")];
            layers.extend(chain.iter().map(PathBuf::from));
            for (i, l) in layers.iter().enumerate() {
                run(Command::new("cp").arg("-a").arg(l).arg(dir.join(format!("layer{i}"))), &what)?;
            }
            std::fs::write(dir.join("base"), &base).map_err(HostError::io(what.clone()))?;
            std::fs::write(dir.join("layers"), layers.len().to_string()).map_err(HostError::io(what))?;
            Ok(node.to_string())
        }
    }
}

/// Makes a saved disk usable as a node's starting layer
/// (`DiskStart::From`) in a lab whose run directory is `run_dir`.
pub fn import(
    sys: &dyn super::syscall::Syscall,
    kind: NodeKind,
    saved: &Path,
    run_dir: &Path,
    node: &str,
) -> Result<PathBuf, HostError> {
    match kind {
        // Nodes start on a copy (uml) or on an overlay (kvm) of it.
        NodeKind::Uml | NodeKind::Kvm => Ok(saved.to_path_buf()),
        NodeKind::Nat | NodeKind::Host | NodeKind::Plug | NodeKind::Vxlan => {
            Err(HostError::Unsupported("a nat endpoint, host interface or plug has no disk"))
        }
        NodeKind::Ns => {
            // Overlayfs wants its layers in the lab's layer storage.
            let what = format!("loading the disk of {node}");
            let storage =
                super::ns_root::layer_storage(sys, run_dir)?.join(".snapshots").join(format!("loaded-{node}"));
            let _ = std::fs::remove_dir_all(&storage);
            std::fs::create_dir_all(&storage).map_err(HostError::io(what.clone()))?;
            let count: usize =
                std::fs::read_to_string(saved.join("layers")).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(
                    || HostError::Io { what: what.clone(), source: std::io::Error::other("no layer count") },
                )?;
            let base = std::fs::read_to_string(saved.join("base")).map_err(HostError::io(what.clone()))?;
            let mut lower = Vec::new();
            for i in 0..count {
                let target = if i == 0 { storage.join("upper") } else { storage.join(format!("layer{i}")) };
                run(Command::new("cp").arg("-a").arg(saved.join(format!("layer{i}"))).arg(&target), &what)?;
                if i > 0 {
                    lower.push(target.display().to_string());
                }
            }
            lower.push(base.trim().to_string());
            std::fs::write(storage.join("lower"), lower.join(":")).map_err(HostError::io(what))?;
            Ok(storage)
        }
    }
}
