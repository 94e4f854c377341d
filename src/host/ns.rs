//! `ns` nodes on Linux: namespaces held by a `__ns-init` process, TAPs
//! created inside the node's netns, commands run through `__ns-enter`;
//! their copy-on-write roots (overlay layers on the lab's tmpfs, or btrfs
//! subvolumes); and [`LinuxHost`], the real [`NodeHost`].
//!
//! Every privileged call goes through the host's [`Syscall`] (mounts,
//! file system queries, TAPs, netlink, `btrfs` and `cp`, signals), so the
//! logic here runs unchanged on the recording fake in the tests below.
//!
//! Owns: ns nodes' processes, namespaces, roots and interfaces. Must not
//! touch: the topology model, the switch's internals, `unsafe` code.
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::syscall::{LinuxSyscall, Netlink, Syscall, BTRFS_SUPER_MAGIC};
use super::{
    proc_start_time, BootMedia, ExecOutput, ExecRequest, HostError, KvmBoot, NodeHost, NodeSpec, ProcRecord,
    RunningNode,
};
use crate::switch::port::{FdPort, PortIo};
use crate::sys::netns::in_netns;
use crate::sys::proc::node_process;
use crate::vocab::addr::{Cidr, Route};
use crate::vocab::MacAddr;

/// How long a node may take to set up its namespaces.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Output beyond this many bytes per stream is read and discarded.
const MAX_OUTPUT: usize = 64 << 20;
/// How long to keep reading a command's output after it exited.
const OUTPUT_LINGER: Duration = Duration::from_millis(100);

