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
}

impl ScriptContext {
    pub fn new(lab: LabRef) -> ScriptContext {
        ScriptContext { lab, dry_run: false, print_to_stderr: false, rows: None }
    }

    pub fn dry_run(self) -> ScriptContext {
        ScriptContext { dry_run: true, ..self }
    }

    pub fn print_to_stderr(self) -> ScriptContext {
        ScriptContext { print_to_stderr: true, ..self }
    }

    pub fn collecting_rows(self, sink: RowSink) -> ScriptContext {
        ScriptContext { rows: Some(sink), ..self }
    }
}
