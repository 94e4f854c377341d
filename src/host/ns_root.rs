//! The copy-on-write roots of `ns` nodes: overlay layers on the lab's own
//! tmpfs (over the host's `/`, a `rootfs`, or a snapshot's layer), or btrfs
//! subvolumes when `CLONET_STORAGE_DIR` is on btrfs, and their release.
//!
//! Every privileged call goes through the host's [`Syscall`], so the logic
//! here runs unchanged on the recording fake in the tests below.
//!
//! Owns: the layout of ns roots and layer storage. Must not touch: node
//! processes, interfaces, the topology.
use super::syscall::{Syscall, BTRFS_SUPER_MAGIC};
#[cfg(test)]
use super::BootMedia;
use super::{HostError, NodeSpec};

/// Where an ns node's root layers live: `<storage>/<node>/`.
fn root_dir(storage: &std::path::Path, spec: &NodeSpec) -> std::path::PathBuf {
    storage.join(&spec.name)
}

/// The link in a run directory to the lab's btrfs layer storage, so that
/// teardown and `clonet clean` find its subvolumes.
const BTRFS_LINK: &str = "ns-btrfs";

/// A file clonet puts in every btrfs layer storage it makes: teardown and
/// `clean` delete what the link points to only if it holds this mark, is
/// a real directory and belongs to whoever runs clonet, so a link that
/// points elsewhere (planted, or stale) deletes nothing.
const STORAGE_MARK: &str = ".clonet-storage";

/// The btrfs layer storage `run_dir` links to, if it is one clonet made
/// (see [`STORAGE_MARK`]) and belongs to `uid`.
fn linked_storage(run_dir: &std::path::Path, uid: u32) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let storage = std::fs::read_link(run_dir.join(BTRFS_LINK)).ok()?;
    let dir = std::fs::symlink_metadata(&storage).ok()?;
    let mark = std::fs::symlink_metadata(storage.join(STORAGE_MARK)).ok()?;
    let ours = dir.is_dir() && dir.uid() == uid && mark.is_file() && mark.uid() == uid;
    ours.then_some(storage)
}

/// The directory the user chose for btrfs layer storage
/// (`CLONET_STORAGE_DIR`), if any.
pub(super) fn storage_dir_setting() -> Option<std::path::PathBuf> {
    std::env::var_os("CLONET_STORAGE_DIR").map(std::path::PathBuf::from)
}

/// The lab's btrfs storage for ns nodes made from a `rootfs`, when
/// `storage_dir` (`CLONET_STORAGE_DIR`) is on btrfs:
/// `<storage dir>/clonet-<lab>`. There, as in the original Cloonix, a
/// node's root is a writable snapshot of a subvolume holding the rootfs,
/// and a snapshot is a read-only one.
fn btrfs_storage(
    sys: &dyn Syscall,
    spec: &NodeSpec,
    storage_dir: Option<&std::path::Path>,
) -> Option<std::path::PathBuf> {
    spec.options.rootfs.as_ref()?;
    let dir = storage_dir?;
    let fstype = sys.filesystem_type(dir).ok()?;
    (fstype == BTRFS_SUPER_MAGIC).then(|| dir.join(format!("clonet-{}", spec.lab)))
}

/// Runs `btrfs ARGS…`; a failure is `what`, with a hint when the program
/// is missing.
pub(super) fn btrfs(sys: &dyn Syscall, args: &[&std::ffi::OsStr], what: &str) -> Result<(), HostError> {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.to_os_string()).collect();
    sys.run("btrfs", &args).map_err(|source| {
        let hint = if source.kind() == std::io::ErrorKind::NotFound { " (install btrfs-progs)" } else { "" };
        HostError::Io { what: format!("{what}{hint}"), source }
    })
}

/// `cp -a --reflink=auto FROM TO`: a copy that keeps owners (not in a
/// user namespace), modes, xattrs and (on a file system that shares
/// extents) no data twice.
pub(super) fn copy_tree(
    sys: &dyn Syscall,
    from: &std::ffi::OsStr,
    to: &std::path::Path,
    what: &str,
) -> Result<(), HostError> {
    let mut args: Vec<std::ffi::OsString> = vec!["-a".into(), "--reflink=auto".into()];
    if super::userns::in_user_namespace() {
        // Owners the lab's namespace does not map (the host's root) cannot
        // be kept; the copies become the lab's root's.
        args.push("--no-preserve=ownership".into());
    }
    args.extend([from.to_os_string(), to.as_os_str().to_os_string()]);
    sys.run("cp", &args).map_err(HostError::io(what))
}

