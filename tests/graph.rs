//! `clonet graph`: a script's topology drawn from a dry build that starts
//! nothing and changes nothing on the host.
mod common;

use common::*;

#[test]
fn graph_draws_a_dry_build_in_three_formats_and_touches_nothing() {
    let sb = Sandbox::new();
    let marker = sb.dir.path().join("host_exec-ran");
    let script = sb.write(
        "drawn.rhai",
        &format!(
            r#"
let a = node("a"); let r = node("r", #{{ kind: "uml" }});
let l = link(a, r, #{{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24", delay: "20ms", loss: 1 }});
let sw = lan("sw");
link(r, sw, #{{ ip: "10.1.0.1/24" }});
for i in 1..=3 {{ link(node(`h${{i}}`), sw); }}
l.down();
host_exec("touch {}");
print("built");
if !ping(a, r) {{ throw "no answer"; }}
"#,
            marker.display()
        ),
    );
    let netns_before = live_netns();
    let out = sb.clonet().args(["graph"]).arg(&script).arg("-o").arg(sb.dir.path().join("lab.svg")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("built"), "the script's prints go to stderr: {}", text(&out.stderr));
    let svg = std::fs::read_to_string(sb.dir.path().join("lab.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert_eq!(svg.matches("data-node=").count(), 5, "{svg}");
    assert!(svg.contains("data-node=\"r\" data-kind=\"uml\"") && svg.contains("data-lan=\"sw\""), "{svg}");
    assert!(svg.contains("20 ms, 1% loss · down"), "impairments and the down state are drawn: {svg}");
    assert!(!marker.exists(), "a dry build runs nothing on the host");
    assert_eq!(live_netns(), netns_before, "no namespace was made");
    assert_nothing_left(&sb);

    let dot = sb.clonet().args(["graph", "--format", "dot"]).arg(&script).output().unwrap();
    let dot = text(&dot.stdout);
    assert!(dot.starts_with("graph \"drawn\" {") && dot.contains("\"r\" [shape=box, style=rounded];"), "{dot}");
    assert!(dot.contains("\"r\" -- \"sw\""), "{dot}");
    let mermaid = sb.clonet().args(["graph", "--format", "mermaid"]).arg(&script).output().unwrap();
    assert!(text(&mermaid.stdout).starts_with("graph LR\n  v0((\"a\"))"), "{}", text(&mermaid.stdout));

    // A script that fails half-way is drawn as far as it got, with a warning.
    let broken = sb
        .write("broken.rhai", "let a = node(\"a\");\nlink(a, node(\"b\"));\nthrow \"stop here\";\nnode(\"never\");\n");
    let out = sb.clonet().args(["graph", "--format", "dot"]).arg(&broken).output().unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("broken.rhai:3:1") && text(&out.stderr).contains("drawing what it had built"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("\"a\" -- \"b\"") && !text(&out.stdout).contains("never"),
        "{}",
        text(&out.stdout)
    );
    let bad = sb.clonet().args(["graph", "--format", "png"]).arg(&broken).output().unwrap();
    assert!(!bad.status.success() && text(&bad.stderr).contains("unknown format \"png\""), "{}", text(&bad.stderr));
    assert_nothing_left(&sb);
}
