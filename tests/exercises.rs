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
