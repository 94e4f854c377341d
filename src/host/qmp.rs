//! A client for QEMU's machine protocol (QMP): JSON objects, one a line,
//! on the socket QEMU connects to at start. The engine keeps one per kvm
//! node for NIC hot-plug, pause/resume, power-off and link status.
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP: {command}: {class}: {desc}")]
    Refused { command: String, class: String, desc: String },
    #[error("QMP: unexpected message {0}")]
    Protocol(String),
}

/// What one QMP line is.
#[derive(Debug, PartialEq)]
pub enum QmpMessage {
    Greeting,
    Return(Value),
    Error { class: String, desc: String },
    Event { name: String, data: Value },
}

/// Classifies one line QEMU sent (sans-IO).
pub fn parse_message(line: &str) -> Result<QmpMessage, QmpError> {
    let v: Value = serde_json::from_str(line).map_err(|_| QmpError::Protocol(line.to_string()))?;
    if v.get("QMP").is_some() {
        return Ok(QmpMessage::Greeting);
    }
    if let Some(r) = v.get("return") {
        return Ok(QmpMessage::Return(r.clone()));
    }
    if let Some(e) = v.get("error") {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        return Ok(QmpMessage::Error { class: s("class"), desc: s("desc") });
    }
    if let Some(name) = v.get("event").and_then(Value::as_str) {
        return Ok(QmpMessage::Event { name: name.to_string(), data: v.get("data").cloned().unwrap_or(Value::Null) });
    }
    Err(QmpError::Protocol(line.to_string()))
}

/// The longest line QEMU may send (its answers are small; a guest that
/// took QEMU over may send anything).
pub const MAX_LINE: usize = 1 << 20;
/// How many events seen while waiting for answers are kept (the oldest
/// go first): the engine waits for few, a flood must not fill memory.
pub const MAX_KEPT_EVENTS: usize = 64;
/// How long one command may take in all, however QEMU trickles events.
const EXECUTE_DEADLINE: Duration = Duration::from_secs(60);

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The start of a line a timed-out read left.
    pending: Vec<u8>,
    /// How long QEMU may stay silent while an answer is due.
    timeout: Duration,
    /// Events seen while waiting for answers, oldest first.
    events: std::collections::VecDeque<(String, Value)>,
}

impl Qmp {
    /// Reads the greeting and enters command mode.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut q =
            Qmp { reader: BufReader::new(stream), writer, pending: Vec::new(), timeout, events: Default::default() };
        match q.read(Instant::now() + timeout)? {
            QmpMessage::Greeting => {}
            other => return Err(QmpError::Protocol(format!("{other:?} instead of the greeting"))),
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    /// Reads one message before `deadline`: a line of at most `MAX_LINE`
    /// bytes, however slowly it comes.
    fn read(&mut self, deadline: Instant) -> Result<QmpMessage, QmpError> {
        use super::guest::{read_bounded_line, LineEnd};
        let io = |kind, what: &str| QmpError::Io(std::io::Error::new(kind, what.to_string()));
        match read_bounded_line(&mut self.reader, &mut self.pending, MAX_LINE, deadline)? {
            LineEnd::Line => {
                let line = std::mem::take(&mut self.pending);
                parse_message(String::from_utf8_lossy(&line).trim_end())
            }
            LineEnd::TooLong => Err(QmpError::Protocol(format!("a line longer than {MAX_LINE} bytes"))),
            LineEnd::TimedOut => Err(io(std::io::ErrorKind::TimedOut, "QEMU did not answer in time")),
            LineEnd::Closed => Err(io(std::io::ErrorKind::UnexpectedEof, "QEMU closed QMP")),
        }
    }

    /// Keeps an event for a later `wait_event`, dropping the oldest beyond
    /// `MAX_KEPT_EVENTS`.
    fn keep(&mut self, name: String, data: Value) {
        if self.events.len() == MAX_KEPT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((name, data));
    }

    /// Runs one command and returns its answer.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes())?;
        let deadline = Instant::now() + EXECUTE_DEADLINE;
        loop {
            let line_deadline = deadline.min(Instant::now() + self.timeout);
            match self.read(line_deadline)? {
                QmpMessage::Return(v) => return Ok(v),
                QmpMessage::Error { class, desc } => {
                    return Err(QmpError::Refused { command: command.to_string(), class, desc })
                }
                QmpMessage::Event { name, data } => self.keep(name, data),
                QmpMessage::Greeting => return Err(QmpError::Protocol("a second greeting".into())),
            }
        }
    }

