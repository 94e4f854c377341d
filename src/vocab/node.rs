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
    /// The lab's way out: a passt user-mode network stack that gives the
    /// one node linked to it an address by DHCP and NAT to the host.
    Nat,
    /// An interface of the host's own (in clonet's network namespace),
    /// plugged into a LAN: the host's way in.
    Host,
    /// A socket where programs clonet did not start join a LAN; each
    /// client is one of its interfaces.
    Plug,
    /// A VXLAN tunnel (RFC 7348) from a LAN to another VTEP: Linux's own
    /// `vxlan` device, FRR EVPN, Open vSwitch, another clonet.
    Vxlan,
}

impl FromStr for NodeKind {
    type Err = VocabError;

    fn from_str(s: &str) -> Result<NodeKind, VocabError> {
        match s {
            "ns" => Ok(NodeKind::Ns),
            "uml" => Ok(NodeKind::Uml),
            "kvm" => Ok(NodeKind::Kvm),
            "nat" => Ok(NodeKind::Nat),
            "host" => Ok(NodeKind::Host),
            "plug" => Ok(NodeKind::Plug),
            "vxlan" => Ok(NodeKind::Vxlan),
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
            NodeKind::Nat => "nat",
            NodeKind::Host => "host",
            NodeKind::Plug => "plug",
            NodeKind::Vxlan => "vxlan",
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

/// A host port a `nat` endpoint forwards to its node's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Forward {
    pub udp: bool,
    pub host_port: u16,
    pub node_port: u16,
}

impl FromStr for Forward {
    type Err = VocabError;

    /// `tcp:HOST_PORT:NODE_PORT` or `udp:…`, ports 1 to 65535.
    fn from_str(s: &str) -> Result<Forward, VocabError> {
        let bad = || {
            VocabError::invalid(
                "forward",
                format!("{s:?} is not PROTO:HOST_PORT:NODE_PORT (tcp or udp, ports 1-65535)"),
            )
        };
        let mut parts = s.split(':');
        let udp = match parts.next() {
            Some("tcp") => false,
            Some("udp") => true,
            _ => return Err(bad()),
        };
        let port = |p: Option<&str>| p.and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0).ok_or_else(bad);
        let (host_port, node_port) = (port(parts.next())?, port(parts.next())?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Forward { udp, host_port, node_port })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", if self.udp { "udp" } else { "tcp" }, self.host_port, self.node_port)
    }
}

/// The most ports a `nat` endpoint forwards.
pub const MAX_FORWARDS: usize = 64;

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
    /// Host ports a `nat` endpoint forwards to its node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<Forward>,
    /// What a `plug` listens on and the LAN its clients join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plug: Option<super::PlugSpec>,
    /// Where a `vxlan` endpoint's tunnel goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<super::VxlanSpec>,
    /// Host directories or files shown inside an ns node (`binds`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<Bind>,
    /// Environment variables of every command run in an ns node (`env`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// An OCI image as an ns node's root (`image` on an ns node): a
    /// registry reference, `oci:DIR[:TAG]`, `docker-archive:FILE` or
    /// `oci-archive:FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<String>,
    /// The main program of an image's node instead of the image's
    /// Entrypoint and Cmd; empty runs none (`cmd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
}

/// The most binds and environment variables a node takes.
pub const MAX_BINDS: usize = 64;
pub const MAX_ENV: usize = 256;

/// A host directory or file shown at `target` inside an ns node, read-only
/// or not: `SOURCE:TARGET[:ro|:rw]` in scripts, as Docker writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// On the host; absolute once the script layer has resolved it.
    pub source: PathBuf,
    /// Inside the node: absolute, without `.` or `..`.
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl Bind {
    /// Parses `SOURCE:TARGET[:ro|:rw]`; the source may still be relative.
    pub fn parse(text: &str) -> Result<Bind, VocabError> {
        let bad = |why: &str| VocabError::invalid("binds", format!("{text:?}: {why} (SOURCE:TARGET[:ro])"));
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            [_, _, mode] => return Err(bad(&format!("unknown mode {mode:?}: ro or rw"))),
            _ => return Err(bad("one or two colons")),
        };
        let bind = Bind { source: PathBuf::from(source), target: target.to_string(), read_only };
        bind.check()?;
        Ok(bind)
    }

    /// The shape of both paths.
    pub fn check(&self) -> Result<(), VocabError> {
        check_path("binds", &self.source)?;
        let t = &self.target;
        let parts_ok = t.split('/').skip(1).all(|p| !p.is_empty() && p != "." && p != "..");
        if !t.starts_with('/') || t == "/" || !parts_ok || t.len() > MAX_PATH_LEN || t.contains(['\0', ':']) {
            return Err(VocabError::invalid(
                "binds",
                format!("target {t:?} must be an absolute path inside the node, below /, without . or .."),
            ));
        }
        Ok(())
    }
}

