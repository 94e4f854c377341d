//! Noticing dead nodes without looking at every node on every command.
//!
//! The lab asks before each command which nodes died behind its back.
//! Reading `/proc/PID/stat` of every node process each time made a
//! 1000-node lab quadratic (most of its start-up went there); instead each
//! node process gets a pidfd in one epoll set, and only the nodes whose
//! pidfd became readable are looked at closely. A process a pidfd cannot be
//! opened for (an old kernel) leaves its node checked every time, as before.
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::ProcRecord;

struct Watched {
    procs: Vec<ProcRecord>,
    /// The pidfds, registered in the epoll set under `token`.
    _pidfds: Vec<OwnedFd>,
    token: u64,
}

pub struct DeathWatch {
    epoll: Option<Epoll>,
    watched: HashMap<String, Watched>,
    by_token: HashMap<u64, String>,
    /// Nodes that could not be watched: checked on every call.
    unwatched: HashSet<String>,
    next_token: u64,
}

impl Default for DeathWatch {
    fn default() -> Self {
        DeathWatch {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok(),
            watched: HashMap::new(),
            by_token: HashMap::new(),
            unwatched: HashSet::new(),
            next_token: 0,
        }
    }
}

impl DeathWatch {
    /// Brings the watch in line with the nodes running now (name and
    /// processes) and returns the names of those that may have died: a
    /// watched process exited, or the node cannot be watched. The caller
    /// confirms with the node's own `alive()`.
    pub fn suspects<'a>(&mut self, running: impl Iterator<Item = (&'a str, Vec<ProcRecord>)>) -> Vec<String> {
        let mut seen = HashSet::new();
        for (name, procs) in running {
            seen.insert(name.to_string());
            if self.watched.get(name).is_some_and(|w| w.procs == procs) {
                continue;
            }
            self.forget(name);
            self.watch(name, procs);
        }
        let gone: Vec<String> =
            self.watched.keys().chain(self.unwatched.iter()).filter(|n| !seen.contains(*n)).cloned().collect();
        for name in gone {
            self.forget(&name);
        }
        let mut suspects: Vec<String> = self.unwatched.iter().cloned().collect();
        if let Some(epoll) = &self.epoll {
            let mut events = [EpollEvent::empty(); 64];
            let ready = epoll.wait(&mut events, EpollTimeout::ZERO).unwrap_or(0);
            for e in &events[..ready] {
                if let Some(name) = self.by_token.get(&e.data()) {
                    suspects.push(name.clone());
                }
            }
            // A full batch: more may have died; look at every watched node.
            if ready == events.len() {
                suspects.extend(self.watched.keys().cloned());
            }
        }
        suspects.sort();
        suspects.dedup();
        suspects
    }

    fn watch(&mut self, name: &str, procs: Vec<ProcRecord>) {
        let Some(epoll) = &self.epoll else {
            self.unwatched.insert(name.to_string());
            return;
        };
        self.next_token += 1;
        let token = self.next_token;
        let mut pidfds = Vec::new();
        for p in &procs {
            let fd = match crate::sys::proc::pidfd_open(p.pid) {
                // The pid may have been reused since it was recorded: only
                // a pidfd opened while the recorded process lives is its.
                Ok(fd) if super::is_alive(p) => fd,
                // Already gone: report it at once through `unwatched`.
                _ => {
                    self.unwatched.insert(name.to_string());
                    return;
                }
            };
            if epoll.add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, token)).is_err() {
                self.unwatched.insert(name.to_string());
                return;
            }
            pidfds.push(fd);
        }
        self.by_token.insert(token, name.to_string());
        self.watched.insert(name.to_string(), Watched { procs, _pidfds: pidfds, token });
    }

    fn forget(&mut self, name: &str) {
        self.unwatched.remove(name);
        if let Some(w) = self.watched.remove(name) {
            self.by_token.remove(&w.token);
            // Closing the pidfds takes them out of the epoll set.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: i32) -> ProcRecord {
        ProcRecord { pid, start_time: super::super::proc_start_time(pid).expect("process exists") }
    }

    #[test]
    fn a_live_process_is_not_suspect_and_an_exited_one_is() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let me = record(std::process::id() as i32);
        let kid = record(child.id() as i32);
        let mut w = DeathWatch::default();
        let nodes = |w: &mut DeathWatch| w.suspects([("me", vec![me.clone()]), ("kid", vec![kid.clone()])].into_iter());
        assert!(nodes(&mut w).is_empty(), "both run");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(nodes(&mut w), vec!["kid".to_string()]);
        // A node that is gone from the lab is forgotten.
        assert!(w.suspects([("me", vec![me.clone()])].into_iter()).is_empty());
    }

    #[test]
    fn a_process_that_no_longer_exists_is_suspect_at_once() {
        let gone = ProcRecord { pid: i32::MAX - 1, start_time: 1 };
        let mut w = DeathWatch::default();
        assert_eq!(w.suspects([("ghost", vec![gone])].into_iter()), vec!["ghost".to_string()]);
    }

    #[test]
    fn a_node_without_processes_is_never_suspect() {
        let mut w = DeathWatch::default();
        assert!(w.suspects([("fake", vec![])].into_iter()).is_empty());
    }
}
