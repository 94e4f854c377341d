//! `uml` nodes: a `linux.uml` process (Debian's user-mode-linux) booting the
//! busybox image on a copy-on-write file, with its NICs hot-plugged through
//! mconsole as vector `bess` transports (SOCK_SEQPACKET, raw frames) that
//! the switch pumps, and commands run by the guest agent on a serial line.
//! No privilege is needed.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::unistd::Pid;

use super::agent::{encode_exec, parse_line, script_for, AgentMsg};
use super::mconsole::Mconsole;
use super::{proc_start_time, ExecOutput, ExecRequest, HostError, NodeSpec, ProcRecord, RunningNode};
use crate::lab::addr::{Cidr, Route};
use crate::switch::frame::MacAddr;
use crate::switch::port::{PortIo, RawPort};
use crate::sys::proc::node_process;

/// How long a guest may take to boot until its agent answers.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a hot-plugged NIC may take to connect once brought up.
const NIC_TIMEOUT: Duration = Duration::from_secs(10);
/// Guest memory when the script does not say.
pub const DEFAULT_MEM_MB: u32 = 64;

fn err(node: &str, what: impl std::fmt::Display) -> HostError {
    HostError::Start(node.to_string(), what.to_string())
}

pub struct UmlNode {
    name: String,
    child: Child,
    record: ProcRecord,
    agent_reader: BufReader<UnixStream>,
    agent_writer: UnixStream,
    next_request: u64,
    mconsole: Mconsole,
    run_dir: PathBuf,
    /// Interface name -> UML device number (vecN).
    nics: HashMap<String, u32>,
    next_nic: u32,
}

