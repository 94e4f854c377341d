//! The web GUI of a running lab (`clonet gui LAB`, `clonet serve --gui`):
//! a small HTTP server on 127.0.0.1 at a random port, guarded by a random
//! token printed in its URL's fragment. It serves a build-free page (plain
//! ES module and SVG, `assets/`), which keeps the token in the tab's
//! `sessionStorage` and sends it with each request that reaches the lab
//! (never in a cookie: see `http::Head::token`), and bridges the browser
//! to the lab:
//!
//! - `/ws`: a WebSocket whose text messages are the lab's control-socket
//!   protocol, relayed both ways line by line (commands, answers, events);
//! - `/console?node=N`: a WebSocket to the node's console (a machine's
//!   serial console, or a shell inside an ns node);
//! - `/capture?target=T&seconds=S`: a pcap download of S seconds.
//!
//! Bounds, since anything on this machine can connect: at most
//! [`MAX_CONNECTIONS`] connections at once (one more is closed at once and
//! counted), a request head of at most 16 KiB that must have arrived
//! [`HEAD_DEADLINE`] after the connection however its bytes trickle, a
//! client that stops taking what is written is given up after
//! [`WRITE_TIMEOUT`], and a WebSocket message of at most the control
//! socket's line.
//!
//! Owns: the listener and one thread per connection. Must not touch: the
//! lab (only through its control socket, like any other client).
pub mod http;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::lab::command::{Command, Reply};
use crate::lab::control::{self, Client, ConnectionLimit, Request};
use http::{authorize, parse_head, response, Head, Route};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once, each on a thread of its own (and a relay
/// holds one or two more): one more is closed at once, so a flood of
/// connections cannot exhaust the process's threads. A page uses a few.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client has, from its connection, to send its whole request
/// head: a total, so one that sends a byte now and then (slow loris) does
/// not hold a thread any longer.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// How long a write may wait for the client to take what it was sent.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest capture a download may ask for.
const MAX_CAPTURE_SECONDS: u64 = 600;

/// A running GUI server.
pub struct Gui {
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// 128 random bits, as hex.
fn new_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Gui {
    /// Serves the GUI of the lab whose run directory is `run_dir`.
    pub fn start(run_dir: &Path) -> io::Result<Gui> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let token = new_token()?;
        // In the fragment, which the browser keeps to itself: the page's
        // script takes it from there.
        let url = format!("http://127.0.0.1:{port}/#token={token}");
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let site = Arc::new(Site { port, token, run_dir: run_dir.to_path_buf(), stop: stop.clone() });
        let limit = ConnectionLimit::new(MAX_CONNECTIONS);
        let thread = std::thread::Builder::new().name("clonet-gui".into()).spawn(move || {
            while !site.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let accepted = Instant::now();
                        let slot = match limit.admit() {
                            Ok(slot) => slot,
                            Err(refused) => {
                                refuse_busy(stream, refused);
                                continue;
                            }
                        };
                        let site = site.clone();
                        let _ = std::thread::Builder::new().name("clonet-gui-client".into()).spawn(move || {
                            let _slot = slot;
                            let _ = site.serve(stream, accepted);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // A client, or `stop` seen within 50 ms.
                        control::wait_readable(&[std::os::fd::AsFd::as_fd(&listener)], 50)
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
        Ok(Gui { url, stop, thread: Some(thread) })
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Gui {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What every connection's thread needs.
struct Site {
    port: u16,
    token: String,
    /// The lab's run directory (its control socket is there).
    run_dir: PathBuf,
    stop: Arc<AtomicBool>,
}

/// Over the ceiling: a short 503 if the socket takes it at once, then
/// closed. Never waits on the client: the accept loop calls it.
fn refuse_busy(mut stream: TcpStream, refused: u64) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(&plain(503, "Service Unavailable", "too many connections; try again\n"));
    if control::worth_reporting(refused) {
        eprintln!(
            "clonet: the web GUI refused a connection: {MAX_CONNECTIONS} are open already ({refused} refused so far)"
        );
    }
}

/// Why no request head was read.
enum HeadError {
    /// Not all of it before the deadline.
    Late,
    /// More than `MAX_HEAD` bytes.
    TooLarge,
    /// The client closed the connection first.
    Closed,
    Io(io::Error),
}

/// Reads a request head (up to the blank line) without reading past it:
/// all of it before `deadline`, however slowly its bytes come, and at
/// most `MAX_HEAD` bytes.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        // Each read may wait only for what is left of the whole head's time.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Late);
        }
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        match stream.read(&mut byte) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(_) => buf.push(byte[0]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
    Ok(buf)
}

fn plain(status: u16, reason: &str, text: &str) -> Vec<u8> {
    response(status, reason, "text/plain; charset=utf-8", &[], text.as_bytes())
}

impl Site {
    fn serve(&self, mut stream: TcpStream, accepted: Instant) -> io::Result<()> {
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let raw = match read_head(&mut stream, accepted + HEAD_DEADLINE) {
            Ok(raw) => raw,
            Err(HeadError::Late) => {
                return stream.write_all(&plain(408, "Request Timeout", "the request took too long to arrive\n"))
            }
            Err(HeadError::TooLarge) => {
                return stream.write_all(&plain(431, "Request Header Fields Too Large", "the request is too large\n"))
            }
            Err(HeadError::Closed) => return Ok(()),
            Err(HeadError::Io(e)) => return Err(e),
        };
        let Some(head) = parse_head(&raw) else {
            return stream.write_all(&plain(400, "Bad Request", "malformed request\n"));
        };
        let route = Route::of(&head);
        if let Err(refusal) = authorize(&head, route, self.port, &self.token) {
            let (code, reason) = refusal.status();
            let why = match refusal {
                http::Refusal::Forbidden(why) => why,
                http::Refusal::Unauthorized => "a valid token is needed: use the URL clonet printed",
            };
            return stream.write_all(&plain(code, reason, &format!("{why}\n")));
        }
        if head.method != "GET" {
            return stream.write_all(&plain(405, "Method Not Allowed", "only GET\n"));
        }
        let port = self.port;
        match route {
            Route::Page => stream.write_all(&response(
                200,
                "OK",
                "text/html; charset=utf-8",
                &[
                    (
                        "Content-Security-Policy",
                        format!(
                            "default-src 'self'; connect-src 'self' ws://127.0.0.1:{port} ws://localhost:{port}; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
                        ),
                    ),
                    // Framed by another page, ours could be clicked on
                    // through it (and would find the token in its tab).
                    ("X-Frame-Options", "DENY".into()),
                    ("Referrer-Policy", "no-referrer".into()),
                ],
                INDEX.as_bytes(),
            )),
            Route::Script => {
                stream.write_all(&response(200, "OK", "text/javascript; charset=utf-8", &[], APP_JS.as_bytes()))
            }
            Route::Style => stream.write_all(&response(200, "OK", "text/css; charset=utf-8", &[], STYLE.as_bytes())),
            Route::Capture => self.capture(&head, stream),
            Route::Control => {
                let ws = upgrade(&head, stream)?;
                self.relay_control(ws)
            }
            Route::Console => {
                let node = head.query.get("node").cloned().unwrap_or_default();
                let ws = upgrade(&head, stream)?;
                self.relay_console(ws, &node)
            }
            Route::NotFound => stream.write_all(&plain(404, "Not Found", "no such page\n")),
        }
    }

    /// A pcap download: the lab's capture stream for `seconds` seconds.
    fn capture(&self, head: &Head, mut stream: TcpStream) -> io::Result<()> {
        let target = head.query.get("target").cloned().unwrap_or_default();
        let seconds: u64 = head.query.get("seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
        if target.is_empty() || seconds == 0 || seconds > MAX_CAPTURE_SECONDS {
            return stream.write_all(&plain(400, "Bad Request", "capture?target=LINK&seconds=1..600\n"));
        }
        let opened = Client::connect(&self.run_dir).and_then(|mut c| {
            let req = crate::lab::capture::CaptureRequest { target: target.clone(), count: None };
            c.request(Request { capture: Some(req), ..Default::default() }, |_| {}).map_err(|e| e.to_string())?;
            Ok(c.into_reader())
        });
        let mut pcap = match opened {
            Ok(r) => r,
            Err(e) => return stream.write_all(&plain(400, "Bad Request", &format!("{e}\n"))),
        };
        let name: String =
            target.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.tcpdump.pcap\r\nContent-Disposition: attachment; filename=\"{name}.pcap\"\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes())?;
        let end = Instant::now() + Duration::from_secs(seconds);
        pcap.get_ref().set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = vec![0u8; 64 * 1024];
        while Instant::now() < end && !self.stop.load(Ordering::Relaxed) {
            match pcap.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => stream.write_all(&buf[..n])?,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Relays the control protocol between the page and the lab.
    fn relay_control(&self, mut ws: WebSocket<TcpStream>) -> io::Result<()> {
        let lab = UnixStream::connect(self.run_dir.join(control::SOCKET))?;
        let mut to_lab = lab.try_clone()?;
        let from_lab = spawn_line_reader(lab);
        let result = self.pump(&mut ws, &from_lab, |text| to_lab.write_all(control_line(text).as_bytes()));
        // The page went away: end the lab's side too (its watcher, our reader).
        let _ = to_lab.shutdown(std::net::Shutdown::Both);
        result
    }

    /// Relays a node's console: a machine's console socket, or a shell in
    /// an ns node (through pipes: line by line, no terminal).
    fn relay_console(&self, mut ws: WebSocket<TcpStream>, node: &str) -> io::Result<()> {
        let target = Client::connect(&self.run_dir)
            .and_then(|mut c| c.execute(Command::Console { node: node.to_string() }).map_err(|e| e.to_string()));
        let target = match target {
            Ok(Reply::Console(t)) => t,
            Ok(_) => return Ok(()),
            Err(e) => {
                let _ = ws.send(Message::text(format!("clonet: {e}\r\n")));
                let _ = ws.close(None);
                return Ok(());
            }
        };
        match target {
            crate::host::console::ConsoleTarget::Socket(path) => {
                let sock = UnixStream::connect(&path)?;
                let mut input = sock.try_clone()?;
                let output = spawn_byte_readers(vec![Box::new(sock)]);
                let result = self.pump(&mut ws, &output, |text| input.write_all(text.as_bytes()));
                let _ = input.shutdown(std::net::Shutdown::Both);
                result
            }
            crate::host::console::ConsoleTarget::Namespace(pid) => {
                let mut shell = std::process::Command::new("/proc/self/exe")
                    .arg("__ns-enter")
                    .arg(pid.to_string())
                    .args(["--", "/bin/sh", "-i"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()?;
                let mut input = shell.stdin.take().expect("piped");
                let output = spawn_byte_readers(vec![
                    Box::new(shell.stdout.take().expect("piped")),
                    Box::new(shell.stderr.take().expect("piped")),
                ]);
                let result = self.pump(&mut ws, &output, |text| input.write_all(text.as_bytes()));
                let _ = shell.kill();
                let _ = shell.wait();
                result
            }
        }
    }

    /// Moves text both ways until either side ends: what the page sends
    /// goes to `send`, what arrives on `from` goes to the page.
    fn pump(
        &self,
        ws: &mut WebSocket<TcpStream>,
        from: &std::sync::mpsc::Receiver<String>,
        mut send: impl FnMut(&str) -> io::Result<()>,
    ) -> io::Result<()> {
        ws.get_mut().set_read_timeout(Some(Duration::from_millis(20)))?;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let _ = ws.close(None);
                return Ok(());
            }
            match ws.read() {
                Ok(Message::Text(t)) => send(t.as_str())?,
                Ok(Message::Close(_)) => return Ok(()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => return Ok(()),
            }
            loop {
                match from.try_recv() {
                    Ok(text) => {
                        if ws.send(Message::text(text)).is_err() {
                            return Ok(());
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        let _ = ws.close(None);
                        let _ = ws.flush();
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The control-socket request line a page's text message becomes: one
/// line, whatever newlines the message held.
pub(crate) fn control_line(text: &str) -> String {
    let mut line = text.replace('\n', " ");
    line.push('\n');
    line
}

/// The server side of a WebSocket whose handshake is done, as every
/// connection gets it (the fuzz targets read untrusted frames through it).
/// A message from the page is relayed as one line of the control socket,
/// which takes no longer one.
pub(crate) fn server_socket<S: Read + Write>(stream: S) -> WebSocket<S> {
    let config =
        WebSocketConfig::default().max_message_size(Some(control::MAX_LINE)).max_frame_size(Some(control::MAX_LINE));
    WebSocket::from_raw_socket(stream, Role::Server, Some(config))
}

/// Completes a WebSocket handshake the server already read the head of,
/// naming back our subprotocol if the page asked for it (a browser drops
/// a connection whose offered subprotocols got no answer).
fn upgrade(head: &Head, mut stream: TcpStream) -> io::Result<WebSocket<TcpStream>> {
    let Some(key) = head.header("sec-websocket-key") else {
        stream.write_all(&plain(400, "Bad Request", "not a WebSocket handshake\n"))?;
        return Err(io::ErrorKind::InvalidData.into());
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let protocol = if head.subprotocols().any(|p| p == http::SUBPROTOCOL) {
        format!("Sec-WebSocket-Protocol: {}\r\n", http::SUBPROTOCOL)
    } else {
        String::new()
    };
    stream.write_all(
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}\r\n")
            .as_bytes(),
    )?;
    Ok(server_socket(stream))
}

/// Lines of `stream`, on a channel (ends when the stream does).
fn spawn_line_reader(stream: UnixStream) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn forward_bytes(mut from: impl Read, to: &std::sync::mpsc::Sender<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
            break;
        }
    }
}

/// What `sources` print, as text chunks on one channel, which ends when
/// all of them have.
fn spawn_byte_readers(sources: Vec<Box<dyn Read + Send>>) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    for source in sources {
        let tx = tx.clone();
        std::thread::spawn(move || forward_bytes(source, &tx));
    }
    rx
}
