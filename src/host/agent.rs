//! The host side of the guest agent protocol (sans-IO), spoken over a
//! serial line with `images/clonet-agent.sh` inside uml (and later kvm)
//! guests. Lines of ASCII, payloads in base64 so they are binary-safe:
//!
//! ```text
//! guest: H clonet-agent 1
//! host:  X <id> <timeout-secs> <script|-> <stdin|-> <max-output>
//! guest: R <id> <status> <stdout|-> <stderr|-> <truncated 0|1>
//! ```
//!
//! The guest cuts each output stream at `max-output` bytes; the host does
//! not rely on it, and reads no answer line longer than that allows (see
//! [`max_answer_len`]).
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::ExecOutput;

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("the guest agent sent a line clonet does not understand: {0:?}")]
    BadLine(String),
}

/// What the agent says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentMsg {
    Hello { version: u32 },
    Result { id: u64, output: ExecOutput },
}

fn b64_or_dash(data: &[u8]) -> String {
    if data.is_empty() {
        "-".to_string()
    } else {
        B64.encode(data)
    }
}

fn decode_field(field: &str) -> Option<Vec<u8>> {
    if field == "-" {
        Some(Vec::new())
    } else {
        B64.decode(field).ok()
    }
}

/// Quotes `arg` for a POSIX shell.
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c)) {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The script that runs `argv` without a shell's interpretation of it
/// (`["sh", "-c", cmd]` stays a shell command).
pub fn script_for(argv: &[String]) -> String {
    match argv {
        [sh, c, cmd] if sh == "sh" && c == "-c" => cmd.clone(),
        _ => format!("exec {}", argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")),
    }
}

/// The request line (with its newline) that runs `script` with `stdin`,
/// keeping at most `max_output` bytes of each output stream.
pub fn encode_exec(id: u64, timeout_secs: u64, script: &str, stdin: &[u8], max_output: u64) -> String {
    format!("X {id} {} {} {} {max_output}\n", timeout_secs.max(1), b64_or_dash(script.as_bytes()), b64_or_dash(stdin))
}

/// The longest answer line an agent that keeps to `max_output` can send:
/// two streams in base64, and room for the rest.
pub fn max_answer_len(max_output: u64) -> usize {
    let base64 = max_output.div_ceil(3).saturating_mul(4);
    usize::try_from(base64.saturating_mul(2).saturating_add(128)).unwrap_or(usize::MAX)
}

/// Parses one line from the agent (without its newline).
pub fn parse_line(line: &str) -> Result<AgentMsg, AgentError> {
    let bad = || AgentError::BadLine(line.chars().take(80).collect());
    let fields: Vec<&str> = line.trim_end_matches('\r').split(' ').collect();
    match fields.as_slice() {
        ["H", "clonet-agent", v] => Ok(AgentMsg::Hello { version: v.parse().map_err(|_| bad())? }),
        ["R", id, status, out, err, rest @ ..] if rest.len() <= 1 => Ok(AgentMsg::Result {
            id: id.parse().map_err(|_| bad())?,
            output: ExecOutput {
                status: status.parse().map_err(|_| bad())?,
                stdout: decode_field(out).ok_or_else(bad)?,
                stderr: decode_field(err).ok_or_else(bad)?,
                truncated: match rest {
                    [] | ["0"] => false,
                    ["1"] => true,
                    _ => return Err(bad()),
                },
            },
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_results_round_trip_binary_data() {
        let line = encode_exec(7, 30, "cat", b"\x00\xff\n", 1000);
        assert_eq!(line, "X 7 30 Y2F0 AP8K 1000\n");
        assert_eq!(encode_exec(1, 0, "true", b"", 5), "X 1 1 dHJ1ZQ== - 5\n", "at least one second; empty is '-'");
        let reply = format!("R 7 3 {} - 1", B64.encode(b"\x00\x01\xfe"));
        let output = ExecOutput { status: 3, stdout: vec![0, 1, 0xfe], stderr: vec![], truncated: true };
        assert_eq!(parse_line(&reply).unwrap(), AgentMsg::Result { id: 7, output });
        let older = AgentMsg::Result { id: 7, output: ExecOutput { status: 0, ..Default::default() } };
        assert_eq!(parse_line("R 7 0 - -").unwrap(), older, "an agent from before the limit");
        assert!(max_answer_len(3) >= format!("R 7 0 {} {} 1", B64.encode(b"abc"), B64.encode(b"def")).len());
        assert_eq!(parse_line("H clonet-agent 1").unwrap(), AgentMsg::Hello { version: 1 });
    }

    #[test]
    fn garbage_is_refused() {
        for l in ["", "R 1 x - -", "R 1 0 !!! -", "Q", "H clonet-agent one", "R 1 0 - - 2", "R 1 0 - - 1 x"] {
            assert!(parse_line(l).is_err(), "{l:?}");
        }
    }

    #[test]
    fn argv_becomes_a_quoted_script() {
        let argv: Vec<String> = ["echo", "it's", "$HOME", "a b"].map(String::from).to_vec();
        assert_eq!(script_for(&argv), r"exec echo 'it'\''s' '$HOME' 'a b'");
        let sh: Vec<String> = ["sh", "-c", "echo $HOME"].map(String::from).to_vec();
        assert_eq!(script_for(&sh), "echo $HOME");
    }
}
