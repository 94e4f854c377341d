//! A recording fake of the host, for tests that need no root, and the
//! host of dry builds (`clonet graph`).
//!
//! Nodes are not started; each interface becomes one end of a seqpacket
//! socket pair whose other end the test can take with [`FakeHost::wire`]
//! to inject and observe frames, so the real switch still runs.
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::{
    BootMedia, ExecOutput, ExecRequest, HostError, KvmBoot, NodeHost, NodeKiller, NodeSpec, ProcRecord, RunningNode,
};
use crate::switch::port::{FdPort, PortIo};
use crate::vocab::addr::{Cidr, Route};
use crate::vocab::MacAddr;

#[derive(Clone, Default)]
pub struct FakeHost {
    /// Every host operation, in order, as text.
    pub calls: Arc<Mutex<Vec<String>>>,
    wires: Arc<Mutex<HashMap<String, OwnedFd>>>,
    /// Nodes whose next interfaces fail to be created.
    failing: Arc<Mutex<Vec<String>>>,
    /// Addresses the fake kernel refuses.
    refused: Arc<Mutex<Vec<Cidr>>>,
    /// A command run in a node that makes the host panic (a stand-in for
    /// a bug), to show that one failed job does not end the lab.
    panicking_command: Arc<Mutex<Option<String>>>,
    /// A program whose `exec` takes time: `[program, seconds]` sleeps that
    /// long (at most the request's timeout), as a long command on a real
    /// node would, so tests can show what else goes on meanwhile.
    sleeping_command: Arc<Mutex<Option<String>>>,
    /// Nodes whose killer ran since they started: a sleeping exec on one
    /// ends at once, as a command in a killed node does.
    killed: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Pings are answered (a dry build goes on), not lost.
    answer_pings: bool,
    /// The run directories whose storage was released, apart from `calls`
    /// (a lab releases its own at teardown, after a test looked at them).
    released: Arc<Mutex<Vec<std::path::PathBuf>>>,
    /// Plugs listen for real (sockets in a test's directory); otherwise
    /// (a dry build) a plug makes nothing and no client comes.
    real_plugs: bool,
}

impl FakeHost {
    /// A fake host whose plugs are the real ones, so that a test can
    /// connect clients to them (sockets need no root).
    pub fn with_real_plugs() -> FakeHost {
        FakeHost { real_plugs: true, ..FakeHost::default() }
    }

    /// The host of a dry build (`clonet graph`): nothing starts, every
    /// command and ping succeeds, so a script runs to its end.
    pub fn dry() -> FakeHost {
        FakeHost { answer_pings: true, ..FakeHost::default() }
    }

    fn record(&self, call: String) {
        self.calls.lock().expect("not poisoned").push(call);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// The run directories `release` was called for, in order.
    pub fn released(&self) -> Vec<std::path::PathBuf> {
        self.released.lock().expect("not poisoned").clone()
    }

    /// Makes every later attempt to add `cidr` fail.
    pub fn fail_addr(&self, cidr: Cidr) {
        self.refused.lock().expect("not poisoned").push(cidr);
    }

    /// Makes every later interface creation on `node` fail.
    pub fn fail_ifaces_on(&self, node: &str) {
        self.failing.lock().expect("not poisoned").push(node.to_string());
    }

    /// Makes `exec` of a command whose program is `program` panic.
    pub fn panic_on_exec_of(&self, program: &str) {
        *self.panicking_command.lock().expect("not poisoned") = Some(program.to_string());
    }

    /// Makes `exec` of `[program, seconds]` sleep that many seconds (a
    /// fraction is fine), ending early if the request times out (a timeout
    /// error) or the node is killed (status 137, as after SIGKILL).
    pub fn sleep_on_exec_of(&self, program: &str) {
        *self.sleeping_command.lock().expect("not poisoned") = Some(program.to_string());
    }

    fn killed(&self, node: &str) -> bool {
        self.killed.lock().expect("not poisoned").contains(node)
    }

    /// The test's end of interface `node:iface`, in blocking mode.
    pub fn wire(&self, node: &str, iface: &str) -> Option<UnixDatagram> {
        let fd = self.wires.lock().expect("not poisoned").remove(&format!("{node}:{iface}"))?;
        let sock = UnixDatagram::from(fd);
        sock.set_nonblocking(false).ok()?;
        Some(sock)
    }
}

impl NodeHost for FakeHost {
    /// Fixed paths under `/fake`, which nothing reads: fake nodes boot
    /// nothing. Not recorded, so the calls stay those that change the host.
    fn resolve_boot(
        &self,
        _node: &str,
        kind: crate::vocab::NodeKind,
        options: &crate::vocab::NodeOptions,
    ) -> Result<BootMedia, HostError> {
        let fake = |file: &str| std::path::PathBuf::from("/fake").join(file);
        Ok(match kind {
            crate::vocab::NodeKind::Ns => BootMedia::Namespace,
            crate::vocab::NodeKind::Nat => BootMedia::Nat,
            crate::vocab::NodeKind::Host => BootMedia::HostIface,
            crate::vocab::NodeKind::Plug => BootMedia::Plug,
            crate::vocab::NodeKind::Vxlan => BootMedia::Vxlan,
            crate::vocab::NodeKind::Uml => {
                BootMedia::Uml { image: options.image.clone().unwrap_or(fake("busybox.img")) }
            }
            crate::vocab::NodeKind::Kvm => BootMedia::Kvm(KvmBoot {
                kernel: fake("vmlinuz"),
                initrd: fake("initrd.img"),
                disk: options.image.clone().unwrap_or(fake("disk.qcow2")),
                accel: options.accel.unwrap_or(crate::vocab::Accel::Tcg),
            }),
        })
    }

