//! Snapshots, clones and restore, for every node kind that has them.
mod common;
use common::*;

/// The snapshot scenario every kind must pass.
const SCENARIO: &str = r#"
let kind = KIND;
let a = node("a", #{ kind: kind });
a.exec("echo v1 > /root/f && sync");
let s = snapshot(a, "s1");
assert(s.bytes > 0, "the snapshot has a layer of its own");
// The clone has the file, its own hostname, and a MAC of its own.
let c = clone(s, "c");
assert(c.kind == kind, "same kind");
assert(c.exec("cat /root/f").stdout == "v1\n", "the file is in the clone");
assert(c.exec("hostname").stdout.trimmed() == "c", "a fresh hostname");
link(a, c, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
assert(a.ifaces[0].mac != c.ifaces[0].mac, "fresh MACs");
assert(ping(a, c), "both run side by side");
// Changes stay on their side.
c.exec("echo clone > /root/f && sync");
a.exec("echo orig > /root/f && sync");
assert(a.exec("cat /root/f").stdout == "orig\n", "the clone's change is not in the original");
assert(c.exec("cat /root/f").stdout == "clone\n", "the original's change is not in the clone");
// Restore reverts, and the node keeps its links.
restore(a, s);
assert(a.exec("cat /root/f").stdout == "v1\n", "restore reverts the change");
assert(ping(a, c), "the restored node keeps its link and address");
// A snapshot in use cannot go; once unused, it can.
let refused = false;
try { delete_snapshot("s1"); } catch (e) { refused = `${e}`.contains("is in use by a, c"); }
assert(refused, "deleting a snapshot in use fails clearly");
// Cloning a running node snapshots it implicitly.
let d = clone(a, "d");
assert(d.exec("cat /root/f").stdout == "v1\n");
assert(snapshots().filter(|x| x.name == "a-for-d").len() == 1, "the implicit snapshot is listed");
c.delete();
d.delete();
print("snapshot ok");
"#;

fn scenario(kind: &str) {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(&format!("snap-{kind}.rhai"), &SCENARIO.replace("KIND", &format!("{kind:?}")));
    assert!(stdout.contains("snapshot ok"), "{stdout}");
    assert_nothing_left(&sb);
}

/// The same scenario for every kind, run by an ordinary user: the lab in
/// its user namespace, the machines as the user.
#[test]
fn snapshots_clone_and_restore_as_an_ordinary_user() {
    let us = UserSandbox::new();
    for kind in ["ns", "uml", "kvm"] {
        let stdout = us.run_ok(&format!("snap-{kind}.rhai"), &SCENARIO.replace("KIND", &format!("{kind:?}")));
        assert!(stdout.contains("snapshot ok"), "{kind}: {stdout}");
    }
    us.assert_nothing_left();
}

#[test]
fn ns_snapshots_clone_and_restore() {
    scenario("ns");
}

#[test]
fn ns_roots_are_copy_on_write_over_the_host_or_a_rootfs() {
    let sb = Sandbox::new();
    // A tiny rootfs directory: busybox and its shell.
    let rootfs = sb.run_base().with_file_name("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "ls", "echo", "hostname"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/hosts"), "").unwrap();
    std::fs::write(rootfs.join("etc/marker"), "from the rootfs\n").unwrap();
    let before: Vec<_> = std::fs::read_dir(rootfs.join("etc")).unwrap().flatten().map(|e| e.file_name()).collect();
    let stdout = sb.run_ok(
        "cow.rhai",
        &format!(
            r#"
let a = node("a");
assert(a.exec("echo inside > /etc/clonet-test && cat /etc/clonet-test").stdout == "inside\n", "the node writes");
assert(!host_exec("test -e /etc/clonet-test").ok, "the host's / is untouched");
let r = node("r", #{{ rootfs: "{}" }});
assert(r.exec(["/bin/cat", "/etc/marker"]).stdout == "from the rootfs\n", "the rootfs is the node's /");
assert(r.exec(["/bin/sh", "-c", "echo x > /etc/new && rm /etc/marker && ls /etc"]).stdout == "hosts\nnew\n");
print("cow ok");
"#,
            rootfs.display()
        ),
    );
    assert!(stdout.contains("cow ok"), "{stdout}");
    assert!(!std::path::Path::new("/etc/clonet-test").exists());
    let after: Vec<_> = std::fs::read_dir(rootfs.join("etc")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(before, after, "the rootfs directory is untouched");
    assert_nothing_left(&sb);
}

#[test]
fn uml_snapshots_clone_and_restore() {
    scenario("uml");
}

#[test]
fn kvm_snapshots_clone_and_restore() {
    scenario("kvm");
}

#[test]
fn a_saved_lab_comes_back_with_the_same_topology_and_files() {
    let sb = Sandbox::new();
    let saved = sb.run_base().with_file_name("saved");
    let stdout = sb.run_ok(
        "mixed.rhai",
        &format!(
            r#"
let a = node("a");
let u = node("u", #{{ kind: "uml" }});
let k = node("k", #{{ kind: "kvm" }});
let sw = lan("sw");
link(a, u, #{{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24", mtu: 9000, iface_a: "up0" }});
link(a, sw, #{{ ip: "10.1.0.1/24", vlan: 7 }});
link(k, sw, #{{ ip: "10.1.0.3/24", vlan: 7 }});
a.set_ip("up0", "fd00::1/64");
a.add_route("10.9.0.0/24", #{{ via: "10.0.0.2" }});
for n in [a, u, k] {{ n.exec(`echo file-of-${{n.name}} > /root/saved && sync`); }}
let c = clone(a, "c");
c.exec("echo the-clone > /root/saved");
c.stop();
save_lab("{saved}");
print(topology());
"#,
            saved = saved.display()
        ),
    );
    let before = stdout.lines().last().unwrap().to_string();
    let check = sb.write(
        "check.rhai",
        r#"
for n in ["a", "u", "k"] { assert(get_node(n).exec("cat /root/saved").stdout.trimmed() == `file-of-${n}`, `files of ${n}`); }
assert(!get_node("c").running, "the stopped node is stopped");
get_node("c").start();
assert(get_node("c").exec("cat /root/saved").stdout == "the-clone\n", "the stopped clone's disk");
get_node("c").stop();
assert(ping(get_node("a"), get_node("u")), "the link works");
assert(ping(get_node("a"), "10.1.0.3"), "the LAN works");
print(topology());
"#,
    );
    let out = sb.clonet().args(["run", "--restore"]).arg(&saved).arg(&check).output().unwrap();
    let (after, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{after}{stderr}");
    assert!(stderr.contains("restored from"), "{stderr}");
    assert_eq!(after.lines().last().unwrap(), before, "the same topology, MACs included");
    // A directory that is not a saved lab is a clear error.
    let out = sb.clonet().args(["run", "--restore"]).arg(sb.run_base()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a saved lab"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&saved).unwrap();
    assert_nothing_left(&sb);
}

/// A btrfs file system in a loop-mounted image file, removed on drop.
struct LoopBtrfs {
    image: std::path::PathBuf,
    mount: std::path::PathBuf,
}

impl LoopBtrfs {
    fn new(sb: &Sandbox) -> LoopBtrfs {
        let image = sb.run_base().with_file_name("btrfs.img");
        let mount = sb.run_base().with_file_name("btrfs");
        std::fs::create_dir_all(&mount).unwrap();
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(256 << 20).unwrap();
        let mkfs = std::process::Command::new("mkfs.btrfs").arg("-q").arg(&image).output().unwrap();
        assert!(mkfs.status.success(), "mkfs.btrfs: {}", text(&mkfs.stderr));
        let m = std::process::Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount).output().unwrap();
        assert!(m.status.success(), "mount: {}", text(&m.stderr));
        LoopBtrfs { image, mount }
    }

    fn subvolumes(&self) -> String {
        let out = std::process::Command::new("btrfs").args(["subvolume", "list"]).arg(&self.mount).output().unwrap();
        text(&out.stdout)
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A busybox rootfs at `dir` and the btrfs scenario's script for it, with
/// `mount` the `CLONET_STORAGE_DIR` (on btrfs).
fn btrfs_scenario(dir: &std::path::Path, mount: &std::path::Path) -> String {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::write(rootfs.join("etc/hosts"), "").unwrap();
    let sh = |cmd: &str| format!("[\"/bin/busybox\", \"sh\", \"-c\", {cmd:?}]");
    format!(
        r#"
let a = node("a", #{{ rootfs: "{rootfs}" }});
assert(a.exec({fstype}).stdout.contains(" on / type btrfs"), "the root is on btrfs");
a.exec({write1});
let s = snapshot(a, "s1");
// A subvolume's root is inode 256.
print(host_exec("stat -c '%n %i' {mount}/clonet-btrfs/.snapshots/s1 {mount}/clonet-btrfs/a/upper").stdout);
let c = clone(s, "c");
assert(c.exec({read}).stdout == "v1\n", "the clone has the file");
c.exec({write2});
assert(a.exec({read}).stdout == "v1\n", "the original does not see the clone's change");
a.exec({write3});
restore(a, s);
assert(a.exec({read}).stdout == "v1\n", "restore reverts");
print("btrfs ok");
"#,
        rootfs = rootfs.display(),
        mount = mount.display(),
        fstype = sh("busybox mount"),
        write1 = sh("echo v1 > /root/f"),
        write2 = sh("echo c > /root/f"),
        write3 = sh("echo changed > /root/f"),
        read = sh("busybox cat /root/f"),
    )
}

/// What a btrfs scenario run must show, and leave.
fn assert_btrfs_scenario(out: &std::process::Output, fs: &LoopBtrfs, storage: &std::path::Path) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("btrfs ok"));
    assert!(
        stdout.contains("clonet-btrfs/.snapshots/s1 256") && stdout.contains("clonet-btrfs/a/upper 256"),
        "{stdout}"
    );
    assert_eq!(fs.subvolumes(), "", "no subvolume is left");
    assert!(std::fs::read_dir(storage).unwrap().next().is_none(), "the storage is empty again");
}

#[test]
fn on_btrfs_ns_roots_and_snapshots_are_subvolumes() {
    let sb = Sandbox::new();
    let fs = LoopBtrfs::new(&sb);
    let script = btrfs_scenario(sb.run_base().parent().unwrap(), &fs.mount);
    let path = sb.write("btrfs.rhai", &script);
    let out = sb.clonet().env("CLONET_STORAGE_DIR", &fs.mount).arg("run").arg(&path).output().unwrap();
    assert_btrfs_scenario(&out, &fs, &fs.mount);
    assert_nothing_left(&sb);
}

/// Without root, btrfs layers work where the file system lets a user
/// delete the subvolumes it makes (`user_subvol_rm_allowed`); elsewhere
/// they are refused, saying why and what to do, before any is made.
#[test]
fn on_btrfs_without_root_subvolumes_need_a_file_system_that_lets_users_delete_them() {
    let us = UserSandbox::new();
    let fs = LoopBtrfs::new(&us.sb);
    let storage = fs.mount.join("store");
    std::fs::create_dir(&storage).unwrap();
    nix::unistd::chown(&storage, Some(nix::unistd::Uid::from_raw(us.uid)), Some(nix::unistd::Gid::from_raw(us.uid)))
        .unwrap();
    let script = btrfs_scenario(&us.home, &storage);
    let path = us.write("btrfs.rhai", &script);
    let storage_dir = storage.display().to_string();
    let run = || us.clonet_with(&[("CLONET_STORAGE_DIR", &storage_dir)]).arg("run").arg(&path).output().unwrap();
    let refused = run();
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{}", text(&refused.stdout));
    assert!(
        stderr.contains("btrfs.rhai:2:")
            && stderr.contains("user_subvol_rm_allowed")
            && stderr.contains("unset CLONET_STORAGE_DIR"),
        "{stderr}"
    );
    assert_eq!(fs.subvolumes(), "", "nothing was made");
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,user_subvol_rm_allowed"])
        .arg(&fs.mount)
        .output()
        .unwrap();
    assert!(remount.status.success(), "{}", text(&remount.stderr));
    assert_btrfs_scenario(&run(), &fs, &storage);
    us.assert_nothing_left();
}

#[test]
fn kvm_memory_snapshots_resume_where_they_were() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "mem.rhai",
        r#"
let k = node("k", #{ kind: "kvm" });
let n = node("n");
link(n, k, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
k.exec("echo before > /tmp/in-ram; sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/pid");
let s = snapshot(k, "live", #{ memory: true });
k.exec("echo after > /tmp/in-ram; kill $(cat /tmp/pid)");
restore(k, s);
assert(k.exec("cat /tmp/in-ram").stdout == "before\n", "RAM (a tmpfs) is back");
assert(k.exec("kill -0 $(cat /tmp/pid)").ok, "the killed process runs again");
assert(ping(n, k), "the network goes on");
// The machine's devices must be the same as then.
let sw = lan("sw");
link(k, sw);
let refused = false;
try { restore(k, s); } catch (e) { refused = `${e}`.contains("with the interfaces it had then"); }
assert(refused, "a different set of NICs is refused clearly");
print("memory ok");
"#,
    );
    assert!(stdout.contains("memory ok"), "{stdout}");
    assert_nothing_left(&sb);
}
