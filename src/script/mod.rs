//! The Rhai interpreter: the only way into a lab.
//!
//! Builds an engine with the clonet API, the stdlib resolver, print and
//! interrupt hooks, and runs scripts, turning failures into reports.
//!
//! Owns: the Rhai engine. Must not touch: the host, except through
//! lab `Command`s.
pub mod api;
pub mod context;
pub mod docs;
pub mod limits;
pub mod report;
pub mod stdlib;

use std::io::Write;
use std::path::Path;

use rhai::{exported_module, Dynamic, Engine, Scope, AST};

pub use api::LabRef;
pub use context::ScriptContext;
pub use limits::ScriptLimits;
use report::ErrorReport;

/// The start of the message of a `skip()`ped test (`clonet test` tells a
/// skip from a failure by it).
pub const SKIP_MARK: &str = "\u{1}skipped\u{1} ";

/// Creates an engine wired to `lab`, resolving imports from the stdlib and
/// then from `script_dir`.
pub fn engine(lab: LabRef, script_dir: &Path) -> Engine {
    engine_with(ScriptContext::new(lab), script_dir)
}

/// An engine with its own context: its lab, where it prints, and where
/// benchmark rows go.
pub fn engine_with(context: ScriptContext, script_dir: &Path) -> Engine {
    let mut engine = bare_engine_printing(script_dir, context.print_to_stderr);
    let context = ScriptContext { script_dir: script_dir.to_path_buf(), ..context };
    engine.set_default_tag(Dynamic::from(context));
    engine
}

/// An engine with the whole API but no lab: for documentation and checks.
/// Lab functions called on it fail with a clear error.
pub fn bare_engine(script_dir: &Path) -> Engine {
    bare_engine_printing(script_dir, false)
}

fn bare_engine_printing(script_dir: &Path, print_to_stderr: bool) -> Engine {
    let mut engine = Engine::new();
    engine.register_global_module(exported_module!(api::node_api).into());
    engine.register_global_module(exported_module!(api::link_api).into());
    engine.register_global_module(exported_module!(api::lab_api).into());
    engine.register_global_module(exported_module!(api::snapshot_api).into());
    engine.register_global_module(exported_module!(api::capture_api).into());
    engine.register_global_module(exported_module!(api::bench_api).into());
    engine.register_global_module(exported_module!(api::import_api).into());
    engine.set_module_resolver(stdlib::Resolver::new(script_dir));
    engine.on_print(move |s| {
        crate::lab::progress::print_around(|| {
            if print_to_stderr {
                eprintln!("{s}");
                return;
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{s}");
            let _ = out.flush();
        })
    });
    engine.on_debug(|s, src, pos| eprintln!("[{}:{}] {s}", src.unwrap_or("script"), pos.line().unwrap_or(0)));
    engine.set_max_expr_depths(256, 256);
    ScriptLimits::LAB.apply(&mut engine);
    engine
}

/// The directory a script's own imports resolve from: its parent, or the
/// current directory for a bare file name.
pub fn script_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Compiles a script, naming it `source_name` in errors.
pub fn compile(engine: &Engine, source_name: &str, text: &str) -> Result<AST, ErrorReport> {
    let mut ast = engine.compile(text).map_err(|e| ErrorReport::parse(source_name, &e))?;
    ast.set_source(source_name);
    Ok(ast)
}

/// Runs a compiled script in `scope`.
pub fn run(engine: &Engine, scope: &mut Scope, source_name: &str, ast: &AST) -> Result<(), ErrorReport> {
    engine.run_ast_with_scope(scope, ast).map_err(|e| ErrorReport::runtime(source_name, &e))
}

/// Reads, compiles and runs a script file.
pub fn run_file(engine: &Engine, path: &Path) -> Result<(), ErrorReport> {
    run_file_in(engine, &mut Scope::new(), path)
}

/// Reads, compiles and runs a script file in `scope`, which keeps the
/// script's variables afterwards (for `run -i`).
pub fn run_file_in(engine: &Engine, scope: &mut Scope, path: &Path) -> Result<(), ErrorReport> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ErrorReport {
        message: format!("cannot read {name}: {e}"),
        at: None,
        calls: vec![],
    })?;
    let ast = compile(engine, &name, &text)?;
    run(engine, scope, &name, &ast)
}
