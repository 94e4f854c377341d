//! Plugs: sockets where programs clonet did not start join a LAN.
//!
//! A plug listens at a path the user names, in one of four protocols
//! (`vocab::PlugProtocol`). Each client that connects becomes one of the
//! plug node's interfaces (`c1`, `c2`, …), and the lab makes it a port
//! of the plug's LAN, as for any node interface: the node reports
//! [`NodeEvent::Joined`] and hands the client's socket out through
//! `add_iface`. A client that leaves is reported as [`NodeEvent::Left`].
//!
//! One thread per plug accepts, shakes hands (VDE), relays datagrams
//! (`qemu-dgram`, whose clients all send to the one bound socket), and
//! watches the clients for their end; the switch pumps every other
//! client's frames itself. The thread never waits for the lab: it queues
//! events and calls the lab's [`Notifier`], which gives up when the plug
//! is being stopped.
//!
//! Bounds: clients per plug, VDE handshakes at once, and the time and
//! size of a handshake. What a client sends that cannot be a frame is
//! counted and dropped by the switch; a byte stream out of step closes
//! that client's port (the switch shuts its socket, so the thread sees it
//! end). A handshake that is not VDE, and a datagram from a socket with no
//! address to answer, are refused and reported.
//!
//! Files: the plug's socket is bound in a directory of its own beside the
//! path, made owner-only there, then renamed into place without replacing
//! anything, so no other user can connect in between or swap the file for
//! a link, and nothing that was at the path is lost; a vde plug's
//! directory is made 0700 and must not exist. At stop
//! (and by `clonet clean`, from the list in the run directory) only the
//! files the plug made are removed, each checked by its inode.
//!
//! Owns: the listening socket, the clients' sockets until the switch
//! takes them, the plug's files. Must not touch: the switch, the topology.
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    accept4, bind, connect, listen, recv, recvfrom, sendto, socket, socketpair, AddressFamily, Backlog, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use serde::{Deserialize, Serialize};

use super::{ExecOutput, ExecRequest, HostError, NodeEvent, NodeSpec, Notifier, ProcRecord, RunningNode};
use crate::switch::port::{PortIo, RawPort, StreamPort};
use crate::vocab::{Cidr, MacAddr, PlugProtocol, PlugSpec, Route};

/// Most clients one plug takes at once.
pub const MAX_CLIENTS: usize = 64;
/// Most VDE handshakes one plug waits for at once.
const MAX_HANDSHAKES: usize = 8;
/// How long a VDE client has to send its whole request.
const HANDSHAKE_TIME: Duration = Duration::from_secs(5);
/// The longest datagram a `qemu-dgram` client may send (QEMU's own bound).
const MAX_DATAGRAM: usize = 69632;
/// The name of a vde plug's control socket in its directory.
pub const VDE_CONTROL: &str = "ctl";

// ---- The VDE protocol (sans-IO) ----

/// A VDE request's first word, in the host's byte order.
pub const VDE_MAGIC: u32 = 0xfeed_face;
/// The protocol version vde_switch speaks (and `libvdeplug`, UML's
/// `daemon` transport).
pub const VDE_VERSION: u32 = 3;
/// `struct sockaddr_un`: a 2-byte family, then 108 bytes of path.
pub const SOCKADDR_UN_LEN: usize = 110;
/// magic, version, type, then the client's data socket address.
const VDE_FIXED: usize = 12 + SOCKADDR_UN_LEN;
/// The fixed part and the longest description (`MAXDESCR`).
pub const VDE_MAX_REQUEST: usize = VDE_FIXED + 128;

/// A VDE client's request to plug in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdeRequest {
    /// The port it asks for (0: any); clonet gives each client a port of
    /// its own whatever it asks.
    pub port: u32,
    /// The path of its data socket, or its abstract name (UML's daemon
    /// transport), as the bytes of `sun_path`.
    pub address: VdeAddress,
    /// What it says it is (`vde_plug2tap`, a QEMU netdev id), printable.
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VdeAddress {
    Path(Vec<u8>),
    /// The 107 bytes after the leading NUL, zeros included: the client
    /// bound it with the whole `sockaddr_un`.
    Abstract(Vec<u8>),
}

/// What the bytes a VDE client sent so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VdeParse {
    Incomplete,
    Request(VdeRequest),
    Bad(String),
}

