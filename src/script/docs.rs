//! The API reference, generated from the doc comments of the Rhai API
//! (the same text `clonet api` prints and the REPL's `:help` will show).
use rhai::Engine;
use serde::{Deserialize, Serialize};

/// One documented function of the clonet API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FnDoc {
    pub name: String,
    pub signature: String,
    /// The doc comment without its example.
    pub text: String,
    /// The ```rhai example of the doc comment.
    pub example: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    functions: Vec<FnMeta>,
}

#[derive(Deserialize)]
struct FnMeta {
    name: String,
    #[serde(default, rename = "type")]
    kind: String,
    signature: String,
    #[serde(default, rename = "docComments")]
    doc_comments: Vec<String>,
}

/// Splits `/// …` doc lines into prose and the first ```rhai example.
fn split_doc(lines: &[String]) -> (String, Option<String>) {
    let mut text = Vec::new();
    let mut example: Option<Vec<String>> = None;
    let mut in_example = false;
    for raw in lines.iter().flat_map(|l| l.lines()) {
        let line = raw.trim_start_matches("///").strip_prefix(' ').unwrap_or(raw.trim_start_matches("///"));
        if line.trim_start().starts_with("```") {
            if in_example {
                in_example = false;
            } else if example.is_none() {
                in_example = true;
                example = Some(Vec::new());
            }
            continue;
        }
        match (&mut example, in_example) {
            (Some(ex), true) => ex.push(line.to_string()),
            _ => text.push(line.to_string()),
        }
    }
    let text = text.join("\n").trim().to_string();
    (text, example.map(|e| e.join("\n") + "\n"))
}

/// Rust type names as a script writer knows them.
fn rhai_type(t: &str) -> String {
    let t = t.trim().trim_start_matches("&mut ").trim_start_matches('&');
    let t = t.strip_prefix("RhaiResult<").and_then(|r| r.strip_suffix('>')).unwrap_or(t);
    match t {
        "str" | "ImmutableString" | "String" => "string".into(),
        "i64" => "int".into(),
        "f64" => "float".into(),
        "NodeRef" => "Node".into(),
        "LinkRef" => "Link".into(),
        "LanRef" => "Lan".into(),
        "Dynamic" => "any".into(),
        other => other.to_string(),
    }
}

/// `get$name(node: &mut Node) -> String` becomes `Node.name -> string`, a
/// method's receiver moves in front of the dot, and Rust types become
/// script types.
pub fn pretty_signature(sig: &str) -> String {
    let (call, ret) = sig.split_once(" -> ").unwrap_or((sig, "()"));
    let Some((name, params)) = call.split_once('(') else { return sig.to_string() };
    let params: Vec<(String, String)> = params
        .trim_end_matches(')')
        .split(", ")
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, t) = p.split_once(": ").unwrap_or(("_", p));
            (n.to_string(), t.to_string())
        })
        .collect();
    let ret = rhai_type(ret);
    if let Some(prop) = name.strip_prefix("get$") {
        let owner = params.first().map(|p| rhai_type(&p.1)).unwrap_or_default();
        return format!("{owner}.{prop} -> {ret}");
    }
    let receiver = params.first().filter(|p| p.1.starts_with("&mut ")).map(|p| rhai_type(&p.1));
    let rest = &params[usize::from(receiver.is_some())..];
    let args = rest.iter().map(|(n, t)| format!("{n}: {}", rhai_type(t))).collect::<Vec<_>>().join(", ");
    match receiver {
        Some(r) => format!("{r}.{name}({args}) -> {ret}"),
        None => format!("{name}({args}) -> {ret}"),
    }
}

/// Every clonet function (not Rhai's own), sorted by name and signature.
pub fn api_docs(engine: &Engine) -> Vec<FnDoc> {
    let json = engine.gen_fn_metadata_to_json(false).expect("metadata serializes");
    let meta: Metadata = serde_json::from_str(&json).expect("rhai metadata has the documented shape");
    let mut docs: Vec<FnDoc> = meta
        .functions
        .into_iter()
        .filter(|f| !f.doc_comments.is_empty() || !f.name.starts_with("anon$"))
        .map(|f| {
            let (text, example) = split_doc(&f.doc_comments);
            let name = f.name.strip_prefix("get$").unwrap_or(&f.name).to_string();
            FnDoc { name, signature: pretty_signature(&f.signature), text, example }
        })
        .collect();
    docs.sort_by(|a, b| (&a.name, &a.signature).cmp(&(&b.name, &b.signature)));
    docs.dedup();
    docs
}

