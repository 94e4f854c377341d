//! 802.1Q modes of a LAN port or of a link between LANs.
use serde::{Deserialize, Serialize};

pub use super::units::VlanId;
use super::VocabError;

/// The most VLANs a trunk may list (every usable id once).
pub const MAX_TRUNK_VLANS: usize = 4094;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VlanMode {
    Access(VlanId),
    Trunk(Vec<VlanId>),
}

impl Default for VlanMode {
    fn default() -> Self {
        VlanMode::Access(VlanId::DEFAULT)
    }
}

impl VlanMode {
    /// A trunk of `vlans`, each id once.
    pub fn trunk(vlans: Vec<VlanId>) -> Result<VlanMode, VocabError> {
        let mode = VlanMode::Trunk(vlans);
        mode.check()?;
        Ok(mode)
    }

    /// The rules the ids alone cannot carry: a trunk names at least one
    /// VLAN, and none twice.
    pub fn check(&self) -> Result<(), VocabError> {
        let VlanMode::Trunk(vlans) = self else { return Ok(()) };
        if vlans.is_empty() {
            return Err(VocabError::invalid("trunk", "a trunk needs at least one VLAN"));
        }
        let mut seen = vec![false; 4096];
        for v in vlans {
            let slot = &mut seen[v.get() as usize];
            if *slot {
                return Err(VocabError::invalid("trunk", format!("VLAN {v} is listed twice")));
            }
            *slot = true;
        }
        Ok(())
    }

    /// Whether the port carries VLAN `vid` (tagged on a trunk).
    pub fn carries(&self, vid: u16) -> bool {
        match self {
            VlanMode::Access(v) => v.get() == vid,
            VlanMode::Trunk(vs) => vs.iter().any(|v| v.get() == vid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u16]) -> Vec<VlanId> {
        v.iter().map(|&i| VlanId::new(i).unwrap()).collect()
    }

    #[test]
    fn trunks_list_each_vlan_once() {
        assert!(VlanMode::trunk(ids(&[10, 20])).is_ok());
        assert!(VlanMode::trunk(ids(&[10, 10])).unwrap_err().to_string().contains("twice"));
        assert!(VlanMode::trunk(vec![]).is_err());
        let json = serde_json::to_string(&VlanMode::trunk(ids(&[10, 20])).unwrap()).unwrap();
        assert_eq!(json, r#"{"trunk":[10,20]}"#);
        assert!(serde_json::from_str::<VlanMode>(r#"{"access":0}"#).unwrap_err().to_string().contains("VLAN id 0"));
        assert!(VlanMode::default().carries(1));
    }
}
