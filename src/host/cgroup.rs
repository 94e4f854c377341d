//! Memory and CPU limits of ns nodes, through the host's control groups.
//!
//! An ns node shares the host's kernel, so `mem` and `cpus` (Kathará's
//! `node[mem]`, `node[cpus]`, a script's `mem`/`cpus` on an ns node) are
//! what Docker makes of them: a control group per node with a memory limit
//! and a CPU quota. The group is made under clonet's own group in each
//! hierarchy that has the controller: cgroup v1 (`memory`, `cpu`) where a
//! v1 hierarchy holds it, else the unified (v2) one. The node's helpers
//! (`__ns-init`, `__ns-enter`) join the groups themselves before they fork,
//! so the node's init and every command run in the node are counted.
//!
//! Where the groups cannot be made (an ordinary user without a delegated
//! group, a v2 group that holds processes and cannot be split), the node
//! runs without limits and the lab says why once.
//!
//! Finding the places is sans-IO ([`plan`], from `/proc/self/cgroup` and
//! `/proc/self/mountinfo`), unit-tested; making them is `std::fs` on the
//! paths the plan gives.
//!
//! Owns: the groups named `clonet-LAB-NODE`. Must not touch: groups it did
//! not make.
use std::path::{Path, PathBuf};

/// What a node is held to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub mem_bytes: Option<u64>,
    /// Whole CPUs of time per period (a CFS quota of N periods).
    pub cpus: Option<u32>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.mem_bytes.is_some() || self.cpus.is_some()
    }
}

/// The run-directory file (`NODE.cgroups`) listing a node's groups, one
/// directory a line, for `clonet clean` after a SIGKILL.
pub const RECORD_SUFFIX: &str = ".cgroups";

/// The CFS period clonet sets: 100 ms, the kernel's default.
const PERIOD_US: u64 = 100_000;

/// Where a controller lives for this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A v1 hierarchy: the directory of our group in it.
    V1(PathBuf),
    /// The unified hierarchy: the directory of our group in it, and the
    /// hierarchy's mount point (a root's fallback: groups there need no
    /// delegation).
    V2(PathBuf, PathBuf),
}

/// Where the memory and CPU controllers are for the process whose
/// `/proc/self/cgroup` and `/proc/self/mountinfo` these are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub memory: Option<Place>,
    pub cpu: Option<Place>,
}

/// Reads the plan of this process (v1 hierarchies first: on a hybrid host
/// the controllers are bound there, and the unified one has none).
pub fn plan(proc_cgroup: &str, mountinfo: &str) -> Plan {
    // Our group per hierarchy: "ID:CONTROLLERS:PATH"; v2 is "0::PATH".
    let mut v1_groups: Vec<(Vec<&str>, &str)> = Vec::new();
    let mut v2_group = None;
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctl), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        if id == "0" && ctl.is_empty() {
            v2_group = Some(path);
        } else {
            v1_groups.push((ctl.split(',').collect(), path));
        }
    }
    // Mounts: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTS".
    let mut v1_mounts: Vec<(Vec<String>, String, String)> = Vec::new();
    let mut v2_mount = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let (root, mountpoint) = (unescape(l[3]), unescape(l[4]));
        match r[0] {
            "cgroup" => v1_mounts.push((r[2].split(',').map(String::from).collect(), root, mountpoint)),
            "cgroup2" if v2_mount.is_none() => v2_mount = Some((root, mountpoint)),
            _ => {}
        }
    }
    let under = |root: &str, mountpoint: &str, group: &str| -> Option<PathBuf> {
        // The group's path is from the hierarchy's root; the mount may show
        // only a part of it (a container's namespace).
        let rel = if root == "/" { group } else { group.strip_prefix(root)? };
        let rel = rel.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            return None;
        }
        Some(Path::new(mountpoint).join(rel))
    };
    let v1 = |controller: &str| -> Option<Place> {
        let (_, group) = v1_groups.iter().find(|(ctls, _)| ctls.contains(&controller))?;
        let (_, root, mountpoint) = v1_mounts.iter().find(|(opts, _, _)| opts.iter().any(|o| o == controller))?;
        under(root, mountpoint, group).map(Place::V1)
    };
    let v2 = || -> Option<Place> {
        let (root, mountpoint) = v2_mount.as_ref()?;
        under(root, mountpoint, v2_group?).map(|g| Place::V2(g, PathBuf::from(mountpoint)))
    };
    Plan { memory: v1("memory").or_else(v2), cpu: v1("cpu").or_else(v2) }
}

