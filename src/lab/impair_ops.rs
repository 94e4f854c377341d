//! The Lab's impairments: which wire a name means (a link, a link between
//! LANs, a LAN port), where each direction of a wire is impaired in the
//! switch, the seed of each direction, and handing the model's values to
//! the switch.
//!
//! Owns: the impairments in the model and the lab-wide seed. Must not
//! touch: the option syntax (`impairment.rs`), the impairment model
//! itself (the switch's `impair.rs`).
use super::topology::{self, Attachment, IfaceRef, TopologyError};
use super::{key, Lab, LabError};
use crate::switch::PortId;
use crate::vocab::impair::LinkImpairment;

/// What impairments apply to: a link, a link between LANs, or a LAN port.
#[derive(Clone, Debug)]
pub(super) enum Wire {
    Link(String),
    Uplink(String),
    LanPort(IfaceRef),
}

impl Lab {
    /// What a name given to `set`/`SetImpairment` is.
    fn wire(&self, name: &str) -> Result<Wire, LabError> {
        if self.topo.links.contains_key(name) {
            return Ok(Wire::Link(name.to_string()));
        }
        if self.topo.uplinks.contains_key(name) {
            return Ok(Wire::Uplink(name.to_string()));
        }
        if let Some((node, iface)) = name.split_once(':') {
            let model = self.topo.node(node)?;
            let i = model.iface(iface).ok_or_else(|| TopologyError::NoSuchIface(node.into(), iface.into()))?;
            return match &i.attachment {
                Attachment::Lan(_) => Ok(Wire::LanPort(IfaceRef { node: node.into(), iface: iface.into() })),
                Attachment::Link(l) => Err(LabError::PortOfLink(name.to_string(), l.clone())),
            };
        }
        Err(TopologyError::NoSuchLink(name.to_string()).into())
    }

    pub(super) fn impairment_of(&self, wire: &Wire) -> LinkImpairment {
        self.topo.impairment(&Self::wire_name(wire)).cloned().unwrap_or_default()
    }

    fn store_impairment(&mut self, wire: &Wire, imp: LinkImpairment) {
        if let Some(slot) = self.topo.impairment_mut(&Self::wire_name(wire)) {
            *slot = imp;
        }
    }

    /// The wire an interface of `node` is plugged into.
    pub(super) fn wire_of(node: &str, iface: &topology::Iface) -> Wire {
        match &iface.attachment {
            Attachment::Link(l) => Wire::Link(l.clone()),
            Attachment::Lan(_) => Wire::LanPort(IfaceRef { node: node.to_string(), iface: iface.name.clone() }),
        }
    }

    fn wire_name(wire: &Wire) -> String {
        match wire {
            Wire::Link(n) | Wire::Uplink(n) => n.clone(),
            Wire::LanPort(r) => r.to_string(),
        }
    }

    /// Where each direction (a→b, b→a) of a wire is impaired: a link's
    /// direction towards b leaves the switch through b's port; a LAN
    /// port's node-to-LAN direction enters through it.
    fn impair_points(&self, wire: &Wire) -> [Option<(PortId, crate::switch::delay::Stage)>; 2] {
        use crate::switch::delay::Stage;
        let port = |r: &IfaceRef| self.ports.get(&key(r)).map(|p| p.id);
        match wire {
            Wire::Link(l) => match self.topo.links.get(l) {
                Some(m) => [port(&m.b).map(|p| (p, Stage::Egress)), port(&m.a).map(|p| (p, Stage::Egress))],
                None => [None, None],
            },
            Wire::Uplink(u) => match self.uplink_ports.get(u) {
                // Port 0 sits in LAN a: frames for b leave through it.
                Some([pa, pb]) => [Some((pa.id, Stage::Egress)), Some((pb.id, Stage::Egress))],
                None => [None, None],
            },
            Wire::LanPort(r) => [port(r).map(|p| (p, Stage::Ingress)), port(r).map(|p| (p, Stage::Egress))],
        }
    }

    /// The seed of one direction: the wire's own, else the lab's (mixed
    /// with the wire's name), else a fresh random one.
    fn direction_seed(&self, imp: &LinkImpairment, name: &str, direction: u8) -> u64 {
        match imp.seed.map(|s| (s, "")).or(self.seed.map(|s| (s, name))) {
            Some((seed, name)) => crate::vocab::fnv1a(&[&seed.to_le_bytes(), name.as_bytes(), &[direction]]),
            None => {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u8(direction);
                h.finish()
            }
        }
    }

    /// Hands a wire's impairments (from the model) to the switch.
    pub(super) fn apply_impairment(&mut self, wire: &Wire) -> Result<(), LabError> {
        let imp = self.impairment_of(wire);
        let name = Self::wire_name(wire);
        let points = self.impair_points(wire);
        for (dir, point) in points.into_iter().enumerate() {
            let Some((port, stage)) = point else { continue };
            let params = if dir == 0 { &imp.a_to_b } else { &imp.b_to_a };
            let seed = self.direction_seed(&imp, &name, dir as u8);
            self.switch().set_impairment(port, stage, Some((params.clone(), seed)))?;
        }
        Ok(())
    }

    pub(super) fn set_impairment(&mut self, name: &str, imp: LinkImpairment) -> Result<(), LabError> {
        let wire = self.wire(name)?;
        let old = self.impairment_of(&wire);
        self.store_impairment(&wire, imp);
        if let Err(e) = self.apply_impairment(&wire) {
            self.store_impairment(&wire, old);
            let _ = self.apply_impairment(&wire);
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn set_seed(&mut self, seed: u64) -> Result<(), LabError> {
        self.seed = Some(seed);
        let mut wires: Vec<Wire> = self.topo.links.keys().map(|l| Wire::Link(l.clone())).collect();
        wires.extend(self.topo.uplinks.keys().map(|u| Wire::Uplink(u.clone())));
        for n in self.topo.nodes.values() {
            for i in n.ifaces.iter().filter(|i| matches!(i.attachment, Attachment::Lan(_))) {
                wires.push(Self::wire_of(&n.name, i));
            }
        }
        for w in wires {
            if !self.impairment_of(&w).is_noop() {
                self.apply_impairment(&w)?;
            }
        }
        Ok(())
    }
}
