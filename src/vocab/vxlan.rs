//! A VXLAN endpoint's settings (RFC 7348): the VNI, the remote tunnel
//! endpoint and the UDP ports. Sans-IO.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::VocabError;

/// The largest VNI: 24 bits.
pub const MAX_VNI: u32 = 0x00FF_FFFF;
/// The IANA port for VXLAN, Linux's `dstport` default.
pub const VXLAN_PORT: u16 = 4789;

/// Where a VXLAN tunnel goes, and from which local port (the LAN it is a
/// port of is the endpoint's one link).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanSpec {
    pub vni: u32,
    /// The remote VTEP (unicast: no multicast groups).
    pub remote: IpAddr,
    /// The remote's UDP port.
    pub port: u16,
    /// The local UDP port clonet binds (datagrams from the remote come there).
    pub local_port: u16,
}

impl VxlanSpec {
    pub fn check(&self) -> Result<(), VocabError> {
        if self.vni > MAX_VNI {
            return Err(VocabError::OutOfRange {
                option: "vni",
                value: self.vni.to_string(),
                range: "0..=16777215 (24 bits)",
            });
        }
        let unicast = match self.remote {
            IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
            IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
        };
        if !unicast {
            return Err(VocabError::invalid(
                "remote",
                format!("{} is not a unicast address (multicast VXLAN groups are not taken)", self.remote),
            ));
        }
        if self.port == 0 || self.local_port == 0 {
            return Err(VocabError::invalid("port", "UDP ports are 1..=65535"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_needs_a_24_bit_vni_a_unicast_remote_and_real_ports() {
        let spec = |vni: u32, remote: &str, port: u16| VxlanSpec {
            vni,
            remote: remote.parse().unwrap(),
            port,
            local_port: VXLAN_PORT,
        };
        assert!(spec(42, "10.0.0.2", 4789).check().is_ok());
        assert!(spec(MAX_VNI, "fd00::2", 4789).check().is_ok());
        assert!(spec(MAX_VNI + 1, "10.0.0.2", 4789).check().unwrap_err().to_string().contains("24 bits"));
        for bad in ["0.0.0.0", "239.1.1.1", "255.255.255.255", "ff02::1", "::"] {
            assert!(spec(1, bad, 4789).check().unwrap_err().to_string().contains("unicast"), "{bad}");
        }
        assert!(spec(1, "10.0.0.2", 0).check().is_err());
    }
}
