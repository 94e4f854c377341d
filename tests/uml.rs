//! `uml` nodes: User-Mode Linux machines on the clonet switch.
mod common;
use common::*;

#[test]
fn two_uml_nodes_ping_each_other_and_run_commands() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "two.rhai",
        r#"
let u1 = node("u1", #{ kind: "uml" });
let u2 = node("u2", #{ kind: "uml", mem: 48 });
assert(u1.kind == "uml");
link(u1, u2, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
assert(ping(u1, u2), "u1 -> u2");
assert(ping(u2, u1), "u2 -> u1");
let r = u1.exec("hostname; echo oops >&2; exit 4");
assert(r.status == 4 && r.stdout == "u1\n" && r.stderr == "oops\n", `${r}`);
let bin = u2.exec("printf '\\000\\377\\001'");
assert(bin.stdout_bytes.len() == 3 && bin.stdout_bytes[1] == 255, "binary-safe");
let big = u2.exec("seq 1 20000");
assert(big.stdout.len() == 108894 && !big.truncated, `large output: ${big.stdout.len()} bytes`);
let cut = u2.exec("seq 1 20000; seq 1 30 >&2", #{ max_output: 50 });
assert(cut.stdout.len() == 50 && cut.stderr.len() == 50 && cut.truncated, `cut output: ${cut}`);
assert(cut.stdout.starts_with("1\n2\n3\n"), "the start is kept");
assert(u1.exec(["cat"], #{ stdin: "fed" }).stdout == "fed", "stdin and argv");
try { u1.exec("sleep 10", #{ timeout_ms: 1000 }); } catch (e) { print(`timeout: ${e}`); }
print(`eth0 of u1: ${u1.exec("cat /sys/class/net/eth0/address").stdout.trimmed()} vs ${u1.ifaces[0].mac}`);
print("uml ok");
"#,
    );
    assert!(stdout.contains("uml ok"), "{stdout}");
    let mac_line = stdout.lines().find(|l| l.starts_with("eth0 of u1")).unwrap();
    let macs: Vec<&str> = mac_line.split_whitespace().filter(|w| w.contains(':') && w.len() == 17).collect();
    assert_eq!(macs.len(), 2);
    assert_eq!(macs[0], macs[1], "the guest uses the MAC clonet assigned");
    assert_nothing_left(&sb);
}

#[test]
fn a_mixed_ns_and_uml_lan_pings_everywhere() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "mixed.rhai",
        r#"
let sw = lan("sw");
let hosts = [node("n1"), node("u1", #{ kind: "uml" }), node("n2"), node("u2", #{ kind: "uml" })];
let i = 1;
for h in hosts { link(h, sw, #{ ip: `10.1.0.${i}/24` }); i += 1; }
let bad = [];
for a in hosts { for b in hosts {
    if a.name != b.name && !ping(a, b) { bad.push(`${a.name}->${b.name}`); }
} }
assert(bad.is_empty(), `unreachable: ${bad}`);
print("mixed ok");
"#,
    );
    assert!(stdout.contains("mixed ok"), "{stdout}");
    assert_nothing_left(&sb);
}

#[test]
fn writes_inside_a_uml_node_leave_the_base_image_untouched() {
    let sb = Sandbox::new();
    let data = sb.data_dir();
    let build = sb.clonet().args(["image", "build"]).output().unwrap();
    assert!(build.status.success());
    let img = data.join("images/uml-busybox.img");
    let before = std::fs::read(&img).unwrap();
    let stdout = sb.run_ok(
        "cow.rhai",
        r#"
let u = node("u", #{ kind: "uml" });
u.exec("echo written > /root/file && sync");
assert(u.exec("cat /root/file").stdout == "written\n");
print("wrote");
"#,
    );
    assert!(stdout.contains("wrote"));
    assert!(std::fs::read(&img).unwrap() == before, "the base image changed");
    assert_nothing_left(&sb);
}

#[test]
fn a_missing_image_is_a_clear_error_that_leaves_nothing() {
    let sb = Sandbox::new();
    let script = sb.write("noimg.rhai", "let u = node(\"u\", #{ kind: \"uml\", image: \"/nonexistent.img\" });\n");
    let out = sb.clonet().arg("run").arg(&script).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("noimg.rhai:1:9: error: node \"u\" did not start: no image at /nonexistent.img"),
        "{stderr}"
    );
    assert_nothing_left(&sb);
}

#[test]
fn tcp_from_an_ns_node_reaches_a_uml_node_through_software_segmentation() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "gso.rhai",
        r#"
let u = node("u", #{ kind: "uml" });
let n = node("n");
link(n, u, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
// iperf3 on both sides: the host's in the ns node, the image's copy in the guest.
assert(u.exec("iperf3 -s -D -1").ok, "iperf3 server in the guest");
sleep(300);
let sent = n.exec("iperf3 -c 10.0.0.2 -t 2 -J", #{ timeout_ms: 60000 });
assert(sent.ok, `iperf3 client: ${sent}`);
let got = parse_json(sent.stdout).end.sum_received.bytes;
print(`iperf3 ns -> uml: ${got} bytes, ${parse_json(sent.stdout).end.sum_received.bits_per_second / 1.0e6} Mbit/s`);
assert(got > 1000000, `received ${got}`);
let c = get_link("n", "u").counters();
let from_ns = c.filter(|p| p.node == "n")[0];
let to_uml = c.filter(|p| p.node == "u")[0];
print(`ns sent ${from_ns.rx_frames} frames, ${from_ns.rx_bytes / from_ns.rx_frames} bytes each on average`);
print(`uml got ${to_uml.tx_frames} frames, drops ${to_uml.drops}`);
assert(from_ns.rx_bytes / from_ns.rx_frames > 1514, "the ns TAP handed over GSO super-frames");
assert(to_uml.tx_frames > from_ns.rx_frames, "the switch cut them into more, smaller frames");
assert(to_uml.drops.len() == 0, `drops: ${to_uml.drops}`);
// The link can be removed and added again on the running machine.
unlink(n, u);
assert(u.exec("ls /sys/class/net").stdout == "lo\n", "the NIC is unplugged in the guest");
link(n, u, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
assert(ping(n, u), "a new NIC works");
print("segmentation ok");
"#,
    );
    assert!(stdout.contains("segmentation ok"), "{stdout}");
    assert_nothing_left(&sb);
}

#[test]
fn tcp_from_a_uml_node_reaches_an_ns_node_merged_and_intact() {
    // The uml port hands over 1500-byte segments; the switch merges each
    // turn's run of them into a GSO frame for the ns node's TAP. A capture
    // of that port sees the segments; the bytes arrive exactly.
    let sb = Sandbox::new();
    let pcap = sb.dir.path().join("to-ns.pcap");
    let stdout = sb.run_ok(
        "gro.rhai",
        &format!(
            r#"
let u = node("u", #{{ kind: "uml" }});
let n = node("n");
let l = link(u, n, #{{ ip_a: "10.0.0.2/24", ip_b: "10.0.0.1/24" }});
u.exec("mkdir -p /tmp/www && busybox dd if=/dev/urandom of=/tmp/www/f bs=1024 count=3000 2>/dev/null && busybox httpd -p 8080 -h /tmp/www");
let want = u.exec("busybox md5sum /tmp/www/f").stdout.split(" ")[0];
let cap = capture(l, "{pcap}");
let got = n.exec("busybox wget -q -O - http://10.0.0.2:8080/f | md5sum", #{{ timeout_ms: 60000 }}).stdout.split(" ")[0];
print(`captured ${{cap.stop().frames}}`);
print(`intact ${{want == got && want.len() == 32}}`);
let to_ns = l.counters().filter(|p| p.node == "n")[0];
print(`frames ${{to_ns.tx_frames}} bytes ${{to_ns.tx_bytes}} drops ${{to_ns.drops.len()}}`);
"#,
            pcap = pcap.display()
        ),
    );
    assert_eq!(printed(&stdout, "intact"), ["true"], "{stdout}");
    let frames: Vec<u64> = stdout
        .lines()
        .find(|l| l.starts_with("frames "))
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (tx_frames, tx_bytes, drops) = (frames[0], frames[1], frames[2]);
    assert_eq!(drops, 0, "{stdout}");
    assert!(tx_frames > 2000 && tx_bytes / tx_frames <= 1514, "counted as the segments they were: {stdout}");
    // The capture holds wire-sized frames, none bigger than the MTU.
    let out = std::process::Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-T", "fields", "-e", "frame.len"])
        .output()
        .unwrap();
    let lens: Vec<usize> = text(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(
        lens.len() > 2000 && lens.iter().all(|l| *l <= 1514),
        "{} frames, largest {:?}",
        lens.len(),
        lens.iter().max()
    );
    assert_nothing_left(&sb);
}

#[test]
fn a_uml_and_kvm_lab_runs_as_an_unprivileged_user() {
    // Everything the unprivileged user needs lives in a directory it may use.
    let us = UserSandbox::new();
    let script = us.write(
        "lab.rhai",
        "let a = node(\"a\", #{ kind: \"uml\" });\nlet b = node(\"b\", #{ kind: \"uml\" });\nlet k = node(\"k\", #{ kind: \"kvm\" });\n\
         link(a, b, #{ ip_a: \"10.0.0.1/24\", ip_b: \"10.0.0.2/24\" });\nlink(a, k, #{ ip_a: \"10.0.1.1/24\", ip_b: \"10.0.1.2/24\" });\n\
         assert(ping(a, b));\nassert(ping(k, \"10.0.1.1\"));\n\
         print(`uid ${a.exec(\"id -u\").stdout.trimmed()} ${k.exec(\"id -u\").stdout.trimmed()} ran ${host_exec(\"id -u\").stdout.trimmed()} as ${host_exec(\"cat /proc/self/uid_map\").stdout.trimmed()}`);\n\
         for n in [a, k] {\n\
             let m = host_exec(`cat /proc/${n.pid}/task/${n.pid}/children`).stdout.trimmed();\n\
             let ns = host_exec(`readlink /proc/${m}/ns/pid /proc/${n.pid}/ns/pid`).stdout.split(\"\\n\");\n\
             print(`${n.name} machine ${m} pid namespace ${ns[0]} helper ${ns[1]}`);\n\
         }\n",
    );
    let out = us.clonet().arg("run").arg(&script).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // The engine runs in its lab's user namespace, where it is root and
    // which maps root to the user, alone (uid 65534 has no subordinate ids).
    let line = stdout.lines().find(|l| l.starts_with("uid ")).expect(&stdout);
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words,
        ["uid", "0", "0", "ran", "0", "as", "0", "65534", "1"],
        "root inside the guests, nobody outside: {stdout}"
    );
    for name in ["a", "k"] {
        let line = stdout.lines().find(|l| l.starts_with(&format!("{name} machine "))).expect(&stdout);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words[5].starts_with("pid:[") && words[7].starts_with("pid:["), "{line}");
        assert_ne!(words[5], words[7], "the machine has a PID namespace of its own, made without root: {line}");
    }
    us.assert_nothing_left();
}

/// Run by root, a machine runs as a uid of its own (not root, not another
/// machine's) and sees only its own directory of the lab's run directory:
/// not the control socket, not the other nodes. A guest that mounts the
/// host's files through UML's hostfs reads only what anyone may.
#[test]
fn guests_run_unprivileged_and_see_only_their_own_files_when_clonet_is_root() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "jail.rhai",
        r#"
let u = node("u", #{ kind: "uml" });
let k = node("k", #{ kind: "kvm" });
link(u, k, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
assert(ping(u, k), "the machines still reach each other");
for n in [u, k] {
    let machine = host_exec(`cat /proc/${n.pid}/task/${n.pid}/children`).stdout.trimmed();
    let uids = host_exec(`grep ^Uid: /proc/${machine}/status | cut -f2-`).stdout.trimmed();
    let own = host_exec(`tr '\0' '\n' < /proc/${n.pid}/cmdline | grep '[.]machine$'`).stdout.trimmed();
    let run_dir = own.sub_string(0, own.index_of(`/${n.name}.machine`));
    let seen = host_exec(`ls -A /proc/${machine}/root${run_dir} | tr '\n' ' '`).stdout.trimmed();
    print(`${n.name} uids ${uids} sees [${seen}] of ${run_dir}`);
    let fds = host_exec(`for f in /proc/${machine}/fd/*; do readlink $f; done | tr '\n' ' '`).stdout;
    print(`${n.name} holds ${fds}`);
}
let r = u.exec("mkdir -p /mnt/etc && mount -t hostfs none /mnt/etc -o /etc && cat /mnt/etc/shadow");
print(`shadow: ${r.status} ${r.stderr.trimmed()}`);
let r = u.exec("mkdir -p /mnt/etc && cat /mnt/etc/hostname > /dev/null && echo readable");
print(`hostname: ${r.stdout.trimmed()}`);
print("jail ok");
"#,
    );
    assert!(stdout.contains("jail ok"), "{stdout}");
    let mut uids = Vec::new();
    for name in ["u", "k"] {
        let line = stdout.lines().find(|l| l.starts_with(&format!("{name} uids "))).expect(&stdout);
        let words: Vec<&str> = line.split_whitespace().collect();
        let ids: Vec<u32> = words[2..6].iter().map(|w| w.parse().unwrap()).collect();
        assert!(
            ids.iter().all(|&id| id >= 0x7000_0000 && id == ids[0]),
            "{name}: real, effective, saved, fs uid: {line}"
        );
        uids.push(ids[0]);
        let seen = line.split_once('[').unwrap().1.split_once(']').unwrap().0;
        assert_eq!(seen, format!("{name}.machine"), "{name} sees only its own directory: {line}");
    }
    assert_ne!(uids[0], uids[1], "each machine has a uid of its own");
    // Only its own lines and files: nothing clonet or its parent left open.
    for name in ["u", "k"] {
        let line = stdout.lines().find(|l| l.starts_with(&format!("{name} holds "))).expect(&stdout);
        for target in line.split_whitespace().skip(2) {
            let own = target.contains(&format!("/{name}.machine/")) || target.contains("/images/");
            let kernel_object = ["socket:", "anon_inode:", "/dev/", "(deleted)"].iter().any(|p| target.starts_with(p));
            assert!(own || kernel_object, "{name} holds {target}: {line}");
        }
    }
    assert!(stdout.contains("shadow: 1 cat: can't open '/mnt/etc/shadow': Permission denied"), "{stdout}");
    assert!(stdout.contains("hostname: readable"), "hostfs itself works, so the refusal is the uid's: {stdout}");
    assert_nothing_left(&sb);
}

#[test]
fn a_dead_uml_node_is_reported_and_the_rest_goes_on() {
    let sb = Sandbox::new();
    let path = sb.write(
        "dead.rhai",
        r#"
let u = node("u", #{ kind: "uml" });
let a = node("a"); let b = node("b");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
link(u, a, #{ ip_a: "10.0.1.2/24", ip_b: "10.0.1.1/24" });
assert(ping(a, "10.0.1.2"));
host_exec(`kill -9 ${u.pid}`);
sleep(300);
assert(ping(a, b), "the switch and the other nodes go on");
assert(!u.running, "the dead node is marked stopped");
try { u.exec("true"); throw "exec on a dead node worked"; } catch (e) { assert(`${e}`.contains("is stopped"), `${e}`); }
u.start();
assert(ping(a, "10.0.1.2"), "and it can be started again");
print("fault ok");
"#,
    );
    let out = sb.clonet().arg("run").arg(&path).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("fault ok"));
    assert!(stderr.contains("clonet: node u died"), "the event is printed: {stderr}");
    assert_nothing_left(&sb);
}

#[test]
fn a_boot_timeout_or_a_bad_option_is_a_clear_error_that_leaves_nothing() {
    let sb = Sandbox::new();
    // node() returns while the machine boots; its first use waits for it.
    let script = sb.write("slow.rhai", "let u = node(\"u\", #{ kind: \"uml\" });\nu.exec(\"true\");\n");
    let out = sb.clonet().env("CLONET_BOOT_TIMEOUT", "0.05").arg("run").arg(&script).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("slow.rhai:2:3: error: node \"u\" did not start: the guest agent did not answer within 50ms"),
        "{stderr}"
    );
    assert_nothing_left(&sb);
    for (option, message) in [
        ("args: [\"two words\"]", "bad kernel or QEMU argument"),
        ("args: \"ubd1=x\"", "args must be an array of strings"),
        ("mem: 4", "mem 4 MiB is out of range"),
        ("disk: 3", "unknown option \"disk\""),
    ] {
        let script = sb.write("bad.rhai", &format!("node(\"u\", #{{ kind: \"uml\", {option} }});\n"));
        let out = sb.run(&script);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{option}: {stderr}");
        assert!(stderr.contains("bad.rhai:1:1: error: ") && stderr.contains(message), "{option}: {stderr}");
        assert_nothing_left(&sb);
    }
}

#[test]
fn frames_too_big_for_a_uml_port_that_cannot_be_segmented_are_counted_as_drops() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "oversize.rhai",
        r#"
let sw = lan("sw");
let n = node("n");
let u = node("u", #{ kind: "uml" });
link(n, sw, #{ ip: "10.0.0.1/24", mtu: 9000 });
link(u, sw, #{ ip: "10.0.0.2/24" });
assert(ping(n, u), "small frames pass");
// An 8000-byte ICMP echo is one frame that no one may cut (DF, not TCP).
let big = n.exec("ping -c 1 -W 2 -M do -s 8000 10.0.0.2");
assert(!big.ok, "the big echo cannot cross");
let port = sw.counters().filter(|p| p.node == "u")[0];
print(`drops at the uml port: ${port.drops}`);
assert(port.drops.oversize >= 1, `counted: ${port.drops}`);
assert(ping(n, u), "the port still works");
print("oversize ok");
"#,
    );
    assert!(stdout.contains("oversize ok"), "{stdout}");
    assert_nothing_left(&sb);
}

#[test]
fn a_uml_machine_that_dies_while_booting_is_started_again() {
    let sb = Sandbox::new();
    let path = sb.write(
        "crash.rhai",
        "let u = node(\"u\", #{ kind: \"uml\" });\nhost_exec(`kill -9 ${u.pid}`);\nprint(u.exec(\"hostname\").stdout);\n",
    );
    let out = sb.clonet().arg("run").arg(&path).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "u\n\n");
    assert!(stderr.contains("clonet: u: linux.uml died while booting; starting it again"), "{stderr}");
    assert_nothing_left(&sb);
}

#[test]
fn a_uml_node_sees_its_link_go_down_and_come_back_with_its_routes() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "umldown.rhai",
        r#"
let u = node("u", #{ kind: "uml" });
let n = node("n");
let l = link(u, n, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24", delay: "5ms" });
n.exec("ip addr add 10.5.0.1/32 dev lo");
u.add_route("10.5.0.0/24", "10.0.0.2");
assert(ping(u, "10.5.0.1"), "routed before");
fn state(u) { u.exec("cat /sys/class/net/eth0/operstate").stdout.trimmed() }
l.down();
print(`down: ${state(u)} carrier ${n.exec("cat /sys/class/net/eth0/carrier").stdout.trimmed()}`);
assert(!ping(n, u, #{ timeout_ms: 300 }), "no frames while down");
l.up();
print(`up: ${state(u)}`);
assert(ping(u, "10.5.0.1"), "the static route came back");
let rtt = rtt_us(n, u);
print(`rtt_us ${rtt}`);
"#,
    );
    assert!(stdout.contains("down: down carrier 0"), "{stdout}");
    // The vector NIC reports no carrier at all, so "unknown" is its up.
    assert!(stdout.contains("up: up") || stdout.contains("up: unknown"), "{stdout}");
    let rtt: f64 = printed(&stdout, "rtt_us")[0].parse().unwrap();
    assert!(rtt >= 10_000.0, "the impairment survives down/up: {rtt} us");
    assert_nothing_left(&sb);
}

/// However a lab with machines dies, even by SIGKILL, its machines go with
/// it: each runs as the init of its own PID namespace, under a helper that
/// dies with the lab, so UML's helper processes cannot linger. Checked
/// with and without `clonet clean` afterwards.
#[test]
fn sigkill_of_a_lab_leaves_no_machine_process_with_or_without_clean() {
    use std::io::BufRead;
    for clean in [false, true] {
        let sb = Sandbox::new();
        let script = sb.write(
            "machines.rhai",
            "let u = node(\"u\", #{ kind: \"uml\" });\nlet k = node(\"k\", #{ kind: \"kvm\" });\n\
             link(u, k, #{ ip_a: \"10.0.0.1/24\", ip_b: \"10.0.0.2/24\" });\nassert(ping(u, k));\n\
             print(\"ready\");\nsleep(60000);\n",
        );
        let mut child = sb.clonet().arg("run").arg(&script).stdout(std::process::Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        let here = sb.dir.path().to_string_lossy().to_string();
        let running = processes_matching(&here);
        let count = |what: &str| running.iter().filter(|p| p.contains(what) && !p.contains("__machine")).count();
        assert!(count("linux.uml") >= 2 && count("qemu-system") >= 1, "UML runs as several processes: {running:#?}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
        child.wait().unwrap();
        if clean {
            let out = sb.clonet().arg("clean").output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        assert!(
            eventually(10, || processes_matching(&here).is_empty()),
            "left after SIGKILL (clean: {clean}): {:#?}",
            processes_matching(&here)
        );
    }
}
