//! `uml` nodes: a `linux.uml` process (Debian's user-mode-linux) booting the
//! busybox image on a copy-on-write file, with its NICs hot-plugged through
//! mconsole as vector `bess` transports (SOCK_SEQPACKET, raw frames) that
//! the switch pumps, and commands run by the guest agent on a serial line.
//! No privilege is needed; run by root, the machine runs as a uid of its
//! own that sees only its own directory and its image (`machine_view`).
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::unistd::Pid;

use super::guest::{
    bring_up_nic, console_log, console_socket, console_tail, machine_dir, make_machine_dir, route_command, AgentLine,
};
use super::machine_view::{hand_over, machine_owner, MachineView};
use super::mconsole::Mconsole;
use super::{proc_start_time, ExecOutput, ExecRequest, HostError, NodeSpec, ProcRecord, RunningNode};
use crate::switch::port::{PortIo, RawPort};
use crate::sys::proc::node_process;
use crate::vocab::addr::{Cidr, Route};
use crate::vocab::MacAddr;

/// How long a guest may take to boot until its agent answers.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a hot-plugged NIC may take to connect once brought up.
const NIC_TIMEOUT: Duration = Duration::from_secs(10);
/// Guest memory when the script does not say.
pub const DEFAULT_MEM_MB: u32 = 64;

fn err(node: &str, what: impl std::fmt::Display) -> HostError {
    HostError::start(node.to_string(), what.to_string())
}

pub struct UmlNode {
    name: String,
    child: Child,
    record: ProcRecord,
    /// The uid the machine runs as, when not clonet's own.
    owner: Option<u32>,
    agent: AgentLine,
    /// Set once the agent said hello: the guest has booted. Until then the
    /// node boots in the background, so that many nodes boot at once.
    mconsole: Option<Mconsole>,
    boot_deadline: Instant,
    console: super::console::ConsoleRelay,
    run_dir: PathBuf,
    /// Interface name -> UML device number (vecN).
    nics: HashMap<String, u32>,
    /// NICs taken down by `set_link` (their connection to the switch is closed).
    cut: std::collections::HashSet<String>,
    next_nic: u32,
    /// What it takes to start the machine again while it boots.
    respawn: Option<(NodeSpec, PathBuf, u32)>,
    /// Boots left to try if `linux.uml` dies while booting.
    boot_retries: u32,
}

/// The node's COW file in its machine directory.
pub const COW_FILE: &str = "disk.cow";

/// How often a machine that dies while booting is started again.
const BOOT_RETRIES: u32 = 2;

/// Starts a uml node booting and returns at once; the first request to the
/// node waits for the boot to end. `image` is the base image, never written.
pub fn start(spec: &NodeSpec, image: &Path, mem_mb: u32) -> Result<Box<dyn RunningNode>, HostError> {
    let cow = make_machine_dir(&spec.run_dir, &spec.name)?.join(COW_FILE);
    match &spec.disk {
        super::DiskStart::Fresh => {
            let _ = std::fs::remove_file(&cow);
        }
        super::DiskStart::Keep => {}
        // UML cannot stack COW files: a clone starts on a copy of the
        // snapshot's COW file, which holds only what the node had written.
        super::DiskStart::From(layer) => super::guest::sparse_copy(layer, &cow)?,
    }
    let machine = spawn(spec, image, mem_mb)?;
    Ok(Box::new(UmlNode {
        name: spec.name.clone(),
        child: machine.child,
        record: machine.record,
        owner: machine.owner,
        agent: machine.agent,
        mconsole: None,
        boot_deadline: Instant::now() + super::guest::boot_timeout(BOOT_TIMEOUT),
        console: machine.console,
        run_dir: spec.run_dir.clone(),
        nics: HashMap::new(),
        cut: Default::default(),
        next_nic: 0,
        respawn: Some((spec.clone(), image.to_path_buf(), mem_mb)),
        boot_retries: BOOT_RETRIES,
    }))
}

/// A path as part of a UML kernel argument. UML joins its arguments into
/// one kernel command line split at spaces, and `ubd0=` takes
/// `COW,BACKING`: a path with a space or comma would change what the
/// machine boots from, and UML has no escape for either, so such paths
/// are refused.
fn kernel_arg_path(node: &str, path: &Path) -> Result<String, HostError> {
    let text = path.to_str().ok_or_else(|| err(node, format!("{}: not UTF-8", path.display())))?;
    match text.chars().find(|c| *c == ',' || c.is_whitespace() || c.is_control()) {
        Some(c) => Err(err(node, format!("UML cannot use the path {text:?}: it holds {c:?} (choose a path without)"))),
        None => Ok(text.to_string()),
    }
}

