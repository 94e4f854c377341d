//! A node's copy-on-write root in a lab's user namespace.
//!
//! There the kernel refuses an overlay whose lower layer is the host's `/`:
//! it will not clone a mount with mounts under it that the namespace
//! inherited (they are locked: `/proc`, `/sys`, `/dev`, …). So the node's
//! `/` is a tmpfs holding, for each directory at the top of the host's
//! `/`, an overlay of that directory alone, and the host's links as they
//! are. Each overlay costs the node's start about a tenth of a
//! millisecond, so the host's `/` is read once per lab, not once per node,
//! and what needs no overlay gets none:
//!
//! - an empty host directory (`/srv`, `/media`) or one the node may not
//!   read (`/root`) has nothing to show from the host: the node's own
//!   directory is bound there (the same to the node, a fifth of the cost);
//! - a directory the namespace inherited mounts under (`/mnt/…` on some
//!   hosts) can never be an overlay there: it is shown read-only at once,
//!   without a failed overlay first (which costs ten times a good one).
//!
//! The engine reads the host's `/` right after it enters its user
//! namespace ([`remember_host_top`]), when every mount it sees is one it
//! inherited, and hands the plan to each node's init (`__ns-init
//! --host-top`). Planning is sans-IO ([`plan_host_top`]); the mounts go
//! through [`Syscall`] and are tested on the recording fake.
//!
//! Owns: the plan of a split root and its mounts. Must not touch: the
//! rest of a node's set-up (`helpers`), where the layers live (`ns_root`).
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use super::helpers::RootLayers;
use super::syscall::{Mount, Syscall};
use super::HostError;

/// What a node's split root makes of one entry at the top of the host's `/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopEntry {
    /// A directory the node sees copy-on-write; `host`: whether the host's
    /// own directory is one of its layers (not when it is empty or the
    /// node may not read it).
    Dir { name: String, host: bool },
    /// A directory the lab's namespace inherited mounts under: no overlay
    /// can show it, so the node sees the host's, read-only.
    HoldsMounts(String),
    /// A link, made again with the same target.
    Link(String, PathBuf),
    /// Anything else (a file): left out.
    Other(String),
}

/// What a node's init needs to split its root: the plan of the host's
/// `/`, and the lab's own copy of the host's files (`host_layer`),
/// if it has one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPlan {
    pub top: Vec<TopEntry>,
    pub host_layer: Option<PathBuf>,
}

/// What the host's `/` shows for one entry, as `plan_host_top` needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEntry {
    Dir { readable: bool, empty: bool },
    Link(PathBuf),
    Other,
}

/// The directories of `/` a node gets fresh, never from the host.
pub const FRESH_TOP: [&str; 5] = ["dev", "proc", "sys", "tmp", "run"];

/// The plan for the host's top-level `entries`, given the mount points
/// (absolute paths) the lab's namespace inherited. Sorted by name, so
/// every node's root is made in the same order.
pub fn plan_host_top(entries: Vec<(String, HostEntry)>, inherited_mounts: &[String]) -> Vec<TopEntry> {
    let mut plan: Vec<TopEntry> = entries
        .into_iter()
        .map(|(name, entry)| match entry {
            HostEntry::Link(target) => TopEntry::Link(name, target),
            HostEntry::Other => TopEntry::Other(name),
            HostEntry::Dir { .. } if FRESH_TOP.contains(&name.as_str()) => TopEntry::Dir { name, host: false },
            HostEntry::Dir { readable, empty } => {
                let under = format!("/{name}/");
                if readable && inherited_mounts.iter().any(|m| m.starts_with(&under)) {
                    TopEntry::HoldsMounts(name)
                } else {
                    TopEntry::Dir { name, host: readable && !empty }
                }
            }
        })
        .collect();
    plan.sort_by(|a, b| top_name(a).cmp(top_name(b)));
    plan
}

fn top_name(entry: &TopEntry) -> &str {
    match entry {
        TopEntry::Dir { name, .. } | TopEntry::HoldsMounts(name) | TopEntry::Link(name, _) | TopEntry::Other(name) => {
            name
        }
    }
}

/// The mount points in `/proc/PID/mountinfo` text (its fifth field, with
/// the kernel's octal escapes undone).
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo.lines().filter_map(|line| line.split(' ').nth(4)).map(unescape_octal).collect()
}

