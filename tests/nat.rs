//! `nat` endpoints (passt): a node gets its address by DHCP through the
//! link, reaches a server the test runs on the host's 127.0.0.1, is
//! reached through a forwarded port, and the link is a link like any
//! (captured, impaired). Only loopback and the lab's own namespaces are
//! used; every transfer is bounded in size and time.
mod common;
use std::io::{Read, Write};
use std::path::Path;

use common::*;

/// An HTTP server on 127.0.0.1 that answers every request: `/big` with
/// `BIG` bytes, anything else with a greeting. It lives as long as the test.
fn host_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
                let mut head = [0u8; 2048];
                let n = stream.read(&mut head).unwrap_or(0);
                let big = String::from_utf8_lossy(&head[..n]).starts_with("GET /big");
                let body = if big { vec![b'x'; BIG] } else { b"hello from the host\n".to_vec() };
                let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = stream.write_all(&body);
            });
        }
    });
    port
}

const BIG: usize = 300_000;

/// A free TCP port on the host's loopback, for a forward.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The scenario, run by `run(name, script)`, with files in `dir`; it
/// returns passt's forward option, which names its process.
fn scenario(dir: &Path, run: impl Fn(&str, &str) -> String) -> String {
    let (server, forward) = (host_server(), free_port());
    let capture = dir.join("nat.pcap");
    let stdout = run(
        "nat.rhai",
        &format!(
            r#"
let gw = nat("gw", #{{ forward: ["tcp:{forward}:8080"] }});
let n = node("n");
let l = link(n, gw);
print(`addr ${{n.exec("ip -4 -o addr show eth0").stdout.split(" ").filter(|w| w.contains("/"))}}`);
print(`route ${{n.exec("ip route show default").stdout.trimmed()}}`);
let cap = capture(l, "{capture}");
print(`fetched ${{n.exec("busybox wget -q -O - http://10.0.2.2:{server}/hello").stdout.trimmed()}}`);
print(`captured ${{cap.stop().frames}}`);
n.exec("mkdir -p /tmp/www && echo served-by-the-node > /tmp/www/index.html && busybox httpd -p 8080 -h /tmp/www");
print(`forwarded ${{host_exec("busybox wget -q -O - http://127.0.0.1:{forward}/").stdout.trimmed()}}`);
l.set(#{{ loss: 10, seed: 7 }});
let big = n.exec("busybox wget -q -O - http://10.0.2.2:{server}/big | wc -c", #{{ timeout_ms: 120000 }});
print(`big ${{big.stdout.trimmed()}}`);
print(`lost ${{l.counters().map(|p| p.drops.values().reduce(|a, b| a + b, 0)).reduce(|a, b| a + b, 0) > 0}}`);
let m = node("m");
try {{ link(m, gw); print("second linked"); }} catch (e) {{ print(`second refused: ${{e}}`); }}
try {{ gw.exec("true"); }} catch (e) {{ print(`exec refused: ${{e}}`); }}
unlink(n, gw);
link(m, gw);
print(`relinked ${{m.exec("busybox wget -q -O - http://10.0.2.2:{server}/hello").stdout.trimmed()}}`);
"#,
            capture = capture.display()
        ),
    );
    assert!(stdout.contains("addr [\"10.0.2.15/24\"]"), "DHCP gave the address: {stdout}");
    assert!(stdout.contains("route default via 10.0.2.2 dev eth0"), "and the default route: {stdout}");
    assert!(stdout.contains("fetched hello from the host"), "the host's loopback at the gateway: {stdout}");
    assert!(stdout.contains("forwarded served-by-the-node"), "a host client through the forward: {stdout}");
    assert!(stdout.contains(&format!("big {BIG}")), "the whole transfer despite 10% loss: {stdout}");
    assert!(stdout.contains("lost true"), "the link did drop frames: {stdout}");
    assert!(stdout.contains("second refused") && stdout.contains("net::masquerade"), "{stdout}");
    assert!(stdout.contains("exec refused") && stdout.contains("runs no commands"), "{stdout}");
    assert!(stdout.contains("relinked hello from the host"), "once its node is unlinked, another may link: {stdout}");
    let read = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args(["-Y", &format!("tcp.port == {server} && tcp.flags.syn == 1"), "-T", "fields", "-e", "tcp.flags.ack"])
        .output()
        .unwrap();
    let flags = text(&read.stdout);
    let flags: Vec<&str> = flags.lines().collect();
    assert!(flags.contains(&"0") && flags.contains(&"1"), "the capture has the SYN and the SYN-ACK: {flags:?}");
    format!("--tcp-ports {forward}:8080")
}

#[test]
fn a_node_behind_nat_gets_dhcp_reaches_the_host_and_is_reached_through_a_forward() {
    let sb = Sandbox::new();
    let passt = scenario(sb.dir.path(), |name, script| sb.run_ok(name, script));
    assert_nothing_left(&sb);
    assert!(processes_matching(&passt).is_empty(), "passt is left: {:?}", processes_matching(&passt));
}

#[test]
fn nat_works_for_an_ordinary_user() {
    let us = UserSandbox::new();
    let passt = scenario(&us.home, |name, script| us.run_ok(name, script));
    us.assert_nothing_left();
    assert!(processes_matching(&passt).is_empty(), "passt is left: {:?}", processes_matching(&passt));
}

/// passt serves one node; the nodes of a LAN behind it reach the host
/// through that node made a NAT router (`net::masquerade`).
#[test]
fn a_lan_reaches_the_host_through_a_router_that_masquerades() {
    let sb = Sandbox::new();
    let server = host_server();
    let stdout = sb.run_ok(
        "behind.rhai",
        &format!(
            r#"
import "net" as net;
let gw = nat("gw");
let r = node("r");
link(r, gw);
let sw = lan("sw");
link(r, sw, #{{ ip: "192.168.50.1/24" }});
let hosts = [];
for i in 2..4 {{
    let h = node(`h${{i}}`);
    link(h, sw, #{{ ip: `192.168.50.${{i}}/24` }});
    h.add_route("default", #{{ via: "192.168.50.1" }});
    hosts.push(h);
}}
net::masquerade(r, "eth0");
for h in hosts {{ print(`${{h.name}} ${{h.exec("busybox wget -q -O - http://10.0.2.2:{server}/hello").stdout.trimmed()}}`); }}
try {{ net::masquerade(r, "eth0; reboot"); }} catch (e) {{ print(`refused ${{e}}`); }}
save_lab("{saved}");
for n in nodes() {{ n.delete(); }}
sw.delete();
load_lab("{saved}");
print(`loaded ${{get_node("r").exec("busybox wget -q -O - http://10.0.2.2:{server}/hello").stdout.trimmed()}}`);
print(`kinds ${{nodes().map(|n| n.info().kind)}}`);
"#,
            saved = sb.dir.path().join("saved").display()
        ),
    );
    assert!(stdout.contains("loaded hello from the host"), "a saved lab brings its nat endpoint back: {stdout}");
    assert!(stdout.contains("h2 hello from the host") && stdout.contains("h3 hello from the host"), "{stdout}");
    assert!(stdout.contains("is not an interface name"), "{stdout}");
    assert_nothing_left(&sb);
}
