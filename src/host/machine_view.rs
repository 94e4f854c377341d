//! Who a machine (`linux.uml`, QEMU) runs as, and what it sees, when
//! clonet runs as root: never root itself, but a uid and gid of its own,
//! in a mount namespace where only the files it needs are reachable.
//!
//! - **Identity.** Each machine gets `GUEST_ID_BASE + the pid of its
//!   `__machine` helper` as uid and gid: no account has them, no two live
//!   machines share them (pids are unique), so one escaped guest can
//!   neither signal nor trace another, nor clonet. The range starts at
//!   0x70000000, above the ranges systemd hands to containers and below
//!   the ids programs treat as negative.
//! - **View.** The lab's run directory and clonet's image cache sit in
//!   directories only root may enter (`/run/clonet-0`, `/root`). In the
//!   machine's own mount namespace each such directory on the way to a
//!   needed file is covered by an empty tmpfs, in which the needed files
//!   are bind-mounted back at their own paths: the machine's own
//!   directory (`own`, read-write, handed to its uid) and the files it
//!   reads (`see`, read-only). Everything else under the covered
//!   directories (the control socket, other nodes, other labs, root's
//!   home) is not there at all. Paths keep their names, so the paths
//!   stored inside disk files (a qcow2 overlay's backing file, a COW
//!   file's base) still work.
//!
//! The plan is sans-IO ([`plan`], on a function that says which
//! directories the machine could not enter) and carried out through
//! [`Syscall`] ([`set_up`]), so both are tested without root.
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::syscall::{Mount, Syscall};
use super::HostError;

/// The first uid and gid of machines started by root.
pub const GUEST_ID_BASE: u32 = 0x7000_0000;

/// The uid and gid of the machine whose `__machine` helper has `helper_pid`.
pub fn guest_id(helper_pid: u32) -> u32 {
    // Linux pids are at most 2^22: the sum stays below 0x70400000.
    GUEST_ID_BASE + helper_pid.min(1 << 22)
}

/// The uid a machine started by this process runs as, given its helper's
/// pid: its own when clonet is root, clonet's own otherwise (`None`).
pub fn machine_owner(helper_pid: u32) -> Option<u32> {
    gives_guest_ids().then(|| guest_id(helper_pid))
}

/// Whether machines get uids of their own: when clonet is root of a user
/// namespace that has those ids, the host's (which has them all), not a
/// container's or a lab's that maps only a few. There, root is an
/// ordinary user of the host, and machines run as it.
pub fn gives_guest_ids() -> bool {
    nix::unistd::geteuid().is_root()
        && std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| maps_guest_ids(&map))
}

/// Whether a `uid_map` maps every guest id (sans-IO).
pub fn maps_guest_ids(uid_map: &str) -> bool {
    let (first, last) = (GUEST_ID_BASE as u64, GUEST_ID_BASE as u64 + (1 << 22));
    uid_map.lines().any(|line| {
        let n: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        n.len() == 3 && n[0] <= first && last < n[0] + n[2]
    })
}

/// Hands a file clonet made for a running machine (a NIC's socket, a new
/// disk overlay) to the machine's uid, without following a link.
pub fn hand_over(path: &Path, owner: Option<u32>) -> Result<(), HostError> {
    let Some(id) = owner else { return Ok(()) };
    std::os::unix::fs::lchown(path, Some(id), Some(id))
        .map_err(HostError::io(format!("handing {} to the machine", path.display())))
}

/// What a machine needs from the host's file system.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineView {
    /// Directories the machine works in: handed to its uid, read-write.
    pub own: Vec<PathBuf>,
    /// Files it reads: read-only.
    pub see: Vec<PathBuf>,
}

impl MachineView {
    /// The view as `__machine` options (`--own DIR`, `--see FILE`).
    pub fn args(&self) -> Vec<OsString> {
        let mut a = Vec::new();
        for (flag, paths) in [("--own", &self.own), ("--see", &self.see)] {
            for p in paths {
                a.push(flag.into());
                a.push(p.as_os_str().to_owned());
            }
        }
        a
    }
}

