//! Every function of the API reference carries an example, and every
//! example runs as a real lab.
mod common;
use common::*;

#[test]
fn every_documented_example_runs() {
    let sb = Sandbox::new();
    let out = sb.clonet().args(["doc", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(docs.len() > 20);
    let mut failures = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let sig = d["signature"].as_str().unwrap();
        let Some(example) = d["example"].as_str() else {
            failures.push(format!("{sig}: no example"));
            continue;
        };
        let script = sb.write(&format!("example{i}.rhai"), example);
        // A host interface's example changes the host's network: it runs
        // in a network namespace of the test's, standing in for the host.
        let run = if sig.starts_with("host_iface") { run_in_test_netns(&sb, &script) } else { sb.run(&script) };
        if !run.status.success() {
            failures.push(format!("{sig}:\n{example}{}", text(&run.stderr)));
        }
    }
    assert!(failures.is_empty(), "examples that fail:\n{}", failures.join("\n"));
    assert!(sb.run_dirs().is_empty());
}

#[test]
fn api_prints_one_function_or_fails_clearly() {
    let sb = Sandbox::new();
    let out = sb.clonet().args(["doc", "ping"]).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("ping(a: Node, b: Node) -> bool"), "{stdout}");
    assert!(!stdout.contains("node(name"), "{stdout}");
    let out = sb.clonet().args(["doc", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no function called \"nope\""));
}

#[test]
fn the_committed_reference_is_current() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clonet")).arg("doc").output().unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/API.md")).unwrap();
    assert!(text(&out.stdout) == committed, "docs/API.md is stale: regenerate it with `clonet doc -o docs/API.md`");
}

/// `clonet run SCRIPT` inside a network namespace made for it (with its
/// loopback up), removed afterwards.
fn run_in_test_netns(sb: &Sandbox, script: &std::path::Path) -> std::process::Output {
    let ns = format!("clonet-api-{}", std::process::id());
    let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output().unwrap();
    assert!(ip(&["netns", "add", &ns]).status.success());
    assert!(ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]).status.success());
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_clonet"), "run"])
        .arg(script)
        .env("CLONET_RUN_DIR", sb.run_base())
        .env("CLONET_DATA_DIR", sb.data_dir())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    ip(&["netns", "del", &ns]);
    out
}
