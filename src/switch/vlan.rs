//! 802.1Q on LAN ports (sans-IO): classifying a frame into a VLAN at
//! ingress, and deciding at egress whether a port is a member and whether
//! the tag must be pushed or stripped.
//!
//! An access port belongs to one VLAN and carries untagged frames. A trunk
//! port carries tagged frames of the VLANs it allows; untagged frames on a
//! trunk and tagged frames on an access port are dropped, as on a switch
//! configured without a native VLAN.
use super::counters::DropReason;
use super::frame::{Frame, VnetHdr, VNET_HDR_LEN};
use crate::vocab::VlanMode;

pub const TPID: u16 = 0x8100;
/// The VLAN a frame belongs to inside a LAN, and whether it arrived tagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    pub vid: u16,
    pub tagged: bool,
}

/// What to do with the tag on the way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tagging {
    AsIs,
    Strip,
    Push(u16),
}

/// The VLAN id of a tagged frame.
pub fn tag_of(frame: &Frame<'_>) -> Option<u16> {
    (frame.ethertype() == TPID && frame.eth.len() >= 18)
        .then(|| u16::from_be_bytes([frame.eth[14], frame.eth[15]]) & 0x0fff)
}

/// Assigns an ingress frame to a VLAN, or says why it is dropped.
pub fn classify(mode: &VlanMode, frame: &Frame<'_>) -> Result<Classified, DropReason> {
    match (mode, tag_of(frame)) {
        (VlanMode::Access(vid), None) => Ok(Classified { vid: vid.get(), tagged: false }),
        (VlanMode::Trunk(_), Some(vid)) if mode.carries(vid) => Ok(Classified { vid, tagged: true }),
        _ => Err(DropReason::Vlan),
    }
}

/// How a frame of `cls` leaves through a port in `mode`; None when the
/// port is not a member of the frame's VLAN.
pub fn egress(mode: &VlanMode, cls: Classified) -> Option<Tagging> {
    match mode {
        VlanMode::Access(vid) if vid.get() == cls.vid => Some(if cls.tagged { Tagging::Strip } else { Tagging::AsIs }),
        VlanMode::Trunk(_) if mode.carries(cls.vid) => {
            Some(if cls.tagged { Tagging::AsIs } else { Tagging::Push(cls.vid) })
        }
        _ => None,
    }
}

/// The virtio-net header of a frame whose Ethernet header grew (`+4`) or
/// shrank (`-4`): checksum and header offsets move with the payload.
pub fn shift_vnet(hdr: &VnetHdr, delta: i16) -> VnetHdr {
    let mut h = *hdr;
    // Saturating: offsets a guest set near 65535 stay out of the frame
    // (the receiver refuses them) instead of wrapping into it.
    let shift = |v: u16| (v as i32 + delta as i32).clamp(0, u16::MAX as i32) as u16;
    if h.flags & VnetHdr::F_NEEDS_CSUM != 0 {
        h.csum_start = shift(h.csum_start);
    }
    if h.hdr_len != 0 {
        h.hdr_len = shift(h.hdr_len);
    }
    h
}

/// A frame as it leaves with its tag pushed or stripped: its pieces,
/// virtio-net header first, so the payload is never copied.
pub struct Retagged<'a> {
    pieces: [&'a [u8]; 4],
    count: usize,
    /// Length of the Ethernet frame the pieces make.
    pub eth_len: usize,
}

impl<'a> Retagged<'a> {
    pub fn parts(&self) -> &[&'a [u8]] {
        &self.pieces[..self.count]
    }
}

