//! The host's files a lab without root may change: a layer of its own.
//!
//! In a user namespace the host's root is no one: its files show as
//! `nobody`'s, and even root in a node may neither change them nor create
//! files in its directories (the kernel grants capabilities only over
//! files whose owner the namespace maps). So a lab without root lays a
//! copy that is its own over the host's, in every node's split root
//! (`split_root`): the configuration in `/etc` is then the node's to edit,
//! and daemons may create files anywhere in `/var` and `/usr/local`, as
//! under root. Files the user may not read (`/etc/shadow`) are not copied
//! and stay as they are; a directory the user may not read (`/etc/frr`)
//! becomes an empty one that hides the host's (overlay's opaque mark):
//! no node could read what it holds, and now the node may fill it.
//!
//! The copy is kept per user (`$CLONET_DATA_DIR/host-layer/FINGERPRINT`)
//! and made again only when what it copies changes on the host: a lab
//! pays a walk of `stat`s (a few milliseconds, on a thread of its own
//! while its first nodes start), not the copy. A version is never changed
//! once made (nodes stack it); each lab holds a shared lock on the version
//! it uses, and versions no lab holds are removed when a new one is made.
//!
//! Owns: what is copied, the cache's versions and their locks. Must not
//! touch: how nodes stack it (`split_root`).
use std::fs::{File, Metadata};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What of the host's `/` the layer holds, and whether files and links
/// too or only directories.
pub const COPIES: [(&str, bool); 3] = [("etc", true), ("var", false), ("usr/local", false)];

/// Bounds on the layer: entries, one file's size, all files' sizes, depth.
const MAX_ENTRIES: usize = 50_000;
const MAX_FILE: u64 = 4 << 20;
const MAX_BYTES: u64 = 64 << 20;
const MAX_DEPTH: usize = 24;

/// The overlay attribute (with `userxattr`) that makes a directory hide
/// what the layers below it hold there.
const OPAQUE: &str = "user.overlay.opaque";

/// The file in each version that labs lock (shared) while they use it.
const IN_USE: &str = ".in-use";

/// Walks what the layer holds of the tree at `root` (the host's `/`),
/// parents before children, within the bounds: `visit(source, path in the
/// layer, metadata)`. Nothing on another file system, nothing the user
/// may not read. Returns how many entries the bounds left out.
fn walk(root: &Path, visit: &mut dyn FnMut(&Path, &Path, &Metadata)) -> usize {
    struct Budget {
        entries: usize,
        bytes: u64,
        left_out: usize,
    }
    use nix::unistd::{access, AccessFlags};
    fn descend(
        from: &Path,
        rel: &Path,
        files: bool,
        device: u64,
        depth: usize,
        budget: &mut Budget,
        visit: &mut dyn FnMut(&Path, &Path, &Metadata),
    ) {
        let Ok(dir) = std::fs::read_dir(from) else { return };
        let mut entries: Vec<_> = dir.flatten().collect();
        // The same order every time: the fingerprint depends on it.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Ok(meta) = entry.metadata() else { continue };
            let kind = meta.file_type();
            let wanted = kind.is_dir() || (files && (kind.is_symlink() || kind.is_file()));
            if !wanted || (kind.is_dir() && meta.dev() != device) {
                continue;
            }
            let too_big = kind.is_file() && (meta.len() > MAX_FILE || meta.len() > budget.bytes);
            // A file we may not read stays the host's (a directory we may
            // not read is visited, not entered: see `copy`).
            if kind.is_file() && access(&entry.path(), AccessFlags::R_OK).is_err() {
                continue;
            }
            if budget.entries == 0 || depth >= MAX_DEPTH || too_big {
                budget.left_out += 1;
                continue;
            }
            budget.entries -= 1;
            if kind.is_file() {
                budget.bytes -= meta.len();
            }
            let (src, rel) = (entry.path(), rel.join(entry.file_name()));
            visit(&src, &rel, &meta);
            if kind.is_dir() && access(&src, AccessFlags::R_OK | AccessFlags::X_OK).is_ok() {
                descend(&src, &rel, files, device, depth + 1, budget, visit);
            }
        }
    }
    let mut budget = Budget { entries: MAX_ENTRIES, bytes: MAX_BYTES, left_out: 0 };
    'copies: for (path, files) in COPIES {
        // The directories down to it (usr of usr/local) come first.
        let (mut from, mut rel) = (root.to_path_buf(), PathBuf::new());
        for part in Path::new(path).components() {
            from.push(part);
            rel.push(part);
            match std::fs::symlink_metadata(&from) {
                Ok(meta) if meta.is_dir() => visit(&from, &rel, &meta),
                _ => continue 'copies,
            }
        }
        let Ok(device) = std::fs::metadata(&from).map(|m| m.dev()) else { continue };
        descend(&from, &rel, files, device, 0, &mut budget, visit);
    }
    budget.left_out
}

