//! The subcommands that work on a lab another clonet process runs, from
//! another terminal: `ls`, `attach`, `exec`, `stop` (the library's
//! `remote` does those), `gui`, `console` and `capture`.
//!
//! Owns: finding the running lab or node named on the command line.
//! Must not touch: the lab itself (only through its control socket,
//! console sockets and run directory).
use std::process::ExitCode;

use clonet::lab::rundir;

use super::{color, prepare_terminal, CliError};

/// `clonet ls`: the running labs.
pub fn ls(json: bool) -> ExitCode {
    clonet::remote::ls(json)
}

/// `clonet attach LAB`: a REPL on a running lab.
pub fn attach(lab: &str) -> Result<ExitCode, CliError> {
    prepare_terminal()?;
    Ok(clonet::remote::attach(lab, color()))
}

/// `clonet exec LAB NODE [--user U] [--cwd DIR] -- ARGV`: the command's
/// exit status is clonet's.
pub fn exec(
    lab: &str,
    node: &str,
    timeout_secs: u64,
    user: Option<String>,
    cwd: Option<String>,
    argv: Vec<String>,
) -> ExitCode {
    let how = clonet::remote::ExecAs { user, cwd };
    clonet::remote::exec(lab, node, argv, std::time::Duration::from_secs(timeout_secs), how)
}

/// `clonet stop LAB`.
pub fn stop(lab: &str) -> ExitCode {
    clonet::remote::stop(lab)
}

/// `clonet gui LAB`: the web GUI of a lab another process runs.
pub fn gui(lab: &str) -> Result<ExitCode, CliError> {
    prepare_terminal()?;
    let dir = clonet::lab::control::running_lab_dir(lab).map_err(CliError::error)?;
    let server = clonet::gui::Gui::start(&dir).map_err(|e| CliError::error(format!("starting the GUI: {e}")))?;
    println!("{}", server.url);
    eprintln!("clonet: the GUI of lab {lab} is at the URL above (this machine only); Ctrl-C ends it");
    while !clonet::interrupt::requested() && dir.join(clonet::lab::control::SOCKET).exists() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(ExitCode::SUCCESS)
}

/// `clonet console NODE`: a machine node's console, or a shell in an ns node.
pub fn console(node: &str, lab: Option<&str>) -> Result<ExitCode, CliError> {
    use clonet::host::console::{attach, ConsoleTarget};
    let found = rundir::labs_with_node(&rundir::base_dir(), node, lab);
    let (dir, state) = match found.as_slice() {
        [one] => one,
        [] => {
            let in_lab = lab.map(|l| format!(" in lab {l:?}")).unwrap_or_default();
            return Err(CliError::clonet(format!("no running lab has a node called {node:?}{in_lab}")));
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(_, s)| s.lab.as_str()).collect();
            return Err(CliError::clonet(format!(
                "several labs have a node called {node:?} ({}): say which with --lab",
                names.join(", ")
            )));
        }
    };
    let socket = clonet::host::guest::console_socket(dir, node);
    let target = match state.nodes.get(node).and_then(|p| p.first()) {
        _ if socket.exists() => ConsoleTarget::Socket(socket),
        Some(init) => ConsoleTarget::Namespace(init.pid),
        None => return Err(CliError::clonet(format!("node {node:?} is stopped"))),
    };
    attach(node, &target).map_err(CliError::clonet)?;
    Ok(ExitCode::SUCCESS)
}

/// `clonet capture LAB TARGET`: a link's, LAN's or port's frames as pcap on stdout.
pub fn capture(lab: &str, target: &str, count: Option<u64>) -> Result<ExitCode, CliError> {
    let Some(dir) = rundir::running_lab(&rundir::base_dir(), lab) else {
        return Err(CliError::clonet(format!("no running lab is called {lab:?}")));
    };
    clonet::lab::capture::follow(&dir, target, count, std::io::stdout().lock())
        .map_err(|e| CliError::clonet(format!("capture {target}: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
