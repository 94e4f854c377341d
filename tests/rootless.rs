//! Labs run by an ordinary user: the engine moves into a user namespace
//! of its own (`host::userns`) and builds ns nodes as root does there;
//! uml and kvm machines run as the user.
mod common;
use common::*;

#[test]
fn hello_a_twenty_node_lan_snapshots_clones_and_a_uml_node_run_as_an_ordinary_user() {
    let us = UserSandbox::new();
    let hello = us.run_ok("hello.rhai", include_str!("../scripts/hello.rhai"));
    assert!(hello.contains("ping a -> b: ok"), "{hello}");
    let stdout = us.run_ok(
        "lan.rhai",
        r#"
let sw = lan("sw");
let nodes = [];
for i in 1..=20 { let n = node(`n${i}`); link(n, sw, #{ ip: `10.5.0.${i}/24` }); nodes.push(n); }
let bad = [];
for a in nodes { for b in [nodes[0], nodes[19]] {
    if a.name != b.name && !ping(a, b) { bad.push(`${a.name}->${b.name}`); }
} }
print(`unreachable ${bad}`);
let n1 = nodes[0];
n1.exec("echo kept > /etc/marker");
// Files of the host's root, which the lab's namespace does not map, are the node's to change.
let edit = n1.exec("echo 'lab:x:4242:4242::/:/bin/sh' >> /etc/passwd && mkdir /var/log/lab && echo ok > /var/log/lab/log");
print(`edits ${edit.ok} ${edit.stderr}`);
let c = clone(snapshot(n1, "s1"), "c1");
print(`clone sees ${c.exec("cat /etc/marker").stdout.trimmed()} ${c.exec("id -u lab; cat /var/log/lab/log").stdout.split("\n")}`);
let u = node("u", #{ kind: "uml" });
link(u, sw, #{ ip: "10.5.0.100/24" });
print(`uml reaches n1 ${ping(u, n1)}`);
print(`inside ${n1.exec("id -u").stdout.trimmed()} writes /usr ${n1.exec("touch /usr/clonet-rootless && echo yes").stdout.trimmed()}`);
"#,
    );
    assert!(stdout.contains("unreachable []"), "{stdout}");
    assert!(stdout.contains("edits true"), "{stdout}");
    assert!(stdout.contains("clone sees kept [\"4242\", \"ok\", \"\"]"), "{stdout}");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(!passwd.contains("lab:x:4242") && !std::path::Path::new("/var/log/lab").exists(), "the host is untouched");
    assert!(stdout.contains("uml reaches n1 true"), "{stdout}");
    assert!(stdout.contains("inside 0 writes /usr yes"), "root in the node, its writes its own: {stdout}");
    assert!(!std::path::Path::new("/usr/clonet-rootless").exists(), "a node's write reached the host");
    us.assert_nothing_left();
}

#[test]
fn serve_exec_stop_and_sigkill_then_clean_as_an_ordinary_user() {
    let us = UserSandbox::new();
    let script = us.write(
        "srv.rhai",
        "let a = node(\"a\"); let b = node(\"b\");\nlink(a, b, #{ ip_a: \"10.0.0.1/24\", ip_b: \"10.0.0.2/24\" });\na.exec(\"sleep 1000 &\");\n",
    );
    for kill in [false, true] {
        // Served once its script ran: stopping it earlier would interrupt the script.
        let mut served = serve_with(us.clonet(), "srv", &script, false);
        let serve = &mut served.child;
        assert!(text(&us.clonet().arg("ls").output().unwrap().stdout).contains("srv"), "the lab is listed");
        // What `assert_nothing_left` looks for is there while the lab runs.
        assert!(us.processes_in_user_namespaces().len() >= 3, "{:?}", us.processes_in_user_namespaces());
        let out =
            us.clonet().args(["exec", "srv", "a", "--", "ping", "-c", "1", "-W", "2", "10.0.0.2"]).output().unwrap();
        assert!(out.status.success(), "exec as the user: {}{}", text(&out.stdout), text(&out.stderr));
        if kill {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(serve.id() as i32), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            let _ = serve.wait();
            let clean = us.clonet().arg("clean").output().unwrap();
            assert!(clean.status.success(), "{}", text(&clean.stderr));
        } else {
            let stop = us.clonet().args(["stop", "srv"]).output().unwrap();
            assert!(stop.status.success(), "{}", text(&stop.stderr));
            assert!(serve.wait().unwrap().success());
        }
        us.assert_nothing_left();
    }
}

/// The labs shipped at the top of `scripts/` and every exercise (graded by
/// `clonet exercise check`, full marks as under root), as a user whose
/// subordinate ids the lab maps, so FRR's daemons can switch to their own
/// user.
#[test]
fn every_shipped_lab_and_exercise_runs_for_a_user_with_subordinate_ids() {
    let us = UserSandbox::with_subordinate_ids();
    let scripts = us.copy_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts"), "scripts");
    let mut labs: Vec<_> = std::fs::read_dir(&scripts)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    labs.sort();
    assert!(labs.len() >= 5, "{labs:?}");
    for lab in labs {
        let out = us.clonet().arg("run").arg(&lab).output().unwrap();
        assert!(out.status.success(), "{}: {}{}", lab.display(), text(&out.stdout), text(&out.stderr));
    }
    let mut exercises: Vec<_> =
        std::fs::read_dir(scripts.join("exercises")).unwrap().flatten().map(|e| e.path()).collect();
    exercises.sort();
    assert!(exercises.len() >= 10, "{exercises:?}");
    for dir in exercises {
        let out = us
            .clonet()
            .args(["exercise", "check", "--answer"])
            .arg(dir.join("solution.rhai"))
            .arg(&dir)
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}: {stdout}{}", dir.display(), text(&out.stderr));
        assert!(stdout.contains("solution scored 10/10"), "{}: {stdout}", dir.display());
    }
    // FRR's configuration is in the node's own root, so snapshots keep it.
    let kept = us.run_ok(
        "frr-snap.rhai",
        "import \"frr\" as frr;\nlet r = node(\"r\");\nfrr::start(r, \"router ospf\\n\");\nlet c = clone(snapshot(r, \"s\"), \"c\");\nprint(c.exec(\"cat /etc/frr/frr.conf\").stdout);\n",
    );
    assert!(kept.contains("router ospf"), "{kept}");
    let maps = us.run_ok("map.rhai", r#"print(host_exec("cat /proc/self/uid_map").stdout);"#);
    let lines: Vec<Vec<&str>> =
        maps.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "root and the subordinate range: {maps}");
    assert_eq!(lines[0], ["0", &us.uid.to_string(), "1"], "{maps}");
    assert_eq!((lines[1][0], lines[1][2]), ("1", "65536"), "{maps}");
    us.assert_nothing_left();
}

/// Without subordinate ids FRR cannot run, and says why and what to do.
#[test]
fn frr_without_subordinate_ids_is_a_clear_error() {
    let us = UserSandbox::new();
    let path = us.write("ospf.rhai", "import \"frr\" as frr;\nfrr::start(node(\"r\"), \"router ospf\\n\");\n");
    let out = us.clonet().arg("run").arg(&path).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ospf.rhai:2:") && stderr.contains("subordinate ids"), "{stderr}");
    us.assert_nothing_left();
}

/// Captures (read back by tshark), sniffing, saving and loading a lab,
/// and `clonet test`, as an ordinary user; a node's `/root`, which the
/// host keeps from users, is the node's own and is saved with it.
#[test]
fn captures_saved_labs_and_clonet_test_work_as_an_ordinary_user() {
    let us = UserSandbox::new();
    let stdout = us.run_ok(
        "features.rhai",
        r#"
let a = node("a"); let b = node("b");
let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
let c = capture(l, "cap.pcap");
ping(a, b);
print(`captured ${c.stop().frames}`);
exec(a, "ping -c 3 -i 0.2 10.0.0.2 >/dev/null 2>&1 &");
print(`sniffed ${sniff(l, 2)}`);
a.exec("echo kept > /root/note");
save_lab("saved");
a.delete(); b.delete();
load_lab("saved");
print(`loaded ${get_node("a").exec("cat /root/note").stdout.trimmed()}`);
"#,
    );
    let captured: u64 = printed(&stdout, "captured")[0].parse().unwrap();
    assert!(captured >= 4, "{stdout}");
    assert!(stdout.contains("sniffed 2") && stdout.contains("loaded kept"), "{stdout}");
    let read = std::process::Command::new("tshark").arg("-r").arg(us.home.join("cap.pcap")).output().unwrap();
    let frames = text(&read.stdout);
    assert!(frames.contains("Echo (ping) request") && frames.contains("Echo (ping) reply"), "{frames}");
    let test = us.write(
        "t_lab.rhai",
        "let a = node(\"a\"); let b = node(\"b\");\nlink(a, b, #{ ip_a: \"10.0.0.1/24\", ip_b: \"10.0.0.2/24\" });\nfn test_ping() { assert(ping(get_node(\"a\"), get_node(\"b\"))); }\n",
    );
    let out = us.clonet().arg("test").arg(&test).output().unwrap();
    assert!(out.status.success() && text(&out.stdout).contains("1 passed, 0 failed"), "{}", text(&out.stdout));
    // Labs of one name, one after another in one process: each copies the
    // host's files for itself (the second once waited for the first's).
    let ex = us
        .copy_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/exercises/02-static-routing"), "ex");
    let answer = ex.join("solution.rhai");
    let out = us
        .clonet()
        .args(["exercise", "check", "--answer"])
        .arg(&answer)
        .arg("--answer")
        .arg(&answer)
        .arg(&ex)
        .output()
        .unwrap();
    let report = text(&out.stdout);
    assert!(out.status.success() && report.matches("scored 10/10").count() == 2, "{report}{}", text(&out.stderr));
    us.assert_nothing_left();
}

/// `clonet attach` and the web GUI reach a lab an ordinary user serves:
/// the REPL changes it, the GUI's WebSocket sees the change.
#[test]
fn attach_and_the_gui_work_as_an_ordinary_user() {
    let us = UserSandbox::new();
    let lab = us.serve(
        "web",
        "let a = node(\"a\"); let b = node(\"b\");\nlink(a, b, #{ ip_a: \"10.0.0.1/24\", ip_b: \"10.0.0.2/24\" });\n",
        true,
    );
    let out = attach_with_input(
        us.clonet(),
        "web",
        "let c = node(\"c\")\nlink(c, a, #{ ip_a: \"10.9.0.1/24\", ip_b: \"10.9.0.2/24\" })\nc.exec(\"ping -c 1 -W 2 10.9.0.2\").ok\n:quit\n",
    );
    let said = text(&out.stdout);
    assert!(
        out.status.success() && said.contains("Link(c--a)") && said.contains("=> true"),
        "{said}{}",
        text(&out.stderr)
    );
    let (addr, token) = gui_address(&lab);
    let mut ws = control_websocket(&addr, &token);
    assert_eq!(ws_request(&mut ws, 1, serde_json::json!({ "op": "lab_info" }))["name"], serde_json::json!("web"));
    let topology = ws_request(&mut ws, 2, serde_json::json!({ "op": "topology" }));
    assert!(topology["links"]["c--a"].is_object(), "the GUI sees the link the REPL added: {topology}");
    drop(ws);
    let stop = us.clonet().args(["stop", "web"]).output().unwrap();
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    drop(lab);
    us.assert_nothing_left();
}