/// Mountinfo escapes spaces and the like as `\NNN` (octal).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The files a node's group is set with: (file name, contents), by where
/// the controller is.
pub fn settings(limits: &Limits, memory: Option<&Place>, cpu: Option<&Place>) -> Vec<(bool, &'static str, String)> {
    // (true: the memory controller's directory; false: the CPU one's).
    let mut out = Vec::new();
    if let (Some(bytes), Some(place)) = (limits.mem_bytes, memory) {
        match place {
            Place::V1(_) => out.push((true, "memory.limit_in_bytes", bytes.to_string())),
            Place::V2(..) => {
                out.push((true, "memory.max", bytes.to_string()));
                // As Docker: no swap beyond the limit.
                out.push((true, "memory.swap.max", "0".to_string()));
            }
        }
    }
    if let (Some(cpus), Some(place)) = (limits.cpus, cpu) {
        let quota = u64::from(cpus) * PERIOD_US;
        match place {
            Place::V1(_) => {
                out.push((false, "cpu.cfs_period_us", PERIOD_US.to_string()));
                out.push((false, "cpu.cfs_quota_us", quota.to_string()));
            }
            Place::V2(..) => out.push((false, "cpu.max", format!("{quota} {PERIOD_US}"))),
        }
    }
    out
}

/// The name of a node's group: `clonet-LAB-NODE` (both names are checked
/// names: letters, digits, `-`, `_`, `.`).
pub fn group_name(lab: &str, node: &str) -> String {
    format!("clonet-{lab}-{node}")
}

/// A node's groups, removed when it is dropped (once its processes are
/// gone).
#[derive(Debug)]
pub struct NodeGroups {
    dirs: Vec<PathBuf>,
}

impl NodeGroups {
    /// Makes the groups of a node, or says why it cannot.
    pub fn create(lab: &str, node: &str, limits: &Limits) -> Result<NodeGroups, String> {
        let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("reading {p}: {e}"));
        let plan = plan(&read("/proc/self/cgroup")?, &read("/proc/self/mountinfo")?);
        let memory = limits.mem_bytes.and(plan.memory.as_ref());
        let cpu = limits.cpus.and(plan.cpu.as_ref());
        if limits.mem_bytes.is_some() && memory.is_none() {
            return Err("this host has no memory controller clonet can find".into());
        }
        if limits.cpus.is_some() && cpu.is_none() {
            return Err("this host has no cpu controller clonet can find".into());
        }
        let name = group_name(lab, node);
        let mut made = NodeGroups { dirs: Vec::new() };
        let mut dir_of = |place: &Place| -> Result<PathBuf, String> {
            let parent = match place {
                Place::V1(d) => d.clone(),
                Place::V2(group, top) => match enable_v2(group) {
                    Ok(()) => group.clone(),
                    // Our group holds other processes (a login session):
                    // root may use the hierarchy's top, as container
                    // engines do.
                    Err(why) => {
                        if group != top && enable_v2(top).is_ok() {
                            top.clone()
                        } else {
                            return Err(why);
                        }
                    }
                },
            };
            let dir = parent.join(&name);
            if made.dirs.contains(&dir) {
                return Ok(dir);
            }
            // A group of a lab of this name that was killed: empty, so
            // removable; a busy one is another lab's and is left alone.
            let _ = std::fs::remove_dir(&dir);
            std::fs::create_dir(&dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
            made.dirs.push(dir.clone());
            Ok(dir)
        };
        let mem_dir = memory.map(&mut dir_of).transpose()?;
        let cpu_dir = cpu.map(&mut dir_of).transpose()?;
        for (is_mem, file, value) in settings(limits, memory, cpu) {
            let dir = if is_mem { &mem_dir } else { &cpu_dir };
            let Some(dir) = dir else { continue };
            let path = dir.join(file);
            if let Err(e) = std::fs::write(&path, &value) {
                // Swap accounting may be off: the memory limit still holds.
                if file != "memory.swap.max" {
                    return Err(format!("setting {}: {e}", path.display()));
                }
            }
        }
        Ok(made)
    }

    /// The `cgroup.procs` files a helper writes its pid to, once per
    /// hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Lists the groups in `run_dir` (`NODE.cgroups`), where
    /// [`remove_recorded`] finds them after a SIGKILL.
    pub fn record(&self, run_dir: &Path, node: &str) {
        let text: String = self.dirs.iter().map(|d| format!("{}\n", d.display())).collect();
        let _ = std::fs::write(run_dir.join(format!("{node}{RECORD_SUFFIX}")), text);
    }
}

impl Drop for NodeGroups {
    fn drop(&mut self) {
        remove_groups(&self.dirs);
    }
}

/// Removes groups once their processes have left them (a group with
/// processes cannot be removed: a few tries over about a second, as the
/// node's processes die).
pub fn remove_groups(dirs: &[PathBuf]) {
    for dir in dirs {
        let name_ok = dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("clonet-"));
        if !name_ok {
            continue;
        }
        for _ in 0..20 {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }
}

/// Removes the groups a killed lab's run directory records (`clonet
/// clean`, after its processes are killed). Only directories named
/// `clonet-…` inside a control-group file system are touched.
pub fn remove_recorded(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else { return };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().ends_with(RECORD_SUFFIX) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        let dirs: Vec<PathBuf> = text
            .lines()
            .map(PathBuf::from)
            .filter(|d| d.is_absolute() && d.parent().is_some_and(|p| p.join("cgroup.procs").is_file()))
            .collect();
        remove_groups(&dirs);
    }
}

