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
    #[error(
        "{path}: {why}; clonet keeps run directories only where no other user can write \
         (remove it, or choose another place with CLONET_RUN_DIR)"
    )]
    Unsafe { path: PathBuf, why: String },
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

/// Why `meta` (from `symlink_metadata`, never following a link) is not a
/// directory that only `uid` controls, if it is not. The run base and
/// every lab directory must be one: a directory another user can write
/// could hold a planted lab whose state names processes for `clean` to
/// kill and storage for it to delete.
fn not_private(meta: &fs::Metadata, uid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if meta.file_type().is_symlink() {
        Some("is a symbolic link".into())
    } else if !meta.is_dir() {
        Some("is not a directory".into())
    } else if meta.uid() != uid {
        Some(format!("belongs to uid {}, not to uid {uid} who runs clonet", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!("can be written by other users (mode {:o})", meta.mode() & 0o7777))
    } else {
        None
    }
}

/// The effective uid, the one whose directories clonet trusts.
fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Makes `base` (mode 0700) if it is missing, and checks that it is a
/// directory only `uid` controls: `/tmp/clonet-UID` in particular could
/// have been made by someone else first.
fn ensure_private_base(base: &Path, uid: u32) -> Result<(), RunDirError> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_at(base)(e)),
    }
    let meta = fs::symlink_metadata(base).map_err(io_at(base))?;
    match not_private(&meta, uid) {
        Some(why) => Err(RunDirError::Unsafe { path: base.to_path_buf(), why }),
        None => Ok(()),
    }
}

/// Whether `dir` is a directory only `uid` controls (not a link to one).
fn is_private(dir: &Path, uid: u32) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| not_private(&m, uid).is_none())
}

/// Reads a file of a run directory without following a link in its place.
fn read_own_file(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
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
        ensure_private_base(base, my_uid())?;
        let path = base.join(lab);
        let running = |path: &Path| {
            let pid = read_state(path).and_then(|s| s.owner).map_or(0, |o| o.pid);
            RunDirError::Running { lab: lab.to_string(), pid }
        };
        if fs::symlink_metadata(&path).is_ok() {
            if let Some(why) = fs::symlink_metadata(&path).ok().and_then(|m| not_private(&m, my_uid())) {
                return Err(RunDirError::Unsafe { path, why });
            }
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
    let mut state: LabState = serde_json::from_slice(&read_own_file(&dir.join(STATE_FILE)).ok()?).ok()?;
    let log = read_own_file(&dir.join(NODES_LOG)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
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
/// state, by lab name. Only directories of this user count: a lab
/// another user planted would point `attach` at its own socket.
pub fn running_labs(base: &Path) -> Vec<(PathBuf, LabState)> {
    let uid = my_uid();
    if !is_private(base, uid) {
        return Vec::new();
    }
    let mut found: Vec<(PathBuf, LabState)> = fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|dir| is_private(dir, uid))
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
    /// Entries left alone because they are not this user's own
    /// directories (another owner, writable by others, or a link).
    pub foreign: Vec<String>,
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
    clean_as(base, host, my_uid())
}

/// [`clean`] trusting only directories of `uid`: a `base` another user
/// controls is refused, and in it only `uid`'s own, real (not linked)
/// lab directories are touched; anything else is listed as foreign.
fn clean_as(base: &Path, host: &dyn NodeHost, uid: u32) -> Result<CleanReport, RunDirError> {
    let mut report = CleanReport::default();
    match fs::symlink_metadata(base) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(io_at(base)(e)),
        Ok(meta) => {
            if let Some(why) = not_private(&meta, uid) {
                return Err(RunDirError::Unsafe { path: base.to_path_buf(), why });
            }
        }
    }
    let entries = fs::read_dir(base).map_err(io_at(base))?;
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(meta) = fs::symlink_metadata(&dir) else { continue };
        if meta.is_file() {
            continue;
        }
        if not_private(&meta, uid).is_some() {
            report.foreign.push(entry.file_name().to_string_lossy().to_string());
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

    /// A lab directory planted by someone else: its state names a live
    /// process (ours, so that a wrong kill would show) and a storage link.
    fn plant(base: &Path, name: &str, victim: i32) -> PathBuf {
        let dir = base.join(name);
        fs::create_dir(&dir).unwrap();
        let state = LabState {
            lab: name.into(),
            owner: Some(ProcRecord { pid: 2147483000, start_time: 5 }),
            script: None,
            nodes: BTreeMap::from([(
                "n".to_string(),
                vec![ProcRecord { pid: victim, start_time: proc_start_time(victim).unwrap() }],
            )]),
        };
        fs::write(dir.join(STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
        dir
    }

    #[test]
    fn a_run_base_others_can_write_is_refused_and_nothing_in_it_is_touched() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let mut victim = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let planted = plant(base.path(), "planted", victim.id() as i32);
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let host = FakeHost::default();
        let err = clean(base.path(), &host).unwrap_err();
        assert!(err.to_string().contains("can be written by other users (mode 1777)"), "{err}");
        let err = RunDir::create(base.path(), "lab", None, &host).unwrap_err();
        assert!(matches!(err, RunDirError::Unsafe { .. }), "{err}");
        assert!(running_labs(base.path()).is_empty(), "no lab is believed from an unsafe base");
        assert!(planted.join(STATE_FILE).exists() && host.released().is_empty());
        assert_eq!(victim.try_wait().unwrap(), None, "the process the planted state names still runs");
        victim.kill().unwrap();
        victim.wait().unwrap();
    }

    #[test]
    fn lab_directories_that_are_links_or_writable_by_others_are_foreign() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let mut victim = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = victim.id() as i32;
        let shared = plant(base.path(), "shared", pid);
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let target = plant(elsewhere.path(), "target", pid);
        std::os::unix::fs::symlink(&target, base.path().join("linked")).unwrap();
        let host = FakeHost::default();
        let mut report = clean(base.path(), &host).unwrap();
        report.foreign.sort();
        assert_eq!(report.foreign, ["linked", "shared"]);
        assert!(report.removed.is_empty() && report.killed.is_empty() && host.released().is_empty());
        assert!(shared.join(STATE_FILE).exists() && target.join(STATE_FILE).exists());
        assert_eq!(victim.try_wait().unwrap(), None, "nothing was killed");
        assert!(running_labs(base.path()).is_empty());
        victim.kill().unwrap();
        victim.wait().unwrap();
    }

    #[test]
    fn only_a_directory_of_the_user_running_clonet_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let meta = fs::symlink_metadata(dir.path()).unwrap();
        let me = my_uid();
        assert_eq!(not_private(&meta, me), None);
        let why = not_private(&meta, me.wrapping_add(1)).unwrap();
        assert!(why.starts_with(&format!("belongs to uid {me}, not to uid")), "{why}");
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        assert_eq!(not_private(&fs::symlink_metadata(&file).unwrap(), me).unwrap(), "is not a directory");
    }

    #[test]
    fn a_missing_run_base_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let base = parent.path().join("clonet-1000");
        let d = RunDir::create(&base, "lab", None, &FakeHost::default()).unwrap();
        assert_eq!(fs::metadata(&base).unwrap().permissions().mode() & 0o777, 0o700);
        d.remove().unwrap();
    }
}