/// A started `linux.uml` and the host ends of its lines.
struct Machine {
    child: Child,
    record: ProcRecord,
    owner: Option<u32>,
    agent: AgentLine,
    console: super::console::ConsoleRelay,
}

/// Starts `linux.uml` on the node's COW file as it is.
fn spawn(spec: &NodeSpec, image: &Path, mem_mb: u32) -> Result<Machine, HostError> {
    let run_dir = spec.run_dir.clone();
    // UML's umid directory (pid file, mconsole socket) sits in the
    // machine's own directory too, where it may write.
    let uml_dir = make_machine_dir(&run_dir, &spec.name)?;
    let cow = uml_dir.join(COW_FILE);
    // What an earlier run of this machine left: UML takes its umid for
    // busy while the pid in it lives, and in its own PID namespace a
    // machine's pid is 1, which always does.
    let _ = std::fs::remove_dir_all(uml_dir.join(&spec.name));
    // Named by its real path: the machine's view shows the file itself,
    // not the links on the way to it.
    let image = &std::fs::canonicalize(image).map_err(HostError::io(format!("finding {}", image.display())))?;
    let view = MachineView { own: vec![uml_dir.clone()], see: vec![image.clone()] };
    let log = super::console::RotatingLog::open(&console_log(&run_dir, &spec.name), super::console::CONSOLE_LOG_CAP)
        .map_err(HostError::io("creating the console log"))?;
    let (host_end, guest_end) = UnixStream::pair().map_err(HostError::io("creating the agent line"))?;
    let (console_host, console_guest) = UnixStream::pair().map_err(HostError::io("creating the console line"))?;
    let mut cmd = super::guest::machine_command("linux.uml", "user-mode-linux", &view)
        .map_err(|e| err(&spec.name, format!("cannot run linux.uml: {e}")))?;
    // fd 0 is the agent's serial line, fd 1 the console (both ways); UML's
    // own complaints on fd 2 go to the console too, so that its bounded
    // log holds them.
    let (cow_arg, image_arg) = (kernel_arg_path(&spec.name, &cow)?, kernel_arg_path(&spec.name, image)?);
    let uml_dir_arg = kernel_arg_path(&spec.name, &uml_dir)?;
    cmd.arg(format!("ubd0={cow_arg},{image_arg}"))
        .args(["root=/dev/ubda", "rw", "init=/init", "con0=fd:1", "con=null", "ssl=null", "ssl1=fd:0", "quiet"])
        .arg(format!("mem={mem_mb}M"))
        .arg(format!("umid={}", spec.name))
        .arg(format!("uml_dir={uml_dir_arg}"))
        .arg("clonet.agent=ttyS1")
        .arg(format!("clonet.hostname={}", spec.name))
        .args(&spec.options.args)
        .stdin(Stdio::from(OwnedFd::from(guest_end)))
        .stderr(Stdio::from(OwnedFd::from(
            console_guest.try_clone().map_err(HostError::io("sharing the console line"))?,
        )))
        .stdout(Stdio::from(OwnedFd::from(console_guest)));
    node_process(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| err(&spec.name, format!("cannot run linux.uml: {e}")))?;
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
    let agent = match AgentLine::new(&spec.name, host_end) {
        Ok(a) => a,
        Err(e) => return Err(fail(&mut child, e.to_string())),
    };
    let console =
        match super::console::ConsoleRelay::spawn(console_host.into(), log, &console_socket(&run_dir, &spec.name)) {
            Ok(c) => c,
            Err(e) => return Err(fail(&mut child, format!("console relay: {e}"))),
        };
    Ok(Machine { child, record, owner: machine_owner(pid as u32), agent, console })
}

