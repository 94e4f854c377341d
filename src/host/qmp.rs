//! A client for QEMU's machine protocol (QMP): JSON objects, one a line,
//! on the socket QEMU connects to at start. The engine keeps one per kvm
//! node for NIC hot-plug, pause/resume, power-off and link status.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

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

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events seen while waiting for answers, oldest first.
    events: Vec<(String, Value)>,
}

impl Qmp {
    /// Reads the greeting and enters command mode.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        stream.set_read_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp { reader: BufReader::new(stream), writer, events: Vec::new() };
        match q.read()? {
            QmpMessage::Greeting => {}
            other => return Err(QmpError::Protocol(format!("{other:?} instead of the greeting"))),
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<QmpMessage, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "QEMU closed QMP")));
        }
        parse_message(line.trim_end())
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
        loop {
            match self.read()? {
                QmpMessage::Return(v) => return Ok(v),
                QmpMessage::Error { class, desc } => {
                    return Err(QmpError::Refused { command: command.to_string(), class, desc })
                }
                QmpMessage::Event { name, data } => self.events.push((name, data)),
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
            return Ok(self.events.remove(i).1);
        }
        let deadline = std::time::Instant::now() + timeout;
        let saved = self.reader.get_ref().read_timeout()?;
        let result = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break Err(QmpError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no {name} event"))));
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match self.read() {
                Ok(QmpMessage::Event { name: n, data }) if n == name && pred(&data) => break Ok(data),
                Ok(QmpMessage::Event { name: n, data }) => self.events.push((n, data)),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.reader.get_ref().set_read_timeout(saved)?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