/// Reads a VDE v3 request: host-endian magic, version and type (the
/// request kind in its low byte, 0 for a new port; the port above it),
/// the client's `sockaddr_un`, then an optional description.
pub fn parse_vde_request(bytes: &[u8]) -> VdeParse {
    let word = |at: usize| u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if bytes.len() >= 4 && word(0) != VDE_MAGIC {
        return VdeParse::Bad(format!("not a VDE request (magic {:#010x})", word(0)));
    }
    if bytes.len() >= 8 && word(4) != VDE_VERSION {
        return VdeParse::Bad(format!("VDE version {} (clonet speaks version 3)", word(4)));
    }
    if bytes.len() >= 12 && word(8) & 0xff != 0 {
        return VdeParse::Bad(format!("VDE request type {} (only 0, a new port, is known)", word(8) & 0xff));
    }
    if bytes.len() > VDE_MAX_REQUEST {
        return VdeParse::Bad(format!("a VDE request of {} bytes (at most {VDE_MAX_REQUEST})", bytes.len()));
    }
    if bytes.len() < VDE_FIXED {
        return VdeParse::Incomplete;
    }
    let family = u16::from_ne_bytes([bytes[12], bytes[13]]);
    if i32::from(family) != libc::AF_UNIX {
        return VdeParse::Bad(format!("a data socket of address family {family} (only unix sockets)"));
    }
    let path = &bytes[14..VDE_FIXED];
    let address = if path[0] == 0 {
        VdeAddress::Abstract(path[1..].to_vec())
    } else {
        let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
        VdeAddress::Path(path[..end].to_vec())
    };
    let descr = &bytes[VDE_FIXED..];
    let descr = &descr[..descr.iter().position(|b| *b == 0).unwrap_or(descr.len())];
    let description: String =
        String::from_utf8_lossy(descr).chars().filter(|c| !c.is_control()).take(64).collect::<String>();
    VdeParse::Request(VdeRequest { port: word(8) >> 8, address, description })
}

/// The switch's answer: the `sockaddr_un` of the client's data socket on
/// the switch's side (a path of at most 107 bytes).
pub fn vde_reply(path: &[u8]) -> [u8; SOCKADDR_UN_LEN] {
    let mut out = [0u8; SOCKADDR_UN_LEN];
    out[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    let n = path.len().min(SOCKADDR_UN_LEN - 3);
    out[2..2 + n].copy_from_slice(&path[..n]);
    out
}

// ---- Files the plug made ----

/// A file a plug made, known by its inode so that a file someone put at
/// the same path since is left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadeFile {
    pub path: PathBuf,
    pub ino: u64,
    pub dir: bool,
}

impl MadeFile {
    fn of(path: &Path, dir: bool) -> io::Result<MadeFile> {
        Ok(MadeFile { path: path.to_path_buf(), ino: std::fs::symlink_metadata(path)?.ino(), dir })
    }

    /// Removes the file if it is still the one the plug made (a socket or
    /// directory, same inode); a directory only once empty.
    pub fn remove(&self) {
        let Ok(meta) = std::fs::symlink_metadata(&self.path) else { return };
        if meta.ino() != self.ino {
            return;
        }
        if self.dir && meta.is_dir() {
            let _ = std::fs::remove_dir(&self.path);
        } else if !self.dir && meta.file_type().is_socket() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes what a plug made, sockets before their directory.
pub fn remove_made(files: &[MadeFile]) {
    for f in files.iter().filter(|f| !f.dir) {
        f.remove();
    }
    for f in files.iter().filter(|f| f.dir) {
        f.remove();
    }
}

/// The file in a run directory that lists what the plug `node` made, for
/// `clonet clean` after a SIGKILL.
pub fn made_list(run_dir: &Path, node: &str) -> PathBuf {
    run_dir.join("plugs").join(format!("{node}.json"))
}

/// Removes the files every plug of a dead lab made (`clonet clean`).
pub fn clean_made(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir.join("plugs")) else { return };
    for e in entries.flatten() {
        // Bounded: a list holds a few paths; anything bigger is not ours.
        if e.metadata().is_ok_and(|m| m.len() <= 1 << 20) {
            if let Ok(files) = std::fs::read(e.path()).map(|b| serde_json::from_slice::<Vec<MadeFile>>(&b)) {
                remove_made(&files.unwrap_or_default());
            }
        }
    }
}

/// Binds a socket of `kind` at `path` without a moment when another user
/// may connect, without following a link someone else put in the way,
/// and without replacing what is there: in a directory of its own made
/// beside `path` (0700, so no one else can touch what is in it), made
/// owner-only there, then renamed into place.
fn bind_socket(kind: SockType, path: &Path) -> Result<(OwnedFd, MadeFile), String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let fd = socket(AddressFamily::Unix, kind, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(|e| format!("socket: {e}"))?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/"));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // 16 bytes, so that `PlugSpec::check` can bound the paths it makes.
    let private = parent.join(format!(".clonet-{:08x}", (std::process::id() << 12) ^ (n as u32)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| format!("making {}: {e}", private.display()))?;
    let tmp = private.join("s");
    let bound = UnixAddr::new(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))
        .and_then(|addr| bind(fd.as_raw_fd(), &addr).map_err(|e| format!("binding {}: {e}", tmp.display())));
    let placed = bound
        .and_then(|()| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())
        })
        .and_then(|()| {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &tmp,
                nix::fcntl::AT_FDCWD,
                path,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(|e| match e {
                nix::errno::Errno::EEXIST => {
                    format!("{} exists: remove it or give the plug another path", path.display())
                }
                e => format!("placing the socket at {}: {e}", path.display()),
            })
        });
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let _ = std::fs::remove_dir(&private);
    placed?;
    let made = MadeFile::of(path, false).map_err(|e| e.to_string())?;
    Ok((fd, made))
}

