//! `clonet __tap-forward PID_A PID_B OWNER_PID`: the smallest possible
//! userspace forwarder between two TAPs, as a benchmark baseline. It creates
//! `eth0` in the network namespaces of processes PID_A and PID_B (opened
//! like clonet's own ports: vnet header, TSO) and copies frames between
//! them with one blocking thread per direction: no switch logic, no
//! counters, no polling. It exits when OWNER_PID (the lab) is gone or a TAP
//! fails, so a benchmark cannot leak it.
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use super::syscall::Netlink;
use crate::switch::frame::MAX_BUFFER_LEN;
use crate::sys::netns::in_netns;
use crate::sys::tap::open_tap;

fn blocking_tap(pid: i32) -> std::io::Result<OwnedFd> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    let fd = in_netns(ns.as_fd(), || {
        let fd = open_tap("eth0")?;
        let mut rtnl = super::rtnl::Rtnl::open()?;
        rtnl.set_link(nix::net::if_::if_nametoindex("eth0")?, None, None, true)?;
        Ok(fd)
    })?;
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(fd)
}

fn pump(from: OwnedFd, to: OwnedFd) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_BUFFER_LEN];
        loop {
            match nix::unistd::read(&from, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = nix::unistd::write(&to, &buf[..n]);
                }
                Err(nix::errno::Errno::EINTR) => {}
                _ => std::process::exit(0),
            }
        }
    });
}

pub fn tap_forward_main(pid_a: i32, pid_b: i32, owner: i32) -> ! {
    let (a, b) = match (blocking_tap(pid_a), blocking_tap(pid_b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("clonet: tap-forward: {e}");
            std::process::exit(1)
        }
    };
    let owner_start = super::proc_start_time(owner);
    let (a2, b2) = match (a.try_clone(), b.try_clone()) {
        (Ok(a2), Ok(b2)) => (a2, b2),
        _ => std::process::exit(1),
    };
    pump(a, b2);
    pump(b, a2);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if owner_start.is_none() || super::proc_start_time(owner) != owner_start {
            std::process::exit(0);
        }
    }
}