/// Deletes the btrfs layer storage a run directory links to (teardown,
/// `clonet clean`): every subvolume, read-only snapshots included.
pub(super) fn release_storage(sys: &dyn Syscall, run_dir: &std::path::Path) {
    release_storage_of(sys, run_dir, nix::unistd::geteuid().as_raw())
}

/// [`release_storage`] for storage that belongs to `uid`. Only real
/// directories are taken for subvolumes: a link inside the storage is
/// removed, never followed.
fn release_storage_of(sys: &dyn Syscall, run_dir: &std::path::Path, uid: u32) {
    let Some(storage) = linked_storage(run_dir, uid) else {
        let _ = std::fs::remove_file(run_dir.join(BTRFS_LINK));
        return;
    };
    let real_dirs = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .collect::<Vec<_>>()
    };
    let mut subvolumes = Vec::new();
    for e in real_dirs(&storage) {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name == ".snapshots" {
            subvolumes.extend(real_dirs(&p).into_iter().map(|s| s.path()));
        } else if name.starts_with(".base-") {
            subvolumes.push(p);
        } else {
            subvolumes.push(p.join("upper"));
        }
    }
    // Clones first: a subvolume goes before the one it was snapshotted from
    // only by chance, and btrfs does not mind the order.
    for s in subvolumes.iter().filter(|s| std::fs::symlink_metadata(s).is_ok_and(|m| m.is_dir())) {
        let delete = || btrfs(sys, &["subvolume".as_ref(), "delete".as_ref(), s.as_os_str()], "deleting a subvolume");
        if delete().is_err() {
            // Without root, btrfs deletes no read-only subvolume (bases,
            // snapshots): its owner makes it writable first.
            let writable = ["property".as_ref(), "set".as_ref(), s.as_os_str(), "ro".as_ref(), "false".as_ref()];
            if btrfs(sys, &writable, "making a subvolume writable").is_ok() {
                let _ = delete();
            }
        }
    }
    let _ = std::fs::remove_dir_all(&storage);
    let _ = std::fs::remove_file(run_dir.join(BTRFS_LINK));
}

/// The read-only base subvolume of `rootfs` in `storage`, made on first use.
fn btrfs_base(
    sys: &dyn Syscall,
    storage: &std::path::Path,
    rootfs: &std::path::Path,
) -> Result<std::path::PathBuf, HostError> {
    let text = rootfs.display().to_string();
    let base = storage.join(format!(".base-{:016x}", crate::vocab::fnv1a(&[text.as_bytes()])));
    if base.is_dir() {
        return Ok(base);
    }
    btrfs(sys, &["subvolume".as_ref(), "create".as_ref(), base.as_os_str()], "making the base subvolume")?;
    let mut src = rootfs.as_os_str().to_os_string();
    src.push("/.");
    // A half-filled base would be taken for a whole one next time: drop it.
    if let Err(e) = copy_tree(sys, &src, &base, &format!("copying {text}")) {
        let _ = btrfs(sys, &["subvolume".as_ref(), "delete".as_ref(), base.as_os_str()], "cleaning up");
        return Err(e);
    }
    btrfs(
        sys,
        &["property".as_ref(), "set".as_ref(), base.as_os_str(), "ro".as_ref(), "true".as_ref()],
        "freezing the base subvolume",
    )?;
    Ok(base)
}

/// The lab's storage for ns layers, `<run dir>/ns`: a tmpfs of the lab's
/// own. Overlayfs refuses layers nested inside one another, and the
/// host's `/` (the usual lower layer) holds the run directory; on a file
/// system of their own the upper and snapshot layers are not inside it.
pub(crate) fn layer_storage(sys: &dyn Syscall, run_dir: &std::path::Path) -> Result<std::path::PathBuf, HostError> {
    let dir = run_dir.join("ns");
    std::fs::create_dir_all(&dir).map_err(HostError::io("creating the layer storage"))?;
    let dev = |p: &std::path::Path| sys.device_of(p).ok();
    if dev(&dir) == dev(run_dir) {
        let flags = nix::mount::MsFlags::MS_NOSUID;
        let source = std::path::Path::new("clonet-layers");
        sys.mount(&super::syscall::Mount::new(Some(source), &dir, Some("tmpfs"), flags, Some("mode=0700")))
            .map_err(HostError::io("mounting the layer storage"))?;
    }
    Ok(dir)
}

