//! Sans-IO views of the bytes the switch moves: MAC addresses, the
//! virtio-net header that precedes every frame inside the switch, and the
//! Ethernet header.
//!
//! Owns: parsing and validation. Must not touch: fds, time, counters.
use crate::vocab::MacAddr;

/// Length of the virtio-net header every buffer in the switch starts with.
pub const VNET_HDR_LEN: usize = 12;
/// Ethernet header: destination, source, EtherType.
pub const ETH_HDR_LEN: usize = 14;
/// Largest buffer a port can hand to the switch: header + 64 KiB GSO frame
/// + Ethernet and VLAN headers.
pub const MAX_BUFFER_LEN: usize = VNET_HDR_LEN + 65535 + ETH_HDR_LEN + 4;

/// GSO types of `virtio_net_hdr.gso_type` (without the ECN bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoType {
    None,
    TcpV4,
    Udp,
    TcpV6,
    Other(u8),
}

/// The virtio-net header (little-endian, `struct virtio_net_hdr_v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const F_NEEDS_CSUM: u8 = 1;
    const GSO_ECN: u8 = 0x80;

    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        if bytes.len() < VNET_HDR_LEN {
            return None;
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        Some(VnetHdr {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        out[10..12].fill(0);
    }

    pub fn gso(&self) -> GsoType {
        match self.gso_type & !Self::GSO_ECN {
            0 => GsoType::None,
            1 => GsoType::TcpV4,
            3 => GsoType::Udp,
            4 => GsoType::TcpV6,
            other => GsoType::Other(other),
        }
    }

    pub fn is_gso(&self) -> bool {
        self.gso() != GsoType::None
    }
}

/// Why a frame could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than the virtio-net header plus an Ethernet header.
    Runt,
    /// The virtio-net header asks for something no port can honour.
    BadVnetHdr,
}

/// A validated view of one switch buffer: virtio-net header + Ethernet frame.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub vnet: VnetHdr,
    /// The Ethernet frame, starting at the destination address.
    pub eth: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Parses a buffer as laid out inside the switch.
    pub fn parse(buf: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        if buf.len() < VNET_HDR_LEN + ETH_HDR_LEN {
            return Err(FrameError::Runt);
        }
        let vnet = VnetHdr::parse(buf).ok_or(FrameError::Runt)?;
        let eth = &buf[VNET_HDR_LEN..];
        if vnet.flags & VnetHdr::F_NEEDS_CSUM != 0
            && (vnet.csum_start as usize + vnet.csum_offset as usize + 2) > eth.len()
        {
            return Err(FrameError::BadVnetHdr);
        }
        if let GsoType::Other(_) = vnet.gso() {
            return Err(FrameError::BadVnetHdr);
        }
        Ok(Frame { vnet, eth })
    }

    pub fn dst(&self) -> MacAddr {
        MacAddr(self.eth[0..6].try_into().expect("length checked in parse"))
    }

    pub fn src(&self) -> MacAddr {
        MacAddr(self.eth[6..12].try_into().expect("length checked in parse"))
    }

    /// The outer EtherType (0x8100 for a VLAN-tagged frame).
    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes([self.eth[12], self.eth[13]])
    }

    /// Length of the L2 payload once 802.1Q tags are skipped: what must fit
    /// in the egress port's MTU.
    pub fn l3_len(&self) -> usize {
        let tagged = self.ethertype() == 0x8100 && self.eth.len() >= ETH_HDR_LEN + 4;
        self.eth.len() - ETH_HDR_LEN - if tagged { 4 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
        let mut b = vec![0u8; VNET_HDR_LEN];
        b.extend_from_slice(&dst);
        b.extend_from_slice(&src);
        b.extend_from_slice(&[0x08, 0x00]);
        b.extend(std::iter::repeat_n(0xab, payload));
        b
    }

    #[test]
    fn parses_addresses_and_ethertype() {
        let b = buffer([0xff; 6], [2, 0, 0, 0, 0, 1], 46);
        let f = Frame::parse(&b).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert!(f.dst().is_group());
        assert_eq!(f.src().to_string(), "02:00:00:00:00:01");
        assert!(!f.src().is_group());
        assert_eq!(f.ethertype(), 0x0800);
        assert_eq!(f.l3_len(), 46);
        assert!(!f.vnet.is_gso());
    }

    #[test]
    fn rejects_runts() {
        assert_eq!(Frame::parse(&[0u8; 5]).unwrap_err(), FrameError::Runt);
        assert_eq!(Frame::parse(&[0u8; VNET_HDR_LEN + 13]).unwrap_err(), FrameError::Runt);
        assert!(Frame::parse(&[0u8; VNET_HDR_LEN + 14]).is_ok());
    }

    #[test]
    fn rejects_checksum_offsets_past_the_end() {
        let mut b = buffer([2; 6], [4; 6], 20);
        VnetHdr { flags: VnetHdr::F_NEEDS_CSUM, csum_start: 30, csum_offset: 6, ..Default::default() }.write(&mut b);
        assert_eq!(Frame::parse(&b).unwrap_err(), FrameError::BadVnetHdr);
        VnetHdr { flags: VnetHdr::F_NEEDS_CSUM, csum_start: 14, csum_offset: 16, ..Default::default() }.write(&mut b);
        assert!(Frame::parse(&b).is_ok());
    }

    #[test]
    fn rejects_unknown_gso_types() {
        let mut b = buffer([2; 6], [4; 6], 20);
        VnetHdr { gso_type: 9, ..Default::default() }.write(&mut b);
        assert_eq!(Frame::parse(&b).unwrap_err(), FrameError::BadVnetHdr);
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr { flags: 1, gso_type: 0x81, hdr_len: 66, gso_size: 1448, csum_start: 34, csum_offset: 16 };
        let mut out = [0u8; VNET_HDR_LEN];
        h.write(&mut out);
        assert_eq!(VnetHdr::parse(&out), Some(h));
        assert_eq!(h.gso(), GsoType::TcpV4);
        assert!(h.is_gso());
    }

    #[test]
    fn vlan_tag_is_not_counted_against_the_mtu() {
        let mut b = buffer([2; 6], [4; 6], 0);
        b[VNET_HDR_LEN + 12] = 0x81;
        b[VNET_HDR_LEN + 13] = 0x00;
        b.extend_from_slice(&[0, 10, 0x08, 0x00]);
        b.extend(std::iter::repeat_n(0, 1500));
        assert_eq!(Frame::parse(&b).unwrap().l3_len(), 1500);
    }

    #[test]
    fn macs_serialize_as_text() {
        let m = MacAddr([2, 0xab, 0, 0, 0, 1]);
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:ab:00:00:00:01\"");
        assert_eq!(serde_json::from_str::<MacAddr>("\"02:ab:00:00:00:01\"").unwrap(), m);
        assert!("02:ab".parse::<MacAddr>().is_err());
    }

    #[test]
    fn local_unicast_sets_the_right_bits() {
        let m = MacAddr::local_unicast([0xff, 1, 2, 3, 4, 5]);
        assert!(m.is_local());
        assert!(!m.is_group());
    }
}
