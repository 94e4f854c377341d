//! VXLAN endpoints against Linux's own `vxlan` device. Three network
//! namespaces of the test's stand in for machines: `lab` runs clonet,
//! `vtep` holds a Linux vxlan device bridged to a veth whose other end is
//! in `peer`, which has an address on the overlay. The underlay is a veth
//! between `lab` and `vtep`; nothing touches the machine's own network.
mod common;

use common::*;

/// The three namespaces, wired: underlay 10.77.0.1 (lab) – 10.77.0.2
/// (vtep), overlay 10.88.0.0/24 with the peer at 10.88.0.1.
fn wire() -> (TestNetns, TestNetns, TestNetns) {
    let (lab, vtep, peer) = (TestNetns::new("vxl"), TestNetns::new("vxv"), TestNetns::new("vxp"));
    let sh = |ns: &TestNetns, line: &str| {
        let argv: Vec<&str> = line.split_whitespace().collect();
        let out = ns.run(&argv);
        assert!(out.status.success(), "{line}: {}", text(&out.stderr));
    };
    // Each pair is made straight into its two namespaces: the machine's
    // own namespace never holds either end.
    for (a, na, b, nb) in [("vxu0", &lab, "vxu1", &vtep), ("vxo0", &vtep, "vxo1", &peer)] {
        let out = std::process::Command::new("ip")
            .args(["link", "add", a, "netns", &na.0, "type", "veth", "peer", "name", b, "netns", &nb.0])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    sh(&lab, "ip addr add 10.77.0.1/24 dev vxu0");
    sh(&lab, "ip link set vxu0 up");
    sh(&vtep, "ip addr add 10.77.0.2/24 dev vxu1");
    sh(&vtep, "ip link set vxu1 up");
    sh(&vtep, "ip link add vx0 type vxlan id 42 remote 10.77.0.1 dstport 4789 dev vxu1");
    sh(&vtep, "ip link add br0 type bridge");
    sh(&vtep, "ip link set vx0 master br0");
    sh(&vtep, "ip link set vxo0 master br0");
    for dev in ["vx0", "vxo0", "br0"] {
        sh(&vtep, &format!("ip link set {dev} up"));
    }
    sh(&peer, "ip addr add 10.88.0.1/24 dev vxo1");
    sh(&peer, "ip link set vxo1 mtu 1450");
    sh(&peer, "ip link set vxo1 up");
    // A veth leaves checksums to be filled in (offload) and the Linux
    // vxlan device sends them so: clonet, in user space, gets them unfilled.
    // A real NIC fills them; here the sender does.
    sh(&peer, "ethtool -K vxo1 tx off");
    (lab, vtep, peer)
}

const LAB: &str = r#"
let sw = lan("sw");
let n = node("n");
link(n, sw, #{ ip: "10.88.0.2/24", mtu: 1450 });
vxlan(sw, #{ vni: 42, remote: "10.77.0.2", mtu: 1450 });
"#;

#[test]
fn a_linux_vxlan_device_and_a_clonet_lan_reach_each_other_both_ways() {
    let sb = Sandbox::new();
    let (lab_ns, vtep, peer) = wire();
    let path = sb.write("vx.rhai", LAB);
    let served = serve_with(lab_ns.clonet(&sb), "vx", &path, false);
    // From the Linux side to the lab's node, and back: MACs learned both ways.
    let ping = peer.run(&["ping", "-c", "3", "-W", "2", "10.88.0.2"]);
    assert!(ping.status.success(), "the peer pings the lab's node: {}", text(&ping.stdout));
    let back = lab_ns.clonet(&sb).args(["exec", "vx", "n", "--", "ping", "-c", "2", "-W", "2", "10.88.0.1"]).output();
    let back = back.unwrap();
    assert!(back.status.success(), "the lab's node pings the peer: {}", text(&back.stdout));
    // A full-size frame of the overlay (1450) crosses in one datagram.
    let big = peer.run(&["ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1422", "10.88.0.2"]);
    assert!(big.status.success(), "{}", text(&big.stdout));
    // TCP crosses both ways of the tunnel (segments cut to the overlay's MTU).
    let server = lab_ns.clonet(&sb).args(["exec", "vx", "n", "--", "iperf3", "-s", "-1", "-D"]).output().unwrap();
    assert!(server.status.success(), "{}", text(&server.stderr));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let tcp = peer.run(&["iperf3", "-c", "10.88.0.2", "-t", "1"]);
    assert!(tcp.status.success(), "iperf3 through the tunnel: {}{}", text(&tcp.stdout), text(&tcp.stderr));
    // The Linux device learned the lab's node behind clonet's address.
    let fdb = vtep.run(&["bridge", "fdb", "show", "dev", "vx0"]);
    assert!(text(&fdb.stdout).contains("dst 10.77.0.1 self"), "{}", text(&fdb.stdout));
    // A datagram from another address is counted and dropped; one of
    // another VNI from the remote too.
    let foreign = lab_ns.run(&[
        "sh",
        "-c",
        "printf '\\010\\0\\0\\0\\0\\0\\052\\0xxxxxxxxxxxxxxxxxxxxxx' | socat -u - UDP4-SENDTO:127.0.0.1:4789",
    ]);
    assert!(foreign.status.success(), "{}", text(&foreign.stderr));
    let other_vni = vtep.run(&[
        "sh",
        "-c",
        "printf '\\010\\0\\0\\0\\0\\0\\053\\0xxxxxxxxxxxxxxxxxxxxxx' | socat -u - UDP4-SENDTO:10.77.0.1:4789",
    ]);
    assert!(other_vni.status.success(), "{}", text(&other_vni.stderr));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let info = attach_with_input(lab_ns.clonet(&sb), "vx", "print(get_node(\"vxlan42\").info().detail);\n");
    let shown = text(&info.stdout);
    assert!(
        shown.contains(
            "VXLAN VNI 42 to 10.77.0.2 port 4789 from port 4789; dropped: 1 from other addresses, 1 not of this tunnel"
        ),
        "{shown}{}",
        text(&info.stderr)
    );
    // The lab's counters saw the frames cross its tunnel port.
    let counters = attach_with_input(
        lab_ns.clonet(&sb),
        "vx",
        "print(get_lan(\"sw\").counters().filter(|p| p.node == \"vxlan42\").map(|p| p.rx_frames > 0 && p.tx_frames > 0));\n",
    );
    assert!(text(&counters.stdout).contains("[true]"), "{}", text(&counters.stdout));
    drop(served);
    assert_nothing_left(&sb);
}

#[test]
fn two_lans_of_one_lab_tunnel_to_each_other_over_loopback_and_bad_tunnels_are_refused() {
    let sb = Sandbox::new();
    let out = sb.run_ok(
        "loop.rhai",
        r#"
let east = lan("east"); let west = lan("west");
link(node("e"), east, #{ ip: "10.7.0.1/24" });
link(node("w"), west, #{ ip: "10.7.0.2/24" });
vxlan(east, #{ vni: 7, remote: "127.0.0.1", port: 47893, local_port: 47892 });
vxlan(west, #{ vni: 7, remote: "127.0.0.1", port: 47892, local_port: 47893, name: "back" });
print(`ping ${get_node("e").exec("ping -c 2 -W 2 10.7.0.2").ok}`);
try { vxlan(east, #{ vni: 7, remote: "127.0.0.1", local_port: 47892, name: "again" }); } catch (e) { print(`taken ${e}`); }
try { vxlan(east, #{ vni: 16777216, remote: "127.0.0.1" }); } catch (e) { print(`vni ${e}`); }
try { vxlan(east, #{ vni: 1, remote: "239.1.1.1" }); } catch (e) { print(`group ${e}`); }
"#,
    );
    assert!(out.contains("ping true"), "{out}");
    assert!(out.contains("taken") && out.contains("binding UDP port 47892"), "{out}");
    assert!(out.contains("vni") && out.contains("24 bits"), "{out}");
    assert!(out.contains("group") && out.contains("not a unicast address"), "{out}");
    assert_nothing_left(&sb);
}

#[test]
fn as_an_ordinary_user_a_tunnel_works_too() {
    let user = UserSandbox::with_subordinate_ids();
    let out = user.run_ok(
        "uloop.rhai",
        r#"
let east = lan("east"); let west = lan("west");
link(node("e"), east, #{ ip: "10.7.1.1/24" });
link(node("w"), west, #{ ip: "10.7.1.2/24" });
vxlan(east, #{ vni: 8, remote: "127.0.0.1", port: 47895, local_port: 47894 });
vxlan(west, #{ vni: 8, remote: "127.0.0.1", port: 47894, local_port: 47895, name: "back" });
print(`ping ${get_node("e").exec("ping -c 2 -W 2 10.7.1.2").ok}`);
"#,
    );
    assert!(out.contains("ping true"), "{out}");
    user.assert_nothing_left();
}
