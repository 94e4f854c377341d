//! Node kinds, accelerators, and the options a new node is made with.
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::units::{Cpus, MemMb};
use super::VocabError;

/// The kinds of node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Namespaces running host programs.
    Ns,
    /// A User-Mode Linux machine.
    Uml,
    /// A QEMU machine (KVM or TCG).
    Kvm,
}

impl FromStr for NodeKind {
    type Err = VocabError;

    fn from_str(s: &str) -> Result<NodeKind, VocabError> {
        match s {
            "ns" => Ok(NodeKind::Ns),
            "uml" => Ok(NodeKind::Uml),
            "kvm" => Ok(NodeKind::Kvm),
            _ => Err(VocabError::UnknownKind(s.to_string())),
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, for tables.
        f.pad(match self {
            NodeKind::Ns => "ns",
            NodeKind::Uml => "uml",
            NodeKind::Kvm => "kvm",
        })
    }
}

/// How a kvm node's guest code runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl FromStr for Accel {
    type Err = VocabError;

    fn from_str(s: &str) -> Result<Accel, VocabError> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(VocabError::UnknownAccel(s.to_string())),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The most extra arguments a machine takes, and the longest one.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG_LEN: usize = 4096;
/// The longest path an option may name (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// Options of a new node that only some kinds use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOptions {
    /// Guest memory in MiB (uml, kvm).
    #[serde(default)]
    pub mem_mb: Option<MemMb>,
    /// Virtual CPUs (kvm).
    #[serde(default)]
    pub cpus: Option<Cpus>,
    /// The lower layer of an ns node's root instead of the host's `/`.
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
    /// Instead of the probed choice (kvm).
    #[serde(default)]
    pub accel: Option<Accel>,
    /// Base disk image (uml, kvm): never written; the node runs on a COW layer.
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// Extra words for the machine (uml: kernel command-line arguments,
    /// e.g. a legacy `eth0=daemon,,unix,/path/ctl` NIC outside the clonet
    /// switch; kvm: QEMU arguments).
    #[serde(default)]
    pub args: Vec<String>,
}

/// A path given as an option: not empty, not too long, no NUL byte.
pub fn check_path(option: &'static str, path: &Path) -> Result<(), VocabError> {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.is_empty() {
        return Err(VocabError::invalid(option, "the path is empty"));
    }
    if bytes.len() > MAX_PATH_LEN {
        return Err(VocabError::invalid(option, format!("the path is longer than {MAX_PATH_LEN} bytes")));
    }
    if bytes.contains(&0) {
        return Err(VocabError::invalid(option, "the path contains a NUL byte"));
    }
    Ok(())
}

/// The file under `/proc/sys` of a sysctl `key` (`net.ipv4.ip_forward`),
/// read as sysctl(8) does: dots separate levels, a slash stands for a dot
/// inside a name (`net.ipv4.conf.eth0/10.forwarding`). The result is
/// checked after that mapping, so no level is empty, `.` or `..`: the path
/// cannot leave `/proc/sys`.
pub fn sysctl_path(key: &str) -> Result<String, VocabError> {
    let bad = || VocabError::invalid("key", format!("{key:?} is not a key under /proc/sys"));
    if key.is_empty() || key.len() > 256 {
        return Err(bad());
    }
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')) {
        return Err(bad());
    }
    let mapped: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    if mapped.split('/').any(|level| level.is_empty() || level == "." || level == "..") {
        return Err(bad());
    }
    Ok(format!("/proc/sys/{mapped}"))
}

impl NodeOptions {
    /// The rules between options and kinds, and the shape of the free
    /// values (arguments, paths). Ranges are the types' own.
    pub fn check(&self, kind: NodeKind) -> Result<(), VocabError> {
        let machine = matches!(kind, NodeKind::Uml | NodeKind::Kvm);
        if !machine && (self.mem_mb.is_some() || self.image.is_some() || !self.args.is_empty()) {
            return Err(VocabError::invalid("node", "mem, image and args apply to uml and kvm nodes, not ns"));
        }
        if kind != NodeKind::Kvm && (self.cpus.is_some() || self.accel.is_some()) {
            return Err(VocabError::invalid("node", "cpus and accel apply to kvm nodes"));
        }
        if kind != NodeKind::Ns && self.rootfs.is_some() {
            return Err(VocabError::invalid("node", "rootfs applies to ns nodes (uml and kvm take an image)"));
        }
        if self.args.len() > MAX_ARGS {
            return Err(VocabError::OutOfRange {
                option: "args",
                value: format!("{} arguments", self.args.len()),
                range: "at most 256",
            });
        }
        for a in &self.args {
            if a.is_empty() || a.len() > MAX_ARG_LEN || a.contains(['\0', ' ', '\n', '\t']) {
                return Err(VocabError::invalid(
                    "args",
                    format!("bad kernel or QEMU argument {a:?} (one word each, at most 4096 bytes)"),
                ));
            }
        }
        if let Some(p) = &self.rootfs {
            check_path("rootfs", p)?;
        }
        if let Some(p) = &self.image {
            check_path("image", p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_accels_parse_and_print() {
        assert_eq!("kvm".parse::<NodeKind>().unwrap(), NodeKind::Kvm);
        assert!("docker".parse::<NodeKind>().unwrap_err().to_string().contains("unknown node kind"));
        assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
        assert!(serde_json::from_str::<Accel>(r#""hvf""#).is_err());
        assert_eq!(format!("{:>4}", NodeKind::Ns), "  ns");
    }

    #[test]
    fn sysctl_keys_stay_under_proc_sys() {
        assert_eq!(sysctl_path("net.ipv4.ip_forward").unwrap(), "/proc/sys/net/ipv4/ip_forward");
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0/10.rp_filter").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.10/rp_filter"
        );
        // `/` maps to `.`, so these would have climbed out of /proc/sys.
        for bad in ["//.//.etc.hosts", "net./..", "..", "a..b", ".net", "net.", "a b", ""] {
            assert!(sysctl_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn options_fit_their_kind() {
        let kvm = NodeOptions { cpus: Some(Cpus::new(2).unwrap()), accel: Some(Accel::Tcg), ..Default::default() };
        assert!(kvm.check(NodeKind::Kvm).is_ok());
        assert!(kvm.check(NodeKind::Uml).unwrap_err().to_string().contains("apply to kvm"));
        let mem = NodeOptions { mem_mb: Some(MemMb::new(64).unwrap()), ..Default::default() };
        assert!(mem.check(NodeKind::Ns).is_err() && mem.check(NodeKind::Uml).is_ok());
        let rootfs = NodeOptions { rootfs: Some("/srv/root".into()), ..Default::default() };
        assert!(rootfs.check(NodeKind::Ns).is_ok() && rootfs.check(NodeKind::Kvm).is_err());
        let args = NodeOptions { args: vec!["a b".into()], ..Default::default() };
        assert!(args.check(NodeKind::Uml).unwrap_err().to_string().contains("one word"));
        let many = NodeOptions { args: vec!["x".into(); MAX_ARGS + 1], ..Default::default() };
        assert!(many.check(NodeKind::Uml).is_err());
        let nul = NodeOptions { image: Some("a\0b".into()), ..Default::default() };
        assert!(nul.check(NodeKind::Uml).unwrap_err().to_string().contains("NUL"));
        let e = serde_json::from_str::<NodeOptions>(r#"{"cpus":0}"#).unwrap_err().to_string();
        assert!(e.contains("cpus 0 is out of range"), "{e}");
    }
}
