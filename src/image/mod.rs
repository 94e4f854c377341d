//! Guest images for `uml` (and later `kvm`) nodes, built locally from
//! Debian packages with no download and no root: a busybox userland and an
//! init in an ext4 file made by `mkfs.ext4 -d`.
//!
//! Images are cached under the user's data directory and rebuilt only when
//! their recipe changes: the recipe's fingerprint covers the init script,
//! the busybox binary's bytes, the layout and the size.
//!
//! Owns: the image cache, and measuring what files take on disk
//! ([`bytes_on_disk`], which the host's disk layers use too). Must not
//! touch: labs, nodes, the switch, the host layer.
pub mod kvm;
pub mod oci;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The init of the busybox image.
pub const INIT_SCRIPT: &str = include_str!("../../images/uml-init.sh");
/// The guest agent of the busybox image (see `host::agent`).
pub const AGENT_SCRIPT: &str = include_str!("../../images/clonet-agent.sh");
/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} is missing: install Debian's {1} package")]
    Missing(String, &'static str),
    #[error("{0} is not a static binary: install Debian's busybox-static")]
    NotStatic(String),
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
    #[error("no image called {0:?} (try `clonet image ls`)")]
    Unknown(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.to_path_buf(), source }
}

/// What an image is made of (sans-IO: contents are given, not read).
#[derive(Clone, Debug)]
pub struct Recipe {
    pub name: String,
    pub size_mb: u32,
    pub dirs: Vec<String>,
    /// (path in the image, contents, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// (link path, target).
    pub symlinks: Vec<(String, String)>,
}

impl Recipe {
    /// The busybox image: `busybox` is the static binary's bytes and
    /// `applets` the names `busybox --list` prints.
    pub fn busybox(busybox: Vec<u8>, applets: &[String]) -> Recipe {
        let dirs = ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "var", "mnt"];
        let mut symlinks: Vec<(String, String)> = applets
            .iter()
            .filter(|a| a.as_str() != "busybox")
            .map(|a| (format!("bin/{a}"), "busybox".into()))
            .collect();
        symlinks.sort();
        Recipe {
            name: "uml-busybox".into(),
            size_mb: 64,
            dirs: dirs.iter().map(|d| d.to_string()).collect(),
            files: vec![
                ("bin/busybox".into(), busybox, 0o755),
                ("init".into(), INIT_SCRIPT.as_bytes().to_vec(), 0o755),
                ("bin/clonet-agent".into(), AGENT_SCRIPT.as_bytes().to_vec(), 0o755),
                ("etc/hostname".into(), b"clonet\n".to_vec(), 0o644),
                ("etc/passwd".into(), b"root:x:0:0:root:/root:/bin/sh\n".to_vec(), 0o644),
                ("etc/group".into(), b"root:x:0:\n".to_vec(), 0o644),
            ],
            symlinks,
        }
    }

    /// Adds a dynamically linked host program at the same path, with the
    /// shared libraries it loads (`libs`: path and bytes, as `ldd` finds
    /// them), so that it runs unchanged in the guest.
    pub fn add_program(&mut self, path: &str, bytes: Vec<u8>, libs: Vec<(String, Vec<u8>)>) {
        let relative = |p: &str| p.trim_start_matches('/').to_string();
        self.files.push((relative(path), bytes, 0o755));
        for (lib, contents) in libs {
            self.files.push((relative(&lib), contents, 0o755));
        }
    }

    /// A stable hash of everything that goes into the image.
    pub fn fingerprint(&self) -> String {
        let size = self.size_mb.to_le_bytes();
        let modes: Vec<[u8; 4]> = self.files.iter().map(|(_, _, m)| m.to_le_bytes()).collect();
        let mut parts: Vec<&[u8]> = vec![self.name.as_bytes(), &size, MKFS_OPTIONS.as_bytes()];
        parts.extend(self.dirs.iter().map(|d| d.as_bytes()));
        for ((p, c, _), m) in self.files.iter().zip(&modes) {
            parts.extend([p.as_bytes(), c.as_slice(), m.as_slice()]);
        }
        for (l, t) in &self.symlinks {
            parts.extend([l.as_bytes(), t.as_bytes()]);
        }
        let h = crate::vocab::fnv1a(&parts);
        format!("{h:016x}")
    }
}

/// A built image, as recorded next to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    pub fingerprint: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Where images live: `$CLONET_DATA_DIR/images`, else
/// `$XDG_DATA_HOME/clonet/images`, else `~/.local/share/clonet/images`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CLONET_DATA_DIR") {
        return PathBuf::from(d).join("images");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    data.join("clonet/images")
}