/// Reads one output stream of a command on its own thread.
struct Collector {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
    /// Set once the output was taken: later bytes (from a background
    /// process still holding the pipe) are read and thrown away.
    taken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Collector {
    fn start(stream: Option<Box<dyn Read + Send>>) -> Collector {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let (sink, stop) = (buf.clone(), taken.clone());
        std::thread::spawn(move || {
            if let Some(mut s) = stream {
                let mut chunk = [0u8; 16384];
                // Read to the end whatever happens, so the writer never dies
                // of SIGPIPE; keep at most MAX_OUTPUT bytes.
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    let mut b = sink.lock().unwrap_or_else(|p| p.into_inner());
                    let room = MAX_OUTPUT.saturating_sub(b.len());
                    b.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
            let _ = tx.send(());
        });
        Collector { buf, done, taken }
    }

    /// Waits for end of stream until `deadline`, then takes what was read.
    fn finish(self, deadline: Instant) -> Vec<u8> {
        let _ = self.done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        self.taken.store(true, std::sync::atomic::Ordering::Relaxed);
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The real host: Linux namespaces. Its clones share what they found
/// (clonet's images), so a process that runs many labs checks them once.
#[derive(Clone)]
pub struct LinuxHost {
    images: ImageCache,
    sys: Arc<dyn Syscall>,
}

impl Default for LinuxHost {
    fn default() -> LinuxHost {
        LinuxHost { images: ImageCache::default(), sys: Arc::new(LinuxSyscall) }
    }
}

/// The program clonet runs its helpers from. `/proc/self/exe` keeps
/// working even if the binary on disk is replaced while a lab runs.
fn self_exe() -> Command {
    Command::new("/proc/self/exe")
}

impl NodeHost for LinuxHost {
    fn make_room_for_interfaces(&self, count: usize) {
        super::raise_neighbour_limits(count);
    }

    fn release(&self, run_dir: &std::path::Path) {
        release_storage(&*self.sys, run_dir);
    }

    fn disk_at_rest(
        &self,
        kind: crate::vocab::NodeKind,
        run_dir: &std::path::Path,
        node: &str,
    ) -> Option<std::path::PathBuf> {
        Some(super::disks::at_rest(kind, run_dir, node)).filter(|p| p.exists())
    }

    fn export_disk(
        &self,
        kind: crate::vocab::NodeKind,
        layer: &std::path::Path,
        dest: &std::path::Path,
        node: &str,
    ) -> Result<String, HostError> {
        super::disks::export(kind, layer, dest, node)
    }

    fn import_disk(
        &self,
        kind: crate::vocab::NodeKind,
        saved: &std::path::Path,
        run_dir: &std::path::Path,
        node: &str,
    ) -> Result<std::path::PathBuf, HostError> {
        super::disks::import(&*self.sys, kind, saved, run_dir, node)
    }

    fn resolve_boot(
        &self,
        node: &str,
        kind: crate::vocab::NodeKind,
        options: &crate::vocab::NodeOptions,
    ) -> Result<BootMedia, HostError> {
        let fail = |why: String| HostError::start(node.to_string(), why);
        let no_image = |path: &std::path::Path| fail(format!("no image at {}", path.display()));
        match kind {
            crate::vocab::NodeKind::Ns => Ok(BootMedia::Namespace),
            crate::vocab::NodeKind::Uml => {
                let image = match &options.image {
                    Some(path) => path.clone(),
                    None => self.images.busybox().map(|i| i.path).map_err(|e| fail(e.to_string()))?,
                };
                if !image.is_file() {
                    return Err(no_image(&image));
                }
                Ok(BootMedia::Uml { image })
            }
            crate::vocab::NodeKind::Kvm => {
                if let Some(path) = options.image.as_ref().filter(|p| !p.is_file()) {
                    return Err(no_image(path));
                }
                let built = self.images.kvm().map_err(|e| fail(e.to_string()))?;
                let accel = match options.accel {
                    Some(chosen) => chosen,
                    None => {
                        let cache = crate::image::cache_dir().join(crate::image::ACCEL_CACHE);
                        super::kvm::choose_accel(&built.kernel, &built.initrd, &cache)
                    }
                };
                Ok(BootMedia::Kvm(KvmBoot {
                    kernel: built.kernel,
                    initrd: built.initrd,
                    disk: options.image.clone().unwrap_or(built.disk),
                    accel,
                }))
            }
        }
    }

    fn start_node(&self, spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError> {
        let wrong_media = || {
            HostError::start(spec.name.clone(), format!("{:?} is no boot medium of a {} node", spec.boot, spec.kind))
        };
        match spec.kind {
            crate::vocab::NodeKind::Ns => start_ns(&self.sys, spec),
            crate::vocab::NodeKind::Uml => {
                let BootMedia::Uml { image } = &spec.boot else { return Err(wrong_media()) };
                super::uml::start(spec, image, spec.options.mem_mb.map_or(super::uml::DEFAULT_MEM_MB, |m| m.get()))
            }
            crate::vocab::NodeKind::Kvm => {
                let BootMedia::Kvm(boot) = &spec.boot else { return Err(wrong_media()) };
                super::kvm::start(
                    spec,
                    boot,
                    spec.options.mem_mb.map_or(super::kvm::DEFAULT_MEM_MB, |m| m.get()),
                    spec.options.cpus.map_or(1, |c| c.get()),
                )
            }
        }
    }
}

/// clonet's own images, built or checked on first use and then kept for
/// the life of the host value (and its clones). Checking the busybox
/// recipe reads and hashes megabytes (busybox, iperf3 and its libraries)
/// and runs `ldd`: done once, not for every node.
#[derive(Clone, Default)]
struct ImageCache {
    busybox: std::sync::Arc<Mutex<Option<crate::image::ImageInfo>>>,
    kvm: std::sync::Arc<Mutex<Option<crate::image::kvm::KvmImage>>>,
}

impl ImageCache {
    /// The busybox image (uml nodes boot it; kvm nodes' disk is made from it).
    fn busybox(&self) -> Result<crate::image::ImageInfo, crate::image::ImageError> {
        let mut found = self.busybox.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(info) = &*found {
            return Ok(info.clone());
        }
        let recipe = crate::image::default_recipe()?;
        let info = crate::image::build(&recipe, &crate::image::cache_dir(), false, &mut |_| {})?.0;
        *found = Some(info.clone());
        Ok(info)
    }

    /// The kvm kernel, initramfs and disk.
    fn kvm(&self) -> Result<crate::image::kvm::KvmImage, crate::image::ImageError> {
        let mut found = self.kvm.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(images) = &*found {
            return Ok(images.clone());
        }
        let rootfs = self.busybox()?;
        let images = crate::image::kvm::build(&crate::image::cache_dir(), &rootfs, false, &mut |_| {})?.0;
        *found = Some(images.clone());
        Ok(images)
    }
}

/// Where an ns node's root layers live: `<storage>/<node>/`.
fn root_dir(storage: &std::path::Path, spec: &NodeSpec) -> std::path::PathBuf {
    storage.join(&spec.name)
}

/// The link in a run directory to the lab's btrfs layer storage, so that
/// teardown and `clonet clean` find its subvolumes.
const BTRFS_LINK: &str = "ns-btrfs";

/// The directory the user chose for btrfs layer storage
/// (`CLONET_STORAGE_DIR`), if any.
fn storage_dir_setting() -> Option<std::path::PathBuf> {
    std::env::var_os("CLONET_STORAGE_DIR").map(std::path::PathBuf::from)
}

/// The lab's btrfs storage for ns nodes made from a `rootfs`, when
/// `storage_dir` (`CLONET_STORAGE_DIR`) is on btrfs:
/// `<storage dir>/clonet-<lab>`. There, as in the original Cloonix, a
/// node's root is a writable snapshot of a subvolume holding the rootfs,
/// and a snapshot is a read-only one.
fn btrfs_storage(
    sys: &dyn Syscall,
    spec: &NodeSpec,
    storage_dir: Option<&std::path::Path>,
) -> Option<std::path::PathBuf> {
    spec.options.rootfs.as_ref()?;
    let dir = storage_dir?;
    let fstype = sys.filesystem_type(dir).ok()?;
    (fstype == BTRFS_SUPER_MAGIC).then(|| dir.join(format!("clonet-{}", spec.lab)))
}

/// Runs `btrfs ARGS…`; a failure is `what`, with a hint when the program
/// is missing.
fn btrfs(sys: &dyn Syscall, args: &[&std::ffi::OsStr], what: &str) -> Result<(), HostError> {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.to_os_string()).collect();
    sys.run("btrfs", &args).map_err(|source| {
        let hint = if source.kind() == std::io::ErrorKind::NotFound { " (install btrfs-progs)" } else { "" };
        HostError::Io { what: format!("{what}{hint}"), source }
    })
}

/// `cp -a --reflink=auto FROM TO`: a copy that keeps owners, modes,
/// xattrs and (on a file system that shares extents) no data twice.
fn copy_tree(sys: &dyn Syscall, from: &std::ffi::OsStr, to: &std::path::Path, what: &str) -> Result<(), HostError> {
    let args = ["-a".into(), "--reflink=auto".into(), from.to_os_string(), to.as_os_str().to_os_string()];
    sys.run("cp", &args).map_err(HostError::io(what))
}

/// Deletes the btrfs layer storage a run directory links to (teardown,
/// `clonet clean`): every subvolume, read-only snapshots included.
fn release_storage(sys: &dyn Syscall, run_dir: &std::path::Path) {
    let Ok(storage) = std::fs::read_link(run_dir.join(BTRFS_LINK)) else { return };
    let mut subvolumes = Vec::new();
    for e in std::fs::read_dir(&storage).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name == ".snapshots" {
            subvolumes.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|s| s.path()));
        } else if name.starts_with(".base-") {
            subvolumes.push(p);
        } else {
            subvolumes.push(p.join("upper"));
        }
    }
    // Clones first: a subvolume goes before the one it was snapshotted from
    // only by chance, and btrfs does not mind the order.
    for s in subvolumes.iter().filter(|s| s.exists()) {
        let _ = btrfs(sys, &["subvolume".as_ref(), "delete".as_ref(), s.as_os_str()], "deleting a subvolume");
    }
    let _ = std::fs::remove_dir_all(&storage);
    let _ = std::fs::remove_file(run_dir.join(BTRFS_LINK));
}

/// The read-only base subvolume of `rootfs` in `storage`, made on first use.
fn btrfs_base(
    sys: &dyn Syscall,
    storage: &std::path::Path,
    rootfs: &std::path::Path,
) -> Result<std::path::PathBuf, HostError> {
    let text = rootfs.display().to_string();
    let base = storage.join(format!(".base-{:016x}", crate::vocab::fnv1a(&[text.as_bytes()])));
    if base.is_dir() {
        return Ok(base);
    }
    btrfs(sys, &["subvolume".as_ref(), "create".as_ref(), base.as_os_str()], "making the base subvolume")?;
    let mut src = rootfs.as_os_str().to_os_string();
    src.push("/.");
    // A half-filled base would be taken for a whole one next time: drop it.
    if let Err(e) = copy_tree(sys, &src, &base, &format!("copying {text}")) {
        let _ = btrfs(sys, &["subvolume".as_ref(), "delete".as_ref(), base.as_os_str()], "cleaning up");
        return Err(e);
    }
    btrfs(
        sys,
        &["property".as_ref(), "set".as_ref(), base.as_os_str(), "ro".as_ref(), "true".as_ref()],
        "freezing the base subvolume",
    )?;
    Ok(base)
}

/// The lab's storage for ns layers, `<run dir>/ns`: a tmpfs of the lab's
/// own. Overlayfs refuses layers nested inside one another, and the
/// host's `/` (the usual lower layer) holds the run directory; on a file
/// system of their own the upper and snapshot layers are not inside it.
pub(crate) fn layer_storage(sys: &dyn Syscall, run_dir: &std::path::Path) -> Result<std::path::PathBuf, HostError> {
    let dir = run_dir.join("ns");
    std::fs::create_dir_all(&dir).map_err(HostError::io("creating the layer storage"))?;
    let dev = |p: &std::path::Path| sys.device_of(p).ok();
    if dev(&dir) == dev(run_dir) {
        let flags = nix::mount::MsFlags::MS_NOSUID;
        let source = std::path::Path::new("clonet-layers");
        sys.mount(Some(source), &dir, Some("tmpfs"), flags, Some("mode=0700"))
            .map_err(HostError::io("mounting the layer storage"))?;
    }
    Ok(dir)
}

/// Where snapshots of ns nodes go: beside the layers they stack on.
fn snapshot_storage(upper: &std::path::Path) -> std::path::PathBuf {
    upper.parent().and_then(|n| n.parent()).map(|s| s.join(".snapshots")).unwrap_or_default()
}

/// Prepares the node's copy-on-write root: its upper and work directories
/// (kept across a restart, new otherwise) and the lower layers, recorded
/// in `lower` beside them: the base (`rootfs` or the host's `/`), under
/// the layers of the snapshot the node was cloned or restored from.
///
/// `storage_dir` is `CLONET_STORAGE_DIR`: on btrfs, it holds the roots of
/// nodes made from a `rootfs` (see `btrfs_storage`).
fn prepare_root(
    sys: &dyn Syscall,
    spec: &NodeSpec,
    storage_dir: Option<&std::path::Path>,
) -> Result<super::helpers::RootLayers, HostError> {
    if let Some(storage) = btrfs_storage(sys, spec, storage_dir) {
        return prepare_btrfs_root(sys, spec, &storage);
    }
    let dir = root_dir(&layer_storage(sys, &spec.run_dir)?, spec);
    let lower_file = dir.join("lower");
    let base = match &spec.options.rootfs {
        Some(r) => {
            let r = std::fs::canonicalize(r).map_err(HostError::io(format!("rootfs {}", r.display())))?;
            let text = r.display().to_string();
            if !r.is_dir() || text.contains([':', ',', '\n']) {
                return Err(HostError::start(spec.name.clone(), format!("rootfs {text} is not a usable directory")));
            }
            text
        }
        None => "/".to_string(),
    };
    let lower = match &spec.disk {
        super::DiskStart::Keep if lower_file.is_file() => {
            std::fs::read_to_string(&lower_file).map_err(HostError::io("reading the root's layers"))?
        }
        super::DiskStart::From(layer) => {
            let parents = std::fs::read_to_string(layer.join("lower")).map_err(HostError::io("reading a snapshot"))?;
            format!("{}:{parents}", layer.join("upper").display())
        }
        _ => base,
    };
    if spec.disk != super::DiskStart::Keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let layers = super::helpers::RootLayers {
        lower: lower.trim().to_string(),
        upper: dir.join("upper"),
        work: dir.join("work"),
        merged: dir.join("merged"),
    };
    for d in [&layers.upper, &layers.work, &layers.merged] {
        std::fs::create_dir_all(d).map_err(HostError::io(format!("creating {}", d.display())))?;
    }
    std::fs::write(&lower_file, &layers.lower).map_err(HostError::io("recording the root's layers"))?;
    Ok(layers)
}

/// A node's root as a btrfs subvolume: a writable snapshot of the base
/// (new), of a snapshot (clone, restore), or the one it had (restart).
fn prepare_btrfs_root(
    sys: &dyn Syscall,
    spec: &NodeSpec,
    storage: &std::path::Path,
) -> Result<super::helpers::RootLayers, HostError> {
    std::fs::create_dir_all(storage).map_err(HostError::io("creating the btrfs layer storage"))?;
    let link = spec.run_dir.join(BTRFS_LINK);
    if std::fs::read_link(&link).is_err() {
        std::os::unix::fs::symlink(storage, &link).map_err(HostError::io("recording the btrfs layer storage"))?;
    }
    let rootfs = spec.options.rootfs.as_ref().expect("btrfs storage is for rootfs nodes");
    let rootfs = std::fs::canonicalize(rootfs).map_err(HostError::io(format!("rootfs {}", rootfs.display())))?;
    let dir = root_dir(storage, spec);
    let layers = super::helpers::RootLayers {
        lower: super::helpers::WHOLE_ROOT.to_string(),
        upper: dir.join("upper"),
        work: dir.join("work"),
        merged: dir.join("merged"),
    };
    let source = match &spec.disk {
        super::DiskStart::Keep if layers.upper.is_dir() => None,
        super::DiskStart::From(layer) => Some(layer.clone()),
        _ => Some(btrfs_base(sys, storage, &rootfs)?),
    };
    if let Some(source) = source {
        if layers.upper.is_dir() {
            let old = layers.upper.as_os_str();
            btrfs(sys, &["subvolume".as_ref(), "delete".as_ref(), old], "dropping an old root")?;
        }
        std::fs::create_dir_all(&dir).map_err(HostError::io("creating a node's root"))?;
        btrfs(
            sys,
            &["subvolume".as_ref(), "snapshot".as_ref(), source.as_os_str(), layers.upper.as_os_str()],
            "snapshotting the node's root",
        )?;
    }
    for d in [&layers.work, &layers.merged] {
        std::fs::create_dir_all(d).map_err(HostError::io(format!("creating {}", d.display())))?;
    }
    std::fs::write(dir.join("lower"), &layers.lower).map_err(HostError::io("recording the root's layers"))?;
    Ok(layers)
}

fn start_ns(sys: &Arc<dyn Syscall>, spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError> {
    let layers = prepare_root(&**sys, spec, storage_dir_setting().as_deref())?;
    let mut cmd = self_exe();
    cmd.arg("__ns-init").arg(&spec.name).arg(&spec.hosts_file);
    cmd.arg(&layers.lower).arg(&layers.upper).arg(&layers.work).arg(&layers.merged);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    node_process(&mut cmd);
    let mut holder = cmd.spawn().map_err(HostError::io("spawning the node's init"))?;
    let stdout = holder.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // `pid N` (from the parent) and `ready` (from the child) may
        // arrive in either order; stop after both, or an error.
        let mut seen = 0;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let error = line.starts_with("error");
            seen += 1;
            if tx.send(line).is_err() || error || seen == 2 {
                break;
            }
        }
    });
    let Some(holder_rec) =
        proc_start_time(holder.id() as i32).map(|t| ProcRecord { pid: holder.id() as i32, start_time: t })
    else {
        let _ = holder.kill();
        let _ = holder.wait();
        return Err(HostError::start(spec.name.clone(), "its init exited at once"));
    };
    // The node's init sets itself up (namespaces, root, mounts) while the
    // engine goes on: `node()` returns now, and the first use of the node
    // waits for it, so a loop of `node()` calls starts them side by side.
    Ok(Box::new(NsNode {
        name: spec.name.clone(),
        sys: sys.clone(),
        holder,
        holder_rec,
        started: OnceLock::new(),
        pending: Mutex::new(Some(Pending { lines: rx })),
        failure: OnceLock::new(),
        root: layers,
    }))
}

