//! What a running script reaches besides the Rhai API: its lab, where its
//! `print` output goes, whether the build is dry, and who collects the
//! benchmark rows it reports. Carried in the engine's tag, so each engine
//! has its own and nothing is process-global.
//!
//! Owns: the context's shape. Must not touch: what a front end does with
//! rows (`testing::bench` computes ratios and verdicts).
use std::sync::Arc;

use crate::lab::handle::LabRef;

/// One figure a benchmark script reported with `bench_row`, as it wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchFields {
    /// The lab's file stem (`throughput` for `scripts/bench/throughput.rhai`).
    pub lab: String,
    pub row: String,
    pub what: String,
    pub unit: String,
    pub value: f64,
    /// The same-run baseline's name and value.
    pub baseline: Option<(String, f64)>,
    pub target: Option<String>,
}

/// Takes a reported row; an error becomes the script's error at the call.
pub type RowSink = Arc<dyn Fn(BenchFields) -> Result<(), String> + Send + Sync>;

/// The engine's tag.
#[derive(Clone)]
pub struct ScriptContext {
    pub lab: LabRef,
    /// A dry build (`clonet graph`): `host_exec` and `sleep` do nothing.
    pub dry_run: bool,
    /// `print` goes to stderr, because stdout is the report (`clonet
    /// bench`'s table, `clonet graph`'s picture).
    pub print_to_stderr: bool,
    /// Where `bench_row` sends rows; without one it refuses.
    pub rows: Option<RowSink>,
    /// Set while a student's answer runs: what reaches the host outside
    /// the lab is refused and noted here, and the grader scores it 0.
    pub answer: Option<Arc<AnswerGuard>>,
    /// The directory of the script being run: relative `binds` sources
    /// are found from it, as relative imports are.
    pub script_dir: std::path::PathBuf,
}

/// What an exercise answer tried to reach outside its lab.
#[derive(Debug, Default)]
pub struct AnswerGuard {
    refused: std::sync::Mutex<Vec<String>>,
}

impl AnswerGuard {
    /// Notes an attempt; the caller answers with [`AnswerGuard::refusal`].
    pub fn record(&self, what: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if !refused.iter().any(|r| r == what) {
            refused.push(what.to_string());
        }
    }

    /// The message a refused call fails with.
    pub fn refusal(what: &str) -> String {
        format!("an exercise answer may not use {what}: it reaches outside the lab")
    }

    /// Everything refused so far, in order.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ScriptContext {
    pub fn new(lab: LabRef) -> ScriptContext {
        ScriptContext {
            lab,
            dry_run: false,
            print_to_stderr: false,
            rows: None,
            answer: None,
            script_dir: std::path::PathBuf::from("."),
        }
    }

    pub fn dry_run(self) -> ScriptContext {
        ScriptContext { dry_run: true, ..self }
    }

    pub fn print_to_stderr(self) -> ScriptContext {
        ScriptContext { print_to_stderr: true, ..self }
    }

    /// The context of a student's answer, which `guard` watches.
    pub fn for_answer(self, guard: Arc<AnswerGuard>) -> ScriptContext {
        ScriptContext { answer: Some(guard), ..self }
    }

    pub fn collecting_rows(self, sink: RowSink) -> ScriptContext {
        ScriptContext { rows: Some(sink), ..self }
    }
}
