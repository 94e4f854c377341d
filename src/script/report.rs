//! Turning Rhai parse and runtime errors into `file:line:col` reports with
//! the source line and a caret, like a compiler.
use std::fmt::Write;
use std::path::Path;

use colored::Colorize;
use rhai::{EvalAltResult, Position};

/// One frame of the error's call chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub source: String,
    pub line: usize,
    pub col: usize,
}

/// A script failure ready to print.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    pub message: String,
    pub at: Option<Located>,
    /// Calls that led there, outermost first: (function, where it was called).
    pub calls: Vec<(String, Located)>,
}

fn locate(source: &str, pos: Position) -> Option<Located> {
    Some(Located { source: source.to_string(), line: pos.line()?, col: pos.position().unwrap_or(1) })
}

impl ErrorReport {
    pub fn parse(file: &str, err: &rhai::ParseError) -> ErrorReport {
        let message = err.err_type().to_string();
        ErrorReport { message, at: locate(file, err.position()), calls: vec![] }
    }

    /// Walks nested function-call and module errors down to the one that
    /// failed, remembering the calls on the way.
    pub fn runtime(file: &str, err: &EvalAltResult) -> ErrorReport {
        let mut calls = Vec::new();
        let mut source = file.to_string();
        let mut e = err;
        loop {
            match e {
                EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
                    if let Some(at) = locate(&source, *pos) {
                        calls.push((format!("{name}()"), at));
                    }
                    if !src.is_empty() {
                        source = src.clone();
                    }
                    e = inner;
                }
                EvalAltResult::ErrorInModule(name, inner, pos) => {
                    if let Some(at) = locate(&source, *pos) {
                        calls.push((format!("import {name:?}"), at));
                    }
                    source = name.clone();
                    e = inner;
                }
                _ => break,
            }
        }
        let at = locate(&source, e.position());
        let message = match e {
            EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
            // A limit's token says which; Ctrl-C's is ().
            EvalAltResult::ErrorTerminated(token, _) if token.is_string() => token.to_string(),
            EvalAltResult::ErrorTerminated(..) => "interrupted".to_string(),
            other => {
                // Display appends " (line L, position C)": the report shows it already.
                let text = other.to_string();
                let suffix = format!(" ({})", other.position());
                text.strip_suffix(&suffix).map(str::to_string).unwrap_or(text)
            }
        };
        ErrorReport { message, at, calls }
    }

    /// The same error located at the innermost call in the user's own
    /// code when it was raised inside the stdlib (a failed check points
    /// at the test that called it, not at the `throw` in `check.rhai`).
    pub fn blaming_the_caller(mut self) -> ErrorReport {
        let in_stdlib = |l: &Located| l.source.starts_with("stdlib/");
        if self.at.as_ref().is_some_and(in_stdlib) {
            if let Some(i) = self.calls.iter().rposition(|(_, at)| !in_stdlib(at)) {
                let (_, at) = self.calls[i].clone();
                self.calls.truncate(i);
                self.at = Some(at);
            }
        }
        self
    }

    /// `file:line:col: message`, then the source line and a caret.
    pub fn render(&self, read_source: &dyn Fn(&str) -> Option<String>, color: bool) -> String {
        let mut out = String::new();
        let label = if color { "error".red().bold().to_string() } else { "error".to_string() };
        match &self.at {
            Some(at) => {
                let _ = writeln!(out, "{}:{}:{}: {label}: {}", at.source, at.line, at.col, self.message);
                if let Some(text) = read_source(&at.source) {
                    if let Some(line) = text.lines().nth(at.line - 1) {
                        let gutter = at.line.to_string();
                        let pad = " ".repeat(gutter.len());
                        let caret_pad: String = line
                            .chars()
                            .take(at.col.saturating_sub(1))
                            .map(|c| if c == '\t' { '\t' } else { ' ' })
                            .collect();
                        let caret = if color { "^".red().bold().to_string() } else { "^".to_string() };
                        let _ = writeln!(out, "{pad} |\n{gutter} | {line}\n{pad} | {caret_pad}{caret}");
                    }
                }
            }
            None => {
                let _ = writeln!(out, "{label}: {}", self.message);
            }
        }
        for (what, at) in self.calls.iter().rev() {
            let _ = writeln!(out, "  in {what} called at {}:{}:{}", at.source, at.line, at.col);
        }
        out
    }
}

/// Reads a source for a report: the stdlib's embedded text or a file.
pub fn read_source(name: &str) -> Option<String> {
    if let Some(text) = super::stdlib::source_of(name) {
        return Some(text.to_string());
    }
    std::fs::read_to_string(Path::new(name)).ok()
}

#[cfg(test)]
mod blame_tests {
    use super::*;

    #[test]
    fn errors_raised_in_the_stdlib_are_pinned_on_the_callers_line() {
        let at = |s: &str, line| Located { source: s.into(), line, col: 3 };
        let r = ErrorReport {
            message: "expected a to reach b".into(),
            at: Some(at("stdlib/check.rhai", 40)),
            calls: vec![("test_x()".into(), at("t.rhai", 9)), ("assert_reachable()".into(), at("t.rhai", 5))],
        }
        .blaming_the_caller();
        assert_eq!(r.at, Some(at("t.rhai", 5)));
        assert_eq!(r.calls, vec![("test_x()".to_string(), at("t.rhai", 9))]);
        let own = ErrorReport { message: "x".into(), at: Some(at("t.rhai", 2)), calls: vec![] }.blaming_the_caller();
        assert_eq!(own.at, Some(at("t.rhai", 2)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_point_at_the_token() {
        let engine = rhai::Engine::new();
        let err = engine.compile("let x = 1;\nlet y = (2 + ;\n").unwrap_err();
        let r = ErrorReport::parse("lab.rhai", &err);
        let at = r.at.clone().unwrap();
        assert_eq!((at.source.as_str(), at.line), ("lab.rhai", 2));
        let text = r.render(&|_| Some("let x = 1;\nlet y = (2 + ;\n".into()), false);
        assert!(text.starts_with("lab.rhai:2:"), "{text}");
        assert!(text.contains("2 | let y = (2 + ;"), "{text}");
        assert!(text.contains('^'), "{text}");
    }

    #[test]
    fn runtime_errors_inside_functions_keep_the_call_chain() {
        let engine = rhai::Engine::new();
        let src = "fn f(x) {\n  throw `bad ${x}`;\n}\nf(1);\n";
        let err = engine.run(src).unwrap_err();
        let r = ErrorReport::runtime("t.rhai", &err);
        assert_eq!(r.message, "bad 1");
        assert_eq!(r.at.as_ref().unwrap().line, 2);
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].1.line, 4);
        let text = r.render(&|_| Some(src.into()), false);
        assert!(text.contains("t.rhai:2:3: error: bad 1"), "{text}");
        assert!(text.contains("in f() called at t.rhai:4:1"), "{text}");
    }
}
