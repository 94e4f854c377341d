//! The default image of `kvm` nodes, built from Debian packages with no
//! root and no download: the host's kernel (`linux-image-amd64`), an
//! initramfs holding busybox, the virtio and ext4 modules and a first-stage
//! init that mounts the disk, and a qcow2 root disk converted from the
//! busybox ext4 image that uml nodes use (same userland, init and agent).
//!
//! The cpio writer and the module resolver are sans-IO.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{io_at, ImageError};

/// The first-stage init of the initramfs.
pub const STAGE1_INIT: &str = include_str!("../../images/kvm-stage1.sh");
/// The init that brings the agent into a user's own root file system.
pub const USER_INIT: &str = include_str!("../../images/kvm-user-init.sh");

/// Modules a guest needs for its PCI bus, disk, NICs, agent channel and
/// root file system (their dependencies come from `modules.dep`).
pub const WANTED_MODULES: &[&str] =
    &["virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "crc32c_generic", "ext4"];

/// The files of modules `wanted` and of everything they depend on, each
/// after its dependencies, from the text of `modules.dep`. Unknown names
/// are returned as the error.
pub fn resolve_modules(dep_text: &str, wanted: &[&str]) -> Result<Vec<String>, String> {
    let deps: std::collections::HashMap<String, (String, Vec<String>)> = dep_text
        .lines()
        .filter_map(|l| {
            let (file, rest) = l.split_once(':')?;
            let name = file.rsplit('/').next()?.split('.').next()?.replace('-', "_");
            Some((name, (file.to_string(), rest.split_whitespace().map(str::to_string).collect())))
        })
        .collect();
    let by_file: std::collections::HashMap<&str, &str> =
        deps.iter().map(|(name, (file, _))| (file.as_str(), name.as_str())).collect();
    let mut order = Vec::new();
    fn visit(
        name: &str,
        deps: &std::collections::HashMap<String, (String, Vec<String>)>,
        by_file: &std::collections::HashMap<&str, &str>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        let (file, needs) = deps.get(name).ok_or_else(|| name.to_string())?;
        if order.contains(file) {
            return Ok(());
        }
        for dep in needs {
            let dep_name = by_file.get(dep.as_str()).ok_or_else(|| dep.clone())?;
            visit(dep_name, deps, by_file, order)?;
        }
        if !order.contains(file) {
            order.push(file.clone());
        }
        Ok(())
    }
    for w in wanted {
        visit(w, &deps, &by_file, &mut order)?;
    }
    Ok(order)
}

/// An entry of a cpio archive.
pub enum CpioEntry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

/// A cpio archive in the `newc` format the kernel unpacks as initramfs.
pub fn cpio_newc(entries: &[CpioEntry<'_>]) -> Vec<u8> {
    fn pad4(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let mut put = |ino: u32, name: &str, mode: u32, data: &[u8]| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(&mut out);
        out.extend_from_slice(data);
        pad4(&mut out);
    };
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match e {
            CpioEntry::Dir(p) => put(ino, p, 0o040755, &[]),
            CpioEntry::File(p, data, mode) => put(ino, p, 0o100000 | mode, data),
            CpioEntry::Symlink(p, target) => put(ino, p, 0o120777, target.as_bytes()),
        }
    }
    put(0, "TRAILER!!!", 0, &[]);
    out
}

/// The parts of a built kvm image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvmImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The qcow2 base disk; nodes run on overlays of it.
    pub disk: PathBuf,
    pub fingerprint: String,
}

/// The newest `/boot/vmlinuz-*` and its release.
fn host_kernel() -> Result<(PathBuf, String), ImageError> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .collect();
    kernels.sort();
    let kernel = kernels.pop().ok_or_else(|| ImageError::Missing("/boot/vmlinuz-*".into(), "linux-image-amd64"))?;
    let release = kernel.file_name().and_then(|n| n.to_str()).unwrap_or_default()["vmlinuz-".len()..].to_string();
    Ok((kernel, release))
}

