//! Test and grading results and the ways they are written out (sans-IO):
//! the console lines, the closing `N passed, N failed` line, JUnit XML
//! that CI systems read, JSON, and CSV grade sheets.
//!
//! Owns: result types and formats. Must not touch: labs, engines, files.
use std::fmt::Write;

use serde::Serialize;

/// How one test ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    /// `message` is the whole report (`file:line:col: …`).
    Failed {
        message: String,
    },
    Skipped {
        reason: String,
    },
}

/// One test of one file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestResult {
    pub file: String,
    pub name: String,
    pub seconds: f64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

pub fn totals(results: &[TestResult]) -> Totals {
    let mut t = Totals::default();
    for r in results {
        match r.outcome {
            Outcome::Passed => t.passed += 1,
            Outcome::Failed { .. } => t.failed += 1,
            Outcome::Skipped { .. } => t.skipped += 1,
        }
    }
    t
}

/// The runner's last line: exactly `N passed, N failed`, with
/// `, N skipped` when any were skipped.
pub fn summary_line(t: Totals) -> String {
    let mut s = format!("{} passed, {} failed", t.passed, t.failed);
    if t.skipped > 0 {
        let _ = write!(s, ", {} skipped", t.skipped);
    }
    s
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testsuite>` per file, one `<testcase>` per test.
pub fn junit_xml(results: &[TestResult]) -> String {
    let t = totals(results);
    let total_time: f64 = results.iter().map(|r| r.seconds).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"clonet\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total_time:.3}\">",
        results.len(),
        t.failed,
        t.skipped
    );
    let mut files: Vec<&str> = Vec::new();
    for r in results {
        if !files.contains(&r.file.as_str()) {
            files.push(&r.file);
        }
    }
    for file in files {
        let mine: Vec<&TestResult> = results.iter().filter(|r| r.file == file).collect();
        let ft = totals(&mine.iter().map(|r| (*r).clone()).collect::<Vec<_>>());
        let time: f64 = mine.iter().map(|r| r.seconds).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{time:.3}\">",
            xml_escape(file),
            mine.len(),
            ft.failed,
            ft.skipped
        );
        for r in mine {
            let head = format!(
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                xml_escape(&r.name),
                xml_escape(file),
                r.seconds
            );
            match &r.outcome {
                Outcome::Passed => {
                    let _ = writeln!(out, "{head}/>");
                }
                Outcome::Failed { message } => {
                    let first = message.lines().next().unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{head}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml_escape(first),
                        xml_escape(message)
                    );
                }
                Outcome::Skipped { reason } => {
                    let _ =
                        writeln!(out, "{head}>\n      <skipped message=\"{}\"/>\n    </testcase>", xml_escape(reason));
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

pub fn json(results: &[TestResult]) -> String {
    #[derive(Serialize)]
    struct All<'a> {
        totals: Totals,
        tests: &'a [TestResult],
    }
    serde_json::to_string_pretty(&All { totals: totals(results), tests: results }).expect("serializable")
}

/// One graded check of an exercise.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub points: u32,
    pub max: u32,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub reason: String,
}

/// One student's grade.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Grade {
    pub student: String,
    pub answer: String,
    pub score: u32,
    pub max: u32,
    /// The answer itself failed to run (the checks still ran).
    pub answer_error: Option<String>,
    pub checks: Vec<CheckResult>,
}

impl Grade {
    pub fn new(student: &str, answer: &str, answer_error: Option<String>, checks: Vec<CheckResult>) -> Grade {
        Grade {
            student: student.to_string(),
            answer: answer.to_string(),
            score: checks.iter().map(|c| c.points).sum(),
            max: checks.iter().map(|c| c.max).sum(),
            answer_error,
            checks,
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per student: `student,score,max,<points of each check>`.
pub fn grades_csv(grades: &[Grade]) -> String {
    let mut out = String::new();
    let names: Vec<&str> =
        grades.first().map(|g| g.checks.iter().map(|c| c.name.as_str()).collect()).unwrap_or_default();
    let mut header = vec!["student".to_string(), "score".into(), "max".into()];
    header.extend(names.iter().map(|n| csv_field(n)));
    let _ = writeln!(out, "{}", header.join(","));
    for g in grades {
        let mut row = vec![csv_field(&g.student), g.score.to_string(), g.max.to_string()];
        row.extend(g.checks.iter().map(|c| c.points.to_string()));
        let _ = writeln!(out, "{}", row.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, outcome: Outcome) -> TestResult {
        TestResult { file: "labs/a&b.rhai".into(), name: name.into(), seconds: 0.25, outcome }
    }

    #[test]
    fn the_closing_line_mentions_skips_only_when_there_are_some() {
        assert_eq!(summary_line(Totals { passed: 3, failed: 1, skipped: 0 }), "3 passed, 1 failed");
        assert_eq!(summary_line(Totals { passed: 0, failed: 0, skipped: 2 }), "0 passed, 0 failed, 2 skipped");
    }

    #[test]
    fn junit_counts_and_escapes() {
        let results = vec![
            r("test_ok", Outcome::Passed),
            r("test_bad", Outcome::Failed { message: "x.rhai:3:1: expected <a> & \"b\"\n  |".into() }),
            r("test_later", Outcome::Skipped { reason: "no FRR".into() }),
        ];
        let xml = junit_xml(&results);
        assert!(xml.contains(r#"<testsuites name="clonet" tests="3" failures="1" skipped="1""#), "{xml}");
        assert!(xml.contains(r#"<testsuite name="labs/a&amp;b.rhai" tests="3""#), "{xml}");
        assert!(xml.contains(r#"<failure message="x.rhai:3:1: expected &lt;a&gt; &amp; &quot;b&quot;">"#), "{xml}");
        assert!(xml.contains(r#"<skipped message="no FRR"/>"#), "{xml}");
        let j: serde_json::Value = serde_json::from_str(&json(&results)).unwrap();
        assert_eq!(j["totals"]["failed"], 1);
        assert_eq!(j["tests"][1]["status"], "failed");
    }

    #[test]
    fn grades_sum_points_and_write_one_csv_row_per_student() {
        let checks = vec![
            CheckResult { name: "ping, both ways".into(), points: 2, max: 2, passed: true, reason: String::new() },
            CheckResult { name: "route".into(), points: 0, max: 3, passed: false, reason: "no route".into() },
        ];
        let g = Grade::new("alice", "alice.rhai", None, checks);
        assert_eq!((g.score, g.max), (2, 5));
        assert_eq!(grades_csv(&[g]), "student,score,max,\"ping, both ways\",route\nalice,2,5,2,0\n");
    }
}