/// One step of building a machine's view, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewStep {
    /// Hides a directory the machine cannot enter under an empty tmpfs.
    Cover(PathBuf),
    /// Makes a directory inside a cover, on the way to a needed path.
    MakeDir(PathBuf),
    /// Makes the empty file or directory a needed path is mounted on.
    MakeMountpoint { path: PathBuf, dir: bool },
    /// Mounts needed path `index` (of `own` then `see`) back at its place.
    Bind { index: usize, target: PathBuf, read_only: bool },
}

/// A needed path: where it is, whether it is a directory, and whether the
/// machine may write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needed {
    pub path: PathBuf,
    pub dir: bool,
    pub writable: bool,
}

/// The steps that make every `needed` path (absolute, without `..`)
/// reachable for a machine that cannot enter the directories `blocked`
/// says it cannot. A needed path none of whose parents is blocked is left
/// as it is.
pub fn plan(needed: &[Needed], blocked: &dyn Fn(&Path) -> bool) -> Result<Vec<ViewStep>, String> {
    for n in needed {
        let plain =
            n.path.is_absolute() && n.path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !plain {
            return Err(format!("{}: not an absolute path without `.` or `..`", n.path.display()));
        }
    }
    // The highest blocked directory above each needed path.
    let mut covers: Vec<PathBuf> = Vec::new();
    let mut covered_by: Vec<Option<PathBuf>> = Vec::new();
    for n in needed {
        let top = n.path.ancestors().skip(1).collect::<Vec<_>>().into_iter().rev().find(|a| blocked(a));
        if let Some(top) = top {
            if !covers.iter().any(|c| top.starts_with(c)) {
                covers.retain(|c| !c.starts_with(top));
                covers.push(top.to_path_buf());
            }
        }
        covered_by.push(top.map(Path::to_path_buf));
    }
    covers.sort();
    let mut steps: Vec<ViewStep> = covers.iter().cloned().map(ViewStep::Cover).collect();
    let mut made: Vec<PathBuf> = covers.clone();
    // Parents before children, so that a bind under another bind lands
    // inside it rather than being hidden by it.
    let mut order: Vec<usize> = (0..needed.len()).filter(|&i| covered_by[i].is_some()).collect();
    order.sort_by(|&a, &b| needed[a].path.cmp(&needed[b].path));
    for i in order {
        let n = &needed[i];
        let cover = covers.iter().find(|c| n.path.starts_with(c)).expect("every top is under a kept cover");
        let mut dirs: Vec<&Path> = n.path.ancestors().skip(1).take_while(|a| *a != cover.as_path()).collect();
        dirs.reverse();
        for d in dirs {
            let inside_bind = needed.iter().any(|o| o.dir && d.starts_with(&o.path));
            if !made.iter().any(|m| m == d) && !inside_bind {
                steps.push(ViewStep::MakeDir(d.to_path_buf()));
                made.push(d.to_path_buf());
            }
        }
        steps.push(ViewStep::MakeMountpoint { path: n.path.clone(), dir: n.dir });
        steps.push(ViewStep::Bind { index: i, target: n.path.clone(), read_only: !n.writable });
    }
    Ok(steps)
}

/// The flags every mount of a view carries: nothing in it is a device or
/// grants privileges.
const SAFE: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// Moves the calling process into a mount namespace of its own, where
/// nothing it mounts shows outside. The view's sources must be opened
/// after this: the kernel binds only mounts of the caller's namespace.
pub fn enter_private_mounts(sys: &dyn Syscall) -> Result<(), HostError> {
    sys.unshare(CloneFlags::CLONE_NEWNS).map_err(HostError::io("a mount namespace of its own"))?;
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    sys.mount(&Mount::new(None, Path::new("/"), None, private, None)).map_err(HostError::io("making mounts private"))
}

