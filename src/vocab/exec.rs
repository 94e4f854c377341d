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
    /// Who runs it (`name`, `uid`, `name:group`, `uid:gid`, looked up in
    /// the node's own files); root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Where it runs (an absolute path in the node); the node's `/`, or an
    /// image's `WorkingDir`, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
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
        if let Some(user) = &self.user {
            let ok = |part: &str| {
                !part.is_empty()
                    && part.len() <= 32
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                    && !part.starts_with('-')
            };
            let fine = match user.split_once(':') {
                Some((u, g)) => ok(u) && ok(g),
                None => ok(user),
            };
            if !fine {
                return Err(VocabError::invalid(
                    "user",
                    "a user is a name or uid, optionally :group or :gid (letters, digits, . _ -, at most 32 each)",
                ));
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') || cwd.len() > 4096 || cwd.contains('\0') {
                return Err(VocabError::invalid("cwd", "a working directory is an absolute path in the node"));
            }
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
            user: None,
            cwd: None,
        };
        assert!(req(&["true"], 0).check().is_ok());
        assert!(req(&[], 0).check().unwrap_err().to_string().contains("at least a program"));
        assert!(req(&["a\0b"], 0).check().unwrap_err().to_string().contains("NUL"));
        assert!(req(&["cat"], MAX_STDIN + 1).check().unwrap_err().to_string().contains("stdin"));
        assert!(req(&vec!["x"; MAX_ARGS + 1], 0).check().is_err());
    }

    #[test]
    fn a_user_and_a_working_directory_are_checked() {
        let with = |user: Option<&str>, cwd: Option<&str>| ExecRequest {
            argv: vec!["id".into()],
            stdin: vec![],
            timeout: Timeout::from_millis(100).unwrap(),
            max_output: OutputLimit::DEFAULT,
            user: user.map(String::from),
            cwd: cwd.map(String::from),
        };
        for fine in ["web", "1000", "1000:1000", "www-data:adm", "a.b_c"] {
            assert!(with(Some(fine), None).check().is_ok(), "{fine}");
        }
        for bad in ["", ":", "a:", "-u", "a b", "a/b", "root:x:y", &"u".repeat(33)] {
            assert!(with(Some(bad), None).check().unwrap_err().to_string().contains("user"), "{bad}");
        }
        assert!(with(None, Some("/srv")).check().is_ok());
        for bad in ["srv", "", "/a\0b"] {
            assert!(with(None, Some(bad)).check().unwrap_err().to_string().contains("working directory"), "{bad}");
        }
    }
}
