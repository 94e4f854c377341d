//! Every option's range, refused with a clear error whoever sends the
//! value: a raw client of the control socket (as the GUI or another
//! program would) and a script. The lab goes on unchanged after each.
mod common;

use common::*;

/// A lab with two ns nodes and a LAN, served for raw clients.
const LAB: &str = r#"
let a = node("a"); let b = node("b");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
lan("sw");
"#;

/// Commands that break one rule each, and what the error must say.
const BAD_COMMANDS: &[(&str, &str)] = &[
    (r#"{"op":"add_node","name":"k","kind":"kvm","options":{"cpus":0}}"#, "cpus 0 is out of range (1..=64)"),
    (r#"{"op":"add_node","name":"k","kind":"kvm","options":{"cpus":65}}"#, "cpus 65 is out of range"),
    (r#"{"op":"add_node","name":"u","kind":"uml","options":{"mem_mb":4}}"#, "mem 4 MiB is out of range (16..=65536)"),
    (r#"{"op":"add_node","name":"u","kind":"uml","options":{"mem_mb":-1}}"#, "mem -1 MiB is out of range"),
    (r#"{"op":"add_node","name":"k","kind":"kvm","options":{"accel":"hvf"}}"#, "unknown variant `hvf`"),
    (r#"{"op":"add_node","name":"d","kind":"docker"}"#, "unknown variant `docker`"),
    (r#"{"op":"add_node","name":"n","kind":"ns","options":{"accel":"tcg"}}"#, "accel applies to kvm nodes"),
    (r#"{"op":"add_node","name":"u","kind":"uml","options":{"cpus":2}}"#, "cpus applies to kvm and ns nodes"),
    (r#"{"op":"add_node","name":"u","kind":"uml","options":{"args":["two words"]}}"#, "one word each"),
    (r#"{"op":"add_node","name":"u","kind":"uml","options":{"image":""}}"#, "image: the path is empty"),
    (
        r#"{"op":"add_link","a":"a","b":"b","ip_a":null,"ip_b":null,"options":{"mtu":10}}"#,
        "MTU 10 is out of range (68..=65521)",
    ),
    (
        r#"{"op":"join_lan","node":"a","lan":"sw","ip":null,"options":{"vlan":{"access":0}}}"#,
        "VLAN id 0 is out of range",
    ),
    (r#"{"op":"join_lan","node":"a","lan":"sw","ip":null,"options":{"vlan":{"access":4095}}}"#, "VLAN id 4095"),
    (r#"{"op":"join_lan","node":"a","lan":"sw","ip":null,"options":{"vlan":{"trunk":[]}}}"#, "at least one VLAN"),
    (r#"{"op":"join_lan","node":"a","lan":"sw","ip":null,"options":{"vlan":{"trunk":[7,7]}}}"#, "listed twice"),
    (r#"{"op":"set_impairment","link":"a--b","impair":{"a_to_b":{"delay":{"secs":100000,"nanos":0}}}}"#, "0..=1h"),
    (
        r#"{"op":"set_impairment","link":"a--b","impair":{"b_to_a":{"jitter":{"secs":18446744073709551615,"nanos":999999999}}}}"#,
        "jitter",
    ),
    (
        r#"{"op":"set_impairment","link":"a--b","impair":{"a_to_b":{"loss":{"random":{"p":7,"correlation":0}}}}}"#,
        "0..=1",
    ),
    (r#"{"op":"set_impairment","link":"a--b","impair":{"a_to_b":{"duplicate":-0.5}}}"#, "duplicate"),
    (r#"{"op":"set_impairment","link":"a--b","impair":{"a_to_b":{"rate":0}}}"#, "rate 0 bit/s is out of range"),
    (r#"{"op":"set_impairment","link":"a--b","impair":{"a_to_b":{"limit":0}}}"#, "limit 0 is out of range"),
    (
        r#"{"op":"set_impairment","link":"a--b","impair":{"a_to_b":{"distribution":"gauss"}}}"#,
        "unknown variant `gauss`",
    ),
    (r#"{"op":"set_impairment","link":"a--b","impair":{"a_to_b":{"reorder":0.5}}}"#, "reorder needs a delay"),
    (r#"{"op":"set_impairment","link":"a--b","impair":{"a_to_b":{"gap":3}}}"#, "gap needs a reorder"),
    (
        r#"{"op":"exec","node":"a","request":{"argv":["true"],"stdin":[],"timeout":{"secs":18446744073709551615,"nanos":0}}}"#,
        "timeout",
    ),
    (r#"{"op":"exec","node":"a","request":{"argv":["true"],"stdin":[],"timeout":{"secs":0,"nanos":0}}}"#, "1ms..=1h"),
    (
        r#"{"op":"exec","node":"a","request":{"argv":[],"stdin":[],"timeout":{"secs":1,"nanos":0}}}"#,
        "needs at least a program",
    ),
    (r#"{"op":"ping","from":"a","to":{"node":"b"},"timeout_ms":18446744073709551615}"#, "timeout"),
    (r#"{"op":"clone","source":{"node":"a"},"name":"c","cpus":0}"#, "cpus 0 is out of range"),
    (r#"{"op":"link_lans","a":"sw","b":"sw","vlan":{"access":5000}}"#, "VLAN id 5000"),
];

#[test]
fn the_control_socket_refuses_every_value_out_of_range_and_the_lab_goes_on() {
    let sb = Sandbox::new();
    let served = serve(&sb, "valid", LAB, false);
    let mut raw = Raw::connect(&served.socket);
    let mut seen = Vec::new();
    raw.send(r#"{"id":1,"command":{"op":"topology"}}"#);
    let before = raw.answer(1, &mut seen)["ok"].clone();
    assert!(before["nodes"]["a"].is_object(), "{before}");
    for (i, (command, why)) in BAD_COMMANDS.iter().enumerate() {
        let id = 100 + i as u64;
        raw.send(&format!(r#"{{"id":{id},"command":{command}}}"#));
        let answer = raw.answer(id, &mut seen);
        let error = answer["error"].as_str().unwrap_or_else(|| panic!("{command} was accepted: {answer}"));
        assert!(error.contains(why), "{command}: {error:?} does not say {why:?}");
        assert_eq!(answer["kind"], "invalid", "{command}: {answer}");
        // After each refusal the lab still answers, and the refused command changed nothing.
        raw.send(r#"{"id":2,"command":{"op":"exec","node":"a","request":{"argv":["ping","-c1","-W2","10.0.0.2"],"stdin":[],"timeout":{"secs":10,"nanos":0}}}}"#);
        let exec = raw.answer(2, &mut seen);
        assert_eq!(exec["ok"]["status"], 0, "after {command}: {exec}");
    }
    raw.send(r#"{"id":3,"command":{"op":"topology"}}"#);
    let after = raw.answer(3, &mut seen)["ok"].clone();
    assert_eq!(before, after, "refused commands left the topology as it was");
    // A command that is valid but names nothing that exists says so in its kind.
    raw.send(r#"{"id":5,"command":{"op":"node_info","node":"zz"}}"#);
    let answer = raw.answer(5, &mut seen);
    assert_eq!(answer["kind"], "not_found", "{answer}");
    // Outside a command, a malformed request names the field it got wrong.
    raw.send(r#"{"id":4,"watch":"yes"}"#);
    let error = raw.answer(4, &mut seen)["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("malformed request: watch: "), "{error}");
    drop(raw);
    let status = sb.clonet().args(["stop", "valid"]).status().unwrap();
    assert!(status.success());
    drop(served);
    assert_nothing_left(&sb);
}

/// Script calls that break one rule each, and what the error must say.
const BAD_CALLS: &[(&str, &str)] = &[
    (r#"node("k", #{ kind: "kvm", cpus: 0 })"#, "cpus 0 is out of range (1..=64)"),
    (r#"node("u", #{ kind: "uml", mem: 4 })"#, "mem 4 MiB is out of range"),
    (r#"node("k", #{ kind: "kvm", accel: "hvf" })"#, "accel is \"kvm\" or \"tcg\""),
    (r#"node("d", #{ kind: "docker" })"#, "unknown node kind"),
    (r#"node("u", #{ kind: "uml", cpus: 2 })"#, "cpus applies to kvm and ns nodes"),
    (r#"link(a, b, #{ mtu: 70000 })"#, "MTU 70000 is out of range"),
    (r#"link(a, sw, #{ vlan: 0 })"#, "VLAN id 0 is out of range"),
    (r#"link(a, sw, #{ trunk: [10, 4095] })"#, "VLAN id 4095"),
    (r#"link(a, b, #{ delay: "1e300s" })"#, "delay 1e300s is out of range (0..=1h)"),
    (r#"link(a, b, #{ jitter: 1e300 })"#, "jitter"),
    (r#"link(a, b, #{ loss: 150 })"#, "loss 150 is out of range"),
    (r#"link(a, b, #{ rate: "1e30gbit" })"#, "rate 1e30gbit is out of range"),
    (r#"link(a, b, #{ limit: 1000000 })"#, "limit 1000000 is out of range"),
    (r#"a.exec("true", #{ timeout_ms: 0 })"#, "timeout"),
    (r#"a.exec("true", #{ timeout_ms: 9223372036854775807 })"#, "1ms..=1h"),
    (r#"ping(a, b, #{ timeout_ms: -5 })"#, "must not be negative"),
    (r#"clone(a, "c", #{ cpus: 0 })"#, "cpus 0 is out of range"),
    (r#"sleep(9223372036854775807)"#, "out of range (0..=1h)"),
    (r#"wait_until(|| true, 9223372036854775807)"#, "out of range (0..=1h)"),
];

#[test]
fn scripts_get_the_same_refusals_with_the_position_of_the_call() {
    let sb = Sandbox::new();
    let mut script = String::from(
        "let a = node(\"a\"); let b = node(\"b\"); let sw = lan(\"sw\");\nlink(a, b, #{ ip_a: \"10.0.0.1/24\", ip_b: \"10.0.0.2/24\" });\n",
    );
    for (call, _) in BAD_CALLS {
        script.push_str(&format!(
            "try {{ {call}; print(\"accepted: {}\"); }} catch (e) {{ print(`refused: ${{e}}`); }}\n",
            call.replace('"', "'")
        ));
    }
    script.push_str("assert(nodes().len() == 2 && links().len() == 1, \"nothing was half-made\");\n");
    script.push_str("assert(ping(a, b), \"the lab still works\");\n");
    let stdout = sb.run_ok("refusals.rhai", &script);
    let refused: Vec<&str> = stdout.lines().filter(|l| l.starts_with("refused: ")).collect();
    assert!(!stdout.contains("accepted: "), "{stdout}");
    assert_eq!(refused.len(), BAD_CALLS.len(), "{stdout}");
    for ((call, why), line) in BAD_CALLS.iter().zip(&refused) {
        assert!(line.contains(why), "{call}: {line:?} does not say {why:?}");
    }
    // Uncaught, the error points at the call's line and column.
    let bad =
        sb.write("bad.rhai", "let a = node(\"a\");\nlet b = node(\"b\");\n  link(a, b, #{ delay: \"7200s\" });\n");
    let out = sb.run(&bad);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.rhai:3:3: error: ") && stderr.contains("delay 7200s is out of range (0..=1h)"),
        "{stderr}"
    );
    assert_nothing_left(&sb);
}
