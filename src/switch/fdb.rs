//! The MAC learning table of one LAN (sans-IO: time is an argument).
//!
//! Owns: learning, aging, station moves, a size bound. Must not touch:
//! ports, fds, the clock.
use std::collections::HashMap;
use std::time::Duration;

use super::PortId;
use crate::vocab::MacAddr;

/// Default age after which an unrefreshed entry is forgotten (as in 802.1D).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Default bound on the number of entries per LAN.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    port: PortId,
    last_seen: Duration,
}

/// What learning a source address did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    New,
    Refreshed,
    /// The station now answers on another port.
    Moved {
        from: PortId,
    },
    /// Group addresses are never learned.
    Ignored,
    /// The table is full of live entries.
    Full,
}

/// A MAC address table with aging.
#[derive(Debug)]
pub struct Fdb {
    entries: HashMap<(u16, MacAddr), Entry>,
    max_age: Duration,
    capacity: usize,
}

impl Default for Fdb {
    fn default() -> Self {
        Fdb::new(DEFAULT_MAX_AGE, DEFAULT_CAPACITY)
    }
}

impl Fdb {
    pub fn new(max_age: Duration, capacity: usize) -> Fdb {
        Fdb { entries: HashMap::new(), max_age, capacity }
    }

    fn is_live(&self, e: &Entry, now: Duration) -> bool {
        now.saturating_sub(e.last_seen) < self.max_age
    }

    /// Records that `mac` was seen in VLAN `vid` arriving on `port` at `now`.
    pub fn learn(&mut self, vid: u16, mac: MacAddr, port: PortId, now: Duration) -> Learned {
        if mac.is_group() {
            return Learned::Ignored;
        }
        if let Some(e) = self.entries.get_mut(&(vid, mac)) {
            let from = e.port;
            *e = Entry { port, last_seen: now };
            return if from == port { Learned::Refreshed } else { Learned::Moved { from } };
        }
        if self.entries.len() >= self.capacity {
            self.expire(now);
            if self.entries.len() >= self.capacity {
                return Learned::Full;
            }
        }
        self.entries.insert((vid, mac), Entry { port, last_seen: now });
        Learned::New
    }

    /// The port `mac` of VLAN `vid` was last seen on, if recently enough.
    pub fn lookup(&self, vid: u16, mac: MacAddr, now: Duration) -> Option<PortId> {
        self.entries.get(&(vid, mac)).filter(|e| self.is_live(e, now)).map(|e| e.port)
    }

    /// Drops aged entries; returns how many were removed.
    pub fn expire(&mut self, now: Duration) -> usize {
        let before = self.entries.len();
        let max_age = self.max_age;
        self.entries.retain(|_, e| now.saturating_sub(e.last_seen) < max_age);
        before - self.entries.len()
    }

    /// Forgets every entry that points at `port` (the port was removed).
    pub fn forget_port(&mut self, port: PortId) {
        self.entries.retain(|_, e| e.port != port);
    }

    /// Live entries, sorted by VLAN and address: ((vid, mac), port, age).
    pub fn entries(&self, now: Duration) -> Vec<((u16, MacAddr), PortId, Duration)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| self.is_live(e, now))
            .map(|(m, e)| (*m, e.port, now.saturating_sub(e.last_seen)))
            .collect();
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn learns_and_looks_up() {
        let mut f = Fdb::default();
        assert_eq!(f.learn(1, A, 1, s(0)), Learned::New);
        assert_eq!(f.lookup(1, A, s(1)), Some(1));
        assert_eq!(f.lookup(1, B, s(1)), None);
        assert_eq!(f.learn(1, A, 1, s(2)), Learned::Refreshed);
    }

    #[test]
    fn never_learns_group_addresses() {
        let mut f = Fdb::default();
        assert_eq!(f.learn(1, MacAddr::BROADCAST, 1, s(0)), Learned::Ignored);
        assert_eq!(f.learn(1, MacAddr([0x01, 0, 0x5e, 0, 0, 1]), 1, s(0)), Learned::Ignored);
        assert!(f.is_empty());
    }

    #[test]
    fn entries_age_out() {
        let mut f = Fdb::new(s(10), 100);
        f.learn(1, A, 1, s(0));
        f.learn(1, B, 2, s(5));
        assert_eq!(f.lookup(1, A, s(9)), Some(1));
        assert_eq!(f.lookup(1, A, s(10)), None, "an entry as old as max_age is gone");
        assert_eq!(f.lookup(1, B, s(10)), Some(2));
        assert_eq!(f.expire(s(10)), 1);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn refresh_postpones_aging() {
        let mut f = Fdb::new(s(10), 100);
        f.learn(1, A, 1, s(0));
        f.learn(1, A, 1, s(8));
        assert_eq!(f.lookup(1, A, s(15)), Some(1));
    }

    #[test]
    fn vlans_have_separate_tables() {
        let mut f = Fdb::default();
        f.learn(10, A, 1, s(0));
        assert_eq!(f.lookup(10, A, s(0)), Some(1));
        assert_eq!(f.lookup(20, A, s(0)), None);
        assert_eq!(f.learn(20, A, 2, s(0)), Learned::New, "the same MAC in another VLAN is another station");
        assert_eq!(f.lookup(10, A, s(0)), Some(1));
    }

    #[test]
    fn follows_a_host_that_moves() {
        let mut f = Fdb::default();
        f.learn(1, A, 1, s(0));
        assert_eq!(f.learn(1, A, 3, s(1)), Learned::Moved { from: 1 });
        assert_eq!(f.lookup(1, A, s(1)), Some(3));
    }

    #[test]
    fn bounded_size_reclaims_aged_entries_first() {
        let mut f = Fdb::new(s(10), 2);
        f.learn(1, A, 1, s(0));
        f.learn(1, B, 2, s(0));
        let c = MacAddr([2, 0, 0, 0, 0, 0xc]);
        assert_eq!(f.learn(1, c, 3, s(1)), Learned::Full);
        assert_eq!(f.learn(1, c, 3, s(11)), Learned::New);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn forgetting_a_port_removes_its_stations() {
        let mut f = Fdb::default();
        f.learn(1, A, 1, s(0));
        f.learn(1, B, 2, s(0));
        f.forget_port(1);
        assert_eq!(f.lookup(1, A, s(0)), None);
        assert_eq!(f.entries(s(0)), vec![((1, B), 2, s(0))]);
    }
}
