//! The two helper programs clonet runs as itself (`/proc/self/exe`):
//!
//! - `__ns-init`: creates a node's namespaces (net, mount, UTS, IPC, PID)
//!   and becomes PID 1 inside them. When it dies the kernel kills every
//!   process of the node, so nothing a node started can outlive the lab.
//! - `__ns-enter`: joins a node's namespaces and runs one command there as
//!   a child, relaying its exit status, and killing its whole process group
//!   when asked to stop (timeout or interrupt).
//! - `__machine`: runs a machine (`linux.uml`, QEMU) as the init of a PID
//!   namespace of its own; run by root, as a uid of its own that sees only
//!   its own files (`machine_view`).
//!
//! All are single-threaded programs, which `fork` and `setns(CLONE_NEWNS)`
//! require. Being single-threaded, a helper's forked child may call
//! anything, so what the helpers set up (namespaces, host name, mounts,
//! the pivot into the node's root) goes through [`Syscall`]
//! ([`set_up_node`], [`join_node`]) and is tested on the recording fake;
//! how a helper runs (`fork`, `prctl`, `sigprocmask`, `waitpid`, `execvp`)
//! calls nix directly.
//!
//! Owns: the helpers' protocol (`pid N`, `ready`, `error: …`) and the
//! order of their set-up calls. Must not touch: the engine, the switch.
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::statvfs::FsFlags;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execvp, setpgid, Pid};

use super::machine_view::{self, MachineView, Needed};
use super::split_root::{split_overlay_root, SplitPlan};
use super::syscall::{LinuxSyscall, Mount, Syscall};
use super::HostError;
use crate::sys::proc::{fork_single_threaded, Forked, SingleThreaded};
use crate::vocab::Bind;

/// Exit status of a helper that failed before running anything.
pub const HELPER_FAILED: i32 = 111;

/// `__ns-init` reports failures on its protocol pipe; the engine shows them.
fn die(what: &str, err: impl std::fmt::Display) -> ! {
    let _ = writeln!(std::io::stdout(), "error: {what}: {err}");
    std::process::exit(HELPER_FAILED)
}

/// `die` for a failed set-up step, which names itself.
fn die_at(e: HostError) -> ! {
    match e {
        HostError::Io { what, source } => die(&what, source),
        e => die("setting up the node", e),
    }
}

