//! The forwarding core (sans-IO): which ports exist, which segment each
//! belongs to, and where one frame must go.
//!
//! A segment is either a point-to-point link (two ports) or a LAN (any
//! number of ports and a MAC table). The data plane asks `decide` for
//! every frame and then does the I/O itself.
//!
//! Owns: the port/segment model and forwarding decisions. Must not touch:
//! fds, queues, counters, the clock.
use std::time::Duration;

use super::counters::DropReason;
use super::fdb::Fdb;
use super::frame::Frame;
use super::vlan::{self, Classified, Tagging};
use super::{PortId, SegmentId};
use crate::vocab::VlanMode;

/// What the fabric knows of a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub segment: SegmentId,
    /// Largest L3 payload the port accepts (its MTU).
    pub mtu: usize,
    /// Whether the port accepts GSO super-frames with a virtio-net header.
    pub gso: bool,
    pub up: bool,
    /// 802.1Q membership; only LAN segments look at it.
    pub vlan: VlanMode,
    /// Its egress is impaired: frames must reach the impairment as the
    /// wire frames they stand for, so GSO super-frames are cut first.
    pub shaped: bool,
}

#[derive(Debug)]
pub enum Segment {
    PointToPoint { ports: Vec<PortId> },
    Lan { ports: Vec<PortId>, fdb: Fdb },
}

impl Segment {
    pub fn lan() -> Segment {
        Segment::Lan { ports: Vec::new(), fdb: Fdb::default() }
    }

    pub fn point_to_point() -> Segment {
        Segment::PointToPoint { ports: Vec::new() }
    }

    pub fn ports(&self) -> &[PortId] {
        match self {
            Segment::PointToPoint { ports } | Segment::Lan { ports, .. } => ports,
        }
    }
}

/// Where a frame goes. The VLAN classification is `None` on
/// point-to-point links, which pass frames through untouched.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// To exactly this port.
    Unicast(PortId, Option<Classified>),
    /// To every port of the list except the ingress port (and except
    /// ports outside the frame's VLAN).
    Flood(&'a [PortId], Option<Classified>),
    /// Nowhere, for this reason (counted at the ingress port).
    Drop(DropReason),
    /// Nowhere, silently: the segment has no other port.
    Nowhere,
}

/// What happens to a frame at one egress port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    Send(Tagging),
    /// The port takes no offloads and the frame needs one: segment it to
    /// the port's MTU (GSO), or finish its checksum, in software.
    Soft {
        tagging: Tagging,
        mtu: usize,
    },
    /// The port is not in the frame's VLAN: not a drop, just not for it.
    NotMember,
    Drop(DropReason),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FabricError {
    #[error("the switch has no port {0}")]
    NoSuchPort(PortId),
    #[error("the switch has no segment {0}")]
    NoSuchSegment(SegmentId),
    #[error("segment {0} is a point-to-point link that already has both its ports")]
    SegmentFull(SegmentId),
    #[error("the switch already has a port or segment with this number")]
    Exists,
}

/// All ports and segments of one switch.
#[derive(Debug, Default)]
pub struct Fabric {
    ports: Vec<Option<PortInfo>>,
    segments: Vec<Option<Segment>>,
}

fn slot<T>(v: &mut Vec<Option<T>>, id: usize) -> &mut Option<T> {
    if v.len() <= id {
        v.resize_with(id + 1, || None);
    }
    &mut v[id]
}

impl Fabric {
    pub fn add_segment(&mut self, id: SegmentId, segment: Segment) -> Result<(), FabricError> {
        let s = slot(&mut self.segments, id);
        if s.is_some() {
            return Err(FabricError::Exists);
        }
        *s = Some(segment);
        Ok(())
    }

    /// Removes a segment that no longer has ports.
    pub fn remove_segment(&mut self, id: SegmentId) -> Option<Segment> {
        self.segments.get_mut(id).and_then(Option::take)
    }

    pub fn add_port(&mut self, id: PortId, info: PortInfo) -> Result<(), FabricError> {
        let seg_id = info.segment;
        let seg = self.segments.get_mut(seg_id).and_then(Option::as_mut).ok_or(FabricError::NoSuchSegment(seg_id))?;
        match seg {
            Segment::PointToPoint { ports } if ports.len() >= 2 => return Err(FabricError::SegmentFull(seg_id)),
            Segment::PointToPoint { ports } | Segment::Lan { ports, .. } => ports.push(id),
        }
        let p = slot(&mut self.ports, id);
        if p.is_some() {
            return Err(FabricError::Exists);
        }
        *p = Some(info);
        Ok(())
    }