/// `entry` of the layer storage that holds a node's `upper` directory
/// (`STORAGE/NODE/upper`).
fn beside_layers(upper: &std::path::Path, entry: &str) -> std::path::PathBuf {
    upper.parent().and_then(|n| n.parent()).map(|s| s.join(entry)).unwrap_or_default()
}

/// Where the lab's copy of the host's files goes (see
/// `host_layer`): beside the nodes' layers.
pub(super) fn host_layer_of(upper: &std::path::Path) -> std::path::PathBuf {
    beside_layers(upper, ".host")
}

/// Where snapshots of ns nodes go: beside the layers they stack on.
pub(super) fn snapshot_storage(upper: &std::path::Path) -> std::path::PathBuf {
    beside_layers(upper, ".snapshots")
}

/// Prepares the node's copy-on-write root: its upper and work directories
/// (kept across a restart, new otherwise) and the lower layers, recorded
/// in `lower` beside them: the base (`rootfs` or the host's `/`), under
/// the layers of the snapshot the node was cloned or restored from.
///
/// `storage_dir` is `CLONET_STORAGE_DIR`: on btrfs, it holds the roots of
/// nodes made from a `rootfs` (see `btrfs_storage`).
pub(super) fn prepare_root(
    sys: &dyn Syscall,
    spec: &NodeSpec,
    storage_dir: Option<&std::path::Path>,
) -> Result<super::helpers::RootLayers, HostError> {
    if let Some(storage) = btrfs_storage(sys, spec, storage_dir) {
        return prepare_btrfs_root(sys, spec, &storage);
    }
    let dir = root_dir(&layer_storage(sys, &spec.run_dir)?, spec);
    let lower_file = dir.join("lower");
    let base = match (&spec.boot, &spec.options.rootfs) {
        // A container image: its layers, the topmost first as overlayfs
        // lists them.
        (super::BootMedia::Oci(image), _) => {
            let mut dirs = Vec::new();
            for l in image.layers.iter().rev() {
                let text = l.display().to_string();
                if text.contains([':', ',', '\n']) {
                    return Err(HostError::start(
                        spec.name.clone(),
                        format!("layer {text} has a ':' or ',' in its path"),
                    ));
                }
                dirs.push(text);
            }
            if dirs.is_empty() {
                return Err(HostError::start(spec.name.clone(), format!("image {} has no layer", image.reference)));
            }
            dirs.join(":")
        }
        (_, Some(r)) => {
            let r = std::fs::canonicalize(r).map_err(HostError::io(format!("rootfs {}", r.display())))?;
            let text = r.display().to_string();
            if !r.is_dir() || text.contains([':', ',', '\n']) {
                return Err(HostError::start(spec.name.clone(), format!("rootfs {text} is not a usable directory")));
            }
            text
        }
        (_, None) => "/".to_string(),
    };
    let lower = match &spec.disk {
        super::DiskStart::Keep if lower_file.is_file() => {
            std::fs::read_to_string(&lower_file).map_err(HostError::io("reading the root's layers"))?
        }
        super::DiskStart::From(layer) => {
            let parents = std::fs::read_to_string(layer.join("lower")).map_err(HostError::io("reading a snapshot"))?;
            format!("{}:{parents}", layer.join("upper").display())
        }
        _ => base,
    };
    if spec.disk != super::DiskStart::Keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let layers = super::helpers::RootLayers {
        lower: lower.trim().to_string(),
        upper: dir.join("upper"),
        work: dir.join("work"),
        merged: dir.join("merged"),
    };
    for d in [&layers.upper, &layers.work, &layers.merged] {
        std::fs::create_dir_all(d).map_err(HostError::io(format!("creating {}", d.display())))?;
    }
    std::fs::write(&lower_file, &layers.lower).map_err(HostError::io("recording the root's layers"))?;
    Ok(layers)
}

/// The super options (the file system's own, after `-` and its type and
/// source) of the mount `path` is on, by the `/proc/self/mountinfo` text.
fn super_options_of(mountinfo: &str, path: &std::path::Path) -> Option<String> {
    let path = path.to_string_lossy();
    let under = |point: &str| point == "/" || *path == *point || path.starts_with(&format!("{point}/"));
    mountinfo
        .lines()
        .filter_map(|line| {
            let point = super::split_root::mount_points(line).pop()?;
            let (_, after) = line.split_once(" - ")?;
            Some((point, after.split(' ').nth(2)?.to_string()))
        })
        .filter(|(point, _)| under(point))
        // The last mount at the longest point is the one on top.
        .fold(None, |best: Option<(String, String)>, (point, options)| match best {
            Some((p, o)) if p.len() > point.len() => Some((p, o)),
            _ => Some((point, options)),
        })
        .map(|(_, options)| options)
}

