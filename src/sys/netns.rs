//! Running a closure inside another network namespace.
//!
//! `setns(CLONE_NEWNET)` only affects the calling thread, so the closure
//! runs on a short-lived thread: the caller's own namespace never changes
//! and sockets or TAPs created by the closure stay bound to the target
//! namespace after the thread ends.
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sched::{setns, CloneFlags};

/// Runs `work` on a fresh thread that has joined the network namespace `ns`.
pub fn in_netns<T, F>(ns: BorrowedFd<'_>, work: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> io::Result<T> + Send,
{
    let ns_fd: OwnedFd = ns.try_clone_to_owned()?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(ns_fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                work()
            })
            .join()
            .map_err(|_| io::Error::other("namespace worker thread panicked"))?
    })
}
