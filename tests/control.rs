//! The control socket of a running lab, through the real binary: `clonet
//! serve`, `ls`, `attach`, `exec`, `stop`, and raw JSON-line clients.
mod common;

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

#[test]
fn attached_repls_share_the_lab_and_exec_reports_the_commands_status() {
    let sb = Sandbox::new();
    let mut lab = serve(&sb, "shared", TWO_NODES, false);
    // The first attached REPL adds a node and links it, using the variables
    // attach binds for the existing nodes.
    let out = attach_with_input(
        sb.clonet(),
        "shared",
        "let c = node(\"c\")\nlink(c, a, #{ ip_a: \"10.9.0.1/24\", ip_b: \"10.9.0.2/24\" })\n:quit\n",
    );
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("Link(c--a)"), "{}", text(&out.stdout));
    // The second sees that change; the node outlived the first client.
    let second = attach_with_input(sb.clonet(), "shared", ":net\nc.exec(\"ping -c 1 -W 2 10.9.0.2\").ok\n");
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

const THREE_NODES: &str = r#"
let a = node("a"); let b = node("b"); let c = node("c");
link(a, b, #{ ip_a: "10.0.1.1/24", ip_b: "10.0.1.2/24" });
link(b, c, #{ ip_a: "10.0.2.1/24", ip_b: "10.0.2.2/24" });
"#;

/// Whether a process runs exactly `cmdline` (its words joined by spaces).
fn running(cmdline: &str) -> bool {
    processes_matching(cmdline).iter().any(|p| p.split_once(": ").is_some_and(|(_, c)| c.trim() == cmdline))
}

#[test]
fn a_long_exec_on_one_node_holds_up_no_command_on_the_others() {
    let sb = Sandbox::new();
    let mut lab = serve(&sb, "busy", THREE_NODES, false);
    // `clonet exec` of a 20 s command on a, as another terminal would.
    let started = std::time::Instant::now();
    let long = sb
        .clonet()
        .args(["exec", "busy", "a", "--", "sleep", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(10, || running("sleep 20")), "the command runs in a");

    // Another client: commands on b and c, and on the whole lab, are each
    // answered in well under a second meanwhile.
    let mut other = Raw::connect(&lab.socket);
    let mut seen = Vec::new();
    let exec = |id: u64, node: &str, argv: &str| {
        format!(
            r#"{{"id":{id},"command":{{"op":"exec","node":"{node}","request":{{"argv":{argv},"stdin":[],"timeout":{{"secs":10,"nanos":0}}}}}}}}"#
        )
    };
    let requests = [
        (1, "lab_info", r#"{"id":1,"command":{"op":"lab_info"}}"#.to_string()),
        (
            2,
            "ping from b to c",
            r#"{"id":2,"command":{"op":"ping","from":"b","to":{"node":"c"},"timeout_ms":2000}}"#.into(),
        ),
        (3, "exec on c", exec(3, "c", r#"["ip","-br","addr"]"#)),
        (4, "exec on b: ping c", exec(4, "b", r#"["ping","-c","1","-W","2","10.0.2.2"]"#)),
        (5, "counters", r#"{"id":5,"command":{"op":"counters"}}"#.into()),
        (
            6,
            "link b and c again",
            r#"{"id":6,"command":{"op":"add_link","a":"b","b":"c","ip_a":null,"ip_b":null,"options":{}}}"#.into(),
        ),
        (7, "node_info of a", r#"{"id":7,"command":{"op":"node_info","node":"a"}}"#.into()),
    ];
    for (id, what, line) in requests {
        let asked = std::time::Instant::now();
        other.send(&line);
        let answer = other.answer(id, &mut seen);
        let took = asked.elapsed();
        eprintln!("{what}: answered in {took:?} while a 20 s exec runs on a");
        assert!(answer.get("ok").is_some(), "{what}: {answer}");
        assert!(took < Duration::from_secs(1), "{what} took {took:?} while an exec ran on another node");
        match id {
            2 => assert!(answer["ok"]["rtt_us"].is_u64(), "b reaches c: {answer}"),
            3 | 4 => assert_eq!(answer["ok"]["status"], 0, "{what}: {answer}"),
            _ => {}
        }
    }

    // One connection: a request behind its own long exec is answered first.
    let mut one = Raw::connect(&lab.socket);
    one.send(&exec(10, "b", r#"["sleep","20"]"#));
    assert!(
        eventually(10, || processes_matching("sleep 20").iter().filter(|p| p.ends_with(": sleep 20 ")).count() == 2)
    );
    let asked = std::time::Instant::now();
    one.send(r#"{"id":11,"command":{"op":"lab_info"}}"#);
    let first = one.next();
    let took = asked.elapsed();
    eprintln!("lab_info behind a long exec on the same connection: answered in {took:?}");
    assert_eq!(first["id"], 11, "{first}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Stopping a node ends the command running on it at once, and its
    // client is told why; the same for b's, on the one connection.
    for (node, id) in [("a", 20), ("b", 21)] {
        let asked = std::time::Instant::now();
        other.send(&format!(r#"{{"id":{id},"command":{{"op":"stop_node","node":"{node}"}}}}"#));
        let answer = other.answer(id, &mut seen);
        let took = asked.elapsed();
        eprintln!("stop_node {node} with a 20 s exec on it: answered in {took:?}");
        assert!(answer.get("ok").is_some(), "{answer}");
        assert!(took < Duration::from_secs(5), "stop_node {node} took {took:?}");
    }
    let out = long.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("node \"a\" ended while the command ran on it: it was stopped"),
        "{}",
        text(&out.stderr)
    );
    let ended = one.next();
    assert_eq!((ended["id"].as_u64(), ended["kind"].as_str()), (Some(10), Some("state")), "{ended}");
    assert!(started.elapsed() < Duration::from_secs(20), "every exec ended before its 20 s");
    assert!(!running("sleep 20"));

    let out = sb.clonet().args(["stop", "busy"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    lab.child.wait().unwrap();
    // The nodes killed to stop them were stopped, not reported dead.
    let log: Vec<String> = lab.log.try_iter().collect();
    assert!(!log.iter().any(|l| l.contains("died")), "{log:?}");
    assert_nothing_left(&sb);
}