    pub fn remove_port(&mut self, id: PortId) -> Option<PortInfo> {
        let info = self.ports.get_mut(id).and_then(Option::take)?;
        if let Some(Some(seg)) = self.segments.get_mut(info.segment) {
            match seg {
                Segment::PointToPoint { ports } => ports.retain(|p| *p != id),
                Segment::Lan { ports, fdb } => {
                    ports.retain(|p| *p != id);
                    fdb.forget_port(id);
                }
            }
        }
        Some(info)
    }

    pub fn port(&self, id: PortId) -> Option<&PortInfo> {
        self.ports.get(id).and_then(Option::as_ref)
    }

    pub fn set_port_up(&mut self, id: PortId, up: bool) -> Result<(), FabricError> {
        let p = self.ports.get_mut(id).and_then(Option::as_mut).ok_or(FabricError::NoSuchPort(id))?;
        p.up = up;
        Ok(())
    }

    pub fn set_port_shaped(&mut self, id: PortId, shaped: bool) -> Result<(), FabricError> {
        let p = self.ports.get_mut(id).and_then(Option::as_mut).ok_or(FabricError::NoSuchPort(id))?;
        p.shaped = shaped;
        Ok(())
    }

    pub fn segment(&self, id: SegmentId) -> Option<&Segment> {
        self.segments.get(id).and_then(Option::as_ref)
    }

