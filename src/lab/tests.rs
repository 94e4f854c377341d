//! The Lab's unit tests: whole commands against a real switch and the
//! recording fake host, so no root is needed.
//!
//! Owns: nothing but its temporary run directories. Must not touch: real
//! nodes or namespaces.
use std::time::Duration;

use super::*;
use crate::host::fake::FakeHost;
use crate::switch::frame::VNET_HDR_LEN;
use crate::vocab::addr::Cidr;
use crate::vocab::units::test_values::vid;
use crate::vocab::VlanMode;
use command::{LinkOptions, NodeOptions};

fn lab(host: &FakeHost) -> (Lab, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Lab::new("t", Box::new(host.clone()), dir.path(), None).unwrap(), dir)
}

#[test]
fn builds_a_link_and_frames_cross_the_real_switch() {
    let host = FakeHost::default();
    let (mut lab, dir) = lab(&host);
    lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns }).unwrap();
    lab.execute(Command::AddNode { options: NodeOptions::default(), name: "b".into(), kind: NodeKind::Ns }).unwrap();
    let reply = lab
        .execute(Command::AddLink {
            a: "a".into(),
            b: "b".into(),
            ip_a: Some("10.0.0.1/24".parse().unwrap()),
            ip_b: Some("10.0.0.2/24".parse().unwrap()),
            options: LinkOptions::default(),
        })
        .unwrap();
    assert!(matches!(reply, Reply::Link(ref l) if l.name == "a--b"));
    let calls = host.calls();
    assert_eq!(calls[0], "start a");
    assert!(calls.iter().any(|c| c == "addr a:eth0 10.0.0.1/24"), "{calls:?}");
    let hosts = std::fs::read_to_string(dir.path().join("t/hosts")).unwrap();
    assert!(hosts.contains("10.0.0.2\tb"), "{hosts}");

    let wa = host.wire("a", "eth0").unwrap();
    let wb = host.wire("b", "eth0").unwrap();
    wb.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut frame = vec![0u8; VNET_HDR_LEN];
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    frame.resize(VNET_HDR_LEN + 60, 0);
    wa.send(&frame).unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(wb.recv(&mut buf).unwrap(), frame.len());
    // Counters move just after the write the peer already read.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while lab.counters()[1].counters.tx_frames == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = lab.counters();
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].counters.rx_frames, c[1].counters.tx_frames), (1, 1));
    assert_eq!(c[0].segment, "a--b");
}

#[test]
fn a_trunk_towards_a_node_carries_tagged_frames() {
    let host = FakeHost::default();
    let (mut lab, _dir) = lab(&host);
    lab.execute(Command::AddLan { name: "sw".into() }).unwrap();
    for (n, vlan) in [
        ("h", VlanMode::Access(vid(10))),
        ("r", VlanMode::Trunk(vec![vid(10), vid(20)])),
        ("g", VlanMode::Access(vid(20))),
    ] {
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: n.into(), kind: NodeKind::Ns }).unwrap();
        let options = LinkOptions { vlan: Some(vlan), ..Default::default() };
        lab.execute(Command::JoinLan { node: n.into(), lan: "sw".into(), ip: None, options }).unwrap();
    }
    let wire = |n: &str| {
        let w = host.wire(n, "eth0").unwrap();
        w.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        w
    };
    let (h, r, g) = (wire("h"), wire("r"), wire("g"));
    let mut buf = [0u8; 2048];
    // Untagged from the VLAN 10 access port: tagged 10 on the trunk.
    let mut frame = vec![0u8; VNET_HDR_LEN];
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    frame.resize(VNET_HDR_LEN + 60, 0x11);
    h.send(&frame).unwrap();
    let n = r.recv(&mut buf).unwrap();
    assert_eq!(n, frame.len() + 4);
    let eth = &buf[VNET_HDR_LEN..n];
    assert_eq!(&eth[12..16], &[0x81, 0x00, 0x00, 10], "802.1Q tag with VID 10");
    assert_eq!(&eth[16..18], &[0x08, 0x06], "the original EtherType follows the tag");
    assert!(g.recv(&mut buf).is_err(), "VLAN 20 sees nothing");
    // Tagged 20 from the trunk: untagged on the VLAN 20 access port only.
    let mut tagged = vec![0u8; VNET_HDR_LEN];
    tagged.extend_from_slice(&[0xff; 6]);
    tagged.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00, 20, 0x08, 0x06]);
    tagged.resize(VNET_HDR_LEN + 64, 0x22);
    r.send(&tagged).unwrap();
    let n = g.recv(&mut buf).unwrap();
    assert_eq!(n, tagged.len() - 4);
    assert_eq!(&buf[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14], &[0x08, 0x06]);
    assert!(h.recv(&mut buf).is_err(), "VLAN 10 sees nothing");
    let fdb = match lab.execute(Command::Fdb { lan: "sw".into() }).unwrap() {
        Reply::Fdb { rows } => rows,
        _ => unreachable!(),
    };
    assert_eq!(fdb.iter().map(|r| (r.node.as_str(), r.vlan)).collect::<Vec<_>>(), vec![("h", 10), ("r", 20)]);
}

