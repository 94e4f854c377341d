//! Captures: which switch ports a capture target names, writing a feed as
//! pcap (to a file or a socket), and the capture server that lets
//! `clonet capture LAB TARGET` follow a running lab from another terminal.
//!
//! A target is a link or a link between LANs (the frames each end is
//! handed, so impairments show), a LAN (every frame its ports send), or
//! one port `node:iface` (both directions).
//!
//! Owns: the port directory mirror, capture threads, capture streams.
//! Must not touch: the topology model (the lab keeps the directory
//! current), the data plane (only through `CaptureControl`).
use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::switch::{pcap, CaptureControl, CaptureFeed, CapturePoint, CapturedFrame, PortId};

/// One switch port as captures see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortEntry {
    pub id: PortId,
    /// The link, link between LANs, or LAN it belongs to.
    pub segment: String,
    /// Whether `segment` is a LAN (several ports) rather than a cable.
    pub lan: bool,
}

/// Every port by `(node, iface)` (for ports between LANs: `(lan, link)`),
/// shared between the lab and the control socket's capture streams.
pub type PortDirectory = Arc<Mutex<HashMap<(String, String), PortEntry>>>;

/// One port of a capture and how its frames are labelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tap {
    pub point: CapturePoint,
    /// Label of a frame the port's node sent / was handed.
    pub rx_label: String,
    pub tx_label: String,
}

fn end_name(key: &(String, String), entry: &PortEntry) -> String {
    if key.1 == entry.segment {
        // A port between LANs: the LAN is the end.
        key.0.clone()
    } else {
        format!("{}:{}", key.0, key.1)
    }
}

/// The taps a target names, or why it names nothing.
pub fn resolve(ports: &HashMap<(String, String), PortEntry>, target: &str) -> Result<Vec<Tap>, String> {
    if let Some((node, iface)) = target.split_once(':') {
        let key = (node.to_string(), iface.to_string());
        let e = ports.get(&key).ok_or_else(|| format!("no port {target:?} (is the node running?)"))?;
        return Ok(vec![Tap {
            point: CapturePoint { port: e.id, rx: true, tx: true },
            rx_label: format!("{target} > {}", e.segment),
            tx_label: format!("{} > {target}", e.segment),
        }]);
    }
    let mut members: Vec<(&(String, String), &PortEntry)> = ports.iter().filter(|(_, e)| e.segment == target).collect();
    members.sort_by(|a, b| a.0.cmp(b.0));
    if members.is_empty() {
        return Err(format!(
            "no link, LAN or port {target:?} with running ends (use a link name, a LAN name or node:iface)"
        ));
    }
    if members.iter().any(|(_, e)| e.lan) {
        return Ok(members
            .iter()
            .map(|(k, e)| Tap {
                point: CapturePoint { port: e.id, rx: true, tx: false },
                rx_label: format!("{} > {target}", end_name(k, e)),
                tx_label: String::new(),
            })
            .collect());
    }
    let names: Vec<String> = members.iter().map(|(k, e)| end_name(k, e)).collect();
    Ok(members
        .iter()
        .enumerate()
        .map(|(i, (_, e))| {
            let peer = names.get(1 - i.min(1)).filter(|_| members.len() == 2).cloned().unwrap_or_else(|| "?".into());
            Tap {
                point: CapturePoint { port: e.id, rx: false, tx: true },
                rx_label: String::new(),
                tx_label: format!("{peer} > {}", names[i]),
            }
        })
        .collect())
}

/// How each captured frame is labelled, by (port, outgoing).
pub type Labels = HashMap<(PortId, bool), String>;

/// The labels of a capture's frames.
pub fn labels(taps: &[Tap]) -> Labels {
    let mut m = HashMap::new();
    for t in taps {
        m.insert((t.point.port, false), t.rx_label.clone());
        m.insert((t.point.port, true), t.tx_label.clone());
    }
    m
}

