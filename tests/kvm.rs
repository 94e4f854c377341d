//! `kvm` nodes: QEMU machines on the clonet switch (TCG here: these tests
//! must pass where KVM does not work).
mod common;
use common::*;

fn assert_nothing_left(sb: &Sandbox) {
    assert!(sb.run_dirs().is_empty(), "run directory (sockets, overlays) left: {:?}", sb.run_dirs());
    let base = sb.run_base().to_string_lossy().to_string();
    assert!(
        eventually(5, || processes_matching(&base).is_empty()),
        "QEMU or UML processes left: {:?}",
        processes_matching(&base)
    );
}

#[test]
fn kvm_nodes_ping_share_a_lan_with_every_kind_take_new_nics_and_return_large_output() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "kvm.rhai",
        r#"
let a = node("a", #{ kind: "kvm" });
let b = node("b", #{ kind: "kvm", mem: 160, cpus: 1 });
let u = node("u", #{ kind: "uml" });
let n = node("n");
print(`accel: ${a.info().detail}`);
assert(a.info().detail.starts_with("accel="), "the acceleration is shown");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
assert(ping(a, b), "two kvm nodes ping each other");
// A second NIC, hot-added to each running machine, on a LAN with a uml and an ns node.
let sw = lan("sw");
let all = [a, b, u, n];
for i in 0..all.len() { link(all[i], sw, #{ ip: `10.1.0.${i + 1}/24` }); }
assert(a.exec("ls /sys/class/net").stdout.contains("eth1"), "the hot-added NIC is eth1");
for i in 0..all.len() {
    for j in 0..all.len() {
        if i != j { assert(ping(all[i], `10.1.0.${j + 1}`), `${all[i].name} -> ${all[j].name}`); }
    }
}
// Large binary output, intact.
let r = a.exec("dd if=/dev/urandom bs=1000 count=300 2>/dev/null | tee /tmp/blob");
assert(r.ok && r.stdout_bytes.len() == 300000, `got ${r.stdout_bytes.len()} bytes`);
assert(a.exec("cat /tmp/blob").stdout_bytes == r.stdout_bytes, "the same bytes twice");
// Hot-remove: the NIC leaves the guest.
unlink(a, sw);
assert(!a.exec("ls /sys/class/net").stdout.contains("eth1"), "the NIC is unplugged");
assert(ping(b, "10.1.0.4"), "the rest goes on");
print("kvm ok");
"#,
    );
    assert!(stdout.contains("kvm ok"), "{stdout}");
    assert!(stdout.contains("accel: accel=tcg") || stdout.contains("accel: accel=kvm"), "{stdout}");
    assert_nothing_left(&sb);
}

#[test]
fn a_user_image_is_never_written_and_a_killed_qemu_is_reported() {
    let sb = Sandbox::new();
    // The user's image: a copy of clonet's own kvm disk (built on first use).
    let prep = sb.run_ok("prep.rhai", "let v = node(\"v\", #{ kind: \"kvm\" });\nv.exec(\"true\");\n");
    assert!(prep.is_empty(), "{prep}");
    let disk = sb.data_dir().join("images/kvm-busybox.qcow2");
    let mine = sb.run_base().with_file_name("mine.qcow2");
    std::fs::copy(&disk, &mine).unwrap();
    let before = std::fs::read(&mine).unwrap();
    let path = sb.write(
        "user.rhai",
        &format!(
            r#"
let k = node("k", #{{ kind: "kvm", image: "{}" }});
let a = node("a"); let b = node("b");
link(a, b, #{{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" }});
link(k, a, #{{ ip_a: "10.0.1.2/24", ip_b: "10.0.1.1/24" }});
assert(k.exec("echo data > /root/file && sync && cat /root/file").stdout == "data\n", "the disk takes writes");
assert(ping(a, "10.0.1.2"));
host_exec(`kill -9 ${{k.pid}}`);
sleep(300);
assert(ping(a, b), "the switch and the other nodes go on");
assert(!k.running, "the dead node is marked stopped");
print("fault ok");
"#,
            mine.display()
        ),
    );
    let out = sb.clonet().arg("run").arg(&path).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("fault ok"));
    assert!(stderr.contains("clonet: node k died"), "the event is printed: {stderr}");
    assert!(std::fs::read(&mine).unwrap() == before, "the user's image changed");
    let _ = std::fs::remove_file(&mine);
    assert_nothing_left(&sb);
}
