//! Batched socket reads without allocation.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Frames one `recv_many` call takes at most (its headers live on the stack).
pub const MAX_BATCH: usize = 32;

/// Reads up to `min(bufs.len(), MAX_BATCH)` waiting messages with one
/// non-blocking `recvmmsg(2)`, each into its own buffer from `offset` on,
/// and their lengths into `lens`. Returns how many, or `WouldBlock`.
pub fn recv_many(fd: BorrowedFd<'_>, bufs: &mut [Vec<u8>], lens: &mut [usize], offset: usize) -> io::Result<usize> {
    let count = bufs.len().min(lens.len()).min(MAX_BATCH);
    // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers,
    // zero lengths); the ones used are filled in below.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above: an all-zero mmsghdr is a header with no buffers.
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for (i, buf) in bufs.iter_mut().take(count).enumerate() {
        let room = buf.get_mut(offset..).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        iovs[i] = libc::iovec { iov_base: room.as_mut_ptr().cast(), iov_len: room.len() };
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `fd` is borrowed, so open for the call; `msgs[..count]` point
    // at `iovs[..count]`, which point into `bufs`; all outlive the call,
    // and the kernel writes at most `iov_len` bytes into each.
    let got = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    if got == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    for (len, msg) in lens.iter_mut().zip(&msgs[..got]) {
        *len = msg.msg_len as usize;
    }
    Ok(got)
}
