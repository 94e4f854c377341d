//! `clonet test`: the output format, JUnit XML and JSON, exit codes,
//! skips and filters, teardown after failures, syntax errors with their
//! position, and the check library on ns and uml nodes.
mod common;
use common::*;

const GOOD: &str = r#"
import "check" as check;
let a = node("a"); let b = node("b");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });

fn test_reachable() { check::assert_reachable(get_node("a"), get_node("b")); }
fn test_addresses_and_routes() {
    check::assert_ip(get_node("a"), "eth0", "10.0.0.1/24");
    check::assert_route(get_node("a"), "10.0.0.0/24", #{ dev: "eth0" });
}
fn test_later() { skip("needs something we lack"); }
"#;

const BAD: &str = r#"
import "check" as check;
let a = node("a"); let b = node("b");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
fn test_passes() { check::assert_exit(get_node("a"), "true", 0); }
fn test_fails() {
    check::assert_unreachable(get_node("a"), get_node("b"));
}
fn test_still_runs() { check::assert_output(get_node("b"), "hostname", "^b$"); }
"#;

#[test]
fn results_are_one_line_each_with_an_exact_closing_line_and_a_fitting_exit_status() {
    let sb = Sandbox::new();
    let dir = sb.dir.path().join("suite");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("good.rhai"), GOOD).unwrap();
    std::fs::write(dir.join("helper.rhai"), "fn not_a_test() {}\n").unwrap();
    let junit = sb.dir.path().join("junit.xml");
    let json = sb.dir.path().join("results.json");
    let out = sb.clonet().arg("test").arg(&dir).arg("--junit").arg(&junit).arg("--json").arg(&json).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "one line per test and the closing line: {stdout}");
    assert!(
        lines[0].starts_with("PASS ") && lines[0].contains("test_reachable") && lines[0].ends_with(" s)"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("PASS ") && lines[1].contains("test_addresses_and_routes"), "{stdout}");
    assert!(lines[2].starts_with("SKIP ") && lines[2].contains("needs something we lack"), "{stdout}");
    assert_eq!(lines[3], "2 passed, 0 failed, 1 skipped");
    // JUnit XML that parses, with the right counts.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed JUnit XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(
        (root.attribute("tests"), root.attribute("failures"), root.attribute("skipped")),
        (Some("3"), Some("0"), Some("1"))
    );
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 3);
    assert!(cases[2].children().any(|c| c.has_tag_name("skipped")));
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(j["totals"]["passed"], 2);
    // --filter runs only matching tests.
    let out = sb.clonet().arg("test").arg(dir.join("good.rhai")).args(["--filter", "reach"]).output().unwrap();
    assert_eq!(text(&out.stdout).lines().last(), Some("1 passed, 0 failed"), "{}", text(&out.stdout));
    assert_nothing_left(&sb);
}

#[test]
fn a_failing_test_is_reported_with_its_position_the_others_run_and_the_lab_is_torn_down() {
    let sb = Sandbox::new();
    let bad = sb.write("bad.rhai", BAD);
    let junit = sb.dir.path().join("junit.xml");
    let out = sb.clonet().arg("test").arg(&bad).arg("--junit").arg(&junit).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a failure makes the exit status non-zero: {stdout}");
    assert!(stdout.contains("FAIL ") && stdout.contains("test_fails"), "{stdout}");
    assert!(
        stdout.contains("bad.rhai:7:12") && stdout.contains("expected a not to reach b"),
        "the failure points at the call: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("PASS ") && l.contains("test_still_runs")),
        "later tests still run: {stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("2 passed, 1 failed"));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failure = doc.descendants().find(|n| n.has_tag_name("failure")).expect("a failure element");
    assert!(failure.attribute("message").unwrap().contains("bad.rhai:7:12"), "{xml}");
    assert_nothing_left(&sb);
    // A syntax error: every test of the file fails, pointing at it.
    let broken = sb.write("broken.rhai", "let a = node(\"a\");\nlet x = ;\nfn test_never() {}\n");
    let out = sb.clonet().arg("test").arg(&broken).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("broken.rhai:2:9") && stdout.contains("test_never"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("0 passed, 1 failed"));
    assert_nothing_left(&sb);
}

#[test]
fn the_check_library_works_on_ns_and_uml_nodes() {
    let sb = Sandbox::new();
    let file = sb.write(
        "kinds.rhai",
        r#"
import "check" as check;
let sw = lan("sw");
let n = node("n"); let u = node("u", #{ kind: "uml" });
link(n, sw, #{ ip: "10.0.0.1/24" });
link(u, sw, #{ ip: "10.0.0.2/24" });
u.add_route("10.9.0.0/24", "10.0.0.1");

fn test_on_both() {
    for x in ["n", "u"] {
        let me = get_node(x);
        let other = get_node(if x == "n" { "u" } else { "n" });
        check::assert_reachable(me, other);
        check::assert_unreachable(me, "10.0.0.99");
        check::assert_ip(me, "eth0", if x == "n" { "10.0.0.1/24" } else { "10.0.0.2/24" });
        check::assert_exit(me, "exit 3", 3);
        check::assert_output(me, "hostname", `^${x}$`);
        me.exec("sleep 60 >/dev/null 2>&1 &");
        check::assert_process(me, "sleep");
        check::assert_latency(me, other, 50);
    }
    check::assert_route(get_node("u"), "10.9.0.0/24", #{ via: "10.0.0.1", dev: "eth0" });
    get_node("u").exec("nc -l -p 7000 >/dev/null 2>&1 &");
    sleep(300);
    check::assert_listening(get_node("u"), 7000, "tcp");
    check::assert_throughput(get_node("n"), get_node("u"), 10);
}
fn test_messages_say_what_was_expected() {
    let n = get_node("n");
    let msgs = [];
    try { check::assert_ip(n, "eth0", "192.0.2.1/24"); } catch (e) { msgs.push(e); }
    try { check::assert_route(n, "10.8.0.0/16"); } catch (e) { msgs.push(e); }
    try { check::assert_exit(n, "true", 1); } catch (e) { msgs.push(e); }
    try { check::assert_listening(n, 9, "udp"); } catch (e) { msgs.push(e); }
    try { check::assert_process(n, "no-such-daemon"); } catch (e) { msgs.push(e); }
    try { check::assert_ospf_neighbors(get_node("u"), 1); } catch (e) { msgs.push(e); }
    try { check::assert_throughput(n, get_node("u"), 1000000); } catch (e) { msgs.push(e); }
    for m in msgs { print(`msg: ${m}`); }
    assert(msgs.len() == 7, `${msgs}`);
}
"#,
    );
    let out = sb.clonet().arg("test").arg(&file).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for want in [
        "expected n:eth0 to have 192.0.2.1/24, found 10.0.0.1/24",
        "expected n to have a route to 10.8.0.0/16",
        "to exit with 1, it exited with 0",
        "expected n to listen on udp port 9",
        "expected a process called no-such-daemon in n",
        "FRR is not installed in u",
        "expected at least 1000000 Mbit/s from n to u, measured",
    ] {
        assert!(stdout.contains(want), "{want:?} in {stdout}");
    }
    assert_eq!(stdout.lines().last(), Some("2 passed, 0 failed"));
    assert_nothing_left(&sb);
}
