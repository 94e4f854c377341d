//! Snapshots, clones and restore, for every node kind that has them.
mod common;
use common::*;

fn assert_nothing_left(sb: &Sandbox) {
    assert!(sb.run_dirs().is_empty(), "run directory (layers, COW files) left: {:?}", sb.run_dirs());
    let base = sb.run_base().to_string_lossy().to_string();
    assert!(eventually(5, || processes_matching(&base).is_empty()), "left: {:?}", processes_matching(&base));
    assert!(mounts_matching(&base).is_empty(), "mounts left: {:?}", mounts_matching(&base));
}

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

#[test]
fn uml_snapshots_clone_and_restore() {
    scenario("uml");
}

#[test]
fn kvm_snapshots_clone_and_restore() {
    scenario("kvm");
}
