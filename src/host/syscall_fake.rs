//! A recording [`Syscall`]: every call becomes a typed [`Call`] in one
//! ordered log (netlink requests included), nothing reaches the kernel,
//! and a test can make the N-th call, or every call a predicate picks,
//! fail with an errno. Tests only.
//!
//! Owns: the log and the answers it gives (file system types, devices,
//! interface indexes). Must not touch: the host (it makes no call).
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::net::IpAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use super::syscall::{Mount, Netlink, Syscall};
use crate::vocab::addr::{Cidr, Prefix};
use crate::vocab::MacAddr;

/// One host call, as made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Unshare { flags: CloneFlags },
    Setns { kind: CloneFlags },
    Sethostname { name: String },
    Mount(Mount),
    Umount { target: PathBuf, flags: MntFlags },
    PivotRoot { new_root: PathBuf, put_old: PathBuf },
    Chdir { dir: PathBuf },
    MakeMountpoint { path: PathBuf, dir: bool },
    FilesystemType { path: PathBuf },
    DeviceOf { path: PathBuf },
    OpenTap { ifname: String },
    OpenNetlink,
    SetLink { index: u32, mac: Option<MacAddr>, mtu: Option<u32>, up: bool },
    AddAddr { index: u32, cidr: Cidr },
    AddRoute { dst: Prefix, via: Option<IpAddr>, oif: Option<u32> },
    Run { program: String, args: Vec<String> },
    Kill { pid: i32, signal: Signal },
}