/// What the layer of the tree at `root` would hold, as one number: it
/// changes when any entry the layer copies does (name, mode; a file's
/// size, time and inode; a link's target).
pub fn fingerprint(root: &Path) -> u64 {
    // SipHash with fixed keys: the same for the same entries, run to run.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    walk(root, &mut |src, rel, meta| {
        (rel, meta.mode()).hash(&mut hasher);
        // A directory's copy is its name and mode alone (its time changes
        // with every file made in it: /var/tmp).
        if !meta.is_dir() {
            (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut hasher);
        }
        if meta.file_type().is_symlink() {
            std::fs::read_link(src).unwrap_or_default().hash(&mut hasher);
        }
    });
    hasher.finish()
}

/// Copies the layer of the tree at `root` into `to` (a new directory):
/// modes kept without set-id bits on files, modification times kept on
/// files, every owner the caller. Returns how many entries the bounds
/// left out.
pub fn copy(root: &Path, to: &Path) -> std::io::Result<usize> {
    use nix::unistd::{access, AccessFlags};
    std::fs::DirBuilder::new().mode(0o755).create(to)?;
    File::create(to.join(IN_USE))?;
    let left_out = walk(root, &mut |src, rel, meta| {
        let dst = to.join(rel);
        let kind = meta.file_type();
        if kind.is_dir() {
            let mode = meta.mode() & 0o3777;
            // The owner (root here) writes into it whatever its mode.
            if std::fs::DirBuilder::new().mode(mode).create(&dst).is_ok() {
                let _ = std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode));
                // One we may not read (/etc/frr) hides the host's, which
                // no node could read either: the node's own, empty.
                let sealed = access(src, AccessFlags::R_OK | AccessFlags::X_OK).is_err();
                if sealed && crate::sys::xattr::set(&dst, OPAQUE, b"y").is_err() {
                    let _ = std::fs::remove_dir(&dst);
                }
            }
        } else if kind.is_symlink() {
            if let Ok(target) = std::fs::read_link(src) {
                let _ = std::os::unix::fs::symlink(target, &dst);
            }
        } else {
            let copied = File::open(src).and_then(|mut source| {
                let mut target = File::create_new(&dst)?;
                std::io::copy(&mut source, &mut target)?;
                target.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o1777))?;
                target.set_modified(meta.modified()?)
            });
            if copied.is_err() {
                let _ = std::fs::remove_file(&dst);
            }
        }
    });
    Ok(left_out)
}

/// Where the versions live: `host-layer` beside clonet's images.
pub fn cache_dir() -> PathBuf {
    crate::image::cache_dir().with_file_name("host-layer")
}

/// The locks this process holds on the versions its labs use.
static HELD: Mutex<Vec<(PathBuf, nix::fcntl::Flock<File>)>> = Mutex::new(Vec::new());

/// The layer of the host's `/` in `cache`, made if the host changed since
/// the last one, and locked for as long as this process runs. Versions no
/// one holds are removed. Returns it and how many entries the bounds left
/// out when it was made now.
pub fn host_layer(cache: &Path) -> std::io::Result<(PathBuf, usize)> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(cache)?;
    let version = cache.join(format!("{:016x}", fingerprint(Path::new("/"))));
    let mut left_out = 0;
    if !version.is_dir() {
        let building = cache.join(format!("building-{}", std::process::id()));
        let _ = remove_tree(&building);
        left_out = copy(Path::new("/"), &building)?;
        if std::fs::rename(&building, &version).is_err() {
            // Another lab made the same version first: use that one.
            let _ = remove_tree(&building);
        }
    }
    hold(&version)?;
    remove_unheld(cache, &version);
    Ok((version, left_out))
}

/// Takes a shared lock on `version` for this process's lifetime.
fn hold(version: &Path) -> std::io::Result<()> {
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    if held.iter().any(|(p, _)| p == version) {
        return Ok(());
    }
    let file = File::open(version.join(IN_USE))?;
    let lock =
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared).map_err(|(_, e)| std::io::Error::from(e))?;
    held.push((version.to_path_buf(), lock));
    Ok(())
}

/// Removes every version in `cache` but `keep` that no process holds, and
/// what a process that died while it built one left.
fn remove_unheld(cache: &Path, keep: &Path) {
    for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path == keep || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(pid) = name.strip_prefix("building-").and_then(|p| p.parse::<i32>().ok()) {
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                let _ = remove_tree(&path);
            }
            continue;
        }
        let Ok(file) = File::open(path.join(IN_USE)) else { continue };
        // Held for the removal: a lab that comes now finds it gone, not half.
        if let Ok(_unheld) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            let _ = remove_tree(&path);
        }
    }
}

