//! The commands that drive a running lab from another terminal, through
//! its control socket: `clonet ls`, `attach`, `exec`, `stop`.
//!
//! Owns: their output and exit codes. Must not touch: the lab itself (only
//! `Command`s through `lab::control::Client`).
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use colored::Colorize;
use serde_json::json;

use crate::lab::command::{Command, LabInfo, Reply};
use crate::lab::control::{Client, Request};
use crate::lab::rundir;
use crate::vocab::exec::ExecRequest;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{}: {msg}", "error".red().bold());
    ExitCode::FAILURE
}

/// `1h02m`, `3m05s`, `42s`.
pub fn uptime(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// A running lab's facts, asked over its socket (or, when it does not
/// answer within a second or two, what its run directory says).
fn lab_info(dir: &std::path::Path, state: &rundir::LabState) -> Result<LabInfo, serde_json::Value> {
    let asked = Client::connect(dir).and_then(|mut c| {
        c.set_timeout(Some(Duration::from_secs(2)));
        c.execute(Command::LabInfo).map_err(|e| e.to_string())
    });
    match asked {
        Ok(Reply::LabInfo(info)) => Ok(info),
        _ => Err(json!({
            "name": state.lab,
            "pid": state.owner.as_ref().map(|o| o.pid),
            "nodes": state.nodes.len(),
            "busy": true,
        })),
    }
}

/// `clonet ls`: the running labs, one per line (or as JSON).
pub fn ls(as_json: bool) -> ExitCode {
    let labs = rundir::running_labs(&rundir::base_dir());
    let rows: Vec<Result<LabInfo, serde_json::Value>> = labs.iter().map(|(dir, s)| lab_info(dir, s)).collect();
    if as_json {
        let all: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| match r {
                Ok(info) => serde_json::to_value(info).expect("serializes"),
                Err(v) => v.clone(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all).expect("serializes"));
        return ExitCode::SUCCESS;
    }
    if rows.is_empty() {
        println!("no lab is running");
        return ExitCode::SUCCESS;
    }
    println!("{:<16} {:>8} {:>6} {:>6} {:>5} {:>8}  script", "LAB", "PID", "NODES", "LINKS", "LANS", "UPTIME");
    for r in rows {
        match r {
            Ok(i) => {
                println!(
                    "{:<16} {:>8} {:>6} {:>6} {:>5} {:>8}  {}",
                    i.name,
                    i.pid,
                    if i.running == i.nodes { i.nodes.to_string() } else { format!("{}/{}", i.running, i.nodes) },
                    i.links,
                    i.lans,
                    uptime(i.uptime_s),
                    i.script.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
                );
                // What the lab says about itself, one indented line.
                let said: Vec<&str> = ["description", "version", "author", "email", "web"]
                    .iter()
                    .filter_map(|k| i.about.get(*k).map(String::as_str))
                    .collect();
                if !said.is_empty() {
                    println!("{:<16} {}", "", said.join(" · "));
                }
            }
            Err(v) => println!(
                "{:<16} {:>8} {:>6} {:>6} {:>5} {:>8}  (busy: did not answer)",
                v["name"].as_str().unwrap_or("?"),
                v["pid"].as_u64().map(|p| p.to_string()).unwrap_or_default(),
                v["nodes"].as_u64().unwrap_or(0),
                "?",
                "?",
                "?"
            ),
        }
    }
    ExitCode::SUCCESS
}

/// Who runs a command of `clonet exec`, and where.
#[derive(Clone, Debug, Default)]
pub struct ExecAs {
    pub user: Option<String>,
    pub cwd: Option<String>,
}

/// `clonet exec LAB NODE -- CMD…`: the command's output, and its status
/// as ours.
pub fn exec(lab: &str, node: &str, argv: Vec<String>, timeout: Duration, how: ExecAs) -> ExitCode {
    let mut client = match Client::connect_lab(lab) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let timeout = match crate::vocab::Timeout::new(timeout) {
        Ok(t) => t,
        Err(e) => return fail(format!("--timeout: {e}")),
    };
    let request =
        ExecRequest { argv, stdin: Vec::new(), timeout, max_output: Default::default(), user: how.user, cwd: how.cwd };
    match client.execute(Command::Exec { node: node.to_string(), request }) {
        Ok(Reply::Exec(out)) => {
            let _ = std::io::stdout().write_all(&out.stdout);
            let _ = std::io::stderr().write_all(&out.stderr);
            let _ = std::io::stdout().flush();
            ExitCode::from(out.status.clamp(0, 255) as u8)
        }
        Ok(other) => fail(format!("unexpected reply: {other:?}")),
        Err(e) => fail(e),
    }
}

/// `clonet stop LAB`: asks the lab to tear itself down and waits until
/// its process is gone.
pub fn stop(lab: &str) -> ExitCode {
    let base = rundir::base_dir();
    let owner = rundir::running_labs(&base).into_iter().find(|(_, s)| s.lab == lab).and_then(|(_, s)| s.owner);
    let mut client = match Client::connect_lab(lab) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = client.request(Request { stop: true, ..Default::default() }, |_| {}) {
        return fail(e);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while owner.as_ref().is_some_and(crate::host::is_alive) {
        if std::time::Instant::now() > deadline {
            return fail(format!("lab {lab} was asked to stop but still runs after 60 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("clonet: lab {lab} stopped");
    ExitCode::SUCCESS
}

/// `clonet attach LAB`: the REPL, on a lab another process serves.
pub fn attach(lab: &str, color: bool) -> ExitCode {
    let client = match Client::connect_lab(lab) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let lab_ref = crate::lab::handle::LabRef::remote(client);
    let engine = crate::script::engine(lab_ref.clone(), std::path::Path::new("."));
    let mut scope = rhai::Scope::new();
    let bound = match lab_ref.topology() {
        Ok(t) => crate::script::api::bind_lab_names(&engine, &mut scope, &t),
        Err(e) => return fail(e),
    };
    let mut repl = crate::repl::Repl::new(lab_ref, engine, scope, color);
    eprintln!("clonet: attached to lab {lab}; :quit detaches (the lab goes on)");
    if !bound.is_empty() {
        eprintln!("clonet: variables for its nodes and LANs: {}", bound.join(", "));
    }
    crate::interrupt::exit_on_termination(true);
    let result = repl.interact();
    crate::interrupt::exit_on_termination(false);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("terminal: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_like_clocks() {
        assert_eq!(uptime(42), "42s");
        assert_eq!(uptime(185), "3m05s");
        assert_eq!(uptime(3720), "1h02m");
    }
}