#[test]
fn a_link_whose_address_fails_is_taken_away_again() {
    let host = FakeHost::default();
    let (mut lab, _dir) = lab(&host);
    for n in ["a", "b"] {
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: n.into(), kind: NodeKind::Ns }).unwrap();
    }
    lab.execute(Command::AddLan { name: "sw".into() }).unwrap();
    let refused: Cidr = "10.66.0.1/24".parse().unwrap();
    host.fail_addr(refused);
    let before = lab.topology().clone();
    let link = Command::AddLink {
        a: "a".into(),
        b: "b".into(),
        ip_a: None,
        ip_b: Some(refused),
        options: LinkOptions::default(),
    };
    assert!(lab.execute(link).is_err());
    let join =
        Command::JoinLan { node: "a".into(), lan: "sw".into(), ip: Some(refused), options: LinkOptions::default() };
    assert!(lab.execute(join).is_err());
    assert_eq!(lab.topology().links, before.links);
    assert_eq!(lab.topology().lans, before.lans);
    assert_eq!(lab.topology().nodes, before.nodes);
    assert!(lab.counters().is_empty(), "no switch port left behind");
}

#[test]
fn failed_commands_change_nothing() {
    let host = FakeHost::default();
    let (mut lab, _dir) = lab(&host);
    lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns }).unwrap();
    assert!(lab
        .execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns })
        .is_err());
    assert!(lab
        .execute(Command::AddNode { options: NodeOptions::default(), name: "x/y".into(), kind: NodeKind::Ns })
        .is_err());
    let e = lab
        .execute(Command::JoinLan { node: "a".into(), lan: "nolan".into(), ip: None, options: LinkOptions::default() })
        .unwrap_err();
    assert!(e.to_string().contains("no LAN called \"nolan\""), "{e}");
    let e = lab
        .execute(Command::AddLink {
            a: "a".into(),
            b: "a".into(),
            ip_a: None,
            ip_b: None,
            options: LinkOptions::default(),
        })
        .unwrap_err();
    assert!(matches!(e, LabError::Topology(TopologyError::SelfLink(_))));
    assert_eq!(host.calls(), vec!["start a".to_string()]);
    assert!(lab.topology().node("a").unwrap().ifaces.is_empty());
}

#[test]
fn a_half_made_link_is_rolled_back() {
    let host = FakeHost::default();
    let (mut lab, _dir) = lab(&host);
    lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns }).unwrap();
    lab.execute(Command::AddNode { options: NodeOptions::default(), name: "b".into(), kind: NodeKind::Ns }).unwrap();
    host.fail_ifaces_on("b");
    let link = |lab: &mut Lab| {
        lab.execute(Command::AddLink {
            a: "a".into(),
            b: "b".into(),
            ip_a: None,
            ip_b: None,
            options: LinkOptions::default(),
        })
    };
    assert!(link(&mut lab).is_err());
    assert!(lab.counters().is_empty(), "a's port was removed again");
    assert!(lab.topology().links.is_empty());
    assert!(lab.topology().node("a").unwrap().ifaces.is_empty());
    // a's end of the half-made link was closed by the switch.
    let wire = host.wire("a", "eth0").unwrap();
    assert!(wire.send(&[0u8; 64]).is_err(), "the port's fd is closed");
}

#[test]
fn a_panic_still_tears_the_lab_down() {
    let host = FakeHost::default();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let h = host.clone();
    let result = std::panic::catch_unwind(move || {
        let mut lab = Lab::new("p", Box::new(h), &base, None).unwrap();
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns })
            .unwrap();
        panic!("something broke");
    });
    assert!(result.is_err());
    assert!(host.calls().contains(&"stop a".to_string()));
    assert!(!dir.path().join("p").exists(), "run directory removed while unwinding");
}