/// In v2, a group hands controllers to its children only when it holds no
/// process itself (but for the root). When clonet's own group does, clonet
/// moves itself into a leaf `clonet-engine-PID` first, as container
/// engines do in a delegated group.
fn enable_v2(group: &Path) -> Result<(), String> {
    let wanted = ["memory", "cpu"];
    let control = group.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&control).unwrap_or_default();
    let missing: Vec<&str> = wanted.iter().copied().filter(|c| !on.split_whitespace().any(|o| o == *c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let available = std::fs::read_to_string(group.join("cgroup.controllers")).unwrap_or_default();
    let line: String =
        missing.iter().filter(|c| available.split_whitespace().any(|a| a == **c)).map(|c| format!("+{c} ")).collect();
    if line.is_empty() {
        return Err(format!("{} offers neither memory nor cpu to its children", group.display()));
    }
    if std::fs::write(&control, line.trim()).is_ok() {
        return Ok(());
    }
    // Only when clonet is the group's one process: others are not ours to move.
    let me = std::process::id().to_string();
    let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
    if procs.lines().any(|pid| pid.trim() != me) {
        return Err(format!(
            "{} holds processes other than clonet, so it cannot hand memory and cpu to child groups \
             (run clonet in a group of its own, e.g. systemd-run --user --scope -p Delegate=yes)",
            group.display()
        ));
    }
    let leaf = group.join(format!("clonet-engine-{me}"));
    let _ = std::fs::create_dir(&leaf);
    std::fs::write(leaf.join("cgroup.procs"), &me)
        .map_err(|e| format!("moving clonet into {}: {e}", leaf.display()))?;
    std::fs::write(&control, line.trim()).map_err(|e| format!("enabling {} in {}: {e}", line.trim(), control.display()))
}

/// Joins this process to the groups (a helper, before it forks): every
/// process it starts is then counted there too.
pub fn join(procs_files: &[PathBuf]) -> std::io::Result<()> {
    let me = std::process::id().to_string();
    for f in procs_files {
        std::fs::write(f, &me)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/\n4:memory:/process_api/88d5\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
35 25 0:30 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 35 0:34 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
44 35 0:39 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_host_uses_its_v1_hierarchies_under_our_own_groups() {
        let p = plan(HYBRID_CGROUP, HYBRID_MOUNTS);
        assert_eq!(p.memory, Some(Place::V1("/sys/fs/cgroup/memory/process_api/88d5".into())));
        assert_eq!(p.cpu, Some(Place::V1("/sys/fs/cgroup/cpu".into())));
    }

    #[test]
    fn a_unified_host_uses_v2_and_a_namespaced_mount_root_is_stripped() {
        let mounts = "30 25 0:26 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let p = plan("0::/user.slice/user-1000.slice/app.scope\n", mounts);
        assert_eq!(
            p.memory,
            Some(Place::V2("/sys/fs/cgroup/user-1000.slice/app.scope".into(), "/sys/fs/cgroup".into()))
        );
        assert_eq!(p.cpu, p.memory);
        // A group outside what the mount shows is not reachable.
        assert_eq!(plan("0::/system.slice\n", mounts), Plan::default());
        // No cgroup file system at all.
        assert_eq!(plan("0::/\n", "22 1 0:5 / /proc rw - proc proc rw\n"), Plan::default());
        // Junk and escapes do no harm.
        assert_eq!(plan("garbage\n::\n0::/../..\n", "x - y\n1 2 3 / /a\\040b rw - cgroup2 c rw\n"), Plan::default());
        let p = plan("0::/g\n", "1 2 3 / /a\\040b rw - cgroup2 c rw\n");
        assert_eq!(p.memory, Some(Place::V2("/a b/g".into(), "/a b".into())));
    }

    #[test]
    fn limits_become_each_versions_files() {
        let limits = Limits { mem_bytes: Some(64 << 20), cpus: Some(2) };
        let v1 = Place::V1("/m".into());
        let s = settings(&limits, Some(&v1), Some(&v1));
        assert_eq!(
            s,
            vec![
                (true, "memory.limit_in_bytes", "67108864".to_string()),
                (false, "cpu.cfs_period_us", "100000".to_string()),
                (false, "cpu.cfs_quota_us", "200000".to_string()),
            ]
        );
        let v2 = Place::V2("/u/g".into(), "/u".into());
        let s = settings(&limits, Some(&v2), Some(&v2));
        assert!(s.contains(&(true, "memory.max", "67108864".to_string())));
        assert!(s.contains(&(false, "cpu.max", "200000 100000".to_string())));
        assert!(settings(&Limits::default(), Some(&v1), Some(&v1)).is_empty());
        assert_eq!(group_name("lab", "r1"), "clonet-lab-r1");
    }
}
