//! Labs written for other tools, run unchanged: the Kathará and
//! containerlab labs under `scripts/labs/` (FRR routing across several
//! routers, LANs of hosts, start-up files, a shared directory, lab.dep,
//! groups and kinds) run with `--images host`, every host reaches every
//! other, `clonet convert` then `run` builds the same lab, and bad lab
//! files are refused at their file and line, leaving nothing behind.
mod common;
use common::*;

use std::path::{Path, PathBuf};

/// A copy of `scripts/labs/NAME` in the sandbox (labs write to their
/// `shared/`).
fn lab_copy(sb: &Sandbox, name: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/labs").join(name);
    let to = sb.dir.path().join(name);
    let out = std::process::Command::new("cp").arg("-r").arg(&from).arg(&to).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    to
}

/// Rhai that waits until every address in `targets` answers from every
/// node in `from`, and prints one line per pair.
fn all_reach(from: &[&str], targets: &[&str]) -> String {
    let mut s = String::new();
    for f in from {
        for t in targets {
            s += &format!(
                "if !wait_until(|| ping(get_node(\"{f}\"), \"{t}\"), 40000) {{ throw \"{f} cannot reach {t}\"; }}\nprint(\"reach {f} {t}\");\n"
            );
        }
    }
    s
}

#[test]
fn a_kathara_lab_with_frr_runs_unchanged_on_host_images() {
    let sb = Sandbox::new();
    let lab = lab_copy(&sb, "kathara-ospf");
    let hosts = ["10.0.1.11", "10.0.1.12", "10.0.3.13"];
    let script = format!(
        r#"
let l = load_kathara("kathara-ospf", #{{ images: "host" }});
print(`nodes ${{l.nodes}}`);
print(`lans ${{l.lans}}`);
print(`about ${{lab_info().description}}`);
{}
let r1 = get_node("r1");
// Kathará's device defaults.
print(`defaults ${{r1.exec("cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/rp_filter /proc/sys/net/ipv4/conf/default/rp_filter /proc/sys/net/ipv4/conf/lo/rp_filter /proc/sys/net/ipv4/icmp_ratelimit /proc/sys/net/ipv6/conf/all/disable_ipv6 | tr '\n' ' '").stdout}}`);
// `systemctl start frr` ran FRR's init script, not the host's systemd.
print(`systemctl ${{r1.exec("head -3 $(command -v systemctl) | tail -1").stdout.trimmed()}}`);
print(`ospfd ${{r1.exec("pgrep -x ospfd >/dev/null && echo running").stdout.trimmed()}}`);
print(`full ${{r1.exec("vtysh -c 'show ip ospf neighbor' | grep -c Full").stdout.trimmed()}}`);
// The device's own files were copied into its root.
print(`conf ${{r1.exec("grep -c 'ospf router-id 10.255.0.1' /etc/frr/frr.conf").stdout.trimmed()}}`);
print(`log ${{r1.exec("grep -c 'Started watchfrr' /var/log/startup.log").stdout.trimmed()}}`);
let pc3 = get_node("pc3");
print(`mac ${{get_node("r3").info().ifaces[1].mac}}`);
print(`env ${{pc3.exec("echo $ROLE").stdout.trimmed()}}`);
print(`sysctl ${{pc3.exec("cat /proc/sys/net/ipv4/tcp_syncookies").stdout.trimmed()}}`);
print(`shared ${{pc3.exec("cat /shared/README").stdout.trimmed()}}`);
print(`hostlab ${{pc3.exec("touch /hostlab/x 2>/dev/null && echo writable || echo read-only").stdout.trimmed()}}`);
"#,
        all_reach(&["pc1", "pc3"], &hosts)
    );
    let out = sb.run_ok("t.rhai", &script);
    assert!(out.contains("nodes [\"r1\", \"r2\", \"r3\", \"pc1\", \"pc2\", \"pc3\"]"), "{out}");
    assert!(out.contains("lans [\"ab\", \"bc\", \"lana\", \"lanc\"]"), "{out}");
    assert!(out.contains("about OSPF across three routers, two LANs of hosts"), "{out}");
    for f in ["pc1", "pc3"] {
        for t in hosts {
            assert!(out.contains(&format!("reach {f} {t}")), "{out}");
        }
    }
    assert!(out.contains("defaults 1 0 0 0 0 1 "), "{out}");
    assert!(out.contains("systemctl # by its /etc/init.d script. Written by clonet's kathara module."), "{out}");
    assert!(out.contains("ospfd running") && out.contains("full 1") && out.contains("conf 1"), "{out}");
    assert!(out.contains("log 1"), "{out}");
    assert!(out.contains("mac 02:00:00:00:c0:03"), "{out}");
    assert!(out.contains("env client") && out.contains("sysctl 0"), "{out}");
    assert!(out.contains("shared shared by every device") && out.contains("hostlab read-only"), "{out}");
    // shared.startup wrote, in lab.dep's order, to the lab's own shared/.
    let started = std::fs::read_to_string(lab.join("shared/started")).unwrap();
    let order: Vec<&str> = started.lines().collect();
    assert_eq!(order.len(), 6, "{started}");
    let pos = |n: &str| order.iter().position(|o| *o == n).unwrap();
    assert!(pos("r1") < pos("pc1") && pos("r1") < pos("pc2") && pos("r3") < pos("pc3"), "{started}");
    assert_nothing_left(&sb);
}

#[test]
fn a_containerlab_topology_with_frr_runs_unchanged_on_host_images() {
    let sb = Sandbox::new();
    lab_copy(&sb, "clab-ospf");
    let hosts = ["10.1.1.11", "10.1.1.12", "10.1.3.13"];
    let script = format!(
        r#"
let l = load_clab("clab-ospf/ospf.clab.yml", #{{ images: "host" }});
print(`nodes ${{l.nodes}}`);
print(`lans ${{l.lans}}`);
{}
print(`env ${{get_node("h3").exec("echo $LAB").stdout.trimmed()}} ${{get_node("h1").exec("echo $LAB").stdout.trimmed()}}`);
print(`mac ${{get_node("h2").info().ifaces[0].mac}}`);
print(`bind ${{get_node("h1").exec("cat /shared/README; touch /shared/x 2>/dev/null || echo read-only").stdout}}`);
print(`frr ${{get_node("r2").exec("vtysh -c 'show ip route ospf' | grep -c 10.1.1.0/24").stdout.trimmed()}}`);
"#,
        all_reach(&["h1", "h2", "h3"], &hosts)
    );
    let out = sb.run_ok("t.rhai", &script);
    assert!(out.contains("nodes [\"r1\", \"r2\", \"h1\", \"h2\", \"h3\"]") && out.contains("lans [\"sw\"]"), "{out}");
    for f in ["h1", "h2", "h3"] {
        for t in hosts {
            assert!(out.contains(&format!("reach {f} {t}")), "{out}");
        }
    }
    // The node's own env wins over the defaults'.
    assert!(out.contains("env ospf-h3 ospf"), "{out}");
    assert!(out.contains("mac 02:00:00:00:01:12"), "{out}");
    assert!(out.contains("bind shared with h1\nread-only"), "{out}");
    assert!(out.contains("frr 1"), "{out}");
    assert_nothing_left(&sb);
}

/// What a lab built: every node's interfaces (name, MAC, wire) and the
/// addresses its start-up gave them, in a stable order.
const DUMP: &str = r#"
let lines = [];
for n in nodes() {
    let info = n.info();
    for i in info.ifaces { lines.push(`${n.name} ${i.name} ${i.mac} ${i.attachment}`); }
    lines.push(`${n.name} addrs ${n.exec("ip -4 -o addr show | awk '{print $2, $4}' | sort | tr '\n' ' '").stdout}`);
}
lines.sort();
for l in lines { print(`dump ${l}`); }
print(`dump lans ${lans().map(|l| l.name)}`);
"#;

fn dump_lines(out: &str) -> Vec<String> {
    out.lines().filter(|l| l.starts_with("dump ")).map(str::to_string).collect()
}

#[test]
fn converting_then_running_builds_the_same_lab_as_running_the_original() {
    let sb = Sandbox::new();
    for (name, path, load) in
        [("kathara-ospf", "kathara-ospf", "load_kathara"), ("clab-ospf", "clab-ospf/ospf.clab.yml", "load_clab")]
    {
        lab_copy(&sb, name);
        let original =
            sb.write(&format!("{name}-orig.rhai"), &format!("{load}({path:?}, #{{ images: \"host\" }});\n{DUMP}"));
        let out = sb.clonet().args(["run", "--name", "same"]).arg(&original).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let want = dump_lines(&text(&out.stdout));
        assert!(want.len() > 10, "{want:?}");

        // Written outside the lab's directory: the script names it by its
        // absolute path and runs from anywhere.
        let converted = sb.dir.path().join(format!("{name}-converted.rhai"));
        let out = sb
            .clonet()
            .args(["convert", path, "--images", "host", "-o"])
            .arg(&converted)
            .current_dir(sb.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut script = std::fs::read_to_string(&converted).unwrap();
        let lab_dir = std::fs::canonicalize(sb.dir.path().join(name)).unwrap();
        assert!(script.contains(&format!("let lab = {:?};", lab_dir.display().to_string())), "{script}");
        script += DUMP;
        std::fs::write(&converted, script).unwrap();
        let out = sb.clonet().args(["run", "--name", "same"]).arg(&converted).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(dump_lines(&text(&out.stdout)), want, "{name}");
    }
    assert_nothing_left(&sb);
}

#[test]
fn clonet_run_takes_a_lab_directory_and_a_topology_file_and_ls_shows_the_lab() {
    let sb = Sandbox::new();
    let lab = lab_copy(&sb, "kathara-ospf");
    let out = sb.clonet().arg("run").arg(&lab).args(["--images", "host"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(lab.join("shared/started")).unwrap().lines().count(), 6);
    let topo = lab_copy(&sb, "clab-ospf").join("ospf.clab.yml");
    let out = sb.clonet().arg("run").arg(&topo).args(["--images", "host"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Served, the lab says what it is.
    let served = serve_with_args(sb.clonet(), "kathara-ospf", &lab, false, &["--images", "host"]);
    let ls = sb.clonet().arg("ls").output().unwrap();
    let listed = text(&ls.stdout);
    assert!(
        listed.contains("kathara-ospf")
            && listed.contains("OSPF across three routers, two LANs of hosts · 1.0 · clonet"),
        "{listed}"
    );
    drop(served);
    assert!(eventually(20, || sb.run_dirs().is_empty()), "{:?}", sb.run_dirs());
    assert_nothing_left(&sb);
}

#[test]
fn a_failing_start_up_command_is_reported_with_its_device_file_and_line_and_the_lab_goes_on() {
    let sb = Sandbox::new();
    let dir = sb.dir.path().join("bad-startup");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("lab.conf"), "pc1[0]=A\npc2[0]=A\n").unwrap();
    std::fs::write(dir.join("pc1.startup"), "ip addr add 10.0.0.1/24 dev eth0\nip addr add 10.0.0.300/24 dev eth0\n")
        .unwrap();
    std::fs::write(dir.join("pc2.startup"), "ip addr add 10.0.0.2/24 dev eth0\nfalse\n").unwrap();
    let script = sb.write(
        "t.rhai",
        "load_kathara(\"bad-startup\", #{ images: \"host\" });\nprint(ping(get_node(\"pc1\"), \"10.0.0.2\"));\n",
    );
    let out = sb.run(&script);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: pc1: pc1.startup:2: ip addr add 10.0.0.300/24 dev eth0 (status 1)"), "{stderr}");
    assert!(stderr.contains("warning: pc2: pc2.startup:2: false (status 1)"), "{stderr}");
    assert!(stdout.contains("true"), "the lab went on: {stdout}");
    assert_nothing_left(&sb);
}

#[test]
fn bad_lab_files_are_refused_at_their_file_and_line_and_nothing_is_left() {
    let sb = Sandbox::new();
    let mk = |name: &str, files: &[(&str, &str)]| {
        let d = sb.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, t) in files {
            std::fs::write(d.join(f), t).unwrap();
        }
        d
    };
    let conf = mk("badconf", &[("lab.conf", "r1[0]=A\n\nr1[1]=B C\n")]);
    let cycle = mk("cycle", &[("lab.conf", "a[0]=X\nb[0]=X\n"), ("lab.dep", "a: b\nb: a\n")]);
    let images = mk("images", &[("lab.conf", "a[0]=X\nb[0]=X\nb[image]=kathara/frr\n")]);
    let kind =
        mk("kind", &[("t.clab.yml", "name: t\ntopology:\n  nodes:\n    r1:\n      kind: ceos\n")]).join("t.clab.yml");
    let startup = mk(
        "startup",
        &[(
            "t.clab.yml",
            "name: t\ntopology:\n  nodes:\n    r1:\n      kind: frr\n      image: frr\n      startup-config: r1.conf\n",
        )],
    )
    .join("t.clab.yml");
    let cases: [(&Path, &[&str], String); 6] = [
        (&conf, &["--images", "host"], format!("{}:3:7: collision domain \"B C\"", conf.join("lab.conf").display())),
        (
            &cycle,
            &["--images", "host"],
            format!("{}:2:1: lab.dep has a cycle: a → b → a", cycle.join("lab.dep").display()),
        ),
        (
            &kind,
            &["--images", "host"],
            format!("{}:5:13: node r1: kind \"ceos\" is not one clonet runs", kind.display()),
        ),
        (
            &startup,
            &["--images", "host"],
            format!("{}:7:23: r1: startup-config r1.conf is not a file", startup.display()),
        ),
        (&images, &[], format!("{}:1: a needs image kathara/base", images.join("lab.conf").display())),
        (&images, &[], format!("{}:3: b needs image kathara/frr", images.join("lab.conf").display())),
    ];
    for (path, args, want) in cases {
        let out = sb.clonet().arg("run").arg(path).args(args).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&want), "want {want}\n got {stderr}");
        assert!(sb.run_dirs().is_empty(), "{:?}", sb.run_dirs());
        // A lab file's own errors stop `convert` too; an image that cannot
        // be had does not (the script names it).
        if !args.is_empty() {
            let out = sb.clonet().arg("convert").arg(path).args(args).output().unwrap();
            assert!(text(&out.stderr).contains(&want), "convert: {}", text(&out.stderr));
        }
    }
    assert_nothing_left(&sb);
}

#[test]
fn as_an_ordinary_user_a_kathara_lab_routes_between_its_hosts() {
    let user = UserSandbox::with_subordinate_ids();
    let dir = user.home.join("static");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("lab.conf"), "LAB_DESCRIPTION=\"static routing\"\nr[0]=A\nr[1]=B\npc1[0]=A\npc2[0]=B\n")
        .unwrap();
    std::fs::write(dir.join("r.startup"), "ip addr add 10.5.1.1/24 dev eth0\nip addr add 10.5.2.1/24 dev eth1\n")
        .unwrap();
    std::fs::write(dir.join("pc1.startup"), "ip addr add 10.5.1.2/24 dev eth0\nip route add default via 10.5.1.1\n")
        .unwrap();
    std::fs::write(dir.join("pc2.startup"), "ip addr add 10.5.2.2/24 dev eth0\nip route add default via 10.5.2.1\n")
        .unwrap();
    let out = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&dir).output().unwrap();
    assert!(out.status.success());
    let out = user.run_ok(
        "t.rhai",
        "load_kathara(\"static\", #{ images: \"host\" });\nprint(`pc1 to pc2 ${ping(get_node(\"pc1\"), \"10.5.2.2\")}`);\nprint(`forwarding ${get_node(\"r\").exec(\"cat /proc/sys/net/ipv4/ip_forward\").stdout.trimmed()}`);\n",
    );
    assert!(out.contains("pc1 to pc2 true") && out.contains("forwarding 1"), "{out}");
    user.assert_nothing_left();
}