/// A node whose init has not said yet that it is ready.
struct Pending {
    lines: mpsc::Receiver<String>,
}

/// What a node has once its init is ready.
struct Started {
    /// The node's PID 1.
    init: ProcRecord,
    netns: OwnedFd,
    net: Mutex<NodeNet>,
}

/// A node's interfaces, as the engine names them, and the netlink
/// connection that configures them inside the node's network namespace.
struct NodeNet {
    netlink: Box<dyn Netlink>,
    ifindex: HashMap<String, u32>,
}

impl NodeNet {
    /// Connects to the namespace `netns` and brings its loopback up.
    fn open(sys: &dyn Syscall, netns: std::os::fd::BorrowedFd<'_>) -> std::io::Result<NodeNet> {
        const LOOPBACK: u32 = 1;
        let mut netlink = sys.open_netlink_in(netns)?;
        netlink.set_link(LOOPBACK, None, None, true)?;
        Ok(NodeNet { netlink, ifindex: HashMap::new() })
    }

    /// Creates TAP `ifname` in `netns`, with `mac` and `mtu`, up; its fd.
    /// An interface that could not be configured is not kept: its TAP goes
    /// with its fd, and the name stays unknown to `add_addr`/`add_route`.
    fn add_iface(
        &mut self,
        sys: &dyn Syscall,
        netns: std::os::fd::BorrowedFd<'_>,
        node: &str,
        ifname: &str,
        mac: MacAddr,
        mtu: u32,
    ) -> Result<OwnedFd, HostError> {
        let what = |step: &str| format!("creating {node}:{ifname}: {step}");
        let (fd, index) = sys.open_tap_in(netns, ifname).map_err(HostError::io(what("opening its TAP")))?;
        self.netlink
            .set_link(index, Some(mac), Some(mtu), true)
            .map_err(HostError::io(what("setting its MAC and MTU and bringing it up")))?;
        self.ifindex.insert(ifname.to_string(), index);
        Ok(fd)
    }

