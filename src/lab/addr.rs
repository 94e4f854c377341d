//! Interface addresses in CIDR notation.
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address with its prefix length, as `10.0.0.1/24` or `fd00::1/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {why} (expected CIDR such as 10.0.0.1/24)")]
pub struct CidrError {
    pub input: String,
    pub why: &'static str,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = |why| CidrError { input: s.to_string(), why };
        let (a, p) = s.split_once('/').ok_or_else(|| err("missing /prefix"))?;
        let addr: IpAddr = a.parse().map_err(|_| err("not an IP address"))?;
        let prefix: u8 = p.parse().map_err(|_| err("prefix is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err("prefix too long"));
        }
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(err("not a host address"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        let c: Cidr = "10.0.0.1/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.1/24");
        let c: Cidr = "fd00::1/64".parse().unwrap();
        assert_eq!(c.prefix, 64);
    }

    #[test]
    fn rejects_bad_input() {
        for s in
            ["10.0.0.1", "10.0.0.1/33", "10.0.0/24", "x/24", "fd00::1/129", "0.0.0.0/0", "224.0.0.1/4", "10.0.0.1/-1"]
        {
            assert!(s.parse::<Cidr>().is_err(), "{s}");
        }
    }
}
