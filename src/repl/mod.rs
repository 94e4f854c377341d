//! The interactive REPL (`clonet repl`, `clonet run -i`): a rustyline
//! front end over the same engine and lab a script uses.
//!
//! Each input is compiled on its own (so errors point into it), and run
//! with the session's scope, the functions defined so far and the imports
//! made so far. Ctrl-C cancels the input being typed or interrupts the
//! statement running; the lab survives both. Ctrl-D and `:quit` leave.
//!
//! Owns: the line editor, history, completion, meta commands. Must not
//! touch: the host, except through lab `Command`s.
pub mod input;
pub mod meta;

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use colored::Colorize;
use rhai::{Dynamic, Engine, Scope, AST};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};

use crate::lab::command::PortReport;
use crate::lab::{Command, Reply};
use crate::script::api::{LabRef, LanRef, LinkRef, NodeRef};
use crate::script::docs::{api_docs, FnDoc};
use crate::script::report::ErrorReport;
use input::{is_incomplete, word_at, WordKind};

/// Where the REPL keeps its history: `$CLONET_HISTORY`, else
/// `$XDG_STATE_HOME/clonet/history`, else `~/.local/state/clonet/history`.
pub fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLONET_HISTORY") {
        return Some(PathBuf::from(p));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("clonet/history"))
}

const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "for", "in", "if", "else", "while", "loop", "break", "continue", "return", "import", "true",
    "false", "try", "catch", "throw",
];

/// What running one input produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Text to show (a value, a meta command's output), maybe empty.
    Output(String),
    /// A rendered error.
    Error(String),
    Quit,
}

/// A REPL session over one lab.
pub struct Repl {
    engine: Engine,
    scope: Scope<'static>,
    lab: LabRef,
    /// Functions defined by earlier inputs.
    functions: AST,
    /// Earlier inputs that imported modules, re-run before each input.
    imports: Vec<AST>,
    /// Names of the scope's variables, for completion.
    variables: Rc<RefCell<Vec<String>>>,
    docs: Vec<FnDoc>,
    color: bool,
}

impl Repl {
    pub fn new(lab: LabRef, engine: Engine, scope: Scope<'static>, color: bool) -> Repl {
        let docs = api_docs(&engine);
        let variables = Rc::new(RefCell::new(Vec::new()));
        let mut repl =
            Repl { engine, scope, lab, functions: AST::empty(), imports: Vec::new(), variables, docs, color };
        repl.note_variables();
        repl
    }

    fn note_variables(&mut self) {
        *self.variables.borrow_mut() = self.scope.iter().map(|(name, _, _)| name.to_string()).collect();
    }

    fn call(&self, cmd: Command) -> Result<Reply, String> {
        self.lab.execute(cmd).map_err(|e| e.to_string())
    }

    fn topology(&self) -> crate::lab::topology::Topology {
        // An attached lab that went away shows as an empty one; the next
        // command says why.
        self.lab.topology().unwrap_or_default()
    }

    pub fn prompt(&self) -> (String, String) {
        let t = self.topology();
        let raw = format!("{}[{}]> ", t.lab, t.nodes.len());
        let styled = if self.color {
            format!("{}{}", t.lab.cyan().bold(), format!("[{}]> ", t.nodes.len()).dimmed())
        } else {
            raw.clone()
        };
        (raw, styled)
    }

    fn render(&self, report: &ErrorReport, input: &str) -> String {
        let input = input.to_string();
        report.render(
            &move |name| if name == "<repl>" { Some(input.clone()) } else { crate::script::report::read_source(name) },
            self.color,
        )
    }

