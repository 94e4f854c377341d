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

/// `clonet run [FILE] [--restore DIR] [--name NAME] [-i]`.
pub fn run(
    file: Option<PathBuf>,
    restore: Option<PathBuf>,
    name: Option<String>,
    interactive: bool,
    limits: Option<String>,
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
    let from = file.as_deref().or(restore.as_deref()).expect("clap requires one");
    let name = name.or(saved_name).unwrap_or_else(|| lab_name(from, None));
    let after = if interactive { After::Repl } else { After::TearDown };
    session(file.as_deref(), restore.as_deref(), name, after, limits)
}

/// `clonet repl [--name NAME]`: a REPL on an empty lab.
pub fn repl(name: String) -> Result<ExitCode, CliError> {
    session(None, None, name, After::Repl, script::ScriptLimits::LAB)
}

/// `clonet serve FILE [--name NAME] [--gui]`.
pub fn serve(file: &Path, name: Option<String>, gui: bool) -> Result<ExitCode, CliError> {
    let name = lab_name(file, name);
    session(Some(file), None, name, After::Serve { gui }, script::ScriptLimits::LAB)
}

/// Runs a script, a REPL, or a script then a REPL, on one lab, first
/// rebuilt from a saved lab if asked; or serves the lab a script built.
fn session(
    file: Option<&Path>,
    restore: Option<&Path>,
    name: String,
    after: After,
    limits: script::ScriptLimits,
) -> Result<ExitCode, CliError> {
    prepare_terminal()?;
    if let Some(f) = file.filter(|f| !f.is_file()) {
        return Err(CliError::error(format!("cannot read {}: no such file", f.display())));
    }
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
    let dir = file.map_or(Path::new("."), script::script_dir);
    // A benchmark lab run on its own prints its rows as they come.
    let rows = clonet::testing::bench::collector(Default::default(), false);
    let mut engine = script::engine_with(script::ScriptContext::new(lab.clone()).collecting_rows(rows), dir);
    limits.apply(&mut engine);
    let mut scope = rhai::Scope::new();
    let mut status = ExitCode::SUCCESS;
    if let Some(file) = file {
        if let Err(report) = script::run_file_in(&engine, &mut scope, file) {
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