// ---- The running plug ----

/// What the plug's thread and the lab's side share.
#[derive(Default)]
struct Mailbox {
    events: VecDeque<NodeEvent>,
    /// Clients' sockets waiting for the lab's `add_iface`.
    ready: HashMap<String, Box<dyn PortIo>>,
    /// Clients the lab let go (their port is gone): the thread drops them.
    forget: Vec<String>,
    /// Every file the plug made, for its stop and for `clonet clean`.
    made: Vec<MadeFile>,
}

/// A running plug: the node the lab sees.
pub struct PlugNode {
    name: String,
    spec: PlugSpec,
    mailbox: Arc<Mutex<Mailbox>>,
    stop: Arc<AtomicBool>,
    /// Written to wake the thread (a client let go, the stop).
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    /// Where the list of made files is kept for `clonet clean`.
    made_list: PathBuf,
}

fn lock(m: &Mutex<Mailbox>) -> std::sync::MutexGuard<'_, Mailbox> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts listening as `spec.options.plug` says.
pub fn start(spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError> {
    let fail = |why: String| HostError::start(spec.name.clone(), why);
    let plug = spec.options.plug.clone().ok_or_else(|| fail("a plug needs its protocol, path and LAN".into()))?;
    plug.check().map_err(|e| fail(e.to_string()))?;
    let mut made = Vec::new();
    let listener = match plug.protocol {
        PlugProtocol::QemuStream | PlugProtocol::UmlBess | PlugProtocol::QemuDgram => {
            let kind = match plug.protocol {
                PlugProtocol::QemuStream => SockType::Stream,
                PlugProtocol::UmlBess => SockType::SeqPacket,
                _ => SockType::Datagram,
            };
            let (fd, file) = bind_socket(kind, &plug.path).map_err(fail)?;
            made.push(file);
            fd
        }
        PlugProtocol::Vde => {
            std::fs::DirBuilder::new().mode(0o700).create(&plug.path).map_err(|e| {
                fail(match e.kind() {
                    io::ErrorKind::AlreadyExists => {
                        format!("{} exists: remove it or give the plug another directory", plug.path.display())
                    }
                    _ => format!("creating the directory {}: {e}", plug.path.display()),
                })
            })?;
            made.push(MadeFile::of(&plug.path, true).map_err(|e| fail(e.to_string()))?);
            match bind_socket(SockType::Stream, &plug.path.join(VDE_CONTROL)) {
                Ok((fd, file)) => {
                    made.push(file);
                    fd
                }
                Err(e) => {
                    remove_made(&made);
                    return Err(fail(e));
                }
            }
        }
    };
    if plug.protocol != PlugProtocol::QemuDgram {
        if let Err(e) = listen(&listener, Backlog::new(16).expect("a small backlog")) {
            remove_made(&made);
            return Err(fail(format!("listen: {e}")));
        }
    }
    let made_list = made_list(&spec.run_dir, &spec.name);
    let mailbox = Arc::new(Mutex::new(Mailbox { made, ..Default::default() }));
    write_made_list(&made_list, &lock(&mailbox).made);
    let (wake_read, wake_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| {
            remove_made(&lock(&mailbox).made);
            fail(format!("pipe: {e}"))
        })?;
    let stop = Arc::new(AtomicBool::new(false));
    let worker = Worker {
        protocol: plug.protocol,
        dir: plug.path.clone(),
        listener,
        wake: wake_read,
        stop: stop.clone(),
        mailbox: mailbox.clone(),
        notify: spec.notify.clone(),
        next: 1,
        clients: Vec::new(),
        handshakes: Vec::new(),
        made_list: made_list.clone(),
        buf: vec![0; MAX_DATAGRAM],
    };
    let thread = std::thread::Builder::new().name(format!("clonet-plug-{}", spec.name)).spawn(move || worker.run());
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            remove_made(&lock(&mailbox).made);
            return Err(fail(format!("starting its thread: {e}")));
        }
    };
    Ok(Box::new(PlugNode {
        name: spec.name.clone(),
        spec: plug,
        mailbox,
        stop,
        wake: Some(wake_write),
        thread: Some(thread),
        made_list,
    }))
}

