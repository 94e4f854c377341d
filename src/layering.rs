//! The architecture test: every module imports only the layers below its
//! own, in the order `src/README.md` lists under "Layers". The map and the
//! code cannot drift apart: a new top-level module must be placed in that
//! list, and a `crate::` path that reaches upwards fails here with the
//! file and line.
//!
//! Test modules (`#[cfg(test)] mod tests`) are left out: a test may drive
//! a lower layer through a higher one (a saved lab's script is checked by
//! compiling it with the Rhai engine, for instance).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The layers as `src/README.md` lists them: `N. \`name\`` lines under
/// the "## Layers" heading, lowest first. Several names on one line
/// share a layer.
fn documented_layers(readme: &str) -> Vec<Vec<String>> {
    let section = readme.split("\n## Layers").nth(1).expect("src/README.md has a \"## Layers\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|l| {
            let names = l.split(" — ").next().unwrap_or(l);
            names.split('`').skip(1).step_by(2).map(str::to_string).collect::<Vec<_>>()
        })
        .filter(|names| !names.is_empty())
        .collect()
}

/// The top-level module a source file belongs to (`host` for
/// `src/host/ns.rs`, `remote` for `src/remote.rs`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("non-empty").as_os_str().to_string_lossy().to_string();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named by `crate::…` paths in `code` (also in
/// grouped imports: `use crate::{host, lab::Lab}`), with their lines.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_tests = false;
    let mut lines = code.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            // A test module runs to the end of the file by house style.
            if lines.peek().is_some_and(|(_, next)| next.trim_start().starts_with("mod ")) {
                in_tests = true;
            }
        }
        if in_tests || trimmed.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            // `clonet::crate::` does not exist; skip identifiers that end in "crate".
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or(group);
                for part in inner.split(',') {
                    let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        found.push((n + 1, name));
                    }
                }
            } else {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                found.push((n + 1, name));
            }
        }
    }
    found
}

#[test]
fn modules_import_only_the_layers_below_their_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let readme = std::fs::read_to_string(src.join("README.md")).expect("src/README.md");
    let layers = documented_layers(&readme);
    assert!(layers.len() >= 5, "src/README.md lists too few layers: {layers:?}");
    let rank: HashMap<String, usize> =
        layers.iter().enumerate().flat_map(|(i, names)| names.iter().map(move |n| (n.clone(), i))).collect();

    // Every module the crate declares has a place in the order.
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let mut test_only = false;
    for line in lib.lines() {
        let line = line.trim();
        // `#[cfg(test)] mod layering;` (this test) is not a layer.
        let after_cfg_test = std::mem::replace(&mut test_only, line == "#[cfg(test)]");
        if after_cfg_test {
            continue;
        }
        let decl = line.strip_prefix("pub mod ").or_else(|| line.strip_prefix("mod "));
        if let Some(name) = decl.and_then(|d| d.strip_suffix(';')) {
            assert!(rank.contains_key(name), "module {name} (lib.rs) is missing from src/README.md's Layers");
        }
    }

    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        // The binary's own modules (main.rs, cli/) sit on top of the library.
        let Some(&own) = rank.get(&module) else {
            assert!(
                matches!(module.as_str(), "main" | "cli" | "lib" | "layering"),
                "{} belongs to module {module}, which src/README.md's Layers does not list",
                file.display()
            );
            continue;
        };
        let code = std::fs::read_to_string(file).expect("source");
        for (line, target) in crate_paths(&code) {
            if target == module || target.is_empty() {
                continue;
            }
            match rank.get(&target) {
                Some(&other) if other < own => {}
                Some(_) => wrong.push(format!(
                    "{}:{line}: {module} imports {target}, which is not below it",
                    file.strip_prefix(root).unwrap_or(file).display()
                )),
                None => wrong.push(format!("{}:{line}: unknown module {target}", file.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layer order of src/README.md:\n{}", wrong.join("\n"));
}

#[test]
fn the_import_scanner_reads_plain_grouped_and_test_paths() {
    let code = "use crate::host::X;\nuse crate::{lab::Lab, vocab};\n// crate::gui in a comment\nlet x = \
                crate::switch::y();\n#[cfg(test)]\nmod tests {\n    use crate::script::z;\n}\n";
    let names: Vec<String> = crate_paths(code).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["host", "lab", "vocab", "switch"]);
    let readme = "# Map\n\n## Layers\n\n1. `sys` — syscalls\n2. `vocab`\n3. `testing`, `repl` — front ends\n\n## Other\n4. `x`\n";
    assert_eq!(documented_layers(readme), vec![vec!["sys"], vec!["vocab"], vec!["testing", "repl"]]);
}
