//! The shipped scripts and script errors, run through the real binary.
mod common;
use common::*;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn hello_pings_across_one_link() {
    let sb = Sandbox::new();
    let out = sb.run(&repo("scripts/hello.rhai"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    assert!(stdout.contains("a says: a"), "{stdout}");
    assert!(stdout.contains("ping a -> b: ok"), "{stdout}");
    assert!(stdout.contains("b resolves a as 10.0.0.1"), "{stdout}");
    assert!(sb.run_dirs().is_empty(), "run directory left: {:?}", sb.run_dirs());
}

#[test]
fn lan_reaches_every_pair() {
    let sb = Sandbox::new();
    let out = sb.clonet().arg("run").arg(repo("scripts/lan.rhai")).env("HOSTS", "6").output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    assert!(stdout.contains("all 30 pairs of 6 hosts reach each other"), "{stdout}");
    assert!(stdout.contains("the LAN learned 6 stations"), "{stdout}");
}

#[test]
fn a_syntax_error_points_at_file_line_and_column() {
    let sb = Sandbox::new();
    let script = sb.write("broken.rhai", "let a = node(\"a\");\nlet b = (1 + ;\n");
    let out = sb.run(&script);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!("{}:2:", script.display());
    assert!(stderr.contains(&want), "expected {want} in:\n{stderr}");
    assert!(stderr.contains("2 | let b = (1 + ;"), "{stderr}");
    assert!(stderr.contains('^'), "{stderr}");
    assert!(sb.run_dirs().is_empty());
}

#[test]
fn a_failed_lab_operation_points_at_the_call() {
    let sb = Sandbox::new();
    let script = sb.write("dup.rhai", "let a = node(\"a\");\n\n   let again = node(\"a\");\nprint(\"not reached\");\n");
    let out = sb.run(&script);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}:3:16: error: \"a\" is already used by a node", script.display())), "{stderr}");
    assert!(stderr.contains("3 |    let again = node(\"a\");"), "{stderr}");
    assert!(stderr.contains("\n  |                ^"), "caret under the call:\n{stderr}");
    assert!(!text(&out.stdout).contains("not reached"));
}

#[test]
fn a_runtime_error_in_a_function_shows_where_it_was_called() {
    let sb = Sandbox::new();
    let script = sb.write("fn.rhai", "fn build(n) {\n    node(n)\n}\nbuild(\"ok\");\nbuild(\"../etc\");\n");
    let out = sb.run(&script);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}:2:5: error: invalid node name \"../etc\"", script.display())), "{stderr}");
    assert!(stderr.contains(&format!("in build() called at {}:5:1", script.display())), "{stderr}");
}

#[test]
fn bad_options_and_addresses_are_clear_errors() {
    let sb = Sandbox::new();
    for (body, want) in [
        ("link(a, b, #{ ip_a: \"10.0.0.1\" });", "missing /prefix"),
        ("link(a, b, #{ colour: \"red\" });", "unknown option \"colour\""),
        ("link(a, b, #{ mtu: 10 });", "MTU 10 is out of range"),
        ("a.exec(\"true\", #{ timeout_ms: -1 });", "must not be negative"),
        ("node(\"c\", #{ kind: \"docker\" });", "unknown node kind \"docker\""),
        ("ping(a, \"not-an-ip\");", "is not an IP address"),
        ("ping(a, b);", "node \"b\" has no address"),
    ] {
        let script = sb.write("opt.rhai", &format!("let a = node(\"a\");\nlet b = node(\"b\");\n{body}\n"));
        let out = sb.run(&script);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}: {stderr}");
        assert!(stderr.contains(":3:") && stderr.contains(want), "{body}: expected {want:?} at line 3 in:\n{stderr}");
    }
}

