//! The subcommands that grade labs: `test` (test files: one lab per file,
//! its `test_*` functions in order) and `exercise check` (students'
//! answers, each on a fresh lab, scored by the exercise's checks).
//!
//! Owns: their console output and result files. Must not touch: running
//! the labs (the library's `testing`).
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use colored::Colorize;

use clonet::host::linux::LinuxHost;
use clonet::lab::rundir;

use super::{color, prepare_terminal, write_or_complain, CliError};

#[derive(Subcommand)]
pub enum ExerciseCmd {
    /// Grade answers: for each, a fresh lab from DIR/lab.rhai, the answer,
    /// then the checks of DIR/check.rhai, each with its points.
    Check {
        /// The exercise directory.
        dir: PathBuf,
        /// A student's answer (a .rhai script); repeat for several.
        #[arg(long, required = true)]
        answer: Vec<PathBuf>,
        /// Write one JSON object per student here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write one CSV row per student here.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

/// `clonet test [PATHS] [--filter F] [--junit FILE] [--json FILE]`.
pub fn run_tests(
    paths: Vec<PathBuf>,
    filter: Option<String>,
    junit: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<ExitCode, CliError> {
    use clonet::testing::report::{self, Outcome};
    prepare_terminal()?;
    let paths = if paths.is_empty() { vec![PathBuf::from(".")] } else { paths };
    let files = clonet::testing::discover(&paths).map_err(CliError::clonet)?;
    let mut all = Vec::new();
    // One host for every file: its clones share the images it checked.
    let host = LinuxHost::default();
    for file in files {
        if clonet::interrupt::requested() {
            break;
        }
        let mut print = |r: &report::TestResult| {
            let (word, detail) = match &r.outcome {
                Outcome::Passed => ("PASS".green().bold(), String::new()),
                Outcome::Failed { message } => ("FAIL".red().bold(), format!("\n{}", indent(message))),
                Outcome::Skipped { reason } => ("SKIP".yellow().bold(), format!("  ({reason})")),
            };
            println!("{word} {} {} ({:.2} s){detail}", r.file, r.name, r.seconds);
        };
        let results = clonet::testing::run_file(
            &file,
            Box::new(host.clone()),
            &rundir::base_dir(),
            filter.as_deref(),
            color(),
            &mut print,
        );
        all.extend(results);
    }
    let totals = report::totals(&all);
    let written = junit.as_deref().is_none_or(|p| write_or_complain(p, &report::junit_xml(&all)))
        & json.as_deref().is_none_or(|p| write_or_complain(p, &report::json(&all)));
    println!("{}", report::summary_line(totals));
    if let Some(sig) = clonet::interrupt::signal() {
        return Ok(ExitCode::from((128 + sig) as u8));
    }
    if totals.failed > 0 || !written {
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// `clonet exercise check DIR --answer FILE…`.
pub fn exercise(cmd: ExerciseCmd) -> Result<ExitCode, CliError> {
    let ExerciseCmd::Check { dir, answer, json, csv } = cmd;
    prepare_terminal()?;
    let exercise = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let mut grades = Vec::new();
    let host = LinuxHost::default();
    for a in &answer {
        if clonet::interrupt::requested() {
            break;
        }
        let g = clonet::testing::grade(&dir, a, Box::new(host.clone()), &rundir::base_dir(), color())
            .map_err(|e| CliError::error(format!("{exercise}: {e}")))?;
        print!("{}", grade_report(&exercise, &g));
        grades.push(g);
    }
    let written = json
        .as_deref()
        .is_none_or(|p| write_or_complain(p, &serde_json::to_string_pretty(&grades).expect("serializable")))
        & csv.as_deref().is_none_or(|p| write_or_complain(p, &clonet::testing::report::grades_csv(&grades)));
    if clonet::interrupt::requested() || !written {
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// A student's graded report: the score, then each check with its points
/// and the reason for any failure.
fn grade_report(exercise: &str, g: &clonet::testing::report::Grade) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let score = format!("{}/{}", g.score, g.max);
    let score = if g.score == g.max { score.green().bold() } else { score.red().bold() };
    let _ = writeln!(out, "{exercise}: {} scored {score}", g.student.bold());
    if let Some(e) = &g.answer_error {
        let _ = writeln!(out, "  {} the answer stopped with an error:\n{}", "!".red().bold(), indent(e));
    }
    let width = g.checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    for c in &g.checks {
        let mark = if c.passed { "✓".green().bold() } else { "✗".red().bold() };
        let _ = write!(out, "  {mark} {:<width$}  {}/{}", c.name, c.points, c.max);
        if !c.passed {
            let _ = write!(out, "  {}", c.reason.replace('\n', "\n      "));
        }
        out.push('\n');
    }
    out
}
