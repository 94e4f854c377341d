//! The subcommands that run a lab in this process: `run` (a script, then
//! a REPL with `-i`, optionally first rebuilding a saved lab), `repl` and
//! `serve` (a script's lab kept until stopped, with the web GUI if asked).
//!
//! Owns: the life of that lab, from creation to teardown, and what ends
//! it (the script's end, the REPL's, a signal). Must not touch: what the
//! lab does (the library's `Lab`).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use colored::Colorize;

use clonet::host::linux::LinuxHost;
use clonet::lab::handle::LabRef;
use clonet::lab::rundir;
use clonet::lab::Lab;
use clonet::script;

use super::{color, lab_name, prepare_terminal, CliError};

/// What a session does once its script (if any) has run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Tear the lab down.
    TearDown,
    /// Open the REPL on it.
    Repl,
    /// Keep serving it until stopped (with the web GUI if asked).
    Serve { gui: bool },
}

/// What a session runs: a Rhai script, or a lab of another tool
/// (Kathará, containerlab) written as one.
pub(super) struct Source {
    /// What error reports call it.
    pub name: String,
    pub text: String,
    /// Where its relative paths and imports are found from.
    pub dir: PathBuf,
}

/// Reads `file`: a Rhai script as it is, a Kathará lab (directory or
/// `lab.conf`) or a containerlab topology as the Rhai script that builds
/// it, with its images as `images` says. What did not map is said once.
pub(super) fn read_source(file: &Path, images: Option<&str>) -> Result<Source, CliError> {
    use clonet::import::{Foreign, ImagePolicy};
    let Some(foreign) = Foreign::detect(file) else {
        if images.is_some() {
            return Err(CliError::error("--images applies to Kathará labs and containerlab topologies"));
        }
        if !file.is_file() {
            return Err(CliError::error(format!("cannot read {}: no such file", file.display())));
        }
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::error(format!("cannot read {}: {e}", file.display())))?;
        return Ok(Source { name: file.display().to_string(), text, dir: script::script_dir(file).to_path_buf() });
    };
    let policy = match images {
        None => ImagePolicy::default(),
        Some(v) => ImagePolicy::from_option(v).map_err(|e| CliError::error(format!("--images: {e}")))?,
    };
    let converted = foreign.to_rhai(&policy, ".").map_err(|e| CliError::error(e.to_string()))?;
    for w in &converted.warnings {
        eprintln!("{}: {w}", "warning".yellow().bold());
    }
    // Every image the lab runs as itself, had before anything starts: a
    // lab whose images cannot all be had makes nothing.
    clonet::import::images::ensure(&converted.images, &mut |m| eprintln!("clonet: {m}"))
        .map_err(|e| CliError::error(format!("{}: {e}", foreign.source_file().display())))?;
    Ok(Source {
        name: format!("{} (as Rhai: see `clonet convert`)", foreign.source_file().display()),
        text: converted.script,
        dir: foreign.dir(),
    })
}