impl Call {
    /// A mount, for short expectations.
    pub fn mount(
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Call {
        Call::Mount(Mount::new(source.map(Path::new), target, fstype, flags, data))
    }

    /// A host program run with `args`.
    pub fn run(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Call {
        Call::Run {
            program: program.to_string(),
            args: args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect(),
        }
    }
}

/// Which calls fail, and how.
enum Failure {
    /// The call at this position in the log (0 is the first).
    Nth(usize, Errno),
    /// Every call the predicate picks.
    When(Box<dyn Fn(&Call) -> bool + Send + Sync>, Errno),
}

#[derive(Default)]
struct Log {
    calls: Vec<Call>,
    failures: Vec<Failure>,
    filesystem: Option<i64>,
    devices: HashMap<PathBuf, u64>,
    last_ifindex: u32,
}

/// The recording fake. Clones share one log, so a test keeps one while
/// the code under test holds another (or a netlink connection from it).
#[derive(Clone, Default)]
pub struct RecordingSyscall {
    log: Arc<Mutex<Log>>,
}

impl RecordingSyscall {
    /// Every call so far, in order, failed ones included.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls so far that `pick` keeps.
    pub fn calls_where(&self, pick: impl Fn(&Call) -> bool) -> Vec<Call> {
        self.calls().into_iter().filter(|c| pick(c)).collect()
    }

    /// Makes the `n`-th call from now on (0: the next one) fail with `errno`.
    pub fn fail_nth(&self, n: usize, errno: Errno) {
        let mut log = self.lock();
        let at = log.calls.len() + n;
        log.failures.push(Failure::Nth(at, errno));
    }

    /// Makes every later call that `pick` keeps fail with `errno`.
    pub fn fail_when(&self, pick: impl Fn(&Call) -> bool + Send + Sync + 'static, errno: Errno) {
        self.lock().failures.push(Failure::When(Box::new(pick), errno));
    }

    /// Says every path is on the file system of magic number `fstype`
    /// (otherwise ext4).
    pub fn set_filesystem(&self, fstype: i64) {
        self.lock().filesystem = Some(fstype);
    }

    /// Says `path` is on device `dev` (otherwise every path is on device 1).
    pub fn set_device(&self, path: &Path, dev: u64) {
        self.lock().devices.insert(path.to_path_buf(), dev);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs `call` and says whether it fails.
    fn record(&self, call: Call) -> io::Result<()> {
        let mut log = self.lock();
        let at = log.calls.len();
        let failure = log.failures.iter().find_map(|f| match f {
            Failure::Nth(n, errno) if *n == at => Some(*errno),
            Failure::When(pick, errno) if pick(&call) => Some(*errno),
            _ => None,
        });
        log.calls.push(call);
        match failure {
            Some(errno) => Err(errno.into()),
            None => Ok(()),
        }
    }
}

/// An fd the code under test may own and close: `/dev/null`.
fn placeholder_fd() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

impl Syscall for RecordingSyscall {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        self.record(Call::Unshare { flags })
    }

    fn setns(&self, _fd: BorrowedFd<'_>, kind: CloneFlags) -> io::Result<()> {
        self.record(Call::Setns { kind })
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::Sethostname { name: name.to_string() })
    }

    fn mount(&self, mount: &Mount) -> io::Result<()> {
        self.record(Call::Mount(mount.clone()))
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        self.record(Call::Umount { target: target.to_path_buf(), flags })
    }

    fn make_mountpoint(&self, path: &Path, dir: bool) -> io::Result<()> {
        self.record(Call::MakeMountpoint { path: path.to_path_buf(), dir })
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(Call::PivotRoot { new_root: new_root.to_path_buf(), put_old: put_old.to_path_buf() })
    }

    fn chdir(&self, dir: &Path) -> io::Result<()> {
        self.record(Call::Chdir { dir: dir.to_path_buf() })
    }

    fn filesystem_type(&self, path: &Path) -> io::Result<i64> {
        self.record(Call::FilesystemType { path: path.to_path_buf() })?;
        const EXT4_SUPER_MAGIC: i64 = 0xef53;
        Ok(self.lock().filesystem.unwrap_or(EXT4_SUPER_MAGIC))
    }

    fn device_of(&self, path: &Path) -> io::Result<u64> {
        self.record(Call::DeviceOf { path: path.to_path_buf() })?;
        Ok(self.lock().devices.get(path).copied().unwrap_or(1))
    }

    fn open_tap_in(&self, _netns: BorrowedFd<'_>, ifname: &str) -> io::Result<(OwnedFd, u32)> {
        self.record(Call::OpenTap { ifname: ifname.to_string() })?;
        let mut log = self.lock();
        // Index 1 is the loopback.
        log.last_ifindex = log.last_ifindex.max(1) + 1;
        Ok((placeholder_fd()?, log.last_ifindex))
    }

    fn open_netlink_in(&self, _netns: BorrowedFd<'_>) -> io::Result<Box<dyn Netlink>> {
        self.record(Call::OpenNetlink)?;
        Ok(Box::new(self.clone()))
    }

    fn run(&self, program: &str, args: &[OsString]) -> io::Result<()> {
        self.record(Call::Run {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        })
    }

    fn kill(&self, pid: i32, signal: Signal) -> io::Result<()> {
        self.record(Call::Kill { pid, signal })
    }
}

/// The fake's netlink connection logs into the same log as its calls.
impl Netlink for RecordingSyscall {
    fn set_link(&mut self, index: u32, mac: Option<MacAddr>, mtu: Option<u32>, up: bool) -> io::Result<()> {
        self.record(Call::SetLink { index, mac, mtu, up })
    }

    fn add_addr(&mut self, index: u32, cidr: Cidr) -> io::Result<()> {
        self.record(Call::AddAddr { index, cidr })
    }

    fn add_route(&mut self, dst: Prefix, via: Option<IpAddr>, oif: Option<u32>) -> io::Result<()> {
        self.record(Call::AddRoute { dst, via, oif })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_logged_in_order_and_the_named_ones_fail() {
        let sys = RecordingSyscall::default();
        sys.fail_nth(1, Errno::EPERM);
        sys.fail_when(|c| matches!(c, Call::Chdir { .. }), Errno::ENOENT);
        assert!(sys.sethostname("a").is_ok());
        let second = sys.umount(Path::new("/x"), MntFlags::MNT_DETACH).unwrap_err();
        assert_eq!(second.raw_os_error(), Some(Errno::EPERM as i32));
        assert!(sys.chdir(Path::new("/")).is_err() && sys.chdir(Path::new("/y")).is_err());
        assert!(sys.sethostname("b").is_ok(), "the n-th failure fires once");
        assert_eq!(sys.calls().len(), 5, "failed calls are logged too");
        assert_eq!(sys.calls()[1], Call::Umount { target: "/x".into(), flags: MntFlags::MNT_DETACH });
    }
}
