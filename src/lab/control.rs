//! The control socket of a running lab: `control.sock` in its run
//! directory (mode 0600 in a 0700 directory, and the peer's uid is checked
//! too), through which other terminals, scripts and the web GUI watch and
//! change the lab while it runs.
//!
//! The protocol is JSON lines. A request is one object with an optional
//! `id` (echoed in the answer) and one of:
//!
//! | key | what it does |
//! |---|---|
//! | `command` | a lab [`Command`], answered with its [`Reply`] |
//! | `watch: true` | from now on, [`Event`] lines on this connection |
//! | `stop: true` | tears the lab down (as SIGTERM would) |
//! | `capture: {target, count}` | first request only: the connection becomes a pcap stream |
//!
//! An answer is `{"id":…,"ok":REPLY}` or
//! `{"id":…,"error":"why","kind":KIND}`, where `KIND` says what sort of
//! failure it is (`invalid`, `not_found`, `conflict`, `state`, `host`,
//! `switch`, `unsupported`, `unavailable`, `denied`: `errors::ErrorKind`),
//! so a remote error keeps its kind. An event is
//! `{"event":"node_added",…}`. A malformed request gets an error answer
//! and the connection and the lab go on.
//!
//! Requests on one connection start in the order they come. A command
//! with an `id` that runs on one node alone (`exec`, `ping`, `console`,
//! `pause_node`) is answered when it is done, and the connection goes on
//! with later requests meanwhile: match answers by `id`. A request without
//! an `id` is answered before the next one is read. Commands that need the
//! same node run one after the other, whoever sends them.
//!
//! Bounds: at most [`MAX_CLIENTS`] clients at once (one more is answered
//! one `unavailable` error line and closed), and a request line of at most
//! [`MAX_LINE`] bytes (a longer one is answered an `invalid` error and its
//! connection closed; other clients and the lab go on).
//!
//! Owns: the listener, one thread per client (plus one writer each), the
//! executor thread that runs commands on the lab, the threads that run
//! one-node commands on lent nodes, the ticker that notices dead nodes and
//! sends counters to watchers, and the client side (`Client`). Must not
//! touch: the topology (only through `SharedLab`), the data plane
//! (captures go through `CaptureControl`).
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::capture::{self, CaptureRequest, PortDirectory};
use super::command::{Command, Reply};
use super::errors::{ErrorKind, RemoteError};
use super::shared::{panic_message, Loan, SharedLab, Step, WeakLab};
use super::LabError;
use crate::switch::CaptureControl;

/// Name of the control socket in the run directory.
pub const SOCKET: &str = "control.sock";
/// Lines (answers and events) queued for one client before its events
/// are dropped (it is then told it lagged).
pub const CLIENT_QUEUE: usize = 1024;
/// The longest request line accepted, in bytes. The GUI bounds a
/// WebSocket message from the page by it too, since it relays each one as
/// a line.
pub const MAX_LINE: usize = 4 << 20;
/// Clients served at once. Each costs two threads, so a process that
/// connects in a loop could otherwise exhaust the lab's threads. Above the
/// web GUI's own cap (`gui::MAX_CONNECTIONS`; each of its connections is
/// one control client at most), so a flood of the GUI still leaves room
/// for `clonet attach` and `clonet exec`.
pub const MAX_CLIENTS: usize = 128;

/// One request line.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub watch: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureRequest>,
}

/// What a request asks for.
#[derive(Debug)]
pub enum Action {
    Command(Box<Command>),
    Watch,
    Stop,
    Capture(CaptureRequest),
}

/// One answer line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What sort of failure `error` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

impl Answer {
    pub fn new(id: Option<u64>, result: Result<Reply, RemoteError>) -> Answer {
        match result {
            Ok(r) => Answer { id, ok: Some(r), error: None, kind: None },
            Err(e) => Answer { id, ok: None, error: Some(e.message), kind: Some(e.kind) },
        }
    }

    pub fn failed(id: Option<u64>, kind: ErrorKind, message: impl Into<String>) -> Answer {
        Answer::new(id, Err(RemoteError::new(kind, message)))
    }

    /// The answer as one JSON line; a reply that cannot be written as
    /// JSON becomes an error answer rather than ending the connection.
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            let failed = Answer::failed(self.id, ErrorKind::Host, format!("the reply cannot be sent: {e}"));
            serde_json::to_string(&failed).unwrap_or_default()
        })
    }
}

/// Parses one request line: its id (when it has one, even if the rest is
/// wrong) and what it asks for, or why it cannot be understood. Sans-IO.
pub fn parse_request(line: &str) -> (Option<u64>, Result<Action, String>) {
    // The error names the field that was refused (`watch`, `capture.count`).
    // Inside a command serde buffers the tagged enum and the path stops at
    // `command`; there each typed value names its option in its message.
    let mut reader = serde_json::Deserializer::from_str(line);
    let parsed = serde_path_to_error::deserialize(&mut reader).map_err(|e| (e.path().to_string(), e.into_inner()));
    let request: Request = match parsed.and_then(|r| reader.end().map(|()| r).map_err(|e| (".".into(), e))) {
        Ok(r) => r,
        Err(e) => {
            let id = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v.get("id")?.as_u64());
            let (path, why) = e;
            return (id, Err(format!("malformed request: {path}: {why}")));
        }
    };
    let id = request.id;
    let mut actions = Vec::new();
    if let Some(c) = request.command {
        actions.push(Action::Command(Box::new(c)));
    }
    if request.watch {
        actions.push(Action::Watch);
    }
    if request.stop {
        actions.push(Action::Stop);
    }
    if let Some(c) = request.capture {
        actions.push(Action::Capture(c));
    }
    match actions.len() {
        1 => (id, Ok(actions.pop().expect("one action"))),
        0 => (id, Err("a request needs one of: command, watch, stop, capture".into())),
        _ => (id, Err("a request asks for one thing: command, watch, stop or capture".into())),
    }
}

