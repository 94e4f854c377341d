//! Run directories: one per running lab, holding its state file, so that
//! a second lab of the same name is refused and `clonet clean` can remove
//! what a SIGKILLed lab left behind.
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use nix::fcntl::{Flock, FlockArg};

use crate::host::{is_alive, proc_start_time, NodeHost, ProcRecord};

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("lab {lab:?} is already running (pid {pid}); choose another name with --name")]
    Running { lab: String, pid: i32 },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io { path: path.to_path_buf(), source }
}

pub const STATE_FILE: &str = "state.json";
/// The node processes, as an append-only log of [`NodeRecord`] lines.
const NODES_LOG: &str = "nodes.log";

/// What a lab leaves on disk about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub lab: String,
    /// The clonet process that owns the lab.
    pub owner: Option<ProcRecord>,
    pub script: Option<PathBuf>,
    /// Host processes of every node, by node name.
    pub nodes: BTreeMap<String, Vec<ProcRecord>>,
}

/// Where run directories live: `$CLONET_RUN_DIR`, else `/run/clonet` for
/// root, else `$XDG_RUNTIME_DIR/clonet`.
pub fn base_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CLONET_RUN_DIR") {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/clonet");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("clonet"),
        None => std::env::temp_dir().join(format!("clonet-{}", nix::unistd::geteuid())),
    }
}

/// Run directories of this process's live labs, for a signal that must end
/// the process without unwinding.
static LIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes every live run directory of this process (last-resort exit).
pub fn remove_registered() {
    let dirs = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|p| p.into_inner()));
    for d in dirs {
        let _ = fs::remove_dir_all(d);
    }
}

/// The run directory of a live lab. Removed by [`RunDir::remove`].
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    state: LabState,
    /// An exclusive flock on the directory itself, held while the lab
    /// lives: the kernel drops it when the process dies, however it dies,
    /// so "locked" means "its lab is alive".
    _lock: Flock<fs::File>,
}

/// Locks a run directory, or says who holds it.
fn lock_dir(dir: &Path) -> Result<Option<Flock<fs::File>>, RunDirError> {
    let f = fs::File::open(dir).map_err(io_at(dir))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(io_at(dir)(e.into())),
    }
}

impl RunDir {
    /// Creates `base/lab`. A stale directory of a dead lab is cleaned
    /// first, `host` releasing what its nodes kept elsewhere.
    pub fn create(base: &Path, lab: &str, script: Option<&Path>, host: &dyn NodeHost) -> Result<RunDir, RunDirError> {
        fs::create_dir_all(base).map_err(io_at(base))?;
        let path = base.join(lab);
        let running = |path: &Path| {
            let pid = read_state(path).and_then(|s| s.owner).map_or(0, |o| o.pid);
            RunDirError::Running { lab: lab.to_string(), pid }
        };
        if path.exists() {
            match lock_dir(&path)? {
                None => return Err(running(&path)),
                Some(_stale) => {
                    eprintln!("clonet: removing what a previous run of lab {lab:?} left behind");
                    clean_one(&path, host)?;
                }
            }
        }
        // Build and lock the directory under a private name, then rename it
        // into place: nobody ever sees it unlocked, and of two runs racing
        // for the same name exactly one rename succeeds.
        let me = std::process::id() as i32;
        let tmp = base.join(format!(".{lab}.{me}.new"));
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(io_at(&tmp))?;
        let lock = lock_dir(&tmp)?.ok_or_else(|| running(&tmp))?;
        let owner = proc_start_time(me).map(|start_time| ProcRecord { pid: me, start_time });
        let state =
            LabState { lab: lab.to_string(), owner, script: script.map(Path::to_path_buf), nodes: BTreeMap::new() };
        let mut dir = RunDir { path: tmp.clone(), state, _lock: lock };
        dir.save()?;
        if fs::rename(&tmp, &path).is_err() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(running(&path));
        }
        dir.path = path;
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).push(dir.path.clone());
        crate::interrupt::before_forced_exit(remove_registered);
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// Writes the state file atomically (write, then rename).
    fn save(&self) -> Result<(), RunDirError> {
        let tmp = self.path.join(".state.json.tmp");
        let json = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        fs::write(&tmp, json).map_err(io_at(&tmp))?;
        let dst = self.path.join(STATE_FILE);
        fs::rename(&tmp, &dst).map_err(io_at(&dst))
    }

    pub fn record_node(&mut self, name: &str, procs: Vec<ProcRecord>) -> Result<(), RunDirError> {
        self.append_node_record(&NodeRecord { node: name.to_string(), procs: Some(procs.clone()) })?;
        self.state.nodes.insert(name.to_string(), procs);
        Ok(())
    }

    pub fn forget_node(&mut self, name: &str) -> Result<(), RunDirError> {
        self.append_node_record(&NodeRecord { node: name.to_string(), procs: None })?;
        self.state.nodes.remove(name);
        Ok(())
    }

    /// Node processes go to an append-only log rather than into the state
    /// file: rewriting the whole state for every node made starting a
    /// 1000-node lab quadratic. A line is written with one `write`, so a
    /// reader sees whole lines.
    fn append_node_record(&self, record: &NodeRecord) -> Result<(), RunDirError> {
        use std::io::Write;
        let path = self.path.join(NODES_LOG);
        let mut line = serde_json::to_vec(record).expect("a node record serializes");
        line.push(b'\n');
        let mut f = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_at(&path))?;
        f.write_all(&line).map_err(io_at(&path))
    }

    /// Rewrites a file of the run directory in place, keeping its inode, so
    /// bind mounts of it (the nodes' /etc/hosts) see the new content.
    pub fn write_in_place(&self, name: &str, content: &str) -> Result<PathBuf, RunDirError> {
        let p = self.path.join(name);
        fs::write(&p, content).map_err(io_at(&p))?;
        Ok(p)
    }

    pub fn remove(self) -> Result<(), RunDirError> {
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| *p != self.path);
        // The lab's own mounts (the ns nodes' layer storage) go first.
        for m in mounts_under(&self.path) {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        fs::remove_dir_all(&self.path).map_err(io_at(&self.path))
    }
}