#[test]
fn a_served_kathara_lab_is_driven_like_any_lab_attach_impair_exec_capture() {
    let sb = Sandbox::new();
    let dir = sb.dir.path().join("pair");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("lab.conf"), "pc1[0]=A\npc2[0]=A\n").unwrap();
    std::fs::write(dir.join("pc1.startup"), "ip addr add 10.7.0.1/24 dev eth0\n").unwrap();
    std::fs::write(dir.join("pc2.startup"), "ip addr add 10.7.0.2/24 dev eth0\n").unwrap();
    let served = serve_with_args(sb.clonet(), "pair", &dir, false, &["--images", "host"]);
    // From another terminal: an impairment on pc1's port of collision domain A.
    let out = attach_with_input(
        sb.clonet(),
        "pair",
        "port(get_node(\"pc1\"), get_lan(\"A\")).set(#{ delay: \"20ms\" })\n:quit\n",
    );
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let out =
        sb.clonet().args(["exec", "pair", "pc1", "--", "ping", "-c", "3", "-i", "0.2", "10.7.0.2"]).output().unwrap();
    let ping = text(&out.stdout);
    assert!(out.status.success(), "{ping}{}", text(&out.stderr));
    let avg: f64 = ping.split("mdev = ").nth(1).and_then(|r| r.split('/').nth(1)).and_then(|v| v.parse().ok()).unwrap();
    assert!(avg >= 40.0, "20 ms each way on pc1's port: {ping}");
    // A capture of the LAN from outside holds the pings.
    let out =
        sb.clonet().args(["capture", "pair", "A", "-c", "2"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pinger =
        sb.clonet().args(["exec", "pair", "pc2", "--", "ping", "-c", "10", "-i", "0.2", "10.7.0.1"]).output().unwrap();
    assert!(pinger.status.success());
    let pcap = out.wait_with_output().unwrap().stdout;
    assert!(pcap.len() > 24 + 2 * 16, "two frames captured: {} bytes", pcap.len());
    drop(served);
    assert!(eventually(20, || sb.run_dirs().is_empty()), "{:?}", sb.run_dirs());
    assert_nothing_left(&sb);
}
