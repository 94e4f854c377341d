//! The REPL driven as a person would, through a pseudo-terminal.
mod common;
use common::*;

use rexpect::session::{spawn_command, PtySession};

struct Repl {
    pty: PtySession,
}

impl Repl {
    fn start(sb: &Sandbox, history: &std::path::Path, args: &[&str]) -> Repl {
        // Not `sb.clonet()`: its stdin is /dev/null, and here it must be the pty.
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_clonet"));
        cmd.env("CLONET_RUN_DIR", sb.run_base()).env("NO_COLOR", "1");
        cmd.args(args).env("CLONET_HISTORY", history).env("TERM", "xterm");
        let mut pty = spawn_command(cmd, Some(20_000)).expect("spawn clonet in a pty");
        pty.exp_string("]> ").expect("a prompt");
        Repl { pty }
    }

    /// Types a line, waits for `expect` in what follows, then for the next
    /// prompt: the editor discards what is typed before it is ready.
    fn line(&mut self, line: &str, expect: &str) {
        self.pty.send_line(line).unwrap();
        self.pty.exp_string(expect).unwrap_or_else(|e| panic!("after {line:?}, waiting for {expect:?}: {e}"));
        if !expect.ends_with("]> ") {
            self.pty.exp_string("]> ").unwrap_or_else(|e| panic!("no prompt after {line:?}: {e}"));
        }
    }

    fn quit(mut self) {
        self.pty.send_line(":quit").unwrap();
        self.pty.exp_eof().expect("the REPL exits");
    }
}

#[test]
fn completion_of_functions_names_and_methods() {
    let sb = Sandbox::new();
    let history = sb.dir.path().join("history");
    let mut r = Repl::start(&sb, &history, &["repl", "--name", "comp"]);
    r.line("let alpha = node(\"alpha\");", "comp[1]> ");
    // A function name, a node name inside quotes, then a method after a dot.
    r.pty.send("get_no\t").unwrap();
    r.pty.send("(\"alp\t").unwrap();
    r.pty.send("\").exe\t").unwrap();
    r.line("(\"hostname\").stdout", "=> \"alpha\\n\"");
    r.quit();
    assert!(sb.run_dirs().is_empty(), "the lab is torn down on :quit");
}

#[test]
fn history_survives_between_two_runs() {
    let sb = Sandbox::new();
    let history = sb.dir.path().join("history");
    let mut r = Repl::start(&sb, &history, &["repl", "--name", "hist1"]);
    r.line("print(`from history ${40 + 2}`)", "from history 42");
    r.pty.send_control('d').unwrap();
    r.pty.exp_eof().unwrap();
    assert!(std::fs::read_to_string(&history).unwrap().contains("from history"));
    let mut r = Repl::start(&sb, &history, &["repl", "--name", "hist2"]);
    // Up arrow recalls the last line of the previous run.
    r.pty.send("\x1b[A").unwrap();
    r.line("", "from history 42");
    r.quit();
}

#[test]
fn an_error_then_more_work_in_the_same_lab() {
    let sb = Sandbox::new();
    let history = sb.dir.path().join("history");
    let mut r = Repl::start(&sb, &history, &["repl", "--name", "err"]);
    r.line("let a = node(\"a\"); let b = node(\"b\");", "err[2]> ");
    r.line("link(a, b, #{ ip_a: \"10.0.0.1/24\", ip_b: \"10.0.0.2/24\" });", "=> Link(a--b)");
    r.line("node(\"a\")", "<repl>:1:1: error: \"a\" is already used by a node");
    r.line("let c = node(\"c\"", "]> ");
    r.line(");", "err[3]> ");
    r.line("ping(a, b)", "=> true");
    r.line(":nodes", "c ");
    r.line(":links", "a:eth0 <-> b:eth0  up");
    r.line(":counters", "a--b");
    r.line(":help ping", "Whether `a` gets an ICMP echo answer");
    r.line(":bogus", "unknown command :bogus");
    let extra = sb.write("extra.rhai", "let z = node(\"z\");\nlink(z, get_node(\"c\"));\n");
    r.line(&format!(":load {}", extra.display()), "loaded");
    r.line("z.ifaces.len() + nodes().len()", "=> 5");
    r.quit();
}

