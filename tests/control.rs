//! The control socket of a running lab, through the real binary: `clonet
//! serve`, `ls`, `attach`, `exec`, `stop`, and raw JSON-line clients.
mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::*;

const TWO_NODES: &str = r#"
let a = node("a"); let b = node("b");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
"#;

#[test]
fn two_clients_each_see_the_others_change_and_a_bad_request_harms_nothing() {
    let sb = Sandbox::new();
    let mut lab = serve(&sb, "duo", TWO_NODES, false);
    let meta = std::fs::metadata(&lab.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the socket is the owner's only");
    let mut one = Raw::connect(&lab.socket);
    let mut two = Raw::connect(&lab.socket);
    let (mut seen_one, mut seen_two) = (Vec::new(), Vec::new());
    one.send(r#"{"id":1,"watch":true}"#);
    assert_eq!(one.answer(1, &mut seen_one)["ok"]["reply"], "done");
    two.send(r#"{"id":1,"watch":true}"#);
    assert_eq!(two.answer(1, &mut seen_two)["ok"]["reply"], "done");

    // One adds a node: two hears of it; and the other way round.
    one.send(r#"{"id":2,"command":{"op":"add_node","name":"c","kind":"ns"}}"#);
    assert_eq!(one.answer(2, &mut seen_one)["ok"]["name"], "c");
    assert!(two.event_where(&mut seen_two, |e| e["event"] == "node_added" && e["node"] == "c"));
    two.send(r#"{"id":2,"command":{"op":"add_link","a":"c","b":"a","ip_a":null,"ip_b":null,"options":{}}}"#);
    assert!(two.answer(2, &mut seen_two).get("ok").is_some());
    assert!(one.event_where(&mut seen_one, |e| e["event"] == "link_added" && e["link"] == "c--a"));
    two.send(r#"{"id":3,"command":{"op":"set_link_up","link":"a--b","up":false}}"#);
    assert!(two.answer(3, &mut seen_two).get("ok").is_some());
    assert!(one.event_where(&mut seen_one, |e| e["event"] == "link_down" && e["link"] == "a--b"));
    // Watchers get every port's counters about once a second.
    assert!(one.event_where(&mut seen_one, |e| e["event"] == "counters"
        && e["ports"].as_array().is_some_and(|p| p.len() == 4)));

    // Malformed requests: an error answer each, and the lab goes on.
    for (id, bad) in [
        (4, r#"{"id":4,"command":{"op":"fly"}}"#),
        (5, r#"{"id":5}"#),
        (6, r#"{"id":6,"command":{"op":"add_node","name":"../x","kind":"ns"}}"#),
    ] {
        one.send(bad);
        let a = one.answer(id, &mut seen_one);
        assert!(a["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad} -> {a}");
    }
    one.send("this is not json");
    let a = loop {
        let v = one.next();
        if v.get("event").is_none() {
            break v;
        }
    };
    assert!(a["error"].as_str().unwrap().contains("malformed request"), "{a}");
    one.send(r#"{"id":7,"command":{"op":"exec","node":"c","request":{"argv":["ip","-br","link"],"stdin":[],"timeout":{"secs":10,"nanos":0}}}}"#);
    let a = one.answer(7, &mut seen_one);
    assert_eq!(a["ok"]["status"], 0, "{a}");

    // A client killed mid-session (its socket just closes) leaves the lab running.
    drop(two);
    let out = sb.clonet().args(["ls", "--json"]).output().unwrap();
    let labs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(labs[0]["name"], "duo");
    assert_eq!(labs[0]["nodes"], 3);
    assert_eq!(labs[0]["links"], 2);

    // `clonet stop` tears it down; `serve` then ends, and nothing is left.
    let out = sb.clonet().args(["stop", &lab.name]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = lab.child.wait().unwrap();
    assert!(status.success(), "serve ended with {status}");
    assert_nothing_left(&sb);
}

#[test]
fn another_user_cannot_connect_even_through_an_open_directory() {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, setgid, setuid, ForkResult, Gid, Uid};
    let sb = Sandbox::new();
    let mut lab = serve(&sb, "mine", TWO_NODES, false);
    let run_dir = lab.socket.parent().unwrap().to_path_buf();
    assert_eq!(std::fs::metadata(&run_dir).unwrap().permissions().mode() & 0o777, 0o700);
    // Open the way to the socket, so that only its own mode guards it.
    for dir in [sb.dir.path().to_path_buf(), sb.run_base(), run_dir.clone()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let addr = UnixAddr::new(&lab.socket).unwrap();
    // SAFETY: the child only makes system calls (no allocation, no lock)
    // between fork and exit, so the test harness's other threads cannot
    // leave it waiting on a lock they held.
    let code = match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = (|| {
                setgid(Gid::from_raw(65534)).ok()?;
                setuid(Uid::from_raw(65534)).ok()?;
                let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::empty(), None).ok()?;
                Some(match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
                    Ok(()) => 0,
                    Err(nix::errno::Errno::EACCES) => 13,
                    Err(_) => 2,
                })
            })()
            .unwrap_or(3);
            // SAFETY: _exit ends the child at once, running nothing of the
            // parent's (no atexit handlers, no destructors).
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, c) => c,
            other => panic!("{other:?}"),
        },
    };
    assert_eq!(code, 13, "user nobody's connect is refused with EACCES (0: it connected, 2: other error, 3: setup)");
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The lab is unharmed.
    let out = sb.clonet().args(["exec", "mine", "a", "--", "ping", "-c", "1", "-W", "2", "10.0.0.2"]).output().unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let out = sb.clonet().args(["stop", "mine"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    lab.child.wait().unwrap();
    assert_nothing_left(&sb);
}

/// `clonet attach LAB` with `input` typed, until it ends.
fn attach_with_input(sb: &Sandbox, lab: &str, input: &str) -> std::process::Output {
    let mut child = sb
        .clonet()
        .args(["attach", lab])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn attached_repls_share_the_lab_and_exec_reports_the_commands_status() {
    let sb = Sandbox::new();
    let mut lab = serve(&sb, "shared", TWO_NODES, false);
    // The first attached REPL adds a node and links it, using the variables
    // attach binds for the existing nodes.
    let out = attach_with_input(
        &sb,
        "shared",
        "let c = node(\"c\")\nlink(c, a, #{ ip_a: \"10.9.0.1/24\", ip_b: \"10.9.0.2/24\" })\n:quit\n",
    );
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("Link(c--a)"), "{}", text(&out.stdout));
    // The second sees that change; the node outlived the first client.
    let second = attach_with_input(&sb, "shared", ":net\nc.exec(\"ping -c 1 -W 2 10.9.0.2\").ok\n");
    let seen = text(&second.stdout);
    assert!(seen.contains("-> a:eth1 via c--a"), "{seen}{}", text(&second.stderr));
    assert!(seen.contains("=> true"), "{seen}{}", text(&second.stderr));
    // A third client, killed while attached, leaves the lab running.
    let mut killed =
        sb.clonet().args(["attach", "shared"]).stdin(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    killed.kill().unwrap();
    killed.wait().unwrap();
    // exec: output, and the command's own exit status.
    let out = sb.clonet().args(["exec", "shared", "c", "--", "sh", "-c", "echo hi; exit 3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "hi\n");
    let out = sb.clonet().args(["exec", "shared", "zz", "--", "true"]).output().unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("no node called \"zz\""), "{}", text(&out.stderr));
    let out = sb.clonet().args(["exec", "nolab", "a", "--", "true"]).output().unwrap();
    assert!(
        text(&out.stderr).contains("no lab called \"nolab\" is running (running: shared)"),
        "{}",
        text(&out.stderr)
    );
    let out = sb.clonet().arg("ls").output().unwrap();
    let listing = text(&out.stdout);
    assert!(listing.lines().any(|l| l.starts_with("shared") && l.split_whitespace().nth(2) == Some("3")), "{listing}");
    let out = sb.clonet().args(["stop", "shared"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    lab.child.wait().unwrap();
    assert_nothing_left(&sb);
    let out = sb.clonet().arg("ls").output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "no lab is running");
}