impl UmlNode {
    /// Waits until the guest has booted (its agent said hello), then opens
    /// the mconsole. A guest that does not boot in time is killed and the
    /// error quotes the end of its console.
    fn booted(&mut self) -> Result<&Mconsole, HostError> {
        while self.mconsole.is_none() {
            // Wait in slices: a crashed linux.uml may leave a stopped helper
            // holding the agent line open, so its end never comes.
            let said_hello = loop {
                let slice = self.boot_deadline.min(Instant::now() + Duration::from_millis(200));
                if self.agent.wait_hello(slice) {
                    break true;
                }
                if !super::is_alive(&self.record) || Instant::now() >= self.boot_deadline {
                    break false;
                }
            };
            if !said_hello && self.boot_retries > 0 && !super::is_alive(&self.record) {
                // linux.uml sometimes crashes while booting on busy hosts
                // (the host kernel reports "overflowed sigaltstack"): boot
                // it again on the same disk.
                self.boot_retries -= 1;
                self.kill();
                let (spec, image, mem) = self.respawn.clone().expect("kept until booted");
                eprintln!("clonet: {}: linux.uml died while booting; starting it again", self.name);
                let m = spawn(&spec, &image, mem)?;
                (self.child, self.record, self.owner, self.agent, self.console) =
                    (m.child, m.record, m.owner, m.agent, m.console);
                self.boot_deadline = Instant::now() + super::guest::boot_timeout(BOOT_TIMEOUT);
                continue;
            }
            let mconsole = if said_hello {
                let socket = machine_dir(&self.run_dir, &self.name).join(&self.name).join("mconsole");
                Mconsole::new(&socket, Duration::from_secs(10)).map_err(|e| e.to_string())
            } else {
                Err(format!("the guest agent did not answer within {:?}", super::guest::boot_timeout(BOOT_TIMEOUT)))
            };
            match mconsole {
                Ok(m) => {
                    self.mconsole = Some(m);
                    self.respawn = None;
                }
                Err(why) => {
                    self.kill();
                    let tail = console_tail(&self.run_dir, &self.name);
                    return Err(err(&self.name, format!("{why}; console ends with: {tail}")));
                }
            }
        }
        Ok(self.mconsole.as_ref().expect("set above"))
    }

    /// Ends every process of the machine at once.
    fn kill(&mut self) {
        // UML runs as several processes: end the whole group.
        let _ = killpg(Pid::from_raw(self.record.pid), Signal::SIGKILL);
        let _ = self.child.wait();
        self.console.join();
    }

    /// Runs a script through the agent once the guest has booted.
    fn agent(&mut self, script: &str, stdin: &[u8], timeout: Duration) -> Result<ExecOutput, HostError> {
        self.booted()?;
        self.agent.run(script, stdin, timeout, crate::vocab::OutputLimit::DEFAULT)
    }

    fn must(&mut self, script: &str, what: &str) -> Result<(), HostError> {
        self.booted()?;
        self.agent.must(script, what)
    }

    fn socket_path(&self, ifname: &str) -> PathBuf {
        machine_dir(&self.run_dir, &self.name).join(format!("{ifname}.sock"))
    }

