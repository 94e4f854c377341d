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
    /// Before this time, a scan for aged entries cannot free anything, or
    /// one was done less than [`MIN_SCAN_INTERVAL`] ago. A guest sending
    /// frames from ever new source addresses keeps a full table full; were
    /// every such frame to scan the whole table, one VM would saturate the
    /// data-plane thread.
    next_scan: Duration,
    /// How many scans for aged entries were made (a measure for tests).
    scans: u64,
}

/// The least time between two scans of a full table.
const MIN_SCAN_INTERVAL: Duration = Duration::from_secs(1);

impl Default for Fdb {
    fn default() -> Self {
        Fdb::new(DEFAULT_MAX_AGE, DEFAULT_CAPACITY)
    }
}

impl Fdb {
    pub fn new(max_age: Duration, capacity: usize) -> Fdb {
        Fdb { entries: HashMap::new(), max_age, capacity, next_scan: Duration::ZERO, scans: 0 }
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
            if now < self.next_scan {
                return Learned::Full;
            }
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
        // The oldest survivor's last sighting: entries are only refreshed
        // or added later, so nothing can age out before it does.
        let mut oldest = now;
        self.entries.retain(|_, e| {
            let live = now.saturating_sub(e.last_seen) < max_age;
            if live {
                oldest = oldest.min(e.last_seen);
            }
            live
        });
        self.scans += 1;
        self.next_scan = oldest.saturating_add(max_age).max(now.saturating_add(MIN_SCAN_INTERVAL));
        before - self.entries.len()
    }

    /// How many scans for aged entries the table made.
    pub fn scans(&self) -> u64 {
        self.scans
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
    fn a_full_table_is_not_scanned_for_every_new_address() {
        let mut fdb = Fdb::new(s(300), 100);
        let mac = |i: u32| MacAddr([2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        for i in 0..100 {
            assert_eq!(fdb.learn(1, mac(i), 0, s(i as u64)), Learned::New);
        }
        let t = s(200);
        for i in 100..10_100 {
            assert_eq!(fdb.learn(1, mac(i), 1, t + Duration::from_micros(i as u64)), Learned::Full);
        }
        assert_eq!(fdb.scans(), 1, "one scan found nothing to free, and none can before the oldest ages");
        // The oldest entry (seen at 0 s) ages out at 300 s: then a scan frees it.
        assert_eq!(fdb.learn(1, mac(20_000), 1, s(300)), Learned::New);
        assert_eq!(fdb.scans(), 2);
        assert_eq!(fdb.lookup(1, mac(0), s(300)), None);
        // Entries age one a second from here, but a full table is scanned
        // at most once a second.
        for k in 0..1000u64 {
            fdb.learn(1, mac(30_000 + k as u32), 1, s(300) + Duration::from_millis(k));
        }
        assert_eq!(fdb.scans(), 2, "{} scans within one second", fdb.scans());
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
