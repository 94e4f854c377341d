//! How a subcommand fails: it returns a [`CliError`], and [`exit_code`]
//! prints it (through [`CliError::print`], the one error printer of the
//! command line) and exits with status 1. Failures that must not stop
//! the command (one output file of several, one benchmark lab) are
//! printed through the same function where they happen.
//!
//! Owns: the two formats of error lines. Must not touch: what failed
//! (the subcommands say), colours' set-up (`prepare_terminal`).
use std::fmt::Display;
use std::process::ExitCode;

use colored::Colorize;

/// A failure to report on stderr; the command then exits with status 1.
#[derive(Debug)]
pub enum CliError {
    /// `error: …`, the word in bold red when colours are on: the command
    /// was asked something it cannot do.
    Error(String),
    /// `clonet: …`: what clonet could not find or set up around it (a
    /// running lab, a node, signal handlers, an output file).
    Clonet(String),
}

impl CliError {
    pub fn error(message: impl Display) -> CliError {
        CliError::Error(message.to_string())
    }

    pub fn clonet(message: impl Display) -> CliError {
        CliError::Clonet(message.to_string())
    }

    /// Writes the error line to stderr.
    pub fn print(&self) {
        match self {
            CliError::Error(message) => eprintln!("{}: {message}", "error".red().bold()),
            CliError::Clonet(message) => eprintln!("clonet: {message}"),
        }
    }
}

/// The process's exit status for a subcommand's outcome; an error is
/// printed first.
pub fn exit_code(outcome: Result<ExitCode, CliError>) -> ExitCode {
    outcome.unwrap_or_else(|error| {
        error.print();
        ExitCode::FAILURE
    })
}
