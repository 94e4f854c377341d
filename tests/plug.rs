//! Plugs: programs clonet did not start join a LAN and ping a clonet node.
//! Each is started by the test with its own command line: QEMU by stream
//! then by datagram, UML by its bess transport, and `vde_plug2tap` into a
//! TAP of a network namespace the test makes. After each: the plug port's
//! counters and a capture on it; garbage on each socket type is dropped
//! and counted while the LAN goes on. Traffic stays on the lab's LAN and
//! the test's namespace; every wait is bounded.
mod common;
use std::path::{Path, PathBuf};

use common::*;

/// A guest that takes its address from the kernel command line
/// (`foreign.ip=CIDR`) and waits: clonet's kvm initramfs (busybox and the
/// virtio modules) with this `/init` laid over its own. UML boots it too
/// (`initrd=`), where the NIC is `vec0` and the modules do not load.
const FOREIGN_INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev
for m in $(busybox cat /modules.order 2>/dev/null); do busybox insmod "$m" 2>/dev/null; done
for arg in $(busybox cat /proc/cmdline); do
    case "$arg" in foreign.ip=*) ip="${arg#foreign.ip=}" ;; esac
done
i=0
while [ $i -lt 200 ]; do
    dev=$(busybox ls /sys/class/net | busybox grep -v '^lo$' | busybox head -n 1)
    [ -n "$dev" ] && break
    busybox usleep 50000; i=$((i+1))
done
busybox ip addr add "$ip" dev "$dev"
busybox ip link set "$dev" up
echo "foreign-guest-up $dev $ip"
exec busybox sleep 100000
"#;

/// Rhai, put before each scenario: with a plug's first client there, a
/// capture on its port while `n` pings `addr` again, and its counters.
const PORT_CHECKS: &str = r#"
fn port_checks(key, plug, n, addr, pcap) {
    let cap = capture(plug.clients[0], pcap);
    print(`${key}-again ${ping(n, addr)}`);
    print(`${key}-captured ${cap.stop().frames}`);
    let c = plug.clients[0].counters()[0];
    print(`${key}-counted ${c.rx_frames > 0 && c.tx_frames > 0}`);
}
"#;

/// Builds clonet's images in the sandbox, and the foreign guest's
/// initramfs beside them: (kernel, initramfs).
fn foreign_guest(data_dir: &Path, clonet: &mut std::process::Command, out: &Path) -> (PathBuf, PathBuf) {
    let built = clonet.args(["image", "build"]).output().unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    let images = data_dir.join("images");
    let mut initrd = std::fs::read(images.join("kvm-busybox.initrd")).unwrap();
    use clonet::image::kvm::{cpio_newc, CpioEntry};
    // A second archive after the first: the kernel unpacks both, and this
    // `/init` replaces clonet's.
    initrd.extend(cpio_newc(&[CpioEntry::File("init", FOREIGN_INIT.as_bytes(), 0o755)]));
    let path = out.join("foreign.initrd");
    std::fs::write(&path, initrd).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    (images.join("kvm-busybox.vmlinuz"), path)
}

