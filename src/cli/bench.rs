//! `clonet bench`: the benchmark labs, each on a lab of its own, and one
//! table (or JSON) of their rows.
//!
//! Owns: choosing the benchmark labs and printing their rows. Must not
//! touch: measuring (the labs' scripts and the library's `testing`).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clonet::host::linux::LinuxHost;
use clonet::lab::rundir;

use super::{color, prepare_terminal, CliError};

/// The benchmark labs to run: those named (a stem in `dir`, or a path),
/// else every script in `dir` that reports rows.
fn bench_files(names: &[String], dir: &Path) -> Result<Vec<PathBuf>, String> {
    if names.is_empty() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("bench_row(")))
            .collect();
        files.sort();
        return Ok(files);
    }
    names
        .iter()
        .map(|n| {
            let as_path = PathBuf::from(n);
            let in_dir = dir.join(format!("{n}.rhai"));
            [as_path, in_dir].into_iter().find(|p| p.is_file()).ok_or_else(|| {
                format!("no benchmark lab {n:?} (neither a file nor {})", dir.join(format!("{n}.rhai")).display())
            })
        })
        .collect()
}

/// `clonet bench [NAMES] [--json] [--quick] [--dir DIR]`.
pub fn bench(names: &[String], json: bool, quick: bool, dir: &Path) -> Result<ExitCode, CliError> {
    use clonet::testing::bench;
    prepare_terminal()?;
    let files = bench_files(names, dir).map_err(CliError::Error)?;
    if files.is_empty() {
        return Err(CliError::error(format!("no benchmark labs in {}", dir.display())));
    }
    if quick {
        // Read by the benchmark labs through env(); set before any thread
        // that could read the environment starts.
        std::env::set_var("BENCH_QUICK", "1");
    }
    let mut rows = Vec::new();
    let mut failed = false;
    let host = LinuxHost::default();
    for file in files {
        if clonet::interrupt::requested() {
            failed = true;
            break;
        }
        eprintln!("clonet bench: {}", file.display());
        match clonet::testing::run_bench(&file, Box::new(host.clone()), &rundir::base_dir(), color()) {
            Ok(r) if r.is_empty() => {
                CliError::error(format!("{} reported no rows", file.display())).print();
                failed = true;
            }
            Ok(r) => rows.extend(r),
            Err(report) => {
                eprintln!("{report}");
                failed = true;
            }
        }
    }
    // By row letter; a row's lines stay in the order they were measured.
    rows.sort_by(|a, b| a.row.cmp(&b.row));
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("rows serialize"));
    } else {
        print!("{}", bench::table(&rows));
    }
    if failed {
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
