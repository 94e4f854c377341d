//! Link impairments, captures and sniffing on real ns links: delay and
//! loss measured with ping, seeded runs that lose the same frames, pcaps
//! read back by tshark (also live, through `clonet capture`), and bad
//! values refused while the link keeps its settings.
mod common;
use common::*;
use std::process::Stdio;

fn tshark_fields(pcap: &std::path::Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs (tools/test.sh installs it)");
    assert!(out.status.success(), "tshark failed: {}", text(&out.stderr));
    text(&out.stdout).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

fn number(stdout: &str, key: &str) -> f64 {
    printed(stdout, key).first().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key} in {stdout}"))
}

#[test]
fn delay_and_loss_measured_by_ping_match_the_settings() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "measure.rhai",
        r#"
fn avg_rtt(out) {
    // (Called after a first ping, so no ARP exchange is in the figures.)
    // "rtt min/avg/max/mdev = 40.1/40.3/..."
    parse_float(out.split("mdev = ")[1].split("/")[1])
}
let a = node("a"); let b = node("b");
let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24", delay: "20ms" });
a.exec("ping -c 1 10.0.0.2");
let base = a.exec("ping -c 10 -i 0.05 10.0.0.2").stdout;
print(`rtt_link ${avg_rtt(base)}`);
// One direction only: requests lost at 20 %, replies untouched.
l.set(#{ a_to_b: #{ loss: 20 }, seed: 11 });
let out = a.exec("ping -c 2000 -i 0.002 -W 1 -q 10.0.0.2", #{ timeout_ms: 60000 }).stdout;
let received = parse_int(out.split("transmitted, ")[1].split(" ")[0]);
print(`loss_pct ${(2000 - received) * 100.0 / 2000.0}`);
let c = l.counters();
print(`impair_loss_at_b ${c[1].tx_drops.impair_loss}`);
print(`impair_loss_at_a ${c[0].tx_drops.get("impair_loss") ?? 0}`);
// A LAN port delays both ways; a link between LANs too.
let s1 = lan("s1"); let s2 = lan("s2");
let h = node("h");
link(a, s1, #{ ip: "10.1.0.1/24", delay: "15ms" });
link(h, s2, #{ ip: "10.1.0.2/24" });
let up = link(s1, s2);
a.exec("ping -c 1 10.1.0.2");
print(`rtt_port ${avg_rtt(a.exec("ping -c 5 -i 0.05 10.1.0.2").stdout)}`);
up.set(#{ delay: "5ms" });
port(a, s1).set(#{});
print(`rtt_uplink ${avg_rtt(a.exec("ping -c 5 -i 0.05 10.1.0.2").stdout)}`);
"#,
    );
    let rtt = number(&stdout, "rtt_link");
    // The floor is the delay itself; the ceiling leaves a noisy machine
    // a few ms of scheduling, far below a delay applied twice (60 ms).
    assert!((40.0..=45.0).contains(&rtt), "20 ms each way: RTT {rtt} ms\n{stdout}");
    let loss = number(&stdout, "loss_pct");
    assert!((17.0..=23.0).contains(&loss), "20 % loss, measured {loss} %\n{stdout}");
    let dropped = number(&stdout, "impair_loss_at_b");
    // The counter also sees the odd IPv6 frame the node sends meanwhile.
    assert!((dropped - loss * 20.0).abs() <= 5.0, "the counter agrees with ping: {dropped}\n{stdout}");
    assert_eq!(number(&stdout, "impair_loss_at_a"), 0.0, "replies are not impaired");
    let port = number(&stdout, "rtt_port");
    assert!((30.0..=35.0).contains(&port), "15 ms each way at the LAN port: {port}\n{stdout}");
    let uplink = number(&stdout, "rtt_uplink");
    assert!((10.0..=14.0).contains(&uplink), "5 ms each way between the LANs: {uplink}\n{stdout}");
    assert_nothing_left(&sb);
}

/// The echo sequence numbers that came back, with duplicates marked.
fn answered(stdout: &str, key: &str) -> String {
    printed(stdout, key).join(" ")
}

#[test]
fn the_same_seed_drops_duplicates_and_delays_the_same_frames() {
    let sb = Sandbox::new();
    let script = r#"
seed(7);
fn answers(n, ip) {
    let out = n.exec(`ping -c 150 -i 0.02 -W 1 ${ip}`, #{ timeout_ms: 30000 }).stdout;
    let seqs = [];
    for line in out.split("\n") {
        if line.contains("icmp_seq=") {
            let s = line.split("icmp_seq=")[1].split(" ")[0];
            seqs.push(if line.contains("DUP") { `${s}d` } else { s });
        }
    }
    seqs
}
let runs = #{};
for pair in [["a", "b", "lab seed"], ["c", "d", "link seed 42"], ["e", "f", "link seed 43"]] {
    let x = node(pair[0]); let y = node(pair[1]);
    // No IPv6: its unsolicited frames would come at random times.
    for n in [x, y] { n.sysctl("net.ipv6.conf.all.disable_ipv6", "1"); n.sysctl("net.ipv6.conf.default.disable_ipv6", "1"); }
    let l = link(x, y, #{ ip_a: "10.9.0.1/24", ip_b: "10.9.0.2/24" });
    // Static neighbours: no ARP frame comes at a time of its own choosing.
    x.exec(`ip neigh replace 10.9.0.2 lladdr ${y.ifaces[0].mac} nud permanent dev eth0`);
    y.exec(`ip neigh replace 10.9.0.1 lladdr ${x.ifaces[0].mac} nud permanent dev eth0`);
    assert(ping(x, y));
    let opts = #{ loss: 25, loss_correlation: 30, duplicate: 5, delay: "1ms", jitter: "500us" };
    if pair[2] == "link seed 42" { opts.seed = 42; }
    if pair[2] == "link seed 43" { opts.seed = 43; }
    l.set(opts);
    print(`${pair[2]}: ${answers(x, "10.9.0.2")}`);
}
"#;
    let first = sb.run_ok("seeded.rhai", script);
    let second = sb.run_ok("seeded.rhai", script);
    for key in ["lab seed:", "link seed 42:", "link seed 43:"] {
        let (x, y) = (answered(&first, key), answered(&second, key));
        assert!(!x.is_empty() && x.split(' ').count() < 150, "some answers, not all: {x}");
        assert_eq!(x, y, "{key} two runs answer the same echoes");
    }
    assert!(answered(&first, "link seed 42:").contains('d'), "duplicates show up");
    assert_ne!(answered(&first, "link seed 42:"), answered(&first, "link seed 43:"), "another seed, other frames");
    assert_nothing_left(&sb);
}

#[test]
fn a_capture_is_a_pcap_tshark_reads_with_wire_sized_frames_and_follows_live() {
    let sb = Sandbox::new();
    let pcap = sb.dir.path().join("ab.pcap");
    let script = format!(
        r#"
let a = node("a"); let b = node("b");
let l = link(a, b, #{{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" }});
let c = capture(l, "{pcap}");
assert(a.exec("ping -c 5 -i 0.1 10.0.0.2").ok);
b.exec("iperf3 -s -1 -D");
sleep(300);
let r = a.exec("iperf3 -c 10.0.0.2 -n 2M", #{{ timeout_ms: 20000 }});
assert(r.ok, r.stderr);
sleep(1000);   // the client is done once its data is queued, not delivered
let done = c.stop();
print(`frames ${{done.frames}}`);
print(`lost ${{done.lost}}`);
// Followed from another terminal: a steady ping for the live capture.
a.exec("ping -c 60 -i 0.1 10.0.0.2 >/dev/null 2>&1 &");
sniff(l, 4);
print("live window open");
sleep(5000);
"#,
        pcap = pcap.display()
    );
    let path = sb.write("cap.rhai", &script);
    let mut lab = sb.clonet().arg("run").arg(&path).stdout(Stdio::piped()).spawn().unwrap();
    // Wait until the lab is in its live window, then follow it.
    let stdout = lab.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            lines.push(line);
        }
        lines
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while rx
        .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        .expect("the lab reaches its live window")
        != "live window open"
    {}
    let live = sb.dir.path().join("live.pcap");
    let out = sb.clonet().args(["capture", "cap", "a--b", "--count", "6"]).output().unwrap();
    assert!(out.status.success(), "clonet capture: {}", text(&out.stderr));
    std::fs::write(&live, &out.stdout).unwrap();
    let refused = sb.clonet().args(["capture", "cap", "no--such"]).output().unwrap();
    let status = lab.wait().unwrap();
    let lines = reader.join().unwrap().join("\n");
    assert!(status.success(), "{lines}");
    // The file: every frame, wire sized, with the expected protocols.
    let rows = tshark_fields(&pcap, &["frame.len", "_ws.col.Protocol", "icmp.type"]);
    assert_eq!(rows.len() as f64, number(&lines, "frames"), "{lines}");
    assert_eq!(number(&lines, "lost"), 0.0);
    let count = |p: &str, t: &str| rows.iter().filter(|r| r[1] == p && r.get(2).is_some_and(|x| x == t)).count();
    assert_eq!((count("ICMP", "8"), count("ICMP", "0")), (5, 5), "5 echo requests and 5 replies");
    assert!(rows.iter().any(|r| r[1] == "ARP"), "ARP");
    let tcp: Vec<usize> =
        rows.iter().filter(|r| r[1] == "TCP" || r[1] == "iPerf3").map(|r| r[0].parse().unwrap()).collect();
    // (iperf3's server drops what is still in flight when the test ends,
    // so not all of the 2 MB cross.)
    assert!(tcp.len() > 300, "TCP bulk data as wire frames: {}", tcp.len());
    assert!(tcp.iter().filter(|l| **l == 1514).count() > 300, "full-sized segments");
    assert!(tcp.iter().all(|l| *l <= 1514), "no super-frame reaches the file: max {:?}", tcp.iter().max());
    // The live capture: a pcap stream tshark reads, with the pings in it.
    let live_rows = tshark_fields(&live, &["_ws.col.Protocol"]);
    assert_eq!(live_rows.len(), 6, "--count 6");
    assert!(live_rows.iter().any(|r| r[0] == "ICMP"), "{live_rows:?}");
    assert!(
        !refused.status.success() && text(&refused.stderr).contains("no link, LAN or port"),
        "{}",
        text(&refused.stderr)
    );
    // sniff printed decoded lines.
    assert!(lines.contains("ICMP echo request id") || lines.contains("ICMP echo reply id"), "{lines}");
    assert!(lines.contains("a:eth0 > b:eth0") && lines.contains("b:eth0 > a:eth0"), "{lines}");
    assert_nothing_left(&sb);
}

#[test]
fn invalid_impairments_are_refused_and_the_link_keeps_its_settings() {
    let sb = Sandbox::new();
    let stdout = sb.run_ok(
        "invalid.rhai",
        r#"
let a = node("a"); let b = node("b");
let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24", delay: "10ms" });
let bad = [
    #{ delay: "-5ms" }, #{ loss: 101 }, #{ rate: "10 parsecs" }, #{ delay: "5 fortnights" },
    #{ jitter: "1ms", distribution: "gauss" }, #{ limit: 0 }, #{ teleport: true },
    #{ loss_model: #{ gilbert: #{ p: 5 } } }, #{ a_to_b: #{ mtu: 9000 } }, #{ reorder: 10 },
];
for opts in bad {
    try { l.set(opts); print(`accepted ${opts}`); } catch (e) { print(`refused: ${e}`); }
}
assert(l.impairment.delay == "10ms" && l.impairment.len() == 1, `kept: ${l.impairment}`);
a.exec("ping -c 1 10.0.0.2");
let rtt = a.exec("ping -c 3 -i 0.05 10.0.0.2").stdout.split("mdev = ")[1].split("/")[1];
print(`rtt ${rtt}`);
try { link(a, b, #{ loss: 200 }); } catch (e) { print(`refused link: ${e}`); }
assert(links().len() == 1, "no half-made link");
"#,
    );
    assert!(!stdout.contains("accepted"), "{stdout}");
    assert_eq!(stdout.matches("refused: ").count(), 10, "{stdout}");
    for why in [
        "out of range",
        "not a rate",
        "not a time",
        "unknown distribution",
        "unknown option",
        "needs r",
        "needs a delay",
    ] {
        assert!(stdout.contains(why), "{why}: {stdout}");
    }
    assert!(stdout.contains("refused link:"), "{stdout}");
    let rtt = number(&stdout, "rtt");
    assert!((20.0..=21.5).contains(&rtt), "still 10 ms each way: {rtt}");
    // Uncaught, the error points at the call.
    let out =
        sb.run(&sb.write(
            "bad.rhai",
            "let a = node(\"a\"); let b = node(\"b\");\nlet l = link(a, b);\nl.set(#{ loss: 150 });\n",
        ));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("bad.rhai:3:") && err.contains("loss 150 is out of range"), "{err}");
    assert_nothing_left(&sb);
}