/// Removes a tree of the cache, first giving its owner (this process)
/// write access to every directory (the layer keeps modes like 0555).
fn remove_tree(path: &Path) -> std::io::Result<()> {
    fn writable(dir: &Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                writable(&entry.path());
            }
        }
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        writable(path);
    }
    std::fs::remove_dir_all(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host-like tree: /etc with a file, a link and a subdirectory,
    /// /var with a directory and a file, /usr/local/bin, and /srv.
    fn host_tree(root: &Path) {
        for d in ["etc/sub", "var/log/app", "usr/local/bin", "usr/lib", "srv"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/motd"), "hello\n").unwrap();
        std::fs::write(root.join("etc/sub/conf"), "x=1\n").unwrap();
        std::fs::set_permissions(root.join("etc/sub/conf"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("motd", root.join("etc/greeting")).unwrap();
        std::fs::write(root.join("var/log/app/old.log"), "log\n").unwrap();
        std::fs::write(root.join("usr/lib/libx.so"), "elf").unwrap();
        std::fs::File::create(root.join("etc/big")).unwrap().set_len(MAX_FILE + 1).unwrap();
        std::fs::set_permissions(root.join("var/log"), std::fs::Permissions::from_mode(0o775)).unwrap();
    }

    #[test]
    fn the_layer_copies_etc_and_only_the_directories_of_var_and_usr_local() {
        let dir = tempfile::tempdir().unwrap();
        let (root, layer) = (dir.path().join("root"), dir.path().join("layer"));
        host_tree(&root);
        let left_out = copy(&root, &layer).unwrap();
        assert_eq!(left_out, 1, "the file over the size bound");
        assert_eq!(std::fs::read_to_string(layer.join("etc/motd")).unwrap(), "hello\n");
        assert_eq!(std::fs::read_link(layer.join("etc/greeting")).unwrap(), Path::new("motd"));
        let conf = std::fs::metadata(layer.join("etc/sub/conf")).unwrap();
        assert_eq!(conf.mode() & 0o7777, 0o755, "no set-id bit survives");
        assert_eq!(conf.mtime(), std::fs::metadata(root.join("etc/sub/conf")).unwrap().mtime());
        assert!(!layer.join("etc/big").exists());
        assert!(layer.join("var/log/app").is_dir() && !layer.join("var/log/app/old.log").exists());
        assert_eq!(std::fs::metadata(layer.join("var/log")).unwrap().mode() & 0o7777, 0o775, "directory modes kept");
        assert!(layer.join("usr/local/bin").is_dir() && !layer.join("usr/lib").exists());
        assert!(!layer.join("srv").exists());
    }

    #[test]
    fn the_fingerprint_follows_what_the_layer_copies_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        host_tree(root);
        let first = fingerprint(root);
        assert_eq!(fingerprint(root), first, "the same tree, the same number");
        std::fs::write(root.join("usr/lib/libx.so"), "changed").unwrap();
        std::fs::write(root.join("srv/file"), "new").unwrap();
        assert_eq!(fingerprint(root), first, "what the layer does not copy does not count");
        std::fs::write(root.join("etc/sub/conf"), "x=22\n").unwrap();
        let second = fingerprint(root);
        assert_ne!(second, first, "a changed file in /etc counts");
        std::fs::create_dir(root.join("var/log/other")).unwrap();
        assert_ne!(fingerprint(root), second, "a new directory in /var counts");
    }

    #[test]
    fn versions_no_process_holds_are_removed_and_held_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let (old, held, keep) = (cache.join("00000000000000aa"), cache.join("00000000000000bb"), cache.join("cc"));
        for v in [&old, &held, &keep] {
            std::fs::create_dir_all(v.join("etc/ro")).unwrap();
            File::create(v.join(IN_USE)).unwrap();
            std::fs::set_permissions(v.join("etc/ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        // Another process's hold, as far as flock is concerned: its own open file.
        let other = nix::fcntl::Flock::lock(File::open(held.join(IN_USE)).unwrap(), nix::fcntl::FlockArg::LockShared)
            .map_err(|(_, e)| e)
            .unwrap();
        let dead_build = cache.join(format!("building-{}", i32::MAX));
        std::fs::create_dir(&dead_build).unwrap();
        remove_unheld(cache, &keep);
        assert!(!old.exists(), "an unheld version goes, read-only directories and all");
        assert!(held.is_dir(), "a held version stays");
        assert!(keep.is_dir(), "the version in use stays");
        assert!(!dead_build.exists(), "a dead process's half-built version goes");
        drop(other);
    }
}
