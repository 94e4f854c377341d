//! A command to run inside a node, and what it produced.
use serde::{Deserialize, Serialize};

use super::units::{OutputLimit, Timeout};
use super::VocabError;

/// The most words a command run in a node may have, and the most bytes
/// of standard input it is given.
pub const MAX_ARGS: usize = 4096;
pub const MAX_STDIN: usize = 64 << 20;

/// A command to run inside a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub stdin: Vec<u8>,
    pub timeout: Timeout,
    /// The most bytes of each output stream kept.
    #[serde(default)]
    pub max_output: OutputLimit,
}

impl ExecRequest {
    /// A program to run, at most `MAX_ARGS` words without NUL bytes, and
    /// at most `MAX_STDIN` bytes of input (the timeout is its type's).
    pub fn check(&self) -> Result<(), VocabError> {
        if self.argv.is_empty() {
            return Err(VocabError::invalid("argv", "a command needs at least a program"));
        }
        if self.argv.len() > MAX_ARGS {
            return Err(VocabError::OutOfRange {
                option: "argv",
                value: format!("{} words", self.argv.len()),
                range: "at most 4096",
            });
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(VocabError::invalid("argv", "a word contains a NUL byte"));
        }
        if self.stdin.len() > MAX_STDIN {
            return Err(VocabError::OutOfRange {
                option: "stdin",
                value: format!("{} bytes", self.stdin.len()),
                range: "at most 64 MiB",
            });
        }
        Ok(())
    }
}

/// What a command inside a node produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Exit status; 128+N when killed by signal N.
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Whether stdout or stderr went beyond the request's `max_output`
    /// and was cut there.
    #[serde(default)]
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_a_program_with_bounded_words_and_input() {
        let req = |argv: &[&str], stdin: usize| ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin: vec![0; stdin],
            timeout: Timeout::from_millis(100).unwrap(),
            max_output: OutputLimit::DEFAULT,
        };
        assert!(req(&["true"], 0).check().is_ok());
        assert!(req(&[], 0).check().unwrap_err().to_string().contains("at least a program"));
        assert!(req(&["a\0b"], 0).check().unwrap_err().to_string().contains("NUL"));
        assert!(req(&["cat"], MAX_STDIN + 1).check().unwrap_err().to_string().contains("stdin"));
        assert!(req(&vec!["x"; MAX_ARGS + 1], 0).check().is_err());
    }
}
