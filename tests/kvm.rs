//! `kvm` nodes: QEMU machines on the clonet switch (TCG here: these tests
//! must pass where KVM does not work).
mod common;
use common::*;

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
// GSO super-frames from the ns TAP are cut for the kvm port (no offload).
assert(a.exec("iperf3 -s -D -1").ok, "iperf3 server in the guest");
sleep(300);
let sent = n.exec("iperf3 -c 10.1.0.1 -t 2 -J", #{ timeout_ms: 60000 });
assert(sent.ok, `iperf3 client: ${sent}`);
assert(parse_json(sent.stdout).end.sum_received.bytes > 1000000, "TCP crossed");
let c = sw.counters();
let from_ns = c.filter(|p| p.node == "n")[0];
let to_kvm = c.filter(|p| p.node == "a")[0];
assert(from_ns.rx_bytes / from_ns.rx_frames > 1514, "the ns TAP handed over GSO super-frames");
assert(to_kvm.tx_frames > from_ns.rx_frames, "the switch cut them into more, smaller frames");
assert(!("oversize" in to_kvm.drops) && !("gso_unsupported" in to_kvm.drops), `drops: ${to_kvm.drops}`);
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

/// A user's own root image, as a distribution's would be: an ext4 file
/// system with its own /sbin/init and no clonet agent.
fn foreign_root(sb: &Sandbox) -> std::path::PathBuf {
    let tree = sb.run_base().with_file_name("userroot");
    for d in ["bin", "sbin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh")).unwrap();
    let init = tree.join("sbin/init");
    std::fs::write(&init, "#!/bin/busybox sh\necho user-init > /etc/ran-by\nexec /bin/busybox sleep 2147483647\n")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let img = sb.run_base().with_file_name("user.img");
    let mkfs = std::process::Command::new("/usr/sbin/mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg("32M")
        .output()
        .unwrap();
    assert!(mkfs.status.success(), "{}", text(&mkfs.stderr));
    img
}

#[test]
fn a_user_image_is_never_written_and_a_killed_qemu_is_reported() {
    let sb = Sandbox::new();
    let mine = foreign_root(&sb);
    let before = std::fs::read(&mine).unwrap();
    let path = sb.write(
        "user.rhai",
        &format!(
            r#"
let k = node("k", #{{ kind: "kvm", image: "{}" }});
let a = node("a"); let b = node("b");
link(a, b, #{{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" }});
link(k, a, #{{ ip_a: "10.0.1.2/24", ip_b: "10.0.1.1/24" }});
assert(k.exec("cat /etc/ran-by").stdout == "user-init\n", "the image's own init ran");
assert(k.exec("echo data > /root/file && sync && cat /root/file").stdout == "data\n", "the disk takes writes");
assert(ping(a, "10.0.1.2"));
// The link's state reaches the machine's NIC.
get_link("k", "a").down();
assert(k.exec("cat /sys/class/net/eth0/carrier").stdout.trimmed() == "0", "no carrier while down");
get_link("k", "a").up();
assert(k.exec("cat /sys/class/net/eth0/carrier").stdout.trimmed() == "1", "carrier again");
// Paused, the machine does not answer; resumed, it does.
k.pause();
assert(!ping(a, "10.0.1.2"), "a paused machine does not answer");
k.resume();
assert(wait_until(|| ping(a, "10.0.1.2"), 10000), "it answers again");
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
    assert_nothing_left(&sb);
}

#[test]
fn bad_images_and_boot_timeouts_are_clear_errors_that_leave_nothing() {
    let sb = Sandbox::new();
    let corrupt = sb.run_base().with_file_name("corrupt.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.extend([0xffu8; 600]);
    std::fs::write(&corrupt, bytes).unwrap();
    let not_ext4 = sb.run_base().with_file_name("zeros.img");
    std::fs::write(&not_ext4, vec![0u8; 4 << 20]).unwrap();
    for (image, env, message) in [
        ("/nonexistent.qcow2", None, "no image at /nonexistent.qcow2".to_string()),
        (corrupt.to_str().unwrap(), None, format!("{}", corrupt.display())),
        (not_ext4.to_str().unwrap(), None, "cannot mount the root disk".to_string()),
        ("", Some("0.05"), "the guest agent did not answer within 50ms".to_string()),
    ] {
        let options = if image.is_empty() { String::new() } else { format!(", image: \"{image}\"") };
        let script =
            sb.write("bad.rhai", &format!("let k = node(\"k\", #{{ kind: \"kvm\"{options} }});\nk.exec(\"true\");\n"));
        let mut cmd = sb.clonet();
        if let Some(t) = env {
            cmd.env("CLONET_BOOT_TIMEOUT", t);
        }
        let out = cmd.arg("run").arg(&script).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{image}: {stderr}");
        assert!(stderr.contains("bad.rhai:") && stderr.contains("node \"k\" did not start"), "{image}: {stderr}");
        assert!(stderr.contains(&message), "{image}: expected {message:?} in {stderr}");
        assert_nothing_left(&sb);
    }
}