    fn add_addr(&mut self, node: &str, ifname: &str, cidr: Cidr) -> Result<(), HostError> {
        let what = format!("adding {cidr} to {node}:{ifname}");
        let index = *self
            .ifindex
            .get(ifname)
            .ok_or_else(|| HostError::Io { what: what.clone(), source: std::io::ErrorKind::NotFound.into() })?;
        self.netlink.add_addr(index, cidr).map_err(HostError::io(what))
    }

    fn add_route(&mut self, node: &str, route: &Route) -> Result<(), HostError> {
        let what = format!("adding route to {} on {node}", route.dst);
        let oif = match &route.dev {
            None => None,
            Some(dev) => Some(*self.ifindex.get(dev).ok_or_else(|| HostError::Io {
                what: what.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("no interface {dev}")),
            })?),
        };
        self.netlink.add_route(route.dst, route.via, oif).map_err(HostError::io(what))
    }

    fn forget(&mut self, ifname: &str) {
        self.ifindex.remove(ifname);
    }
}

/// Waits for the init's `pid N` and `ready`, then opens its namespace and
/// brings its loopback up. The time allowed runs from the first wait, not
/// from the spawn: a lab may start a thousand nodes before it uses one. An
/// init that dies ends the wait at once (its pipe closes).
fn finish_start(sys: &dyn Syscall, pending: &Pending) -> Result<Started, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut init_pid = None;
    let mut ready = false;
    while !(ready && init_pid.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match pending.lines.recv_timeout(left) {
            Ok(line) if line == "ready" => ready = true,
            Ok(line) => match line.strip_prefix("pid ").and_then(|p| p.parse::<i32>().ok()) {
                Some(pid) => init_pid = Some(pid),
                None => return Err(line),
            },
            Err(_) => return Err("no answer from the node's init".into()),
        }
    }
    let init_pid = init_pid.expect("loop exits only with a pid");
    let netns = File::open(format!("/proc/{init_pid}/ns/net"))
        .map(OwnedFd::from)
        .map_err(|e| format!("opening its netns: {e}"))?;
    let net = NodeNet::open(sys, netns.as_fd()).map_err(|e| format!("configuring its netns: {e}"))?;
    let init = proc_start_time(init_pid)
        .map(|start_time| ProcRecord { pid: init_pid, start_time })
        .ok_or("its init exited during start-up")?;
    Ok(Started { init, netns, net: Mutex::new(net) })
}

