//! Extended attributes: `lsetxattr`, which neither std nor nix offers.
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Sets the extended attribute `name` of `path` itself (never of what a
/// link at `path` points to) to `value`.
pub fn set(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    let name = CString::new(name)?;
    // SAFETY: both strings are NUL-terminated and live across the call;
    // `value` is valid for `value.len()` bytes; the kernel only reads them.
    let done = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
