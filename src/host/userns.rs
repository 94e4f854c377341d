//! The lab's user namespace: how clonet runs a lab without root.
//!
//! Run by an ordinary user, a lab's engine (`clonet run`, `repl`, `serve`,
//! `test`, `exercise`, `bench`) moves itself, first thing in `main` while
//! it has one thread, into a user namespace of its own (with a mount
//! namespace of its own), where it is root: it may then make the nodes'
//! network, mount and PID namespaces, their TAPs and their copy-on-write
//! roots as it does when run by root, while on the host it holds no more
//! than the user does. It stays the process the user started: signals,
//! exit status and `clonet clean` are unchanged.
//!
//! - **Ids.** Root inside is the user outside. Where `/etc/subuid` and
//!   `/etc/subgid` give the user a range, ids 1… inside are that range
//!   (mapped by Debian's `newuidmap`/`newgidmap`, set-uid programs for
//!   exactly this), so programs that switch users work; otherwise the
//!   user's own ids are mapped alone.
//! - **How.** A process in a new user namespace cannot map its own ids
//!   beyond its own uid, and cannot run `newuidmap` on itself from inside.
//!   So before it unshares, the engine starts `clonet __map-ids` (still
//!   outside), unshares, says `ready`, and waits while the helper writes
//!   its maps and says `go` ([`enter`], [`map_ids_main`]).
//!
//! The maps and the subordinate ranges are computed sans-IO
//! ([`subordinate_range`], [`lab_maps`], [`parse_map`]).
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;

use nix::sched::CloneFlags;

/// Set in the engine's environment once it runs in its lab namespace.
pub const INSIDE_ENV: &str = "CLONET_LAB_USERNS";

/// One line of a `uid_map` or `gid_map`: `count` ids from `inside` in the
/// namespace are `outside` on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The first range `/etc/subuid` (or `subgid`) text gives the user named
/// `name` with id `id` (lines `USER:START:COUNT`, USER a name or a number).
pub fn subordinate_range(text: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    text.lines().filter(|l| !l.trim_start().starts_with('#')).find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?.parse().ok()?, f.next()?.parse::<u32>().ok()?);
        ((who == name || who.parse() == Ok(id)) && count > 0 && f.next().is_none()).then_some((start, count))
    })
}

/// The lab namespace's map for the user's `id` and subordinate range:
/// root inside is the user; ids 1… are the range, if any.
pub fn lab_maps(id: u32, subordinate: Option<(u32, u32)>) -> Vec<IdRange> {
    let mut map = vec![IdRange { inside: 0, outside: id, count: 1 }];
    if let Some((start, count)) = subordinate {
        map.push(IdRange { inside: 1, outside: start, count });
    }
    map
}

/// A map as one argument of `__map-ids`: `INSIDE:OUTSIDE:COUNT,…`.
pub fn render_map(map: &[IdRange]) -> String {
    map.iter().map(|r| format!("{}:{}:{}", r.inside, r.outside, r.count)).collect::<Vec<_>>().join(",")
}

/// The map `render_map` wrote.
pub fn parse_map(text: &str) -> Option<Vec<IdRange>> {
    text.split(',')
        .map(|r| {
            let n: Vec<u32> = r.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
            let [inside, outside, count] = n[..] else { return None };
            Some(IdRange { inside, outside, count })
        })
        .collect()
}

/// Whether this process runs in a user namespace other than the host's:
/// its `uid_map` is not the identity on every id.
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// Why a lab cannot run in a user namespace here.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("cannot make a user namespace ({0}); the kernel may forbid them to users (sysctl kernel.unprivileged_userns_clone, or an AppArmor policy): run clonet as root, or allow them")]
    Unshare(nix::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("mapping the lab's ids: {0}")]
    Map(String),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> UsernsError + '_ {
    move |source| UsernsError::Io { what: what.to_string(), source }
}

/// Moves this process (which must have one thread) into a new user and
/// mount namespace where it is root, its ids mapped as the module says.
pub fn enter() -> Result<(), UsernsError> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let user = nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name).unwrap_or_default();
    let group = nix::unistd::Group::from_gid(gid).ok().flatten().map(|g| g.name).unwrap_or_default();
    let range = |file: &str, name: &str, id: u32| {
        std::fs::read_to_string(file).ok().and_then(|t| subordinate_range(&t, name, id))
    };
    let (sub_uid, sub_gid) = (range("/etc/subuid", &user, uid.as_raw()), range("/etc/subgid", &group, gid.as_raw()));
    // A subordinate range helps only when both exist and the tools do.
    let (sub_uid, sub_gid) = match (sub_uid, sub_gid) {
        (Some(u), Some(g)) if super::on_path("newuidmap") && super::on_path("newgidmap") => (Some(u), Some(g)),
        _ => (None, None),
    };
    let (uid_map, gid_map) = (lab_maps(uid.as_raw(), sub_uid), lab_maps(gid.as_raw(), sub_gid));
    let (helper_reads, we_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("a pipe")(e.into()))?;
    let (we_read, helper_writes) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("a pipe")(e.into()))?;
    let mut helper = std::process::Command::new("/proc/self/exe")
        .arg("__map-ids")
        .arg(std::process::id().to_string())
        .arg(render_map(&uid_map))
        .arg(render_map(&gid_map))
        .stdin(Stdio::from(helper_reads))
        .stdout(Stdio::from(helper_writes))
        .spawn()
        .map_err(io("starting clonet __map-ids"))?;
    let result = unshare_and_wait(we_write, we_read);
    let _ = helper.wait();
    result?;
    std::env::set_var(INSIDE_ENV, "1");
    // Now, before the lab mounts anything: every mount seen is inherited.
    super::split_root::remember_host_top();
    Ok(())
}