/// Builds the view, once in private mounts: `sources` are open (`O_PATH`)
/// files of the needed paths, in `plan`'s numbering, opened before
/// anything is covered.
pub fn set_up(sys: &dyn Syscall, steps: &[ViewStep], sources: &[OwnedFd]) -> Result<(), HostError> {
    let io = |what: String| HostError::io(what);
    for step in steps {
        match step {
            ViewStep::Cover(dir) => {
                let m = Mount::new(Some(Path::new("tmpfs")), dir, Some("tmpfs"), SAFE, Some("mode=0755,size=1m"));
                sys.mount(&m).map_err(io(format!("covering {}", dir.display())))?;
            }
            ViewStep::MakeDir(dir) => {
                sys.make_mountpoint(dir, true).map_err(io(format!("making {}", dir.display())))?;
            }
            ViewStep::MakeMountpoint { path, dir } => {
                sys.make_mountpoint(path, *dir).map_err(io(format!("making {}", path.display())))?;
            }
            ViewStep::Bind { index, target, read_only } => {
                let fd = sources.get(*index).ok_or_else(|| HostError::Unsupported("a view step names no source"))?;
                let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                let what = format!("showing {}", target.display());
                sys.mount(&Mount::new(Some(&source), target, None, MsFlags::MS_BIND, None))
                    .map_err(io(what.clone()))?;
                // A bind mount takes its flags only from a remount.
                let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | SAFE;
                if *read_only {
                    flags |= MsFlags::MS_RDONLY;
                }
                sys.mount(&Mount::new(None, target, None, flags, None)).map_err(io(what))?;
            }
        }
    }
    Ok(())
}

