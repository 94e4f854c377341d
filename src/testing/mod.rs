//! `clonet test` and `clonet exercise check`: running test files against
//! labs, and grading exercise answers.
//!
//! A test file's top level builds its lab once; then every `fn test_*()`
//! runs in source order against it. The lab is torn down whatever
//! happened. An exercise is a directory: `lab.rhai` (the starting lab),
//! the student's answer, then `check.rhai`, whose `check(name, points,
//! || …)` calls are graded.
//!
//! Owns: discovery, running, grading. Must not touch: output formats
//! (`report.rs`), the host (labs come from the caller's `NodeHost`).
pub mod bench;
pub mod report;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use rhai::{CallFnOptions, Dynamic, EvalAltResult, FnPtr, NativeCallContext, Scope, AST};

use crate::host::NodeHost;
use crate::lab::Lab;
use crate::script::report::{read_source, ErrorReport};
use crate::script::{self, LabRef};
use report::{CheckResult, Grade, Outcome, TestResult};

/// What `skip(reason)` puts in front of its error, so the runner can tell
/// a skip from a failure.
pub use crate::script::SKIP_MARK;

/// Runs one benchmark lab (a script that reports with `bench_row`) on its
/// own lab, torn down afterwards; the rows it reported, or its error.
pub fn run_bench(
    path: &Path,
    host: Box<dyn NodeHost>,
    run_base: &Path,
    color: bool,
) -> Result<Vec<bench::BenchRow>, String> {
    let lab = new_lab(&lab_name_for(path, "bench-"), host, run_base, path)?;
    let dir = script::script_dir(path);
    // `clonet bench` keeps stdout for its report: rows and prints go to stderr.
    let rows = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let context =
        script::ScriptContext::new(lab.clone()).print_to_stderr().collecting_rows(bench::collector(rows.clone(), true));
    let engine = script::engine_with(context, dir);
    let ran = script::run_file(&engine, path).map_err(|r| r.render(&read_source, color).trim_end().to_string());
    drop(engine);
    lab.teardown();
    let rows = std::mem::take(&mut *rows.lock().unwrap_or_else(|p| p.into_inner()));
    ran.map(|()| rows)
}

/// `test_*` functions without parameters, in source order (sans-IO).
pub fn test_names(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"(?m)^[ \t]*(?:private[ \t]+)?fn[ \t]+(test_[A-Za-z0-9_]*)[ \t]*\([ \t]*\)")
        .expect("valid pattern");
    let mut names: Vec<String> = Vec::new();
    for c in re.captures_iter(text) {
        let n = c[1].to_string();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The file's top-level `import "…" as …;` statements (sans-IO). Test
/// functions run without the top level (it built the lab already), so
/// these are run again before each to give them their modules.
pub fn import_lines(text: &str) -> String {
    let re = regex::Regex::new(r#"(?m)^[ \t]*import[ \t]+"[^"\n]+"[ \t]+as[ \t]+[A-Za-z_][A-Za-z0-9_]*[ \t]*;"#)
        .expect("valid pattern");
    re.find_iter(text).map(|m| m.as_str().trim()).collect::<Vec<_>>().join("\n")
}

/// Test files under `paths`: files given by name, and `*.rhai` files
/// that define a `test_*` function anywhere below given directories.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.') || n == "target") {
                    walk(&p, out)?;
                }
            } else if p.extension().is_some_and(|x| x == "rhai")
                && std::fs::read_to_string(&p).is_ok_and(|t| !test_names(&t).is_empty())
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut files).map_err(|e| format!("{}: {e}", p.display()))?;
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    Ok(files)
}

/// A lab name made from a file name: letters, digits, `-` and `_`,
/// starting with a letter, at most 32 characters.
pub fn lab_name_for(path: &Path, prefix: &str) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let mut name: String = format!("{prefix}{stem}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert(0, 't');
    }
    name.truncate(32);
    name
}

/// How a failure reads: the whole report, or the reason of a skip.
enum Failure {
    Error(String),
    Skip(String),
}

fn failure(source: &str, e: &EvalAltResult, color: bool) -> Failure {
    let r = ErrorReport::runtime(source, e).blaming_the_caller();
    match r.message.strip_prefix(SKIP_MARK) {
        Some(reason) => Failure::Skip(reason.to_string()),
        None => Failure::Error(r.render(&read_source, color).trim_end().to_string()),
    }
}