    /// Waits up to `timeout` for event `name` whose data satisfies `pred`.
    pub fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, QmpError> {
        if let Some(i) = self.events.iter().position(|(n, d)| n == name && pred(d)) {
            return Ok(self.events.remove(i).expect("found above").1);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.read(deadline) {
                Ok(QmpMessage::Event { name: n, data }) if n == name && pred(&data) => return Ok(data),
                Ok(QmpMessage::Event { name: n, data }) => self.keep(n, data),
                Ok(_) => {}
                Err(QmpError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    let why = format!("no {name} event");
                    return Err(QmpError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, why)));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn messages_are_told_apart() {
        assert_eq!(parse_message(r#"{"QMP": {"version": {}, "capabilities": []}}"#).unwrap(), QmpMessage::Greeting);
        assert_eq!(parse_message(r#"{"return": {}}"#).unwrap(), QmpMessage::Return(json!({})));
        assert_eq!(
            parse_message(r#"{"error": {"class": "GenericError", "desc": "Duplicate ID"}}"#).unwrap(),
            QmpMessage::Error { class: "GenericError".into(), desc: "Duplicate ID".into() }
        );
        assert!(matches!(
            parse_message(r#"{"event": "DEVICE_DELETED", "data": {"device": "nic1"}, "timestamp": {}}"#).unwrap(),
            QmpMessage::Event { name, .. } if name == "DEVICE_DELETED"
        ));
        assert!(parse_message("not json").is_err());
    }

    #[test]
    fn a_session_skips_events_while_waiting_for_answers() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let qemu = std::thread::spawn(move || {
            let mut r = BufReader::new(theirs.try_clone().unwrap());
            let mut w = theirs;
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n").unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}}\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("\"device_del\"") && line.contains("nic1"), "{line}");
            w.write_all(b"{\"event\": \"X\", \"data\": {}}\n{\"return\": {}}\n").unwrap();
            w.write_all(b"{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"nic1\"}}\n").unwrap();
        });
        let mut q = Qmp::handshake(ours, Duration::from_secs(5)).unwrap();
        q.execute("device_del", json!({ "id": "nic1" })).unwrap();
        let d = q.wait_event("DEVICE_DELETED", Duration::from_secs(5), |d| d["device"] == "nic1").unwrap();
        assert_eq!(d["device"], "nic1");
        qemu.join().unwrap();
    }

    /// A QEMU a guest took over cannot make the engine keep a huge line,
    /// an endless event stream, or wait forever for an answer.
    #[test]
    fn huge_lines_event_floods_and_trickles_are_bounded() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let qemu = std::thread::spawn(move || {
            let mut w = theirs;
            w.write_all(b"{\"QMP\": {}}\n").unwrap();
            w.write_all(b"{\"return\": {}}\n").unwrap();
            // The answer to `stop`: a line past the bound, then many events.
            let huge = vec![b'x'; MAX_LINE + 10];
            w.write_all(&huge).unwrap();
            w.write_all(b"\n").unwrap();
            for i in 0..1000 {
                w.write_all(format!("{{\"event\": \"E{i}\", \"data\": {{}}}}\n").as_bytes()).unwrap();
            }
            w.write_all(b"{\"return\": {}}\n").unwrap();
            // Then the start of a line that never ends.
            w.write_all(b"{\"ret").unwrap();
            std::thread::sleep(Duration::from_secs(2));
        });
        let mut q = Qmp::handshake(ours, Duration::from_millis(500)).unwrap();
        let e = q.execute("stop", json!({})).unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
        // The next line starts clean.
        q.execute("cont", json!({})).unwrap();
        assert_eq!(q.events.len(), MAX_KEPT_EVENTS);
        assert_eq!(q.events.back().unwrap().0, "E999", "the newest are kept");
        let started = Instant::now();
        let e = q.execute("quit", json!({})).unwrap_err().to_string();
        assert!(e.contains("did not answer in time"), "{e}");
        assert!(started.elapsed() < Duration::from_millis(1500));
        qemu.join().unwrap();
    }
}