    fn release(&self, run_dir: &std::path::Path) {
        self.released.lock().expect("not poisoned").push(run_dir.to_path_buf());
    }

    fn start_node(&self, spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError> {
        self.record(format!("start {}", spec.name));
        self.killed.lock().expect("not poisoned").remove(&spec.name);
        if spec.kind == crate::vocab::NodeKind::Plug && self.real_plugs {
            return super::plug::start(spec);
        }
        Ok(Box::new(FakeNode { name: spec.name.clone(), host: self.clone() }))
    }
}

struct FakeNode {
    name: String,
    host: FakeHost,
}

impl RunningNode for FakeNode {
    fn processes(&self) -> Vec<ProcRecord> {
        Vec::new()
    }

    fn pid(&self) -> i32 {
        0
    }

    fn add_iface(&mut self, ifname: &str, mac: MacAddr, mtu: u32) -> Result<Box<dyn PortIo>, HostError> {
        if self.host.failing.lock().expect("not poisoned").contains(&self.name) {
            return Err(HostError::start(self.name.clone(), "injected failure"));
        }
        self.host.record(format!("iface {}:{ifname} {mac} mtu {mtu}", self.name));
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_NONBLOCK)
            .map_err(|e| HostError::io("socketpair")(e.into()))?;
        self.host.wires.lock().expect("not poisoned").insert(format!("{}:{ifname}", self.name), b);
        Ok(Box::new(FdPort::socket(a)))
    }

    fn add_addr(&mut self, ifname: &str, cidr: Cidr) -> Result<(), HostError> {
        if self.host.refused.lock().expect("not poisoned").contains(&cidr) {
            return Err(HostError::Io {
                what: format!("adding {cidr}"),
                source: std::io::ErrorKind::InvalidInput.into(),
            });
        }
        self.host.record(format!("addr {}:{ifname} {cidr}", self.name));
        Ok(())
    }

    fn add_route(&mut self, route: &Route) -> Result<(), HostError> {
        self.host.record(format!(
            "route {} {:?} via {:?} dev {:?}",
            self.name,
            route.dst.to_string(),
            route.via,
            route.dev
        ));
        Ok(())
    }

    fn forget_iface(&mut self, ifname: &str) {
        self.host.record(format!("forget {}:{ifname}", self.name));
    }

    fn exec(&mut self, req: &ExecRequest) -> Result<ExecOutput, HostError> {
        self.host.record(format!("exec {} {:?}", self.name, req.argv));
        let panicking = self.host.panicking_command.lock().expect("not poisoned").clone();
        if panicking.is_some_and(|p| req.argv.first() == Some(&p)) {
            panic!("the fake host was told to panic on {:?}", req.argv);
        }
        let sleeping = self.host.sleeping_command.lock().expect("not poisoned").clone();
        if sleeping.is_some_and(|p| req.argv.first() == Some(&p)) {
            return self.sleep(req);
        }
        // Cut as real nodes cut, so the limit's plumbing can be tested here.
        let mut stdout = req.argv.join(" ").into_bytes();
        let limit = usize::try_from(req.max_output.get()).unwrap_or(usize::MAX);
        let truncated = stdout.len() > limit;
        stdout.truncate(limit);
        Ok(ExecOutput { status: 0, stdout, stderr: Vec::new(), truncated })
    }

    fn ping(&mut self, target: IpAddr, _timeout: Duration) -> Result<Option<Duration>, HostError> {
        self.host.record(format!("ping {} {target}", self.name));
        Ok(self.host.answer_pings.then_some(Duration::ZERO))
    }

    fn pause(&mut self, paused: bool) -> Result<(), HostError> {
        self.host.record(format!("pause {} {paused}", self.name));
        Ok(())
    }

    fn stop(&mut self) -> Result<(), HostError> {
        self.host.record(format!("stop {}", self.name));
        Ok(())
    }

    fn killer(&self) -> Box<dyn NodeKiller> {
        Box::new(FakeKiller { name: self.name.clone(), host: self.host.clone() })
    }
}

impl FakeNode {
    /// A long command: sleeps in small steps, so that a kill or the
    /// request's timeout ends it as it would on a real node.
    fn sleep(&self, req: &ExecRequest) -> Result<ExecOutput, HostError> {
        let seconds = req.argv.get(1).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0).clamp(0.0, 3600.0);
        let start = std::time::Instant::now();
        let until = start + Duration::from_secs_f64(seconds);
        let timeout = req.timeout.get();
        while std::time::Instant::now() < until {
            if self.host.killed(&self.name) {
                return Ok(ExecOutput { status: 137, ..Default::default() });
            }
            if start.elapsed() >= timeout {
                return Err(HostError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(ExecOutput::default())
    }
}

/// Kills a fake node: recorded, and its sleeping exec ends.
struct FakeKiller {
    name: String,
    host: FakeHost,
}

impl NodeKiller for FakeKiller {
    fn kill(&self) {
        self.host.record(format!("kill {}", self.name));
        self.host.killed.lock().expect("not poisoned").insert(self.name.clone());
    }
}