/// Boots a uml node. `image` is the base image, never written.
pub fn start(spec: &NodeSpec, image: &Path, mem_mb: u32) -> Result<Box<dyn RunningNode>, HostError> {
    let run_dir = spec.run_dir.clone();
    let cow = run_dir.join(format!("{}.cow", spec.name));
    let uml_dir = run_dir.join("uml");
    std::fs::create_dir_all(&uml_dir).map_err(HostError::io("creating the UML directory"))?;
    let console = std::fs::File::create(run_dir.join(format!("{}.console", spec.name)))
        .map_err(HostError::io("creating the console log"))?;
    let (host_end, guest_end) = UnixStream::pair().map_err(HostError::io("creating the agent line"))?;
    let mut cmd = Command::new("linux.uml");
    cmd.arg(format!("ubd0={},{}", cow.display(), image.display()))
        .args(["root=/dev/ubda", "rw", "init=/init", "con0=null,fd:1", "con=null", "ssl=null", "ssl1=fd:0", "quiet"])
        .arg(format!("mem={mem_mb}M"))
        .arg(format!("umid={}", spec.name))
        .arg(format!("uml_dir={}", uml_dir.display()))
        .arg("clonet.agent=ttyS1")
        .arg(format!("clonet.hostname={}", spec.name))
        .stdin(Stdio::from(OwnedFd::from(guest_end)))
        .stdout(Stdio::from(console.try_clone().map_err(HostError::io("console log"))?))
        .stderr(Stdio::from(console));
    node_process(&mut cmd);
    let mut child =
        cmd.spawn().map_err(|e| err(&spec.name, format!("cannot run linux.uml (install user-mode-linux): {e}")))?;
    let pid = child.id() as i32;
    let fail = |child: &mut Child, why: String| {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = child.wait();
        err(&spec.name, why)
    };
    let record = match proc_start_time(pid) {
        Some(start_time) => ProcRecord { pid, start_time },
        None => return Err(fail(&mut child, "linux.uml exited at once".into())),
    };
    if let Err(e) = host_end.set_read_timeout(Some(BOOT_TIMEOUT)) {
        return Err(fail(&mut child, e.to_string()));
    }
    let mut agent_reader = BufReader::new(match host_end.try_clone() {
        Ok(s) => s,
        Err(e) => return Err(fail(&mut child, e.to_string())),
    });
    let mut hello = String::new();
    match agent_reader.read_line(&mut hello) {
        Ok(n) if n > 0 && matches!(parse_line(hello.trim_end()), Ok(AgentMsg::Hello { .. })) => {}
        _ => {
            let log = std::fs::read_to_string(run_dir.join(format!("{}.console", spec.name))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(fail(
                &mut child,
                format!(
                    "the guest agent did not answer within {BOOT_TIMEOUT:?}; console ends with: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            ));
        }
    }
    let mconsole = match Mconsole::new(&uml_dir.join(&spec.name).join("mconsole"), Duration::from_secs(10)) {
        Ok(m) => m,
        Err(e) => return Err(fail(&mut child, e.to_string())),
    };
    Ok(Box::new(UmlNode {
        name: spec.name.clone(),
        child,
        record,
        agent_reader,
        agent_writer: host_end,
        next_request: 1,
        mconsole,
        run_dir,
        nics: HashMap::new(),
        next_nic: 0,
    }))
}

impl UmlNode {
    /// Runs a script through the agent and waits for its result.
    fn agent(&mut self, script: &str, stdin: &[u8], timeout: Duration) -> Result<ExecOutput, HostError> {
        let id = self.next_request;
        self.next_request += 1;
        let line = encode_exec(id, timeout.as_secs().max(1), script, stdin);
        let what = format!("talking to the agent of {}", self.name);
        self.agent_writer.write_all(line.as_bytes()).map_err(HostError::io(what.clone()))?;
        // The guest kills the command at its timeout; give the answer a margin.
        let _ = self.agent_reader.get_ref().set_read_timeout(Some(timeout + Duration::from_secs(10)));
        loop {
            let mut reply = String::new();
            match self.agent_reader.read_line(&mut reply) {
                Ok(0) => return Err(HostError::Gone(self.name.clone())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(HostError::Timeout(timeout))
                }
                Err(e) => return Err(HostError::io(what)(e)),
            }
            match parse_line(reply.trim_end()) {
                Ok(AgentMsg::Result { id: got, output }) if got == id => return Ok(output),
                // An answer to an earlier, abandoned request: skip it.
                Ok(_) => continue,
                Err(e) => return Err(err(&self.name, e)),
            }
        }
    }

    fn must(&mut self, script: &str, what: &str) -> Result<(), HostError> {
        let out = self.agent(script, b"", Duration::from_secs(20))?;
        if out.status != 0 {
            return Err(HostError::Io {
                what: format!("{what} on {}", self.name),
                source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            });
        }
        Ok(())
    }

    fn socket_path(&self, ifname: &str) -> PathBuf {
        self.run_dir.join(format!("{}-{ifname}.sock", self.name))
    }
}

fn seqpacket_listener(path: &Path) -> Result<OwnedFd, nix::Error> {
    let _ = std::fs::remove_file(path);
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&fd, Backlog::new(1)?)?;
    Ok(fd)
}

/// Waits for one connection on a listening socket, up to `timeout`.
fn accept_within(listener: &OwnedFd, timeout: Duration) -> Result<OwnedFd, std::io::Error> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    if poll(&mut fds, PollTimeout::from(ms))? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the guest NIC did not connect"));
    }
    let fd = nix::sys::socket::accept4(listener, SockFlag::SOCK_CLOEXEC)?;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    Ok(fd)
}

impl RunningNode for UmlNode {
    fn processes(&self) -> Vec<ProcRecord> {
        vec![self.record.clone()]
    }

    fn pid(&self) -> i32 {
        self.record.pid
    }

    fn add_iface(&mut self, ifname: &str, mac: MacAddr, mtu: u32) -> Result<Box<dyn PortIo>, HostError> {
        let n = self.next_nic;
        self.next_nic += 1;
        let sock = self.socket_path(ifname);
        let what = format!("creating {}:{ifname}", self.name);
        let listener = seqpacket_listener(&sock).map_err(|e| HostError::io(what.clone())(e.into()))?;
        self.mconsole
            .command(&format!("config vec{n}:transport=bess,dst={},depth=64", sock.display()))
            .map_err(|e| err(&self.name, e))?;
        // The NIC connects when the guest brings it up.
        self.must(
            &format!(
                "i=0; while [ ! -e /sys/class/net/vec{n} ] && [ $i -lt 50 ]; do busybox usleep 100000; i=$((i+1)); done; \
                 ip link set vec{n} name {ifname} && ip link set {ifname} address {mac} mtu {mtu} && ip link set {ifname} up"
            ),
            "bringing up a NIC",
        )?;
        let fd = accept_within(&listener, NIC_TIMEOUT).map_err(HostError::io(what))?;
        self.nics.insert(ifname.to_string(), n);
        Ok(Box::new(RawPort::new(fd)))
    }

    fn add_addr(&mut self, ifname: &str, cidr: Cidr) -> Result<(), HostError> {
        self.must(&format!("ip addr add {cidr} dev {ifname}"), &format!("adding {cidr} to {ifname}"))
    }

    fn add_route(&mut self, route: &Route) -> Result<(), HostError> {
        let mut cmd =
            format!("ip route add {}", if route.dst.len == 0 { "default".to_string() } else { route.dst.to_string() });
        if let Some(via) = route.via {
            cmd.push_str(&format!(" via {via}"));
        }
        if let Some(dev) = &route.dev {
            cmd.push_str(&format!(" dev {dev}"));
        }
        self.must(&cmd, &format!("adding a route to {}", route.dst))
    }

    fn forget_iface(&mut self, ifname: &str) {
        if let Some(n) = self.nics.remove(ifname).filter(|_| super::is_alive(&self.record)) {
            // UML only unplugs a NIC that is down.
            let _ = self.agent(&format!("ip link set {ifname} down"), b"", Duration::from_secs(10));
            if let Err(e) = self.mconsole.command(&format!("remove vec{n}")) {
                eprintln!("clonet: unplugging {}:{ifname}: {e}", self.name);
            }
        }
        let _ = std::fs::remove_file(self.socket_path(ifname));
    }

    fn exec(&mut self, req: &ExecRequest) -> Result<ExecOutput, HostError> {
        if !super::is_alive(&self.record) {
            return Err(HostError::Gone(self.name.clone()));
        }
        self.agent(&script_for(&req.argv), &req.stdin, req.timeout)
    }

    fn ping(&mut self, target: std::net::IpAddr, timeout: Duration) -> Result<Option<Duration>, HostError> {
        let secs = timeout.as_secs().max(1);
        let flag = if target.is_ipv6() { "-6 " } else { "" };
        let start = Instant::now();
        let out = self.agent(&format!("ping {flag}-c 1 -W {secs} {target}"), b"", timeout + Duration::from_secs(2))?;
        if out.status != 0 {
            return Ok(None);
        }
        // busybox prints "time=0.512 ms"; fall back to the round trip we saw.
        let text = String::from_utf8_lossy(&out.stdout);
        let rtt = text
            .split("time=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|ms| ms.parse::<f64>().ok())
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .unwrap_or_else(|| start.elapsed());
        Ok(Some(rtt))
    }

    fn stop(&mut self) -> Result<(), HostError> {
        if super::is_alive(&self.record) {
            let _ = self.mconsole.command("halt");
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // UML runs as several processes: end the whole group.
        let _ = killpg(Pid::from_raw(self.record.pid), Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.run_dir.join(format!("{}.cow", self.name)));
        Ok(())
    }
}

impl Drop for UmlNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop();
        }
    }
}