/// Whether a connecting process may drive the lab: the lab's own user
/// (or root, who could reach the lab's processes anyway).
fn peer_allowed(stream: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let me = nix::unistd::geteuid().as_raw();
    getsockopt(stream, PeerCredentials).is_ok_and(|c| c.uid() == me || c.uid() == 0)
}

/// A ceiling on the connections a server serves at once, and the count of
/// those it turned away. Each admitted connection holds a [`Slot`] for as
/// long as it is served; the GUI's server uses one too.
pub struct ConnectionLimit {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
}

/// One admitted connection's place under a [`ConnectionLimit`], given
/// back when dropped (also when the connection's thread panics).
pub struct Slot(Arc<ConnectionLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit { max, open: AtomicUsize::new(0), refused: AtomicU64::new(0) })
    }

    /// A slot for one more connection, or, over the ceiling, `Err(n)`:
    /// this is the n-th connection refused so far.
    pub fn admit(self: &Arc<Self>) -> Result<Slot, u64> {
        let mut open = self.open.load(Ordering::Acquire);
        loop {
            if open >= self.max {
                return Err(self.refused.fetch_add(1, Ordering::Relaxed) + 1);
            }
            match self.open.compare_exchange_weak(open, open + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Slot(self.clone())),
                Err(now) => open = now,
            }
        }
    }

    /// Connections being served now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections turned away so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// Whether the n-th refused connection is worth a line on stderr: the
/// 1st, 2nd, 4th, 8th…, so that a flood is reported without flooding the
/// terminal too.
pub fn worth_reporting(refused: u64) -> bool {
    refused.is_power_of_two()
}

/// What the server's threads share.
struct Shared {
    lab: WeakLab,
    stop: AtomicBool,
    directory: PortDirectory,
    captures: CaptureControl,
    /// Every open client connection by number, shut down when the lab ends.
    clients: Mutex<std::collections::HashMap<u64, UnixStream>>,
    /// Work for the executor thread.
    jobs: Mutex<mpsc::Sender<Job>>,
    /// The threads that run one-node commands.
    workers: NodeWorkers,
    next_client: AtomicU64,
    /// At most `MAX_CLIENTS` clients at once.
    limit: Arc<ConnectionLimit>,
}

/// Work for the lab, done on the server's executor thread.
type Job = Box<dyn FnOnce(&SharedLab) + Send>;

/// A lab error as the protocol carries it.
fn remote(e: LabError) -> RemoteError {
    RemoteError::new(e.kind(), e.to_string())
}

fn ended() -> RemoteError {
    remote(LabError::Ended)
}

/// How a command began (see `Shared::begin_command`).
enum Begun {
    Answered(Box<Result<Reply, RemoteError>>),
    /// It runs on one node alone, lent to it.
    Lent(Loan),
}

impl Shared {
    /// Runs `f` on the lab, on the executor thread, unless the lab has
    /// ended. Not on the client's own thread: node processes die with the
    /// thread that started them (PDEATHSIG), and a client may go away
    /// while its nodes should live on. `f` locks the lab itself, and must
    /// never wait for a lent node: every client's work passes here.
    fn with_lab<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SharedLab) -> Result<T, RemoteError> + Send + 'static,
    ) -> Result<T, RemoteError> {
        let (done, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |lab| {
            // A job that panics (a bug, never a guest's or a client's
            // input, which is validated first) fails alone: its client
            // gets an error and the executor thread, and so the lab, goes
            // on for every other client.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(lab)));
            let _ = done
                .send(outcome.unwrap_or_else(|panic| Err(remote(LabError::Panicked(panic_message(panic.as_ref()))))));
        });
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).send(job).map_err(|_| ended())?;
        result.recv().map_err(|_| ended())?
    }

    /// Begins a command: runs it on the lab (on the executor thread), or
    /// borrows the node of a one-node command. When a node it needs is
    /// lent to another command, this client's thread (not the executor)
    /// waits for it, then the command is tried again.
    fn begin_command(&self, cmd: Command) -> Result<Begun, RemoteError> {
        let mut cmd = cmd;
        loop {
            match self.with_lab(move |lab| Ok(lab.attempt(cmd)))? {
                Step::Done(result) => return Ok(Begun::Answered(Box::new(result.map_err(remote)))),
                Step::Lent(loan) => return Ok(Begun::Lent(loan)),
                Step::Busy { cmd: again, nodes } => {
                    self.lab.upgrade().ok_or_else(ended)?.wait_until_back(&nodes);
                    cmd = again;
                }
            }
        }
    }
}

/// Does the clients' work on the lab, one job at a time, for as long as
/// the server runs. Not joined at shutdown: it may be waiting for the lab
/// that the thread shutting the server down holds; it ends by itself.
fn execute_jobs(jobs: Receiver<Job>, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(job) = jobs.recv_timeout(Duration::from_millis(100)) else { continue };
        let Some(lab) = shared.lab.upgrade() else { return };
        if lab.lock().is_torn_down() || shared.stop.load(Ordering::Relaxed) {
            // Dropping the job tells its client the lab has ended.
            return;
        }
        job(&lab);
    }
}