#[test]
fn teardown_stops_nodes_and_removes_the_run_directory() {
    let host = FakeHost::default();
    let (mut lab, dir) = lab(&host);
    lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns }).unwrap();
    lab.execute(Command::AddLan { name: "sw".into() }).unwrap();
    lab.execute(Command::JoinLan { node: "a".into(), lan: "sw".into(), ip: None, options: LinkOptions::default() })
        .unwrap();
    assert!(dir.path().join("t/state.json").exists());
    drop(lab);
    assert!(host.calls().contains(&"stop a".to_string()));
    assert!(!dir.path().join("t").exists());
}

#[test]
fn a_saved_lab_is_checked_like_any_command_before_it_is_loaded() {
    // A value out of range, and a rule broken between valid values.
    refuses_saved_labs(&[
        (&|lab| lab["topology"]["nodes"]["a"]["options"] = serde_json::json!({ "cpus": 0 }), "cpus 0 is out of range"),
        (
            &|lab| lab["topology"]["nodes"]["a"]["options"] = serde_json::json!({ "accel": "tcg" }),
            "accel applies to kvm",
        ),
    ]);
}

/// A change that spoils a saved lab's JSON.
type SavedLabEdit = dyn Fn(&mut serde_json::Value);

/// Writes the saved form of a lab with one ns node `a`, spoilt by each
/// edit in turn, and requires that loading it fails saying `why` and
/// builds nothing. (The fake host keeps no disks, so the saved lab is
/// written here as `SaveLab` would write it for nodes without one.)
fn refuses_saved_labs(edits: &[(&SavedLabEdit, &str)]) {
    let host = FakeHost::default();
    let (mut lab, dir) = lab(&host);
    lab.execute(Command::AddNode { name: "a".into(), kind: NodeKind::Ns, options: NodeOptions::default() }).unwrap();
    let saved = dir.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let file = saved.join(super::rebuild::SAVED_LAB_FILE);
    let lab_file = super::rebuild::SavedLab { topology: lab.topology().clone(), disks: Default::default() };
    let good = serde_json::to_value(&lab_file).unwrap();
    for (edit, why) in edits {
        let mut bad = good.clone();
        edit(&mut bad);
        std::fs::write(&file, serde_json::to_vec(&bad).unwrap()).unwrap();
        let (mut other, _dir) = self::lab(&host);
        let err = other.execute(Command::LoadLab { dir: saved.clone() }).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
        assert!(other.topology().nodes.is_empty(), "nothing of a refused lab is built: {err}");
    }
}

#[test]
fn a_saved_lab_naming_a_missing_node_or_a_disk_outside_it_is_refused() {
    refuses_saved_labs(&[
        (&|lab| lab["topology"]["order"] = serde_json::json!(["a", "ghost"]), "no node \"ghost\""),
        (&|lab| lab["disks"] = serde_json::json!({ "a": "/etc/passwd" }), "bad disk path \"/etc/passwd\""),
    ]);
}

fn exec(node: &str, argv: &[&str]) -> Command {
    let request = crate::host::ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        stdin: Vec::new(),
        timeout: crate::vocab::Timeout::new(Duration::from_secs(60)).unwrap(),
        max_output: Default::default(),
        user: None,
        cwd: None,
    };
    Command::Exec { node: node.into(), request }
}

