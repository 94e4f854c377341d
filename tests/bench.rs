//! `clonet bench` on tiny settings, and a 200-node lab built, checked and
//! torn down without leaving anything behind. No timed assertions: the
//! figures belong in the benchmark output.
mod common;

use common::*;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn bench_quick_gives_every_row_numbers_and_valid_json() {
    let sb = Sandbox::new();
    let netns_before = live_netns();
    let out = sb
        .clonet()
        .args(["bench", "--quick", "--json", "--dir"])
        .arg(repo("scripts/bench"))
        .output()
        .expect("spawn clonet");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    for letter in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n"] {
        let of_row: Vec<&serde_json::Value> = rows.iter().filter(|r| r["row"] == letter).collect();
        assert!(!of_row.is_empty(), "no row ({letter}) in {stdout}");
        for r in of_row {
            let value = r["value"].as_f64().unwrap_or_else(|| panic!("({letter}) has no value: {r}"));
            assert!(value.is_finite(), "{r}");
            if let Some(base) = r["baseline_value"].as_f64() {
                assert!(r["baseline"].is_string(), "a baseline figure names its baseline: {r}");
                if base != 0.0 {
                    let ratio = r["ratio"].as_f64().expect("a ratio beside a baseline");
                    assert!((ratio - value / base).abs() <= 1e-9 * ratio.abs().max(1.0), "{r}");
                }
            }
            if r["target"].is_string() {
                assert!(r["met"].is_boolean(), "a target gets a verdict: {r}");
            }
        }
    }
    // Throughputs and rates are real: frames crossed every path.
    for r in rows.iter().filter(|r| ["a", "b", "d", "e", "i", "j"].contains(&r["row"].as_str().unwrap())) {
        assert!(r["value"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["baseline_value"].as_f64().is_none_or(|b| b > 0.0), "{r}");
    }
    // Rows were printed as they came, on stderr (stdout is the JSON).
    assert!(stderr.contains("(a) TCP ns<->ns"), "{stderr}");
    // Every bench lab, its baselines and helpers are gone.
    assert_nothing_left(&sb);
    for leftover in ["vde_switch", "vde_plug2tap", "__tap-forward", "clonet-bench"] {
        assert!(
            eventually(5, || processes_matching(leftover).is_empty()),
            "{leftover} outlived the bench: {:?}",
            processes_matching(leftover)
        );
    }
    let ours: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("cbr"))
        .collect();
    assert!(ours.is_empty(), "the ip baseline left namespaces: {ours:?}");
    assert!(eventually(10, || live_netns().is_subset(&netns_before)), "network namespaces left");
}

#[test]
fn bench_refuses_an_unknown_lab_and_a_lab_without_rows() {
    let sb = Sandbox::new();
    let out = sb.clonet().args(["bench", "--dir"]).arg(repo("scripts/bench")).arg("nosuch").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no benchmark lab \"nosuch\""), "{}", text(&out.stderr));
    let silent = sb.write("silent.rhai", "let a = node(\"a\");\n");
    let out = sb.clonet().arg("bench").arg(&silent).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("reported no rows"), "{}", text(&out.stderr));
    let bad = sb.write("bad.rhai", "bench_row(#{ row: \"a\", what: \"x\", value: 1.0, target: \"about 3\" });\n");
    let out = sb.clonet().arg("bench").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad.rhai:1:1") && stderr.contains("bad target \"about 3\""), "{stderr}");
    assert_nothing_left(&sb);
}

#[test]
fn a_ring_of_200_ns_nodes_reaches_every_neighbour_and_leaves_nothing() {
    let sb = Sandbox::new();
    let netns_before = live_netns();
    let stdout = sb.run_ok(
        "ring200.rhai",
        r#"
let n = 200;
let nodes = [];
for i in 0..n { nodes.push(node(`r${i}`)); }
fn addr(i, end) { `10.${100 + (i * 4 + end) / 65536}.${((i * 4 + end) / 256) % 256}.${(i * 4 + end) % 256}` }
for i in 0..n {
    link(nodes[i], nodes[(i + 1) % n], #{ ip_a: addr(i, 1) + "/30", ip_b: addr(i, 2) + "/30" });
}
let answered = 0;
for i in 0..n {
    let j = (i + 1) % n;
    if ping(nodes[i], addr(i, 2), #{ timeout_ms: 3000 }) { answered += 1; } else { print(`r${i} -> r${j} unanswered`); }
    if ping(nodes[j], addr(i, 1), #{ timeout_ms: 3000 }) { answered += 1; } else { print(`r${j} -> r${i} unanswered`); }
}
print(`answered ${answered}`);
// Not a neighbour: a ring has no route to it.
print(`far ${ping(nodes[0], addr(100, 2), #{ timeout_ms: 300 })}`);
let c = get_link("r0", "r1").counters();
print(`frames ${c[0].rx_frames + c[1].rx_frames}`);
"#,
    );
    assert_eq!(printed(&stdout, "answered"), vec!["400"], "{stdout}");
    assert_eq!(printed(&stdout, "far"), vec!["false"], "{stdout}");
    let frames: u64 = printed(&stdout, "frames")[0].parse().unwrap();
    assert!(frames >= 4, "the echoes crossed the switch: {stdout}");
    assert_nothing_left(&sb);
    assert!(
        eventually(10, || live_netns().is_subset(&netns_before)),
        "network namespaces left: {:?}",
        live_netns().difference(&netns_before).collect::<Vec<_>>()
    );
}