/// The functions of each stdlib module (`topo`, `addr`, …), from the doc
/// comments of their Rhai source.
pub fn stdlib_docs(engine: &Engine) -> Vec<(String, Vec<FnDoc>)> {
    let mut out = Vec::new();
    for (module, text) in super::stdlib::MODULES {
        let Ok(ast) = engine.compile(*text) else { continue };
        let json = engine.gen_fn_metadata_with_ast_to_json(&ast, false).expect("metadata serializes");
        let meta: Metadata = serde_json::from_str(&json).expect("rhai metadata has the documented shape");
        let mut docs: Vec<FnDoc> = meta
            .functions
            .into_iter()
            .filter(|f| f.kind == "script" && !f.name.starts_with("anon$"))
            .map(|f| {
                let text = f
                    .doc_comments
                    .iter()
                    .flat_map(|l| l.lines())
                    .map(|l| l.trim_start_matches("///").strip_prefix(' ').unwrap_or(l.trim_start_matches("///")))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim_end()
                    .to_string();
                FnDoc { signature: format!("{module}::{}", f.signature), name: f.name, text, example: None }
            })
            .collect();
        docs.sort_by(|a, b| a.signature.cmp(&b.signature));
        out.push((module.to_string(), docs));
    }
    out
}

/// The whole reference as Markdown: the API, then the stdlib modules.
pub fn markdown(api: &[FnDoc], stdlib: &[(String, Vec<FnDoc>)]) -> String {
    let mut out = String::from("# clonet API reference\n\nGenerated by `clonet doc` from the doc comments of the code; `:help NAME` in the REPL shows the same text.\n\n## Functions\n\n");
    for d in api {
        out.push_str(&format!("### `{}`\n\n{}\n\n", d.signature, d.text));
        if let Some(ex) = &d.example {
            out.push_str(&format!("```rhai\n{ex}```\n\n"));
        }
    }
    out.push_str("## Standard library modules\n\nImport them from any script: `import \"topo\" as topo;`.\n\n");
    for (module, docs) in stdlib {
        out.push_str(&format!("### `{module}`\n\n"));
        for d in docs {
            out.push_str(&format!("#### `{}`\n\n{}\n\n", d.signature, d.text));
        }
    }
    out
}

/// The reference as text: signature, prose, example.
pub fn render(docs: &[FnDoc]) -> String {
    let mut out = String::new();
    for d in docs {
        out.push_str(&format!("{}\n", d.signature));
        for l in d.text.lines() {
            out.push_str(&format!("    {l}\n"));
        }
        if let Some(ex) = &d.example {
            out.push_str("    example:\n");
            for l in ex.lines() {
                out.push_str(&format!("        {l}\n"));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_prose_from_the_example() {
        let lines: Vec<String> = ["/// Makes a node.", "///", "/// ```rhai", "/// let a = node(\"a\");", "/// ```"]
            .map(String::from)
            .to_vec();
        let (text, ex) = split_doc(&lines);
        assert_eq!(text, "Makes a node.");
        assert_eq!(ex.as_deref(), Some("let a = node(\"a\");\n"));
    }

    #[test]
    fn signatures_read_like_scripts() {
        assert_eq!(pretty_signature("get$name(node: &mut Node) -> String"), "Node.name -> string");
        assert_eq!(
            pretty_signature("exec(node: &mut Node, command: &str, options: Map) -> RhaiResult<Map>"),
            "Node.exec(command: string, options: Map) -> Map"
        );
        assert_eq!(
            pretty_signature("link(a: NodeRef, b: NodeRef) -> RhaiResult<Link>"),
            "link(a: Node, b: Node) -> Link"
        );
        assert_eq!(pretty_signature("sleep(ms: i64) -> RhaiResult<()>"), "sleep(ms: int) -> ()");
    }

    #[test]
    fn every_stdlib_function_is_documented() {
        let engine = crate::script::bare_engine(std::path::Path::new("."));
        let modules = stdlib_docs(&engine);
        assert_eq!(modules.len(), crate::script::stdlib::MODULES.len(), "every module compiles");
        for (module, docs) in &modules {
            assert!(!docs.is_empty(), "{module} has functions");
            let bare: Vec<_> = docs.iter().filter(|d| d.text.is_empty()).map(|d| &d.signature).collect();
            assert!(bare.is_empty(), "undocumented stdlib functions: {bare:?}");
        }
    }

    #[test]
    fn every_api_function_has_an_example() {
        let engine = crate::script::bare_engine(std::path::Path::new("."));
        let docs = api_docs(&engine);
        assert!(docs.len() > 20, "{docs:?}");
        for name in ["node", "link", "lan", "exec", "set_ip", "ping", "sleep", "counters"] {
            assert!(docs.iter().any(|d| d.name == name), "{name} is documented");
        }
        let missing: Vec<_> =
            docs.iter().filter(|d| d.example.is_none() || d.text.is_empty()).map(|d| &d.signature).collect();
        assert!(missing.is_empty(), "functions without prose or example: {missing:?}");
    }
}