#[test]
fn ctrl_c_interrupts_a_loop_and_the_lab_survives() {
    let sb = Sandbox::new();
    let history = sb.dir.path().join("history");
    let mut r = Repl::start(&sb, &history, &["repl", "--name", "intr"]);
    r.line(
        "let a = node(\"a\"); let b = node(\"b\"); link(a, b, #{ ip_a: \"10.0.0.1/24\", ip_b: \"10.0.0.2/24\" });",
        "=> Link",
    );
    r.pty.send_line("let i = 0; loop { i += 1; }").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    r.pty.send_control('c').unwrap();
    r.pty.exp_string("interrupted; the lab is still here").unwrap();
    r.pty.exp_string("]> ").unwrap();
    r.line("i > 1000", "=> true");
    // A long command inside a node is interrupted too.
    r.pty.send_line("a.exec(\"sleep 30\")").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    r.pty.send_control('c').unwrap();
    r.pty.exp_string("interrupted").unwrap();
    r.pty.exp_string("]> ").unwrap();
    r.line("ping(a, b)", "=> true");
    // Ctrl-C at the prompt only cancels what was being typed.
    r.pty.send("let half = ").unwrap();
    // The editor redraws the line per key, so the echo is not one string.
    std::thread::sleep(std::time::Duration::from_millis(300));
    r.pty.send_control('c').unwrap();
    // The editor discards type-ahead when it starts a new line: wait for it.
    r.pty.exp_string("intr[2]> ").unwrap();
    r.line("nodes().len()", "=> 2");
    r.quit();
    assert!(sb.run_dirs().is_empty());
}

#[test]
fn save_writes_a_script_that_rebuilds_the_same_topology() {
    let sb = Sandbox::new();
    let history = sb.dir.path().join("history");
    let saved = sb.dir.path().join("saved.rhai");
    let mut r = Repl::start(&sb, &history, &["repl", "--name", "saveme"]);
    // Each input ends with a value, so its output marks when it is done.
    r.line(
        "let a = node(\"a\"); let b = node(\"b\"); let c = node(\"c\"); let sw = lan(\"sw\"); let s2 = lan(\"s2\"); 1",
        "=> 1",
    );
    r.line("let l = link(a, b, #{ ip_a: \"10.0.0.1/24\", ip_b: \"10.0.0.2/24\", mtu: 9000 }); 2", "=> 2");
    r.line("link(a, c); link(a, b, #{ iface_a: \"up0\" }); unlink(a, c); 3", "=> 3");
    r.line("link(c, sw, #{ ip: \"10.1.0.3/24\", vlan: 10 }); link(b, sw, #{ trunk: [10, 20] }); link(sw, s2, #{ trunk: [10] }); 4", "=> 4");
    r.line("a.set_ip(\"eth0\", \"fd00::1/64\"); a.add_route(\"10.9.0.0/16\", \"10.0.0.2\"); l.down(); 5", "=> 5");
    r.line(&format!(":save {}", saved.display()), "saved the topology");
    r.pty.send_line("print(`TOPO ${topology()}`)").unwrap();
    let (_, original) = r.pty.exp_regex("TOPO #\\{[^\r\n]*").unwrap();
    r.quit();
    let mut script = std::fs::read_to_string(&saved).unwrap();
    script.push_str("print(`TOPO ${topology()}`);\n");
    let rebuild = sb.write("rebuild.rhai", &script);
    let out = sb.clonet().args(["run", "--name", "saveme"]).arg(&rebuild).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rebuilt = text(&out.stdout).lines().find(|l| l.starts_with("TOPO ")).unwrap().to_string();
    assert_eq!(rebuilt, original.trim_end());
}

#[test]
fn run_interactive_keeps_the_script_variables_and_lab() {
    let sb = Sandbox::new();
    let history = sb.dir.path().join("history");
    let script = sb.write("pre.rhai", "let a = node(\"a\");\nlet answer = 42;\n");
    let mut r = Repl::start(&sb, &history, &["run", "-i", script.to_str().unwrap()]);
    r.line("answer", "=> 42");
    r.line("a.exec(\"hostname\").stdout.trimmed()", "=> \"a\"");
    r.quit();
    assert!(sb.run_dirs().is_empty());
}