/// `\040` and the like back to the byte they stand for.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match escaped {
            Some(d) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

static HOST_TOP: OnceLock<Vec<TopEntry>> = OnceLock::new();

/// Reads and keeps the plan of the host's `/` for every node of this
/// process's labs. Called once the process is in its user namespace and
/// before it mounts anything, so every mount it sees is an inherited one.
pub fn remember_host_top() {
    let _ = HOST_TOP.set(read_host_top());
}

/// The plan `remember_host_top` kept, or a fresh one.
pub fn host_top() -> Vec<TopEntry> {
    HOST_TOP.get().cloned().unwrap_or_else(read_host_top)
}

/// The plan of the host's `/` as this process sees it now.
pub fn read_host_top() -> Vec<TopEntry> {
    use nix::unistd::{access, AccessFlags};
    let entries = std::fs::read_dir("/")
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let entry = match e.file_type() {
                        Ok(t) if t.is_symlink() => {
                            std::fs::read_link(e.path()).map_or(HostEntry::Other, HostEntry::Link)
                        }
                        Ok(t) if t.is_dir() => {
                            let readable = access(&e.path(), AccessFlags::R_OK | AccessFlags::X_OK).is_ok();
                            let empty = readable && std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_none());
                            HostEntry::Dir { readable, empty }
                        }
                        _ => HostEntry::Other,
                    };
                    (name, entry)
                })
                .collect()
        })
        .unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map(|m| mount_points(&m)).unwrap_or_default();
    plan_host_top(entries, &mounts)
}