/// `__ns-enter`'s stdout belongs to the command: report on stderr.
fn enter_failed(what: &str, err: impl std::fmt::Display) -> ! {
    eprintln!("clonet: {what}: {err}");
    std::process::exit(HELPER_FAILED)
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn blocked_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// One mount; a failure says what was mounted where.
fn mount_as(
    sys: &dyn Syscall,
    what: &str,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), HostError> {
    sys.mount(&Mount::new(source, target, fstype, flags, data))
        .map_err(HostError::io(format!("mounting {what} on {}", target.display())))
}

/// Stops mounts made in the node's mount namespace from reaching the
/// host's (and the host's from reaching the node's).
fn make_mounts_private(sys: &dyn Syscall) -> Result<(), HostError> {
    let flags = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    sys.mount(&Mount::new(None, Path::new("/"), None, flags, None))
        .map_err(HostError::io("making the node's mounts private"))
}

/// Mounts the node's private view: its own /proc and /sys, a private /tmp
/// and /run, and the lab's hosts file as /etc/hosts.
fn private_mounts(sys: &dyn Syscall, hosts: &Path) -> Result<(), HostError> {
    make_mounts_private(sys)?;
    // Bind the hosts file before /run is hidden: it may live under /run.
    mount_as(sys, "the lab's hosts file", Some(hosts), Path::new("/etc/hosts"), None, MsFlags::MS_BIND, None)?;
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for (dir, fstype, flags, data) in [
        ("/tmp", "tmpfs", nodev, Some("mode=1777")),
        ("/run", "tmpfs", nodev, Some("mode=0755")),
        ("/proc", "proc", nodev | MsFlags::MS_NOEXEC, None),
        ("/sys", "sysfs", nodev | MsFlags::MS_NOEXEC, None),
    ] {
        let source = Path::new(fstype);
        mount_as(sys, fstype, Some(source), Path::new(dir), Some(fstype), flags, data)?;
    }
    Ok(())
}

/// The layers of a node's copy-on-write root: overlayfs `lowerdir` (one
/// directory, or several separated by `:`, topmost first), and the node's
/// own `upperdir`, `workdir` and mount point.
#[derive(Clone, Debug)]
pub struct RootLayers {
    pub lower: String,
    pub upper: std::path::PathBuf,
    pub work: std::path::PathBuf,
    pub merged: std::path::PathBuf,
}

/// `RootLayers::lower` when the upper directory is the whole root (a
/// btrfs subvolume made from a snapshot of the base): no overlay.
pub const WHOLE_ROOT: &str = "-";

/// Makes the node's `/` an overlay of `layers` (or the upper directory
/// alone, see `WHOLE_ROOT`), with the same private mounts as
/// `private_mounts` where the new root has the directories, then pivots
/// into it: writes land in the upper directory and never reach the lower
/// layers (the host's `/`). Nothing is undone on failure: the init exits,
/// and its mount namespace, with every mount made here, goes with it.
fn overlay_root(
    sys: &dyn Syscall,
    layers: &RootLayers,
    split: Option<&SplitPlan>,
    hosts: &Path,
    binds: &[Bind],
) -> Result<(), HostError> {
    make_mounts_private(sys)?;
    let m = &layers.merged;
    if layers.lower == WHOLE_ROOT {
        mount_as(sys, "the node's root", Some(&layers.upper), m, None, MsFlags::MS_BIND, None)?;
    } else if layers.lower.rsplit(':').next() == Some("/") && super::userns::in_user_namespace() {
        // The engine hands its plan over; read one here only without it.
        let read_here;
        let plan = match split {
            Some(plan) => plan,
            None => {
                read_here = SplitPlan { top: super::split_root::read_host_top(), host_layer: None };
                &read_here
            }
        };
        split_overlay_root(sys, layers, plan)?;
    } else {
        let options =
            format!("lowerdir={},upperdir={},workdir={}", layers.lower, layers.upper.display(), layers.work.display());
        let overlay = Path::new("overlay");
        mount_as(sys, "the node's root", Some(overlay), m, Some("overlay"), MsFlags::empty(), Some(&options))?;
    }
    // A container image may lack the mount points a runtime provides
    // (`/proc`, `/sys`, `/dev`, `/tmp`, `/run`, `/etc/hosts`): they are made in
    // the node's upper layer, as container runtimes do. A link there is
    // left alone (the mounts below skip what is not a directory).
    for dir in ["proc", "sys", "dev", "tmp", "run", "etc"] {
        if std::fs::symlink_metadata(m.join(dir)).is_err() {
            let _ = std::fs::create_dir(m.join(dir));
        }
    }
    let hosts_at = m.join("etc/hosts");
    if std::fs::symlink_metadata(&hosts_at).is_err() && m.join("etc").is_dir() {
        let _ = std::fs::File::create(&hosts_at);
    }
    if m.join("etc/hosts").exists() {
        mount_as(sys, "the lab's hosts file", Some(hosts), &m.join("etc/hosts"), None, MsFlags::MS_BIND, None)?;
    }
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if m.join("dev").is_dir() {
        let (dev, flags) = (Path::new("/dev"), MsFlags::MS_BIND | MsFlags::MS_REC);
        mount_as(sys, "the host's /dev", Some(dev), &m.join("dev"), None, flags, None)?;
    }
    for (dir, fstype, flags, data) in [
        ("tmp", "tmpfs", nodev, Some("mode=1777")),
        ("run", "tmpfs", nodev, Some("mode=0755")),
        ("proc", "proc", nodev | MsFlags::MS_NOEXEC, None),
        ("sys", "sysfs", nodev | MsFlags::MS_NOEXEC, None),
    ] {
        if m.join(dir).is_dir() {
            mount_as(sys, fstype, Some(Path::new(fstype)), &m.join(dir), Some(fstype), flags, data)?;
        }
    }
    for b in binds {
        bind_into(sys, m, b)?;
    }
    // pivot_root(".", ".") stacks the old root under the new one; detach it.
    let here = Path::new(".");
    sys.chdir(m).map_err(HostError::io(format!("entering {}", m.display())))?;
    sys.pivot_root(here, here).map_err(HostError::io("pivot_root into the node's root"))?;
    sys.umount(here, MntFlags::MNT_DETACH).map_err(HostError::io("detaching the host's root"))?;
    sys.chdir(Path::new("/")).map_err(HostError::io("entering the node's root"))
}

/// Shows the host's `b.source` at `b.target` in the root mounted at
/// `root`, creating the target (a directory, or an empty file for a file)
/// in the node's upper layer. The target's path is walked one name at a
/// time and a symbolic link on it is refused: the root's files come from
/// an image or a snapshot, and a link there must not point the mount
/// anywhere else while the host's `/` is still reachable.
fn bind_into(sys: &dyn Syscall, root: &Path, b: &Bind) -> Result<(), HostError> {
    let source = std::fs::metadata(&b.source).map_err(HostError::io(format!("binds: {}", b.source.display())))?;
    let mut at = root.to_path_buf();
    let names: Vec<&str> = b.target.split('/').filter(|n| !n.is_empty()).collect();
    for (i, name) in names.iter().enumerate() {
        at.push(name);
        let last = i + 1 == names.len();
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(HostError::Io {
                    what: format!("binds: {} in the node is a symbolic link", b.target),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                })
            }
            Ok(_) => {}
            Err(_) if last && !source.is_dir() => {
                std::fs::File::create(&at).map_err(HostError::io(format!("binds: creating {}", b.target)))?;
            }
            Err(_) => std::fs::create_dir(&at).map_err(HostError::io(format!("binds: creating {}", b.target)))?,
        }
    }
    let what = format!("{} (binds)", b.source.display());
    mount_as(sys, &what, Some(&b.source), &at, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    if b.read_only {
        // A remount keeps the flags the source's own mount has: in a user
        // namespace those are locked, and dropping one is refused.
        let kept = nix::sys::statvfs::statvfs(&b.source).map(|v| v.flags()).unwrap_or(FsFlags::empty());
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        for (st, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if kept.contains(st) {
                flags |= ms;
            }
        }
        mount_as(sys, &format!("{what} read-only"), None, &at, None, flags, None)?;
    }
    Ok(())
}

