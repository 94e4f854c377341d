//! The lab a script or REPL drives: this process's own (shared with its
//! control socket), or one that another clonet process serves
//! (`clonet attach`). Both take the same `Command`s.
use std::sync::{Arc, Mutex, MutexGuard};

use super::command::{Command, Reply};
use super::control::Client;
use super::errors;
use super::shared::SharedLab;
use super::topology::Topology;
use super::{Lab, LabError};

#[derive(Clone)]
pub enum LabRef {
    Local(SharedLab),
    /// A lab served by another process; one request at a time.
    Remote(Arc<Mutex<Client>>),
}

impl LabRef {
    /// A lab of this process, without a control socket (tests, checks).
    pub fn local(lab: Lab) -> LabRef {
        LabRef::Local(SharedLab::new(lab))
    }

    /// A lab of this process, served on its control socket.
    pub fn served(lab: Lab) -> Result<LabRef, LabError> {
        Ok(LabRef::Local(lab.serve()?))
    }

    pub fn remote(client: Client) -> LabRef {
        LabRef::Remote(Arc::new(Mutex::new(client)))
    }

    pub fn execute(&self, cmd: Command) -> Result<Reply, LabError> {
        match self {
            // A one-node command runs without the lab, so the control
            // socket's clients go on meanwhile.
            LabRef::Local(lab) => lab.execute(cmd),
            LabRef::Remote(client) => {
                client.lock().unwrap_or_else(std::sync::PoisonError::into_inner).execute(cmd).map_err(LabError::Remote)
            }
        }
    }

    /// This process's lab, locked; `None` for a remote one.
    pub fn local_lab(&self) -> Option<MutexGuard<'_, Lab>> {
        match self {
            LabRef::Local(lab) => Some(lab.lock()),
            LabRef::Remote(_) => None,
        }
    }

    pub fn topology(&self) -> Result<Topology, LabError> {
        if let Some(lab) = self.local_lab() {
            return Ok(lab.topology().clone());
        }
        match self.execute(Command::Topology)? {
            Reply::Topology(t) => Ok(t),
            _ => {
                Err(errors::RemoteError::new(errors::ErrorKind::Unavailable, "unexpected reply to a topology request")
                    .into())
            }
        }
    }

    /// Tears down this process's lab (a remote lab goes on).
    pub fn teardown(&self) {
        if let LabRef::Local(lab) = self {
            lab.teardown();
        }
    }
}
