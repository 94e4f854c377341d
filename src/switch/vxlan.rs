//! The VXLAN header (RFC 7348 §5): 8 bytes in front of an Ethernet frame
//! in a UDP datagram. Flags (the I bit says the VNI is valid), 24 reserved
//! bits, the 24-bit VNI, 8 reserved bits. Reserved bits are sent as zero
//! and ignored on receipt, as the RFC says. Sans-IO.

/// The header's length.
pub const VXLAN_HDR_LEN: usize = 8;
/// The I flag: the VNI field is valid.
const FLAG_VNI: u8 = 0x08;
/// What a VXLAN datagram adds to a frame on an IPv4 underlay: outer
/// Ethernet 14, IPv4 20, UDP 8, VXLAN 8 (a frame of MTU 1500 needs 1550).
pub const OVERHEAD_V4: usize = 50;

/// The header for `vni` (the VNI's 24 low bits).
pub fn header(vni: u32) -> [u8; VXLAN_HDR_LEN] {
    let v = (vni & 0x00FF_FFFF).to_be_bytes();
    [FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// Why a datagram is not a frame of the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Shorter than the header and an Ethernet header.
    Short,
    /// The I flag is not set: no valid VNI.
    NoVni,
    /// Another tunnel's VNI.
    OtherVni(u32),
}

/// Checks a datagram's header against the tunnel's `vni`; the frame
/// follows the header.
pub fn check(datagram: &[u8], vni: u32) -> Result<(), Refusal> {
    if datagram.len() < VXLAN_HDR_LEN + 14 {
        return Err(Refusal::Short);
    }
    if datagram[0] & FLAG_VNI == 0 {
        return Err(Refusal::NoVni);
    }
    let got = u32::from_be_bytes([0, datagram[4], datagram[5], datagram[6]]);
    if got != vni {
        return Err(Refusal::OtherVni(got));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_carries_the_vni_and_the_i_flag_and_reserved_bits_are_ignored() {
        assert_eq!(header(42), [0x08, 0, 0, 0, 0, 0, 42, 0]);
        assert_eq!(header(0x00AB_CDEF), [0x08, 0, 0, 0, 0xAB, 0xCD, 0xEF, 0]);
        let mut d = header(0x00AB_CDEF).to_vec();
        d.extend_from_slice(&[0u8; 14]);
        assert_eq!(check(&d, 0x00AB_CDEF), Ok(()));
        assert_eq!(check(&d, 42), Err(Refusal::OtherVni(0x00AB_CDEF)));
        // Reserved bits set by a sender: ignored.
        d[1] = 0xff;
        d[7] = 0xff;
        d[0] |= 0x80;
        assert_eq!(check(&d, 0x00AB_CDEF), Ok(()));
        d[0] = 0;
        assert_eq!(check(&d, 0x00AB_CDEF), Err(Refusal::NoVni));
        assert_eq!(check(&d[..21], 0x00AB_CDEF), Err(Refusal::Short));
    }
}
