//! Chaos: node processes of every kind are killed from outside, in a
//! random order, while traffic runs. Each death is reported as an event,
//! the nodes left keep forwarding, and the teardown leaves nothing.
mod common;

use common::*;

const LAB: &str = r#"
let sw = lan("sw");
for i in 1..=3 {
    link(node(`n${i}`), sw, #{ ip: `10.9.0.${i}/24` });
}
link(node("u", #{ kind: "uml" }), sw, #{ ip: "10.9.0.10/24" });
link(node("k", #{ kind: "kvm" }), sw, #{ ip: "10.9.0.11/24" });
assert(ping(get_node("n1"), get_node("u")) && ping(get_node("n1"), get_node("k")), "everyone is up");
// Traffic while the nodes die: n1 pings n2, n2 pings the machines.
get_node("n1").exec("ping -q -i 0.1 -w 120 10.9.0.2 >/dev/null 2>&1 &");
get_node("n2").exec("ping -q -i 0.1 -w 120 10.9.0.10 >/dev/null 2>&1 &");
get_node("n2").exec("ping -q -i 0.1 -w 120 10.9.0.11 >/dev/null 2>&1 &");
"#;

/// The process of the machine whose command line holds `needle` that is
/// the init of its own PID namespace (the machine itself, not its helper).
fn machine_init(needle: &str, program: &str) -> i32 {
    for p in processes_matching(needle) {
        let pid: i32 = p.split(':').next().unwrap().parse().unwrap();
        if !p.contains(program) || p.contains("__machine") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap_or_default();
        if nspid.split_whitespace().last() == Some("1") {
            return pid;
        }
    }
    panic!("no {program} init in {:#?}", processes_matching(needle))
}

#[test]
fn killed_nodes_of_every_kind_are_reported_and_the_rest_forwards() {
    let sb = Sandbox::new();
    let lab = serve(&sb, "chaos", LAB, false);
    let mut client = Raw::connect(&lab.socket);
    let mut seen = Vec::new();
    client.send(r#"{"id":1,"watch":true}"#);
    assert_eq!(client.answer(1, &mut seen)["ok"]["reply"], "done");
    client.send(r#"{"id":2,"command":{"op":"node_info","node":"n3"}}"#);
    let info = client.answer(2, &mut seen);
    let n3 = info["ok"]["pid"].as_i64().unwrap_or_else(|| panic!("{info}")) as i32;
    let here = sb.run_base().to_string_lossy().to_string();
    let mut victims = vec![
        ("n3", n3),
        ("u", machine_init(&format!("{here}/chaos/u.machine/"), "linux.uml")),
        ("k", machine_init(&format!("{here}/chaos/k.machine/"), "qemu-system")),
    ];
    // A new order each run, printed so that a failure can be replayed.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    println!("chaos seed {seed}");
    for i in (1..victims.len()).rev() {
        victims.swap(i, (seed as usize >> i) % (i + 1));
    }
    let mut id = 10;
    for (node, pid) in &victims {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        assert!(
            client.event_where(&mut seen, |e| e["event"] == "node_dead" && e["node"] == *node),
            "the death of {node} is an event: {seen:#?}"
        );
        id += 1;
        client.send(&format!(
            r#"{{"id":{id},"command":{{"op":"exec","node":"n1","request":{{"argv":["ping","-c","1","-W","2","10.9.0.2"],"stdin":[],"timeout":{{"secs":10,"nanos":0}}}}}}}}"#
        ));
        let answer = client.answer(id, &mut seen);
        assert_eq!(answer["ok"]["status"], 0, "n1 still reaches n2 after {node} died: {answer}");
    }
    // A dead node says so at once rather than waiting out a timeout.
    id += 1;
    let started = std::time::Instant::now();
    client.send(&format!(
        r#"{{"id":{id},"command":{{"op":"ping","from":"n3","to":{{"node":"n1"}},"timeout_ms":5000}}}}"#
    ));
    let answer = client.answer(id, &mut seen);
    assert!(answer["error"].to_string().contains("n3"), "a ping from a dead node fails: {answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "at once, not after its timeout");
    // The lab itself still answers.
    id += 1;
    client.send(&format!(r#"{{"id":{id},"command":{{"op":"lab_info"}}}}"#));
    let info = client.answer(id, &mut seen);
    assert!(info.get("ok").is_some(), "{info}");
    drop(client);
    drop(lab);
    assert_nothing_left(&sb);
}