    /// A listening socket for NIC `ifname` that the machine may connect to.
    fn nic_listener(&self, ifname: &str, what: &str) -> Result<OwnedFd, HostError> {
        let sock = self.socket_path(ifname);
        let listener = seqpacket_listener(&sock).map_err(|e| HostError::io(what.to_string())(e.into()))?;
        hand_over(&sock, self.owner)?;
        Ok(listener)
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

    fn alive(&self) -> bool {
        // A machine that died while booting is started again on first use.
        (self.respawn.is_some() && self.boot_retries > 0) || super::is_alive(&self.record)
    }

    fn pid(&self) -> i32 {
        self.record.pid
    }

    fn snapshot(&mut self, dir: &Path, name: &str) -> Result<PathBuf, HostError> {
        // Flush the guest's caches, then hold the machine still while its
        // COW file is copied.
        self.must("sync", "flushing the disk")?;
        let layer = dir.join(format!("{name}.cow"));
        self.booted()?.command("stop").map_err(|e| err(&self.name, e))?;
        let copied = super::guest::sparse_copy(&machine_dir(&self.run_dir, &self.name).join(COW_FILE), &layer);
        let resumed = self.booted()?.command("go").map_err(|e| err(&self.name, e));
        copied?;
        resumed?;
        Ok(layer)
    }

    fn pause(&mut self, paused: bool) -> Result<(), HostError> {
        let verb = if paused { "stop" } else { "go" };
        let m = self.booted()?;
        m.command(verb).map(|_| ()).map_err(|e| err(&self.name, e))
    }

    fn console(&self) -> super::console::ConsoleTarget {
        super::console::ConsoleTarget::Socket(console_socket(&self.run_dir, &self.name))
    }

    fn add_iface(&mut self, ifname: &str, mac: MacAddr, mtu: u32) -> Result<Box<dyn PortIo>, HostError> {
        let n = self.next_nic;
        self.next_nic += 1;
        let sock = self.socket_path(ifname);
        let what = format!("creating {}:{ifname}", self.name);
        let listener = self.nic_listener(ifname, &what)?;
        // UML takes an MTU from 576 up (the guest lowers it below that).
        let config = format!("config vec{n}:transport=bess,dst={},depth=64,mtu={}", sock.display(), mtu.max(576));
        self.booted()?.command(&config).map_err(|e| err(&self.name, e))?;
        // The NIC connects when the guest brings it up.
        let find = format!("cd /sys/class/net && ls -d vec{n} 2>/dev/null");
        self.must(&bring_up_nic(&find, ifname, mac, mtu), "bringing up a NIC")?;
        let fd = accept_within(&listener, NIC_TIMEOUT).map_err(HostError::io(what))?;
        self.nics.insert(ifname.to_string(), n);
        Ok(Box::new(RawPort::new(fd)))
    }

    fn add_addr(&mut self, ifname: &str, cidr: Cidr) -> Result<(), HostError> {
        self.must(&format!("ip addr add {cidr} dev {ifname}"), &format!("adding {cidr} to {ifname}"))
    }

    fn add_route(&mut self, route: &Route) -> Result<(), HostError> {
        self.must(&route_command(route), &format!("adding a route to {}", route.dst))
    }

    /// UML's vector NIC has no carrier of its own to take away, so the
    /// closest equivalent is used: the interface goes down inside the guest
    /// (operstate DOWN, its connection to the switch closes) and comes back
    /// up on a new connection, with the static routes the kernel dropped
    /// meanwhile. The new connection is the port the switch must use.
    fn set_link(&mut self, ifname: &str, up: bool, routes: &[Route]) -> Result<Option<Box<dyn PortIo>>, HostError> {
        // Only a change of state does anything: cut NICs come up, live ones go down.
        if !self.nics.contains_key(ifname) || self.cut.contains(ifname) != up {
            return Ok(None);
        }
        if !up {
            self.must(&format!("ip link set {ifname} down"), &format!("setting {ifname} down"))?;
            self.cut.insert(ifname.to_string());
            return Ok(None);
        }
        // The NIC reconnects to its socket path when it comes up.
        let what = format!("reconnecting {}:{ifname}", self.name);
        let listener = self.nic_listener(ifname, &what)?;
        self.must(&format!("ip link set {ifname} up"), &format!("setting {ifname} up"))?;
        let fd = accept_within(&listener, NIC_TIMEOUT).map_err(HostError::io(what))?;
        self.cut.remove(ifname);
        for r in routes {
            let replace = route_command(r).replacen("ip route add", "ip route replace", 1);
            self.must(&replace, &format!("restoring the route to {}", r.dst))?;
        }
        Ok(Some(Box::new(RawPort::new(fd))))
    }

    fn forget_iface(&mut self, ifname: &str) {
        self.cut.remove(ifname);
        if let Some(n) = self.nics.remove(ifname).filter(|_| super::is_alive(&self.record)) {
            // UML only unplugs a NIC that is down.
            let _ = self.agent(&format!("ip link set {ifname} down"), b"", Duration::from_secs(10));
            if let Err(e) = self.booted().and_then(|m| m.command(&format!("remove vec{n}")).map_err(|e| err("", e))) {
                eprintln!("clonet: unplugging {}:{ifname}: {e}", self.name);
            }
        }
        let _ = std::fs::remove_file(self.socket_path(ifname));
    }

    fn exec(&mut self, req: &ExecRequest) -> Result<ExecOutput, HostError> {
        self.booted()?;
        if !super::is_alive(&self.record) {
            return Err(HostError::Gone(self.name.clone()));
        }
        self.agent.exec(req)
    }

    fn ping(&mut self, target: std::net::IpAddr, timeout: Duration) -> Result<Option<Duration>, HostError> {
        self.booted()?;
        self.agent.ping(target, timeout)
    }

    fn stop(&mut self) -> Result<(), HostError> {
        // A booted machine halts cleanly; one still booting has nothing to save.
        if let Some(m) = self.mconsole.as_ref().filter(|_| super::is_alive(&self.record)) {
            let _ = m.command("halt");
            super::guest::wait_exit(&mut self.child, Duration::from_secs(3));
        }
        // The COW file stays for a restart; the run directory goes with the lab.
        self.kill();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_would_change_the_kernel_command_line_are_refused() {
        assert_eq!(kernel_arg_path("a", Path::new("/run/clonet/lab/a.cow")).unwrap(), "/run/clonet/lab/a.cow");
        for bad in ["/img,/etc/shadow", "/my labs/a.cow", "/x\ninit=/bin/sh"] {
            let e = kernel_arg_path("a", Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains("UML cannot use the path"), "{bad:?}: {e}");
        }
    }
}
