//! A lab shared by the threads that drive it: the one that runs its
//! script or REPL, and the control socket's.
//!
//! One lock guards the whole [`Lab`]. A command that runs on one node
//! alone (exec, ping from a node, console, pause) takes it only to borrow
//! that node and to give it back ([`Loan`]), and runs in between without
//! it, so a minute-long exec on one node holds up no other command. A
//! command that needs a node lent to another waits for it without the
//! lock, on a condition variable that every node given back signals, then
//! tries again: commands on the same node run one after the other.
//!
//! There is one lock, so there is no lock order to get wrong; a thread
//! holding a lent node never waits for anything but the lock, which no
//! one holds while waiting for a node (they wait on the condition
//! variable, which releases it).
//!
//! Owns: the lock, the waiting, and the loans of nodes. Must not touch:
//! which nodes a command needs (`lending.rs`), threads of its own.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::command::{Command, Reply};
use super::lending::{Attempt, NodeJob};
use super::{Lab, LabError};

/// How long the end of a lab waits for commands on lent nodes to give
/// them back once their processes were killed (they end at once unless a
/// host call hangs).
const LENT_GRACE: Duration = Duration::from_secs(10);

/// A lab shared by threads; clones share the same lab.
#[derive(Clone)]
pub struct SharedLab(Arc<Inner>);

struct Inner {
    lab: Mutex<Lab>,
    /// Signalled whenever a lent node is given back, and when the lab ends.
    given_back: Condvar,
}

/// A shared lab that may have ended: the control socket's threads hold
/// one, so that the lab ends when its owner lets it go.
#[derive(Clone)]
pub struct WeakLab(Weak<Inner>);

impl WeakLab {
    pub fn upgrade(&self) -> Option<SharedLab> {
        self.0.upgrade().map(SharedLab)
    }
}

/// One step of a command on a shared lab (see [`SharedLab::attempt`]).
pub enum Step {
    /// It ran on the lab (or was refused).
    Done(Result<Reply, LabError>),
    /// It runs on one node alone: [`Loan::finish`] it.
    Lent(Loan),
    /// Lent nodes it needs: [`SharedLab::wait_until_back`], then try again.
    Busy { cmd: Command, nodes: Vec<String> },
}

impl SharedLab {
    pub fn new(lab: Lab) -> SharedLab {
        let shared = SharedLab(Arc::new(Inner { lab: Mutex::new(lab), given_back: Condvar::new() }));
        // Its nodes reach it by this (a plug's clients come and go).
        shared.lock().me = Some(shared.downgrade());
        shared
    }

    /// Locks the lab; a thread that panicked while holding it does not
    /// make the lab unusable.
    pub fn lock(&self) -> MutexGuard<'_, Lab> {
        self.0.lab.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lab if no one holds it now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Lab>> {
        match self.0.lab.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    pub fn downgrade(&self) -> WeakLab {
        WeakLab(Arc::downgrade(&self.0))
    }

    /// Runs a command to its end on this thread: a one-node command on
    /// its node alone, without the lab; any other on the lab once every
    /// node it needs is back.
    pub fn execute(&self, cmd: Command) -> Result<Reply, LabError> {
        let mut cmd = cmd;
        loop {
            match self.attempt(cmd) {
                Step::Done(result) => return result,
                Step::Lent(loan) => return loan.finish(),
                Step::Busy { cmd: again, nodes } => {
                    self.wait_until_back(&nodes);
                    cmd = again;
                }
            }
        }
    }

    /// Tries a command once, holding the lab only meanwhile (see
    /// `Lab::attempt`). Never waits for a lent node.
    pub fn attempt(&self, cmd: Command) -> Step {
        let attempt = {
            let mut lab = self.lock();
            if lab.is_torn_down() {
                return Step::Done(Err(LabError::Ended));
            }
            lab.attempt(cmd)
        };
        // The loan is made without the lock: dropping it takes the lock.
        match attempt {
            Attempt::Done(result) => Step::Done(result),
            Attempt::Lent(job) => Step::Lent(Loan { lab: self.clone(), job: Some(job) }),
            Attempt::Busy { cmd, nodes } => Step::Busy { cmd, nodes },
        }
    }

    /// Waits, without holding the lab, until none of `nodes` is lent (or
    /// the lab has ended).
    pub fn wait_until_back(&self, nodes: &[String]) {
        let mut lab = self.lock();
        while nodes.iter().any(|n| lab.is_lent(n)) {
            // Woken by every node given back; the timeout only guards
            // against a lab torn down without `SharedLab::teardown`.
            lab = self.0.given_back.wait_timeout(lab, Duration::from_secs(1)).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Ends the lab: kills the nodes lent to commands, lets those commands
    /// give them back (for at most `LENT_GRACE`), then tears it down.
    pub fn teardown(&self) {
        let mut lab = self.lock();
        lab.end_every_lent();
        let deadline = Instant::now() + LENT_GRACE;
        while lab.has_lent() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                eprintln!("clonet: commands still hold nodes the lab stops; they are stopped once those commands end");
                break;
            }
            lab = self.0.given_back.wait_timeout(lab, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        lab.teardown();
        drop(lab);
        self.0.given_back.notify_all();
    }

    fn give_back(&self, job: NodeJob, result: Result<Reply, LabError>) -> Result<Reply, LabError> {
        let answer = self.lock().give_back(job, result);
        self.0.given_back.notify_all();
        answer
    }
}

/// A node lent to a one-node command. [`Loan::finish`] runs the command
/// and gives the node back; a loan dropped unfinished (its thread went
/// away) gives it back too, so no one waits for it for ever.
pub struct Loan {
    lab: SharedLab,
    job: Option<NodeJob>,
}

impl Loan {
    /// Runs the command on this thread without the lab, gives the node
    /// back and returns the answer. A command that panics (a bug) fails
    /// alone: the node is given back and the answer is an error.
    pub fn finish(mut self) -> Result<Reply, LabError> {
        let Some(mut job) = self.job.take() else { return Err(LabError::Ended) };
        let result = catch_unwind(AssertUnwindSafe(|| job.run()))
            .unwrap_or_else(|panic| Err(LabError::Panicked(panic_message(panic.as_ref()))));
        self.lab.give_back(job, result)
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            let _ = self.lab.give_back(job, Err(LabError::Ended));
        }
    }
}

/// What a panic said, for an error answer.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}
