//! Host interfaces: the host reaches a lab through an interface of its
//! own. clonet runs inside a network namespace each test makes, standing
//! in for the host: nothing here touches the machine's own network.
mod common;
use std::process::Command;

use common::*;

const LAB: &str = r#"
let sw = lan("sw");
let n = node("n");
link(n, sw, #{ ip: "10.9.0.2/24" });
let h = host_iface(sw, #{ name: "clonetest0", ip: "10.9.0.1/24" });
print(`ping ${host_exec("ping -c 2 -W 2 10.9.0.2").ok}`);
print(`routes ${host_exec("ip -4 route").stdout.trimmed()}`);
try { host_iface(sw, #{ name: "lo" }); } catch (e) { print(`taken ${e}`); }
try { h.add_route("default", "10.9.0.2"); } catch (e) { print(`no route ${e}`); }
print(`counted ${sw.counters().filter(|p| p.node == "clonetest0").map(|p| p.rx_frames > 0)}`);
"#;

#[test]
fn the_host_reaches_a_lab_node_through_its_interface_and_the_interface_goes_with_the_lab() {
    let sb = Sandbox::new();
    let ns = TestNetns::new("run");
    let out = ns.clonet(&sb).arg("run").arg(sb.write("hi.rhai", LAB)).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("ping true"), "the host pinged the node: {stdout}");
    assert!(stdout.contains("routes 10.9.0.0/24 dev clonetest0"), "only its own prefix: {stdout}");
    assert!(!stdout.contains("default"), "no default route: {stdout}");
    assert!(stdout.contains("taken") && stdout.contains("already has an interface called lo"), "{stdout}");
    assert!(stdout.contains("no route") && stdout.contains("no route beyond its own prefix"), "{stdout}");
    assert!(stdout.contains("counted [true]"), "its port counts frames: {stdout}");
    assert!(!ns.ip(&["link", "show", "clonetest0"]).status.success(), "the interface went with the lab");
    assert_nothing_left(&sb);
}

#[test]
fn a_killed_lab_leaves_no_host_interface() {
    let sb = Sandbox::new();
    let ns = TestNetns::new("kill");
    let script = sb
        .write("kept.rhai", "let sw = lan(\"sw\");\nhost_iface(sw, #{ name: \"clonetest1\", ip: \"10.9.1.1/24\" });\n");
    let mut served = serve_with(ns.clonet(&sb), "kept", &script, false);
    let serve = &mut served.child;
    assert!(ns.ip(&["link", "show", "clonetest1"]).status.success(), "the interface is there while the lab runs");
    // SIGKILL reaches `ip netns exec`'s child: it execs clonet itself.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(serve.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = serve.wait();
    let clean = ns.clonet(&sb).arg("clean").output().unwrap();
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    assert!(
        eventually(5, || !ns.ip(&["link", "show", "clonetest1"]).status.success()),
        "no interface is left after SIGKILL and clean"
    );
    assert_nothing_left(&sb);
}

#[test]
fn without_root_a_host_interface_is_refused_with_the_reason_and_the_way_out() {
    let us = UserSandbox::new();
    let path = us.write("hi.rhai", "let sw = lan(\"sw\");\nhost_iface(sw, #{ name: \"clonetest2\" });\n");
    let out = us.clonet().arg("run").arg(&path).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("hi.rhai:2:") && stderr.contains("needs root") && stderr.contains("nat endpoint's forward"),
        "{stderr}"
    );
    us.assert_nothing_left();
}

/// containerlab's `host:IF` endpoint: an interface of the host, on the
/// node's link; the host reaches the node through it.
#[test]
fn a_containerlab_host_endpoint_is_an_interface_the_host_reaches_the_node_through() {
    let sb = Sandbox::new();
    let ns = TestNetns::new("clab");
    let topo = sb.write(
        "hosted.clab.yml",
        "name: hosted
topology:
  nodes:
    h1:
      kind: linux
      image: alpine:3
      exec:
        - ip addr add 10.9.3.2/24 dev eth1
  links:
    - endpoints: [\"h1:eth1\", \"host:clabhost0\"]
",
    );
    let converted = ns.clonet(&sb).arg("convert").arg(&topo).arg("--images").arg("host").output().unwrap();
    assert!(text(&converted.stdout).contains("host_iface("), "{}", text(&converted.stdout));
    let served = serve_with_args(ns.clonet(&sb), "hosted", &topo, false, &["--images", "host"]);
    assert!(ns.ip(&["link", "show", "clabhost0"]).status.success(), "the host has the interface");
    assert!(ns.ip(&["addr", "add", "10.9.3.1/24", "dev", "clabhost0"]).status.success());
    let ping =
        Command::new("ip").args(["netns", "exec", &ns.0, "ping", "-c", "2", "-W", "2", "10.9.3.2"]).output().unwrap();
    assert!(ping.status.success(), "the host pings h1 through host:clabhost0: {}", text(&ping.stdout));
    drop(served);
    assert!(
        eventually(5, || !ns.ip(&["link", "show", "clabhost0"]).status.success()),
        "the interface goes with the lab"
    );
    assert_nothing_left(&sb);
}