#[test]
fn a_scripts_long_exec_holds_up_no_other_thread_and_its_node_catches_up_after() {
    let host = FakeHost::default();
    host.sleep_on_exec_of("sleep");
    let (mut lab, _dir) = lab(&host);
    for n in ["a", "b", "c"] {
        lab.execute(Command::AddNode { options: NodeOptions::default(), name: n.into(), kind: NodeKind::Ns }).unwrap();
    }
    for (a, b) in [("a", "b"), ("b", "c")] {
        let link = Command::AddLink { a: a.into(), b: b.into(), ip_a: None, ip_b: None, options: Default::default() };
        lab.execute(link).unwrap();
    }
    let lab = shared::SharedLab::new(lab);
    // The script's thread runs a 2 s command on a, as `a.exec(…)` would.
    let started = std::time::Instant::now();
    let script = {
        let lab = lab.clone();
        std::thread::spawn(move || lab.execute(exec("a", &["sleep", "2"])))
    };
    while !host.calls().iter().any(|c| c.starts_with("exec a")) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Meanwhile another thread (a control client's, the GUI's) changes the
    // lab, a's link included: a is told once it is back.
    for cmd in [
        Command::LabInfo,
        exec("b", &["true"]),
        Command::DeleteLink { link: "a--b".into() },
        Command::StopNode { node: "c".into() },
        Command::NodeInfo { node: "a".into() },
    ] {
        let what = format!("{cmd:?}");
        let asked = std::time::Instant::now();
        lab.execute(cmd).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(asked.elapsed() < Duration::from_millis(500), "{what} took {:?}", asked.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(2), "all that while a's exec ran");
    let calls = host.calls();
    assert!(calls.contains(&"forget b:eth0".to_string()), "{calls:?}");
    assert!(!calls.contains(&"forget a:eth0".to_string()), "a is busy: told later: {calls:?}");
    // A command on a itself waits until a is back.
    let reply = lab.execute(exec("a", &["true"])).unwrap();
    assert!(matches!(reply, Reply::Exec(ref o) if o.status == 0), "{reply:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "the second exec on a waited for the first");
    assert!(matches!(script.join().unwrap(), Ok(Reply::Exec(ref o)) if o.status == 0));
    let calls = host.calls();
    let at = |c: &str| calls.iter().position(|x| x == c).unwrap_or_else(|| panic!("{c}: {calls:?}"));
    assert!(at(r#"exec a ["sleep", "2"]"#) < at("forget a:eth0") && at("forget a:eth0") < at(r#"exec a ["true"]"#));
    lab.teardown();
    assert!(lab.lock().is_torn_down());
}

#[test]
fn commands_on_a_lent_node_wait_or_fail_as_busy_before_changing_anything() {
    let host = FakeHost::default();
    host.sleep_on_exec_of("sleep");
    let (mut lab, _dir) = lab(&host);
    lab.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns }).unwrap();
    let job = match lab.attempt(exec("a", &["sleep", "0"])) {
        lending::Attempt::Lent(job) => job,
        _ => panic!("an exec borrows its node"),
    };
    // Commands on a wait (the caller is told which nodes); called directly
    // they fail as busy, before changing anything.
    match lab.attempt(Command::SetIp { node: "a".into(), iface: "eth0".into(), cidr: "10.0.0.1/24".parse().unwrap() }) {
        lending::Attempt::Busy { nodes, .. } => assert_eq!(nodes, ["a"]),
        _ => panic!("set_ip on a lent node waits for it"),
    }
    let e = lab.execute(Command::PauseNode { node: "a".into(), paused: true }).unwrap_err();
    assert!(matches!(e, LabError::Busy(ref n) if n == "a") && e.kind() == errors::ErrorKind::State, "{e}");
    assert!(matches!(lab.attempt(Command::LabInfo), lending::Attempt::Done(Ok(_))));
    let reply = lab.give_back(job, Ok(Reply::Done)).unwrap();
    assert!(matches!(reply, Reply::Done));
    assert!(lab.execute(Command::PauseNode { node: "a".into(), paused: true }).is_ok());
}

/// A shared lab with LAN `sw`, node `a` on it, and a plug of `protocol`
/// at `dir/plug` named `p`.
fn lab_with_plug(host: &FakeHost, protocol: crate::vocab::PlugProtocol) -> (shared::SharedLab, tempfile::TempDir) {
    let (lab, dir) = lab(host);
    let shared = shared::SharedLab::new(lab);
    shared.execute(Command::AddLan { name: "sw".into() }).unwrap();
    shared.execute(Command::AddNode { options: NodeOptions::default(), name: "a".into(), kind: NodeKind::Ns }).unwrap();
    shared
        .execute(Command::JoinLan { node: "a".into(), lan: "sw".into(), ip: None, options: LinkOptions::default() })
        .unwrap();
    let spec =
        crate::vocab::PlugSpec { protocol, path: dir.path().join("plug"), lan: "sw".into(), vlan: None, mtu: None };
    let options = NodeOptions { plug: Some(spec), ..Default::default() };
    shared.execute(Command::AddNode { options, name: "p".into(), kind: NodeKind::Plug }).unwrap();
    (shared, dir)
}

fn plug_report(lab: &shared::SharedLab) -> command::PlugReport {
    match lab.execute(Command::NodeInfo { node: "p".into() }).unwrap() {
        Reply::Node(info) => info.plug.expect("a plug reports its clients"),
        r => panic!("{r:?}"),
    }
}

/// Waits (bounded) until `cond` holds of the plug's report.
fn until_report(lab: &shared::SharedLab, cond: impl Fn(&command::PlugReport) -> bool) -> command::PlugReport {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = plug_report(lab);
        if cond(&r) || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn broadcast_frame(len: usize) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x06]);
    frame.resize(len, 0);
    frame
}

