//! The topology changes while the lab runs: links, LAN ports and nodes come
//! and go, links go down and up, nodes stop and start, and traffic on
//! unaffected links keeps flowing.
mod common;
use common::*;

#[test]
fn traffic_on_other_links_is_undisturbed_while_links_come_and_go() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "churn.rhai",
        r#"
let a = node("a"); let b = node("b"); let c = node("c");
let sw = lan("sw"); let d = node("d");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
link(a, c, #{ ip_a: "10.0.1.1/24", ip_b: "10.0.1.2/24" });
link(a, sw, #{ ip: "10.0.2.1/24" });
link(d, sw, #{ ip: "10.0.2.4/24" });
assert(ping(a, b));
// 250 echo requests, 10 ms apart, across a--b while everything else churns.
a.exec("ping -i 0.01 -c 250 -W 1 10.0.0.2 > /tmp/ping.log 2>&1 &");
for i in 0..5 {
    unlink(a, c);
    assert(!ping(a, "10.0.1.2", #{ timeout_ms: 100 }), "a--c is gone");
    link(a, c, #{ ip_a: "10.0.1.1/24", ip_b: "10.0.1.2/24" });
    assert(ping(a, c), "a--c is back");
    unlink(d, sw);
    link(d, sw, #{ ip: "10.0.2.4/24" });
    assert(ping(a, "10.0.2.4"), "d is back on the LAN");
    let e = node(`e${i}`);
    link(e, sw);
    e.delete();
}
assert(wait_until(|| a.exec("grep -q 'packets transmitted' /tmp/ping.log").ok, 15000), "ping finished");
let log = a.exec("cat /tmp/ping.log").stdout;
print(log);
"#,
    );
    assert!(stdout.contains("250 packets transmitted, 250 received, 0% packet loss"), "{stdout}");
}

#[test]
fn down_takes_carrier_away_on_both_ends() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "carrier.rhai",
        r#"
let a = node("a"); let b = node("b");
let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
fn carrier(n) { get_node(n).exec("cat /sys/class/net/eth0/carrier").stdout.trimmed() }
assert(carrier("a") == "1" && carrier("b") == "1");
l.down();
assert(!l.is_up);
print(`down: a=${carrier("a")} b=${carrier("b")}`);
print(`state: ${a.exec("ip link show eth0").stdout}`);
assert(!ping(a, b, #{ timeout_ms: 300 }));
l.up();
print(`up: a=${carrier("a")} b=${carrier("b")}`);
assert(ping(a, b));
"#,
    );
    assert!(stdout.contains("down: a=0 b=0"), "{stdout}");
    assert!(stdout.contains("NO-CARRIER"), "{stdout}");
    assert!(stdout.contains("up: a=1 b=1"), "{stdout}");
}

#[test]
fn a_stopped_node_restarts_with_its_configuration() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "restart.rhai",
        r#"
let a = node("a"); let b = node("b");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
b.add_route("10.99.0.0/16", "10.0.0.1");
b.exec("sleep 4207 >/dev/null 2>&1 &");
let old_pid = b.pid;
b.stop();
assert(!b.running);
assert(!ping(a, "10.0.0.2", #{ timeout_ms: 300 }));
print(`peer carrier while stopped: ${a.exec("cat /sys/class/net/eth0/carrier").stdout.trimmed()}`);
try { b.exec("true"); throw "exec on a stopped node worked"; }
catch (e) { assert(`${e}`.contains("is stopped"), `${e}`); }
b.start();
assert(b.running && b.pid != old_pid);
assert(ping(a, b), "b answers again");
print(`route: ${b.exec("ip route show 10.99.0.0/16").stdout.trimmed()}`);
print(`marker: ${b.exec("pgrep -c -x sleep || true").stdout.trimmed()}`);
print(`mac kept: ${b.ifaces[0].mac == b.exec("cat /sys/class/net/eth0/address").stdout.trimmed()}`);
"#,
    );
    assert!(stdout.contains("peer carrier while stopped: 0"), "{stdout}");
    assert!(stdout.contains("route: 10.99.0.0/16 via 10.0.0.1 dev eth0"), "{stdout}");
    assert!(stdout.contains("marker: 0"), "processes of the old run are gone: {stdout}");
    assert!(stdout.contains("mac kept: true"), "{stdout}");
    assert!(processes_matching("sleep 4207").is_empty());
}

#[test]
fn bad_arguments_are_clear_errors_that_change_nothing() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "bad.rhai",
        r#"
let a = node("a"); let b = node("b"); let sw = lan("sw");
link(a, b, #{ ip_a: "10.0.0.1/24" });
let gone = node("gone"); gone.delete();
let before = `${topology()}`;
let cases = [
    [|| node("a"), "already used by a node"],
    [|| lan("a"), "already used by a node"],
    [|| gone.delete(), "no node called \"gone\""],
    [|| gone.exec("true"), "no node called \"gone\""],
    [|| get_node("nope"), "no node called \"nope\""],
    [|| get_lan("nope"), "no LAN called \"nope\""],
    [|| get_link("a", "sw"), "no node called \"sw\""],
    [|| unlink(a, sw), "has no link to \"sw\""],
    [|| a.set_ip("eth9", "10.1.0.1/24"), "has no interface \"eth9\""],
    [|| a.set_ip("eth0", "10.0.0.1/24"), "already configured"],
    [|| a.set_ip("eth0", "300.1.1.1/24"), "not an IP address"],
    [|| link(a, b, #{ vlan: 10 }), "VLAN options apply to LAN ports"],
    [|| link(a, sw, #{ vlan: 5000 }), "out of range"],
    [|| link(a, sw, #{ vlan: 10, trunk: [20] }), "either vlan or trunk"],
    [|| link(a, sw, #{ trunk: ["x"] }), "VLAN ids are integers"],
    [|| link(sw, sw), "would make a loop"],
    [|| a.add_route("10.9.0.0/16", "nowhere"), "is not an IP address"],
    [|| a.add_route("10.9.0.0/16", #{ dev: "eth7" }), "has no interface \"eth7\""],
    [|| link(a, "b"), "Function not found: link (Node, "],
    [|| a.exec(42), "Function not found: exec (Node, i64)"],
    [|| wait_until(|| 1, 100), "returned i64, not a bool"],
];
for c in cases {
    let f = c[0];
    let want = c[1];
    let msg = "";
    try { f.call(); msg = "no error"; } catch (e) { msg = `${e}`; }
    if !msg.contains(want) { throw `expected an error containing '${want}', got '${msg}'`; }
}
assert(`${topology()}` == before, "failed calls left the topology as it was");
assert(ping(a, "10.0.0.1"), "the lab still works");
print("all bad arguments rejected");
"#,
    );
    assert!(stdout.contains("all bad arguments rejected"), "{stdout}");
}

#[test]
fn a_node_taking_its_interface_down_and_up_keeps_its_port() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "ifdown.rhai",
        r#"
let a = node("a"); let b = node("b");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
assert(ping(a, b));
b.exec("ip link set eth0 down");
assert(!ping(a, b, #{ timeout_ms: 400 }), "b's interface is down");
b.exec("ip link set eth0 up");
assert(wait_until(|| ping(a, b, #{ timeout_ms: 300 }), 5000), "the port survived b's interface going down");
let c = counters();
print(`drops ${c[1].drops}`);
"#,
    );
    assert!(stdout.contains("\"port_down\""), "frames towards the downed interface are counted: {stdout}");
}
