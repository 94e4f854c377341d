//! Consoles: `clonet console NODE` attaches to a running node of every
//! kind, and detaching leaves the node running.
mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

#[test]
fn the_console_attaches_and_detaching_leaves_the_node_running() {
    let sb = Sandbox::new();
    let go = sb.run_base().with_file_name("go");
    let script = sb.write(
        "console.rhai",
        &format!(
            r#"
let u = node("u", #{{ kind: "uml" }});
let k = node("k", #{{ kind: "kvm" }});
let n = node("n");
u.exec("true");
k.exec("true");
print("ready");
assert(wait_until(|| host_exec("test -e {go}").ok, 120000), "the test never said go");
print(u.exec("cat /tmp/typed").stdout);
print(k.exec("cat /tmp/typed").stdout);
"#,
            go = go.display()
        ),
    );
    let mut lab = sb.clonet().arg("run").arg(&script).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(lab.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // Type into the uml console, then detach with Ctrl-].
    let attach = |node: &str, input: &'static [u8]| {
        let mut c = sb
            .clonet()
            .args(["console", node])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        std::thread::spawn(move || {
            for chunk in input.split(|b| *b == b'\n') {
                std::thread::sleep(Duration::from_millis(700));
                let _ = stdin.write_all(chunk);
                let _ = stdin.write_all(b"\n");
            }
            std::thread::sleep(Duration::from_millis(700));
            let _ = stdin.write_all(&[0x1d]);
            std::thread::sleep(Duration::from_millis(5000));
        });
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "console {node}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let screen = attach("u", b"echo typed-$((40+2)) > /tmp/typed; hostname; echo sum-$((1+2))");
    assert!(screen.contains("sum-3") && screen.contains("\nu\r"), "uml console: {screen:?}");
    // A kvm machine's serial console, the same way.
    let screen = attach("k", b"echo typed-$((50+1)) > /tmp/typed; hostname; echo sum-$((2+2))");
    assert!(screen.contains("sum-4") && screen.contains("\nk\r"), "kvm console: {screen:?}");
    // An ns node has no console: a shell inside it.
    let screen = attach("n", b"hostname; exit");
    assert!(screen.contains("n\n"), "ns console: {screen:?}");
    let missing = sb.clonet().args(["console", "nobody"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no running lab has a node called \"nobody\""));
    std::fs::write(&go, "").unwrap();
    let out = lab.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut lines, &mut rest).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(rest.contains("typed-42"), "what was typed ran in the uml node, which kept running: {rest}");
    assert!(rest.contains("typed-51"), "what was typed ran in the kvm node, which kept running: {rest}");
    let _ = std::fs::remove_file(&go);
    assert_nothing_left(&sb);
}