    /// Runs one complete input: a meta command or Rhai code.
    pub fn eval(&mut self, input: &str) -> Outcome {
        let trimmed = input.trim();
        if let Some(meta) = trimmed.strip_prefix(':') {
            let outcome = self.meta(meta.trim());
            crate::interrupt::clear();
            return outcome;
        }
        let ast = match crate::script::compile(&self.engine, "<repl>", input) {
            Ok(a) => a,
            Err(report) => return Outcome::Error(self.render(&report, input)),
        };
        let mut full = AST::empty();
        for i in &self.imports {
            full = full.merge(i);
        }
        let full = full.merge(&self.functions).merge(&ast);
        let result = self.engine.eval_ast_with_scope::<Dynamic>(&mut self.scope, &full);
        self.note_variables();
        let interrupted = crate::interrupt::requested();
        crate::interrupt::clear();
        match result {
            Ok(value) => {
                self.functions = self.functions.merge(&ast.clone_functions_only());
                if let Some(imports) = input::leading_imports(input) {
                    if let Ok(prelude) = crate::script::compile(&self.engine, "<repl>", &imports) {
                        self.imports.push(prelude);
                    }
                }
                Outcome::Output(self.show(&value))
            }
            Err(_) if interrupted => Outcome::Error("interrupted; the lab is still here\n".to_string()),
            Err(e) => {
                // Functions defined by a failing input are kept: the definitions are fine.
                self.functions = self.functions.merge(&ast.clone_functions_only());
                Outcome::Error(self.render(&ErrorReport::runtime("<repl>", &e), input))
            }
        }
    }

    fn show(&self, value: &Dynamic) -> String {
        if value.is_unit() {
            return String::new();
        }
        let text = if let Some(n) = value.read_lock::<NodeRef>() {
            format!("Node({})", n.name)
        } else if let Some(l) = value.read_lock::<LinkRef>() {
            format!("Link({})", l.name)
        } else if let Some(l) = value.read_lock::<LanRef>() {
            format!("Lan({})", l.name)
        } else if value.is_string() {
            format!("{value:?}")
        } else {
            value.to_string()
        };
        let text = format!("=> {text}\n");
        if self.color {
            text.dimmed().to_string()
        } else {
            text
        }
    }

    fn counters(&self) -> Result<Vec<PortReport>, String> {
        match self.call(Command::Counters)? {
            Reply::Counters { ports } => Ok(ports),
            _ => Err("unexpected reply".into()),
        }
    }

    fn meta(&mut self, cmd: &str) -> Outcome {
        let (name, arg) = cmd.split_once(char::is_whitespace).map_or((cmd, ""), |(n, a)| (n, a.trim()));
        match name {
            "q" | "quit" | "exit" => Outcome::Quit,
            "help" | "h" => Outcome::Output(self.help(arg)),
            "nodes" => {
                let facts = |n: &str| match self.call(Command::NodeInfo { node: n.to_string() }) {
                    Ok(Reply::Node(info)) => (info.pid, info.detail),
                    _ => (0, None),
                };
                Outcome::Output(meta::nodes(&self.topology(), &facts))
            }
            "links" => Outcome::Output(meta::links(&self.topology())),
            "net" => Outcome::Output(meta::net(&self.topology())),
            "counters" => match self.counters() {
                Ok(c) => Outcome::Output(meta::counters(&c)),
                Err(e) => Outcome::Error(format!("error: {e}\n")),
            },
            "save" if !arg.is_empty() => {
                let script = crate::lab::save::to_script(&self.topology());
                match crate::host::files::write_output(std::path::Path::new(arg), script.as_bytes()) {
                    Ok(()) => Outcome::Output(format!("saved the topology to {arg}\n")),
                    Err(e) => Outcome::Error(format!("error: cannot write {arg}: {e}\n")),
                }
            }
            "load" if !arg.is_empty() => match std::fs::read_to_string(arg) {
                Ok(text) => match crate::script::compile(&self.engine, arg, &text) {
                    Ok(ast) => match crate::script::run(&self.engine, &mut self.scope, arg, &ast) {
                        Ok(()) => {
                            self.note_variables();
                            self.functions = self.functions.merge(&ast.clone_functions_only());
                            Outcome::Output(format!("loaded {arg}\n"))
                        }
                        Err(report) => Outcome::Error(self.render(&report, "")),
                    },
                    Err(report) => Outcome::Error(self.render(&report, "")),
                },
                Err(e) => Outcome::Error(format!("error: cannot read {arg}: {e}\n")),
            },
            "save" | "load" => Outcome::Error(format!("error: :{name} needs a file name\n")),
            _ => Outcome::Error(format!("error: unknown command :{name} (try :help)\n")),
        }
    }