pub struct NsNode {
    name: String,
    sys: Arc<dyn Syscall>,
    /// The `__ns-init` parent; its child is the node's PID 1, which dies
    /// with it (PDEATHSIG), so it alone is watched and recorded until the
    /// init is known.
    holder: Child,
    holder_rec: ProcRecord,
    /// Set once the init is ready (see `started`).
    started: OnceLock<Started>,
    pending: Mutex<Option<Pending>>,
    /// Why the start failed, for every later use.
    failure: OnceLock<String>,
    /// The layers of its copy-on-write root.
    root: super::helpers::RootLayers,
}

impl NsNode {
    /// The started node, waiting for its init the first time.
    fn started(&self) -> Result<&Started, HostError> {
        if let Some(s) = self.started.get() {
            return Ok(s);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pending.take() {
            match finish_start(&*self.sys, &p) {
                Ok(s) => {
                    let _ = self.started.set(s);
                }
                Err(why) => {
                    // The init dies with its holder.
                    let _ = self.sys.kill(self.holder_rec.pid, Signal::SIGKILL);
                    let _ = self.failure.set(why);
                }
            }
        }
        self.started.get().ok_or_else(|| {
            HostError::start(
                self.name.clone(),
                self.failure.get().cloned().unwrap_or_else(|| "it never started".into()),
            )
        })
    }

    fn net(&self) -> Result<std::sync::MutexGuard<'_, NodeNet>, HostError> {
        Ok(self.started()?.net.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl RunningNode for NsNode {
    fn processes(&self) -> Vec<ProcRecord> {
        let mut procs = vec![self.holder_rec.clone()];
        procs.extend(self.started.get().map(|s| s.init.clone()));
        procs
    }

    fn alive(&self) -> bool {
        // A start that failed says why, once, before the node is marked stopped.
        if self.started.get().is_none() && !super::is_alive(&self.holder_rec) {
            if let Err(e) = self.started() {
                eprintln!("clonet: {e}");
            }
        }
        self.processes().iter().all(super::is_alive)
    }

    fn pid_if_known(&self) -> Option<i32> {
        self.started.get().map(|s| s.init.pid)
    }

    fn pid(&self) -> i32 {
        // A node that failed to start: its holder, which is what remains.
        self.started().map_or(self.holder_rec.pid, |s| s.init.pid)
    }

    fn add_iface(&mut self, ifname: &str, mac: MacAddr, mtu: u32) -> Result<Box<dyn PortIo>, HostError> {
        let started = self.started()?;
        let mut net = started.net.lock().unwrap_or_else(|p| p.into_inner());
        let fd = net.add_iface(&*self.sys, started.netns.as_fd(), &self.name, ifname, mac, mtu)?;
        Ok(Box::new(FdPort::persistent_tap(fd).map_err(HostError::io("making a TAP persistent"))?))
    }

    fn add_addr(&mut self, ifname: &str, cidr: Cidr) -> Result<(), HostError> {
        self.net()?.add_addr(&self.name, ifname, cidr)
    }

    fn add_route(&mut self, route: &Route) -> Result<(), HostError> {
        self.net()?.add_route(&self.name, route)
    }

    fn forget_iface(&mut self, ifname: &str) {
        // A node that never started has no interfaces to forget.
        if let Some(s) = self.started.get() {
            s.net.lock().unwrap_or_else(|p| p.into_inner()).forget(ifname);
        }
    }

    fn exec(&mut self, req: &ExecRequest) -> Result<ExecOutput, HostError> {
        let init = self.started()?.init.clone();
        if !super::is_alive(&init) {
            return Err(HostError::Gone(self.name.clone()));
        }
        let mut cmd = self_exe();
        cmd.arg("__ns-enter").arg(init.pid.to_string()).arg("--").args(&req.argv);
        cmd.env("CLONET_NODE", &self.name);
        cmd.stdin(if req.stdin.is_empty() { Stdio::null() } else { Stdio::piped() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        node_process(&mut cmd);
        let mut child = cmd.spawn().map_err(HostError::io(format!("running a command in {}", self.name)))?;
        if let Some(mut stdin) = child.stdin.take() {
            let data = req.stdin.clone();
            std::thread::spawn(move || stdin.write_all(&data));
        }
        let out = Collector::start(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let err = Collector::start(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let status = wait_with_deadline(&*self.sys, &mut child, req.timeout.get())?;
        // A background process started by the command may keep the pipes
        // open; take what arrived shortly after the command itself ended.
        let linger = Instant::now() + OUTPUT_LINGER;
        let stdout = out.finish(linger);
        let stderr = err.finish(linger);
        Ok(ExecOutput { status, stdout, stderr })
    }

    fn ping(&mut self, target: IpAddr, timeout: Duration) -> Result<Option<Duration>, HostError> {
        in_netns(self.started()?.netns.as_fd(), || super::ping::echo(target, timeout, Duration::from_millis(200)))
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    HostError::Interrupted
                } else {
                    HostError::io(format!("pinging {target} from {}", self.name))(e)
                }
            })
    }

    fn snapshot(&mut self, _dir: &std::path::Path, name: &str) -> Result<std::path::PathBuf, HostError> {
        // The node's own layer is its upper directory: copy it (with the
        // overlay's whiteouts and xattrs) while the node holds still, and
        // note the layers it sits on. Clones stack on it without copying.
        // It stays in the layer storage, where overlayfs accepts it.
        let layer = snapshot_storage(&self.root.upper).join(name);
        if self.root.lower == super::helpers::WHOLE_ROOT {
            // A btrfs root: an atomic, read-only snapshot of its subvolume.
            std::fs::create_dir_all(snapshot_storage(&self.root.upper))
                .map_err(HostError::io("creating a snapshot"))?;
            self.pause(true)?;
            let made = btrfs(
                &*self.sys,
                &[
                    "subvolume".as_ref(),
                    "snapshot".as_ref(),
                    "-r".as_ref(),
                    self.root.upper.as_os_str(),
                    layer.as_os_str(),
                ],
                "snapshotting a btrfs root",
            );
            self.pause(false)?;
            made?;
            return Ok(layer);
        }
        std::fs::create_dir_all(&layer).map_err(HostError::io("creating a snapshot"))?;
        self.pause(true)?;
        let what = format!("copying the root of {}", self.name);
        let copied = copy_tree(&*self.sys, self.root.upper.as_os_str(), &layer.join("upper"), &what);
        let resumed = self.pause(false);
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&layer);
            return Err(e);
        }
        resumed?;
        std::fs::write(layer.join("lower"), &self.root.lower).map_err(HostError::io("writing a snapshot"))?;
        Ok(layer)
    }

    fn pause(&mut self, paused: bool) -> Result<(), HostError> {
        // Every process of the node shares its PID namespace.
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let ours = ns(&self.started()?.init.pid.to_string()).ok_or_else(|| HostError::Gone(self.name.clone()))?;
        let signal = if paused { Signal::SIGSTOP } else { Signal::SIGCONT };
        for entry in std::fs::read_dir("/proc").map_err(HostError::io("reading /proc"))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Ok(pid) = name.parse::<i32>() {
                if ns(&name).as_ref() == Some(&ours) {
                    let _ = self.sys.kill(pid, signal);
                }
            }
        }
        Ok(())
    }

    fn begin_stop(&mut self) {
        // Killing PID 1 of the node makes the kernel kill every process in
        // it. Only if it still is our init: a dead init's pid may be reused.
        match self.started.get() {
            Some(s) if super::is_alive(&s.init) => {
                let _ = self.sys.kill(s.init.pid, Signal::SIGKILL);
            }
            Some(_) => {}
            // Still starting: its init dies with the holder.
            None => {
                let _ = self.holder.kill();
            }
        }
    }

    fn stop(&mut self) -> Result<(), HostError> {
        self.begin_stop();
        // The holder reaps init and then exits by itself; give it a moment
        // so init is not left a zombie for the system to collect.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.holder.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.holder.kill();
        self.holder.wait().map_err(HostError::io(format!("waiting for node {}", self.name)))?;
        Ok(())
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        if let Ok(None) = self.holder.try_wait() {
            let _ = self.stop();
        }
    }
}

/// Waits for `child` until `timeout`, polling with a short back-off. On
/// timeout or interrupt it asks `__ns-enter` to kill the command's process
/// group, then makes sure it is gone.
fn wait_with_deadline(sys: &dyn Syscall, child: &mut Child, timeout: Duration) -> Result<i32, HostError> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                use std::os::unix::process::ExitStatusExt;
                return Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
            }
            Ok(None) => {}
            Err(e) => return Err(HostError::io("waiting for a command")(e)),
        }
        let interrupted = crate::interrupt::requested();
        if interrupted || start.elapsed() >= timeout {
            let _ = sys.kill(child.id() as i32, Signal::SIGTERM);
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_millis(500) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(if interrupted { HostError::Interrupted } else { HostError::Timeout(timeout) });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use nix::errno::Errno;
    use nix::mount::MsFlags;

    use super::*;
    use crate::host::syscall::{Call, RecordingSyscall};
    use crate::host::DiskStart;
    use crate::vocab::{NodeKind, NodeOptions};

    fn spec(run_dir: &Path, rootfs: Option<&Path>, disk: DiskStart) -> NodeSpec {
        NodeSpec {
            lab: "lab".into(),
            name: "n1".into(),
            kind: NodeKind::Ns,
            hosts_file: run_dir.join("hosts"),
            run_dir: run_dir.to_path_buf(),
            options: NodeOptions { rootfs: rootfs.map(Path::to_path_buf), ..NodeOptions::default() },
            disk,
            boot: BootMedia::Namespace,
        }
    }

    fn runs(sys: &RecordingSyscall) -> Vec<Call> {
        sys.calls_where(|c| matches!(c, Call::Run { .. }))
    }

    #[test]
    fn the_layer_storage_gets_its_own_tmpfs_unless_it_already_is_a_file_system() {
        let run = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let dir = layer_storage(&sys, run.path()).unwrap();
        let tmpfs = Call::mount(Some("clonet-layers"), &dir, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=0700"));
        assert_eq!(
            sys.calls(),
            vec![Call::DeviceOf { path: dir.clone() }, Call::DeviceOf { path: run.path().into() }, tmpfs]
        );
        let mounted = RecordingSyscall::default();
        mounted.set_device(&dir, 42);
        layer_storage(&mounted, run.path()).unwrap();
        assert!(!mounted.calls().iter().any(|c| matches!(c, Call::Mount { .. })), "{:?}", mounted.calls());
    }

    #[test]
    fn an_overlay_root_stacks_on_the_host_or_on_the_snapshot_it_starts_from() {
        let run = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let fresh = prepare_root(&sys, &spec(run.path(), None, DiskStart::Fresh), None).unwrap();
        let node = run.path().join("ns/n1");
        assert_eq!((fresh.lower.as_str(), &fresh.upper), ("/", &node.join("upper")));
        assert!(fresh.work.is_dir() && fresh.merged.is_dir());
        assert_eq!(std::fs::read_to_string(node.join("lower")).unwrap(), "/");
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::FilesystemType { .. } | Call::Run { .. })));

        let snap = run.path().join("ns/.snapshots/s1");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("lower"), "/x/upper:/").unwrap();
        std::fs::write(node.join("upper/kept"), "").unwrap();
        let cloned = prepare_root(&sys, &spec(run.path(), None, DiskStart::From(snap.clone())), None).unwrap();
        assert_eq!(cloned.lower, format!("{}:/x/upper:/", snap.join("upper").display()));
        assert!(!node.join("upper/kept").exists(), "a clone starts from an empty upper layer");
        std::fs::write(node.join("upper/kept"), "").unwrap();
        let restarted = prepare_root(&sys, &spec(run.path(), None, DiskStart::Keep), None).unwrap();
        assert_eq!(restarted.lower, cloned.lower, "a restart keeps its layers");
        assert!(node.join("upper/kept").exists(), "and its writes");
    }

    #[test]
    fn a_rootfs_node_on_btrfs_storage_is_a_snapshot_of_a_frozen_base() {
        let (run, storage, rootfs) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sys = RecordingSyscall::default();
        sys.set_filesystem(BTRFS_SUPER_MAGIC);
        let spec = spec(run.path(), Some(rootfs.path()), DiskStart::Fresh);
        let layers = prepare_root(&sys, &spec, Some(storage.path())).unwrap();
        let lab = storage.path().join("clonet-lab");
        let rootfs = std::fs::canonicalize(rootfs.path()).unwrap();
        let base = lab.join(format!(".base-{:016x}", crate::vocab::fnv1a(&[rootfs.display().to_string().as_bytes()])));
        let upper = lab.join("n1/upper");
        assert_eq!((layers.lower.as_str(), &layers.upper), (super::super::helpers::WHOLE_ROOT, &upper));
        assert_eq!(
            runs(&sys),
            vec![
                Call::run("btrfs", &[&"subvolume", &"create", &base]),
                Call::run("cp", &[&"-a", &"--reflink=auto", &format!("{}/.", rootfs.display()), &base]),
                Call::run("btrfs", &[&"property", &"set", &base, &"ro", &"true"]),
                Call::run("btrfs", &[&"subvolume", &"snapshot", &base, &upper]),
            ]
        );
        assert_eq!(std::fs::read_link(run.path().join(BTRFS_LINK)).unwrap(), lab, "clean finds it");
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::Mount { .. })), "no layer tmpfs on btrfs");
    }

    #[test]
    fn a_base_subvolume_whose_copy_failed_is_deleted_and_no_root_is_made() {
        let (run, storage, rootfs) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sys = RecordingSyscall::default();
        sys.set_filesystem(BTRFS_SUPER_MAGIC);
        sys.fail_when(|c| matches!(c, Call::Run { program, .. } if program == "cp"), Errno::ENOSPC);
        let spec = spec(run.path(), Some(rootfs.path()), DiskStart::Fresh);
        let err = prepare_root(&sys, &spec, Some(storage.path())).unwrap_err();
        assert!(err.to_string().starts_with("copying "), "{err}");
        let calls = runs(&sys);
        let Call::Run { args: created, .. } = &calls[0] else { unreachable!() };
        assert_eq!(calls.len(), 3, "create, cp, then only the undo: {calls:?}");
        assert_eq!(calls[2], Call::run("btrfs", &[&"subvolume", &"delete", &created[2]]));
    }

    #[test]
    fn missing_btrfs_progs_are_named_in_the_error() {
        let sys = RecordingSyscall::default();
        sys.fail_nth(0, Errno::ENOENT);
        let err = btrfs(&sys, &["subvolume".as_ref()], "making the base subvolume").unwrap_err();
        assert!(err.to_string().starts_with("making the base subvolume (install btrfs-progs):"), "{err}");
    }

    #[test]
    fn released_storage_loses_every_subvolume_then_its_directory_and_link() {
        let (run, storage) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in ["n1/upper", "n2/upper", ".snapshots/s1", ".base-0123"] {
            std::fs::create_dir_all(storage.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink(storage.path(), run.path().join(BTRFS_LINK)).unwrap();
        let sys = RecordingSyscall::default();
        release_storage(&sys, run.path());
        let mut deleted: Vec<PathBuf> = runs(&sys)
            .into_iter()
            .map(|c| match c {
                Call::Run { program, args } if program == "btrfs" && args[..2] == ["subvolume", "delete"] => {
                    PathBuf::from(&args[2])
                }
                c => panic!("{c:?}"),
            })
            .collect();
        deleted.sort();
        let s = storage.path();
        let mut expected = vec![s.join(".base-0123"), s.join(".snapshots/s1"), s.join("n1/upper"), s.join("n2/upper")];
        expected.sort();
        assert_eq!(deleted, expected);
        assert!(!storage.path().exists() && std::fs::symlink_metadata(run.path().join(BTRFS_LINK)).is_err());
        let untouched = RecordingSyscall::default();
        release_storage(&untouched, run.path());
        assert!(untouched.calls().is_empty(), "a run directory without btrfs storage");
    }

    /// A placeholder for a node's netns: the fake never joins it.
    fn netns() -> OwnedFd {
        File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn an_interface_is_created_configured_and_up_before_its_address_and_route() {
        let sys = RecordingSyscall::default();
        let ns = netns();
        let mut net = NodeNet::open(&sys, ns.as_fd()).unwrap();
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        net.add_iface(&sys, ns.as_fd(), "n1", "eth0", mac, 1400).unwrap();
        net.add_addr("n1", "eth0", "10.0.0.2/24".parse().unwrap()).unwrap();
        let route = Route {
            dst: "10.9.0.0/16".parse().unwrap(),
            via: Some("10.0.0.1".parse().unwrap()),
            dev: Some("eth0".into()),
        };
        net.add_route("n1", &route).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::OpenNetlink,
                Call::SetLink { index: 1, mac: None, mtu: None, up: true },
                Call::OpenTap { ifname: "eth0".into() },
                Call::SetLink { index: 2, mac: Some(mac), mtu: Some(1400), up: true },
                Call::AddAddr { index: 2, cidr: "10.0.0.2/24".parse().unwrap() },
                Call::AddRoute { dst: route.dst, via: route.via, oif: Some(2) },
            ]
        );
    }

    #[test]
    fn an_interface_that_could_not_be_brought_up_is_forgotten() {
        let sys = RecordingSyscall::default();
        let ns = netns();
        let mut net = NodeNet::open(&sys, ns.as_fd()).unwrap();
        sys.fail_when(|c| matches!(c, Call::SetLink { index: 2, .. }), Errno::EBUSY);
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let err = net.add_iface(&sys, ns.as_fd(), "n1", "eth0", mac, 1500).unwrap_err();
        match &err {
            HostError::Io { what, source } => {
                assert_eq!(what, "creating n1:eth0: setting its MAC and MTU and bringing it up");
                assert_eq!(source.raw_os_error(), Some(Errno::EBUSY as i32));
            }
            e => panic!("{e}"),
        }
        let before = sys.calls().len();
        let addr = net.add_addr("n1", "eth0", "10.0.0.2/24".parse().unwrap()).unwrap_err();
        assert!(addr.to_string().starts_with("adding 10.0.0.2/24 to n1:eth0"), "{addr}");
        let route = Route { dst: "0.0.0.0/0".parse().unwrap(), via: None, dev: Some("eth0".into()) };
        let route = net.add_route("n1", &route).unwrap_err();
        assert!(route.to_string().contains("no interface eth0"), "{route}");
        assert_eq!(sys.calls().len(), before, "no netlink request for an interface that is not there");
    }

    #[test]
    fn boot_media_of_a_missing_image_say_the_node_did_not_start() {
        let host = LinuxHost::default();
        let options = NodeOptions { image: Some("/nonexistent.img".into()), ..NodeOptions::default() };
        for kind in [NodeKind::Uml, NodeKind::Kvm] {
            let err = host.resolve_boot("m", kind, &options).unwrap_err();
            assert_eq!(err.to_string(), "node \"m\" did not start: no image at /nonexistent.img", "{kind}");
        }
        assert_eq!(host.resolve_boot("n", NodeKind::Ns, &options).unwrap(), BootMedia::Namespace);
    }
}