/// The threads that run one-node commands (exec, ping, console, pause)
/// once the lab lent them their node. Not a client's own thread: such a
/// command may start processes for its node (a uml machine that died
/// while booting is booted again), which die with the thread that started
/// them (PDEATHSIG), and a node must outlive the client that used it. So
/// these threads live as long as the server: one is added whenever none
/// is idle, so there are as many as one-node commands ever ran at once
/// (at most one per node, since a node is lent to one command at a time).
struct NodeWorkers {
    tasks: Mutex<Option<mpsc::Sender<Task>>>,
    queue: Arc<Mutex<Receiver<Task>>>,
    /// Threads waiting for a task and not yet promised one.
    idle: Arc<AtomicUsize>,
}

type Task = Box<dyn FnOnce() + Send>;

impl NodeWorkers {
    fn new() -> NodeWorkers {
        let (tasks, queue) = mpsc::channel();
        NodeWorkers {
            tasks: Mutex::new(Some(tasks)),
            queue: Arc::new(Mutex::new(queue)),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `task` on a thread of its own at once: an idle one, or a new
    /// one. Fails (dropping the task) once the server has stopped.
    fn run(&self, task: Task) -> Result<(), ()> {
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = tasks.as_ref() else { return Err(()) };
        // Each task queued has a thread to take it: an idle one promised
        // here, or the one started here.
        if self.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_err() {
            let (queue, idle) = (self.queue.clone(), self.idle.clone());
            std::thread::Builder::new()
                .name("clonet-control-node".into())
                .spawn(move || work(&queue, &idle))
                .map_err(|_| ())?;
        }
        sender.send(task).map_err(|_| ())
    }

    /// No more tasks: the threads end once the queue is empty.
    fn close(&self) {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// A node worker's life: one task after another until the server stops.
fn work(queue: &Mutex<Receiver<Task>>, idle: &AtomicUsize) {
    loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(task) = next else { return };
        // A task gives its node back even when the command panics
        // (`Loan::finish`); this keeps the thread for the next one anyway.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
        idle.fetch_add(1, Ordering::AcqRel);
    }
}

/// The control socket's server; shut down when its lab is torn down.
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Dropped at shutdown: the accept loop sees the pipe close, the
    /// ticker its channel.
    wakers: Option<(std::os::fd::OwnedFd, mpsc::Sender<()>)>,
}

impl Server {
    /// Serves `lab` on `control.sock` in its run directory.
    pub fn start(lab: &SharedLab) -> io::Result<Server> {
        let (dir, directory, captures) = {
            let guard = lab.lock();
            let dir = guard.run_dir().map(Path::to_path_buf).ok_or_else(|| io::Error::other("the lab has ended"))?;
            (dir, guard.port_directory(), guard.capture_control())
        };
        let path = dir.join(SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let (jobs, job_queue) = mpsc::channel();
        let shared = Arc::new(Shared {
            jobs: Mutex::new(jobs),
            workers: NodeWorkers::new(),
            lab: lab.downgrade(),
            stop: AtomicBool::new(false),
            directory,
            captures,
            clients: Mutex::new(Default::default()),
            next_client: Default::default(),
            limit: ConnectionLimit::new(MAX_CLIENTS),
        });
        // Dropping these (at shutdown) wakes the accept loop and the ticker
        // at once, so a lab ends without waiting for their next turn.
        // Close-on-exec: a node or machine that inherited the write end
        // would keep the accept loop from ever seeing it close.
        let (wake_read, wake_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let (stop_ticker, ticks) = mpsc::channel::<()>();
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("clonet-control".into())
                .spawn(move || accept_loop(&listener, &wake_read, &shared))?
        };
        let ticker = {
            let shared = shared.clone();
            std::thread::Builder::new().name("clonet-ticker".into()).spawn(move || tick_loop(&ticks, &shared))?
        };
        {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("clonet-control-exec".into())
                .spawn(move || execute_jobs(job_queue, &shared))?;
        }
        Ok(Server { shared, threads: vec![accept, ticker], wakers: Some((wake_write, stop_ticker)) })
    }

    /// Stops accepting, ends every client connection and waits for the
    /// server's own threads. Safe to call with the lab locked: those
    /// threads never wait for the lab.
    pub fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.wakers = None;
        self.shared.workers.close();
        for (_, c) in self.shared.clients.lock().unwrap_or_else(PoisonError::into_inner).drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            // The ticker may be the one dropping the last handle on the lab.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: &UnixListener, wake: &std::os::fd::OwnedFd, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let slot = match shared.limit.admit() {
                    Ok(slot) => slot,
                    Err(refused) => {
                        refuse_busy(client, refused, shared.limit.max());
                        continue;
                    }
                };
                let number = shared.next_client.fetch_add(1, Ordering::Relaxed);
                if let Ok(copy) = client.try_clone() {
                    shared.clients.lock().unwrap_or_else(PoisonError::into_inner).insert(number, copy);
                }
                let shared = shared.clone();
                let _ = std::thread::Builder::new().name("clonet-control-client".into()).spawn(move || {
                    let _slot = slot;
                    serve_client(client, &shared);
                    shared.clients.lock().unwrap_or_else(PoisonError::into_inner).remove(&number);
                });
            }
            // Nothing yet: wait for a client, seeing `stop` at least every 50 ms.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(&[listener.as_fd(), wake.as_fd()], 1000),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Tells a client over the ceiling why it is turned away, in one error
/// line, and closes it. Never waits on the client: the accept loop calls it.
fn refuse_busy(client: UnixStream, refused: u64, max: usize) {
    let why = format!("the lab serves {max} clients at once already; try again when one has gone");
    let _ = client.set_nonblocking(true);
    let _ = writeln!(&client, "{}", Answer::failed(None, ErrorKind::Unavailable, why).line());
    if worth_reporting(refused) {
        eprintln!(
            "clonet: the control socket refused a client: {max} are connected already ({refused} refused so far)"
        );
    }
}

/// Waits until one of `fds` is readable or closed (a client to accept,
/// or a wake-up pipe), for `ms` milliseconds at most.
pub fn wait_readable(fds: &[std::os::fd::BorrowedFd<'_>], ms: u16) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut polled: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)).collect();
    let _ = poll(&mut polled, PollTimeout::from(ms));
}

/// About once a second: notice nodes that died and send counters to
/// watchers. Skips a turn while someone else holds the lab.
fn tick_loop(stop: &Receiver<()>, shared: &Shared) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(Duration::from_secs(1)) {
        let Some(lab) = shared.lab.upgrade() else { return };
        let Some(mut guard) = lab.try_lock() else { continue };
        if !guard.is_torn_down() && !shared.stop.load(Ordering::Relaxed) {
            guard.tick();
        }
    }
}

fn serve_client(stream: UnixStream, shared: &Arc<Shared>) {
    let _ = stream.set_nonblocking(false);
    let Ok(mut out) = stream.try_clone() else { return };
    if !peer_allowed(&stream) {
        let _ = writeln!(out, "{}", Answer::failed(None, ErrorKind::Denied, "not the lab's owner").line());
        return;
    }
    let mut reader = BufReader::new(stream);
    let (tx, rx) = mpsc::sync_channel::<String>(CLIENT_QUEUE);
    let mut rx = Some(rx);
    let mut writer: Option<JoinHandle<()>> = None;
    let mut watcher: Option<u64> = None;
    let mut first = true;
    loop {
        // One byte more than a line may hold, so a line over the bound is
        // seen as such without reading (and holding) the rest of it.
        let mut bytes = Vec::new();
        match reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.len() > MAX_LINE {
            let why = format!("request line longer than {MAX_LINE} bytes; the connection is closed");
            let refusal = Answer::failed(None, ErrorKind::Invalid, why).line();
            // Through the writer once there is one, so the line is not
            // written into the middle of another.
            if rx.is_some() {
                let _ = writeln!(out, "{refusal}");
            } else {
                let _ = tx.send(refusal);
            }
            break;
        }
        let (id, action) = match std::str::from_utf8(&bytes) {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => parse_request(line),
            // Malformed like any other bad line: answered, and the connection goes on.
            Err(_) => (None, Err("malformed request: the line is not UTF-8".to_string())),
        };
        if let (true, Ok(Action::Capture(req))) = (first, &action) {
            // The connection becomes a pcap stream; no writer thread yet.
            capture::serve_capture(req, &shared.directory, &shared.captures, &shared.stop, id, out);
            return;
        }
        first = false;
        if let Some(rx) = rx.take() {
            let Ok(sink) = out.try_clone() else { return };
            writer = std::thread::Builder::new()
                .name("clonet-control-writer".into())
                .spawn(move || write_lines(rx, sink))
                .ok();
        }
        let result = match action {
            Err(e) => Err(RemoteError::new(ErrorKind::Invalid, e)),
            Ok(Action::Command(cmd)) => match shared.begin_command(*cmd) {
                Err(e) => Err(e),
                Ok(Begun::Answered(result)) => *result,
                Ok(Begun::Lent(loan)) => match run_lent(shared, loan, id, &tx) {
                    // Answered when done; the connection goes on.
                    None => continue,
                    Some(result) => result,
                },
            },
            Ok(Action::Watch) => match watcher {
                Some(_) => Ok(Reply::Done),
                None => {
                    let lines = tx.clone();
                    shared.with_lab(move |lab| Ok(lab.lock().watch(lines))).map(|w| {
                        watcher = Some(w);
                        Reply::Done
                    })
                }
            },
            Ok(Action::Stop) => {
                let _ = tx.send(Answer::new(id, Ok(Reply::Done)).line());
                // The same path as `kill -TERM`: a running script stops, a
                // REPL or `clonet serve` ends, and the lab is torn down.
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
                continue;
            }
            Ok(Action::Capture(_)) => {
                Err(RemoteError::new(ErrorKind::Invalid, "a capture needs a connection of its own (its first request)"))
            }
        };
        if tx.send(Answer::new(id, result).line()).is_err() {
            break;
        }
    }
    if let Some(w) = watcher {
        let _ = shared.with_lab(move |lab| {
            lab.lock().unwatch(w);
            Ok(())
        });
    }
    // The writer ends once every answer is sent, those of one-node
    // commands still running included.
    drop(tx);
    if let Some(w) = writer {
        let _ = w.join();
    }
}

/// Runs a one-node command on a node worker. With an `id`, its answer
/// goes to `answers` when it is done and this returns `None` at once;
/// without one, this waits for the command and returns its result.
fn run_lent(
    shared: &Shared,
    loan: Loan,
    id: Option<u64>,
    answers: &mpsc::SyncSender<String>,
) -> Option<Result<Reply, RemoteError>> {
    if id.is_some() {
        let answers = answers.clone();
        let task: Task = Box::new(move || {
            let _ = answers.send(Answer::new(id, loan.finish().map_err(remote)).line());
        });
        // A task the workers refuse (the lab is ending) drops its loan,
        // which gives the node back; the client is told.
        return match shared.workers.run(task) {
            Ok(()) => None,
            Err(()) => Some(Err(ended())),
        };
    }
    let (done, result) = mpsc::sync_channel(1);
    let task: Task = Box::new(move || {
        let _ = done.send(loan.finish().map_err(remote));
    });
    if shared.workers.run(task).is_err() {
        return Some(Err(ended()));
    }
    Some(result.recv().unwrap_or_else(|_| Err(ended())))
}

/// Writes queued lines to the client until the queue ends or the client
/// goes away.
fn write_lines(rx: Receiver<String>, mut out: UnixStream) {
    for mut line in rx {
        line.push('\n');
        if out.write_all(line.as_bytes()).is_err() {
            break;
        }
    }
}

/// The client side of a lab's control socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the lab whose run directory is `run_dir`.
    pub fn connect(run_dir: &Path) -> Result<Client, String> {
        let path = run_dir.join(SOCKET);
        let stream = UnixStream::connect(&path)
            .map_err(|e| format!("cannot reach the lab's control socket {}: {e}", path.display()))?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Client { reader: BufReader::new(stream), writer, next_id: 1 })
    }

