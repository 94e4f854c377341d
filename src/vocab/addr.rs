//! Interface addresses in CIDR notation.
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address with its prefix length, as `10.0.0.1/24` or `fd00::1/64`;
/// serialized in that text form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// A destination prefix: `10.2.0.0/24`, `fd00:2::/64`, or `default`.
/// Host bits are cleared, as the kernel requires. Serialized as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    fn masked(addr: IpAddr, len: u8) -> Prefix {
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Prefix { addr, len }
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && Prefix::masked(ip, self.len).addr == self.addr
    }
}

impl From<Cidr> for Prefix {
    /// The network an interface address belongs to.
    fn from(c: Cidr) -> Prefix {
        Prefix::masked(c.addr, c.prefix)
    }
}

impl FromStr for Prefix {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Prefix, CidrError> {
        if s == "default" {
            return Ok(Prefix { addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), len: 0 });
        }
        let err = |why| CidrError { input: s.to_string(), why };
        let (a, p) = s.split_once('/').ok_or_else(|| err("missing /prefix"))?;
        let addr: IpAddr = a.parse().map_err(|_| err("not an IP address"))?;
        let len: u8 = p.parse().map_err(|_| err("prefix is not a number"))?;
        if len > if addr.is_ipv4() { 32 } else { 128 } {
            return Err(err("prefix too long"));
        }
        Ok(Prefix::masked(addr, len))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 && self.addr.is_ipv4() {
            return f.write_str("default");
        }
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Serializes through `Display` and `FromStr`, so addresses read as text
/// in JSON, state files and scripts.
macro_rules! text_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
text_serde!(Cidr);
text_serde!(Prefix);

/// A static route of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: Prefix,
    /// The next hop, on a connected network.
    pub via: Option<IpAddr>,
    /// The interface, when there is no next hop or to pin it.
    pub dev: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_serialize_as_text() {
        let c: Cidr = "10.0.0.1/24".parse().unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.0.0.1/24\"");
        assert_eq!(serde_json::from_str::<Cidr>("\"10.0.0.1/24\"").unwrap(), c);
        let p: Prefix = "default".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"default\"");
    }

    #[test]
    fn prefixes_clear_host_bits_and_know_default() {
        let p: Prefix = "10.1.2.3/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.2.0/24");
        assert!(p.contains("10.1.2.200".parse().unwrap()));
        assert!(!p.contains("10.1.3.1".parse().unwrap()));
        let d: Prefix = "default".parse().unwrap();
        assert_eq!(d.to_string(), "default");
        assert!(d.contains("8.8.8.8".parse().unwrap()));
        assert_eq!("fd00:1::5/64".parse::<Prefix>().unwrap().to_string(), "fd00:1::/64");
        assert_eq!(Prefix::from("10.0.0.5/30".parse::<Cidr>().unwrap()).to_string(), "10.0.0.4/30");
        assert!("10.0.0.0/40".parse::<Prefix>().is_err());
    }

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