    /// Decides where a frame that arrived on `ingress` at `now` goes, and
    /// learns its source address on LANs.
    pub fn decide(&mut self, ingress: PortId, frame: &Frame<'_>, now: Duration) -> Decision<'_> {
        let Some(info) = self.ports.get(ingress).and_then(Option::as_ref) else {
            return Decision::Drop(DropReason::PortError);
        };
        if !info.up {
            return Decision::Drop(DropReason::PortDown);
        }
        let Some(Some(seg)) = self.segments.get_mut(info.segment) else {
            return Decision::Drop(DropReason::PortError);
        };
        match seg {
            Segment::PointToPoint { ports } => match ports.iter().find(|p| **p != ingress) {
                Some(peer) => Decision::Unicast(*peer, None),
                None => Decision::Nowhere,
            },
            Segment::Lan { ports, fdb } => {
                let cls = match vlan::classify(&info.vlan, frame) {
                    Ok(c) => c,
                    Err(reason) => return Decision::Drop(reason),
                };
                fdb.learn(cls.vid, frame.src(), ingress, now);
                let dst = frame.dst();
                if !dst.is_group() {
                    match fdb.lookup(cls.vid, dst, now) {
                        // A frame for a station on its own ingress port is
                        // filtered, as a real bridge does.
                        Some(p) if p == ingress => return Decision::Nowhere,
                        Some(p) => return Decision::Unicast(p, Some(cls)),
                        None => {}
                    }
                }
                if ports.len() <= 1 {
                    Decision::Nowhere
                } else {
                    Decision::Flood(ports, Some(cls))
                }
            }
        }
    }

    /// How `frame` (classified `cls` at ingress) leaves through `egress`.
    pub fn admit(&self, egress: PortId, frame: &Frame<'_>, cls: Option<Classified>) -> Egress {
        let Some(info) = self.port(egress) else { return Egress::Drop(DropReason::PortError) };
        let tagging = match cls {
            None => Tagging::AsIs,
            Some(c) => match vlan::egress(&info.vlan, c) {
                Some(t) => t,
                None => return Egress::NotMember,
            },
        };
        if !info.up {
            return Egress::Drop(DropReason::PortDown);
        }
        if frame.vnet.is_gso() {
            return if info.gso && !info.shaped {
                Egress::Send(tagging)
            } else {
                Egress::Soft { tagging, mtu: info.mtu }
            };
        }
        if frame.l3_len() > info.mtu {
            return Egress::Drop(DropReason::Oversize);
        }
        if !info.gso && frame.vnet.flags & super::frame::VnetHdr::F_NEEDS_CSUM != 0 {
            return Egress::Soft { tagging, mtu: info.mtu };
        }
        Egress::Send(tagging)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::frame::{VnetHdr, VNET_HDR_LEN};
    use crate::vocab::units::test_values::vid;
    use crate::vocab::MacAddr;

    fn buf(dst: MacAddr, src: MacAddr, payload: usize) -> Vec<u8> {
        let mut b = vec![0u8; VNET_HDR_LEN];
        b.extend_from_slice(&dst.0);
        b.extend_from_slice(&src.0);
        b.extend_from_slice(&[0x08, 0x00]);
        b.resize(b.len() + payload, 0);
        b
    }
    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    fn port(segment: SegmentId) -> PortInfo {
        PortInfo { segment, mtu: 1500, gso: true, up: true, vlan: VlanMode::default(), shaped: false }
    }
    fn lan_with(ports: &[PortId]) -> Fabric {
        let mut f = Fabric::default();
        f.add_segment(0, Segment::lan()).unwrap();
        for p in ports {
            f.add_port(*p, port(0)).unwrap();
        }
        f
    }
    const T0: Duration = Duration::ZERO;
    const V1: Option<Classified> = Some(Classified { vid: 1, tagged: false });

    #[test]
    fn point_to_point_forwards_to_the_peer() {
        let mut f = Fabric::default();
        f.add_segment(7, Segment::point_to_point()).unwrap();
        f.add_port(1, port(7)).unwrap();
        let b = buf(mac(9), mac(1), 46);
        let fr = Frame::parse(&b).unwrap();
        assert_eq!(f.decide(1, &fr, T0), Decision::Nowhere, "no peer yet");
        f.add_port(2, port(7)).unwrap();
        assert_eq!(f.decide(1, &fr, T0), Decision::Unicast(2, None));
        assert_eq!(f.decide(2, &fr, T0), Decision::Unicast(1, None));
        assert!(matches!(f.add_port(3, port(7)), Err(FabricError::SegmentFull(7))));
    }

    #[test]
    fn lan_floods_unknown_and_broadcast_then_learns() {
        let mut f = lan_with(&[1, 2, 3]);
        let from_a = buf(MacAddr::BROADCAST, mac(1), 46);
        assert_eq!(f.decide(1, &Frame::parse(&from_a).unwrap(), T0), Decision::Flood(&[1, 2, 3], V1));
        let b_to_a = buf(mac(1), mac(2), 46);
        assert_eq!(f.decide(2, &Frame::parse(&b_to_a).unwrap(), T0), Decision::Unicast(1, V1));
        let a_to_b = buf(mac(2), mac(1), 46);
        assert_eq!(f.decide(1, &Frame::parse(&a_to_b).unwrap(), T0), Decision::Unicast(2, V1));
        let a_to_unknown = buf(mac(9), mac(1), 46);
        assert_eq!(f.decide(1, &Frame::parse(&a_to_unknown).unwrap(), T0), Decision::Flood(&[1, 2, 3], V1));
    }

    #[test]
    fn frames_for_a_station_behind_the_ingress_port_are_filtered() {
        let mut f = lan_with(&[1, 2]);
        f.decide(1, &Frame::parse(&buf(MacAddr::BROADCAST, mac(1), 0)).unwrap(), T0);
        let to_self_port = buf(mac(1), mac(5), 0);
        assert_eq!(f.decide(1, &Frame::parse(&to_self_port).unwrap(), T0), Decision::Nowhere);
    }

    #[test]
    fn lan_follows_a_moved_host_and_ages_entries() {
        let mut f = lan_with(&[1, 2, 3]);
        let from_a = buf(MacAddr::BROADCAST, mac(1), 0);
        f.decide(1, &Frame::parse(&from_a).unwrap(), T0);
        f.decide(3, &Frame::parse(&from_a).unwrap(), Duration::from_secs(1));
        let to_a = buf(mac(1), mac(2), 0);
        assert_eq!(f.decide(2, &Frame::parse(&to_a).unwrap(), Duration::from_secs(2)), Decision::Unicast(3, V1));
        // Long after: the entry for A has aged; B's was refreshed at 2 s.
        let later = Duration::from_secs(2) + crate::switch::fdb::DEFAULT_MAX_AGE;
        assert_eq!(f.decide(2, &Frame::parse(&to_a).unwrap(), later), Decision::Flood(&[1, 2, 3], V1));
    }

    #[test]
    fn vlans_isolate_and_trunks_carry_tags() {
        let mut f = Fabric::default();
        f.add_segment(0, Segment::lan()).unwrap();
        let with = |vlan| PortInfo { segment: 0, mtu: 1500, gso: true, up: true, vlan, shaped: false };
        f.add_port(1, with(VlanMode::Access(vid(10)))).unwrap();
        f.add_port(2, with(VlanMode::Access(vid(20)))).unwrap();
        f.add_port(3, with(VlanMode::Trunk(vec![vid(10), vid(20)]))).unwrap();
        f.add_port(4, with(VlanMode::Access(vid(10)))).unwrap();
        let bcast = buf(MacAddr::BROADCAST, mac(1), 46);
        let fr = Frame::parse(&bcast).unwrap();
        let Decision::Flood(ports, Some(cls)) = f.decide(1, &fr, T0) else { panic!("flood") };
        assert_eq!(cls, Classified { vid: 10, tagged: false });
        let ports = ports.to_vec();
        let out: Vec<_> = ports.iter().filter(|p| **p != 1).map(|p| (*p, f.admit(*p, &fr, Some(cls)))).collect();
        assert_eq!(
            out,
            vec![(2, Egress::NotMember), (3, Egress::Send(Tagging::Push(10))), (4, Egress::Send(Tagging::AsIs))]
        );
        // A tagged frame on an access port is dropped at ingress.
        let mut tagged = buf(MacAddr::BROADCAST, mac(1), 0);
        tagged.truncate(VNET_HDR_LEN + 12);
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 20, 0x08, 0x00]);
        tagged.resize(VNET_HDR_LEN + 64, 0);
        assert_eq!(f.decide(2, &Frame::parse(&tagged).unwrap(), T0), Decision::Drop(DropReason::Vlan));
        // From the trunk, VLAN 20 reaches only port 2, untagged.
        let fr = Frame::parse(&tagged).unwrap();
        let Decision::Flood(_, Some(cls)) = f.decide(3, &fr, T0) else { panic!("flood") };
        assert_eq!(f.admit(2, &fr, Some(cls)), Egress::Send(Tagging::Strip));
        assert_eq!(f.admit(1, &fr, Some(cls)), Egress::NotMember);
    }