fn write_made_list(list: &Path, made: &[MadeFile]) {
    if let Some(dir) = list.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(list, serde_json::to_vec(made).expect("paths serialize"));
}

impl PlugNode {
    fn no(&self, what: &str) -> HostError {
        HostError::start(
            self.name.clone(),
            format!("{what}: a plug runs nothing; its clients are programs of their own (on the host)"),
        )
    }

    fn wake(&self) {
        if let Some(w) = &self.wake {
            let _ = nix::unistd::write(w, &[1]);
        }
    }
}

impl RunningNode for PlugNode {
    fn processes(&self) -> Vec<ProcRecord> {
        Vec::new()
    }

    fn pid(&self) -> i32 {
        0
    }

    fn pause(&mut self, _paused: bool) -> Result<(), HostError> {
        Err(self.no("pause"))
    }

    fn detail(&self) -> Option<String> {
        Some(format!("{} plug at {}", self.spec.protocol, self.spec.path.display()))
    }

    fn take_events(&mut self) -> Vec<NodeEvent> {
        lock(&self.mailbox).events.drain(..).collect()
    }

    fn add_iface(&mut self, ifname: &str, _mac: MacAddr, _mtu: u32) -> Result<Box<dyn PortIo>, HostError> {
        lock(&self.mailbox).ready.remove(ifname).ok_or_else(|| {
            HostError::start(
                self.name.clone(),
                format!("a plug's interfaces are its clients, made as they connect; no client {ifname} is waiting"),
            )
        })
    }

    fn add_addr(&mut self, _ifname: &str, _cidr: Cidr) -> Result<(), HostError> {
        Err(self.no("an address (give it to the client's own interface)"))
    }

    fn add_route(&mut self, _route: &Route) -> Result<(), HostError> {
        Err(self.no("a route"))
    }

    fn forget_iface(&mut self, ifname: &str) {
        let mut mb = lock(&self.mailbox);
        mb.ready.remove(ifname);
        mb.forget.push(ifname.to_string());
        drop(mb);
        self.wake();
    }

    fn exec(&mut self, _req: &ExecRequest) -> Result<ExecOutput, HostError> {
        Err(self.no("exec"))
    }

    fn ping(&mut self, _target: std::net::IpAddr, _timeout: Duration) -> Result<Option<Duration>, HostError> {
        Err(self.no("ping"))
    }

    fn stop(&mut self) -> Result<(), HostError> {
        self.stop.store(true, Ordering::Relaxed);
        self.wake();
        if let Some(t) = self.thread.take() {
            // The thread may itself end the lab (it held the last handle
            // on it for a moment): it cannot wait for itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        self.wake = None;
        let mut mb = lock(&self.mailbox);
        mb.ready.clear();
        // The thread has ended, so every client's connection is closed: a
        // VDE client then removes the socket it made in the plug's
        // directory. Give them a moment before the directory goes (only
        // what the plug made is removed, and an empty directory).
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            remove_made(&mb.made);
            let gone = mb.made.iter().all(|f| std::fs::symlink_metadata(&f.path).is_err());
            if gone || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        mb.made.clear();
        let _ = std::fs::remove_file(&self.made_list);
        Ok(())
    }
}

impl Drop for PlugNode {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

// ---- The plug's thread ----

/// One client the thread follows.
struct Client {
    iface: String,
    kind: ClientKind,
}

enum ClientKind {
    /// A connected stream or seqpacket socket the switch pumps: a copy of
    /// its fd tells when it ends (the client left, or the switch closed
    /// its port).
    Watched(OwnedFd),
    /// A VDE client: its control connection ends when it unplugs; the
    /// switch pumps its data socket.
    Vde { control: OwnedFd, data: MadeFile },
    /// A `qemu-dgram` client: frames relayed between the plug's socket
    /// and one end of a socket pair whose other end is its port.
    Dgram { relay: OwnedFd, addr: UnixAddr },
}

/// A VDE client that connected and has not finished its request.
struct Handshake {
    control: OwnedFd,
    bytes: Vec<u8>,
    deadline: Instant,
}

struct Worker {
    protocol: PlugProtocol,
    /// The plug's path: its socket, or a vde plug's directory.
    dir: PathBuf,
    listener: OwnedFd,
    wake: OwnedFd,
    stop: Arc<AtomicBool>,
    mailbox: Arc<Mutex<Mailbox>>,
    notify: Option<Notifier>,
    /// The number of the next client's interface.
    next: u64,
    clients: Vec<Client>,
    handshakes: Vec<Handshake>,
    made_list: PathBuf,
    buf: Vec<u8>,
}

/// What one poll found: whether the lab woke the thread, whether the
/// listener has something, and which clients and handshakes did.
#[derive(Default)]
struct Found {
    wake: bool,
    listener: bool,
    clients: Vec<(usize, PollFlags)>,
    handshakes: Vec<(usize, PollFlags)>,
}

impl Worker {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let found = match self.wait() {
                Ok(found) => found,
                Err(e) => {
                    eprintln!("clonet: a plug stopped watching its socket: {e}");
                    return;
                }
            };
            let before = lock(&self.mailbox).events.len();
            // Clients and handshakes from the last, so that removing one
            // (swap_remove) moves only one already handled; then the
            // lab's letting go, then new clients, which only append.
            for &(i, flags) in found.clients.iter().rev() {
                self.client_ready(i, flags);
            }
            for &(i, _) in found.handshakes.iter().rev() {
                self.handshake_ready(i);
            }
            if found.wake {
                self.woken();
            }
            if found.listener {
                self.accept();
            }
            self.expire_handshakes();
            if lock(&self.mailbox).events.len() != before {
                if let Some(n) = &self.notify {
                    n.notify(&self.stop);
                }
            }
        }
    }

