//! Host effects: everything that touches namespaces, processes, netlink
//! and raw sockets, behind the [`NodeHost`]/[`RunningNode`] traits.
//!
//! The engine only sees the traits. [`linux::LinuxHost`] is the real
//! implementation; [`fake::FakeHost`] records calls and hands out socket
//! pairs instead of TAPs, so the engine and the switch can be tested
//! together without root.
//!
//! Owns: node processes and their fds. Must not touch: the topology model,
//! the switch's internals, Rhai.
pub mod agent;
pub mod cgroup;
pub mod console;
pub mod deathwatch;
pub mod disks;
pub mod fake;
pub mod files;
pub mod guest;
pub mod helpers;
pub mod host_iface;
pub mod host_layer;
pub mod kvm;
pub mod limits;
pub mod linux;
pub mod machine_view;
pub mod mconsole;
pub mod nat;
pub mod ns;
pub mod ns_root;
pub mod ping;
pub mod plug;
pub mod qmp;
pub mod rtnl;
pub mod split_root;
pub mod syscall;
#[cfg(test)]
mod syscall_fake;
pub mod tapfwd;
pub mod uml;
pub mod userns;
pub mod vxlan;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::switch::port::PortIo;
use crate::vocab::addr::{Cidr, Route};
use crate::vocab::MacAddr;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// `why` is the whole story for a person; `source`, when there is one,
    /// is the error underneath, kept for programs that walk the chain.
    #[error("node {node:?} did not start: {why}")]
    Start {
        node: String,
        why: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    #[error("interrupted")]
    Interrupted,
    #[error("node {0:?} is no longer running (its init process died)")]
    Gone(String),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl HostError {
    /// A node that did not start, for a reason of clonet's own.
    pub fn start(node: impl Into<String>, why: impl Into<String>) -> HostError {
        HostError::Start { node: node.into(), why: why.into(), source: None }
    }

    /// A node that did not start because of `source`; the message says
    /// `context: source` (or just the source when there is no context).
    pub fn start_from(
        node: impl Into<String>,
        context: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> HostError {
        let why = if context.is_empty() { source.to_string() } else { format!("{context}: {source}") };
        HostError::Start { node: node.into(), why, source: Some(Box::new(source)) }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> HostError {
        let what = what.into();
        move |source| HostError::Io { what, source }
    }
}

/// Runs a host program to completion; a failure carries `what` and the
/// program's own complaint (its stderr).
pub fn run_command(cmd: &mut std::process::Command, what: &str) -> Result<(), HostError> {
    let out = cmd.output().map_err(HostError::io(format!("{what}: running {:?}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(HostError::Io {
            what: what.to_string(),
            source: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    Ok(())
}

/// What a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub lab: String,
    pub name: String,
    pub kind: crate::vocab::NodeKind,
    /// The lab's hosts file, bind-mounted as the node's `/etc/hosts`.
    pub hosts_file: PathBuf,
    /// The lab's run directory (sockets, COW files, console logs).
    pub run_dir: PathBuf,
    pub options: crate::vocab::NodeOptions,
    /// Where a machine's disk starts from.
    pub disk: DiskStart,
    /// What the node boots from, resolved by [`NodeHost::resolve_boot`]
    /// before it starts.
    pub boot: BootMedia,
    /// How a node that changes by itself (a plug whose clients come and
    /// go) tells the lab to look at its events; `None` where no one
    /// follows them (a dry build).
    pub notify: Option<Notifier>,
}

/// Something a node did by itself, for the lab to follow
/// ([`RunningNode::take_events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A client joined a plug: `add_iface(iface, …)` hands out its port.
    Joined { iface: String, peer: String },
    /// The client behind `iface` left (or its port closed).
    Left { iface: String },
    /// A client was turned away before it became a port.
    Refused { why: String },
}

/// Tells the lab that a node has events. Called on the node's own thread,
/// which passes its stop flag: the call gives up (the events wait for the
/// lab's next look) once the node is being stopped, so stopping it never
/// waits for the lab.
#[derive(Clone)]
pub struct Notifier(std::sync::Arc<dyn Fn(&std::sync::atomic::AtomicBool) + Send + Sync>);

impl Notifier {
    pub fn new(f: impl Fn(&std::sync::atomic::AtomicBool) + Send + Sync + 'static) -> Notifier {
        Notifier(std::sync::Arc::new(f))
    }

    pub fn notify(&self, stopping: &std::sync::atomic::AtomicBool) {
        (self.0)(stopping)
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

/// What a node boots from. Resolved before the node starts, so that
/// starting it builds nothing and looks nothing up: a missing image is
/// reported before any process runs, and a fake host can name fixed files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootMedia {
    /// An ns node runs the host's programs (or its `rootfs`): nothing to boot.
    Namespace,
    /// An ns node on a container image: its unpacked layers and config.
    Oci(Box<crate::image::oci::OciImage>),
    /// A uml node's base image, never written.
    Uml { image: PathBuf },
    /// A kvm node's kernel, initramfs, base disk and accelerator.
    Kvm(KvmBoot),
    /// A nat endpoint: passt, from the host's PATH.
    Nat,
    /// A host interface: nothing to boot.
    HostIface,
    /// A plug: nothing to boot.
    Plug,
    /// A VXLAN endpoint: a UDP socket.
    Vxlan,
}

/// What a kvm node boots: clonet's kernel and initramfs, a base disk
/// (clonet's own, or the node's `image`), never written, and the
/// accelerator (the node's `accel`, else the probed choice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    pub accel: crate::vocab::Accel,
}

/// Where a machine's disk starts from when it boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskStart {
    /// A new disk over the base image (a disk left by an earlier node of
    /// the same name is dropped).
    Fresh,
    /// The disk the node had when it stopped, if any (a restart).
    Keep,
    /// A new disk over a snapshot's layer (a clone, or a restore).
    From(PathBuf),
}

pub use crate::vocab::exec::{ExecOutput, ExecRequest};

/// A host process the lab owns, as recorded in the state file so that
/// `clonet clean` can find it after a SIGKILL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat`, to tell a reused pid apart.
    pub start_time: u64,
}

/// Ends a node's processes from another thread while a long command
/// (an exec, a ping) holds the node itself: the lab stops or deletes a
/// node, or ends, without waiting for that command, which then fails.
pub trait NodeKiller: Send {
    fn kill(&self);
}

/// The usual [`NodeKiller`]: SIGKILL to each recorded process still alive
/// and to the process group it leads (every node process leads one, see
/// `sys::proc::node_process`; a UML machine is several processes). A
/// record whose pid now names another process is left alone.
pub struct KillProcesses(pub Vec<ProcRecord>);

impl NodeKiller for KillProcesses {
    fn kill(&self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        for p in self.0.iter().filter(|p| is_alive(p)) {
            // ESRCH for a pid that leads no group: nothing to do.
            let _ = killpg(Pid::from_raw(p.pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
    }
}

/// Starts nodes, and moves their disks in and out of saved labs.
pub trait NodeHost: Send {
    /// Finds (building it the first time, if it is clonet's own) what node
    /// `node` of `kind` boots from; its errors say that the node did not
    /// start.
    fn resolve_boot(
        &self,
        node: &str,
        kind: NodeKind,
        options: &crate::vocab::NodeOptions,
    ) -> Result<BootMedia, HostError>;
    /// Starts a node from `spec`, whose `boot` came from `resolve_boot`.
    fn start_node(&self, spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError>;
    /// Told before a lab grows to `count` interfaces, so that host-wide
    /// limits they share (the kernel's neighbour tables) can make room.
    fn make_room_for_interfaces(&self, _count: usize) {}
    /// Frees what the lab's nodes kept outside the run directory (btrfs
    /// subvolumes, plug sockets), once they are all stopped, or after the
    /// lab was killed (`clonet clean`).
    fn release(&self, _run_dir: &std::path::Path) {}
    /// Where a stopped node's disk rests (see `disks`).
    fn disk_at_rest(&self, _kind: NodeKind, _run_dir: &std::path::Path, _node: &str) -> Option<PathBuf> {
        None
    }
    /// Copies a disk layer into a saved lab; returns its name there.
    fn export_disk(
        &self,
        _kind: NodeKind,
        _layer: &std::path::Path,
        _dest: &std::path::Path,
        _node: &str,
    ) -> Result<String, HostError> {
        Err(HostError::Unsupported("saving disks is not available on this host"))
    }
    /// Makes a saved disk a node's starting layer in this lab.
    fn import_disk(
        &self,
        _kind: NodeKind,
        _saved: &std::path::Path,
        _run_dir: &std::path::Path,
        _node: &str,
    ) -> Result<PathBuf, HostError> {
        Err(HostError::Unsupported("loading disks is not available on this host"))
    }
}

use crate::vocab::NodeKind;

/// A started node.
pub trait RunningNode: Send {
    /// The host processes that hold the node.
    fn processes(&self) -> Vec<ProcRecord>;
    /// Whether the node's main process still runs (a fake node always does).
    fn alive(&self) -> bool {
        self.processes().iter().all(is_alive)
    }
    /// The host pid of the node's init (handy for `nsenter -t`); waits for
    /// a node that is still starting.
    fn pid(&self) -> i32;
    /// The pid if known without waiting.
    fn pid_if_known(&self) -> Option<i32> {
        Some(self.pid())
    }
    /// Where to attach to the node's console: by default (namespace
    /// nodes, which have none) a shell entered through the init.
    fn console(&self) -> console::ConsoleTarget {
        console::ConsoleTarget::Namespace(self.pid())
    }
    /// Freezes the node's disk as it is now into a read-only layer named
    /// `name` in `dir`, and returns the layer's path; the node carries on.
    fn snapshot(&mut self, _dir: &std::path::Path, _name: &str) -> Result<PathBuf, HostError> {
        Err(HostError::Unsupported("snapshots of this node kind are not available yet"))
    }
    /// Like `snapshot`, and also saves the machine's RAM and device state
    /// under `name`, for `restore_memory`; returns the disk layer and the
    /// file holding the state.
    fn snapshot_memory(&mut self, _dir: &std::path::Path, _name: &str) -> Result<(PathBuf, PathBuf), HostError> {
        Err(HostError::Unsupported("memory snapshots are for kvm nodes"))
    }
    /// Drops the state `snapshot_memory(…, name)` saved.
    fn forget_memory(&mut self, _name: &str) -> Result<(), HostError> {
        Ok(())
    }
    /// Brings the running machine back to the RAM, device and disk state
    /// saved by `snapshot_memory(…, name)`: it resumes where it was.
    fn restore_memory(&mut self, _name: &str) -> Result<(), HostError> {
        Err(HostError::Unsupported("memory snapshots are for kvm nodes"))
    }
    /// Freezes the node or lets it go on.
    fn pause(&mut self, paused: bool) -> Result<(), HostError>;
    /// Tells the node its cable on `ifname` is plugged or not, where a
    /// switch port's carrier does not reach it (kvm, uml). `routes` are the
    /// node's static routes, for kinds that lose them on the way. A kind
    /// whose NIC reconnects on the way back up returns the new port, which
    /// replaces the old one in the switch. Nothing by default.
    fn set_link(&mut self, _ifname: &str, _up: bool, _routes: &[Route]) -> Result<Option<Box<dyn PortIo>>, HostError> {
        Ok(None)
    }
    /// Kind-specific facts worth showing (kvm: `accel=kvm|tcg`).
    fn detail(&self) -> Option<String> {
        None
    }
    /// Why the node is no longer alive, when it can say more than "its
    /// process exited" (an image's main program ended, with its status).
    fn death(&self) -> Option<String> {
        None
    }
    /// What the node did by itself since the last call (a plug's clients
    /// joining and leaving), oldest first. Nothing by default.
    fn take_events(&mut self) -> Vec<NodeEvent> {
        Vec::new()
    }
    /// Creates interface `ifname` with `mac`, up, and returns the port the
    /// switch should pump.
    fn add_iface(&mut self, ifname: &str, mac: MacAddr, mtu: u32) -> Result<Box<dyn PortIo>, HostError>;
    fn add_addr(&mut self, ifname: &str, cidr: Cidr) -> Result<(), HostError>;
    /// Adds a static route (the interface, if named, must exist).
    fn add_route(&mut self, route: &Route) -> Result<(), HostError>;
    /// Forgets an interface whose port was removed (its TAP is gone).
    fn forget_iface(&mut self, ifname: &str);
    fn exec(&mut self, req: &ExecRequest) -> Result<ExecOutput, HostError>;
    /// One ICMP echo exchange from inside the node; the RTT if answered.
    fn ping(&mut self, target: IpAddr, timeout: Duration) -> Result<Option<Duration>, HostError>;
    /// Kills every process of the node and releases its namespaces.
    fn stop(&mut self) -> Result<(), HostError>;
    /// What ends this node's processes while a long command holds it
    /// (see [`NodeKiller`]). By default, the processes it has now.
    fn killer(&self) -> Box<dyn NodeKiller> {
        Box::new(KillProcesses(self.processes()))
    }
    /// Starts stopping without waiting, so that a lab tearing down many
    /// nodes lets the kernel take their namespaces apart all at once;
    /// `stop` then finishes. Nothing by default.
    fn begin_stop(&mut self) {}
}

/// The kernel's ARP and NDP tables are shared by every network namespace,
/// and by default they refuse new entries beyond 1024 (`gc_thresh3`): a lab
/// of a few hundred linked namespaces fills them, and its first packets
/// then wait a second for a retried ARP ("neighbour table overflow"). This
/// raises the limits (never lowers them) to fit `interfaces` with room to
/// spare, and says so once. Only the initial namespace has these settings.
pub fn raise_neighbour_limits(interfaces: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RAISED_TO: AtomicUsize = AtomicUsize::new(0);
    // Each interface holds an entry for its peer, IPv4 and IPv6, and more on LANs.
    let wanted = (interfaces * 4).next_power_of_two().max(1024);
    if wanted <= RAISED_TO.load(Ordering::Relaxed) {
        return;
    }
    RAISED_TO.store(wanted, Ordering::Relaxed);
    for family in ["ipv4", "ipv6"] {
        let dir = format!("/proc/sys/net/{family}/neigh/default");
        let read =
            |k: &str| std::fs::read_to_string(format!("{dir}/{k}")).ok().and_then(|v| v.trim().parse::<usize>().ok());
        let Some(current) = read("gc_thresh3") else { continue };
        if current >= wanted {
            continue;
        }
        // thresh2 (the soft limit) first would exceed thresh3: hard first.
        let ok = [("gc_thresh3", wanted), ("gc_thresh2", wanted / 2)].iter().all(|(k, v)| {
            read(k).is_some_and(|c| c >= *v) || std::fs::write(format!("{dir}/{k}"), v.to_string()).is_ok()
        });
        if ok {
            eprintln!("clonet: raised the host's {family} neighbour table limit (net.{family}.neigh.default.gc_thresh3) from {current} to {wanted} for {interfaces} interfaces");
        } else {
            eprintln!("clonet: warning: {interfaces} interfaces may overflow the host's {family} neighbour table (net.{family}.neigh.default.gc_thresh3 = {current}); raise it to {wanted}");
        }
    }
}

/// Reads the start time of a process, or None if it does not exist.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// State letter and start time of a process, from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// Whether the process recorded in `rec` is still the same live process
/// (a zombie, dead but not yet reaped, is not alive).
pub fn is_alive(rec: &ProcRecord) -> bool {
    matches!(proc_stat(rec.pid), Some((state, start)) if start == rec.start_time && !matches!(state, 'Z' | 'X'))
}

/// Whether an executable file named `program` is in a directory of `PATH`.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_failure_says_why_and_keeps_the_error_underneath() {
        use std::error::Error;
        let e = HostError::start_from("r1", "/run/x.sock", io::Error::from(io::ErrorKind::AddrInUse));
        assert_eq!(
            e.to_string(),
            format!("node \"r1\" did not start: /run/x.sock: {}", io::Error::from(io::ErrorKind::AddrInUse))
        );
        let source = e.source().expect("kept").downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
        assert!(HostError::start("r1", "no image").source().is_none());
    }

    #[test]
    fn reads_our_own_start_time() {
        let me = std::process::id() as i32;
        let t = proc_start_time(me).expect("own stat");
        assert!(is_alive(&ProcRecord { pid: me, start_time: t }));
        assert!(!is_alive(&ProcRecord { pid: me, start_time: t + 1 }));
    }
}
