//! `nat` endpoints: the lab's way out, through Debian's passt.
//!
//! passt is a user-mode network stack: on one side it speaks QEMU's
//! `-netdev stream` protocol (each frame after its length, 4 bytes big
//! endian) on a unix socket it listens on; on the other it opens ordinary
//! sockets on the host for whatever the guest connects to. It needs no
//! privilege. clonet connects to that socket like a QEMU would and pumps
//! it as a switch port (`StreamPort`), so the link to a `nat` endpoint is a
//! link like any: counters, impairments, captures, down and up.
//!
//! passt starts when the endpoint gets its link (it must know the
//! link's MTU, the largest frame it may send) and ends when the link goes.
//!
//! On that link passt serves one guest (the node): by DHCP
//! [`GUEST_ADDR`]/24 with [`GATEWAY`] as its default route (QEMU's user
//! networking addresses, familiar to users), DNS from the host's
//! resolvers, the host's loopback at the gateway address, and the host's
//! own address for connections beyond. Ports the endpoint forwards are
//! passt's `-t`/`-u`.
//!
//! clonet hands passt its end of a connected socket pair (`--fd`), so no
//! socket file exists for anyone else to reach, and passt, which drops to
//! `nobody` when started by root, needs no directory of the lab's.
//!
//! Owns: passt's command line and process. Must not touch: the guest side
//! (the lab runs the node's DHCP client).
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{proc_start_time, ExecOutput, ExecRequest, HostError, NodeSpec, ProcRecord, RunningNode};
use crate::switch::port::{PortIo, StreamPort};
use crate::vocab::{Cidr, Forward, MacAddr, Route};

/// The address passt gives its guest, and the gateway (the host).
pub const GUEST_ADDR: &str = "10.0.2.15";
pub const GATEWAY: &str = "10.0.2.2";
const PREFIX: u8 = 24;

/// The descriptor passt gets its end of the link on.
const PASST_FD: i32 = 3;

/// passt's command line, its link on descriptor `fd` with `mtu`,
/// forwarding `forward`.
pub fn passt_args(fd: i32, mtu: u32, forward: &[Forward]) -> Vec<String> {
    let mut args: Vec<String> = ["--foreground", "--quiet", "--ipv4-only", "--fd"].map(String::from).into();
    args.push(fd.to_string());
    // passt sends frames up to the MTU it tells the guest: the link's.
    args.extend(["--mtu".to_string(), mtu.to_string()]);
    args.extend(["--address", GUEST_ADDR, "--netmask", &PREFIX.to_string(), "--gateway", GATEWAY].map(String::from));
    for f in forward {
        args.push(if f.udp { "--udp-ports" } else { "--tcp-ports" }.into());
        // On the host's loopback only: a lab is not a server of the network's.
        args.push(format!("127.0.0.1/{}:{}", f.host_port, f.node_port));
    }
    args
}

/// A passt process and clonet's end of its link: a connected pair of
/// stream sockets, so there is no socket file for anyone else to reach.
fn spawn_passt(name: &str, mtu: u32, forward: &[Forward]) -> Result<(Child, ProcRecord, OwnedFd), HostError> {
    use std::os::fd::AsRawFd;
    let fail = |why: String| HostError::start(name.to_string(), why);
    let (ours, theirs) = UnixStream::pair().map_err(|e| fail(format!("a socket pair for passt: {e}")))?;
    let mut cmd = Command::new("passt");
    cmd.args(passt_args(PASST_FD, mtu, forward)).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    crate::sys::proc::node_process(&mut cmd);
    crate::sys::proc::pass_fd(&mut cmd, theirs.as_raw_fd(), PASST_FD);
    let mut child = cmd.spawn().map_err(|e| fail(format!("starting passt: {e}")))?;
    drop(theirs);
    let pid = child.id() as i32;
    // passt that refuses its options ends at once: say so now, not at the first frame.
    std::thread::sleep(Duration::from_millis(20));
    if let Ok(Some(status)) = child.try_wait() {
        return Err(fail(format!("passt ended at once ({status})")));
    }
    let record = ProcRecord { pid, start_time: proc_start_time(pid).unwrap_or(0) };
    ours.set_nonblocking(true).map_err(HostError::io("passt's socket"))?;
    Ok((child, record, OwnedFd::from(ours)))
}

