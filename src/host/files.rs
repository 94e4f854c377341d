//! Files clonet writes where the user said: captures, saved labs and
//! topologies, reports. Such a place may be a directory others can write
//! (`/tmp`), where someone could have put a symbolic link or a hard link
//! to a file of the user's (or of root's) under the chosen name. Writing
//! through it would overwrite that file, so the name is opened without
//! following a link, and an existing file is reused only if it is a plain
//! file of the user's with no other name.
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Opens `path` for writing from the start, creating it (mode 0644 less
/// the umask) if it is missing, or says why it will not.
pub fn create_output(path: &Path) -> io::Result<File> {
    let refuse = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, format!("refusing to write: {why}"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("it is a symbolic link"),
            // A FIFO with no reader (opened non-blocking so that it cannot hang us).
            Some(libc::ENXIO) => refuse("it is not a regular file"),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refuse("it is not a regular file"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refuse(&format!("it belongs to uid {}", meta.uid())));
    }
    if meta.nlink() > 1 {
        return Err(refuse("it has other names (hard links)"));
    }
    // Truncate only now that the file is known to be the user's own.
    file.set_len(0)?;
    Ok(file)
}

/// Writes `bytes` to `path` through [`create_output`].
pub fn write_output(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    create_output(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_or_own_file_is_written_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.pcap");
        write_output(&p, b"long first content").unwrap();
        write_output(&p, b"short").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"short");
    }

    #[test]
    fn links_planted_under_the_name_are_refused_and_their_targets_kept() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "keep me").unwrap();
        let soft = dir.path().join("soft.pcap");
        std::os::unix::fs::symlink(&precious, &soft).unwrap();
        let err = write_output(&soft, b"x").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let hard = dir.path().join("hard.pcap");
        std::fs::hard_link(&precious, &hard).unwrap();
        let err = write_output(&hard, b"x").unwrap_err();
        assert!(err.to_string().contains("hard links"), "{err}");
        let fifo = dir.path().join("fifo.pcap");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = write_output(&fifo, b"x").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    }
}