fn new_lab(name: &str, host: Box<dyn NodeHost>, run_base: &Path, script: &Path) -> Result<LabRef, String> {
    Lab::new(name, host, run_base, Some(script)).and_then(LabRef::served).map_err(|e| e.to_string())
}

/// Runs the tests of one file (those whose name contains `filter`) on a
/// lab of their own, calling `done` as each ends.
pub fn run_file(
    path: &Path,
    host: Box<dyn NodeHost>,
    run_base: &Path,
    filter: Option<&str>,
    color: bool,
    done: &mut dyn FnMut(&TestResult),
) -> Vec<TestResult> {
    let file = path.display().to_string();
    let mut results = Vec::new();
    let mut record = |name: &str, seconds: f64, outcome: Outcome, results: &mut Vec<TestResult>| {
        let r = TestResult { file: file.clone(), name: name.to_string(), seconds, outcome };
        done(&r);
        results.push(r);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            record(&file, 0.0, Outcome::Failed { message: format!("cannot read {file}: {e}") }, &mut results);
            return results;
        }
    };
    let names: Vec<String> = test_names(&text).into_iter().filter(|n| filter.is_none_or(|f| n.contains(f))).collect();
    if names.is_empty() {
        return results;
    }
    let lab = match new_lab(&lab_name_for(path, ""), host, run_base, path) {
        Ok(l) => l,
        Err(e) => {
            for n in &names {
                record(n, 0.0, Outcome::Failed { message: format!("the lab could not start: {e}") }, &mut results);
            }
            return results;
        }
    };
    let dir = script::script_dir(path);
    let mut engine = script::engine(lab.clone(), dir);
    script::ScriptLimits::TEST.apply(&mut engine);
    let mut scope = Scope::new();
    let started = Instant::now();
    let built: Result<AST, String> = script::compile(&engine, &file, &text)
        .map_err(|r| r.render(&read_source, color).trim_end().to_string())
        .and_then(|ast| {
            engine
                .run_ast_with_scope(&mut scope, &ast)
                .map(|_| ast)
                .map_err(|e| ErrorReport::runtime(&file, &e).render(&read_source, color).trim_end().to_string())
        });
    match built {
        Err(message) => {
            let secs = started.elapsed().as_secs_f64();
            for n in &names {
                let message = format!("set-up failed: {message}");
                record(n, secs, Outcome::Failed { message }, &mut results);
            }
        }
        Ok(ast) => {
            // The functions, preceded by the file's imports only.
            let runnable = match script::compile(&engine, &file, &import_lines(&text)) {
                Ok(imports) => imports.merge(&ast.clone_functions_only()),
                Err(_) => ast.clone_functions_only(),
            };
            for n in &names {
                if crate::interrupt::requested() {
                    break;
                }
                let t0 = Instant::now();
                let options = CallFnOptions::new().eval_ast(true).rewind_scope(true);
                let outcome = match engine.call_fn_with_options::<Dynamic>(options, &mut scope, &runnable, n, ()) {
                    Ok(_) => Outcome::Passed,
                    Err(e) => match failure(&file, &e, color) {
                        Failure::Skip(reason) => Outcome::Skipped { reason },
                        Failure::Error(message) => Outcome::Failed { message },
                    },
                };
                record(n, t0.elapsed().as_secs_f64(), outcome, &mut results);
            }
        }
    }
    drop(engine);
    lab.teardown();
    results
}