/// What a node's init sets up once it is PID 1 of its new namespaces: its
/// host name, then its root (a copy-on-write one on `root`'s layers, or
/// the host's with private mounts). `split`: how a root in a user
/// namespace splits the host's `/` (see `split_root`).
pub fn set_up_node(
    sys: &dyn Syscall,
    hostname: &str,
    hosts: &Path,
    root: Option<&RootLayers>,
    split: Option<&SplitPlan>,
    binds: &[Bind],
) -> Result<(), HostError> {
    sys.sethostname(hostname).map_err(HostError::io("sethostname"))?;
    match root {
        Some(layers) => overlay_root(sys, layers, split, hosts, binds),
        None if binds.is_empty() => private_mounts(sys, hosts),
        None => Err(HostError::Unsupported("binds need the node's own copy-on-write root")),
    }
}

/// The namespaces a node's init creates.
pub const NODE_NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNET
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWPID);

/// Joins the namespaces of the node whose init has host pid `pid`, the
/// mount namespace last, and enters its `/`.
pub fn join_node(sys: &dyn Syscall, pid: i32) -> Result<(), HostError> {
    // Open every namespace first: after joining the mount namespace, /proc
    // paths would resolve inside the node.
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut fds = Vec::new();
    for (name, kind) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        let file = File::open(&path).map_err(HostError::io(format!("open {path}")))?;
        fds.push((name, file, kind));
    }
    for (name, file, kind) in &fds {
        sys.setns(file.as_fd(), *kind).map_err(HostError::io(format!("setns {name}")))?;
    }
    sys.chdir(Path::new("/")).map_err(HostError::io("chdir /"))
}