/// Whether `name` may name an environment variable: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    name.len() <= 256
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
        // What only a node that runs something takes (ns, uml, kvm).
        let node_options = self.mem_mb.is_some()
            || self.cpus.is_some()
            || self.rootfs.is_some()
            || self.accel.is_some()
            || self.image.is_some()
            || !self.args.is_empty()
            || !self.binds.is_empty()
            || !self.env.is_empty()
            || self.oci.is_some()
            || self.cmd.is_some();
        if kind == NodeKind::Plug {
            let spec = self
                .plug
                .as_ref()
                .ok_or_else(|| VocabError::invalid("plug", "a plug needs its protocol, path and LAN"))?;
            if node_options || !self.forward.is_empty() {
                return Err(VocabError::invalid("plug", "a plug takes only its protocol, path, LAN, vlan and mtu"));
            }
            return spec.check();
        }
        if self.plug.is_some() {
            return Err(VocabError::invalid("node", "plug options make a plug (plug(lan, #{protocol, path}))"));
        }
        if kind == NodeKind::Vxlan {
            let spec = self
                .vxlan
                .as_ref()
                .ok_or_else(|| VocabError::invalid("vxlan", "a vxlan endpoint needs its vni and remote"))?;
            if node_options || !self.forward.is_empty() {
                return Err(VocabError::invalid("vxlan", "a vxlan endpoint takes only its vni, remote and ports"));
            }
            return spec.check();
        }
        if self.vxlan.is_some() {
            return Err(VocabError::invalid(
                "node",
                "vxlan options make a vxlan endpoint (vxlan(lan, #{vni, remote}))",
            ));
        }
        if kind != NodeKind::Ns && (!self.binds.is_empty() || !self.env.is_empty() || self.oci.is_some()) {
            return Err(VocabError::invalid("node", "binds, env and container images apply to ns nodes"));
        }
        if let Some(r) = &self.oci {
            if r.is_empty() || r.len() > 1024 || r.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(VocabError::invalid("image", format!("{r:?} is not an image reference")));
            }
            if self.rootfs.is_some() {
                return Err(VocabError::invalid("node", "an ns node takes an image or a rootfs, not both"));
            }
        }
        if let Some(cmd) = &self.cmd {
            if self.oci.is_none() {
                return Err(VocabError::invalid("cmd", "cmd replaces an image's main program: give the node an image"));
            }
            if cmd.len() > MAX_ARGS || cmd.iter().any(|a| a.len() > MAX_ARG_LEN || a.contains('\0')) {
                return Err(VocabError::invalid("cmd", "at most 256 words of 4096 bytes, without NUL"));
            }
        }
        if self.binds.len() > MAX_BINDS || self.env.len() > MAX_ENV {
            return Err(VocabError::OutOfRange {
                option: "binds",
                value: format!("{} binds and {} variables", self.binds.len(), self.env.len()),
                range: "at most 64 binds and 256 variables",
            });
        }
        for b in &self.binds {
            b.check()?;
            if !b.source.is_absolute() {
                return Err(VocabError::invalid("binds", format!("source {} must be absolute", b.source.display())));
            }
        }
        for (k, v) in &self.env {
            if !is_env_name(k) || v.len() > MAX_ARG_LEN || v.contains('\0') {
                return Err(VocabError::invalid(
                    "env",
                    format!("{k:?}: names are letters, digits and _, values at most 4096 bytes without NUL"),
                ));
            }
        }
        if kind == NodeKind::Nat {
            if node_options {
                return Err(VocabError::invalid("nat", "a nat endpoint takes only forward"));
            }
            if self.forward.len() > MAX_FORWARDS {
                return Err(VocabError::OutOfRange {
                    option: "forward",
                    value: format!("{} ports", self.forward.len()),
                    range: "at most 64",
                });
            }
            return Ok(());
        }
        if kind == NodeKind::Host && (node_options || !self.forward.is_empty()) {
            return Err(VocabError::invalid("host_iface", "a host interface takes no node options"));
        }
        if !self.forward.is_empty() {
            return Err(VocabError::invalid("node", "forward applies to nat endpoints (nat(name, #{forward: [...]}))"));
        }
        let machine = matches!(kind, NodeKind::Uml | NodeKind::Kvm);
        if !machine && (self.image.is_some() || !self.args.is_empty()) {
            // (An ns node's image is `oci`, set from the script's `image`.)
            return Err(VocabError::invalid("node", "image and args apply to uml and kvm nodes, not ns"));
        }
        // An ns node's mem and cpus are limits (a control group); a
        // machine's are what it has.
        if !machine && kind != NodeKind::Ns && self.mem_mb.is_some() {
            return Err(VocabError::invalid("node", "mem applies to ns, uml and kvm nodes"));
        }
        if !matches!(kind, NodeKind::Kvm | NodeKind::Ns) && self.cpus.is_some() {
            return Err(VocabError::invalid("node", "cpus applies to kvm and ns nodes"));
        }
        if kind != NodeKind::Kvm && self.accel.is_some() {
            return Err(VocabError::invalid("node", "accel applies to kvm nodes"));
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
    fn binds_parse_as_docker_writes_them_and_refuse_what_could_escape() {
        let b = Bind::parse("/srv/lab/shared:/shared").unwrap();
        assert_eq!(
            (b.source.as_path(), b.target.as_str(), b.read_only),
            (Path::new("/srv/lab/shared"), "/shared", false)
        );
        assert!(Bind::parse("lab:/hostlab:ro").unwrap().read_only);
        for bad in ["/a", "/a:/b:rx", "/a:b", "/a:/", "/a:/x/../etc", "/a:/x//y", "/a:/b:ro:x", ":/b"] {
            let e = Bind::parse(bad).unwrap_err().to_string();
            assert!(e.contains("binds"), "{bad}: {e}");
        }
        let relative = NodeOptions { binds: vec![Bind::parse("lab:/hostlab").unwrap()], ..Default::default() };
        assert!(relative.check(NodeKind::Ns).unwrap_err().to_string().contains("must be absolute"));
        let uml = NodeOptions { binds: vec![Bind::parse("/lab:/hostlab").unwrap()], ..Default::default() };
        assert!(uml.check(NodeKind::Uml).is_err() && uml.check(NodeKind::Ns).is_ok());
        let env = |k: &str| NodeOptions { env: [(k.to_string(), "v".to_string())].into(), ..Default::default() };
        assert!(env("PATH_2").check(NodeKind::Ns).is_ok());
        assert!(env("2X").check(NodeKind::Ns).is_err() && env("A=B").check(NodeKind::Ns).is_err());
        assert!(env("A").check(NodeKind::Nat).is_err());
    }

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
    fn forwards_parse_and_print_and_only_nat_takes_them() {
        let f: Forward = "udp:5353:53".parse().unwrap();
        assert_eq!((f.udp, f.host_port, f.node_port), (true, 5353, 53));
        assert_eq!(f.to_string(), "udp:5353:53");
        for bad in ["tcp:0:80", "sctp:1:2", "tcp:80", "tcp:1:2:3", "tcp:70000:1", "tcp:a:1", ""] {
            assert!(bad.parse::<Forward>().is_err(), "{bad:?}");
        }
        let options = NodeOptions { forward: vec![f], ..Default::default() };
        assert!(options.check(NodeKind::Nat).is_ok());
        assert!(options.check(NodeKind::Ns).unwrap_err().to_string().contains("nat endpoints"));
        let mem = NodeOptions { mem_mb: Some(MemMb::new(64).unwrap()), ..Default::default() };
        assert!(mem.check(NodeKind::Nat).is_err());
    }

    #[test]
    fn options_fit_their_kind() {
        let kvm = NodeOptions { cpus: Some(Cpus::new(2).unwrap()), accel: Some(Accel::Tcg), ..Default::default() };
        assert!(kvm.check(NodeKind::Kvm).is_ok());
        assert!(kvm.check(NodeKind::Uml).unwrap_err().to_string().contains("applies to kvm"));
        assert!(kvm.check(NodeKind::Ns).unwrap_err().to_string().contains("accel applies to kvm"));
        // An ns node's mem and cpus are limits.
        let limits = NodeOptions {
            mem_mb: Some(MemMb::new(64).unwrap()),
            cpus: Some(Cpus::new(1).unwrap()),
            ..Default::default()
        };
        assert!(limits.check(NodeKind::Ns).is_ok() && limits.check(NodeKind::Uml).is_err());
        let mem = NodeOptions { mem_mb: Some(MemMb::new(64).unwrap()), ..Default::default() };
        assert!(mem.check(NodeKind::Ns).is_ok() && mem.check(NodeKind::Uml).is_ok());
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
