//! Following a lab: the clients that watch it (attached REPLs, the web
//! GUI), the events sent to them without ever waiting, and the ticker's
//! once-a-second round (dead nodes, every port's counters).
//!
//! Owns: the watchers and their queues. Must not touch: what changed
//! (`events.rs` finds it), the control socket (`control.rs` serves it).
use super::{events, Lab, Watcher};

impl Lab {
    /// Starts sending event lines to `lines`; returns the watcher's id.
    pub fn watch(&mut self, lines: std::sync::mpsc::SyncSender<String>) -> u64 {
        let id = self.next_watcher;
        self.next_watcher += 1;
        self.watchers.push(Watcher { id, lines, lagged: false });
        id
    }

    pub fn unwatch(&mut self, id: u64) {
        self.watchers.retain(|w| w.id != id);
    }

    /// Sends events to every watcher without ever waiting: a watcher whose
    /// queue is full loses them and is told so (`lagged`) once it has room.
    pub(super) fn publish(&mut self, events: &[events::Event]) {
        use std::sync::mpsc::TrySendError;
        if events.is_empty() {
            return;
        }
        let lines: Vec<String> = events.iter().map(|e| serde_json::to_string(e).expect("events serialize")).collect();
        self.watchers.retain_mut(|w| {
            if w.lagged {
                match w.lines.try_send(serde_json::to_string(&events::Event::Lagged).expect("serializes")) {
                    Ok(()) => w.lagged = false,
                    Err(TrySendError::Full(_)) => return true,
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            for line in &lines {
                match w.lines.try_send(line.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        w.lagged = true;
                        return true;
                    }
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
    }

    /// What the control socket's ticker does about once a second: notice
    /// nodes that died, and send every port's counters to watchers.
    pub fn tick(&mut self) {
        let before = (!self.watchers.is_empty()).then(|| self.topo.clone());
        self.notice_dead_nodes();
        self.follow_node_events();
        if let Some(before) = before {
            let mut changes = events::diff(&before, &self.topo);
            changes.push(events::Event::Counters { ports: self.counters() });
            self.publish(&changes);
        }
    }
}