/// Writes a feed as pcap until it ends, `limit` frames were written, or
/// `stop` is set; flushes whenever the feed is idle, so readers of a live
/// file see frames promptly. Returns the frames written.
pub fn write_pcap(feed: &CaptureFeed, out: impl Write, limit: Option<u64>, stop: &AtomicBool) -> io::Result<u64> {
    let mut out = BufWriter::new(out);
    out.write_all(&pcap::file_header())?;
    out.flush()?;
    let mut written = 0u64;
    let mut rec = Vec::new();
    while limit.is_none_or(|l| written < l) && !stop.load(Ordering::Relaxed) {
        match feed.frames.recv_timeout(Duration::from_millis(100)) {
            Ok(f) => {
                rec.clear();
                pcap::record(f.at.duration_since(UNIX_EPOCH).unwrap_or_default(), &f.data, &mut rec);
                out.write_all(&rec)?;
                written += 1;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => out.flush()?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    out.flush()?;
    Ok(written)
}

/// A capture a script started into a file.
pub struct FileCapture {
    pub target: String,
    pub file: PathBuf,
    pub feed_id: usize,
    pub lost: Arc<std::sync::atomic::AtomicU64>,
    pub writer: JoinHandle<io::Result<u64>>,
}

impl FileCapture {
    pub fn start(target: &str, file: &Path, feed: CaptureFeed) -> io::Result<FileCapture> {
        let out = crate::host::files::create_output(file)?;
        let (feed_id, lost) = (feed.id, feed.lost.clone());
        let writer = std::thread::Builder::new()
            .name("clonet-pcap".into())
            .spawn(move || write_pcap(&feed, out, None, &AtomicBool::new(false)))?;
        Ok(FileCapture { target: target.to_string(), file: file.to_path_buf(), feed_id, lost, writer })
    }
}

/// What a `clonet capture` client asks for.
#[derive(Debug, Serialize, Deserialize)]
pub struct CaptureRequest {
    pub target: String,
    /// Stop after this many frames.
    #[serde(default)]
    pub count: Option<u64>,
}

/// Streams a capture to a control-socket client that asked for one
/// (`{"capture": {...}}` as its first request): an answer line (`ok` or
/// the error), then pcap until the client goes away, its count is
/// reached or the lab ends.
pub fn serve_capture(
    request: &CaptureRequest,
    ports: &PortDirectory,
    control: &CaptureControl,
    stop: &AtomicBool,
    id: Option<u64>,
    mut out: UnixStream,
) {
    use super::command::Reply;
    use super::control::Answer;
    let taps = ports.lock().map_err(|_| "lab state poisoned".to_string()).and_then(|p| resolve(&p, &request.target));
    let feed = taps.and_then(|taps| control.start(taps.iter().map(|t| t.point).collect()).map_err(|e| e.to_string()));
    let feed = match feed {
        Ok(f) => f,
        Err(e) => {
            let answer = Answer::failed(id, super::errors::ErrorKind::Invalid, e);
            let _ = out.write_all(format!("{}\n", answer.line()).as_bytes());
            return;
        }
    };
    if out.write_all(format!("{}\n", Answer::new(id, Ok(Reply::Done)).line()).as_bytes()).is_ok() {
        // Ends on a write error: the client went away.
        let _ = write_pcap(&feed, &mut out, request.count, stop);
    }
    let _ = control.stop(feed.id);
}

/// The client side: asks the lab at `run_dir` for `target` over its
/// control socket and copies the pcap stream to `out`.
pub fn follow(run_dir: &Path, target: &str, count: Option<u64>, mut out: impl Write) -> Result<(), String> {
    use super::control::{Client, Request};
    let mut client = Client::connect(run_dir)?;
    let request = CaptureRequest { target: target.to_string(), count };
    client.request(Request { capture: Some(request), ..Default::default() }, |_| {}).map_err(|e| e.to_string())?;
    let mut reader = client.into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match std::io::Read::read(&mut reader, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        if let Err(e) = out.write_all(&buf[..n]).and_then(|()| out.flush()) {
            // A closed pipe (`| head`) is a normal way to stop.
            return if e.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e.to_string()) };
        }
    }
}

/// One sniffed frame as a line: time since `start`, direction, summary.
pub fn sniff_line(f: &CapturedFrame, start: std::time::SystemTime, labels: &Labels) -> String {
    let t = f.at.duration_since(start).unwrap_or_default().as_secs_f64();
    let label = labels.get(&(f.port, f.outgoing)).map_or("?", String::as_str);
    format!("{t:>10.6}  {label:<24} {}", crate::switch::sniff::summarize(&f.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(entries: &[(&str, &str, PortId, &str, bool)]) -> HashMap<(String, String), PortEntry> {
        entries
            .iter()
            .map(|(n, i, id, seg, lan)| {
                ((n.to_string(), i.to_string()), PortEntry { id: *id, segment: seg.to_string(), lan: *lan })
            })
            .collect()
    }

    #[test]
    fn targets_name_links_lans_and_ports() {
        let d = dir(&[
            ("a", "eth0", 1, "a--b", false),
            ("b", "eth0", 2, "a--b", false),
            ("h1", "eth0", 3, "sw", true),
            ("h2", "eth0", 4, "sw", true),
        ]);
        let link = resolve(&d, "a--b").unwrap();
        assert_eq!(link.len(), 2);
        assert!(link.iter().all(|t| t.point.tx && !t.point.rx), "a link shows what each end is handed");
        assert_eq!(link[0].tx_label, "b:eth0 > a:eth0");
        let lan = resolve(&d, "sw").unwrap();
        assert!(lan.iter().all(|t| t.point.rx && !t.point.tx), "a LAN shows what its ports send");
        assert_eq!(lan[1].rx_label, "h2:eth0 > sw");
        let port = resolve(&d, "h1:eth0").unwrap();
        assert_eq!(port[0].point, CapturePoint { port: 3, rx: true, tx: true });
        assert!(resolve(&d, "nowhere").unwrap_err().contains("no link, LAN or port"));
        assert!(resolve(&d, "h9:eth0").unwrap_err().contains("no port"));
    }
}
