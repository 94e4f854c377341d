//! The traffic the switch sees, as the Lab shows it: captures (to a file,
//! or a feed for `clonet capture`), every port's counters and a LAN's
//! learned MAC table.
//!
//! Owns: the file captures the lab started. Must not touch: which ports a
//! target names and the pcap writers (`capture.rs`), the topology.
use std::collections::HashMap;
use std::path::Path;

use super::command::{self, FdbRow, PortReport, Reply};
use super::{capture, Lab, LabError};
use crate::switch::PortId;

impl Lab {
    /// Opens a feed of the frames a target names, with each frame's label.
    pub fn open_capture(&mut self, target: &str) -> Result<(crate::switch::CaptureFeed, capture::Labels), LabError> {
        let taps = {
            let d = self.directory.lock().map_err(|_| LabError::Capture("lab state poisoned".into()))?;
            capture::resolve(&d, target).map_err(LabError::Capture)?
        };
        let feed = self.switch().start_capture(taps.iter().map(|t| t.point).collect())?;
        Ok((feed, capture::labels(&taps)))
    }

    pub fn close_capture(&mut self, id: crate::switch::CaptureId) -> Result<(), LabError> {
        Ok(self.switch().stop_capture(id)?)
    }

    pub(super) fn start_capture(&mut self, target: &str, file: &Path) -> Result<Reply, LabError> {
        let (feed, _) = self.open_capture(target)?;
        let feed_id = feed.id;
        let cap = match capture::FileCapture::start(target, file, feed) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.close_capture(feed_id);
                return Err(LabError::Capture(format!("cannot write {}: {e}", file.display())));
            }
        };
        let id = self.next_capture;
        self.next_capture += 1;
        let info = command::CaptureInfo { id, target: target.to_string(), file: cap.file.clone() };
        self.file_captures.insert(id, cap);
        Ok(Reply::Capture(info))
    }

    pub(super) fn stop_capture(&mut self, id: u64) -> Result<Reply, LabError> {
        let cap =
            self.file_captures.remove(&id).ok_or_else(|| LabError::Capture(format!("no capture {id} is running")))?;
        self.close_capture(cap.feed_id)?;
        let frames = cap
            .writer
            .join()
            .map_err(|_| LabError::Capture("the capture writer failed".into()))?
            .map_err(|e| LabError::Capture(format!("writing {}: {e}", cap.file.display())))?;
        Ok(Reply::CaptureStopped { frames, lost: cap.lost.load(std::sync::atomic::Ordering::Relaxed) })
    }

    /// Counters of every port, in node creation and interface order.
    pub fn counters(&self) -> Vec<PortReport> {
        let mut out = Vec::new();
        for name in &self.topo.order {
            let Some(node) = self.topo.nodes.get(name) else { continue };
            for i in &node.ifaces {
                if let Some(p) = self.ports.get(&(name.clone(), i.name.clone())) {
                    out.push(PortReport {
                        node: name.clone(),
                        iface: i.name.clone(),
                        segment: p.segment.clone(),
                        counters: p.counters.snapshot(),
                    });
                }
            }
        }
        for u in self.topo.uplinks.values() {
            if let Some(ports) = self.uplink_ports.get(&u.name) {
                for (lan, p) in [&u.a, &u.b].into_iter().zip(ports) {
                    out.push(PortReport {
                        node: lan.clone(),
                        iface: u.name.clone(),
                        segment: u.name.clone(),
                        counters: p.counters.snapshot(),
                    });
                }
            }
        }
        out
    }

    pub(super) fn fdb(&mut self, lan: &str) -> Result<Reply, LabError> {
        self.topo.lan(lan)?;
        let seg = self.segment(lan)?;
        let entries = self.switch().fdb(seg)?;
        let by_port: HashMap<PortId, &(String, String)> = self.ports.iter().map(|(k, p)| (p.id, k)).collect();
        let rows = entries
            .into_iter()
            .map(|e| {
                let (node, iface) = by_port.get(&e.port).map(|k| (k.0.clone(), k.1.clone())).unwrap_or_default();
                FdbRow { vlan: e.vid, mac: e.mac.to_string(), node, iface, age_ms: e.age.as_millis() as u64 }
            })
            .collect();
        Ok(Reply::Fdb { rows })
    }
}
