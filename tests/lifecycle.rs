//! Teardown: after a normal run, a script error, SIGINT, SIGTERM and
//! SIGKILL + `clonet clean`, nothing of the lab remains: no namespace, TAP,
//! mount, process or run directory. Also: the switch's counters match the
//! frames the nodes really sent.
mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A lab whose nodes start a long-lived marker process, then report what
/// they are made of, then run `tail`.
fn leaky_lab(marker: &str, tail: &str) -> String {
    format!(
        r#"
let a = node("a");
let b = node("b");
let sw = lan("sw");
link(a, b, #{{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" }});
link(a, sw, #{{ ip: "10.1.0.1/24" }});
link(b, sw, #{{ ip: "10.1.0.2/24" }});
for n in [a, b] {{
    n.exec("sleep {marker} >/dev/null 2>&1 &");
    print(`netns ${{n.exec("readlink /proc/self/ns/net").stdout.trimmed()}}`);
    print(`pid ${{n.pid}}`);
}}
if !ping(a, b) {{ throw "no ping"; }}
print("ready");
{tail}
"#
    )
}

struct Facts {
    netns: Vec<String>,
    pids: Vec<i32>,
}

fn facts(stdout: &str) -> Facts {
    let netns = printed(stdout, "netns");
    let pids: Vec<i32> = printed(stdout, "pid").iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(netns.len(), 2, "script output:\n{stdout}");
    assert!(netns.iter().all(|n| n.starts_with("net:[")), "{netns:?}");
    Facts { netns, pids }
}

fn assert_gone(sb: &Sandbox, f: &Facts, marker: &str) {
    assert!(eventually(5, || f.pids.iter().all(|p| !pid_alive(*p))), "node init processes still alive: {:?}", f.pids);
    assert!(eventually(5, || processes_matching(&format!("sleep {marker}")).is_empty()), "marker processes leaked");
    let live = live_netns();
    for ns in &f.netns {
        assert!(!live.contains(ns), "network namespace {ns} (and its TAPs) still held");
    }
    let base = sb.run_base().to_string_lossy().to_string();
    assert!(mounts_matching(&base).is_empty(), "mounts left: {:?}", mounts_matching(&base));
    assert!(sb.run_dirs().is_empty(), "run directories left: {:?}", sb.run_dirs());
}

#[test]
fn normal_exit_leaves_nothing() {
    let sb = Sandbox::new();
    let marker = "4101";
    let out = sb.run(&sb.write("ok.rhai", &leaky_lab(marker, "")));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_gone(&sb, &facts(&stdout), marker);
}

#[test]
fn script_error_leaves_nothing() {
    let sb = Sandbox::new();
    let marker = "4102";
    let script = sb.write("err.rhai", &leaky_lab(marker, "throw \"boom\";"));
    let out = sb.run(&script);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("error: boom"), "{stderr}");
    assert_gone(&sb, &facts(&stdout), marker);
}

/// Starts a lab that waits forever, sends `signal` once it is ready, and
/// returns its exit code and output.
fn signalled(sb: &Sandbox, marker: &str, signal: nix::sys::signal::Signal) -> (Option<i32>, String) {
    let script = sb.write("wait.rhai", &leaky_lab(marker, "sleep(60000);"));
    let mut child = sb.clonet().arg("run").arg(&script).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stdout.push_str(&line);
        stdout.push('\n');
        if line == "ready" {
            break;
        }
    }
    assert!(stdout.contains("ready"), "lab never got ready: {stdout}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "clonet ignored {signal}");
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), stdout)
}

#[test]
fn sigint_tears_the_lab_down() {
    let sb = Sandbox::new();
    let marker = "4103";
    let (code, stdout) = signalled(&sb, marker, nix::sys::signal::Signal::SIGINT);
    assert_eq!(code, Some(130));
    assert_gone(&sb, &facts(&stdout), marker);
}