/// Whether every write end of `pipe` is closed (its holder died).
fn parent_gone(pipe: &std::os::fd::OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// `clonet __ns-init HOSTNAME HOSTS_FILE [LOWER UPPER WORK MERGED]`: prints
/// `pid N` (the host pid of the node's init) and then `ready`, or
/// `error: …`. With layers, the node's `/` is a copy-on-write overlay.
pub fn ns_init_main(
    hostname: &str,
    hosts: &Path,
    root: Option<RootLayers>,
    split: Option<SplitPlan>,
    binds: &[Bind],
) -> ! {
    let single = SingleThreaded::check().unwrap_or_else(|e| die("start", e));
    // The real calls: this helper is single-threaded, so its forked child
    // below may call through them too (see the module's header).
    let sys = LinuxSyscall;
    if let Err(e) = sys.unshare(NODE_NAMESPACES) {
        die("unshare", e);
    }
    // Held open by this process only: the child sees it close if we die
    // before its PDEATHSIG is armed (a lab torn down while the node starts).
    let (parent_alive, held_by_parent) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => die("pipe", e),
    };
    match fork_single_threaded(&single) {
        Err(e) => die("fork", e),
        Ok(Forked::Parent(child)) => {
            drop(parent_alive);
            let _held = held_by_parent;
            let _ = writeln!(std::io::stdout(), "pid {child}");
            let _ = std::io::stdout().flush();
            loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Ok(status) => std::process::exit(exit_code(status).unwrap_or(0)),
                    Err(_) => std::process::exit(0),
                }
            }
        }
        Ok(Forked::Child) => {
            // We are PID 1 of the node. Die with our parent, which dies with clonet.
            let _ = nix::sys::prctl::set_name(c"clonet-init");
            if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
                die("prctl", e);
            }
            drop(held_by_parent);
            if parent_gone(&parent_alive) {
                // Killed between our fork and the prctl: PDEATHSIG will
                // never come, so go now.
                std::process::exit(1);
            }
            drop(parent_alive);
            if let Err(e) = set_up_node(&sys, hostname, hosts, root.as_ref(), split.as_ref(), binds) {
                die_at(e);
            }
            let signals = blocked_signals();
            if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
                die("sigprocmask", e);
            }
            let _ = writeln!(std::io::stdout(), "ready");
            let _ = std::io::stdout().flush();
            // Let go of the engine's pipe.
            if let Ok(null) = File::options().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(null.as_fd());
            }
            loop {
                // Reap orphans re-parented to us; stop on a termination signal.
                while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if status == WaitStatus::StillAlive {
                        break;
                    }
                }
                match signals.wait() {
                    // Only SIGTERM stops a node; clonet normally kills it.
                    Ok(Signal::SIGTERM) => std::process::exit(0),
                    Ok(_) | Err(_) => continue,
                }
            }
        }
    }
}

/// Where and as whom `__ns-enter` runs its command (an image's
/// WorkingDir and User, for its main program).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunAs {
    pub cwd: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, found in the node's files.
    pub user: Option<String>,
}

/// The uid and gid of an image's `User`, by the node's `/etc/passwd` and
/// `/etc/group` texts (sans-IO). A name that is not there is an error.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let field = |text: &str, name: &str, at: usize| {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > at && f[0] == name).then(|| f[at].parse::<u32>().ok()).flatten()
        })
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[2].parse() == Ok(uid)).then(|| f[3].parse::<u32>().ok()).flatten()
            });
            (uid, gid.unwrap_or(uid))
        }
        Err(_) => (
            field(passwd, user, 2).ok_or_else(|| format!("no user {user:?} in the node's /etc/passwd"))?,
            field(passwd, user, 3).unwrap_or(0),
        ),
    };
    let gid = match grp {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => field(group, g, 2).ok_or_else(|| format!("no group {g:?} in the node's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// In the forked child, inside the node: enters `cwd` and becomes `user`.
fn apply_run_as(run_as: &RunAs) -> Result<(), String> {
    if let Some(cwd) = &run_as.cwd {
        nix::unistd::chdir(Path::new(cwd)).map_err(|e| format!("working directory {cwd}: {e}"))?;
    }
    if let Some(user) = &run_as.user {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let (uid, gid) = resolve_user(user, &read("/etc/passwd"), &read("/etc/group"))?;
        let gid = nix::unistd::Gid::from_raw(gid);
        nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(gid).map_err(|e| format!("setgid: {e}"))?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).map_err(|e| format!("setuid {uid}: {e}"))?;
    }
    Ok(())
}

/// `clonet __ns-enter PID -- ARGV…`: runs ARGV inside the namespaces of
/// the node whose init has host pid PID, and exits with its status.
pub fn ns_enter_main(pid: i32, argv: &[String], run_as: &RunAs) -> ! {
    // Before joining the node: its `/proc` has no entry for this process.
    let single = SingleThreaded::check().unwrap_or_else(|e| enter_failed("start", e));
    if argv.is_empty() {
        enter_failed("ns-enter", "no command");
    }
    match join_node(&LinuxSyscall, pid) {
        Ok(()) => {}
        Err(HostError::Io { what, source }) => enter_failed(&what, source),
        Err(e) => enter_failed("ns-enter", e),
    }
    let args: Vec<CString> = match argv.iter().map(|a| CString::new(a.as_bytes())).collect() {
        Ok(a) => a,
        Err(_) => enter_failed("ns-enter", "argument contains a NUL byte"),
    };
    let signals = blocked_signals();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        enter_failed("sigprocmask", e);
    }
    match fork_single_threaded(&single) {
        Err(e) => enter_failed("fork", e),
        Ok(Forked::Child) => {
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            if let Err(e) = apply_run_as(run_as) {
                eprintln!("clonet: {e}");
                std::process::exit(126);
            }
            exec_child(&args, &argv[0], &signals)
        }
        Ok(Forked::Parent(child)) => {
            // Also set it here: whichever of the two runs first wins the race.
            let _ = setpgid(child, child);
            wait_then_exit(child, &signals, Pid::from_raw(-child.as_raw()))
        }
    }
}

/// In a helper's forked child: dies with the helper, takes the signals
/// back, and becomes `args`; if it cannot, says why and exits 127.
fn exec_child(args: &[CString], program: &str, signals: &SigSet) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(signals), None);
    let e = execvp(&args[0], args).unwrap_err();
    eprintln!("clonet: cannot run {program:?}: {e}");
    std::process::exit(127)
}

