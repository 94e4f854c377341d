//! A client for UML's management console (mconsole): a datagram protocol
//! on the unix socket `UML_DIR/UMID/mconsole`, used to hot-plug NICs
//! (`config vecN:transport=bess,dst=…`), remove them (`remove vecN`) and
//! halt a machine.
//!
//! Verified against Debian's linux.uml 6.1: requests and replies are
//! host-endian `u32` triples followed by up to 512 bytes of text; a reply
//! with `more` set is followed by another; text may end with a NUL.
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const MAGIC: u32 = 0xcafe_babe;
pub const VERSION: u32 = 2;
pub const MAX_DATA: usize = 512;
const HEADER: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum McError {
    #[error("mconsole command too long ({0} bytes, at most 511)")]
    TooLong(usize),
    #[error("mconsole: {0}")]
    Io(#[from] io::Error),
    #[error("mconsole reply is malformed")]
    Malformed,
    #[error("mconsole answer is longer than {MAX_ANSWER} bytes")]
    AnswerTooLong,
    #[error("UML refused {command:?}: {message}")]
    Refused { command: String, message: String },
}

/// One request datagram (always the full struct, zero-padded).
pub fn encode_request(command: &str) -> Result<Vec<u8>, McError> {
    let data = command.as_bytes();
    if data.len() >= MAX_DATA {
        return Err(McError::TooLong(data.len()));
    }
    let mut out = Vec::with_capacity(HEADER + MAX_DATA);
    out.extend_from_slice(&MAGIC.to_ne_bytes());
    out.extend_from_slice(&VERSION.to_ne_bytes());
    out.extend_from_slice(&(data.len() as u32).to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(HEADER + MAX_DATA, 0);
    Ok(out)
}

/// A decoded reply datagram: (error code, more to come, text).
pub fn decode_reply(buf: &[u8]) -> Result<(u32, bool, String), McError> {
    if buf.len() < HEADER {
        return Err(McError::Malformed);
    }
    let word = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let (err, more, len) = (word(0), word(4), word(8) as usize);
    if len > MAX_DATA || HEADER + len > buf.len() {
        return Err(McError::Malformed);
    }
    let text = String::from_utf8_lossy(&buf[HEADER..HEADER + len]).trim_end_matches('\0').to_string();
    Ok((err, more != 0, text))
}

/// The most text one answer may gather from its parts: a machine that
/// keeps saying "more" cannot make the engine hold more than this.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Where one answer stands after a reply datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    /// More replies follow.
    More,
    /// The whole answer.
    Answer(String),
    /// The machine refused the command, saying this.
    Refused(String),
}

/// The text of one answer, gathered from its reply datagrams (sans-IO).
#[derive(Debug, Default)]
pub struct AnswerText {
    text: String,
}

impl AnswerText {
    /// Takes the next reply datagram of the answer.
    pub fn take(&mut self, datagram: &[u8]) -> Result<Part, McError> {
        let (err, more, part) = decode_reply(datagram)?;
        if self.text.len() + part.len() > MAX_ANSWER {
            return Err(McError::AnswerTooLong);
        }
        self.text.push_str(&part);
        Ok(if err != 0 {
            Part::Refused(std::mem::take(&mut self.text))
        } else if more {
            Part::More
        } else {
            Part::Answer(std::mem::take(&mut self.text))
        })
    }
}

/// A connection to one machine's mconsole.
pub struct Mconsole {
    sock: UnixDatagram,
    target: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Mconsole {
    /// Talks to the mconsole socket at `target`; replies come back to an
    /// abstract address, so nothing is left in the file system.
    pub fn new(target: &Path, timeout: Duration) -> Result<Mconsole, McError> {
        let name = format!("clonet-mc-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
        sock.set_read_timeout(Some(timeout))?;
        Ok(Mconsole { sock, target: target.to_path_buf() })
    }

    /// Sends one command and returns the machine's answer.
    pub fn command(&self, command: &str) -> Result<String, McError> {
        self.sock.send_to(&encode_request(command)?, &self.target)?;
        let mut answer = AnswerText::default();
        let mut buf = [0u8; HEADER + MAX_DATA];
        loop {
            let n = self.sock.recv(&mut buf)?;
            match answer.take(&buf[..n])? {
                Part::More => {}
                Part::Answer(text) => return Ok(text),
                Part::Refused(message) => return Err(McError::Refused { command: command.to_string(), message }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_full_zero_padded_structs() {
        let r = encode_request("version").unwrap();
        assert_eq!(r.len(), 524);
        assert_eq!(&r[..4], &MAGIC.to_ne_bytes());
        assert_eq!(&r[8..12], &7u32.to_ne_bytes());
        assert_eq!(&r[12..19], b"version");
        assert!(r[19..].iter().all(|b| *b == 0));
        assert!(matches!(encode_request(&"x".repeat(512)), Err(McError::TooLong(512))));
    }

    #[test]
    fn replies_decode_with_their_flags() {
        let mut r = Vec::new();
        for w in [0u32, 1, 6] {
            r.extend_from_slice(&w.to_ne_bytes());
        }
        r.extend_from_slice(b"Linux\0");
        assert_eq!(decode_reply(&r).unwrap(), (0, true, "Linux".to_string()));
        r[8..12].copy_from_slice(&600u32.to_ne_bytes());
        assert!(matches!(decode_reply(&r), Err(McError::Malformed)));
        assert!(matches!(decode_reply(&r[..5]), Err(McError::Malformed)));
    }

    #[test]
    fn an_answer_that_never_ends_is_refused_at_its_bound() {
        let part = |more: u32| {
            let mut r = Vec::new();
            for w in [0u32, more, 500] {
                r.extend_from_slice(&w.to_ne_bytes());
            }
            r.extend_from_slice(&[b'x'; 500]);
            r
        };
        let mut answer = AnswerText::default();
        for _ in 0..MAX_ANSWER / 500 {
            assert_eq!(answer.take(&part(1)).unwrap(), Part::More);
        }
        assert!(matches!(answer.take(&part(1)), Err(McError::AnswerTooLong)));
        let mut answer = AnswerText::default();
        assert_eq!(answer.take(&part(0)).unwrap(), Part::Answer("x".repeat(500)));
    }

    #[test]
    fn a_fake_machine_answers_in_several_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mconsole");
        let uml = UnixDatagram::bind(&path).unwrap();
        let mc = Mconsole::new(&path, Duration::from_secs(2)).unwrap();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 600];
            let (n, from) = uml.recv_from(&mut buf).unwrap();
            assert_eq!(n, 524);
            let from = from.as_abstract_name().unwrap().to_vec();
            let to = SocketAddr::from_abstract_name(&from).unwrap();
            for (more, text) in [(1u32, "Linux "), (0, "6.1")] {
                let mut r = Vec::new();
                for w in [0u32, more, text.len() as u32] {
                    r.extend_from_slice(&w.to_ne_bytes());
                }
                r.extend_from_slice(text.as_bytes());
                uml.send_to_addr(&r, &to).unwrap();
            }
        });
        assert_eq!(mc.command("version").unwrap(), "Linux 6.1");
        server.join().unwrap();
    }
}