#[test]
fn a_plug_client_becomes_a_lan_port_until_it_leaves_and_runts_are_counted() {
    use std::os::unix::net::UnixDatagram;
    let host = FakeHost::with_real_plugs();
    let (lab, dir) = lab_with_plug(&host, crate::vocab::PlugProtocol::UmlBess);
    // A seqpacket client, as UML's bess transport connects.
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .unwrap();
    let addr = nix::sys::socket::UnixAddr::new(&dir.path().join("plug")).unwrap();
    nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).unwrap();
    let client = UnixDatagram::from(fd);
    let report = until_report(&lab, |r| r.clients.len() == 1);
    assert_eq!(report.clients[0].iface, "c1", "{report:?}");
    assert!(report.clients[0].peer.starts_with("pid "), "who it is: {report:?}");
    let topo = lab.lock().topology().clone();
    assert!(topo.lans["sw"].members.iter().any(|m| m.node == "p" && m.iface == "c1"), "a port of the LAN");
    // Its frames cross the switch to the node; a runt is counted and dropped.
    client.send(&broadcast_frame(60)).unwrap();
    client.send(&[1, 2, 3]).unwrap();
    let wire = host.wire("a", "eth0").unwrap();
    wire.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(wire.recv(&mut buf).unwrap(), VNET_HDR_LEN + 60, "the frame reached the node");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let runts = || {
        lab.lock()
            .counters()
            .into_iter()
            .find(|p| p.node == "p")
            .map_or(0, |p| p.counters.drops.get("runt").copied().unwrap_or(0))
    };
    while runts() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(runts(), 1, "the runt was counted on the client's port");
    drop(client);
    let report = until_report(&lab, |r| r.clients.is_empty());
    assert_eq!((report.joined, report.left, report.garbage), (1, 1, 0), "{report:?}");
    assert!(lab.lock().topology().nodes["p"].ifaces.is_empty(), "its port went with it");
    // The plug's socket goes with the plug.
    lab.execute(Command::DeleteNode { node: "p".into() }).unwrap();
    assert!(!dir.path().join("plug").exists(), "the plug removed its socket");
}

#[test]
fn a_stream_out_of_step_is_cut_off_and_counted_and_the_lan_goes_on() {
    use std::io::Write;
    let host = FakeHost::with_real_plugs();
    let (lab, dir) = lab_with_plug(&host, crate::vocab::PlugProtocol::QemuStream);
    let mut bad = std::os::unix::net::UnixStream::connect(dir.path().join("plug")).unwrap();
    until_report(&lab, |r| r.clients.len() == 1);
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let report = until_report(&lab, |r| r.left == 1);
    assert_eq!((report.left, report.garbage), (1, 1), "cut off for garbage: {report:?}");
    // The peer sees its connection closed.
    bad.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(std::io::Read::read(&mut bad, &mut [0u8; 16]).unwrap(), 0);
    // A well-behaved client still joins and is heard.
    let mut good = std::os::unix::net::UnixStream::connect(dir.path().join("plug")).unwrap();
    let report = until_report(&lab, |r| r.clients.len() == 1);
    assert_eq!(report.clients[0].iface, "c2", "numbers are not reused: {report:?}");
    let frame = broadcast_frame(60);
    good.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
    good.write_all(&frame).unwrap();
    let wire = host.wire("a", "eth0").unwrap();
    wire.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(wire.recv(&mut buf).unwrap(), VNET_HDR_LEN + 60);
}

#[test]
fn a_vde_handshake_that_is_not_vde_is_refused_and_said_why() {
    use std::io::Write;
    let host = FakeHost::with_real_plugs();
    let (lab, dir) = lab_with_plug(&host, crate::vocab::PlugProtocol::Vde);
    let mut c = std::os::unix::net::UnixStream::connect(dir.path().join("plug/ctl")).unwrap();
    c.write_all(&[0x55; 200]).unwrap();
    let report = until_report(&lab, |r| r.refused == 1);
    assert_eq!(report.refused, 1, "{report:?}");
    assert!(report.last_refusal.as_deref().unwrap_or("").contains("not a VDE request"), "{report:?}");
    assert!(report.clients.is_empty());
    // Deleting the LAN takes its plug, and the plug its directory.
    lab.execute(Command::DeleteLan { name: "sw".into() }).unwrap();
    assert!(!lab.lock().topology().nodes.contains_key("p"));
    assert!(!dir.path().join("plug").exists(), "the directory it made is gone");
}
