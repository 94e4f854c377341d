//! The `clonet` command line: parses the arguments, sets the open-file
//! limit, and runs one subcommand (`cli/`), whose outcome becomes the
//! exit status.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: a user namespace takes a lone thread.
    cli::enter_lab_namespace(&cli.command);
    // Before any thread starts: both set the environment.
    if matches!(cli.command, Cmd::NsInit { .. } | Cmd::NsEnter { .. }) {
        clonet::host::limits::restore_open_files();
    } else {
        clonet::host::limits::raise_open_files();
    }
    cli::exit_code(cli::run(cli.command))
}