/// `frame` (all of `buf`, virtio-net header first) with `tagging`
/// applied: its header moved to `hdr` and the pushed tag written to `tag`
/// when they change. `Strip` is only ever asked of a frame that arrived
/// tagged (`classify` saw its tag), so its 18 bytes of headers are there.
pub fn retag<'a>(
    buf: &'a [u8],
    frame: &Frame<'a>,
    tagging: Tagging,
    hdr: &'a mut [u8; VNET_HDR_LEN],
    tag: &'a mut [u8; 4],
) -> Retagged<'a> {
    let eth = frame.eth;
    match tagging {
        Tagging::AsIs => Retagged { pieces: [buf, &[], &[], &[]], count: 1, eth_len: eth.len() },
        Tagging::Strip => {
            shift_vnet(&frame.vnet, -4).write(hdr);
            Retagged { pieces: [hdr, &eth[..12], &eth[16..], &[]], count: 3, eth_len: eth.len() - 4 }
        }
        Tagging::Push(vid) => {
            shift_vnet(&frame.vnet, 4).write(hdr);
            tag[..2].copy_from_slice(&TPID.to_be_bytes());
            tag[2..].copy_from_slice(&vid.to_be_bytes());
            Retagged { pieces: [hdr, &eth[..12], tag, &eth[12..]], count: 4, eth_len: eth.len() + 4 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::units::test_values::vid;

    fn frame(tag: Option<u16>) -> Vec<u8> {
        let mut b = vec![0u8; VNET_HDR_LEN];
        b.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        if let Some(vid) = tag {
            b.extend_from_slice(&TPID.to_be_bytes());
            b.extend_from_slice(&vid.to_be_bytes());
        }
        b.extend_from_slice(&[0x08, 0x00]);
        b.resize(b.len() + 46, 0);
        b
    }

    #[test]
    fn access_ports_take_untagged_frames_only() {
        let untagged = frame(None);
        let tagged = frame(Some(10));
        let access = VlanMode::Access(vid(10));
        assert_eq!(classify(&access, &Frame::parse(&untagged).unwrap()), Ok(Classified { vid: 10, tagged: false }));
        assert_eq!(classify(&access, &Frame::parse(&tagged).unwrap()), Err(DropReason::Vlan));
    }

    #[test]
    fn trunks_take_allowed_tags_only() {
        let trunk = VlanMode::Trunk(vec![vid(10), vid(20)]);
        assert_eq!(
            classify(&trunk, &Frame::parse(&frame(Some(20))).unwrap()),
            Ok(Classified { vid: 20, tagged: true })
        );
        assert_eq!(classify(&trunk, &Frame::parse(&frame(Some(30))).unwrap()), Err(DropReason::Vlan));
        assert_eq!(classify(&trunk, &Frame::parse(&frame(None)).unwrap()), Err(DropReason::Vlan));
    }

    #[test]
    fn egress_pushes_strips_or_skips() {
        let from_access = Classified { vid: 10, tagged: false };
        let from_trunk = Classified { vid: 10, tagged: true };
        assert_eq!(egress(&VlanMode::Access(vid(10)), from_access), Some(Tagging::AsIs));
        assert_eq!(egress(&VlanMode::Access(vid(10)), from_trunk), Some(Tagging::Strip));
        assert_eq!(egress(&VlanMode::Access(vid(20)), from_access), None);
        assert_eq!(egress(&VlanMode::Trunk(vec![vid(10)]), from_access), Some(Tagging::Push(10)));
        assert_eq!(egress(&VlanMode::Trunk(vec![vid(10)]), from_trunk), Some(Tagging::AsIs));
        assert_eq!(egress(&VlanMode::Trunk(vec![vid(20)]), from_trunk), None);
    }

    #[test]
    fn offsets_follow_the_tag() {
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: 1,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let pushed = shift_vnet(&h, 4);
        assert_eq!((pushed.csum_start, pushed.hdr_len, pushed.csum_offset), (38, 70, 16));
        assert_eq!(shift_vnet(&pushed, -4), h);
        assert_eq!(shift_vnet(&VnetHdr::default(), 4), VnetHdr::default(), "no offsets, nothing moves");
    }

    /// A guest's offsets near the top stay there when a tag is pushed,
    /// rather than wrapping to small values that point into the frame.
    #[test]
    fn offsets_near_the_top_saturate_instead_of_wrapping() {
        let h = VnetHdr { flags: VnetHdr::F_NEEDS_CSUM, hdr_len: 65534, csum_start: 65533, ..VnetHdr::default() };
        let pushed = shift_vnet(&h, 4);
        assert_eq!((pushed.csum_start, pushed.hdr_len), (u16::MAX, u16::MAX));
        let low = VnetHdr { flags: VnetHdr::F_NEEDS_CSUM, hdr_len: 2, csum_start: 1, ..VnetHdr::default() };
        assert_eq!((shift_vnet(&low, -4).csum_start, shift_vnet(&low, -4).hdr_len), (0, 0));
    }
}