    /// Gives up on an answer after `timeout` (none: wait as long as it takes).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        let _ = self.writer.set_read_timeout(timeout);
    }

    /// Connects to the running lab called `lab`.
    pub fn connect_lab(lab: &str) -> Result<Client, String> {
        let dir = running_lab_dir(lab)?;
        Client::connect(&dir)
    }

    /// Sends a request and waits for its answer; events that arrive in
    /// between are handed to `on_event`.
    pub fn request(&mut self, mut request: Request, mut on_event: impl FnMut(&str)) -> Result<Reply, RemoteError> {
        let id = self.next_id;
        self.next_id += 1;
        request.id = Some(id);
        let gone = |why: String| RemoteError::new(ErrorKind::Unavailable, why);
        let mut line =
            serde_json::to_string(&request).map_err(|e| RemoteError::new(ErrorKind::Invalid, e.to_string()))?;
        line.push('\n');
        // One write: the server may answer and close as soon as it has the line.
        self.writer.write_all(line.as_bytes()).map_err(|e| gone(format!("the lab went away: {e}")))?;
        loop {
            let mut answer = String::new();
            match self.reader.read_line(&mut answer) {
                Ok(0) => return Err(gone("the lab went away".into())),
                Ok(_) => {}
                Err(e) => return Err(gone(format!("the lab went away: {e}"))),
            }
            if answer.starts_with("{\"event\"") {
                on_event(answer.trim_end());
                continue;
            }
            let a: Answer = serde_json::from_str(&answer).map_err(|e| gone(format!("bad answer from the lab: {e}")))?;
            if a.id.is_some_and(|got| got != id) {
                continue;
            }
            return match (a.ok, a.error) {
                (Some(r), _) => Ok(r),
                (None, Some(e)) => Err(RemoteError::new(a.kind.unwrap_or_default(), e)),
                (None, None) => Err(gone("empty answer from the lab".into())),
            };
        }
    }

    /// Runs one lab command.
    pub fn execute(&mut self, cmd: Command) -> Result<Reply, RemoteError> {
        self.request(Request { command: Some(cmd), ..Default::default() }, |_| {})
    }

    /// Reads the next event line (after a `watch` request).
    pub fn next_event(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_string()),
        }
    }

    /// The stream itself, for a capture that turned it into pcap.
    pub fn into_reader(self) -> BufReader<UnixStream> {
        self.reader
    }

    pub fn writer(&mut self) -> &mut UnixStream {
        &mut self.writer
    }
}