/// Grades one answer to the exercise in `dir`: a fresh lab from
/// `lab.rhai`, the answer, then the checks of `check.rhai`. Fails only
/// when the exercise itself (its lab or its checks file) is broken.
pub fn grade(
    dir: &Path,
    answer: &Path,
    host: Box<dyn NodeHost>,
    run_base: &Path,
    color: bool,
) -> Result<Grade, String> {
    let lab_file = dir.join("lab.rhai");
    let check_file = dir.join("check.rhai");
    for f in [&lab_file, &check_file, &answer.to_path_buf()] {
        if !f.is_file() {
            return Err(format!("{}: no such file", f.display()));
        }
    }
    let lab = new_lab(&lab_name_for(dir, "ex-"), host, run_base, &lab_file)?;
    let mut engine = script::engine(lab.clone(), dir);
    script::ScriptLimits::TEST.apply(&mut engine);
    let checks: Rc<RefCell<Vec<CheckResult>>> = Rc::default();
    let sink = checks.clone();
    engine.register_fn(
        "check",
        move |ctx: NativeCallContext, name: &str, points: i64, test: FnPtr| -> Result<(), Box<EvalAltResult>> {
            let max = u32::try_from(points).map_err(|_| format!("check(): {points} points is negative"))?;
            let result: Result<Dynamic, _> = test.call_within_context(&ctx, ());
            let (passed, reason) = match result {
                Ok(_) => (true, String::new()),
                Err(e) if matches!(*e, EvalAltResult::ErrorTerminated(..)) => return Err(e),
                Err(e) => (false, ErrorReport::runtime("check.rhai", &e).message),
            };
            let points = if passed { max } else { 0 };
            sink.borrow_mut().push(CheckResult { name: name.to_string(), points, max, passed, reason });
            Ok(())
        },
    );
    let mut scope = Scope::new();
    let result = (|| {
        script::run_file_in(&engine, &mut scope, &lab_file)
            .map_err(|r| format!("the exercise's lab failed:\n{}", r.render(&read_source, color)))?;
        let (answer_error, refused) = run_answer(&lab, dir, answer, &scope, color);
        // The checks see the lab's variables, not what the answer did to
        // them: an answer cannot rebind `h1` to another node for a check.
        script::run_file_in(&engine, &mut scope, &check_file)
            .map_err(|r| format!("the exercise's checks failed:\n{}", r.render(&read_source, color)))?;
        let student = answer.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let mut results = checks.borrow().clone();
        if !refused.is_empty() {
            // An answer that reached outside the lab could have arranged
            // anything the checks look at: it scores nothing.
            let why = format!("0 points: the answer used {}", refused.join(", "));
            for c in &mut results {
                c.points = 0;
                c.passed = false;
                c.reason = why.clone();
            }
        }
        Ok(Grade::new(&student, &answer.display().to_string(), answer_error, results))
    })();
    drop(engine);
    lab.teardown();
    result
}

/// Runs a student's answer on `lab` with its own engine: the answer's
/// limits, imports from the stdlib only, a copy of the lab's variables,
/// no `check`, and nothing that reaches the host. Its error, and what it
/// tried to reach outside the lab.
fn run_answer(
    lab: &LabRef,
    dir: &Path,
    answer: &Path,
    lab_scope: &Scope,
    color: bool,
) -> (Option<String>, Vec<String>) {
    let guard = std::sync::Arc::new(script::context::AnswerGuard::default());
    let context = script::ScriptContext::new(lab.clone()).for_answer(guard.clone());
    let mut engine = script::engine_with(context, dir);
    engine.set_module_resolver(script::stdlib::Resolver::stdlib_only());
    let trap = guard.clone();
    engine.register_fn("check", move |_: &str, _: i64, _: FnPtr| -> Result<(), Box<EvalAltResult>> {
        trap.record("check");
        Err(script::context::AnswerGuard::refusal("check").into())
    });
    script::ScriptLimits::ANSWER.apply(&mut engine);
    let mut scope = lab_scope.clone();
    let error = script::run_file_in(&engine, &mut scope, answer)
        .err()
        .map(|r| r.render(&read_source, color).trim_end().to_string());
    (error, guard.refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_functions_are_found_in_source_order() {
        let text = "fn helper() {}\nfn test_b() { }\n  fn test_a(){}\nfn test_with_arg(x) {}\nprivate fn test_c( ) {}\n// fn test_commented() is not at a line start\n";
        assert_eq!(test_names(text), ["test_b", "test_a", "test_c"]);
    }

    #[test]
    fn top_level_imports_are_kept_for_the_test_functions() {
        let text = "import \"check\" as check;\nlet a = node(\"a\");\n  import \"my/lib\" as lib ;\nfn test_x() { import \"inner\" as i; }\n";
        // An import inside a function is the function's own business.
        assert_eq!(import_lines(text), "import \"check\" as check;\nimport \"my/lib\" as lib ;");
    }

    #[test]
    fn lab_names_are_valid_names() {
        assert_eq!(lab_name_for(Path::new("dir/01 ping.test.rhai"), ""), "t01-ping-test");
        assert_eq!(lab_name_for(Path::new("ospf"), "ex-"), "ex-ospf");
        let long = lab_name_for(Path::new(&"x".repeat(80)), "");
        assert_eq!(long.len(), 32);
        assert!(crate::lab::names::validate("lab", &long).is_ok());
    }
}
