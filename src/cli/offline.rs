//! The subcommands that read scripts without running a lab: `graph` (a
//! dry build of a script, drawn) and `doc` (the API scripts may call).
//!
//! Owns: their output. Must not touch: the host (the dry build runs on
//! the fake host, in a scratch run directory removed afterwards).
use std::path::Path;
use std::process::ExitCode;

use colored::Colorize;

use clonet::lab::handle::LabRef;
use clonet::lab::Lab;
use clonet::script;

use super::{color, write_output, CliError};

/// `clonet graph`: a dry build of the script, drawn.
pub fn graph(file: &Path, output: Option<&Path>, format: Option<&str>) -> Result<ExitCode, CliError> {
    use clonet::lab::graph::{render, Format};
    colored::control::set_override(color());
    let by_extension = output.and_then(|o| o.extension()).and_then(|e| e.to_str()).map(|e| match e {
        "dot" | "gv" => "dot",
        "mmd" | "mermaid" => "mermaid",
        _ => "svg",
    });
    let format = Format::parse(format.or(by_extension).unwrap_or("svg")).map_err(CliError::Error)?;
    // A lab of another tool is drawn with its images on the host's root:
    // a dry build needs none of them.
    let foreign = clonet::import::Foreign::detect(file).is_some();
    let source = super::session::read_source(file, foreign.then_some("host"))?;
    // A scratch run directory: the dry lab's state, removed afterwards.
    let scratch = std::env::temp_dir().join(format!("clonet-graph-{}", std::process::id()));
    let host = Box::new(clonet::host::fake::FakeHost::dry());
    let name = super::session::default_lab_name(file);
    let lab = LabRef::local(Lab::new(&name, host, &scratch, Some(file)).map_err(CliError::error)?);
    // The picture goes to stdout; what the script prints, to stderr.
    let context = script::ScriptContext::new(lab.clone()).dry_run().print_to_stderr();
    let engine = script::engine_with(context, &source.dir);
    let ran = script::compile(&engine, &source.name, &source.text)
        .and_then(|ast| script::run(&engine, &mut rhai::Scope::new(), &source.name, &ast));
    if let Err(report) = ran {
        eprint!("{}", report.render(&script::report::read_source, color()));
        eprintln!("{}: the script stopped there; drawing what it had built", "warning".yellow().bold());
    }
    drop(engine);
    let topology = lab.topology();
    lab.teardown();
    let _ = std::fs::remove_dir_all(&scratch);
    let text = render(&topology.map_err(CliError::error)?, format);
    match output {
        Some(path) => write_output(path, &text)?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `clonet convert LAB [-o FILE] [--images …]`: another tool's lab as
/// Rhai. The script names the lab's directory `"."` when it is written
/// into that directory, else by its absolute path, so it runs from
/// anywhere.
pub fn convert(lab: &Path, output: Option<&Path>, images: Option<&str>) -> Result<ExitCode, CliError> {
    use clonet::import::{Foreign, ImagePolicy};
    let foreign = Foreign::detect(lab).ok_or_else(|| {
        CliError::error(format!(
            "{} is not a Kathará lab (a directory with lab.conf) or a containerlab topology (*.clab.yml)",
            lab.display()
        ))
    })?;
    let policy = match images {
        None => ImagePolicy::default(),
        Some(v) => ImagePolicy::from_option(v).map_err(|e| CliError::error(format!("--images: {e}")))?,
    };
    let lab_dir = std::fs::canonicalize(foreign.dir())
        .map_err(|e| CliError::error(format!("{}: {e}", foreign.dir().display())))?;
    let out_dir = output
        .map(|o| o.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
        .and_then(|d| std::fs::canonicalize(d).ok());
    let named =
        if out_dir.as_deref() == Some(lab_dir.as_path()) { ".".to_string() } else { lab_dir.display().to_string() };
    let converted = foreign.to_rhai(&policy, &named).map_err(|e| CliError::error(e.to_string()))?;
    for w in &converted.warnings {
        eprintln!("{}: {w}", "warning".yellow().bold());
    }
    match output {
        Some(path) => write_output(path, &converted.script)?,
        None => print!("{}", converted.script),
    }
    Ok(ExitCode::SUCCESS)
}

/// `clonet doc [NAME] [--json] [-o FILE]`: the API reference.
pub fn doc(name: Option<&str>, json: bool, output: Option<&Path>) -> Result<ExitCode, CliError> {
    let engine = script::bare_engine(Path::new("."));
    if name.is_none() && !json {
        let text = script::docs::markdown(&script::docs::api_docs(&engine), &script::docs::stdlib_docs(&engine));
        match output {
            None => print!("{text}"),
            Some(path) => clonet::host::files::write_output(path, text.as_bytes())
                .map_err(|e| CliError::error(format!("cannot write {}: {e}", path.display())))?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let docs: Vec<_> =
        script::docs::api_docs(&engine).into_iter().filter(|d| name.is_none_or(|n| d.name == n)).collect();
    if docs.is_empty() {
        return Err(CliError::error(format!("no function called {:?}", name.unwrap_or(""))));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&docs).expect("docs serialize"));
    } else {
        print!("{}", script::docs::render(&docs));
    }
    Ok(ExitCode::SUCCESS)
}
