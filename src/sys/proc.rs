//! Process plumbing that needs `fork` or `pre_exec`.
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult, Pid};

/// Makes `cmd` a node process: the leader of a process group of its own
/// (Ctrl-C at clonet's terminal must not reach a node; clonet decides what
/// an interrupt stops), killed with SIGKILL when the spawning thread dies
/// (a SIGKILLed clonet leaves no node process behind).
pub fn node_process(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0);
    // SAFETY: the hook runs between fork and exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            Ok(())
        })
    }
}

/// Hands `fd` (close-on-exec in clonet, so no other child inherits it)
/// to the program `cmd` runs as its descriptor `target` (3 or more),
/// open across `exec`.
pub fn pass_fd(cmd: &mut Command, fd: std::os::fd::RawFd, target: std::os::fd::RawFd) -> &mut Command {
    // SAFETY: the hook runs between fork and exec and only calls dup2(2),
    // which is async-signal-safe; `fd` stays open in the parent until the
    // spawn returns (the caller holds it), so the child's copy is valid.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto another number clears close-on-exec on the copy;
            // on the same number it does nothing, so clear it by hand.
            let done = if fd == target { libc::fcntl(fd, libc::F_SETFD, 0) } else { libc::dup2(fd, target) };
            if done < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// What `fork_process` returns in each of the two processes.
pub enum Forked {
    Parent(Pid),
    Child,
}

/// Forks the current process.
///
/// # Safety
///
/// The calling process must be single-threaded (the helper subcommands
/// `__ns-init` and `__ns-enter`, never the engine): in a threaded process
/// the child inherits locks that other threads held, and may deadlock on
/// the first allocation.
pub unsafe fn fork_process() -> io::Result<Forked> {
    // SAFETY: the caller promises a single-threaded process (see above).
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// Proof that the process had one thread when it was taken. A helper
/// program takes it first thing, while `/proc/self` is still the host's
/// (after it joins a node's mount namespace, `/proc` is the node's and has
/// no entry for it), and starts no thread after. It is neither `Send` nor
/// `Sync`, so it stays on the thread that checked.
pub struct SingleThreaded(std::marker::PhantomData<*const ()>);

impl SingleThreaded {
    /// The token, if the process has exactly one thread now.
    pub fn check() -> io::Result<SingleThreaded> {
        let threads = std::fs::read_dir("/proc/self/task")?.count();
        if threads != 1 {
            return Err(io::Error::other(format!("a helper needs a single thread, this process has {threads}")));
        }
        Ok(SingleThreaded(std::marker::PhantomData))
    }
}

/// Forks a process that holds the [`SingleThreaded`] token: the safe form
/// of [`fork_process`].
pub fn fork_single_threaded(_proof: &SingleThreaded) -> io::Result<Forked> {
    // SAFETY: the token shows the process had one thread when it was taken,
    // and the helpers that hold one start no thread (see `SingleThreaded`).
    unsafe { fork_process() }
}

/// A pidfd for `pid` (pidfd_open(2), Linux 5.3+): it becomes readable when
/// the process exits, whether or not it is our child, so a set of them in
/// one epoll says at once which of many processes died.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}
