//! The two helper programs clonet runs as itself (`/proc/self/exe`):
//!
//! - `__ns-init`: creates a node's namespaces (net, mount, UTS, IPC, PID)
//!   and becomes PID 1 inside them. When it dies the kernel kills every
//!   process of the node, so nothing a node started can outlive the lab.
//! - `__ns-enter`: joins a node's namespaces and runs one command there as
//!   a child, relaying its exit status, and killing its whole process group
//!   when asked to stop (timeout or interrupt).
//!
//! Both are single-threaded programs, which `fork` and `setns(CLONE_NEWNS)`
//! require.
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, execvp, sethostname, setpgid, Pid};

use crate::sys::proc::{fork_process, Forked};

/// Exit status of a helper that failed before running anything.
pub const HELPER_FAILED: i32 = 111;

/// `__ns-init` reports failures on its protocol pipe; the engine shows them.
fn die(what: &str, err: impl std::fmt::Display) -> ! {
    let _ = writeln!(std::io::stdout(), "error: {what}: {err}");
    std::process::exit(HELPER_FAILED)
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

/// Mounts the node's private view: its own /proc and /sys, a private /tmp
/// and /run, and the lab's hosts file as /etc/hosts.
fn private_mounts(hosts: &Path) -> nix::Result<()> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
    // Bind the hosts file before /run is hidden: it may live under /run.
    mount(Some(hosts), "/etc/hosts", none, MsFlags::MS_BIND, none)?;
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("tmpfs"), "/tmp", Some("tmpfs"), nodev, Some("mode=1777"))?;
    mount(Some("tmpfs"), "/run", Some("tmpfs"), nodev, Some("mode=0755"))?;
    mount(Some("proc"), "/proc", Some("proc"), nodev | MsFlags::MS_NOEXEC, none)?;
    mount(Some("sysfs"), "/sys", Some("sysfs"), nodev | MsFlags::MS_NOEXEC, none)?;
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
/// `private_mounts`, then pivots into it: writes land in the upper
/// directory and never reach the lower layers (the host's `/`).
fn overlay_root(layers: &RootLayers, hosts: &Path) -> nix::Result<()> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
    let m = &layers.merged;
    if layers.lower == WHOLE_ROOT {
        mount(Some(&layers.upper), m, none, MsFlags::MS_BIND, none)?;
    } else {
        let options =
            format!("lowerdir={},upperdir={},workdir={}", layers.lower, layers.upper.display(), layers.work.display());
        mount(Some("overlay"), m, Some("overlay"), MsFlags::empty(), Some(options.as_str()))?;
    }
    if m.join("etc/hosts").exists() {
        mount(Some(hosts), &m.join("etc/hosts"), none, MsFlags::MS_BIND, none)?;
    }
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if m.join("dev").is_dir() {
        mount(Some("/dev"), &m.join("dev"), none, MsFlags::MS_BIND | MsFlags::MS_REC, none)?;
    }
    for (dir, fstype, flags, data) in [
        ("tmp", "tmpfs", nodev, Some("mode=1777")),
        ("run", "tmpfs", nodev, Some("mode=0755")),
        ("proc", "proc", nodev | MsFlags::MS_NOEXEC, None),
        ("sys", "sysfs", nodev | MsFlags::MS_NOEXEC, None),
    ] {
        if m.join(dir).is_dir() {
            mount(Some(fstype), &m.join(dir), Some(fstype), flags, data)?;
        }
    }
    // pivot_root(".", ".") stacks the old root under the new one; detach it.
    chdir(m)?;
    nix::unistd::pivot_root(".", ".")?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)?;
    chdir("/")
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
pub fn ns_init_main(hostname: &str, hosts: &Path, root: Option<RootLayers>) -> ! {
    let flags = CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    if let Err(e) = unshare(flags) {
        die("unshare", e);
    }
    // Held open by this process only: the child sees it close if we die
    // before its PDEATHSIG is armed (a lab torn down while the node starts).
    let (parent_alive, held_by_parent) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => die("pipe", e),
    };
    match fork_process() {
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
            if let Err(e) = sethostname(hostname) {
                die("sethostname", e);
            }
            let mounted = match &root {
                Some(layers) => overlay_root(layers, hosts),
                None => private_mounts(hosts),
            };
            if let Err(e) = mounted {
                die("mount", e);
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

/// `clonet __ns-enter PID -- ARGV…`: runs ARGV inside the namespaces of
/// the node whose init has host pid PID, and exits with its status.
pub fn ns_enter_main(pid: i32, argv: &[String]) -> ! {
    if argv.is_empty() {
        enter_failed("ns-enter", "no command");
    }
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
    for (name, flag) in kinds {
        match File::open(format!("/proc/{pid}/ns/{name}")) {
            Ok(f) => fds.push((f, flag)),
            Err(e) => enter_failed(&format!("open /proc/{pid}/ns/{name}"), e),
        }
    }
    for (f, flag) in &fds {
        if let Err(e) = setns(f.as_fd(), *flag) {
            enter_failed("setns", e);
        }
    }
    drop(fds);
    if let Err(e) = chdir("/") {
        enter_failed("chdir", e);
    }
    let args: Vec<CString> = match argv.iter().map(|a| CString::new(a.as_bytes())).collect() {
        Ok(a) => a,
        Err(_) => enter_failed("ns-enter", "argument contains a NUL byte"),
    };
    let signals = blocked_signals();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        enter_failed("sigprocmask", e);
    }
    match fork_process() {
        Err(e) => enter_failed("fork", e),
        Ok(Forked::Child) => {
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&signals), None);
            let e = execvp(&args[0], &args).unwrap_err();
            eprintln!("clonet: cannot run {:?}: {e}", argv[0]);
            std::process::exit(127)
        }
        Ok(Forked::Parent(child)) => {
            // Also set it here: whichever of the two runs first wins the race.
            let _ = setpgid(child, child);
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
                        let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
                    }
                }
            }
        }
    }
}