/// In a helper: waits for `child` and exits with its status; any of the
/// blocked `signals` but SIGCHLD kills `target` (the child, or its
/// process group) first.
fn wait_then_exit(child: Pid, signals: &SigSet, target: Pid) -> ! {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    std::process::exit(code)
                }
            }
            Err(_) => std::process::exit(HELPER_FAILED),
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(_) => {
                let _ = kill(target, Signal::SIGKILL);
            }
        }
    }
}

/// Puts this process's next child in a new PID namespace. Root makes one
/// directly; anyone else first makes a user namespace that maps only
/// their own uid and gid (so nothing changes in what the child may do),
/// which lets them make the PID namespace.
fn new_pid_namespace_for_children() -> Result<(), String> {
    if nix::sched::unshare(CloneFlags::CLONE_NEWPID).is_ok() {
        return Ok(());
    }
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID).map_err(|e| e.to_string())?;
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text).map_err(|e| format!("{file}: {e}"))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{uid} {uid} 1"))?;
    write("gid_map", format!("{gid} {gid} 1"))
}

/// `__machine [--own DIR]… [--see FILE]… -- PROGRAM ARGS…`: runs a
/// machine (`linux.uml`, QEMU) as the init of a PID namespace of its own,
/// and waits for it. When the init dies, the kernel kills everything else
/// in its namespace: UML's helper processes cannot outlive it. And the
/// init dies with this helper (its parent-death signal), which dies with
/// the lab (the one the engine gave it): however the lab ends, even by
/// SIGKILL, its machines end with it. Where no PID namespace can be made,
/// the machine runs without one.
///
/// Run by root, the machine never runs as root: it gets a uid and gid of
/// its own and sees only the `own` directories (handed to it) and the
/// `see` files (read-only) of the host's private directories (see
/// `machine_view`). If that cannot be set up, the machine does not run.
/// (Root of a user namespace without those ids, a container's, is an
/// ordinary user of the host: the machine runs as it.)
pub fn machine_main(view: &MachineView, argv: &[String]) -> ! {
    let single = SingleThreaded::check().unwrap_or_else(|e| enter_failed("start", e));
    if argv.is_empty() {
        enter_failed("machine", "no command");
    }
    let args: Vec<CString> = match argv.iter().map(|a| CString::new(a.as_bytes())).collect() {
        Ok(a) => a,
        Err(_) => enter_failed("machine", "argument contains a NUL byte"),
    };
    let guest = machine_view::gives_guest_ids().then(|| {
        let id = machine_view::guest_id(std::process::id());
        if let Err(e) = enter_view(view, id) {
            enter_failed("machine", format!("cannot set up the machine's unprivileged view: {e}"));
        }
        (id, machine_groups(&argv[0]))
    });
    if let Err(e) = new_pid_namespace_for_children() {
        eprintln!("clonet: {}: no PID namespace of its own ({e}); its processes may outlive a killed lab", argv[0]);
    }
    let signals = blocked_signals();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        enter_failed("sigprocmask", e);
    }
    // Held open by this helper only: the machine sees it close if the
    // helper dies before the machine's parent-death signal is armed (which
    // changing uids disarms), and never runs orphaned.
    let (helper_alive, held_by_helper) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => enter_failed("pipe", e),
    };
    match fork_single_threaded(&single) {
        Err(e) => enter_failed("fork", e),
        // It stays in this helper's process group, so that the engine's
        // killpg reaches it too (until UML makes a session of its own).
        Ok(Forked::Child) => {
            drop(held_by_helper);
            if let Some((id, groups)) = &guest {
                if let Err(e) = become_guest(*id, groups) {
                    enter_failed("machine", format!("cannot drop root: {e}"));
                }
            }
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            if parent_gone(&helper_alive) {
                std::process::exit(HELPER_FAILED);
            }
            close_inherited_fds();
            exec_child(&args, &argv[0], &signals)
        }
        Ok(Forked::Parent(child)) => {
            drop(helper_alive);
            let _held = held_by_helper;
            wait_then_exit(child, &signals, child)
        }
    }
}

