//! `ns` nodes on Linux: namespaces held by a `__ns-init` process, TAPs
//! created inside the node's netns, commands run through `__ns-enter`.
//! Their roots are `ns_root`'s; the host that starts them is `linux`'s.
//!
//! Every privileged call goes through the host's [`Syscall`] (TAPs,
//! netlink, signals), so the interface logic here runs unchanged on the
//! recording fake in the tests below.
//!
//! Owns: ns nodes' processes, namespaces and interfaces. Must not touch:
//! the topology model, the switch's internals, `unsafe` code.
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::ns_root::{btrfs, copy_tree, prepare_root, snapshot_storage, storage_dir_setting};
use super::syscall::{Netlink, Syscall};
use super::{proc_start_time, ExecOutput, ExecRequest, HostError, NodeSpec, ProcRecord, RunningNode};
use crate::switch::port::{FdPort, PortIo};
use crate::sys::netns::in_netns;
use crate::sys::proc::node_process;
use crate::vocab::addr::{Cidr, Route};
use crate::vocab::MacAddr;

/// How long a node may take to set up its namespaces.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep reading a command's output after it exited.
const OUTPUT_LINGER: Duration = Duration::from_millis(100);

/// Reads one output stream of a command on its own thread, keeping at
/// most a limit of it.
struct Collector {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// Set when bytes beyond the limit arrived.
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: mpsc::Receiver<()>,
    /// Set once the output was taken: later bytes (from a background
    /// process still holding the pipe) are read and thrown away.
    taken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Collector {
    fn start(stream: Option<Box<dyn Read + Send>>, limit: usize) -> Collector {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let (sink, stop, cut_seen) = (buf.clone(), taken.clone(), cut.clone());
        std::thread::spawn(move || {
            if let Some(mut s) = stream {
                let mut chunk = [0u8; 16384];
                // Read to the end whatever happens, so the writer never dies
                // of SIGPIPE; keep at most `limit` bytes.
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    let mut b = sink.lock().unwrap_or_else(|p| p.into_inner());
                    let room = limit.saturating_sub(b.len());
                    if n > room {
                        cut_seen.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    b.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
            let _ = tx.send(());
        });
        Collector { buf, cut, done, taken }
    }

    /// Waits for end of stream until `deadline`, then takes what was read
    /// and whether more was cut.
    fn finish(self, deadline: Instant) -> (Vec<u8>, bool) {
        let _ = self.done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        self.taken.store(true, std::sync::atomic::Ordering::Relaxed);
        let bytes = std::mem::take(&mut *self.buf.lock().unwrap_or_else(|p| p.into_inner()));
        (bytes, self.cut.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The program clonet runs its helpers from. `/proc/self/exe` keeps
/// working even if the binary on disk is replaced while a lab runs.
fn self_exe() -> Command {
    Command::new("/proc/self/exe")
}

pub(super) fn start_ns(sys: &Arc<dyn Syscall>, spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError> {
    let layers = prepare_root(&**sys, spec, storage_dir_setting().as_deref())?;
    let mut cmd = self_exe();
    cmd.arg("__ns-init");
    if layers.lower.rsplit(':').next() == Some("/") && super::userns::in_user_namespace() {
        let plan = split_plan(&layers);
        cmd.arg("--split-plan").arg(serde_json::to_string(&plan).unwrap_or_default());
    }
    if !spec.options.binds.is_empty() {
        cmd.arg("--binds").arg(serde_json::to_string(&spec.options.binds).unwrap_or_default());
    }
    let (groups, limits_note) = node_groups(spec);
    for f in groups.iter().flat_map(|g| g.procs_files()) {
        cmd.arg("--cgroup").arg(f);
    }
    cmd.arg(&spec.name).arg(&spec.hosts_file);
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
        env: node_env(spec),
        main: main_program(spec),
        main_status: Arc::new(Mutex::new(MainStatus::NotStarted)),
        main_rec: OnceLock::new(),
        groups,
        limits_note,
        image_cwd: match &spec.boot {
            super::BootMedia::Oci(image) => image.config.working_dir.clone(),
            _ => None,
        },
    }))
}

/// The plan of a root over the host's `/` in the lab's user namespace,
/// with the lab's copy of the host's files. The lab's first such node
/// starts the copy on a thread of its own and every node's init waits for
/// it (`split_root::wait_for_host_layer`), so the nodes a script starts
/// meanwhile are set up side by side with it. A copy that cannot be built
/// is said once and left empty: the nodes still start, with the host's
/// files as they are (not theirs to change).
fn split_plan(layers: &super::helpers::RootLayers) -> super::split_root::SplitPlan {
    let host_layer = super::ns_root::host_layer_of(&layers.upper);
    // The lab's first node claims the build with a file in the lab's own
    // storage, which goes with the lab: a later lab of the same name (in
    // `clonet test`, say) builds its own.
    let claimed = std::fs::File::create_new(host_layer.with_extension("claimed")).is_ok();
    if claimed {
        let at = host_layer.clone();
        let build = move || match super::host_layer::host_layer(&super::host_layer::cache_dir()) {
            Ok((version, left_out)) => {
                if left_out > 0 {
                    eprintln!("clonet: the copy of the host's files left {left_out} out (too many or too large)");
                }
                if let Err(e) = std::os::unix::fs::symlink(&version, &at) {
                    eprintln!("clonet: linking the copy of the host's files into the lab: {e}");
                    let _ = std::fs::create_dir(&at);
                }
            }
            Err(e) => {
                eprintln!("clonet: copying the host's files for the lab: {e}; nodes keep them as they are");
                let _ = std::fs::create_dir(&at);
            }
        };
        if std::thread::Builder::new().name("clonet-hostcopy".into()).spawn(build).is_err() {
            let _ = std::fs::create_dir(&host_layer);
        }
    }
    super::split_root::SplitPlan { top: super::split_root::host_top(), host_layer: Some(host_layer) }
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

/// The environment of every command run in a node: its image's `Env`,
/// then its own `env` over it.
fn node_env(spec: &NodeSpec) -> std::collections::BTreeMap<String, String> {
    let mut env = std::collections::BTreeMap::new();
    if let super::BootMedia::Oci(image) = &spec.boot {
        env.extend(image.config.env.iter().cloned());
    }
    env.extend(spec.options.env.clone());
    env
}

/// What an image's node runs as its main program: `cmd` if given, else
/// the image's Entrypoint and Cmd, unless that is a shell alone (which,
/// with no terminal, would end at once: a container image's way of
/// saying "nothing to run").
fn main_program(spec: &NodeSpec) -> Option<MainProgram> {
    let super::BootMedia::Oci(image) = &spec.boot else { return None };
    let argv = spec.options.cmd.clone().unwrap_or_else(|| image.config.main_program());
    let shells = ["sh", "bash", "ash", "dash", "zsh", "ksh"];
    let base = |a: &str| a.rsplit('/').next().unwrap_or(a).to_string();
    let shell_alone = match argv.as_slice() {
        [] => true,
        [one] => shells.contains(&base(one).as_str()),
        [one, flag] => shells.contains(&base(one).as_str()) && matches!(flag.as_str(), "-l" | "-i" | "--login"),
        _ => false,
    };
    if shell_alone {
        return None;
    }
    Some(MainProgram {
        argv,
        run_as: super::helpers::RunAs { cwd: image.config.working_dir.clone(), user: image.config.user.clone() },
        log: spec.run_dir.join(format!("{}.main.log", spec.name)),
    })
}

/// The control groups of a node with `mem` or `cpus`, and a note for
/// `info().detail`: the limits, or why they do not hold (said once on
/// stderr too). The groups' directories are recorded in the run directory
/// for `clonet clean`.
fn node_groups(spec: &NodeSpec) -> (Option<super::cgroup::NodeGroups>, Option<String>) {
    let limits = super::cgroup::Limits {
        mem_bytes: spec.options.mem_mb.map(|m| u64::from(m.get()) << 20),
        cpus: spec.options.cpus.map(|c| c.get()),
    };
    if !limits.any() {
        return (None, None);
    }
    let mut said = Vec::new();
    if let Some(m) = spec.options.mem_mb {
        said.push(format!("mem {} MiB", m.get()));
    }
    if let Some(c) = spec.options.cpus {
        said.push(format!("cpus {}", c.get()));
    }
    let said = said.join(", ");
    match super::cgroup::NodeGroups::create(&spec.lab, &spec.name, &limits) {
        Ok(groups) => {
            groups.record(&spec.run_dir, &spec.name);
            (Some(groups), Some(format!("limits: {said}")))
        }
        Err(why) => {
            eprintln!("clonet: node {}: {said} not enforced: {why}", spec.name);
            (None, Some(format!("limits: {said} not enforced ({why})")))
        }
    }
}

/// An image's main program.
struct MainProgram {
    argv: Vec<String>,
    run_as: super::helpers::RunAs,
    /// Its output: `<run dir>/NODE.main.log`.
    log: std::path::PathBuf,
}

/// Where an image's main program is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum MainStatus {
    NotStarted,
    Running(i32),
    Exited(i32),
    Failed(String),
}

impl MainStatus {
    /// How it ended, if it has.
    fn ending(&self) -> Option<String> {
        match self {
            MainStatus::Exited(code) => Some(format!("exited with status {code}")),
            MainStatus::Failed(why) => Some(format!("could not start: {why}")),
            MainStatus::NotStarted | MainStatus::Running(_) => None,
        }
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
    /// The environment of every command run in it (`env`).
    env: std::collections::BTreeMap<String, String>,
    /// An image's main program, started once the node is, and where it is.
    main: Option<MainProgram>,
    main_status: Arc<Mutex<MainStatus>>,
    /// The main program's process, once started.
    main_rec: OnceLock<ProcRecord>,
    /// An image's WorkingDir: where `exec` runs unless told otherwise.
    image_cwd: Option<String>,
    /// Its control groups (`mem`, `cpus`), which every process run in it
    /// joins; removed with the node.
    groups: Option<super::cgroup::NodeGroups>,
    /// Its limits as set, or why they are not.
    limits_note: Option<String>,
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
                    let init = s.init.pid;
                    let _ = self.started.set(s);
                    self.start_main(init);
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

    /// Starts the image's main program in the node, its output to its log,
    /// and a thread that notes when it ends. It dies with the node.
    fn start_main(&self, init: i32) {
        let Some(main) = &self.main else { return };
        let status = self.main_status.clone();
        let mut cmd = self.enter(init, main.run_as.cwd.as_deref(), main.run_as.user.as_deref(), &main.argv);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&main.log);
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        node_process(&mut cmd);
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id() as i32;
                // Watched with the node's other processes: when it ends,
                // the node is dead, as a container is. A program that is
                // already gone gets a record that no process matches.
                let _ = self.main_rec.set(ProcRecord { pid, start_time: proc_start_time(pid).unwrap_or(0) });
                *status.lock().unwrap_or_else(|p| p.into_inner()) = MainStatus::Running(pid);
                std::thread::spawn(move || {
                    let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
                    *status.lock().unwrap_or_else(|p| p.into_inner()) = MainStatus::Exited(code);
                });
            }
            Err(e) => *status.lock().unwrap_or_else(|p| p.into_inner()) = MainStatus::Failed(e.to_string()),
        }
    }

    /// `__ns-enter` running `argv` in the node (its init `init`), in `cwd`
    /// as `user`, in the node's control groups, with its environment.
    fn enter(&self, init: i32, cwd: Option<&str>, user: Option<&str>, argv: &[String]) -> Command {
        let mut cmd = self_exe();
        cmd.arg("__ns-enter").arg(init.to_string());
        if let Some(cwd) = cwd {
            cmd.arg("--cwd").arg(cwd);
        }
        if let Some(user) = user {
            cmd.arg("--user").arg(user);
        }
        for f in self.groups.iter().flat_map(|g| g.procs_files()) {
            cmd.arg("--cgroup").arg(f);
        }
        cmd.arg("--").args(argv);
        cmd.envs(&self.env).env("CLONET_NODE", &self.name);
        cmd
    }

    fn net(&self) -> Result<std::sync::MutexGuard<'_, NodeNet>, HostError> {
        Ok(self.started()?.net.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl RunningNode for NsNode {
    /// For an image's node: its main program and where it is.
    fn detail(&self) -> Option<String> {
        let main = match (&self.main, &self.limits_note) {
            (None, note) => return note.clone(),
            (Some(main), _) => main,
        };
        let status = self.main_status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = match status {
            MainStatus::NotStarted => "not started yet".to_string(),
            MainStatus::Running(pid) => format!("running (pid {pid})"),
            ended => ended.ending().unwrap_or_default(),
        };
        let limits = self.limits_note.as_ref().map(|n| format!("; {n}")).unwrap_or_default();
        Some(format!("main program {:?}: {now}; output in {}{limits}", main.argv.join(" "), main.log.display()))
    }

    fn processes(&self) -> Vec<ProcRecord> {
        let mut procs = vec![self.holder_rec.clone()];
        procs.extend(self.started.get().map(|s| s.init.clone()));
        procs.extend(self.main_rec.get().cloned());
        procs
    }

    fn death(&self) -> Option<String> {
        let main = self.main.as_ref()?;
        let what = self.main_status.lock().unwrap_or_else(|p| p.into_inner()).ending()?;
        Some(format!("its main program {:?} {what}; its output is in {}", main.argv.join(" "), main.log.display()))
    }

    fn alive(&self) -> bool {
        // A start that failed says why, once, before the node is marked stopped.
        if self.started.get().is_none() && !super::is_alive(&self.holder_rec) {
            if let Err(e) = self.started() {
                eprintln!("clonet: {e}");
            }
        }
        self.death().is_none() && self.processes().iter().all(super::is_alive)
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
        // As `docker exec`: an image's WorkingDir unless the request names
        // one, and root unless it names a user (the lab's commands
        // configure the node, which an image's User usually may not).
        let cwd = req.cwd.as_deref().or(self.image_cwd.as_deref());
        let mut cmd = self.enter(init.pid, cwd, req.user.as_deref(), &req.argv);
        cmd.stdin(if req.stdin.is_empty() { Stdio::null() } else { Stdio::piped() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        node_process(&mut cmd);
        let mut child = cmd.spawn().map_err(HostError::io(format!("running a command in {}", self.name)))?;
        if let Some(mut stdin) = child.stdin.take() {
            let data = req.stdin.clone();
            std::thread::spawn(move || stdin.write_all(&data));
        }
        let limit = usize::try_from(req.max_output.get()).unwrap_or(usize::MAX);
        let out = Collector::start(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), limit);
        let err = Collector::start(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>), limit);
        let status = wait_with_deadline(&*self.sys, &mut child, req.timeout.get())?;
        // A background process started by the command may keep the pipes
        // open; take what arrived shortly after the command itself ended.
        let linger = Instant::now() + OUTPUT_LINGER;
        let (stdout, out_cut) = out.finish(linger);
        let (stderr, err_cut) = err.finish(linger);
        Ok(ExecOutput { status, stdout, stderr, truncated: out_cut || err_cut })
    }

    fn ping(&mut self, target: IpAddr, timeout: Duration) -> Result<Option<Duration>, HostError> {
        // The lab holds the network namespace open, so a dead node's would
        // still take the echo and wait out the whole timeout: say it is gone.
        if !super::is_alive(&self.started()?.init) {
            return Err(HostError::Gone(self.name.clone()));
        }
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
    use std::os::fd::AsFd;

    use nix::errno::Errno;

    use super::*;
    use crate::host::syscall::{Call, RecordingSyscall};
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
}