/// The run directory of the running lab called `lab`, or a message that
/// names the labs that run.
pub fn running_lab_dir(lab: &str) -> Result<PathBuf, String> {
    let base = super::rundir::base_dir();
    super::rundir::running_lab(&base, lab).ok_or_else(|| {
        let names: Vec<String> = super::rundir::running_labs(&base).into_iter().map(|(_, s)| s.lab).collect();
        if names.is_empty() {
            format!("no lab called {lab:?} is running (no lab runs)")
        } else {
            format!("no lab called {lab:?} is running (running: {})", names.join(", "))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::lab::Lab;

    /// A lab on the fake host, served on its control socket, and the socket.
    fn served_lab(scratch: &Path) -> (SharedLab, PathBuf) {
        let lab = Lab::new("bounds", Box::new(FakeHost::default()), &scratch.join("run"), None).expect("lab");
        let shared = lab.serve().expect("served");
        let socket = shared.lock().run_dir().expect("run dir").join(SOCKET);
        (shared, socket)
    }

    /// A raw client: its reading and its writing side.
    fn connect(socket: &Path) -> (BufReader<UnixStream>, UnixStream) {
        let stream = UnixStream::connect(socket).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        (BufReader::new(stream), writer)
    }

    /// The next line from the lab, as JSON.
    fn next_line(reader: &mut BufReader<UnixStream>) -> serde_json::Value {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a line from the lab");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    /// Sends `line` and returns its answer (skipping events).
    fn ask(client: &mut (BufReader<UnixStream>, UnixStream), line: &[u8]) -> serde_json::Value {
        client.1.write_all(line).expect("the lab reads requests");
        loop {
            let v = next_line(&mut client.0);
            if v.get("event").is_none() {
                return v;
            }
        }
    }

    /// Whether the lab has closed this connection (end of stream, or
    /// reset) with nothing more to read.
    fn closed(reader: &mut BufReader<UnixStream>) -> bool {
        let mut rest = Vec::new();
        match reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    const LAB_INFO: &[u8] = b"{\"id\":9,\"command\":{\"op\":\"lab_info\"}}\n";

    #[test]
    fn connections_are_admitted_up_to_the_ceiling_and_given_back() {
        let limit = ConnectionLimit::new(2);
        let one = limit.admit().expect("first");
        let two = limit.admit().expect("second");
        assert_eq!(limit.admit().err(), Some(1), "the third is the first refused");
        assert_eq!(limit.admit().err(), Some(2));
        assert_eq!((limit.open(), limit.refused()), (2, 2));
        drop(one);
        let three = limit.admit().expect("a slot given back is taken again");
        assert_eq!(limit.open(), 2);
        drop((two, three));
        assert_eq!(limit.open(), 0);
        let reported: Vec<u64> = (1..=20).filter(|n| worth_reporting(*n)).collect();
        assert_eq!(reported, [1, 2, 4, 8, 16]);
    }

    #[test]
    fn a_client_over_the_ceiling_is_told_unavailable_and_closed_while_the_others_go_on() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (lab, socket) = served_lab(scratch.path());
        let mut held: Vec<_> = (0..MAX_CLIENTS).map(|_| connect(&socket)).collect();
        // The server accepts in the order clients connect, so once the last
        // one is answered every one of them holds a slot.
        let last = held.last_mut().expect("clients");
        assert!(ask(last, LAB_INFO).get("ok").is_some());

        let (mut over, _writer) = connect(&socket);
        let refusal = next_line(&mut over);
        assert_eq!(refusal["kind"], "unavailable", "{refusal}");
        assert!(refusal["error"].as_str().is_some_and(|e| e.contains(&MAX_CLIENTS.to_string())), "{refusal}");
        assert!(closed(&mut over), "the client over the ceiling is closed after its one line");

        // The clients already in are served as before; once one leaves, a
        // newcomer is served again.
        assert!(ask(&mut held[0], LAB_INFO).get("ok").is_some());
        held.pop();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut newcomer = connect(&socket);
            // While the slot is not yet given back, the lab may refuse and
            // close before the request is even written: that is a refusal too.
            let mut line = String::new();
            if newcomer.1.write_all(LAB_INFO).is_ok() && newcomer.0.read_line(&mut line).is_ok_and(|n| n > 0) {
                let answer: serde_json::Value = serde_json::from_str(&line).expect("an answer is JSON");
                if answer.get("ok").is_some() {
                    break;
                }
                assert_eq!(answer["kind"], "unavailable", "{answer}");
            }
            assert!(std::time::Instant::now() < end, "a slot given back is never taken again");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(held);
        lab.teardown();
    }

    #[test]
    fn a_line_over_the_bound_is_refused_and_closes_only_its_own_connection() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (lab, socket) = served_lab(scratch.path());
        let mut watcher = connect(&socket);
        assert!(ask(&mut watcher, b"{\"id\":1,\"watch\":true}\n").get("ok").is_some());
        let mut long = connect(&socket);
        // A first request, so that this connection's answers already go
        // through its writer thread.
        assert!(ask(&mut long, LAB_INFO).get("ok").is_some());
        // One byte over the bound, and no end of line: the lab reads no
        // further than that.
        let _ = long.1.write_all(&vec![b'x'; MAX_LINE + 1]);
        let refusal = next_line(&mut long.0);
        assert_eq!(refusal["kind"], "invalid", "{refusal}");
        assert!(refusal["error"].as_str().is_some_and(|e| e.contains("longer than")), "{refusal}");
        assert!(closed(&mut long.0), "the connection of the long line is closed");

        // A line of exactly the bound is read whole (JSON allows the padding).
        let mut at_bound = b"{\"id\":2,\"command\":{\"op\":\"lab_info\"}}".to_vec();
        at_bound.resize(MAX_LINE, b' ');
        at_bound.push(b'\n');
        let answer = ask(&mut watcher, &at_bound);
        assert_eq!((answer["id"].as_u64(), answer["ok"]["reply"].as_str()), (Some(2), Some("lab_info")), "{answer}");
        // A line that is not UTF-8 is malformed: answered, and the connection goes on.
        let answer = ask(&mut watcher, b"{\"id\":3,\"watch\":\xff}\n");
        assert_eq!(answer["kind"], "invalid", "{answer}");
        assert!(ask(&mut watcher, LAB_INFO).get("ok").is_some(), "the other client goes on");
        drop((watcher, long));
        lab.teardown();
    }

    /// Nodes a, b and c on a fake host whose `sleep N` takes N seconds (b
    /// and c linked), served; and that host.
    fn served_nodes(scratch: &Path) -> (SharedLab, PathBuf, FakeHost) {
        use crate::vocab::NodeKind;
        let host = FakeHost::default();
        host.sleep_on_exec_of("sleep");
        let mut lab = Lab::new("busy", Box::new(host.clone()), &scratch.join("run"), None).expect("lab");
        for name in ["a", "b", "c"] {
            let node = Command::AddNode { name: name.into(), kind: NodeKind::Ns, options: Default::default() };
            lab.execute(node).expect("node");
        }
        let link = Command::AddLink {
            a: "b".into(),
            b: "c".into(),
            ip_a: Some("10.0.2.1/24".parse().unwrap()),
            ip_b: Some("10.0.2.2/24".parse().unwrap()),
            options: Default::default(),
        };
        lab.execute(link).expect("link");
        let shared = lab.serve().expect("served");
        let socket = shared.lock().run_dir().expect("run dir").join(SOCKET);
        (shared, socket, host)
    }

    fn exec_line(id: u64, node: &str, argv: &[&str]) -> Vec<u8> {
        let argv = serde_json::to_string(argv).unwrap();
        format!(
            "{{\"id\":{id},\"command\":{{\"op\":\"exec\",\"node\":\"{node}\",\"request\":{{\"argv\":{argv},\"stdin\":[],\"timeout\":{{\"secs\":60,\"nanos\":0}}}}}}}}\n"
        )
        .into_bytes()
    }

    /// Waits until the fake host ran `call`.
    fn until_called(host: &FakeHost, call: &str) {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !host.calls().iter().any(|c| c == call) {
            assert!(std::time::Instant::now() < end, "never called: {call}; calls: {:?}", host.calls());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// How long the answer to a command took, which must be well under
    /// the exec that runs meanwhile.
    const QUICK: Duration = Duration::from_millis(500);

    #[test]
    fn a_long_exec_on_one_node_holds_up_no_command_of_any_client() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (lab, socket, host) = served_nodes(scratch.path());
        let mut slow = connect(&socket);
        let started = std::time::Instant::now();
        slow.1.write_all(&exec_line(1, "a", &["sleep", "3"])).unwrap();
        until_called(&host, r#"exec a ["sleep", "3"]"#);

        // Another client: commands on the other nodes and on the whole lab
        // are answered at once while a's exec runs.
        let mut other = connect(&socket);
        let link_again = br#"{"id":6,"command":{"op":"add_link","a":"b","b":"c","ip_a":null,"ip_b":null,"options":{}}}
"#;
        let commands: [(&str, Vec<u8>); 8] = [
            ("lab_info", LAB_INFO.to_vec()),
            ("counters", b"{\"id\":2,\"command\":{\"op\":\"counters\"}}\n".to_vec()),
            (
                "ping b -> c",
                br#"{"id":3,"command":{"op":"ping","from":"b","to":{"node":"c"},"timeout_ms":100}}
"#
                .to_vec(),
            ),
            ("exec on b", exec_line(4, "b", &["true"])),
            ("exec on c", exec_line(5, "c", &["true"])),
            ("add_link b c", link_again.to_vec()),
            ("node_info a (lent)", b"{\"id\":7,\"command\":{\"op\":\"node_info\",\"node\":\"a\"}}\n".to_vec()),
            (
                "add_node d",
                br#"{"id":8,"command":{"op":"add_node","name":"d","kind":"ns"}}
"#
                .to_vec(),
            ),
        ];
        for (what, line) in commands {
            let asked = std::time::Instant::now();
            let answer = ask(&mut other, &line);
            let took = asked.elapsed();
            eprintln!("{what}: answered in {took:?} while a's exec runs");
            assert!(answer.get("ok").is_some(), "{what}: {answer}");
            assert!(took < QUICK, "{what} took {took:?} while an exec ran on another node");
        }

        // The exec's own connection goes on too: requests with an id are
        // answered as they are done, the exec's last.
        let asked = std::time::Instant::now();
        slow.1.write_all(b"{\"id\":11,\"command\":{\"op\":\"lab_info\"}}\n").unwrap();
        slow.1.write_all(&exec_line(12, "b", &["true"])).unwrap();
        for id in [11, 12] {
            let answer = next_line(&mut slow.0);
            assert_eq!(answer["id"], id, "answered in order of completion: {answer}");
            assert!(answer.get("ok").is_some(), "{answer}");
        }
        let took = asked.elapsed();
        eprintln!("two requests pipelined behind the exec on its own connection: answered in {took:?}");
        assert!(took < QUICK, "requests behind a long exec on one connection took {took:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "all that happened while the exec ran");

        let answer = next_line(&mut slow.0);
        assert_eq!((answer["id"].as_u64(), answer["ok"]["status"].as_i64()), (Some(1), Some(0)), "{answer}");
        assert!(started.elapsed() >= Duration::from_secs(3), "the exec took its time");
        drop((slow, other));
        lab.teardown();
    }

    #[test]
    fn commands_on_the_same_node_wait_for_each_other() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (lab, socket, host) = served_nodes(scratch.path());
        let mut first = connect(&socket);
        let started = std::time::Instant::now();
        first.1.write_all(&exec_line(1, "a", &["sleep", "1"])).unwrap();
        until_called(&host, r#"exec a ["sleep", "1"]"#);
        // A second exec and an address on a, from another client: each
        // runs once a is back from the first exec.
        let mut second = connect(&socket);
        let answer = ask(&mut second, &exec_line(2, "a", &["true"]));
        assert_eq!(answer["ok"]["status"], 0, "{answer}");
        assert!(started.elapsed() >= Duration::from_secs(1), "the second exec waited for the first");
        let answer = next_line(&mut first.0);
        assert_eq!(answer["ok"]["status"], 0, "{answer}");
        let calls = host.calls();
        let at = |c: &str| calls.iter().position(|x| x == c).unwrap_or_else(|| panic!("{c}: {calls:?}"));
        assert!(at(r#"exec a ["sleep", "1"]"#) < at(r#"exec a ["true"]"#));

        host.calls.lock().unwrap().clear();
        first.1.write_all(&exec_line(3, "a", &["sleep", "1"])).unwrap();
        until_called(&host, r#"exec a ["sleep", "1"]"#);
        let joined =
            br#"{"id":4,"command":{"op":"add_link","a":"a","b":"b","ip_a":"10.0.1.1/24","ip_b":null,"options":{}}}
"#;
        let asked = std::time::Instant::now();
        let answer = ask(&mut second, joined);
        assert!(answer.get("ok").is_some(), "{answer}");
        assert!(asked.elapsed() >= Duration::from_millis(500), "add_link waited for a's exec: {:?}", asked.elapsed());
        drop((first, second));
        lab.teardown();
    }

    #[test]
    fn stopping_or_deleting_a_node_ends_the_exec_on_it_with_a_clear_error() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (lab, socket, host) = served_nodes(scratch.path());
        let mut long = connect(&socket);
        let mut other = connect(&socket);
        for (n, (op, why)) in
            [("stop_node", "it was stopped"), ("delete_node", "it was deleted")].into_iter().enumerate()
        {
            let id = n as u64 * 10;
            long.1.write_all(&exec_line(id + 1, "a", &["sleep", "60"])).unwrap();
            until_called(&host, r#"exec a ["sleep", "60"]"#);
            let asked = std::time::Instant::now();
            let stop = format!("{{\"id\":{},\"command\":{{\"op\":\"{op}\",\"node\":\"a\"}}}}\n", id + 2);
            let answer = ask(&mut other, stop.as_bytes());
            let took = asked.elapsed();
            eprintln!("{op} of a node running a 60 s exec: answered in {took:?}");
            assert!(answer.get("ok").is_some(), "{answer}");
            assert!(took < Duration::from_secs(2), "{op} waited {took:?} for the exec");
            let ended = next_line(&mut long.0);
            assert_eq!(ended["id"], id + 1, "{ended}");
            assert_eq!(ended["kind"], "state", "{ended}");
            let message = ended["error"].as_str().unwrap_or_default();
            assert!(
                message.contains("node \"a\" ended while the command ran on it") && message.contains(why),
                "{ended}"
            );
            assert!(host.calls().iter().any(|c| c == "kill a"), "{:?}", host.calls());
            if op == "stop_node" {
                // Started again, it runs commands as before.
                let start = br#"{"id":3,"command":{"op":"start_node","node":"a"}}
"#;
                assert!(ask(&mut other, start).get("ok").is_some());
                host.calls.lock().unwrap().clear();
                assert_eq!(ask(&mut other, &exec_line(4, "a", &["true"]))["ok"]["status"], 0);
            }
        }
        let info = ask(&mut other, LAB_INFO);
        assert_eq!((info["ok"]["nodes"].as_u64(), info["ok"]["running"].as_u64()), (Some(2), Some(2)), "{info}");
        drop((long, other));
        lab.teardown();
    }

    #[test]
    fn the_lab_ends_without_waiting_for_a_long_exec() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (lab, socket, host) = served_nodes(scratch.path());
        let mut long = connect(&socket);
        long.1.write_all(&exec_line(1, "a", &["sleep", "60"])).unwrap();
        until_called(&host, r#"exec a ["sleep", "60"]"#);
        let asked = std::time::Instant::now();
        lab.teardown();
        let took = asked.elapsed();
        eprintln!("teardown with a 60 s exec running: {took:?}");
        assert!(took < Duration::from_secs(3), "teardown took {took:?}");
        assert!(lab.lock().is_torn_down());
        let calls = host.calls();
        let at = |c: &str| calls.iter().position(|x| x == c).unwrap_or_else(|| panic!("{c}: {calls:?}"));
        assert!(at("kill a") < at("stop a"), "killed, given back, then stopped: {calls:?}");
        // The exec's client is told, or sees the lab close.
        let mut rest = String::new();
        let _ = long.0.read_to_string(&mut rest);
        assert!(rest.is_empty() || rest.contains("ended while the command ran"), "{rest}");
    }

    #[test]
    fn requests_are_parsed_and_bad_ones_explained() {
        let (id, a) = parse_request(r#"{"id":3,"command":{"op":"add_lan","name":"sw"}}"#);
        assert_eq!(id, Some(3));
        assert!(matches!(a, Ok(Action::Command(c)) if matches!(*c, Command::AddLan { .. })));
        assert!(matches!(parse_request(r#"{"watch":true}"#).1, Ok(Action::Watch)));
        let (id, a) = parse_request(r#"{"id":4,"command":{"op":"fly"}}"#);
        assert_eq!(id, Some(4), "the id survives a bad command");
        assert!(a.unwrap_err().contains("malformed request"));
        let (id, a) = parse_request("not json");
        assert_eq!(id, None);
        assert!(a.unwrap_err().contains("malformed request"));
        assert!(parse_request(r#"{"id":5}"#).1.unwrap_err().contains("needs one of"));
        assert!(parse_request(r#"{"watch":true,"stop":true}"#).1.unwrap_err().contains("one thing"));
        assert!(parse_request(r#"{"wathc":true}"#).1.unwrap_err().contains("unknown field"));
    }

    #[test]
    fn answers_carry_a_reply_or_an_error() {
        assert_eq!(Answer::new(Some(1), Ok(Reply::Done)).line(), r#"{"id":1,"ok":{"reply":"done"}}"#);
        assert_eq!(
            Answer::failed(None, ErrorKind::NotFound, "no").line(),
            r#"{"id":null,"error":"no","kind":"not_found"}"#
        );
        let back: Answer = serde_json::from_str(r#"{"id":2,"ok":{"reply":"ping","rtt_us":5}}"#).unwrap();
        assert!(matches!(back.ok, Some(Reply::Ping { rtt_us: Some(5) })));
    }
}