/// How long a node's init waits for the lab's copy of the host's files.
const HOST_LAYER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until the lab's copy of the host's files is in place at `at`
/// (the engine links it there once it is whole); false if it never came.
pub fn wait_for_host_layer(at: &Path) -> bool {
    let deadline = std::time::Instant::now() + HOST_LAYER_WAIT;
    while !at.is_dir() {
        if std::time::Instant::now() > deadline {
            eprintln!(
                "clonet: no copy of the host's files at {} after {HOST_LAYER_WAIT:?}: going on without",
                at.display()
            );
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    true
}

/// Makes `layers.merged` the node's split root by `plan` (see the module's
/// header): the upper and work directory of each overlay inside the
/// node's own, so snapshots and clones still copy one upper directory.
/// Writes at the top level itself land in the tmpfs and are not kept by
/// snapshots.
pub fn split_overlay_root(sys: &dyn Syscall, layers: &RootLayers, plan: &SplitPlan) -> Result<(), HostError> {
    let m = &layers.merged;
    let host_layer = plan.host_layer.as_deref().filter(|l| wait_for_host_layer(l));
    let mount = |what: &str, source: Option<&Path>, at: &Path, fstype: Option<&str>, flags, data: Option<&str>| {
        sys.mount(&Mount::new(source, at, fstype, flags, data))
            .map_err(HostError::io(format!("mounting {what} on {}", at.display())))
    };
    mount("the node's root", Some(Path::new("tmpfs")), m, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=0755"))?;
    // Every lower layer but the host's, topmost first.
    let upper_lowers: Vec<&str> =
        layers.lower.rsplit_once(':').map(|(l, _)| l.split(':').collect()).unwrap_or_default();
    let make =
        |path: &Path| sys.make_mountpoint(path, true).map_err(HostError::io(format!("making {}", path.display())));
    for entry in &plan.top {
        let (name, host) = match entry {
            TopEntry::Link(name, target) => {
                std::os::unix::fs::symlink(target, m.join(name))
                    .map_err(HostError::io(format!("linking {}", m.join(name).display())))?;
                continue;
            }
            TopEntry::Other(_) => continue,
            TopEntry::HoldsMounts(name) => {
                make(&m.join(name))?;
                if !FRESH_TOP.contains(&name.as_str()) {
                    show_read_only(sys, name, &m.join(name));
                }
                continue;
            }
            TopEntry::Dir { name, host } => (name, *host),
        };
        let at = m.join(name);
        make(&at)?;
        if FRESH_TOP.contains(&name.as_str()) {
            continue;
        }
        let upper = layers.upper.join(name);
        make(&upper)?;
        let mut lower: Vec<String> = upper_lowers
            .iter()
            .map(|l| Path::new(l).join(name))
            .filter(|l| l.is_dir())
            .map(|l| l.display().to_string())
            .collect();
        if host {
            // The lab's own copy of what the node may change, right above.
            let owned = host_layer.map(|l| l.join(name)).filter(|l| l.is_dir());
            lower.extend(owned.map(|l| l.display().to_string()));
            lower.push(format!("/{name}"));
        }
        if lower.is_empty() {
            // Nothing under it: the node's own directory is its whole view.
            mount("the node's own directory", Some(&upper), &at, None, MsFlags::MS_BIND, None)?;
            continue;
        }
        let work = layers.work.join(name);
        make(&work)?;
        let options =
            format!("lowerdir={},upperdir={},workdir={},userxattr", lower.join(":"), upper.display(), work.display());
        let overlay = Mount::new(Some(Path::new("overlay")), &at, Some("overlay"), MsFlags::empty(), Some(&options));
        if sys.mount(&overlay).is_err() {
            show_read_only(sys, name, &at);
        }
    }
    Ok(())
}

/// Shows the host's `/NAME` read-only at `at`, or not at all: never the
/// host's directory writable.
fn show_read_only(sys: &dyn Syscall, name: &str, at: &Path) {
    let host = PathBuf::from(format!("/{name}"));
    let shown =
        sys.mount(&Mount::new(Some(&host), at, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)).and_then(|()| {
            let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            sys.mount(&Mount::new(None, at, None, ro, None)).inspect_err(|_| {
                let _ = sys.umount(at, MntFlags::MNT_DETACH);
            })
        });
    if let Err(e) = shown {
        eprintln!("clonet: /{name} is not in the node: {e}");
    }
}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;

    use super::*;
    use crate::host::syscall::{Call, RecordingSyscall};

    fn dir(readable: bool, empty: bool) -> HostEntry {
        HostEntry::Dir { readable, empty }
    }

    #[test]
    fn the_plan_overlays_only_directories_with_something_of_the_hosts_to_show() {
        let entries = vec![
            ("var".to_string(), dir(true, false)),
            ("root".into(), dir(false, false)),
            ("srv".into(), dir(true, true)),
            ("mnt".into(), dir(true, false)),
            ("proc".into(), dir(true, false)),
            ("bin".into(), HostEntry::Link("usr/bin".into())),
            ("vmlinuz".into(), HostEntry::Other),
            ("media".into(), dir(true, false)),
        ];
        let mounts = ["/", "/proc", "/mnt/sandbox/python", "/media"].map(String::from);
        let plan = plan_host_top(entries, &mounts);
        assert_eq!(
            plan,
            vec![
                TopEntry::Link("bin".into(), "usr/bin".into()),
                // A mount at the directory itself is no mount under it.
                TopEntry::Dir { name: "media".into(), host: true },
                TopEntry::HoldsMounts("mnt".into()),
                TopEntry::Dir { name: "proc".into(), host: false },
                TopEntry::Dir { name: "root".into(), host: false },
                TopEntry::Dir { name: "srv".into(), host: false },
                TopEntry::Dir { name: "var".into(), host: true },
                TopEntry::Other("vmlinuz".into()),
            ]
        );
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Vec<TopEntry>>(&json).unwrap(), plan, "the plan crosses __ns-init's argv");
    }

    #[test]
    fn mount_points_are_the_fifth_field_unescaped() {
        let info = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    40 22 0:5 / /mnt/my\\040disk rw - tmpfs t rw\n\
                    41 22 0:6 / /a\\134b\\ rw - tmpfs t rw\n";
        assert_eq!(mount_points(info), ["/", "/mnt/my disk", "/a\\b\\"]);
    }

    /// A node's layers in `dir`, `lower` its lowerdir.
    fn layers_in(dir: &Path, lower: &str) -> RootLayers {
        let merged = dir.join("merged");
        std::fs::create_dir_all(&merged).unwrap();
        RootLayers { lower: lower.into(), upper: dir.join("upper"), work: dir.join("work"), merged }
    }

    /// In a lab's user namespace, `/` is a tmpfs of per-directory
    /// overlays, binds of the node's own directories where the host has
    /// nothing to show, and read-only views of what holds mounts; a
    /// directory the kernel will not overlay after all is shown read-only,
    /// and one it will not even show that way is left out, never left
    /// writable.
    #[test]
    fn a_root_in_a_user_namespace_is_made_of_one_overlay_per_top_directory() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("snap");
        std::fs::create_dir_all(snap.join("etc")).unwrap();
        std::fs::create_dir_all(snap.join("srv")).unwrap();
        let layers = layers_in(dir.path(), &format!("{}:/", snap.display()));
        let top = [
            TopEntry::Link("bin".into(), "usr/bin".into()),
            TopEntry::Dir { name: "etc".into(), host: true },
            TopEntry::HoldsMounts("mnt".into()),
            TopEntry::HoldsMounts("proc".into()),
            TopEntry::Dir { name: "root".into(), host: false },
            TopEntry::Dir { name: "srv".into(), host: false },
            TopEntry::Dir { name: "usr".into(), host: true },
            TopEntry::Dir { name: "var".into(), host: true },
            TopEntry::Other("vmlinuz".into()),
        ];
        let sys = RecordingSyscall::default();
        let is_overlay_of = |name: &'static str| move |c: &Call| matches!(c, Call::Mount(m) if m.fstype.as_deref() == Some("overlay") && m.target.ends_with(name));
        sys.fail_when(is_overlay_of("usr"), Errno::EINVAL);
        sys.fail_when(is_overlay_of("var"), Errno::EINVAL);
        sys.fail_when(
            |c| matches!(c, Call::Mount(m) if m.target.ends_with("var") && m.flags.contains(MsFlags::MS_REMOUNT)),
            Errno::EPERM,
        );
        let host_layer = dir.path().join("host-layer");
        std::fs::create_dir_all(host_layer.join("etc")).unwrap();
        let plan = SplitPlan { top: top.to_vec(), host_layer: Some(host_layer.clone()) };
        split_overlay_root(&sys, &layers, &plan).unwrap();
        let (m, up, wk) = (&layers.merged, &layers.upper, &layers.work);
        let options = |lower: String, name: &str| {
            format!(
                "lowerdir={lower},upperdir={},workdir={},userxattr",
                up.join(name).display(),
                wk.join(name).display()
            )
        };
        let point = |p: PathBuf| Call::MakeMountpoint { path: p, dir: true };
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        let rbind = MsFlags::MS_BIND | MsFlags::MS_REC;
        let overlay = |name: &str, lower: String| {
            Call::mount(Some("overlay"), &m.join(name), Some("overlay"), MsFlags::empty(), Some(&options(lower, name)))
        };
        let own = |name: &str| {
            Call::mount(Some(&up.join(name).display().to_string()), &m.join(name), None, MsFlags::MS_BIND, None)
        };
        let expected = vec![
            Call::mount(Some("tmpfs"), m, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=0755")),
            point(m.join("etc")),
            point(up.join("etc")),
            point(wk.join("etc")),
            // The lab's copy of the host's files right above the host's.
            overlay("etc", format!("{}:{}:/etc", snap.join("etc").display(), host_layer.join("etc").display())),
            point(m.join("mnt")),
            Call::mount(Some("/mnt"), &m.join("mnt"), None, rbind, None),
            Call::mount(None, &m.join("mnt"), None, ro, None),
            point(m.join("proc")),
            point(m.join("root")),
            point(up.join("root")),
            own("root"),
            // Empty on the host, but not in the layer above it.
            point(m.join("srv")),
            point(up.join("srv")),
            point(wk.join("srv")),
            overlay("srv", snap.join("srv").display().to_string()),
            point(m.join("usr")),
            point(up.join("usr")),
            point(wk.join("usr")),
            overlay("usr", "/usr".into()),
            Call::mount(Some("/usr"), &m.join("usr"), None, rbind, None),
            Call::mount(None, &m.join("usr"), None, ro, None),
            point(m.join("var")),
            point(up.join("var")),
            point(wk.join("var")),
            overlay("var", "/var".into()),
            Call::mount(Some("/var"), &m.join("var"), None, rbind, None),
            Call::mount(None, &m.join("var"), None, ro, None),
            Call::Umount { target: m.join("var"), flags: MntFlags::MNT_DETACH },
        ];
        assert_eq!(sys.calls(), expected);
        assert_eq!(std::fs::read_link(m.join("bin")).unwrap(), PathBuf::from("usr/bin"), "links are kept");
    }
}