/// Kills what a test started by its pid files, whatever happened.
struct Reaper(Vec<PathBuf>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for f in &self.0 {
            if let Ok(pid) = std::fs::read_to_string(f).map(|s| s.trim().parse::<i32>().unwrap_or(0)) {
                if pid > 0 {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }
}

/// A QEMU the test starts with its own command line, booting the foreign
/// guest with `netdev` (and its pid in `pidfile`).
fn qemu_line(kernel: &Path, initrd: &Path, ip: &str, netdev: &str, pidfile: &Path, log: &Path) -> String {
    format!(
        "setsid qemu-system-x86_64 -accel tcg -m 128 -nographic -no-reboot -pidfile {pid} \
         -kernel {k} -initrd {i} -append 'console=ttyS0 quiet foreign.ip={ip}' \
         -netdev {netdev} -device virtio-net-pci,netdev=n0 < /dev/null > {log} 2>&1 &",
        pid = pidfile.display(),
        k = kernel.display(),
        i = initrd.display(),
        log = log.display(),
    )
}

#[test]
fn qemu_guests_join_by_stream_then_by_datagram_and_ping_a_node() {
    let sb = Sandbox::new();
    let dir = sb.dir.path().to_path_buf();
    let (kernel, initrd) = foreign_guest(&sb.data_dir(), &mut sb.clonet(), &dir);
    let (pid1, pid2) = (dir.join("qemu1.pid"), dir.join("qemu2.pid"));
    let _reaper = Reaper(vec![pid1.clone(), pid2.clone()]);
    let stream = qemu_line(
        &kernel,
        &initrd,
        "10.9.0.5/24",
        &format!("stream,id=n0,server=off,addr.type=unix,addr.path={}/vm.sock", dir.display()),
        &pid1,
        &dir.join("qemu1.log"),
    );
    let dgram = qemu_line(
        &kernel,
        &initrd,
        "10.9.0.8/24",
        &format!(
            "dgram,id=n0,local.type=unix,local.path={d}/vm2.sock,remote.type=unix,remote.path={d}/dgram.sock",
            d = dir.display()
        ),
        &pid2,
        &dir.join("qemu2.log"),
    );
    let d = dir.display();
    let stdout = sb.run_ok(
        "qemu.rhai",
        &format!(
            r#"{PORT_CHECKS}
let sw = lan("sw");
let n = node("n");
link(n, sw, #{{ ip: "10.9.0.2/24" }});
let vm = sw.plug(#{{ protocol: "qemu", path: "{d}/vm.sock" }});
host_exec("{stream}");
print(`stream-joined ${{vm.wait_clients(1, 30000)}}`);
print(`stream-pinged ${{wait_until(|| ping(n, "10.9.0.5"), 90000)}}`);
print(`stream-port ${{vm.clients[0].name}}`);
port_checks("stream", vm, n, "10.9.0.5", "{d}/stream.pcap");
print(`stream-peer ${{vm.info().plug.clients[0].peer}}`);
// A client out of step: cut off and counted; the guest goes on.
host_exec("echo garbage-garbage | socat -t 1 - UNIX-CONNECT:{d}/vm.sock");
print(`stream-garbage ${{wait_until(|| vm.info().plug.garbage == 1, 10000)}}`);
print(`stream-still ${{ping(n, "10.9.0.5")}}`);
host_exec("kill $(cat {d}/qemu1.pid)");
print(`stream-left ${{wait_until(|| vm.clients.len() == 0, 10000)}}`);

let dg = plug(sw, #{{ protocol: "qemu-dgram", path: "{d}/dgram.sock", name: "dg" }});
host_exec("{dgram}");
print(`dgram-joined ${{dg.wait_clients(1, 90000)}}`);
print(`dgram-pinged ${{wait_until(|| ping(n, "10.9.0.8"), 90000)}}`);
port_checks("dgram", dg, n, "10.9.0.8", "{d}/dgram.pcap");
// A runt from a named socket: a client whose frame is dropped and
// counted; a datagram with no address to answer: refused.
host_exec("printf abc | socat - UNIX-SENDTO:{d}/dgram.sock,bind={d}/junk.sock");
host_exec("printf abc | socat - UNIX-SENDTO:{d}/dgram.sock");
print(`dgram-dropped ${{wait_until(|| dg.info().plug.dropped >= 1 && dg.info().plug.refused >= 1, 10000)}}`);
print(`dgram-refusal ${{dg.info().plug.last_refusal}}`);
print(`dgram-still ${{ping(n, "10.9.0.8")}}`);
host_exec("kill $(cat {d}/qemu2.pid)");
print(`net ${{topology().nodes.dg.kind}}`);
"#
        ),
    );
    for key in ["stream-joined", "stream-pinged", "stream-again", "stream-counted", "stream-garbage", "stream-still"] {
        assert_eq!(printed(&stdout, key), ["true"], "{key}: {stdout}");
    }
    assert_eq!(printed(&stdout, "stream-left"), ["true"], "the client went when QEMU did: {stdout}");
    assert_eq!(printed(&stdout, "stream-port"), ["plug1:c1"], "{stdout}");
    assert!(printed(&stdout, "stream-peer")[0].contains("qemu-system-x86"), "who the client is: {stdout}");
    for key in ["dgram-joined", "dgram-pinged", "dgram-again", "dgram-counted", "dgram-dropped", "dgram-still"] {
        assert_eq!(printed(&stdout, key), ["true"], "{key}: {stdout}");
    }
    assert!(stdout.contains("no address to answer"), "why the unnamed sender was refused: {stdout}");
    assert_eq!(printed(&stdout, "net"), ["plug"], "{stdout}");
    for (pcap, guest) in [("stream.pcap", "10.9.0.5"), ("dgram.pcap", "10.9.0.8")] {
        let frames: u64 = printed(&stdout, &format!("{}-captured", &pcap[..pcap.len() - 5]))[0].parse().unwrap();
        assert!(frames >= 2, "{pcap}: {stdout}");
        let out = std::process::Command::new("tshark")
            .args(["-r", dir.join(pcap).to_str().unwrap(), "-Y", "icmp.type == 0", "-T", "fields", "-e", "ip.src"])
            .output()
            .unwrap();
        assert!(text(&out.stdout).contains(guest), "{pcap} holds the guest's echo replies: {}", text(&out.stdout));
    }
    // The plugs' sockets went with the lab; QEMU's own files stay its own.
    for sock in ["vm.sock", "dgram.sock"] {
        assert!(!dir.join(sock).exists(), "{sock} removed");
    }
}

#[test]
fn a_uml_guest_and_vde_plug2tap_in_a_test_namespace_ping_a_node() {
    let sb = Sandbox::new();
    let dir = sb.dir.path().to_path_buf();
    let (_kernel, initrd) = foreign_guest(&sb.data_dir(), &mut sb.clonet(), &dir);
    let netns = format!("clonet-plugtest-{}", std::process::id());
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "pids", &self.0]).output().map(|o| {
                for pid in text(&o.stdout).split_whitespace() {
                    let _ = std::process::Command::new("kill").args(["-9", pid]).status();
                }
            });
            let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _ns = Netns(netns.clone());
    let _reaper = Reaper(vec![dir.join("uml.pid")]);
    let d = dir.display();
    let stdout = sb.run_ok(
        "uml.rhai",
        &format!(
            r#"{PORT_CHECKS}
let sw = lan("sw");
let n = node("n");
link(n, sw, #{{ ip: "10.9.0.2/24" }});
let u = sw.plug(#{{ protocol: "uml", path: "{d}/uml.sock", name: "u" }});
host_exec("setsid linux.uml mem=64M initrd={initrd} rdinit=/init umid=plugtest uml_dir={d} foreign.ip=10.9.0.6/24 vec0:transport=bess,dst={d}/uml.sock,depth=64 con=null con0=null,fd:1 < /dev/null > {d}/uml.log 2>&1 & echo $! > {d}/uml.pid");
print(`uml-joined ${{u.wait_clients(1, 30000)}}`);
print(`uml-pinged ${{wait_until(|| ping(n, "10.9.0.6"), 60000)}}`);
port_checks("uml", u, n, "10.9.0.6", "{d}/uml.pcap");
// A seqpacket client that sends a runt: counted and dropped, then gone.
host_exec("(printf abc; sleep 0.5) | socat - UNIX-CONNECT:{d}/uml.sock,type=5");
print(`uml-dropped ${{wait_until(|| u.info().plug.dropped >= 1 && u.clients.len() == 1, 10000)}}`);
print(`uml-still ${{ping(n, "10.9.0.6")}}`);
host_exec("kill $(cat {d}/uml.pid)");
print(`uml-left ${{wait_until(|| u.clients.len() == 0, 10000)}}`);

let v = sw.plug(#{{ protocol: "vde", path: "{d}/vde", name: "v" }});
host_exec("ip netns add {netns} && ip netns exec {netns} vde_plug2tap -d -s {d}/vde tapv0");
print(`vde-joined ${{v.wait_clients(1, 10000)}}`);
host_exec("ip netns exec {netns} ip addr add 10.9.0.7/24 dev tapv0 && ip netns exec {netns} ip link set tapv0 up");
print(`vde-pinged ${{wait_until(|| ping(n, "10.9.0.7"), 10000)}}`);
print(`vde-from-ns ${{host_exec("ip netns exec {netns} ping -c 1 -W 2 10.9.0.2").ok}}`);
port_checks("vde", v, n, "10.9.0.7", "{d}/vde.pcap");
print(`vde-peer ${{v.info().plug.clients[0].peer}}`);
// Garbage on the control socket: refused, and said why.
host_exec("echo garbage | socat -t 1 - UNIX-CONNECT:{d}/vde/ctl");
print(`vde-refused ${{wait_until(|| v.info().plug.refused == 1, 10000)}}`);
print(`vde-refusal ${{v.info().plug.last_refusal}}`);
print(`vde-still ${{ping(n, "10.9.0.7")}}`);
host_exec("ip netns exec {netns} pkill vde_plug2tap");
print(`vde-left ${{wait_until(|| v.clients.len() == 0, 10000)}}`);
"#,
            initrd = initrd.display()
        ),
    );
    for key in [
        "uml-joined",
        "uml-pinged",
        "uml-again",
        "uml-counted",
        "uml-dropped",
        "uml-still",
        "uml-left",
        "vde-joined",
        "vde-pinged",
        "vde-from-ns",
        "vde-again",
        "vde-counted",
        "vde-refused",
        "vde-still",
        "vde-left",
    ] {
        assert_eq!(printed(&stdout, key), ["true"], "{key}: {stdout}");
    }
    assert!(printed(&stdout, "vde-peer")[0].contains("vde_plug2tap"), "{stdout}");
    assert!(stdout.contains("not a VDE request"), "{stdout}");
    for pcap in ["uml", "vde"] {
        let frames: u64 = printed(&stdout, &format!("{pcap}-captured"))[0].parse().unwrap();
        assert!(frames >= 2, "{pcap}: {stdout}");
    }
    assert!(!dir.join("uml.sock").exists() && !dir.join("vde").exists(), "the plugs' files are gone");
}

#[test]
fn a_plug_after_sigkill_is_removed_by_clean_and_an_existing_path_is_refused() {
    let sb = Sandbox::new();
    let dir = sb.dir.path().to_path_buf();
    std::fs::write(dir.join("taken"), b"not clonet's").unwrap();
    let d = dir.display();
    let stdout = sb.run_ok(
        "taken.rhai",
        &format!(
            r#"
let sw = lan("sw");
try {{ sw.plug(#{{ protocol: "qemu", path: "{d}/taken" }}); }} catch (e) {{ print(`refused ${{e}}`); }}
try {{ sw.plug(#{{ protocol: "qemu", path: "relative.sock" }}); }} catch (e) {{ print(`relative ${{e}}`); }}
try {{ sw.plug(#{{ protocol: "tap", path: "{d}/x" }}); }} catch (e) {{ print(`protocol ${{e}}`); }}
"#
        ),
    );
    assert!(stdout.contains("refused") && stdout.contains("exists"), "{stdout}");
    assert_eq!(std::fs::read(dir.join("taken")).unwrap(), b"not clonet's", "what was there is untouched");
    assert!(stdout.contains("relative") && stdout.contains("absolute"), "{stdout}");
    assert!(stdout.contains("protocol") && stdout.contains("qemu, qemu-dgram, uml or vde"), "{stdout}");

    let lab = serve(
        &sb,
        "killed",
        &format!(
            r#"
let sw = lan("sw");
sw.plug(#{{ protocol: "vde", path: "{d}/vde" }});
sw.plug(#{{ protocol: "uml", path: "{d}/uml.sock" }});
"#
        ),
        false,
    );
    assert!(dir.join("vde/ctl").exists() && dir.join("uml.sock").exists());
    let pid = nix::unistd::Pid::from_raw(lab.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(lab);
    assert!(dir.join("uml.sock").exists(), "a killed lab leaves its sockets");
    let clean = sb.clonet().arg("clean").output().unwrap();
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    assert!(!dir.join("uml.sock").exists() && !dir.join("vde").exists(), "clean removed them");
    assert_nothing_left(&sb);
}

#[test]
fn a_user_without_root_plugs_a_uml_guest_into_a_lan() {
    let user = UserSandbox::with_subordinate_ids();
    let dir = user.home.clone();
    let (_kernel, initrd) = foreign_guest(&dir.join("data"), &mut user.clonet(), &dir);
    let _reaper = Reaper(vec![dir.join("uml.pid")]);
    let d = dir.display();
    let stdout = user.run_ok(
        "uml.rhai",
        &format!(
            r#"
let sw = lan("sw");
let n = node("n");
link(n, sw, #{{ ip: "10.9.0.2/24" }});
let u = sw.plug(#{{ protocol: "uml", path: "{d}/uml.sock" }});
host_exec("setsid linux.uml mem=64M initrd={initrd} rdinit=/init umid=plugtest-user uml_dir={d} foreign.ip=10.9.0.6/24 vec0:transport=bess,dst={d}/uml.sock,depth=64 con=null con0=null,fd:1 < /dev/null > {d}/uml.log 2>&1 & echo $! > {d}/uml.pid");
print(`joined ${{u.wait_clients(1, 30000)}}`);
print(`pinged ${{wait_until(|| ping(n, "10.9.0.6"), 60000)}}`);
print(`counted ${{u.clients[0].counters()[0].rx_frames > 0}}`);
host_exec("kill $(cat {d}/uml.pid)");
print(`left ${{wait_until(|| u.clients.len() == 0, 10000)}}`);
"#,
            initrd = initrd.display()
        ),
    );
    for key in ["joined", "pinged", "counted", "left"] {
        assert_eq!(printed(&stdout, key), ["true"], "{key}: {stdout}");
    }
    assert!(!dir.join("uml.sock").exists(), "the plug removed its socket");
    user.assert_nothing_left();
}

#[test]
fn plugs_show_in_events_topology_saved_scripts_graphs_and_saved_labs() {
    let sb = Sandbox::new();
    let dir = sb.dir.path().to_path_buf();
    let d = dir.display();
    // A watcher sees the plug made and its client join and leave the LAN.
    let lab = serve(
        &sb,
        "seen",
        &format!(
            r#"
let sw = lan("sw");
link(node("n"), sw, #{{ ip: "10.9.0.2/24" }});
sw.plug(#{{ protocol: "uml", path: "{d}/seen.sock", name: "vms" }});
"#
        ),
        false,
    );
    let mut watcher = Raw::connect(&lab.socket);
    let mut seen = Vec::new();
    watcher.send(r#"{"id":1,"watch":true}"#);
    assert_eq!(watcher.answer(1, &mut seen)["ok"]["reply"], "done");
    let mut client = std::process::Command::new("socat")
        .args(["-u", "EXEC:sleep 30", &format!("UNIX-CONNECT:{d}/seen.sock,type=5")])
        .spawn()
        .unwrap();
    assert!(watcher.event_where(&mut seen, |e| e["event"] == "lan_joined" && e["port"] == "vms:c1"));
    watcher.send(r#"{"id":2,"command":{"op":"topology"}}"#);
    let topo = watcher.answer(2, &mut seen);
    let vms = &topo["ok"]["nodes"]["vms"];
    assert_eq!(vms["kind"], "plug", "{topo}");
    assert_eq!(vms["options"]["plug"]["protocol"], "uml", "{topo}");
    assert_eq!(vms["ifaces"][0]["name"], "c1", "{topo}");
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(watcher.event_where(&mut seen, |e| e["event"] == "lan_left" && e["port"] == "vms:c1"));
    drop(lab);

    // :save writes the plug (not its clients), graphs draw it, and a
    // saved lab brings it back listening.
    let script = format!(
        r#"
let sw = lan("sw");
let n = node("n");
link(n, sw, #{{ ip: "10.9.0.2/24" }});
let p = sw.plug(#{{ protocol: "vde", path: "{d}/vde", name: "vms", vlan: 10 }});
"#
    );
    let path = sb.write("g.rhai", &script);
    let dot = sb.clonet().args(["graph", "--format", "dot"]).arg(&path).output().unwrap();
    assert!(text(&dot.stdout).contains("\"vms\" [shape=invtrapezium]"), "{}", text(&dot.stdout));
    assert!(!dir.join("vde").exists(), "a dry build makes no plug");
    let svg = sb.clonet().args(["graph"]).arg(&path).output().unwrap();
    assert!(text(&svg.stdout).contains("data-kind=\"plug\""), "{}", text(&svg.stdout));
    let pid = std::process::id();
    let stdout = sb.run_ok(
        "saved.rhai",
        &format!(
            r#"{script}
save_lab("{d}/saved");
p.delete();
n.delete();
sw.delete();
print(`gone ${{!host_exec("test -e {d}/vde").ok}}`);
load_lab("{d}/saved");
print(`back ${{get_node("vms").info().kind}} ${{host_exec("test -S {d}/vde/ctl").ok}}`);
host_exec("ip netns add clonet-plugsave-{pid} && ip netns exec clonet-plugsave-{pid} vde_plug2tap -d -s {d}/vde tapv0");
print(`joined ${{get_node("vms").wait_clients(1, 10000)}}`);
print(`tagged ${{topology().nodes.vms.ifaces[0].vlan}}`);
host_exec("ip netns pids clonet-plugsave-{pid} | xargs -r kill; ip netns del clonet-plugsave-{pid}");
"#
        ),
    );
    assert_eq!(printed(&stdout, "gone"), ["true"], "{stdout}");
    assert_eq!(printed(&stdout, "back"), ["plug true"], "{stdout}");
    assert_eq!(printed(&stdout, "joined"), ["true"], "{stdout}");
    assert!(stdout.contains("tagged") && stdout.contains("10"), "its clients' ports keep the VLAN: {stdout}");
    assert!(!dir.join("vde").exists(), "the loaded plug went with the lab");
}