fn unshare_and_wait(to_helper: OwnedFd, from_helper: OwnedFd) -> Result<(), UsernsError> {
    let mut to_helper = std::fs::File::from(to_helper);
    // On failure the helper sees its pipe close and exits.
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(UsernsError::Unshare)?;
    to_helper.write_all(b"ready\n").map_err(io("telling clonet __map-ids"))?;
    drop(to_helper);
    let mut answer = String::new();
    BufReader::new(std::fs::File::from(from_helper)).read_line(&mut answer).map_err(io("waiting for the id maps"))?;
    match answer.trim() {
        "go" => Ok(()),
        "" => Err(UsernsError::Map("clonet __map-ids ended without a word".into())),
        why => Err(UsernsError::Map(why.to_string())),
    }
}

/// `clonet __map-ids PID UID_MAP GID_MAP`: waits for `ready` on stdin,
/// writes the maps of process PID (which has just made its user
/// namespace), and says `go`, or why not, on stdout.
pub fn map_ids_main(pid: u32, uid_map: &str, gid_map: &str) -> i32 {
    let mut ready = String::new();
    if std::io::stdin().read_line(&mut ready).is_err() || ready.trim() != "ready" {
        return 1;
    }
    let answer = match (parse_map(uid_map), parse_map(gid_map)) {
        (Some(u), Some(g)) => write_maps(pid, &u, &g).map(|()| "go".to_string()).unwrap_or_else(|e| e.to_string()),
        _ => "bad maps".to_string(),
    };
    let _ = writeln!(std::io::stdout(), "{answer}");
    i32::from(answer != "go")
}

/// Writes the maps: a map of the user's own id alone directly (the kernel
/// allows that once `setgroups` is denied), anything more through the
/// set-uid `newuidmap` and `newgidmap`, which check `/etc/subuid`.
fn write_maps(pid: u32, uid_map: &[IdRange], gid_map: &[IdRange]) -> Result<(), UsernsError> {
    if uid_map.len() == 1 && gid_map.len() == 1 {
        let write = |file: &str, text: String| std::fs::write(format!("/proc/{pid}/{file}"), text).map_err(io(file));
        let line = |r: &IdRange| format!("{} {} {}\n", r.inside, r.outside, r.count);
        write("uid_map", line(&uid_map[0]))?;
        write("setgroups", "deny".into())?;
        return write("gid_map", line(&gid_map[0]));
    }
    for (tool, map) in [("newuidmap", uid_map), ("newgidmap", gid_map)] {
        let mut cmd = std::process::Command::new(tool);
        cmd.arg(pid.to_string());
        for r in map {
            cmd.args([r.inside.to_string(), r.outside.to_string(), r.count.to_string()]);
        }
        let out = cmd.output().map_err(io(tool))?;
        if !out.status.success() {
            return Err(UsernsError::Map(format!("{tool}: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_subordinate_range_is_found_by_name_or_number() {
        let text = "# ranges\nalice:100000:65536\n1001:165536:65536\nbad line\ncarol:x:1\n";
        assert_eq!(subordinate_range(text, "alice", 1000), Some((100000, 65536)));
        assert_eq!(subordinate_range(text, "bob", 1001), Some((165536, 65536)));
        assert_eq!(subordinate_range(text, "carol", 1002), None);
        assert_eq!(subordinate_range(text, "dave", 1003), None);
        assert_eq!(subordinate_range("alice:1:0\n", "alice", 1000), None, "an empty range is none");
    }

    #[test]
    fn root_inside_is_the_user_and_the_range_follows() {
        assert_eq!(lab_maps(1000, None), [IdRange { inside: 0, outside: 1000, count: 1 }]);
        assert_eq!(
            lab_maps(1000, Some((100000, 65536))),
            [IdRange { inside: 0, outside: 1000, count: 1 }, IdRange { inside: 1, outside: 100000, count: 65536 }]
        );
        let map = lab_maps(1000, Some((100000, 65536)));
        assert_eq!(render_map(&map), "0:1000:1,1:100000:65536");
        assert_eq!(parse_map(&render_map(&map)), Some(map));
        for bad in ["", "0:1", "0:1:2:3", "a:b:c", "0:1:1,"] {
            assert_eq!(parse_map(bad), None, "{bad:?}");
        }
    }
}