    /// Waits for something to do, at most a second (the handshakes'
    /// deadlines are looked at after each wait).
    fn wait(&mut self) -> nix::Result<Found> {
        let mut fds = Vec::with_capacity(2 + self.clients.len() + self.handshakes.len());
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        let full = self.clients.len() >= MAX_CLIENTS && self.protocol != PlugProtocol::QemuDgram;
        // A full plug leaves new clients waiting in the backlog (a dgram
        // plug reads on, to relay its clients' frames).
        fds.push(PollFd::new(self.listener.as_fd(), if full { PollFlags::empty() } else { PollFlags::POLLIN }));
        for c in &self.clients {
            let (fd, flags) = match &c.kind {
                // Nothing asked: a socket whose peer closed (or that the
                // switch shut down) reports POLLHUP anyway. (POLLRDHUP is
                // not asked for: nix drops a revents holding it.)
                ClientKind::Watched(fd) => (fd.as_fd(), PollFlags::empty()),
                ClientKind::Vde { control, .. } => (control.as_fd(), PollFlags::POLLIN),
                ClientKind::Dgram { relay, .. } => (relay.as_fd(), PollFlags::POLLIN),
            };
            fds.push(PollFd::new(fd, flags));
        }
        for h in &self.handshakes {
            fds.push(PollFd::new(h.control.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
        let mut found = Found::default();
        let clients = self.clients.len();
        for (i, fd) in fds.iter().enumerate() {
            let Some(flags) = fd.revents().filter(|f| !f.is_empty()) else { continue };
            match i {
                0 => found.wake = true,
                1 => found.listener = true,
                i if i < 2 + clients => found.clients.push((i - 2, flags)),
                i => found.handshakes.push((i - 2 - clients, flags)),
            }
        }
        Ok(found)
    }

    fn event(&self, e: NodeEvent) {
        lock(&self.mailbox).events.push_back(e);
    }

    fn refuse(&self, why: String) {
        self.event(NodeEvent::Refused { why });
    }

    /// Takes the lab's letting go of clients.
    fn woken(&mut self) {
        let mut sink = [0u8; 64];
        while nix::unistd::read(&self.wake, &mut sink).is_ok_and(|n| n > 0) {}
        let forget: Vec<String> = lock(&self.mailbox).forget.drain(..).collect();
        for name in forget {
            if let Some(i) = self.clients.iter().position(|c| c.iface == name) {
                self.drop_client(i, false);
            }
        }
    }

    fn new_iface(&mut self) -> String {
        let name = format!("c{}", self.next);
        self.next += 1;
        name
    }

    /// Hands a new client's socket to the lab.
    fn join(&mut self, kind: ClientKind, io: Box<dyn PortIo>, peer: String) {
        let iface = self.new_iface();
        {
            let mut mb = lock(&self.mailbox);
            mb.ready.insert(iface.clone(), io);
            mb.events.push_back(NodeEvent::Joined { iface: iface.clone(), peer });
        }
        self.clients.push(Client { iface, kind });
    }

    fn accept(&mut self) {
        if self.protocol == PlugProtocol::QemuDgram {
            return self.relay_in();
        }
        // A few at a time, so the clients' ends are looked at too.
        for _ in 0..8 {
            let conn = match accept4(&self.listener, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(e) => return self.refuse(format!("accept: {e}")),
            };
            if let Err(why) = same_user(&conn) {
                self.refuse(why);
                continue;
            }
            if self.protocol == PlugProtocol::Vde {
                if self.handshakes.len() >= MAX_HANDSHAKES {
                    self.refuse(format!("more than {MAX_HANDSHAKES} VDE clients connected at once without a request"));
                    continue;
                }
                self.handshakes.push(Handshake {
                    control: conn,
                    bytes: Vec::new(),
                    deadline: Instant::now() + HANDSHAKE_TIME,
                });
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                self.refuse(format!("the plug has its {MAX_CLIENTS} clients"));
                continue;
            }
            let peer = describe_peer(&conn);
            let watch = match conn.try_clone() {
                Ok(fd) => fd,
                Err(e) => {
                    self.refuse(format!("dup: {e}"));
                    continue;
                }
            };
            let io: Box<dyn PortIo> = match self.protocol {
                PlugProtocol::QemuStream => Box::new(StreamPort::new(conn)),
                _ => Box::new(RawPort::new(conn)),
            };
            self.join(ClientKind::Watched(watch), io, peer);
        }
    }

    fn client_ready(&mut self, i: usize, flags: PollFlags) {
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        match &self.clients[i].kind {
            ClientKind::Watched(_) => {
                if flags.intersects(gone) {
                    self.drop_client(i, true);
                }
            }
            ClientKind::Vde { control, .. } => {
                // Nothing more is expected on the control connection: read
                // and ignore what comes, until it ends.
                let mut sink = [0u8; 512];
                let ended = match nix::unistd::read(control, &mut sink) {
                    Ok(0) => true,
                    Ok(_) | Err(nix::errno::Errno::EAGAIN) => false,
                    Err(_) => true,
                };
                if ended || flags.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.drop_client(i, true);
                }
            }
            ClientKind::Dgram { .. } => {
                if flags.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    // The lab closed its port.
                    self.drop_client(i, false);
                } else {
                    self.relay_out(i);
                }
            }
        }
    }

    /// Forgets client `i`; `tell` says the lab does not know yet.
    fn drop_client(&mut self, i: usize, tell: bool) {
        let client = self.clients.swap_remove(i);
        if let ClientKind::Vde { data, .. } = &client.kind {
            data.remove();
            let mut mb = lock(&self.mailbox);
            mb.made.retain(|m| m != data);
            write_made_list(&self.made_list, &mb.made);
        }
        let mut mb = lock(&self.mailbox);
        // A client the lab has not taken yet goes quietly.
        if mb.ready.remove(&client.iface).is_some() {
            mb.events.retain(|e| !matches!(e, NodeEvent::Joined { iface, .. } if *iface == client.iface));
            return;
        }
        if tell {
            mb.events.push_back(NodeEvent::Left { iface: client.iface });
        }
    }

    fn handshake_ready(&mut self, i: usize) {
        let h = &mut self.handshakes[i];
        let mut chunk = [0u8; VDE_MAX_REQUEST + 1];
        let n = match nix::unistd::read(&h.control, &mut chunk) {
            Ok(0) => {
                self.handshakes.swap_remove(i);
                return self.refuse("a VDE client left before its request ended".into());
            }
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(e) => {
                self.handshakes.swap_remove(i);
                return self.refuse(format!("reading a VDE request: {e}"));
            }
        };
        h.bytes.extend_from_slice(&chunk[..n]);
        match parse_vde_request(&h.bytes) {
            VdeParse::Incomplete => {}
            VdeParse::Bad(why) => {
                self.handshakes.swap_remove(i);
                self.refuse(why);
            }
            VdeParse::Request(req) => {
                let h = self.handshakes.swap_remove(i);
                if self.clients.len() >= MAX_CLIENTS {
                    return self.refuse(format!("the plug has its {MAX_CLIENTS} clients"));
                }
                if let Err(why) = self.plug_vde(h.control, req) {
                    self.refuse(why);
                }
            }
        }
    }

    /// Gives a VDE client its data socket: bound in the plug's directory,
    /// connected to the client's, named in the answer.
    fn plug_vde(&mut self, control: OwnedFd, req: VdeRequest) -> Result<(), String> {
        let peer_addr = match &req.address {
            VdeAddress::Path(p) => UnixAddr::new(std::ffi::OsStr::from_bytes(p)),
            VdeAddress::Abstract(name) => UnixAddr::new_abstract(name),
        }
        .map_err(|e| format!("a VDE client's data address: {e}"))?;
        let number = self.next;
        let path = self.dir.join(format!("{number:05}"));
        let (data, made) = bind_socket(SockType::Datagram, &path)?;
        let connected =
            connect(data.as_raw_fd(), &peer_addr).map_err(|e| format!("reaching the VDE client's data socket: {e}"));
        let answered = connected.and_then(|()| {
            let reply = vde_reply(path.as_os_str().as_bytes());
            match nix::unistd::write(&control, &reply) {
                Ok(n) if n == reply.len() => Ok(()),
                Ok(_) => Err("a short answer to a VDE client".to_string()),
                Err(e) => Err(format!("answering a VDE client: {e}")),
            }
        });
        if let Err(e) = answered {
            made.remove();
            return Err(e);
        }
        {
            let mut mb = lock(&self.mailbox);
            mb.made.push(made.clone());
            write_made_list(&self.made_list, &mb.made);
        }
        let who = describe_peer(&control);
        let peer = match req.description.is_empty() {
            true => format!("vde {who}"),
            false => format!("vde {who} \"{}\"", req.description),
        };
        self.join(ClientKind::Vde { control, data: made }, Box::new(RawPort::new(data)), peer);
        Ok(())
    }

    fn expire_handshakes(&mut self) {
        let now = Instant::now();
        let before = self.handshakes.len();
        self.handshakes.retain(|h| h.deadline > now);
        for _ in self.handshakes.len()..before {
            self.refuse(format!("a VDE client sent no whole request within {} s", HANDSHAKE_TIME.as_secs()));
        }
    }

    /// Frames sent to a `qemu-dgram` plug: each goes to its sender's port,
    /// a new sender becoming a client.
    fn relay_in(&mut self) {
        for _ in 0..64 {
            let (n, from) = match recvfrom::<UnixAddr>(self.listener.as_raw_fd(), &mut self.buf) {
                Ok(got) => got,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(e) => return self.refuse(format!("reading the plug's socket: {e}")),
            };
            let Some(from) = from.filter(|a| a.path().is_some() || a.as_abstract().is_some()) else {
                self.refuse("a datagram from a socket with no address to answer (give QEMU local.path)".into());
                continue;
            };
            let known =
                self.clients.iter().position(|c| matches!(&c.kind, ClientKind::Dgram { addr, .. } if *addr == from));
            let i = match known {
                Some(i) => i,
                None => {
                    if self.clients.len() >= MAX_CLIENTS {
                        self.refuse(format!("the plug has its {MAX_CLIENTS} clients"));
                        continue;
                    }
                    let pair = socketpair(
                        AddressFamily::Unix,
                        SockType::SeqPacket,
                        None,
                        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                    );
                    let Ok((port, relay)) = pair else {
                        self.refuse("socketpair failed".into());
                        continue;
                    };
                    let peer = format!("qemu-dgram {}", describe_addr(&from));
                    self.join(ClientKind::Dgram { relay, addr: from }, Box::new(RawPort::new(port)), peer);
                    self.clients.len() - 1
                }
            };
            if let ClientKind::Dgram { relay, .. } = &self.clients[i].kind {
                // A full pair (the switch is behind) loses the frame, as a
                // full wire would.
                let _ = nix::unistd::write(relay, &self.buf[..n]);
            }
        }
    }

    /// Frames the switch handed to `qemu-dgram` client `i`, sent on to it.
    fn relay_out(&mut self, i: usize) {
        for _ in 0..64 {
            let ClientKind::Dgram { relay, addr } = &self.clients[i].kind else { return };
            let n = match recv(relay.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(0) => return self.drop_client(i, false),
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => return self.drop_client(i, false),
            };
            match sendto(self.listener.as_raw_fd(), &self.buf[..n], addr, MsgFlags::MSG_DONTWAIT) {
                Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::ENOBUFS) => {}
                // Its socket is gone: the client left.
                Err(_) => return self.drop_client(i, true),
            }
        }
    }
}