/// One line of the node log: a node's processes, or `null` once it is gone.
#[derive(Serialize, Deserialize)]
struct NodeRecord {
    node: String,
    procs: Option<Vec<ProcRecord>>,
}

/// The state file, with the node log replayed into `nodes`.
fn read_state(dir: &Path) -> Option<LabState> {
    let mut state: LabState = serde_json::from_slice(&fs::read(dir.join(STATE_FILE)).ok()?).ok()?;
    let log = fs::read_to_string(dir.join(NODES_LOG)).unwrap_or_default();
    // A torn last line (the lab died while writing it) is skipped.
    for record in log.lines().filter_map(|l| serde_json::from_str::<NodeRecord>(l).ok()) {
        match record.procs {
            Some(procs) => state.nodes.insert(record.node, procs),
            None => state.nodes.remove(&record.node),
        };
    }
    Some(state)
}

/// The live labs under `base` (their owner runs) that have a node called
/// `node`, only lab `lab` if given: run directory and state.
pub fn labs_with_node(base: &Path, node: &str, lab: Option<&str>) -> Vec<(PathBuf, LabState)> {
    let mut found = running_labs(base);
    found.retain(|(_, s)| lab.is_none_or(|l| s.lab == l) && s.nodes.contains_key(node));
    found
}

/// The live labs under `base` (their owner runs): run directory and
/// state, by lab name.
pub fn running_labs(base: &Path) -> Vec<(PathBuf, LabState)> {
    let mut found: Vec<(PathBuf, LabState)> = fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter_map(|dir| read_state(&dir).map(|s| (dir, s)))
        .filter(|(_, s)| s.owner.as_ref().is_some_and(is_alive))
        .collect();
    found.sort_by(|a, b| a.1.lab.cmp(&b.1.lab));
    found
}

/// The run directory of the live lab called `lab` under `base`.
pub fn running_lab(base: &Path, lab: &str) -> Option<PathBuf> {
    running_labs(base).into_iter().find(|(_, s)| s.lab == lab).map(|(dir, _)| dir)
}

/// What `clean` did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct CleanReport {
    pub removed: Vec<String>,
    pub killed: Vec<i32>,
    pub unmounted: Vec<String>,
    /// Labs left alone because their owner still runs.
    pub running: Vec<String>,
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo).
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().to_string();
    let mut v: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

