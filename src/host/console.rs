//! Node consoles: a relay thread per machine that owns the console line,
//! logs it, keeps the recent screen, and lets any number of clients attach
//! through a unix socket (`<run dir>/<node>.console.sock`) and detach again
//! while the machine runs on; and the terminal client behind
//! `clonet console NODE` and `n.console()`.
//!
//! Owns: console lines and their sockets. Must not touch: the switch, the
//! topology.
use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How much recent output an attaching client is shown first.
pub const SCROLLBACK: usize = 16 * 1024;
/// The byte that detaches a client: Ctrl-] (as telnet and virsh do).
pub const DETACH: u8 = 0x1d;
/// The most bytes a console log holds before it is rotated: a guest
/// printing without end fills at most twice this on the host.
pub const CONSOLE_LOG_CAP: u64 = 8 << 20;

/// A log file that, past `cap` bytes, is renamed to `<name>.1` (replacing
/// the one before) and started again, so it keeps the newest output and
/// never takes more than `2 × cap` of the disk.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    cap: u64,
}

impl RotatingLog {
    /// Opens `path` to append to it (a restarted machine's log goes on).
    pub fn open(path: &Path, cap: u64) -> io::Result<RotatingLog> {
        let file = Self::open_file(path, false)?;
        let written = file.metadata()?.len();
        Ok(RotatingLog { path: path.to_path_buf(), file, written, cap })
    }

    fn open_file(path: &Path, fresh: bool) -> io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | if fresh { libc::O_TRUNC } else { 0 })
            .open(path)
    }

    /// The name of the older half.
    pub fn rotated_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_os_string();
        name.push(".1");
        PathBuf::from(name)
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.written > 0 && self.written.saturating_add(data.len() as u64) > self.cap {
            std::fs::rename(&self.path, Self::rotated_path(&self.path))?;
            self.file = Self::open_file(&self.path, true)?;
            self.written = 0;
        }
        // One write bigger than the cap keeps only its end.
        let data = &data[data.len().saturating_sub(usize::try_from(self.cap).unwrap_or(usize::MAX))..];
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }
}

/// The last `cap` bytes written, to replay to a client that attaches.
#[derive(Debug)]
pub struct Scrollback {
    bytes: VecDeque<u8>,
    cap: usize,
}

impl Scrollback {
    pub fn new(cap: usize) -> Scrollback {
        Scrollback { bytes: VecDeque::with_capacity(cap), cap }
    }

    pub fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.cap)..];
        let excess = (self.bytes.len() + data.len()).saturating_sub(self.cap);
        self.bytes.drain(..excess);
        self.bytes.extend(data);
    }

    pub fn contents(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }
}

/// Splits what a client typed at the detach byte: the bytes to forward, and
/// whether the client asked to detach.
pub fn split_detach(input: &[u8]) -> (&[u8], bool) {
    match input.iter().position(|b| *b == DETACH) {
        Some(i) => (&input[..i], true),
        None => (input, false),
    }
}

/// A running relay; it ends by itself when the machine closes its console.
pub struct ConsoleRelay {
    socket: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl ConsoleRelay {
    /// Relays `line` (the host end of the machine's console) to `log` and to
    /// the clients of a new socket at `socket`.
    pub fn spawn(line: OwnedFd, log: RotatingLog, socket: &Path) -> io::Result<ConsoleRelay> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        listener.set_nonblocking(true)?;
        let path = socket.to_path_buf();
        let thread =
            std::thread::Builder::new().name("console".into()).spawn(move || relay(line, log, listener, &path))?;
        Ok(ConsoleRelay { socket: socket.to_path_buf(), thread: Some(thread) })
    }

    /// Waits for the relay to end (after the machine is gone).
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn relay(line: OwnedFd, mut log: RotatingLog, listener: UnixListener, socket: &Path) {
    let mut clients: Vec<UnixStream> = Vec::new();
    let mut screen = Scrollback::new(SCROLLBACK);
    let mut buf = [0u8; 4096];
    loop {
        let mut fds =
            vec![PollFd::new(line.as_fd(), PollFlags::POLLIN), PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        fds.extend(clients.iter().map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN)));
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        // Clients to drop, by index into `clients` as polled.
        let mut dead = vec![false; clients.len()];
        if ready[0] {
            match nix::unistd::read(&line, &mut buf) {
                Ok(0) | Err(nix::Error::EIO) | Err(nix::Error::EBADF) => break,
                Ok(n) => {
                    let _ = log.write(&buf[..n]);
                    screen.push(&buf[..n]);
                    // A client that cannot keep up loses output, never the machine.
                    for (c, dead) in clients.iter_mut().zip(dead.iter_mut()) {
                        *dead |= matches!(c.write(&buf[..n]), Err(e) if e.kind() != io::ErrorKind::WouldBlock);
                    }
                }
                Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {}
                Err(_) => break,
            }
        }
        for (i, c) in clients.iter_mut().enumerate() {
            if !ready[2 + i] || dead[i] {
                continue;
            }
            match io::Read::read(c, &mut buf) {
                Ok(0) => dead[i] = true,
                Ok(n) => {
                    let _ = write_all_fd(line.as_fd(), &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => dead[i] = true,
            }
        }
        let mut index = 0;
        clients.retain(|_| {
            index += 1;
            !dead[index - 1]
        });
        // Accept last: `ready` only covers the clients polled above.
        if ready[1] {
            while let Ok((client, _)) = listener.accept() {
                if client.set_nonblocking(true).is_ok() {
                    let mut c = client;
                    let _ = c.write(&screen.contents());
                    clients.push(c);
                }
            }
        }
    }
    let _ = std::fs::remove_file(socket);
}

fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(nix::Error::EAGAIN) => {
                let mut p = [PollFd::new(fd, PollFlags::POLLOUT)];
                poll(&mut p, PollTimeout::from(1000u16))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Where a console is reached.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleTarget {
    /// A machine's console relay socket (uml, kvm).
    Socket(PathBuf),
    /// A namespace node, which has no console: a shell inside it, entered
    /// through the node's init (this pid).
    Namespace(i32),
}

/// Puts the terminal on stdin in raw mode until dropped (nothing if stdin
/// is not a terminal).
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else { return RawTerminal(None) };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal(None);
        }
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(io::stdin(), nix::sys::termios::SetArg::TCSANOW, saved);
        }
    }
}

