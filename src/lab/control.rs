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
//! Owns: the listener, one thread per client (plus one writer each), the
//! ticker that notices dead nodes and sends counters to watchers, and the
//! client side (`Client`). Must not touch: the topology (only through
//! `Lab::execute`), the data plane (captures go through `CaptureControl`).
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::capture::{self, CaptureRequest, PortDirectory};
use super::command::{Command, Reply};
use super::errors::{ErrorKind, RemoteError};
use super::Lab;
use crate::switch::CaptureControl;

/// Name of the control socket in the run directory.
pub const SOCKET: &str = "control.sock";
/// Lines (answers and events) queued for one client before its events
/// are dropped (it is then told it lagged).
pub const CLIENT_QUEUE: usize = 1024;
/// The longest request line accepted.
const MAX_LINE: u64 = 4 << 20;

/// A lab shared by the thread that runs its script or REPL and the
/// control socket's clients.
pub type SharedLab = Arc<Mutex<Lab>>;

/// Locks a shared lab; a client thread that panicked while holding it
/// does not make the lab unusable.
pub fn lock(lab: &Mutex<Lab>) -> MutexGuard<'_, Lab> {
    lab.lock().unwrap_or_else(PoisonError::into_inner)
}

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

/// What the server's threads share.
struct Shared {
    lab: Weak<Mutex<Lab>>,
    stop: AtomicBool,
    directory: PortDirectory,
    captures: CaptureControl,
    /// Every open client connection by number, shut down when the lab ends.
    clients: Mutex<std::collections::HashMap<u64, UnixStream>>,
    /// Work for the executor thread.
    jobs: Mutex<mpsc::Sender<Job>>,
    next_client: std::sync::atomic::AtomicU64,
}

/// Work for the lab, done on the server's executor thread.
type Job = Box<dyn FnOnce(&mut Lab) + Send>;

impl Shared {
    /// Runs `f` on the lab, on the executor thread, unless the lab has
    /// ended. Not on the client's own thread: node processes die with the
    /// thread that started them (PDEATHSIG), and a client may go away
    /// while its nodes should live on.
    fn with_lab<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Lab) -> Result<T, RemoteError> + Send + 'static,
    ) -> Result<T, RemoteError> {
        let (done, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |lab| {
            // A job that panics (a bug, never a guest's or a client's
            // input, which is validated first) fails alone: its client
            // gets an error and the executor thread, and so the lab, goes
            // on for every other client.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(lab)));
            let _ = done.send(outcome.unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                Err(RemoteError::new(ErrorKind::Host, format!("the command failed inside clonet: {why}")))
            }));
        });
        let ended = || RemoteError::new(ErrorKind::Unavailable, "the lab has ended");
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).send(job).map_err(|_| ended())?;
        result.recv().map_err(|_| ended())?
    }
}

/// Does the clients' work on the lab, one job at a time, for as long as
/// the server runs. Not joined at shutdown: it may be waiting for the lab
/// that the thread shutting the server down holds; it ends by itself.
fn execute_jobs(jobs: Receiver<Job>, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(job) = jobs.recv_timeout(Duration::from_millis(100)) else { continue };
        let Some(lab) = shared.lab.upgrade() else { return };
        let mut guard = lock(&lab);
        if guard.is_torn_down() || shared.stop.load(Ordering::Relaxed) {
            // Dropping the job tells its client the lab has ended.
            return;
        }
        job(&mut guard);
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
            let guard = lock(lab);
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
            lab: Arc::downgrade(lab),
            stop: AtomicBool::new(false),
            directory,
            captures,
            clients: Mutex::new(Default::default()),
            next_client: Default::default(),
        });
        // Dropping these (at shutdown) wakes the accept loop and the ticker
        // at once, so a lab ends without waiting for their next turn.
        let (wake_read, wake_write) = nix::unistd::pipe().map_err(io::Error::from)?;
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
                let number = shared.next_client.fetch_add(1, Ordering::Relaxed);
                if let Ok(copy) = client.try_clone() {
                    shared.clients.lock().unwrap_or_else(PoisonError::into_inner).insert(number, copy);
                }
                let shared = shared.clone();
                let _ = std::thread::Builder::new().name("clonet-control-client".into()).spawn(move || {
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
        let Ok(mut guard) = lab.try_lock() else { continue };
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
        let mut line = String::new();
        match reader.by_ref().take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE {
            let _ = writeln!(out, "{}", Answer::failed(None, ErrorKind::Invalid, "request line too long").line());
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (id, action) = parse_request(&line);
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
            Ok(Action::Command(cmd)) => {
                shared.with_lab(move |lab| lab.execute(*cmd).map_err(|e| RemoteError::new(e.kind(), e.to_string())))
            }
            Ok(Action::Watch) => match watcher {
                Some(_) => Ok(Reply::Done),
                None => {
                    let lines = tx.clone();
                    shared.with_lab(move |lab| Ok(lab.watch(lines))).map(|w| {
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
            lab.unwatch(w);
            Ok(())
        });
    }
    drop(tx);
    if let Some(w) = writer {
        let _ = w.join();
    }
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
