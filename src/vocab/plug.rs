//! Plugs: sockets where programs clonet did not start (a QEMU with its own
//! command line, a UML, anything that speaks VDE) join a LAN. The
//! protocols a plug speaks and what a plug is made with.
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Mtu, VlanMode, VocabError};

/// What a plug's clients speak, and so what it listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlugProtocol {
    /// QEMU's `-netdev stream,server=off,addr.type=unix,addr.path=FILE`:
    /// a stream socket, each frame after its 4-byte big-endian length.
    #[serde(rename = "qemu")]
    QemuStream,
    /// QEMU's `-netdev dgram` with unix addresses: one frame per datagram
    /// sent to FILE from the client's own bound path.
    #[serde(rename = "qemu-dgram")]
    QemuDgram,
    /// UML's `vecN:transport=bess,dst=FILE`: a seqpacket socket, one frame
    /// per message.
    #[serde(rename = "uml")]
    UmlBess,
    /// The VDE switch protocol on a control directory (`vde_plug`,
    /// `vde_plug2tap`, QEMU's `-netdev vde`, UML's `vde` and `daemon`
    /// transports).
    #[serde(rename = "vde")]
    Vde,
}

impl PlugProtocol {
    pub const ALL: [PlugProtocol; 4] =
        [PlugProtocol::QemuStream, PlugProtocol::QemuDgram, PlugProtocol::UmlBess, PlugProtocol::Vde];

    pub fn name(self) -> &'static str {
        match self {
            PlugProtocol::QemuStream => "qemu",
            PlugProtocol::QemuDgram => "qemu-dgram",
            PlugProtocol::UmlBess => "uml",
            PlugProtocol::Vde => "vde",
        }
    }
}

impl FromStr for PlugProtocol {
    type Err = VocabError;

    fn from_str(s: &str) -> Result<PlugProtocol, VocabError> {
        PlugProtocol::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            VocabError::invalid("protocol", format!("{s:?} is not a plug protocol (qemu, qemu-dgram, uml or vde)"))
        })
    }
}

impl fmt::Display for PlugProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The longest path of a plug. A unix socket's address holds 107 bytes;
/// a plug binds its socket in a directory of its own beside the path
/// (`/.clonet-XXXXXXXX/s`, 19 bytes where the path's last name is at
/// least 2 with its slash), and a vde plug binds `ctl` that way inside
/// its directory: 88 leaves room for both.
pub const MAX_PLUG_PATH: usize = 88;

/// A plug: where it listens, what it speaks, and the LAN its clients join
/// (with the VLAN and MTU of their ports).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlugSpec {
    pub protocol: PlugProtocol,
    /// The socket (or, for `vde`, the directory) the plug creates.
    pub path: PathBuf,
    pub lan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<VlanMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Mtu>,
}

impl PlugSpec {
    /// The rules a plug's path follows: absolute (the programs that
    /// connect run elsewhere), short enough for a unix socket address
    /// (with room for the VDE plug's own names), no NUL, no `..` and no
    /// trailing slash.
    pub fn check(&self) -> Result<(), VocabError> {
        let bad = |why: &str| VocabError::invalid("path", format!("{}: {why}", self.path.display()));
        let bytes = self.path.as_os_str().as_encoded_bytes();
        if !self.path.is_absolute() {
            return Err(bad("a plug's path must be absolute (the programs that connect to it run elsewhere)"));
        }
        if bytes.contains(&0) {
            return Err(bad("the path contains a NUL byte"));
        }
        if bytes.ends_with(b"/") || self.path.file_name().is_none() {
            return Err(bad("the path must name a file, not end in '/' or '..'"));
        }
        if self.path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(bad("the path may not contain '..'"));
        }
        if bytes.len() > MAX_PLUG_PATH {
            return Err(VocabError::OutOfRange {
                option: "path",
                value: format!("{} bytes", bytes.len()),
                range:
                    "at most 88 bytes: a socket's address holds 107, and clonet places it through a directory beside it",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(protocol: PlugProtocol, path: &str) -> PlugSpec {
        PlugSpec { protocol, path: path.into(), lan: "sw".into(), vlan: None, mtu: None }
    }

    #[test]
    fn protocols_read_and_print_their_script_names() {
        for p in PlugProtocol::ALL {
            assert_eq!(p.name().parse::<PlugProtocol>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.name()));
        }
        let err = "tap".parse::<PlugProtocol>().unwrap_err().to_string();
        assert!(err.contains("qemu, qemu-dgram, uml or vde"), "{err}");
    }

    #[test]
    fn a_plug_path_is_absolute_short_and_plain() {
        assert!(spec(PlugProtocol::QemuStream, "/tmp/vm.sock").check().is_ok());
        for bad in ["vm.sock", "/tmp/../etc/x", "/tmp/dir/", "/tmp/a\0b"] {
            assert!(spec(PlugProtocol::QemuStream, bad).check().is_err(), "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PLUG_PATH - 1));
        for p in PlugProtocol::ALL {
            assert!(spec(p, &long).check().is_ok(), "{p}: 88 bytes");
            let err = spec(p, &format!("{long}b")).check().unwrap_err().to_string();
            assert!(err.contains("at most 88 bytes"), "{err}");
        }
    }
}