/// Refuses a client of another user: the plug's socket is the user's
/// own (mode 0600), so only root could be one, and a lab without root is
/// not meant to carry another user's frames.
fn same_user(conn: &OwnedFd) -> Result<(), String> {
    let cred = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("the client's credentials: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() != me && me != 0 {
        return Err(format!("a client of uid {} (the plug is uid {me}'s)", cred.uid()));
    }
    Ok(())
}

/// Who is at the other end of a connected socket: `pid N (comm)`.
fn describe_peer(conn: &OwnedFd) -> String {
    match nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) if c.pid() > 0 => {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", c.pid())).unwrap_or_default();
            match comm.trim() {
                "" => format!("pid {}", c.pid()),
                comm => format!("pid {} ({comm})", c.pid()),
            }
        }
        _ => "a process of another namespace".into(),
    }
}

fn describe_addr(a: &UnixAddr) -> String {
    match (a.path(), a.as_abstract()) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(name)) => format!("@{}", String::from_utf8_lossy(name).trim_end_matches('\0')),
        _ => "an unnamed socket".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(magic: u32, version: u32, kind: u32, path: &[u8], descr: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&magic.to_ne_bytes());
        r.extend_from_slice(&version.to_ne_bytes());
        r.extend_from_slice(&kind.to_ne_bytes());
        let mut addr = [0u8; SOCKADDR_UN_LEN];
        addr[..2].copy_from_slice(&1u16.to_ne_bytes());
        addr[2..2 + path.len()].copy_from_slice(path);
        r.extend_from_slice(&addr);
        r.extend_from_slice(descr);
        r
    }

    #[test]
    fn a_vde_request_gives_the_clients_address_port_and_description() {
        let r = request(VDE_MAGIC, 3, 5 << 8, b"/tmp/sw/ctl.00042-00000", b"vde_plug2tap\0junk");
        for cut in [0, 3, 11, VDE_FIXED - 1] {
            assert_eq!(parse_vde_request(&r[..cut]), VdeParse::Incomplete, "{cut} bytes");
        }
        let VdeParse::Request(req) = parse_vde_request(&r) else { panic!("a request") };
        assert_eq!(req.port, 5);
        assert_eq!(req.address, VdeAddress::Path(b"/tmp/sw/ctl.00042-00000".to_vec()));
        assert_eq!(req.description, "vde_plug2tap");
        // Without a description (UML's daemon transport), abstract.
        let mut name = vec![0u8];
        name.extend_from_slice(b"\x01\x02uml");
        let VdeParse::Request(req) = parse_vde_request(&request(VDE_MAGIC, 3, 0, &name, b"")) else { panic!() };
        let VdeAddress::Abstract(bytes) = req.address else { panic!("abstract") };
        assert_eq!(bytes.len(), 107, "the whole name, zeros included");
        assert_eq!(&bytes[..5], b"\x01\x02uml");
    }

    #[test]
    fn what_is_not_a_vde_request_is_refused_early_and_says_why() {
        let garbage = b"GET / HTTP/1.1\r\n";
        assert!(matches!(parse_vde_request(garbage), VdeParse::Bad(w) if w.contains("not a VDE request")));
        let v2 = request(VDE_MAGIC, 2, 0, b"/x", b"");
        assert!(matches!(parse_vde_request(&v2[..8]), VdeParse::Bad(w) if w.contains("version 2")));
        let kind = request(VDE_MAGIC, 3, 1, b"/x", b"");
        assert!(matches!(parse_vde_request(&kind), VdeParse::Bad(w) if w.contains("type 1")));
        let mut inet = request(VDE_MAGIC, 3, 0, b"/x", b"");
        inet[12..14].copy_from_slice(&2u16.to_ne_bytes());
        assert!(matches!(parse_vde_request(&inet), VdeParse::Bad(w) if w.contains("family 2")));
        let long = request(VDE_MAGIC, 3, 0, b"/x", &[b'a'; 200]);
        assert!(matches!(parse_vde_request(&long), VdeParse::Bad(w) if w.contains("at most")));
        let control = request(VDE_MAGIC, 3, 0, b"/x", b"a\x1b[31mb\nc");
        let VdeParse::Request(req) = parse_vde_request(&control) else { panic!() };
        assert_eq!(req.description, "a[31mbc", "no control characters reach a terminal");
    }

    #[test]
    fn the_vde_answer_is_a_sockaddr_un() {
        let a = vde_reply(b"/tmp/sw/00001");
        assert_eq!(a.len(), 110);
        assert_eq!(u16::from_ne_bytes([a[0], a[1]]), 1);
        assert_eq!(&a[2..15], b"/tmp/sw/00001");
        assert!(a[15..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_socket_is_placed_without_replacing_anything_and_removed_only_if_still_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sock");
        let (_fd, made) = bind_socket(SockType::Stream, &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "owner only");
        let err = bind_socket(SockType::Stream, &path).unwrap_err();
        assert!(err.contains("exists"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary name left behind");
        // The longest path a plug may have fits, for its socket and for a
        // vde directory's control socket inside it.
        let base = dir.path().as_os_str().len() + 1;
        let longest = dir.path().join("x".repeat(crate::vocab::plug::MAX_PLUG_PATH - base));
        let (_fd, long_made) = bind_socket(SockType::SeqPacket, &longest).unwrap();
        long_made.remove();
        std::fs::create_dir(&longest).unwrap();
        let (_fd, ctl) = bind_socket(SockType::Stream, &longest.join(VDE_CONTROL)).unwrap();
        ctl.remove();
        std::fs::remove_dir(&longest).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no directory of its own left behind");
        // Someone put another file there since: it stays.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"theirs").unwrap();
        made.remove();
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
    }
}