/// Builds (or finds up to date) the kvm image in `dir`, on top of the
/// busybox ext4 image `rootfs`.
pub fn build(
    dir: &Path,
    rootfs: &super::ImageInfo,
    force: bool,
    step: &mut dyn FnMut(&str),
) -> Result<(KvmImage, super::Built), ImageError> {
    let (kernel_src, release) = host_kernel()?;
    let moddir = PathBuf::from("/lib/modules").join(&release);
    let dep_path = moddir.join("modules.dep");
    let dep_text = std::fs::read_to_string(&dep_path)
        .map_err(|_| ImageError::Missing(dep_path.display().to_string(), "linux-image-amd64"))?;
    let modules = resolve_modules(&dep_text, WANTED_MODULES)
        .map_err(|m| ImageError::Missing(format!("kernel module {m}"), "linux-image-amd64"))?;
    let kernel_bytes = std::fs::read(&kernel_src).map_err(io_at(&kernel_src))?;
    let busybox =
        std::fs::read(super::BUSYBOX).map_err(|_| ImageError::Missing(super::BUSYBOX.into(), "busybox-static"))?;
    let mut module_bytes = Vec::new();
    for m in &modules {
        let p = moddir.join(m);
        module_bytes.push(std::fs::read(&p).map_err(io_at(&p))?);
    }
    let order: String = modules.iter().map(|m| format!("/lib/modules/{m}\n")).collect();
    let mut parts: Vec<&[u8]> = vec![
        &kernel_bytes,
        &busybox,
        STAGE1_INIT.as_bytes(),
        USER_INIT.as_bytes(),
        super::AGENT_SCRIPT.as_bytes(),
        order.as_bytes(),
        rootfs.fingerprint.as_bytes(),
    ];
    parts.extend(module_bytes.iter().map(Vec::as_slice));
    let fingerprint = format!("{:016x}", crate::vocab::fnv1a(&parts));
    let meta = dir.join(META);
    if let Some(img) = find(dir).filter(|i| i.fingerprint == fingerprint && !force) {
        return Ok((img, super::Built::UpToDate));
    }
    step("making the kvm initramfs");
    let mut dirs: Vec<String> = vec!["bin".into(), "dev".into(), "proc".into(), "sys".into(), "newroot".into()];
    for m in &modules {
        let mut p = Path::new("lib/modules").join(m);
        while let Some(parent) = p.parent().filter(|x| !x.as_os_str().is_empty()) {
            dirs.push(parent.display().to_string());
            p = parent.to_path_buf();
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs.sort_by_key(|d| d.matches('/').count());
    let module_paths: Vec<String> = modules.iter().map(|m| format!("lib/modules/{m}")).collect();
    let mut entries: Vec<CpioEntry<'_>> = dirs.iter().map(|d| CpioEntry::Dir(d)).collect();
    entries.push(CpioEntry::File("bin/busybox", &busybox, 0o755));
    entries.push(CpioEntry::Symlink("bin/sh", "busybox"));
    entries.push(CpioEntry::File("init", STAGE1_INIT.as_bytes(), 0o755));
    entries.push(CpioEntry::File("clonet-agent", super::AGENT_SCRIPT.as_bytes(), 0o755));
    entries.push(CpioEntry::File("clonet-user-init", USER_INIT.as_bytes(), 0o755));
    entries.push(CpioEntry::File("modules.order", order.as_bytes(), 0o644));
    for (p, b) in module_paths.iter().zip(&module_bytes) {
        entries.push(CpioEntry::File(p, b, 0o644));
    }
    let initrd = dir.join("kvm-busybox.initrd");
    let kernel = dir.join("kvm-busybox.vmlinuz");
    let write = |p: &Path, b: &[u8]| {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, b).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, p).map_err(io_at(p))
    };
    write(&initrd, &cpio_newc(&entries))?;
    write(&kernel, &kernel_bytes)?;
    step("converting the root disk to qcow2");
    let disk = dir.join("kvm-busybox.qcow2");
    let tmp = dir.join("kvm-busybox.qcow2.tmp");
    // The source may be the backing file of running UML machines, whose
    // lock refuses QEMU's "consistent read" lock (even with -U): read it
    // without locking; UML never writes to it.
    let source = format!(
        "driver=raw,file.driver=file,file.filename={},file.locking=off",
        rootfs.path.display().to_string().replace(',', ",,")
    );
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "--image-opts", &source, "-O", "qcow2"])
        .arg(&tmp)
        .output()
        .map_err(|_| ImageError::Missing("qemu-img".into(), "qemu-utils"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(ImageError::Mkfs(format!("qemu-img convert: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    std::fs::rename(&tmp, &disk).map_err(io_at(&disk))?;
    let img = KvmImage { kernel, initrd, disk, fingerprint };
    std::fs::write(&meta, serde_json::to_vec_pretty(&img).expect("serializes")).map_err(io_at(&meta))?;
    Ok((img, super::Built::Fresh))
}

/// Where the kvm image's parts are recorded.
pub const META: &str = "kvm-busybox.json";

/// The cached kvm image, if every part of it is there.
pub fn find(dir: &Path) -> Option<KvmImage> {
    let img: KvmImage = serde_json::from_slice(&std::fs::read(dir.join(META)).ok()?).ok()?;
    (img.kernel.is_file() && img.initrd.is_file() && img.disk.is_file()).then_some(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str =
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/virtio/virtio.ko:\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
kernel/lib/crc16.ko:\n\
kernel/fs/mbcache.ko:\n\
kernel/fs/jbd2/jbd2.ko:\n";

    #[test]
    fn modules_come_after_their_dependencies_once() {
        let order = resolve_modules(DEP, &["virtio_blk", "ext4", "virtio_blk"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/lib/crc16.ko",
                "kernel/fs/mbcache.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/ext4/ext4.ko",
            ]
        );
        assert_eq!(resolve_modules(DEP, &["nope"]), Err("nope".to_string()));
    }

    #[test]
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let a = cpio_newc(&[
            CpioEntry::Dir("bin"),
            CpioEntry::File("bin/x", b"hello", 0o755),
            CpioEntry::Symlink("sh", "x"),
        ]);
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // The file's mode field: regular file, 0755.
        let at = text.find("bin/x").unwrap() - 110;
        assert_eq!(&text[at + 14..at + 22], "000081ed");
        assert_eq!(&text[at + 54..at + 62], "00000005", "file size");
    }
}