/// Hands the `own` directories (and what clonet put in them) to uid and
/// gid `id`, then builds the machine's view in a mount namespace of this
/// helper's, which its child inherits. The directories are handed over
/// before the view exists, so only clonet's own real directory is: it is
/// opened without following a link.
fn enter_view(view: &MachineView, id: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |path: &Path, flags: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags::O_PATH | flags)
            .open(path)
            .map(OwnedFd::from)
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    for dir in &view.own {
        hand_over_tree(dir, id)?;
    }
    machine_view::enter_private_mounts(&LinuxSyscall).map_err(|e| e.to_string())?;
    let mut needed = Vec::new();
    let mut sources = Vec::new();
    for dir in &view.own {
        // clonet's own directory in its private run directory: never a link.
        sources.push(open(dir, libc_flags::O_DIRECTORY | libc_flags::O_NOFOLLOW)?);
        needed.push(Needed { path: dir.clone(), dir: true, writable: true });
    }
    for file in &view.see {
        use std::os::unix::fs::PermissionsExt;
        let fd = open(file, 0)?;
        let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
        if meta.permissions().mode() & 0o004 == 0 {
            let why = "the machine runs as an unprivileged user, who cannot read it (make it readable by others)";
            return Err(format!("{}: {why}", file.display()));
        }
        let is_dir = meta.is_dir();
        sources.push(fd);
        needed.push(Needed { path: file.clone(), dir: is_dir, writable: false });
    }
    let steps = machine_view::plan(&needed, &machine_view::blocked_for_others)?;
    machine_view::set_up(&LinuxSyscall, &steps, &sources).map_err(|e| e.to_string())
}

/// The flags `open` takes that std does not name.
mod libc_flags {
    pub const O_PATH: i32 = nix::fcntl::OFlag::O_PATH.bits();
    pub const O_DIRECTORY: i32 = nix::fcntl::OFlag::O_DIRECTORY.bits();
    pub const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();
}

/// Gives `dir` and its entries (files and sockets clonet made for the
/// machine, or an earlier run of it left) to `id`, links untouched.
fn hand_over_tree(dir: &Path, id: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let chown = |p: &Path| machine_view::hand_over(p, Some(id)).map_err(|e| e.to_string());
    chown(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        chown(&entry.path())?;
    }
    Ok(())
}

/// Closes every fd but stdin, stdout and stderr (the machine's console
/// and agent lines): whatever clonet's own parent or clonet left open
/// without close-on-exec is not the machine's to hold.
fn close_inherited_fds() {
    let open: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect(),
        Err(_) => return,
    };
    for fd in open {
        // The directory's own fd is closed already: EBADF, harmless.
        let _ = nix::unistd::close(fd);
    }
}

/// The supplementary groups a machine keeps: QEMU keeps the group of
/// `/dev/kvm`, so that it may use KVM; nothing else keeps any.
fn machine_groups(program: &str) -> Vec<nix::unistd::Gid> {
    use std::os::unix::fs::MetadataExt;
    let qemu = Path::new(program).file_name().is_some_and(|n| n.to_string_lossy().starts_with("qemu-system"));
    match std::fs::metadata("/dev/kvm") {
        Ok(m) if qemu => vec![nix::unistd::Gid::from_raw(m.gid())],
        _ => Vec::new(),
    }
}

