//! The lab's snapshots (sans-IO): named, read-only disk states of nodes,
//! which nodes were cloned or restored from them, and the rules for
//! deleting them. The layer files themselves are made by the host.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::names::{validate, NameError};
use crate::vocab::{NodeKind, NodeOptions};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("a snapshot called {0:?} already exists")]
    Exists(String),
    #[error("no snapshot called {0:?}")]
    NoSuch(String),
    #[error("snapshot {name:?} is in use by {users}: delete those nodes first")]
    InUse { name: String, users: String },
}

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub name: String,
    /// The node it was taken from, and that node's kind and options (a
    /// clone starts with them).
    pub node: String,
    pub kind: NodeKind,
    pub options: NodeOptions,
    /// The file or directory holding the frozen layer.
    pub layer: PathBuf,
    /// Nodes whose disk is built on this snapshot.
    pub users: BTreeSet<String>,
    /// The saved RAM and device state, for snapshots that have one.
    #[serde(default)]
    pub memory: Option<PathBuf>,
    /// The node's interfaces (name and MAC) when it was taken: a restore
    /// that resumes the RAM state needs the same ones.
    #[serde(default)]
    pub ifaces: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshots {
    records: BTreeMap<String, SnapshotRecord>,
}

impl Snapshots {
    pub fn check_new(&self, name: &str) -> Result<(), SnapshotError> {
        validate("snapshot", name)?;
        if self.records.contains_key(name) {
            return Err(SnapshotError::Exists(name.to_string()));
        }
        Ok(())
    }

    pub fn add(&mut self, record: SnapshotRecord) -> Result<(), SnapshotError> {
        self.check_new(&record.name)?;
        self.records.insert(record.name.clone(), record);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<&SnapshotRecord, SnapshotError> {
        self.records.get(name).ok_or_else(|| SnapshotError::NoSuch(name.to_string()))
    }

    pub fn all(&self) -> impl Iterator<Item = &SnapshotRecord> {
        self.records.values()
    }

    /// Records that `node`'s disk is now built on snapshot `name`.
    pub fn add_user(&mut self, name: &str, node: &str) -> Result<(), SnapshotError> {
        let r = self.records.get_mut(name).ok_or_else(|| SnapshotError::NoSuch(name.to_string()))?;
        r.users.insert(node.to_string());
        Ok(())
    }

    /// `node`'s disk no longer uses any snapshot (deleted, or restored
    /// onto another one).
    pub fn forget_user(&mut self, node: &str) {
        for r in self.records.values_mut() {
            r.users.remove(node);
        }
    }

    /// Removes snapshot `name` unless a node still uses it; returns it so
    /// that the host can remove its layer.
    pub fn remove(&mut self, name: &str) -> Result<SnapshotRecord, SnapshotError> {
        let r = self.get(name)?;
        if !r.users.is_empty() {
            let users: Vec<&str> = r.users.iter().map(String::as_str).collect();
            return Err(SnapshotError::InUse { name: name.to_string(), users: users.join(", ") });
        }
        Ok(self.records.remove(name).expect("checked above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> SnapshotRecord {
        SnapshotRecord {
            name: name.into(),
            node: "a".into(),
            kind: NodeKind::Uml,
            options: NodeOptions::default(),
            layer: format!("/run/lab/snapshots/{name}.cow").into(),
            users: BTreeSet::new(),
            memory: None,
            ifaces: vec![],
        }
    }

    #[test]
    fn names_are_validated_and_unique() {
        let mut s = Snapshots::default();
        s.add(record("s1")).unwrap();
        assert_eq!(s.add(record("s1")), Err(SnapshotError::Exists("s1".into())));
        assert!(matches!(s.check_new("../x"), Err(SnapshotError::Name(_))));
        assert_eq!(s.get("nope").unwrap_err(), SnapshotError::NoSuch("nope".into()));
    }

    #[test]
    fn a_snapshot_in_use_cannot_be_deleted() {
        let mut s = Snapshots::default();
        s.add(record("s1")).unwrap();
        s.add_user("s1", "c1").unwrap();
        s.add_user("s1", "c2").unwrap();
        let e = s.remove("s1").unwrap_err();
        assert_eq!(e.to_string(), "snapshot \"s1\" is in use by c1, c2: delete those nodes first");
        s.forget_user("c1");
        s.forget_user("c2");
        assert_eq!(s.remove("s1").unwrap().name, "s1");
        assert_eq!(s.all().count(), 0);
    }
}