/// The lab's name when none is given: the script's stem, a Kathará lab's
/// directory name, a topology's name without `.clab`; characters clonet
/// does not take in names become `_`.
pub(super) fn default_lab_name(file: &Path) -> String {
    use clonet::import::Foreign;
    let raw = match Foreign::detect(file) {
        Some(Foreign::Kathara(dir)) => std::fs::canonicalize(&dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_else(|| "lab".into()),
        Some(Foreign::Clab(f)) => {
            let stem = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            stem.trim_end_matches(".yml").trim_end_matches(".yaml").trim_end_matches(".clab").to_string()
        }
        None => return lab_name(file, None),
    };
    let cleaned: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if cleaned.starts_with(|c: char| c.is_ascii_alphabetic()) {
        cleaned
    } else {
        format!("lab_{cleaned}")
    }
}

/// `clonet run [FILE] [--restore DIR] [--name NAME] [-i]`.
pub fn run(
    file: Option<PathBuf>,
    restore: Option<PathBuf>,
    name: Option<String>,
    interactive: bool,
    limits: Option<String>,
    images: Option<String>,
) -> Result<ExitCode, CliError> {
    let limits = match limits {
        Some(text) => script::ScriptLimits::LAB.with(&text).map_err(|e| CliError::error(format!("--limits: {e}")))?,
        None => script::ScriptLimits::LAB,
    };
    // A restored lab keeps its name (and so its MACs) unless told.
    let saved_name = restore.as_deref().and_then(|d| {
        let text = std::fs::read(d.join(clonet::lab::rebuild::SAVED_LAB_FILE)).ok()?;
        serde_json::from_slice::<clonet::lab::rebuild::SavedLab>(&text).ok().map(|s| s.topology.lab)
    });
    let name = match (&file, &restore) {
        (Some(f), _) => name.or(saved_name).unwrap_or_else(|| default_lab_name(f)),
        (None, Some(r)) => name.or(saved_name).unwrap_or_else(|| lab_name(r, None)),
        (None, None) => unreachable!("clap requires one"),
    };
    let after = if interactive { After::Repl } else { After::TearDown };
    session(file.as_deref(), restore.as_deref(), name, after, limits, images.as_deref())
}

/// `clonet repl [--name NAME]`: a REPL on an empty lab.
pub fn repl(name: String) -> Result<ExitCode, CliError> {
    session(None, None, name, After::Repl, script::ScriptLimits::LAB, None)
}

/// `clonet serve FILE [--name NAME] [--gui] [--images …]`.
pub fn serve(file: &Path, name: Option<String>, gui: bool, images: Option<String>) -> Result<ExitCode, CliError> {
    let name = name.unwrap_or_else(|| default_lab_name(file));
    session(Some(file), None, name, After::Serve { gui }, script::ScriptLimits::LAB, images.as_deref())
}

/// Runs a script, a REPL, or a script then a REPL, on one lab, first
/// rebuilt from a saved lab if asked; or serves the lab a script built.
fn session(
    file: Option<&Path>,
    restore: Option<&Path>,
    name: String,
    after: After,
    limits: script::ScriptLimits,
    images: Option<&str>,
) -> Result<ExitCode, CliError> {
    prepare_terminal()?;
    // Read (and, for another tool's lab, converted) before the lab is made:
    // a bad file leaves nothing behind.
    let source = file.map(|f| read_source(f, images)).transpose()?;
    let lab = Lab::new(&name, Box::new(LinuxHost::default()), &rundir::base_dir(), file).map_err(CliError::error)?;
    let lab = LabRef::served(lab).map_err(CliError::error)?;
    if let Some(saved) = restore {
        let loaded = lab.execute(clonet::lab::command::Command::LoadLab { dir: saved.to_path_buf() });
        if let Err(e) = loaded {
            // Said before the teardown, which may have its own complaints.
            CliError::error(format!("restoring {}: {e}", saved.display())).print();
            lab.teardown();
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("clonet: lab {name} restored from {}", saved.display());
    }
    let dir = source.as_ref().map_or(Path::new("."), |s| s.dir.as_path());
    // A benchmark lab run on its own prints its rows as they come.
    let rows = clonet::testing::bench::collector(Default::default(), false);
    let mut engine = script::engine_with(script::ScriptContext::new(lab.clone()).collecting_rows(rows), dir);
    limits.apply(&mut engine);
    let mut scope = rhai::Scope::new();
    let mut status = ExitCode::SUCCESS;
    if let Some(source) = &source {
        let ran = script::compile(&engine, &source.name, &source.text)
            .and_then(|ast| script::run(&engine, &mut scope, &source.name, &ast));
        if let Err(report) = ran {
            if let Some(sig) = clonet::interrupt::signal() {
                drop(engine);
                lab.teardown();
                eprintln!("clonet: interrupted; lab {name} torn down");
                return Ok(ExitCode::from((128 + sig) as u8));
            }
            eprint!("{}", report.render(&script::report::read_source, color()));
            status = ExitCode::FAILURE;
        }
    }
    if let (After::Serve { gui }, true) = (after, status == ExitCode::SUCCESS) {
        let run_dir = lab.local_lab().and_then(|l| l.run_dir().map(Path::to_path_buf)).unwrap_or_default();
        let socket = run_dir.join(clonet::lab::control::SOCKET);
        let _gui = if gui {
            match clonet::gui::Gui::start(&run_dir) {
                Ok(g) => {
                    eprintln!("clonet: web GUI at {} (this machine only)", g.url);
                    Some(g)
                }
                Err(e) => {
                    eprintln!("{}: starting the GUI: {e}", "warning".yellow().bold());
                    None
                }
            }
        } else {
            None
        };
        eprintln!("clonet: lab {name} is served on {}; stop it with `clonet stop {name}` or Ctrl-C", socket.display());
        while !clonet::interrupt::requested() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        drop(engine);
        lab.teardown();
        eprintln!("clonet: lab {name} torn down");
        return Ok(ExitCode::SUCCESS);
    }
    if after == After::Repl {
        clonet::interrupt::clear();
        clonet::interrupt::exit_on_termination(true);
        let mut repl = clonet::repl::Repl::new(lab.clone(), engine, scope, color());
        if let Err(e) = repl.interact() {
            CliError::clonet(format!("terminal: {e}")).print();
        }
        clonet::interrupt::exit_on_termination(false);
        status = ExitCode::SUCCESS;
    } else {
        drop(engine);
    }
    lab.teardown();
    Ok(status)
}
