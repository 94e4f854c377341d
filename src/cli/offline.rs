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

use super::{color, lab_name, write_output, CliError};

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
    if !file.is_file() {
        return Err(CliError::error(format!("cannot read {}: no such file", file.display())));
    }
    // A scratch run directory: the dry lab's state, removed afterwards.
    let scratch = std::env::temp_dir().join(format!("clonet-graph-{}", std::process::id()));
    let host = Box::new(clonet::host::fake::FakeHost::dry());
    let lab = LabRef::local(Lab::new(&lab_name(file, None), host, &scratch, Some(file)).map_err(CliError::error)?);
    // The picture goes to stdout; what the script prints, to stderr.
    let context = script::ScriptContext::new(lab.clone()).dry_run().print_to_stderr();
    let engine = script::engine_with(context, script::script_dir(file));
    if let Err(report) = script::run_file(&engine, file) {
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