    #[test]
    fn removed_ports_are_forgotten() {
        let mut f = lan_with(&[1, 2, 3]);
        f.decide(1, &Frame::parse(&buf(MacAddr::BROADCAST, mac(1), 0)).unwrap(), T0);
        f.remove_port(1);
        let to_a = buf(mac(1), mac(2), 0);
        assert_eq!(f.decide(2, &Frame::parse(&to_a).unwrap(), T0), Decision::Flood(&[2, 3], V1));
        assert_eq!(f.decide(1, &Frame::parse(&to_a).unwrap(), T0), Decision::Drop(DropReason::PortError));
    }

    #[test]
    fn down_ports_neither_send_nor_receive() {
        let mut f = lan_with(&[1, 2]);
        f.set_port_up(1, false).unwrap();
        let b = buf(mac(2), mac(1), 0);
        let fr = Frame::parse(&b).unwrap();
        assert_eq!(f.decide(1, &fr, T0), Decision::Drop(DropReason::PortDown));
        assert_eq!(f.admit(1, &fr, V1), Egress::Drop(DropReason::PortDown));
        assert_eq!(f.admit(2, &fr, V1), Egress::Send(Tagging::AsIs));
    }

    #[test]
    fn admission_checks_mtu_and_gso_capability() {
        let mut f = Fabric::default();
        f.add_segment(0, Segment::point_to_point()).unwrap();
        f.add_port(
            1,
            PortInfo { segment: 0, mtu: 1500, gso: true, up: true, vlan: VlanMode::default(), shaped: false },
        )
        .unwrap();
        f.add_port(
            2,
            PortInfo { segment: 0, mtu: 1500, gso: false, up: true, vlan: VlanMode::default(), shaped: false },
        )
        .unwrap();
        let ok = buf(mac(2), mac(1), 1500);
        let big = buf(mac(2), mac(1), 1501);
        assert_eq!(f.admit(2, &Frame::parse(&ok).unwrap(), None), Egress::Send(Tagging::AsIs));
        assert_eq!(f.admit(2, &Frame::parse(&big).unwrap(), None), Egress::Drop(DropReason::Oversize));
        let mut gso = buf(mac(2), mac(1), 9000);
        VnetHdr { gso_type: 1, gso_size: 1448, ..Default::default() }.write(&mut gso);
        assert_eq!(f.admit(1, &Frame::parse(&gso).unwrap(), None), Egress::Send(Tagging::AsIs));
        assert_eq!(f.admit(2, &Frame::parse(&gso).unwrap(), None), Egress::Soft { tagging: Tagging::AsIs, mtu: 1500 });
        // An impaired egress gets wire frames even if it could take GSO.
        f.set_port_shaped(1, true).unwrap();
        assert_eq!(f.admit(1, &Frame::parse(&gso).unwrap(), None), Egress::Soft { tagging: Tagging::AsIs, mtu: 1500 });
        assert_eq!(f.admit(1, &Frame::parse(&ok).unwrap(), None), Egress::Send(Tagging::AsIs));
    }
}