/// The recipe of the default image, from the host's busybox-static.
pub fn default_recipe() -> Result<Recipe, ImageError> {
    let bytes = std::fs::read(BUSYBOX).map_err(|_| ImageError::Missing(BUSYBOX.into(), "busybox-static"))?;
    // A dynamic ELF has a PT_INTERP program header naming its loader.
    if bytes.windows(15).any(|w| w == b"/lib64/ld-linux") {
        return Err(ImageError::NotStatic(BUSYBOX.into()));
    }
    let out = Command::new(BUSYBOX).arg("--list").output().map_err(io_at(Path::new(BUSYBOX)))?;
    let applets: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    let mut recipe = Recipe::busybox(bytes, &applets);
    for program in EXTRA_PROGRAMS {
        if let Some((bytes, libs)) = host_program(program) {
            recipe.add_program(program, bytes, libs);
        }
    }
    Ok(recipe)
}

/// The libraries `ldd` says a program loads: each `name => /path (addr)`
/// line and the loader's own `/path (addr)` line; the vDSO has no file.
pub fn parse_ldd(text: &str) -> Vec<String> {
    let mut libs: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line.split_once("=>").map_or(line, |(_, rest)| rest.trim());
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

/// Host programs copied into the default image when the host has them,
/// so that guests can measure and debug their network like ns nodes do.
const EXTRA_PROGRAMS: &[&str] = &["/usr/bin/iperf3"];

/// `path` and the libraries it needs, read from the host; `None` when the
/// host does not have it or `ldd` cannot tell.
/// A program's bytes and its libraries (path, bytes).
type HostProgram = (Vec<u8>, Vec<(String, Vec<u8>)>);

fn host_program(path: &str) -> Option<HostProgram> {
    let bytes = std::fs::read(path).ok()?;
    let out = Command::new("ldd").arg(path).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not found") {
        return None;
    }
    let libs = parse_ldd(&text)
        .into_iter()
        .map(|lib| std::fs::read(&lib).ok().map(|b| (lib, b)))
        .collect::<Option<Vec<_>>>()?;
    Some((bytes, libs))
}

/// Inode tables and journal are written at build time: otherwise every
/// node's kernel zeroes them in the background after its first mount,
/// writing megabytes into each node's copy-on-write layer.
const MKFS_OPTIONS: &str = "lazy_itable_init=0,lazy_journal_init=0";

/// `mkfs.ext4`, also where an ordinary user's PATH does not look (/sbin).
fn mkfs_ext4() -> PathBuf {
    ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("mkfs.ext4"))
}

fn meta_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// The cached image called `name`, if any.
pub fn find(dir: &Path, name: &str) -> Option<ImageInfo> {
    let info: ImageInfo = serde_json::from_slice(&std::fs::read(meta_path(dir, name)).ok()?).ok()?;
    info.path.is_file().then_some(info)
}

/// Every cached image.
pub fn list(dir: &Path) -> Vec<ImageInfo> {
    let mut v: Vec<ImageInfo> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .filter_map(|n| find(dir, &n))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Files of the image cache that no current image uses: what interrupted
/// builds left (staging trees, half-written files) and anything else not
/// named by an image's record. With their sizes in bytes.
pub fn unused(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut keep: Vec<PathBuf> =
        list(dir).into_iter().flat_map(|i| [i.path.clone(), meta_path(dir, &i.name)]).collect();
    if let Some(k) = kvm::find(dir) {
        keep.extend([k.kernel, k.initrd, k.disk, dir.join(kvm::META)]);
    }
    keep.push(dir.join(ACCEL_CACHE));
    let mut out: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !keep.contains(p))
        .map(|p| {
            let bytes = bytes_on_disk(&p);
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

/// Bytes a file, or everything under a directory, takes on disk
/// (allocated blocks: holes in COW files do not count).
pub fn bytes_on_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    own + std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| bytes_on_disk(&e.path())).sum::<u64>()
}

/// The file where the KVM probe's verdict is kept.
pub const ACCEL_CACHE: &str = "accel";

/// Removes what `unused` finds; returns it.
pub fn gc(dir: &Path) -> Result<Vec<(PathBuf, u64)>, ImageError> {
    let found = unused(dir);
    for (p, _) in &found {
        let removed = if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
        removed.map_err(io_at(p))?;
    }
    Ok(found)
}

/// Whether `build` had work to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Built {
    Fresh,
    UpToDate,
}