/// A node's root as a btrfs subvolume: a writable snapshot of the base
/// (new), of a snapshot (clone, restore), or the one it had (restart).
fn prepare_btrfs_root(
    sys: &dyn Syscall,
    spec: &NodeSpec,
    storage: &std::path::Path,
) -> Result<super::helpers::RootLayers, HostError> {
    if super::userns::in_user_namespace() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = std::fs::canonicalize(storage.parent().unwrap_or(storage)).unwrap_or_default();
        if !super_options_of(&mountinfo, &dir).is_some_and(|o| o.split(',').any(|o| o == "user_subvol_rm_allowed")) {
            return Err(HostError::start(spec.name.clone(), format!(
                "CLONET_STORAGE_DIR ({}) is on a btrfs mounted without user_subvol_rm_allowed: without root, clonet could make subvolumes there but never delete them. Mount it with -o user_subvol_rm_allowed, unset CLONET_STORAGE_DIR (overlay layers need no root), or run clonet as root",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(storage).map_err(HostError::io("creating the btrfs layer storage"))?;
    let mark = storage.join(STORAGE_MARK);
    if std::fs::symlink_metadata(&mark).is_err() {
        std::fs::write(&mark, format!("{}\n", spec.run_dir.display()))
            .map_err(HostError::io("marking the btrfs layer storage"))?;
    }
    let link = spec.run_dir.join(BTRFS_LINK);
    if std::fs::read_link(&link).is_err() {
        std::os::unix::fs::symlink(storage, &link).map_err(HostError::io("recording the btrfs layer storage"))?;
    }
    let rootfs = spec.options.rootfs.as_ref().expect("btrfs storage is for rootfs nodes");
    let rootfs = std::fs::canonicalize(rootfs).map_err(HostError::io(format!("rootfs {}", rootfs.display())))?;
    let dir = root_dir(storage, spec);
    let layers = super::helpers::RootLayers {
        lower: super::helpers::WHOLE_ROOT.to_string(),
        upper: dir.join("upper"),
        work: dir.join("work"),
        merged: dir.join("merged"),
    };
    let source = match &spec.disk {
        super::DiskStart::Keep if layers.upper.is_dir() => None,
        super::DiskStart::From(layer) => Some(layer.clone()),
        _ => Some(btrfs_base(sys, storage, &rootfs)?),
    };
    if let Some(source) = source {
        if layers.upper.is_dir() {
            let old = layers.upper.as_os_str();
            btrfs(sys, &["subvolume".as_ref(), "delete".as_ref(), old], "dropping an old root")?;
        }
        std::fs::create_dir_all(&dir).map_err(HostError::io("creating a node's root"))?;
        btrfs(
            sys,
            &["subvolume".as_ref(), "snapshot".as_ref(), source.as_os_str(), layers.upper.as_os_str()],
            "snapshotting the node's root",
        )?;
    }
    for d in [&layers.work, &layers.merged] {
        std::fs::create_dir_all(d).map_err(HostError::io(format!("creating {}", d.display())))?;
    }
    std::fs::write(dir.join("lower"), &layers.lower).map_err(HostError::io("recording the root's layers"))?;
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use nix::errno::Errno;
    use nix::mount::MsFlags;

    use super::*;
    use crate::host::syscall::{Call, RecordingSyscall};
    use crate::host::DiskStart;

    #[test]
    fn the_options_of_the_topmost_mount_a_path_is_on() {
        let info = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro\n\
                    40 22 7:0 / /srv/b rw - btrfs /dev/loop0 rw,space_cache=v2\n\
                    41 40 7:0 / /srv/b rw - btrfs /dev/loop0 rw,user_subvol_rm_allowed\n\
                    42 22 0:9 / /srv/bb rw - tmpfs t rw\n";
        let of = |p: &str| super_options_of(info, Path::new(p));
        assert_eq!(of("/srv/b/store").as_deref(), Some("rw,user_subvol_rm_allowed"));
        assert_eq!(of("/srv/b").as_deref(), Some("rw,user_subvol_rm_allowed"));
        assert_eq!(of("/srv/bbx").as_deref(), Some("rw,errors=remount-ro"), "a prefix of a name is no parent");
        assert_eq!(of("/srv/bb/x").as_deref(), Some("rw"));
    }
    use crate::vocab::{NodeKind, NodeOptions};

    fn spec(run_dir: &Path, rootfs: Option<&Path>, disk: DiskStart) -> NodeSpec {
        NodeSpec {
            lab: "lab".into(),
            name: "n1".into(),
            kind: NodeKind::Ns,
            hosts_file: run_dir.join("hosts"),
            run_dir: run_dir.to_path_buf(),
            options: NodeOptions { rootfs: rootfs.map(Path::to_path_buf), ..NodeOptions::default() },
            disk,
            boot: BootMedia::Namespace,
            notify: None,
        }
    }

    fn runs(sys: &RecordingSyscall) -> Vec<Call> {
        sys.calls_where(|c| matches!(c, Call::Run { .. }))
    }

    #[test]
    fn the_layer_storage_gets_its_own_tmpfs_unless_it_already_is_a_file_system() {
        let run = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let dir = layer_storage(&sys, run.path()).unwrap();
        let tmpfs = Call::mount(Some("clonet-layers"), &dir, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=0700"));
        assert_eq!(
            sys.calls(),
            vec![Call::DeviceOf { path: dir.clone() }, Call::DeviceOf { path: run.path().into() }, tmpfs]
        );
        let mounted = RecordingSyscall::default();
        mounted.set_device(&dir, 42);
        layer_storage(&mounted, run.path()).unwrap();
        assert!(!mounted.calls().iter().any(|c| matches!(c, Call::Mount(_))), "{:?}", mounted.calls());
    }

    #[test]
    fn an_overlay_root_stacks_on_the_host_or_on_the_snapshot_it_starts_from() {
        let run = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let fresh = prepare_root(&sys, &spec(run.path(), None, DiskStart::Fresh), None).unwrap();
        let node = run.path().join("ns/n1");
        assert_eq!((fresh.lower.as_str(), &fresh.upper), ("/", &node.join("upper")));
        assert!(fresh.work.is_dir() && fresh.merged.is_dir());
        assert_eq!(std::fs::read_to_string(node.join("lower")).unwrap(), "/");
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::FilesystemType { .. } | Call::Run { .. })));

        let snap = run.path().join("ns/.snapshots/s1");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("lower"), "/x/upper:/").unwrap();
        std::fs::write(node.join("upper/kept"), "").unwrap();
        let cloned = prepare_root(&sys, &spec(run.path(), None, DiskStart::From(snap.clone())), None).unwrap();
        assert_eq!(cloned.lower, format!("{}:/x/upper:/", snap.join("upper").display()));
        assert!(!node.join("upper/kept").exists(), "a clone starts from an empty upper layer");
        std::fs::write(node.join("upper/kept"), "").unwrap();
        let restarted = prepare_root(&sys, &spec(run.path(), None, DiskStart::Keep), None).unwrap();
        assert_eq!(restarted.lower, cloned.lower, "a restart keeps its layers");
        assert!(node.join("upper/kept").exists(), "and its writes");
    }

    #[test]
    fn a_rootfs_node_on_btrfs_storage_is_a_snapshot_of_a_frozen_base() {
        let (run, storage, rootfs) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sys = RecordingSyscall::default();
        sys.set_filesystem(BTRFS_SUPER_MAGIC);
        let spec = spec(run.path(), Some(rootfs.path()), DiskStart::Fresh);
        let layers = prepare_root(&sys, &spec, Some(storage.path())).unwrap();
        let lab = storage.path().join("clonet-lab");
        let rootfs = std::fs::canonicalize(rootfs.path()).unwrap();
        let base = lab.join(format!(".base-{:016x}", crate::vocab::fnv1a(&[rootfs.display().to_string().as_bytes()])));
        let upper = lab.join("n1/upper");
        assert_eq!((layers.lower.as_str(), &layers.upper), (super::super::helpers::WHOLE_ROOT, &upper));
        assert_eq!(
            runs(&sys),
            vec![
                Call::run("btrfs", &[&"subvolume", &"create", &base]),
                Call::run("cp", &[&"-a", &"--reflink=auto", &format!("{}/.", rootfs.display()), &base]),
                Call::run("btrfs", &[&"property", &"set", &base, &"ro", &"true"]),
                Call::run("btrfs", &[&"subvolume", &"snapshot", &base, &upper]),
            ]
        );
        assert_eq!(std::fs::read_link(run.path().join(BTRFS_LINK)).unwrap(), lab, "clean finds it");
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::Mount(_))), "no layer tmpfs on btrfs");
    }

    #[test]
    fn a_base_subvolume_whose_copy_failed_is_deleted_and_no_root_is_made() {
        let (run, storage, rootfs) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sys = RecordingSyscall::default();
        sys.set_filesystem(BTRFS_SUPER_MAGIC);
        sys.fail_when(|c| matches!(c, Call::Run { program, .. } if program == "cp"), Errno::ENOSPC);
        let spec = spec(run.path(), Some(rootfs.path()), DiskStart::Fresh);
        let err = prepare_root(&sys, &spec, Some(storage.path())).unwrap_err();
        assert!(err.to_string().starts_with("copying "), "{err}");
        let calls = runs(&sys);
        let Call::Run { args: created, .. } = &calls[0] else { unreachable!() };
        assert_eq!(calls.len(), 3, "create, cp, then only the undo: {calls:?}");
        assert_eq!(calls[2], Call::run("btrfs", &[&"subvolume", &"delete", &created[2]]));
    }

    #[test]
    fn missing_btrfs_progs_are_named_in_the_error() {
        let sys = RecordingSyscall::default();
        sys.fail_nth(0, Errno::ENOENT);
        let err = btrfs(&sys, &["subvolume".as_ref()], "making the base subvolume").unwrap_err();
        assert!(err.to_string().starts_with("making the base subvolume (install btrfs-progs):"), "{err}");
    }

    #[test]
    fn released_storage_loses_every_subvolume_then_its_directory_and_link() {
        let (run, storage) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in ["n1/upper", "n2/upper", ".snapshots/s1", ".base-0123"] {
            std::fs::create_dir_all(storage.path().join(d)).unwrap();
        }
        std::fs::write(storage.path().join(STORAGE_MARK), "").unwrap();
        // A link inside the storage is removed, not followed.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir(elsewhere.path().join("upper")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), storage.path().join("n3")).unwrap();
        std::os::unix::fs::symlink(storage.path(), run.path().join(BTRFS_LINK)).unwrap();
        let sys = RecordingSyscall::default();
        release_storage(&sys, run.path());
        let mut deleted: Vec<PathBuf> = runs(&sys)
            .into_iter()
            .map(|c| match c {
                Call::Run { program, args } if program == "btrfs" && args[..2] == ["subvolume", "delete"] => {
                    PathBuf::from(&args[2])
                }
                c => panic!("{c:?}"),
            })
            .collect();
        deleted.sort();
        let s = storage.path();
        let mut expected = vec![s.join(".base-0123"), s.join(".snapshots/s1"), s.join("n1/upper"), s.join("n2/upper")];
        expected.sort();
        assert_eq!(deleted, expected);
        assert!(!storage.path().exists() && std::fs::symlink_metadata(run.path().join(BTRFS_LINK)).is_err());
        let untouched = RecordingSyscall::default();
        release_storage(&untouched, run.path());
        assert!(untouched.calls().is_empty(), "a run directory without btrfs storage");
        assert!(elsewhere.path().join("upper").is_dir(), "what a link in the storage pointed to is kept");
    }

    #[test]
    fn storage_that_clonet_did_not_make_or_does_not_own_is_never_deleted() {
        let me = nix::unistd::geteuid().as_raw();
        let unmarked = tempfile::tempdir().unwrap();
        let marked = tempfile::tempdir().unwrap();
        for storage in [unmarked.path(), marked.path()] {
            std::fs::create_dir_all(storage.join("n1/upper")).unwrap();
        }
        std::fs::write(marked.path().join(STORAGE_MARK), "").unwrap();
        // Unmarked (a link planted or gone stale), or marked but owned by
        // someone else than the uid clonet runs as: nothing is deleted.
        for (storage, uid) in [(unmarked.path(), me), (marked.path(), me.wrapping_add(1))] {
            let run = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(storage, run.path().join(BTRFS_LINK)).unwrap();
            let sys = RecordingSyscall::default();
            release_storage_of(&sys, run.path(), uid);
            assert!(sys.calls().is_empty(), "no subvolume deleted in {storage:?}");
            assert!(storage.join("n1/upper").is_dir(), "{storage:?} is kept");
            assert!(std::fs::symlink_metadata(run.path().join(BTRFS_LINK)).is_err(), "the link itself goes");
        }
    }
}
