//! TAP devices opened with a virtio-net header and TSO offloads.
//!
//! The switch holds the returned fd itself: when it closes, the
//! (non-persistent) TAP device disappears with it.
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Size of the virtio-net header the kernel prepends to every frame
/// (`struct virtio_net_hdr_v1`, with `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

// TUNSETIFF copies the request back with the name the kernel chose, so it
// must get a pointer it may write through (a shared reference would let
// the compiler assume the struct never changes).
nix::ioctl_readwrite_bad!(tun_set_iff, 0x4004_54ca, IfReqFlags);
nix::ioctl_write_ptr_bad!(tun_set_vnet_hdr_sz, 0x4004_54d8, libc::c_int);
nix::ioctl_write_int_bad!(tun_set_offload, 0x4004_54d0);
nix::ioctl_write_ptr_bad!(tun_set_carrier, 0x4004_54e2, libc::c_int);
nix::ioctl_write_int_bad!(tun_set_persist, 0x4004_54cb);

/// Makes a TAP outlive its fd (`TUNSETPERSIST`), or not. Closing the fd of
/// a non-persistent TAP deletes the device at once, and each deletion waits
/// for an RCU grace period (about 20 ms here). A persistent TAP inside a
/// node's namespace is instead deleted with that namespace, together with
/// every other device of every namespace dying at the same time: a
/// 1000-node ring tears down in seconds instead of 40.
pub fn set_persistent(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: `fd` is borrowed, so open for the call (a tun fd, or the
    // ioctl fails with an error); TUNSETPERSIST takes its argument by value.
    unsafe { tun_set_persist(fd.as_raw_fd(), libc::c_int::from(on)) }?;
    Ok(())
}

/// Turns the carrier of a TAP on or off (`TUNSETCARRIER`): the interface
/// inside the node shows NO-CARRIER while it is off.
pub fn set_carrier(fd: BorrowedFd<'_>, up: bool) -> io::Result<()> {
    let on: libc::c_int = up.into();
    // SAFETY: `fd` is borrowed, so open for the call; the argument is a
    // pointer to an int on the stack, as TUNSETCARRIER expects.
    unsafe { tun_set_carrier(fd.as_raw_fd(), &on) }?;
    Ok(())
}

/// Creates a TAP interface called `ifname` in the calling thread's network
/// namespace and returns its non-blocking fd, set up for `VNET_HDR_LEN`-byte
/// virtio-net headers with checksum and TSO offloads.
pub fn open_tap(ifname: &str) -> io::Result<OwnedFd> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReqFlags { name: [0; libc::IFNAMSIZ], flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, _pad: [0; 22] };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    let fd = file.as_raw_fd();
    let hdr_len: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: `fd` is a valid open tun fd for the duration of these calls;
    // both arguments live on the stack with the layout the kernel expects,
    // and `req`, which TUNSETIFF writes back to, is passed as `&mut`.
    unsafe {
        tun_set_iff(fd, &mut req)?;
        tun_set_vnet_hdr_sz(fd, &hdr_len)?;
        tun_set_offload(fd, (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) as libc::c_int)?;
    }
    Ok(OwnedFd::from(file))
}
