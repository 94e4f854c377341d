//! A built-in ICMP echo, so `ping()` works on hosts with no ping binary.
//!
//! It uses a raw ICMP socket created inside the node's network namespace
//! (root, or CAP_NET_RAW in the namespace's user namespace).
use std::io;
use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6,
};

/// Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    use crate::switch::gso::{finish, sum};
    finish(sum(data, 0))
}

/// Builds an echo request; IPv6 leaves the checksum to the kernel.
pub fn echo_request(v6: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"clonet-ping-1234");
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Whether `packet` (as read from the raw socket) is our echo reply.
pub fn is_echo_reply(v6: bool, packet: &[u8], ident: u16, seq: u16) -> bool {
    let icmp = if v6 {
        packet
    } else {
        let ihl = packet.first().map(|b| ((b & 0x0f) as usize) * 4).unwrap_or(0);
        if ihl < 20 || packet.len() < ihl {
            return false;
        }
        &packet[ihl..]
    };
    icmp.len() >= 8
        && icmp[0] == if v6 { 129 } else { 0 }
        && icmp[4..6] == ident.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

fn raw_socket(v6: bool) -> io::Result<OwnedFd> {
    let (family, proto) =
        if v6 { (AddressFamily::Inet6, SockProtocol::IcmpV6) } else { (AddressFamily::Inet, SockProtocol::Icmp) };
    socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, proto).map_err(io::Error::from)
}

/// Sends echo requests to `target` every `interval` until one is answered
/// or `timeout` passes; returns the round-trip time of the first answer.
/// Must be called on a thread inside the source namespace.
pub fn echo(target: IpAddr, timeout: Duration, interval: Duration) -> io::Result<Option<Duration>> {
    let v6 = target.is_ipv6();
    let sock = raw_socket(v6)?;
    let ident = (std::process::id() as u16) ^ (Instant::now().elapsed().subsec_nanos() as u16) ^ 0x5a5a;
    let start = Instant::now();
    let mut sent_at = Vec::new();
    let mut buf = [0u8; 2048];
    let mut next_send = start;
    loop {
        let now = Instant::now();
        if now >= start + timeout {
            return Ok(None);
        }
        if crate::interrupt::requested() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        if now >= next_send {
            let seq = sent_at.len() as u16;
            let req = echo_request(v6, ident, seq);
            let res = match target {
                IpAddr::V4(a) => {
                    sendto(sock.as_raw_fd(), &req, &SockaddrIn::from(SocketAddrV4::new(a, 0)), MsgFlags::empty())
                }
                IpAddr::V6(a) => {
                    sendto(sock.as_raw_fd(), &req, &SockaddrIn6::from(SocketAddrV6::new(a, 0, 0, 0)), MsgFlags::empty())
                }
            };
            // An unreachable network is an answer ("no"), not an error.
            if let Err(e) = res {
                if !matches!(
                    e,
                    nix::errno::Errno::ENETUNREACH | nix::errno::Errno::EHOSTUNREACH | nix::errno::Errno::EAGAIN
                ) {
                    return Err(e.into());
                }
            }
            sent_at.push(Instant::now());
            next_send += interval;
        }
        let wait = (next_send.min(start + timeout)).saturating_duration_since(Instant::now());
        let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).map_err(io::Error::from)?;
        loop {
            match recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    for (seq, t) in sent_at.iter().enumerate() {
                        if is_echo_reply(v6, &buf[..n], ident, seq as u16) {
                            return Ok(Some(t.elapsed()));
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // The example words of RFC 1071 section 3 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn a_request_with_its_checksum_sums_to_zero() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&p), 0);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn recognises_only_matching_replies() {
        let mut reply = vec![0x45u8];
        reply.resize(20, 0);
        let mut icmp = echo_request(false, 9, 3);
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert!(is_echo_reply(false, &reply, 9, 3));
        assert!(!is_echo_reply(false, &reply, 9, 4));
        assert!(!is_echo_reply(false, &reply, 8, 3));
        assert!(!is_echo_reply(false, &reply[..22], 9, 3));
        let mut v6 = echo_request(true, 9, 3);
        v6[0] = 129;
        assert!(is_echo_reply(true, &v6, 9, 3));
    }
}