/// Removes one dead lab's leftovers: processes, what `host` keeps outside
/// the directory, mounts, files.
fn clean_one(dir: &Path, host: &dyn NodeHost) -> Result<CleanReport, RunDirError> {
    let mut report = CleanReport::default();
    if let Some(state) = read_state(dir) {
        for rec in state.nodes.values().flatten() {
            if is_alive(rec) {
                // Node processes lead their own process group (UML runs as several).
                let _ =
                    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(rec.pid), nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.pid), nix::sys::signal::Signal::SIGKILL);
                report.killed.push(rec.pid);
            }
        }
    }
    // btrfs subvolumes of its ns nodes live outside the run directory.
    host.release(dir);
    for m in mounts_under(dir) {
        if nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH).is_ok() {
            report.unmounted.push(m);
        }
    }
    fs::remove_dir_all(dir).map_err(io_at(dir))?;
    report.removed.push(dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default());
    Ok(report)
}

/// Cleans every run directory under `base` whose owner is dead; `host`
/// releases what their nodes kept elsewhere.
pub fn clean(base: &Path, host: &dyn NodeHost) -> Result<CleanReport, RunDirError> {
    let mut report = CleanReport::default();
    let entries = match fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(io_at(base)(e)),
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let state = read_state(&dir);
        if state.is_none()
            && !dir.join(STATE_FILE).exists()
            && fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true)
        {
            // Not ours (no state file, not empty): leave it.
            continue;
        }
        let Some(_lock) = lock_dir(&dir)? else {
            let name = state.map(|s| s.lab).unwrap_or_else(|| entry.file_name().to_string_lossy().to_string());
            report.running.push(name);
            continue;
        };
        let one = clean_one(&dir, host)?;
        report.removed.extend(one.removed);
        report.killed.extend(one.killed);
        report.unmounted.extend(one.unmounted);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn a_live_lab_is_refused_and_a_dead_one_is_cleaned() {
        let base = tempfile::tempdir().unwrap();
        let host = FakeHost::default();
        let mut d = RunDir::create(base.path(), "lab1", None, &host).unwrap();
        d.record_node("a", vec![]).unwrap();
        assert!(matches!(RunDir::create(base.path(), "lab1", None, &host), Err(RunDirError::Running { .. })));
        let report = clean(base.path(), &host).unwrap();
        assert_eq!(report.running, vec!["lab1".to_string()], "our own lab is alive");
        assert!(host.released().is_empty(), "a live lab keeps its storage");
        // The owner dies: its lock goes with it, the directory stays.
        drop(d);
        let report = clean(base.path(), &host).unwrap();
        assert_eq!(report.removed, vec!["lab1".to_string()]);
        assert!(!base.path().join("lab1").exists());
        assert_eq!(host.released(), vec![base.path().join("lab1")], "released through the host");
    }

    #[test]
    fn the_node_log_replays_into_the_state_and_a_torn_line_is_skipped() {
        let base = tempfile::tempdir().unwrap();
        let mut d = RunDir::create(base.path(), "lab3", None, &FakeHost::default()).unwrap();
        let rec = |pid| ProcRecord { pid, start_time: 7 };
        d.record_node("a", vec![rec(10), rec(11)]).unwrap();
        d.record_node("b", vec![rec(20)]).unwrap();
        d.forget_node("a").unwrap();
        d.record_node("c", vec![rec(30)]).unwrap();
        let log = d.path().join(NODES_LOG);
        let mut text = fs::read_to_string(&log).unwrap();
        text.push_str(r#"{"node":"d","pro"#);
        fs::write(&log, text).unwrap();
        let read = read_state(d.path()).unwrap();
        assert_eq!(read.nodes, d.state().nodes);
        assert_eq!(read.nodes.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(read.nodes["b"], vec![rec(20)]);
    }

    #[test]
    fn stale_directories_are_replaced_on_create() {
        let base = tempfile::tempdir().unwrap();
        let stale = base.path().join("lab2");
        fs::create_dir(&stale).unwrap();
        fs::write(
            stale.join(STATE_FILE),
            r#"{"lab":"lab2","owner":{"pid":2147483000,"start_time":5},"script":null,"nodes":{}}"#,
        )
        .unwrap();
        let host = FakeHost::default();
        let d = RunDir::create(base.path(), "lab2", None, &host).unwrap();
        assert_eq!(d.state().owner.as_ref().unwrap().pid, std::process::id() as i32);
        assert_eq!(host.released(), vec![stale.clone()], "the stale lab's storage is released");
        d.remove().unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn foreign_directories_are_left_alone() {
        let base = tempfile::tempdir().unwrap();
        let other = base.path().join("notours");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("data"), "x").unwrap();
        let host = FakeHost::default();
        clean(base.path(), &host).unwrap();
        assert!(other.join("data").exists());
        assert!(host.released().is_empty());
    }
}
