//! Every shipped exercise: its solution gets full marks, and its known
//! wrong answer (whose first line names the check it must fail) loses
//! exactly there, through the real `clonet exercise check`.
mod common;
use common::*;

fn exercises() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/exercises");
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    v.sort();
    v
}

#[test]
fn every_solution_gets_full_marks_and_every_wrong_answer_fails_its_check() {
    let sb = Sandbox::new();
    let all = exercises();
    assert!(all.len() >= 6, "at least six exercises: {all:?}");
    for ex in all {
        for f in ["task.md", "lab.rhai", "check.rhai", "solution.rhai", "wrong.rhai"] {
            assert!(ex.join(f).is_file(), "{} has {f}", ex.display());
        }
        let wrong = std::fs::read_to_string(ex.join("wrong.rhai")).unwrap();
        let expected =
            wrong.lines().next().and_then(|l| l.strip_prefix("// fails: ")).expect("wrong.rhai names its check");
        let json = sb.dir.path().join("grades.json");
        let csv = sb.dir.path().join("grades.csv");
        let out = sb
            .clonet()
            .args(["exercise", "check"])
            .arg(&ex)
            .arg("--answer")
            .arg(ex.join("solution.rhai"))
            .arg("--answer")
            .arg(ex.join("wrong.rhai"))
            .arg("--json")
            .arg(&json)
            .arg("--csv")
            .arg(&csv)
            .output()
            .unwrap();
        let report = text(&out.stdout);
        assert!(out.status.success(), "{}:\n{report}{}", ex.display(), text(&out.stderr));
        let grades: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let (solution, wrong) = (&grades[0], &grades[1]);
        assert_eq!(solution["student"], "solution");
        assert_eq!(solution["score"], solution["max"], "{}: the solution gets full marks\n{report}", ex.display());
        assert!(solution["answer_error"].is_null(), "{report}");
        let checks = wrong["checks"].as_array().unwrap();
        let named = checks.iter().find(|c| c["name"] == expected).unwrap_or_else(|| panic!("no check {expected:?}"));
        assert_eq!(named["passed"], false, "{}: the wrong answer fails {expected:?}\n{report}", ex.display());
        assert!(named["reason"].as_str().is_some_and(|r| !r.is_empty()), "with a reason");
        assert!(wrong["score"].as_u64() < wrong["max"].as_u64(), "{report}");
        let sheet = std::fs::read_to_string(&csv).unwrap();
        let rows: Vec<&str> = sheet.lines().collect();
        assert_eq!(rows.len(), 3, "a header and one row per student: {sheet}");
        assert!(
            rows[0].starts_with("student,score,max,")
                && rows[1].starts_with("solution,")
                && rows[2].starts_with("wrong,")
        );
        assert!(report.contains("✗") && report.contains(&format!("scored {}/{}", solution["max"], solution["max"])));
    }
    assert_nothing_left(&sb);
}

/// Answers that reach outside the lab, award themselves points, rebind the
/// lab's variables, or never end: each scores 0 (or what the lab shows),
/// the host is untouched, and the grader goes on to the next answer.
#[test]
fn hostile_answers_score_nothing_and_touch_nothing() {
    let sb = Sandbox::new();
    let ex = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/exercises/02-static-routing");
    let solution = std::fs::read_to_string(ex.join("solution.rhai")).unwrap();
    let marker = sb.dir.path().join("touched-by-an-answer");
    let answers = [
        // A full solution that also runs a command on the host.
        ("host", format!("{solution}\nhost_exec(\"touch {}\");\n", marker.display())),
        // Awards itself points, through the name and through a pointer.
        ("self_check", "check(\"free points\", 100, || true);\n".to_string()),
        ("self_check_ptr", "Fn(\"check\").call(\"free points\", 100, || true);\n".to_string()),
        // Reads a host file by importing it, and the host's environment.
        ("import", "import \"../../../../etc/hostname\" as h;\n".to_string()),
        ("env", format!("{solution}\nlet home = env(\"HOME\");\n")),
        // Writes a host file through a capture.
        ("capture", format!("capture(\"h1\", \"{}\");\n", marker.display())),
        // Opens a way to the host's network and loopback.
        ("nat", format!("{solution}\nlink(node(\"out\"), nat(\"gw\"));\n")),
        // Never ends.
        ("forever", "let n = 0; loop { n += 1; }\n".to_string()),
    ];
    let mut cmd = sb.clonet();
    cmd.args(["exercise", "check"]).arg(&ex);
    for (name, text) in &answers {
        cmd.arg("--answer").arg(sb.write(&format!("{name}.rhai"), text));
    }
    let json = sb.dir.path().join("grades.json");
    let started = std::time::Instant::now();
    let out = cmd.arg("--json").arg(&json).output().unwrap();
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(240), "the endless answer was stopped");
    assert!(!marker.exists(), "no answer touched the host:\n{report}");
    let grades: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let grades = grades.as_array().unwrap();
    assert_eq!(grades.len(), answers.len());
    for (g, (name, _)) in grades.iter().zip(&answers) {
        assert_eq!(g["student"], *name);
        assert_eq!(g["score"], 0, "{name} scores 0:\n{report}");
        assert!(g["checks"].as_array().unwrap().iter().all(|c| c["name"] != "free points"), "{name}: {report}");
        let error = g["answer_error"].as_str().unwrap_or_default();
        let expected = match *name {
            "host" => "may not use host_exec",
            "self_check" | "self_check_ptr" => "may not use check",
            "import" => "imports only the stdlib",
            "env" => "may not use env",
            "capture" => "may not use capture files",
            "nat" => "may not use a nat endpoint",
            _ => "Too many operations",
        };
        assert!(error.contains(expected), "{name}: {error:?}\n{report}");
    }
    assert!(
        grades[0]["checks"].as_array().unwrap().iter().all(|c| c["reason"].as_str().unwrap().contains("host_exec")),
        "the full solution that ran host_exec is scored 0 because of it:\n{report}"
    );
}
