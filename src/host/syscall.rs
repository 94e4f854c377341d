//! The system calls behind `ns` nodes, as a trait: namespaces, mounts,
//! the file system a path is on, TAPs, rtnetlink, host programs and
//! signals. [`LinuxSyscall`] makes the calls; the recording fake
//! (`syscall_fake.rs`, tests only) notes them as typed [`Call`]s and fails
//! the ones a test names, so that the logic of `ns.rs`, `rtnl.rs` users
//! and `helpers.rs` (which mounts, in what order, which netlink requests,
//! what is undone when one fails) is tested without root.
//!
//! Plain file work in the run directory (creating directories, writing
//! the `lower` file) stays `std::fs`: it needs no privilege, and tests run
//! it on temporary directories.
//!
//! What stays outside the trait: the `fork` and `pre_exec` code in
//! `sys::proc`, which must be async-signal-safe and cannot call through a
//! trait object; and the helper's own process control (`prctl`,
//! `sigprocmask`, `waitpid`, `execvp`), which is how a helper runs, not
//! what it sets up.
//!
//! Owns: the list of host calls `ns` nodes make. Must not touch: policy
//! (which calls, in what order: that is the callers'), `unsafe` (the real
//! calls are nix's safe wrappers and `crate::sys`).
use std::ffi::OsString;
use std::io;
use std::net::IpAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use crate::vocab::addr::{Cidr, Prefix};
use crate::vocab::MacAddr;

#[cfg(test)]
pub use super::syscall_fake::{Call, RecordingSyscall};

/// `statfs`'s `f_type` of btrfs.
pub const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

/// The arguments of one mount(2) call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: Option<PathBuf>,
    pub target: PathBuf,
    pub fstype: Option<String>,
    pub flags: MsFlags,
    pub data: Option<String>,
}

impl Mount {
    pub fn new(
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Mount {
        Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        }
    }
}

/// The host calls of `ns` nodes. Every method is one call (or, for
/// `open_tap_in` and `open_netlink_in`, one object made inside a network
/// namespace), with the kernel's error.
pub trait Syscall: Send + Sync {
    /// Moves the calling process into new namespaces of the `flags` kinds.
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    /// Joins the namespace `fd` refers to, of kind `kind`.
    fn setns(&self, fd: BorrowedFd<'_>, kind: CloneFlags) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    fn mount(&self, mount: &Mount) -> io::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, dir: &Path) -> io::Result<()>;
    /// Makes an empty directory (`dir`) or file at `path` to mount on; one
    /// already there is fine.
    fn make_mountpoint(&self, path: &Path, dir: bool) -> io::Result<()>;
    /// The magic number of the file system `path` is on (`statfs`).
    fn filesystem_type(&self, path: &Path) -> io::Result<i64>;
    /// The device `path` is on (`stat`'s `st_dev`).
    fn device_of(&self, path: &Path) -> io::Result<u64>;
    /// Creates TAP `ifname` inside the network namespace `netns`; its fd
    /// and interface index. Closing the fd removes a TAP not yet persistent.
    fn open_tap_in(&self, netns: BorrowedFd<'_>, ifname: &str) -> io::Result<(OwnedFd, u32)>;
    /// An rtnetlink connection bound to the network namespace `netns`.
    fn open_netlink_in(&self, netns: BorrowedFd<'_>) -> io::Result<Box<dyn Netlink>>;
    /// Runs a host program to its end; a failure carries its stderr.
    fn run(&self, program: &str, args: &[OsString]) -> io::Result<()>;
    fn kill(&self, pid: i32, signal: Signal) -> io::Result<()>;
}

/// The rtnetlink requests of `ns` nodes, on one namespace's connection.
pub trait Netlink: Send {
    /// Sets a link's MAC and MTU (when given) and its up flag.
    fn set_link(&mut self, index: u32, mac: Option<MacAddr>, mtu: Option<u32>, up: bool) -> io::Result<()>;
    /// Adds an address to a link (the kernel adds the connected route).
    fn add_addr(&mut self, index: u32, cidr: Cidr) -> io::Result<()>;
    /// Adds a static route to `dst` via a gateway and/or out of a link.
    fn add_route(&mut self, dst: Prefix, via: Option<IpAddr>, oif: Option<u32>) -> io::Result<()>;
}

/// The real calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::unshare(flags)?)
    }

    fn setns(&self, fd: BorrowedFd<'_>, kind: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::setns(fd, kind)?)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        Ok(nix::unistd::sethostname(name)?)
    }

    fn mount(&self, m: &Mount) -> io::Result<()> {
        Ok(nix::mount::mount(m.source.as_deref(), &m.target, m.fstype.as_deref(), m.flags, m.data.as_deref())?)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        Ok(nix::mount::umount2(target, flags)?)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        Ok(nix::unistd::pivot_root(new_root, put_old)?)
    }

    fn chdir(&self, dir: &Path) -> io::Result<()> {
        Ok(nix::unistd::chdir(dir)?)
    }

    fn make_mountpoint(&self, path: &Path, dir: bool) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let made = if dir {
            std::fs::DirBuilder::new().mode(0o755).create(path)
        } else {
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(path).map(drop)
        };
        match made {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    fn filesystem_type(&self, path: &Path) -> io::Result<i64> {
        // The type's width differs between C libraries; magic numbers fit in 32 bits.
        Ok(nix::sys::statfs::statfs(path)?.filesystem_type().0 as i64)
    }

    fn device_of(&self, path: &Path) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(path)?.dev())
    }

    fn open_tap_in(&self, netns: BorrowedFd<'_>, ifname: &str) -> io::Result<(OwnedFd, u32)> {
        crate::sys::netns::in_netns(netns, || {
            let fd = crate::sys::tap::open_tap(ifname)?;
            let index = nix::net::if_::if_nametoindex(ifname)?;
            Ok((fd, index))
        })
    }

    fn open_netlink_in(&self, netns: BorrowedFd<'_>) -> io::Result<Box<dyn Netlink>> {
        let rtnl = crate::sys::netns::in_netns(netns, super::rtnl::Rtnl::open)?;
        Ok(Box::new(rtnl))
    }

    fn run(&self, program: &str, args: &[OsString]) -> io::Result<()> {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("running {program}: {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(())
    }

    fn kill(&self, pid: i32, signal: Signal) -> io::Result<()> {
        Ok(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)?)
    }
}