#[test]
fn exec_reports_status_output_binary_data_and_times_out() {
    let sb = Sandbox::new();
    let script = sb.write(
        "exec.rhai",
        r#"
let a = node("a");
let r = a.exec("echo out; echo err >&2; exit 3");
if r.status != 3 || r.stdout != "out\n" || r.stderr != "err\n" || r.ok { throw `bad result ${r}`; }
let bin = a.exec("printf '\\000\\377\\001'");
if bin.stdout_bytes.len() != 3 || bin.stdout_bytes[1] != 255 { throw `not binary-safe: ${bin.stdout_bytes}`; }
let fed = a.exec(["wc", "-c"], #{ stdin: "12345" });
if fed.stdout.trimmed() != "5" { throw `stdin lost: ${fed}`; }
let t = timestamp();
try { a.exec("sleep 30", #{ timeout_ms: 300 }); throw "no timeout"; }
catch (e) { if !`${e}`.contains("timed out") { throw e; } }
if t.elapsed > 5.0 { throw `timeout took ${t.elapsed} s`; }
print("exec ok");
"#,
    );
    let out = sb.run(&script);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("exec ok"));
}

#[test]
fn nodes_are_isolated_and_named() {
    let sb = Sandbox::new();
    let script = sb.write(
        "iso.rhai",
        r#"
let a = node("alpha");
let b = node("beta");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
a.exec("echo secret > /tmp/file");
if b.exec("cat /tmp/file").ok { throw "/tmp is shared"; }
if a.exec("hostname").stdout.trimmed() != "alpha" { throw "hostname"; }
if a.exec("cat /proc/1/comm").stdout.trimmed() != "clonet-init" { throw `pid 1 is ${a.exec("cat /proc/1/comm").stdout}`; }
let links = a.exec("ls /sys/class/net").stdout;
if links != "eth0\nlo\n" { throw `interfaces: ${links}`; }
let mac = a.ifaces[0].mac;
if !a.exec("cat /sys/class/net/eth0/address").stdout.contains(mac) { throw "mac"; }
if b.exec("getent hosts alpha").stdout.trimmed() != "10.0.0.1        alpha" { throw `hosts: ${b.exec("cat /etc/hosts").stdout}`; }
print(`mac ${mac}`);
"#,
    );
    let out = sb.run(&script);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let mac = &printed(&stdout, "mac")[0];
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first & 0x03, 0x02, "locally administered unicast: {mac}");
    // Deterministic: the same lab gives the same MAC.
    let again = text(&sb.run(&script).stdout);
    assert_eq!(printed(&again, "mac")[0], *mac);
}

#[test]
fn ping_needs_no_ping_binary() {
    let sb = Sandbox::new();
    let script = sb.write(
        "noping.rhai",
        r#"
let a = node("a"); let b = node("b");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
b.set_ip("eth0", "fd00::2/64");
a.set_ip("eth0", "fd00::1/64");
if !ping(a, b) { throw "v4"; }
if ping(a, "10.0.0.99", ) { throw "a ghost answered"; }
if !ping(a, "fd00::2") { throw "v6"; }
print("pings ok");
"#,
    );
    // PATH points nowhere: no ping binary can be found.
    let out = sb.clonet().arg("run").arg(&script).env("PATH", "/nonexistent").output().unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("pings ok"));
}

/// Every `.rhai` file under `scripts/`, recursively.
fn shipped_scripts() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                // Exercises are run by `clonet exercise check` (tests/exercises.rs).
                if p.file_name().is_some_and(|n| n == "exercises") {
                    continue;
                }
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rhai") {
                // Benchmark labs that report rows run through `clonet bench
                // --quick` (tests/bench.rs).
                if std::fs::read_to_string(&p).is_ok_and(|t| t.contains("bench_row(")) {
                    continue;
                }
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&repo("scripts"), &mut v);
    v.sort();
    v
}

#[test]
fn every_shipped_script_runs() {
    let sb = Sandbox::new();
    let scripts = shipped_scripts();
    assert!(scripts.len() >= 3, "{scripts:?}");
    for s in scripts {
        let out = sb
            .clonet()
            .arg("run")
            .arg(&s)
            .env("BENCH_SECONDS", "1")
            .env("BENCH_PINGS", "10")
            .env("HOSTS", "3")
            .env("BENCH_UML_COUNTS", "1,2")
            .env("BENCH_KVM_COUNTS", "1")
            .env("BENCH_KVM_MTUS", "1500")
            .env("BENCH_CLONES", "2")
            .env("BENCH_CLONES_KVM", "1")
            .env("BENCH_LOSS_FRAMES", "1000")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}:\n{}{}", s.display(), text(&out.stdout), text(&out.stderr));
    }
    assert!(sb.run_dirs().is_empty());
}

#[test]
fn a_node_that_died_gives_a_clear_error() {
    let sb = Sandbox::new();
    let script =
        sb.write("dead.rhai", "let a = node(\"a\");\nhost_exec(`kill -9 ${a.pid}`);\nsleep(200);\na.exec(\"true\");\n");
    let out = sb.run(&script);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("clonet: node a died"), "the death is reported: {stderr}");
    assert!(stderr.contains(":4:3: error: node \"a\" is stopped"), "{stderr}");
    assert!(sb.run_dirs().is_empty());
}
