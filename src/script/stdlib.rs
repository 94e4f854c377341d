//! The Rhai standard library shipped inside the binary (`stdlib/*.rhai`),
//! and the module resolver that serves it before looking on disk.
use std::path::{Path, PathBuf};

use rhai::module_resolvers::FileModuleResolver;
use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};
type SharedModule = Shared<Module>;

/// (import name, source text). The source name reported in errors is
/// `stdlib/NAME.rhai`.
pub const MODULES: &[(&str, &str)] = &[
    ("net", include_str!("../../stdlib/net.rhai")),
    ("bench", include_str!("../../stdlib/bench.rhai")),
    ("addr", include_str!("../../stdlib/addr.rhai")),
    ("topo", include_str!("../../stdlib/topo.rhai")),
    ("routing", include_str!("../../stdlib/routing.rhai")),
    ("check", include_str!("../../stdlib/check.rhai")),
    ("frr", include_str!("../../stdlib/frr.rhai")),
    ("kathara", include_str!("../../stdlib/kathara.rhai")),
];

/// The text of a stdlib module, by the source name errors carry.
pub fn source_of(source_name: &str) -> Option<&'static str> {
    let name = source_name.strip_prefix("stdlib/")?.strip_suffix(".rhai")?;
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Resolves `import "NAME"` to a stdlib module, else to a file relative to
/// the script's directory.
pub struct Resolver {
    /// Script files beside the importing script; none for a student's
    /// answer, which may import only the stdlib (a path could name any
    /// host file, and a compile error would show some of it).
    files: Option<FileModuleResolver>,
}

impl Resolver {
    pub fn new(script_dir: &Path) -> Resolver {
        Resolver { files: Some(FileModuleResolver::new_with_path(PathBuf::from(script_dir))) }
    }

    /// A resolver of the stdlib's modules only.
    pub fn stdlib_only() -> Resolver {
        Resolver { files: None }
    }
}

impl ModuleResolver for Resolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        if let Some((name, text)) = MODULES.iter().find(|(n, _)| *n == path) {
            let mut ast = engine
                .compile(*text)
                .map_err(|e| EvalAltResult::ErrorInModule(format!("stdlib/{name}.rhai"), e.into(), pos))?;
            ast.set_source(format!("stdlib/{name}.rhai"));
            let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
                .map_err(|e| EvalAltResult::ErrorInModule(format!("stdlib/{name}.rhai"), e, pos))?;
            return Ok(module.into());
        }
        match &self.files {
            Some(files) => files.resolve(engine, source, path, pos),
            None => Err(EvalAltResult::ErrorRuntime(
                format!("cannot import {path:?}: an answer imports only the stdlib").into(),
                pos,
            )
            .into()),
        }
    }
}