/// Attaches the terminal to `node`'s console until Ctrl-] (or end of
/// input); the node runs on.
pub fn attach(node: &str, target: &ConsoleTarget) -> io::Result<()> {
    match target {
        ConsoleTarget::Socket(path) => attach_socket(node, path),
        ConsoleTarget::Namespace(pid) => {
            eprintln!("clonet: {node} is a namespace node: a shell inside it (exit or Ctrl-D leaves)");
            let status = std::process::Command::new("/proc/self/exe")
                .arg("__ns-enter")
                .arg(pid.to_string())
                .args(["--", "/bin/sh", "-i"])
                .status()?;
            if !status.success() && status.code() != Some(130) {
                eprintln!("clonet: the shell in {node} ended with {status}");
            }
            Ok(())
        }
    }
}

fn attach_socket(node: &str, path: &Path) -> io::Result<()> {
    let mut sock = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e} (is the node running?)", path.display())))?;
    eprint!("clonet: connected to the console of {node}; Ctrl-] detaches\r\n");
    let stdin = io::stdin();
    let mut stdout = io::stdout();
    let _raw = RawTerminal::enter();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN), PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let (typed, from_node) =
            (fds[0].revents().is_some_and(|r| !r.is_empty()), fds[1].revents().is_some_and(|r| !r.is_empty()));
        if from_node {
            let n = io::Read::read(&mut sock, &mut buf)?;
            if n == 0 {
                eprint!("\r\nclonet: the console of {node} closed (the node stopped)\r\n");
                return Ok(());
            }
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
        }
        if typed {
            let n = nix::unistd::read(&stdin, &mut buf)?;
            let (forward, detach) = split_detach(&buf[..n]);
            sock.write_all(forward)?;
            if detach || n == 0 {
                eprint!("\r\nclonet: detached from {node}; it keeps running\r\n");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrollback_keeps_the_latest_bytes() {
        let mut s = Scrollback::new(5);
        s.push(b"abc");
        assert_eq!(s.contents(), b"abc");
        s.push(b"def");
        assert_eq!(s.contents(), b"bcdef");
        s.push(b"0123456789");
        assert_eq!(s.contents(), b"56789");
    }

    #[test]
    fn input_stops_at_the_detach_byte() {
        assert_eq!(split_detach(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_detach(b"ls\x1dmore"), (&b"ls"[..], true));
    }

    #[test]
    fn a_relay_logs_replays_and_carries_input_both_ways() {
        let dir = std::env::temp_dir().join(format!("clonet-console-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (machine, host) = UnixStream::pair().unwrap();
        let log_path = dir.join("log");
        let socket = dir.join("c.sock");
        let mut relay =
            ConsoleRelay::spawn(OwnedFd::from(host), RotatingLog::open(&log_path, CONSOLE_LOG_CAP).unwrap(), &socket)
                .unwrap();
        let mut machine = machine;
        machine.write_all(b"login: ").unwrap();
        // A client that attaches later first sees what was already shown.
        let mut client = loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if std::fs::read(&log_path).unwrap() == b"login: " {
                break UnixStream::connect(&socket).unwrap();
            }
        };
        let mut got = [0u8; 7];
        io::Read::read_exact(&mut client, &mut got).unwrap();
        assert_eq!(&got, b"login: ");
        client.write_all(b"root\n").unwrap();
        let mut typed = [0u8; 5];
        io::Read::read_exact(&mut machine, &mut typed).unwrap();
        assert_eq!(&typed, b"root\n");
        // The machine going away ends the relay and removes the socket.
        drop(machine);
        relay.join();
        assert!(!socket.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_console_log_is_rotated_and_never_holds_more_than_twice_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.console.log");
        let mut log = RotatingLog::open(&path, 1000).unwrap();
        for i in 0..500u32 {
            log.write(format!("line {i:05}\n").as_bytes()).unwrap();
        }
        log.write(&[b'x'; 5000]).unwrap();
        let (now, older) = (std::fs::read(&path).unwrap(), std::fs::read(RotatingLog::rotated_path(&path)).unwrap());
        assert_eq!(now, vec![b'x'; 1000], "a write larger than the cap keeps its end");
        assert!(older.len() <= 1000 && older.ends_with(b"line 00499\n"), "{}", String::from_utf8_lossy(&older));
        // Reopened (a restarted machine), it goes on from its size.
        let mut again = RotatingLog::open(&path, 1000).unwrap();
        again.write(b"y").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"y", "rotated at once: the log was full");
    }
}