/// In the machine's forked child: becomes uid and gid `id` for good, with
/// only `groups`, and can never gain a privilege again (no set-uid
/// program, no file capability). Checked: a child still root never execs.
fn become_guest(id: u32, groups: &[nix::unistd::Gid]) -> Result<(), String> {
    use nix::unistd::{Gid, Uid};
    let (uid, gid) = (Uid::from_raw(id), Gid::from_raw(id));
    nix::unistd::setgroups(groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    let ids = nix::unistd::getresuid().map_err(|e| e.to_string())?;
    if [ids.real, ids.effective, ids.saved].iter().any(|u| u.is_root()) {
        return Err("still root after setresuid".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use nix::errno::Errno;

    use super::*;
    use crate::host::syscall::{Call, RecordingSyscall};

    const NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
    const PRIVATE: MsFlags = MsFlags::MS_REC.union(MsFlags::MS_PRIVATE);

    /// A node's layers whose merged directory has the given entries.
    fn layers_with(dir: &Path, lower: &str, entries: &[&str]) -> RootLayers {
        let merged = dir.join("merged");
        for e in entries {
            let p = merged.join(e);
            if e.contains('.') || *e == "etc/hosts" {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, "").unwrap();
            } else {
                std::fs::create_dir_all(p).unwrap();
            }
        }
        std::fs::create_dir_all(&merged).unwrap();
        RootLayers { lower: lower.into(), upper: dir.join("upper"), work: dir.join("work"), merged }
    }

    fn mounts(sys: &RecordingSyscall) -> Vec<Call> {
        sys.calls_where(|c| matches!(c, Call::Mount(_)))
    }

    #[test]
    fn an_overlay_root_is_mounted_in_order_then_pivoted_into() {
        let dir = tempfile::tempdir().unwrap();
        let layers = layers_with(dir.path(), "/", &["etc/hosts", "dev", "tmp", "run", "proc", "sys"]);
        let sys = RecordingSyscall::default();
        set_up_node(&sys, "n1", Path::new("/run/lab/hosts"), Some(&layers), None, &[]).unwrap();
        let m = &layers.merged;
        let options = format!("lowerdir=/,upperdir={},workdir={}", layers.upper.display(), layers.work.display());
        let expected = vec![
            Call::Sethostname { name: "n1".into() },
            Call::mount(None, Path::new("/"), None, PRIVATE, None),
            Call::mount(Some("overlay"), m, Some("overlay"), MsFlags::empty(), Some(&options)),
            Call::mount(Some("/run/lab/hosts"), &m.join("etc/hosts"), None, MsFlags::MS_BIND, None),
            Call::mount(Some("/dev"), &m.join("dev"), None, MsFlags::MS_BIND | MsFlags::MS_REC, None),
            Call::mount(Some("tmpfs"), &m.join("tmp"), Some("tmpfs"), NODEV, Some("mode=1777")),
            Call::mount(Some("tmpfs"), &m.join("run"), Some("tmpfs"), NODEV, Some("mode=0755")),
            Call::mount(Some("proc"), &m.join("proc"), Some("proc"), NODEV | MsFlags::MS_NOEXEC, None),
            Call::mount(Some("sysfs"), &m.join("sys"), Some("sysfs"), NODEV | MsFlags::MS_NOEXEC, None),
            Call::Chdir { dir: m.clone() },
            Call::PivotRoot { new_root: ".".into(), put_old: ".".into() },
            Call::Umount { target: ".".into(), flags: MntFlags::MNT_DETACH },
            Call::Chdir { dir: "/".into() },
        ];
        assert_eq!(sys.calls(), expected);
    }

    #[test]
    fn a_btrfs_root_is_bound_not_overlaid_and_missing_mount_points_are_made_but_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let layers = layers_with(dir.path(), WHOLE_ROOT, &["proc"]);
        // An image's /tmp that is a link gets no mount (nor is replaced).
        std::os::unix::fs::symlink("/elsewhere", layers.merged.join("tmp")).unwrap();
        let sys = RecordingSyscall::default();
        overlay_root(&sys, &layers, None, Path::new("/hosts"), &[]).unwrap();
        let targets: Vec<PathBuf> = mounts(&sys)
            .into_iter()
            .map(|c| match c {
                Call::Mount(Mount { target, .. }) => target,
                _ => unreachable!(),
            })
            .collect();
        let m = &layers.merged;
        let made = ["etc/hosts", "dev", "run", "proc", "sys"].map(|d| m.join(d));
        assert_eq!(targets, [vec![PathBuf::from("/"), m.clone()], made.to_vec()].concat());
        assert!(std::fs::symlink_metadata(m.join("tmp")).unwrap().file_type().is_symlink());
        assert_eq!(
            mounts(&sys)[1],
            Call::mount(Some(layers.upper.to_str().unwrap()), &layers.merged, None, MsFlags::MS_BIND, None)
        );
    }

    #[test]
    fn a_failed_mount_is_named_and_nothing_after_it_is_tried() {
        let dir = tempfile::tempdir().unwrap();
        let layers = layers_with(dir.path(), "/", &["tmp", "proc", "sys"]);
        let sys = RecordingSyscall::default();
        sys.fail_when(|c| matches!(c, Call::Mount(Mount { fstype: Some(t), .. }) if t == "proc"), Errno::EPERM);
        let err = set_up_node(&sys, "n1", Path::new("/hosts"), Some(&layers), None, &[]).unwrap_err();
        let proc_dir = layers.merged.join("proc");
        match &err {
            HostError::Io { what, source } => {
                assert_eq!(what, &format!("mounting proc on {}", proc_dir.display()));
                assert_eq!(source.raw_os_error(), Some(Errno::EPERM as i32));
            }
            e => panic!("{e}"),
        }
        let last = sys.calls().last().cloned().unwrap();
        assert!(
            matches!(last, Call::Mount(Mount { target, .. }) if target == proc_dir),
            "sysfs, pivot_root: not tried"
        );
    }

    #[test]
    fn without_layers_the_hosts_file_is_bound_before_run_is_hidden() {
        let sys = RecordingSyscall::default();
        set_up_node(&sys, "n2", Path::new("/run/clonet/lab/hosts"), None, None, &[]).unwrap();
        let targets: Vec<String> = mounts(&sys)
            .into_iter()
            .map(|c| match c {
                Call::Mount(Mount { target, .. }) => target.display().to_string(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(targets, ["/", "/etc/hosts", "/tmp", "/run", "/proc", "/sys"]);
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::PivotRoot { .. })), "the host's root stays");
    }

    #[test]
    fn a_refused_host_name_stops_the_set_up_before_any_mount() {
        let sys = RecordingSyscall::default();
        sys.fail_nth(0, Errno::EINVAL);
        let err = set_up_node(&sys, "n3", Path::new("/hosts"), None, None, &[]).unwrap_err();
        assert!(err.to_string().starts_with("sethostname:"), "{err}");
        assert_eq!(sys.calls(), vec![Call::Sethostname { name: "n3".into() }]);
    }

    #[test]
    fn an_images_user_is_found_in_the_nodes_files() {
        let passwd = "root:x:0:0::/root:/bin/sh\nfrr:x:100:101::/var/run/frr:/bin/false\n";
        let group = "root:x:0:\nfrr:x:101:\nfrrvty:x:102:frr\n";
        assert_eq!(resolve_user("frr", passwd, group), Ok((100, 101)));
        assert_eq!(resolve_user("frr:frrvty", passwd, group), Ok((100, 102)));
        assert_eq!(resolve_user("100", passwd, group), Ok((100, 101)));
        assert_eq!(resolve_user("1000:1000", passwd, group), Ok((1000, 1000)));
        assert!(resolve_user("nobody", passwd, group).unwrap_err().contains("no user \"nobody\""));
        assert!(resolve_user("frr:staff", passwd, group).unwrap_err().contains("no group"));
    }

    #[test]
    fn joining_a_node_enters_its_mount_namespace_last_and_stops_at_the_first_refusal() {
        // Our own namespaces stand in for a node's: opening them needs no root.
        let me = std::process::id() as i32;
        let sys = RecordingSyscall::default();
        join_node(&sys, me).unwrap();
        let kinds = [
            CloneFlags::CLONE_NEWIPC,
            CloneFlags::CLONE_NEWUTS,
            CloneFlags::CLONE_NEWNET,
            CloneFlags::CLONE_NEWPID,
            CloneFlags::CLONE_NEWNS,
        ];
        let mut expected: Vec<Call> = kinds.iter().map(|&kind| Call::Setns { kind }).collect();
        expected.push(Call::Chdir { dir: "/".into() });
        assert_eq!(sys.calls(), expected);

        let refusing = RecordingSyscall::default();
        refusing.fail_when(|c| c == &Call::Setns { kind: CloneFlags::CLONE_NEWNET }, Errno::EPERM);
        let err = join_node(&refusing, me).unwrap_err();
        assert!(err.to_string().starts_with("setns net:"), "{err}");
        assert_eq!(refusing.calls().len(), 3, "ipc, uts, then net refused: {:?}", refusing.calls());
    }
}
