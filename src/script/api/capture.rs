//! The `capture_api` Rhai module: pcap captures of links, LANs and ports,
//! and live sniffing printed one line per frame.
//!
//! Owns: those functions and the sniff loop. Must not touch: the host,
//! except through the lab (its commands and its capture feeds).
use rhai::plugin::*;
use rhai::{Map, NativeCallContext};

use super::{
    call, check_keys, lab_error, lab_of, opt_int, positive_ms, script_error, CaptureRef, LanRef, LinkRef, RhaiResult,
};
use crate::lab::{Command, LabError, Reply};

fn start_capture(ctx: &NativeCallContext, target: String, file: &str) -> RhaiResult<CaptureRef> {
    let path = std::path::absolute(file).map_err(|e| script_error(format!("capture(): {file:?}: {e}")))?;
    match call(ctx, Command::StartCapture { target, file: path })? {
        Reply::Capture(c) => Ok(CaptureRef { id: c.id, target: c.target, file: c.file.display().to_string() }),
        _ => Err(script_error("unexpected reply")),
    }
}

fn sniff_frames(ctx: &NativeCallContext, target: &str, count: i64, options: &Map) -> RhaiResult<i64> {
    check_keys("sniff", options, &["timeout_ms"])?;
    let count = u64::try_from(count).map_err(|_| script_error(format!("sniff(): {count} frames is negative")))?;
    let timeout = positive_ms("sniff", opt_int("sniff", options, "timeout_ms")?.unwrap_or(10_000))?;
    let lab = lab_of(ctx)?;
    let opened = lab.local_lab().ok_or(LabError::NotLocal("sniff()")).and_then(|mut l| l.open_capture(target));
    let (feed, labels) = opened.map_err(lab_error)?;
    let start = std::time::SystemTime::now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout);
    let mut seen = 0;
    while seen < count && !crate::interrupt::requested() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match feed.frames.recv_timeout(left.min(std::time::Duration::from_millis(100))) {
            Ok(f) => {
                println!("{}", crate::lab::capture::sniff_line(&f, start, &labels));
                seen += 1;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(mut l) = lab.local_lab() {
        l.close_capture(feed.id).map_err(lab_error)?;
    }
    Ok(seen as i64)
}

/// Captures and live sniffing: what crosses links, LANs and ports.
#[export_module]
pub mod capture_api {
    use super::*;

    pub type Capture = CaptureRef;

    /// Writes the frames a link carries (as each end receives them, after
    /// impairments) to a pcap file that `tshark -r` and Wireshark read;
    /// GSO super-frames are written as the frames a wire would carry.
    /// Returns a handle; `stop()` ends it (the lab's end does too).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// let c = capture(l, "/tmp/a-b.pcap");
    /// ping(a, b);
    /// print(c.stop());   // #{"file": "/tmp/a-b.pcap", "frames": 4, "lost": 0}
    /// ```
    #[rhai_fn(return_raw)]
    pub fn capture(ctx: NativeCallContext, link: LinkRef, file: &str) -> RhaiResult<Capture> {
        start_capture(&ctx, link.name, file)
    }

    /// Captures every frame the LAN's ports send.
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// link(node("a"), sw);
    /// let c = capture(sw, "/tmp/sw.pcap");
    /// c.stop();
    /// ```
    #[rhai_fn(name = "capture", return_raw)]
    pub fn capture_lan(ctx: NativeCallContext, lan: LanRef, file: &str) -> RhaiResult<Capture> {
        start_capture(&ctx, lan.name, file)
    }

    /// Captures by name: a link (`"a--b"`), a LAN, or one port
    /// (`"node:iface"`, both directions).
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// let c = capture("a:eth0", "/tmp/a.pcap");
    /// c.stop();
    /// ```
    #[rhai_fn(name = "capture", return_raw)]
    pub fn capture_named(ctx: NativeCallContext, target: &str, file: &str) -> RhaiResult<Capture> {
        start_capture(&ctx, target.to_string(), file)
    }

    /// Stops the capture and closes its file: `#{ frames, lost, file }`
    /// (`lost` counts copies dropped because the disk fell behind).
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// let c = capture("a--b", "/tmp/ab.pcap");
    /// let r = c.stop();
    /// assert(r.lost == 0);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn stop(ctx: NativeCallContext, capture: &mut Capture) -> RhaiResult<Map> {
        match call(&ctx, Command::StopCapture { id: capture.id })? {
            Reply::CaptureStopped { frames, lost } => {
                let mut m = Map::new();
                m.insert("frames".into(), (frames as i64).into());
                m.insert("lost".into(), (lost as i64).into());
                m.insert("file".into(), capture.file.clone().into());
                Ok(m)
            }
            _ => Err(script_error("unexpected reply")),
        }
    }

    /// The pcap file being written.
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// print(capture("a--b", "/tmp/ab.pcap").file);
    /// ```
    #[rhai_fn(get = "file", pure)]
    pub fn file(capture: &mut Capture) -> String {
        capture.file.clone()
    }

    /// Prints the next `n` frames crossing a link (or LAN, or `node:iface`
    /// port), one line each: time, direction, MACs, VLAN tag, and the
    /// decoded ARP / IPv4 / IPv6 / ICMP / TCP / UDP summary. Waits at most
    /// 10 s; returns how many frames it printed.
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" });
    /// exec(a, "ping -c 3 -i 0.2 10.0.0.2 >/dev/null 2>&1 &");
    /// sniff(l, 4);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn sniff(ctx: NativeCallContext, link: LinkRef, n: i64) -> RhaiResult<i64> {
        sniff_frames(&ctx, &link.name, n, &Map::new())
    }

    /// `sniff` with options: `timeout_ms` (default 10000).
    ///
    /// ```rhai
    /// let a = node("a"); let b = node("b");
    /// let l = link(a, b);
    /// assert(sniff(l, 1, #{ timeout_ms: 100 }) <= 1);
    /// ```
    #[rhai_fn(name = "sniff", return_raw)]
    pub fn sniff_with(ctx: NativeCallContext, link: LinkRef, n: i64, options: Map) -> RhaiResult<i64> {
        sniff_frames(&ctx, &link.name, n, &options)
    }

    /// Sniffs a LAN (every frame its ports send).
    ///
    /// ```rhai
    /// let sw = lan("sw");
    /// link(node("a"), sw);
    /// sniff(sw, 1, #{ timeout_ms: 100 });
    /// ```
    #[rhai_fn(name = "sniff", return_raw)]
    pub fn sniff_lan(ctx: NativeCallContext, lan: LanRef, n: i64, options: Map) -> RhaiResult<i64> {
        sniff_frames(&ctx, &lan.name, n, &options)
    }

    /// Sniffs by name: a link, a LAN or a `node:iface` port.
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// sniff("a:eth0", 1, #{ timeout_ms: 100 });
    /// ```
    #[rhai_fn(name = "sniff", return_raw)]
    pub fn sniff_named(ctx: NativeCallContext, target: &str, n: i64, options: Map) -> RhaiResult<i64> {
        sniff_frames(&ctx, target, n, &options)
    }

    /// `Capture(target -> file)`, for printing.
    ///
    /// ```rhai
    /// link(node("a"), node("b"));
    /// print(capture("a--b", "/tmp/ab.pcap"));
    /// ```
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn capture_to_string(capture: &mut Capture) -> String {
        format!("Capture({} -> {})", capture.target, capture.file)
    }
}