    fn help(&self, arg: &str) -> String {
        if arg.is_empty() {
            let mut out = String::from("Meta commands:\n");
            for (c, what) in meta::COMMANDS {
                out.push_str(&format!("  {c:<10} {what}\n"));
            }
            let mut names: Vec<&str> = self.docs.iter().map(|d| d.name.as_str()).collect();
            names.dedup();
            out.push_str(&format!("Functions (:help NAME for one):\n  {}\n", names.join(" ")));
            return out;
        }
        let found: Vec<FnDoc> = self.docs.iter().filter(|d| d.name == arg).cloned().collect();
        if found.is_empty() {
            format!("no function called {arg:?}\n")
        } else {
            crate::script::docs::render(&found)
        }
    }

    /// Reads, runs and prints until `:quit`, Ctrl-D or the end of input.
    pub fn interact(&mut self) -> Result<(), ReadlineError> {
        let helper = ReplHelper {
            lab: self.lab.clone(),
            variables: self.variables.clone(),
            functions: {
                let mut f: Vec<String> =
                    self.docs.iter().filter(|d| !d.signature.contains('.')).map(|d| d.name.clone()).collect();
                f.extend(["print", "debug", "parse_int", "parse_float", "timestamp"].map(String::from));
                f.extend(KEYWORDS.iter().map(|k| k.to_string()));
                f.sort();
                f.dedup();
                f
            },
            methods: {
                let mut m: Vec<String> =
                    self.docs.iter().filter(|d| d.signature.contains('.')).map(|d| d.name.clone()).collect();
                m.extend(["len", "contains", "split", "push", "keys", "values", "to_string"].map(String::from));
                m.sort();
                m.dedup();
                m
            },
        };
        let config = rustyline::Config::builder().auto_add_history(false).build();
        let mut editor: Editor<ReplHelper, rustyline::history::DefaultHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(helper));
        let history = history_path();
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        loop {
            let (raw, styled) = self.prompt();
            let prompt = StyledPrompt { raw, styled };
            match editor.readline(&prompt) {
                Ok(line) => {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let _ = editor.add_history_entry(line.as_str());
                    if let Some(h) = &history {
                        if let Some(dir) = h.parent() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                        let _ = editor.save_history(h);
                    }
                    match self.eval(&line) {
                        Outcome::Quit => return Ok(()),
                        Outcome::Output(text) => print!("{text}"),
                        Outcome::Error(text) => eprint!("{text}"),
                    }
                }
                Err(ReadlineError::Interrupted) => {
                    crate::interrupt::clear();
                    continue;
                }
                Err(ReadlineError::Eof) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

struct StyledPrompt {
    raw: String,
    styled: String,
}

impl rustyline::Prompt for StyledPrompt {
    fn raw(&self) -> &str {
        &self.raw
    }

    fn styled(&self) -> &str {
        &self.styled
    }
}

/// Completion and multi-line input for the line editor.
struct ReplHelper {
    lab: LabRef,
    variables: Rc<RefCell<Vec<String>>>,
    functions: Vec<String>,
    methods: Vec<String>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, kind) = word_at(line, pos);
        let word = &line[start..pos];
        let pool: Vec<String> = match kind {
            WordKind::Meta => meta::COMMANDS.iter().map(|(c, _)| c.trim_start_matches(':').to_string()).collect(),
            WordKind::Method => self.methods.clone(),
            WordKind::Name => {
                let t = self.lab.topology().unwrap_or_default();
                t.order.iter().chain(t.lans.keys()).chain(t.links.keys()).cloned().collect()
            }
            WordKind::Free => self.functions.iter().chain(self.variables.borrow().iter()).cloned().collect(),
        };
        let mut out: Vec<Pair> = pool
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair { display: c.clone(), replacement: c })
            .collect();
        out.sort_by(|a, b| a.display.cmp(&b.display));
        out.dedup_by(|a, b| a.display == b.display);
        Ok((start, out))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _default: bool) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if is_incomplete(ctx.input()) { ValidationResult::Incomplete } else { ValidationResult::Valid(None) })
    }
}

impl Helper for ReplHelper {}