/// A `nat` endpoint for `spec`: its passt starts with its link, whose
/// MTU it must know.
pub fn start(spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError> {
    Ok(Box::new(NatNode { name: spec.name.clone(), forward: spec.options.forward.clone(), passt: None, linked: None }))
}

/// A running `nat` endpoint.
pub struct NatNode {
    name: String,
    forward: Vec<Forward>,
    /// passt, while the endpoint has a link.
    passt: Option<(Child, ProcRecord)>,
    /// The interface name of its one link, while it has one.
    linked: Option<String>,
}

impl NatNode {
    fn stop_passt(&mut self) {
        if let Some((mut child, record)) = self.passt.take() {
            let _ = kill(Pid::from_raw(record.pid), Signal::SIGTERM);
            super::guest::wait_exit(&mut child, Duration::from_secs(2));
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn no(&self, what: &str) -> HostError {
        HostError::start(self.name.clone(), format!("{what}: a nat endpoint is passt, which runs no commands"))
    }
}

impl RunningNode for NatNode {
    fn processes(&self) -> Vec<ProcRecord> {
        self.passt.iter().map(|(_, r)| r.clone()).collect()
    }

    fn alive(&self) -> bool {
        self.passt.as_ref().is_none_or(|(_, r)| super::is_alive(r))
    }

    fn pid(&self) -> i32 {
        self.passt.as_ref().map_or(0, |(_, r)| r.pid)
    }

    fn pause(&mut self, paused: bool) -> Result<(), HostError> {
        let signal = if paused { Signal::SIGSTOP } else { Signal::SIGCONT };
        match &self.passt {
            Some((_, r)) => kill(Pid::from_raw(r.pid), signal).map_err(|e| HostError::io("signalling passt")(e.into())),
            None => Ok(()),
        }
    }

    fn detail(&self) -> Option<String> {
        Some(format!("passt, guest {GUEST_ADDR}/{PREFIX} via {GATEWAY}"))
    }

    fn add_iface(&mut self, ifname: &str, _mac: MacAddr, mtu: u32) -> Result<Box<dyn PortIo>, HostError> {
        if let Some(other) = &self.linked {
            return Err(HostError::start(
                self.name.clone(),
                format!(
                    "passt serves one node and {} has its link ({other}); make that node a router for the others, \
                     e.g. net::masquerade(node, iface) for the LAN behind it",
                    self.name
                ),
            ));
        }
        let (child, record, port) = spawn_passt(&self.name, mtu, &self.forward)?;
        self.passt = Some((child, record));
        self.linked = Some(ifname.to_string());
        Ok(Box::new(StreamPort::new(port)))
    }

    fn add_addr(&mut self, _ifname: &str, _cidr: Cidr) -> Result<(), HostError> {
        Err(HostError::start(
            self.name.clone(),
            format!("a nat endpoint takes no address: it is the gateway {GATEWAY} of the node linked to it"),
        ))
    }

    fn add_route(&mut self, _route: &Route) -> Result<(), HostError> {
        Err(HostError::start(self.name.clone(), "a nat endpoint takes no route".to_string()))
    }

    fn forget_iface(&mut self, ifname: &str) {
        if self.linked.as_deref() == Some(ifname) {
            // Its guest is gone: so is its passt (a new link gets a new one).
            self.linked = None;
            self.stop_passt();
        }
    }

    fn exec(&mut self, _req: &ExecRequest) -> Result<ExecOutput, HostError> {
        Err(self.no("exec"))
    }

    fn ping(&mut self, _target: std::net::IpAddr, _timeout: Duration) -> Result<Option<Duration>, HostError> {
        Err(self.no("ping"))
    }

    fn stop(&mut self) -> Result<(), HostError> {
        self.stop_passt();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passt_gets_qemus_user_network_and_the_forwards() {
        let forward = ["tcp:8080:80", "udp:5353:53"].map(|f| f.parse().unwrap());
        let args = passt_args(3, 1500, &forward);
        assert_eq!(
            args.join(" "),
            "--foreground --quiet --ipv4-only --fd 3 --mtu 1500 \
             --address 10.0.2.15 --netmask 24 --gateway 10.0.2.2 --tcp-ports 127.0.0.1/8080:80 --udp-ports 127.0.0.1/5353:53"
        );
    }
}