/// Builds `recipe` into `dir` unless an image with its fingerprint is
/// there (or `force`). `step` is told what happens, for a progress display.
pub fn build(
    recipe: &Recipe,
    dir: &Path,
    force: bool,
    step: &mut dyn FnMut(&str),
) -> Result<(ImageInfo, Built), ImageError> {
    let fingerprint = recipe.fingerprint();
    if let Some(info) = find(dir, &recipe.name).filter(|i| i.fingerprint == fingerprint && !force) {
        return Ok((info, Built::UpToDate));
    }
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    step("staging the file tree");
    let stage = dir.join(format!(".{}.stage.{}", recipe.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let result = stage_and_mkfs(recipe, dir, &stage, &fingerprint, step);
    let _ = std::fs::remove_dir_all(&stage);
    result.map(|i| (i, Built::Fresh))
}

fn stage_and_mkfs(
    recipe: &Recipe,
    dir: &Path,
    stage: &Path,
    fingerprint: &str,
    step: &mut dyn FnMut(&str),
) -> Result<ImageInfo, ImageError> {
    use std::os::unix::fs::PermissionsExt;
    for d in &recipe.dirs {
        let p = stage.join(d);
        std::fs::create_dir_all(&p).map_err(io_at(&p))?;
    }
    for (path, contents, mode) in &recipe.files {
        let p = stage.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        std::fs::write(&p, contents).map_err(io_at(&p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).map_err(io_at(&p))?;
    }
    for (link, target) in &recipe.symlinks {
        let p = stage.join(link);
        if !p.exists() {
            std::os::unix::fs::symlink(target, &p).map_err(io_at(&p))?;
        }
    }
    step("making the ext4 file system");
    let tmp = dir.join(format!(".{}.img.{}", recipe.name, std::process::id()));
    let out = Command::new(mkfs_ext4())
        .args(["-q", "-F", "-L", "clonet", "-E", MKFS_OPTIONS, "-d"])
        .arg(stage)
        .arg(&tmp)
        .arg(format!("{}M", recipe.size_mb))
        .output()
        .map_err(|_| ImageError::Missing("mkfs.ext4".into(), "e2fsprogs"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(ImageError::Mkfs(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let path = dir.join(format!("{}.img", recipe.name));
    std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
    let bytes = std::fs::metadata(&path).map_err(io_at(&path))?.len();
    let info = ImageInfo { name: recipe.name.clone(), fingerprint: fingerprint.to_string(), path, bytes };
    let meta = meta_path(dir, &recipe.name);
    std::fs::write(&meta, serde_json::to_vec_pretty(&info).expect("serializes")).map_err(io_at(&meta))?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_every_ingredient() {
        let base = Recipe::busybox(b"bb".to_vec(), &["sh".into(), "ls".into()]);
        let same = Recipe::busybox(b"bb".to_vec(), &["ls".into(), "sh".into()]);
        assert_eq!(base.fingerprint(), same.fingerprint(), "applet order does not matter");
        let other_binary = Recipe::busybox(b"bb2".to_vec(), &["sh".into(), "ls".into()]);
        assert_ne!(base.fingerprint(), other_binary.fingerprint());
        let mut bigger = base.clone();
        bigger.size_mb += 1;
        assert_ne!(base.fingerprint(), bigger.fingerprint());
        let mut other_init = base.clone();
        other_init.files[1].1.push(b'\n');
        assert_eq!(other_init.files[1].0, "init");
        assert_ne!(base.fingerprint(), other_init.fingerprint());
    }

    #[test]
    fn ldd_output_gives_every_library_file_once() {
        let text = "\tlinux-vdso.so.1 (0x00007f27ab505000)\n\
                    \tlibiperf.so.0 => /lib/x86_64-linux-gnu/libiperf.so.0 (0x00007f27ab4be000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f27ab2dc000)\n\
                    \tlibgone.so.1 => not found\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f27ab507000)\n";
        assert_eq!(
            parse_ldd(text),
            ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libiperf.so.0", "/lib64/ld-linux-x86-64.so.2"]
        );
        let mut r = Recipe::busybox(vec![], &[]);
        let before = r.fingerprint();
        r.add_program("/usr/bin/iperf3", b"elf".to_vec(), vec![("/lib64/ld.so".into(), b"ld".to_vec())]);
        assert!(r.files.iter().any(|(p, _, _)| p == "usr/bin/iperf3"));
        assert!(r.files.iter().any(|(p, _, _)| p == "lib64/ld.so"));
        assert_ne!(before, r.fingerprint(), "a new program rebuilds the image");
    }

    #[test]
    fn only_files_no_image_uses_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let img = d.join("uml-busybox.img");
        std::fs::write(&img, b"image").unwrap();
        let info = ImageInfo { name: "uml-busybox".into(), fingerprint: "f".into(), path: img.clone(), bytes: 5 };
        std::fs::write(meta_path(d, "uml-busybox"), serde_json::to_vec(&info).unwrap()).unwrap();
        std::fs::write(d.join(ACCEL_CACHE), b"x tcg").unwrap();
        std::fs::create_dir(d.join(".uml-busybox.stage.42")).unwrap();
        std::fs::write(d.join(".uml-busybox.stage.42/init"), b"#!").unwrap();
        std::fs::write(d.join("kvm-busybox.qcow2.tmp"), b"half").unwrap();
        let names: Vec<String> =
            unused(d).iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().to_string()).collect();
        assert_eq!(names, [".uml-busybox.stage.42", "kvm-busybox.qcow2.tmp"]);
        assert_eq!(gc(d).unwrap().len(), 2);
        assert!(unused(d).is_empty());
        assert!(img.exists() && d.join(ACCEL_CACHE).exists(), "images in use stay");
    }

    #[test]
    fn the_recipe_links_applets_to_busybox() {
        let r = Recipe::busybox(vec![], &["busybox".into(), "ip".into()]);
        assert_eq!(r.symlinks, vec![("bin/ip".to_string(), "busybox".to_string())]);
        assert!(r.files.iter().any(|(p, _, m)| p == "init" && *m == 0o755));
    }
}