/// Whether a machine with a uid and gid of its own could not enter `dir`:
/// only the bits for others count (it owns nothing there and is in no
/// group), and a directory that cannot be read is taken as blocked.
pub fn blocked_for_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir).map_or(true, |m| m.permissions().mode() & 0o001 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::syscall::{Call, RecordingSyscall};

    fn own(p: &str) -> Needed {
        Needed { path: p.into(), dir: true, writable: true }
    }

    fn see(p: &str) -> Needed {
        Needed { path: p.into(), dir: false, writable: false }
    }

    /// The directories of a root-run host that others cannot enter.
    fn root_only(dir: &Path) -> bool {
        ["/root", "/run/clonet-0", "/run/clonet-0/lab"].iter().any(|b| dir == Path::new(b))
    }

    #[test]
    fn a_machine_sees_its_own_directory_and_image_behind_covers() {
        let needed = [own("/run/clonet-0/lab/u1.machine"), see("/root/.local/share/clonet/images/uml.img")];
        let steps = plan(&needed, &root_only).unwrap();
        let expected = vec![
            ViewStep::Cover("/root".into()),
            ViewStep::Cover("/run/clonet-0".into()),
            ViewStep::MakeDir("/root/.local".into()),
            ViewStep::MakeDir("/root/.local/share".into()),
            ViewStep::MakeDir("/root/.local/share/clonet".into()),
            ViewStep::MakeDir("/root/.local/share/clonet/images".into()),
            ViewStep::MakeMountpoint { path: "/root/.local/share/clonet/images/uml.img".into(), dir: false },
            ViewStep::Bind { index: 1, target: "/root/.local/share/clonet/images/uml.img".into(), read_only: true },
            ViewStep::MakeDir("/run/clonet-0/lab".into()),
            ViewStep::MakeMountpoint { path: "/run/clonet-0/lab/u1.machine".into(), dir: true },
            ViewStep::Bind { index: 0, target: "/run/clonet-0/lab/u1.machine".into(), read_only: false },
        ];
        assert_eq!(steps, expected);
    }

    #[test]
    fn paths_anyone_can_reach_need_no_step_and_shared_parents_are_made_once() {
        let needed = [see("/usr/share/qemu/bios.bin"), see("/root/img/a"), see("/root/img/b")];
        let steps = plan(&needed, &root_only).unwrap();
        assert_eq!(steps.iter().filter(|s| matches!(s, ViewStep::Cover(_))).count(), 1);
        assert_eq!(steps.iter().filter(|s| **s == ViewStep::MakeDir("/root/img".into())).count(), 1);
        assert!(!steps.iter().any(|s| matches!(s, ViewStep::Bind { index: 0, .. })), "{steps:?}");
    }

    #[test]
    fn a_cover_below_another_is_folded_into_the_higher_one() {
        // The lab dir is blocked too, but the base above it is covered already.
        let needed = [see("/run/clonet-0/lab/snapshots/s.qcow2"), own("/run/clonet-0/lab/k.machine")];
        let steps = plan(&needed, &root_only).unwrap();
        let covers: Vec<_> = steps.iter().filter(|s| matches!(s, ViewStep::Cover(_))).collect();
        assert_eq!(covers, [&ViewStep::Cover("/run/clonet-0".into())]);
        // And a higher cover found later replaces a lower one.
        let deeper_first = [see("/a/b/c/f"), see("/a/g")];
        let steps = plan(&deeper_first, &|d: &Path| d == Path::new("/a/b") || d == Path::new("/a")).unwrap();
        assert_eq!(steps[0], ViewStep::Cover("/a".into()));
        assert_eq!(steps.iter().filter(|s| matches!(s, ViewStep::Cover(_))).count(), 1);
    }

    #[test]
    fn a_file_inside_an_own_directory_is_bound_after_it_without_making_its_parents() {
        let needed = [see("/run/clonet-0/lab/k.machine/base.img"), own("/run/clonet-0/lab/k.machine")];
        let steps = plan(&needed, &root_only).unwrap();
        let binds: Vec<usize> = steps
            .iter()
            .filter_map(|s| if let ViewStep::Bind { index, .. } = s { Some(*index) } else { None })
            .collect();
        assert_eq!(binds, [1, 0]);
        assert!(!steps.contains(&ViewStep::MakeDir("/run/clonet-0/lab/k.machine".into())));
    }

    #[test]
    fn relative_paths_and_dot_dot_are_refused() {
        for bad in ["run/x", "/run/../root/x", "./x"] {
            assert!(plan(&[see(bad)], &root_only).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_view_is_built_in_a_private_mount_namespace_with_read_only_files() {
        let sys = RecordingSyscall::default();
        let steps = plan(&[see("/root/i.img")], &root_only).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = OwnedFd::from(file);
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        enter_private_mounts(&sys).unwrap();
        set_up(&sys, &steps, &[fd]).unwrap();
        let bind_ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | SAFE | MsFlags::MS_RDONLY;
        let expected = vec![
            Call::Unshare { flags: CloneFlags::CLONE_NEWNS },
            Call::mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None),
            Call::mount(Some("tmpfs"), Path::new("/root"), Some("tmpfs"), SAFE, Some("mode=0755,size=1m")),
            Call::MakeMountpoint { path: "/root/i.img".into(), dir: false },
            Call::mount(Some(&source), Path::new("/root/i.img"), None, MsFlags::MS_BIND, None),
            Call::mount(None, Path::new("/root/i.img"), None, bind_ro, None),
        ];
        assert_eq!(sys.calls(), expected);
    }

    #[test]
    fn guest_ids_are_given_only_where_the_user_namespace_maps_them() {
        assert!(maps_guest_ids("         0          0 4294967295\n"), "the host's");
        assert!(!maps_guest_ids("0 1000 1\n1 100000 65536\n"), "a rootless container's");
        assert!(!maps_guest_ids(""));
        assert!(maps_guest_ids("0 1000 1\n1 200000 4000000000\n"));
    }

    #[test]
    fn guest_ids_are_above_the_base_and_distinct_per_helper() {
        assert_eq!(guest_id(1), GUEST_ID_BASE + 1);
        assert_ne!(guest_id(100), guest_id(101));
        assert!(guest_id(u32::MAX) <= GUEST_ID_BASE + (1 << 22));
        let view = MachineView { own: vec!["/r/a".into()], see: vec!["/i".into()] };
        assert_eq!(view.args(), ["--own", "/r/a", "--see", "/i"].map(OsString::from));
    }
}