#[test]
fn sigterm_tears_the_lab_down() {
    let sb = Sandbox::new();
    let marker = "4104";
    let (code, stdout) = signalled(&sb, marker, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, Some(143));
    assert_gone(&sb, &facts(&stdout), marker);
}

#[test]
fn after_sigkill_clean_removes_everything() {
    let sb = Sandbox::new();
    let marker = "4105";
    let (code, stdout) = signalled(&sb, marker, nix::sys::signal::Signal::SIGKILL);
    assert_eq!(code, None, "killed by a signal");
    assert_eq!(sb.run_dirs(), vec!["wait".to_string()], "the state file outlives a SIGKILL");
    let out = sb.clonet().arg("clean").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("removed lab wait"), "{}", text(&out.stdout));
    assert_gone(&sb, &facts(&stdout), marker);
    // A second clean has nothing to do.
    let again = sb.clonet().arg("clean").output().unwrap();
    assert!(text(&again.stdout).contains("nothing to clean"));
}

/// Starts `clonet run ARGS… SCRIPT` and waits for its first line, `ready`.
fn start_ready(sb: &Sandbox, args: &[&str], script: &std::path::Path) -> std::process::Child {
    let mut child = sb.clonet().arg("run").args(args).arg(script).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    child
}

#[test]
fn a_second_lab_with_the_same_name_is_refused_while_the_first_runs() {
    let sb = Sandbox::new();
    let script = sb.write("same.rhai", "print(\"ready\");\nsleep(60000);\n");
    let mut first = start_ready(&sb, &[], &script);
    let second = sb.run(&script);
    assert_eq!(second.status.code(), Some(1));
    assert!(text(&second.stderr).contains("lab \"same\" is already running"), "{}", text(&second.stderr));
    let mut third = start_ready(&sb, &["--name", "other"], &script);
    assert_eq!(sb.run_dirs().len(), 2);
    for child in [&first, &third] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
            .unwrap();
    }
    assert_eq!(first.wait().unwrap().code(), Some(130));
    assert_eq!(third.wait().unwrap().code(), Some(130));
    assert!(sb.run_dirs().is_empty());
}

#[test]
fn switch_counters_match_what_the_nodes_sent() {
    let sb = Sandbox::new();
    let script = sb.write(
        "count.rhai",
        r#"
let nodes = #{ a: node("a"), b: node("b"), c: node("c") };
// No IPv6 autoconfiguration chatter: every frame is one this script causes.
for n in nodes.values() { n.exec("echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"); }
let sw = lan("sw");
link(nodes.a, nodes.b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
link(nodes.a, sw, #{ ip: "10.1.0.1/24" });
link(nodes.c, sw, #{ ip: "10.1.0.3/24" });
for i in 0..5 { if !ping(nodes.a, nodes.b) || !ping(nodes.c, "10.1.0.1") { throw "ping failed"; } }
sleep(100);
for p in counters() {
    let stats = nodes[p.node].exec(`cat /sys/class/net/${p.iface}/statistics/tx_packets /sys/class/net/${p.iface}/statistics/rx_packets`).stdout.split("\n");
    print(`port ${p.node}:${p.iface} ${stats[0]} ${p.rx_frames} ${stats[1]} ${p.tx_frames} ${p.drops.len()}`);
}
"#,
    );
    let out = sb.run(&script);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let ports = printed(&stdout, "port");
    assert_eq!(ports.len(), 4, "{stdout}");
    for line in ports {
        let f: Vec<&str> = line.split(' ').collect();
        let n: Vec<u64> = f[1..].iter().map(|x| x.parse().unwrap()).collect();
        assert!(n[1] >= 6, "{line}: too few frames to prove anything");
        assert_eq!(n[0], n[1], "{}: frames the node sent vs frames the switch received", f[0]);
        assert_eq!(n[2], n[3], "{}: frames the node received vs frames the switch sent", f[0]);
        assert_eq!(n[4], 0, "{}: drops", f[0]);
    }
}
