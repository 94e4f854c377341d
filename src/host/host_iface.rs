//! Host interfaces: the host's way into a lab.
//!
//! A host interface is a TAP in the network namespace clonet runs in,
//! named by the user, whose fd the switch pumps as a port of a LAN: the
//! host's programs (Wireshark, Ansible, a browser) reach the lab through
//! it. It gets the address it is given and so the kernel's route to that
//! prefix, and nothing else: no other route, no forwarding. The TAP is
//! not persistent, so it goes with its fd: when the port goes, when the
//! lab ends, and when clonet dies (nothing for `clonet clean` to find).
//!
//! It needs root: a lab without root lives in a user namespace of its own
//! that may not change the host's network namespace.
//!
//! Owns: the TAP and its address. Must not touch: the host's routes.
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use super::syscall::{Netlink, Syscall};
use super::{ExecOutput, ExecRequest, HostError, NodeSpec, ProcRecord, RunningNode};
use crate::switch::port::{FdPort, PortIo};
use crate::vocab::{Cidr, MacAddr, Route};

/// Why a lab without root has no host interface, and what to do instead.
pub const NEEDS_ROOT: &str = "a host interface needs root: it lives in the host's network namespace, which a lab \
                              without root may not change; run clonet as root, or reach the lab from the host through \
                              a nat endpoint's forward";

/// Checks that a host interface `spec` may be made here, and makes it
/// (its TAP comes with its LAN port).
pub fn start(sys: &Arc<dyn Syscall>, spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError> {
    let fail = |why: String| HostError::start(spec.name.clone(), why);
    if super::userns::in_user_namespace() {
        return Err(fail(NEEDS_ROOT.into()));
    }
    if spec.name.len() > 15 {
        return Err(fail("an interface name has at most 15 characters".into()));
    }
    if nix::net::if_::if_nametoindex(spec.name.as_str()).is_ok() {
        return Err(fail(format!("the host already has an interface called {}", spec.name)));
    }
    let netns =
        std::fs::File::open("/proc/self/ns/net").map_err(HostError::io("opening clonet's network namespace"))?;
    let netlink = sys.open_netlink_in(netns.as_fd()).map_err(HostError::io("rtnetlink"))?;
    Ok(Box::new(HostIface { name: spec.name.clone(), sys: sys.clone(), netns, netlink, index: None }))
}

/// A running host interface.
pub struct HostIface {
    name: String,
    sys: Arc<dyn Syscall>,
    netns: std::fs::File,
    netlink: Box<dyn Netlink>,
    /// The TAP's index, once its port exists.
    index: Option<u32>,
}

impl HostIface {
    fn no(&self, what: &str) -> HostError {
        HostError::start(self.name.clone(), format!("{what}: a host interface runs nothing; run it on the host"))
    }
}

impl RunningNode for HostIface {
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
        Some("an interface of the host".into())
    }

    fn add_iface(&mut self, ifname: &str, mac: MacAddr, mtu: u32) -> Result<Box<dyn PortIo>, HostError> {
        if ifname != self.name || self.index.is_some() {
            return Err(HostError::start(
                self.name.clone(),
                format!("a host interface has one port, on one LAN, named after it ({})", self.name),
            ));
        }
        let what = |step: &str| format!("creating the host interface {ifname}: {step}");
        let (fd, index) =
            self.sys.open_tap_in(self.netns.as_fd(), ifname).map_err(HostError::io(what("opening its TAP")))?;
        self.netlink
            .set_link(index, Some(mac), Some(mtu), true)
            .map_err(HostError::io(what("setting its MAC and MTU and bringing it up")))?;
        self.index = Some(index);
        // Not persistent: the interface goes with the fd.
        Ok(Box::new(FdPort::tap(fd)))
    }

    fn add_addr(&mut self, _ifname: &str, cidr: Cidr) -> Result<(), HostError> {
        let index = self.index.ok_or_else(|| self.no("an address before its LAN"))?;
        let what = format!("adding {cidr} to {}", self.name);
        self.netlink.add_addr(index, cidr).map_err(HostError::io(what))
    }

    fn add_route(&mut self, _route: &Route) -> Result<(), HostError> {
        Err(HostError::start(
            self.name.clone(),
            "a host interface adds no route beyond its own prefix (add one on the host if you mean it)".to_string(),
        ))
    }

    fn forget_iface(&mut self, _ifname: &str) {
        self.index = None;
    }

    fn exec(&mut self, _req: &ExecRequest) -> Result<ExecOutput, HostError> {
        Err(self.no("exec"))
    }

    fn ping(&mut self, _target: std::net::IpAddr, _timeout: Duration) -> Result<Option<Duration>, HostError> {
        Err(self.no("ping"))
    }

    fn stop(&mut self) -> Result<(), HostError> {
        Ok(())
    }
}
