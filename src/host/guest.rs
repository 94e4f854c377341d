//! What machine nodes (uml, kvm) share: the host end of the guest agent's
//! line, the guest-side commands that configure NICs, addresses and
//! routes, ping through the agent, and the console files.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::agent::{encode_exec, max_answer_len, parse_line, script_for, AgentMsg};
use super::{ExecOutput, HostError};
use crate::vocab::addr::Route;
use crate::vocab::{MacAddr, OutputLimit};

/// The longest line the agent may send while the guest boots.
const MAX_BOOT_LINE: usize = 4096;

/// How reading one bounded line ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineEnd {
    /// A whole line is in the buffer (without its newline).
    Line,
    /// A line longer than the bound came; it was read to its end and
    /// dropped.
    TooLong,
    /// The deadline passed; what arrived of the line stays in the buffer.
    TimedOut,
    /// The other end closed.
    Closed,
}

/// Reads one line of at most `max` bytes before `deadline`, whatever the
/// peer does: sending one byte at a time, never a newline, or gigabytes.
/// `line` may hold the start of a line a timed-out call left.
pub(crate) fn read_bounded_line(
    reader: &mut BufReader<UnixStream>,
    line: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> std::io::Result<LineEnd> {
    let mut too_long = line.len() > max;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(LineEnd::TimedOut);
        }
        reader.get_ref().set_read_timeout(Some(left))?;
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(LineEnd::TimedOut)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(LineEnd::Closed);
        }
        let (part, newline) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], true),
            None => (chunk, false),
        };
        if !too_long && line.len() + part.len() <= max {
            line.extend_from_slice(part);
        } else {
            // Keep reading to the newline, so the next line starts clean,
            // but keep none of it.
            too_long = true;
            line.clear();
        }
        let used = part.len() + usize::from(newline);
        reader.consume(used);
        if newline {
            return Ok(if too_long { LineEnd::TooLong } else { LineEnd::Line });
        }
    }
}

/// How long a guest may take to boot: `CLONET_BOOT_TIMEOUT` seconds, or
/// `default` (also for a value no `Duration` holds).
pub fn boot_timeout(default: Duration) -> Duration {
    std::env::var("CLONET_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(default)
}

/// Copies a disk layer, keeping holes (`cp --sparse=always`): a COW file
/// is mostly holes, so this copies only what the node wrote.
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<(), HostError> {
    let _ = std::fs::remove_file(dst);
    let mut cp = std::process::Command::new("cp");
    super::run_command(cp.arg("--sparse=always").arg(src).arg(dst), &format!("copying {}", src.display()))
}

/// Gives a machine asked to power off up to `within` to exit.
pub fn wait_exit(child: &mut std::process::Child, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The command that starts a machine's `program` (`linux.uml`, QEMU)
/// through `clonet __machine`, as the init of a PID namespace of its own
/// (see `helpers::machine_main`), so that nothing it starts outlives it.
/// Missing `program` is said here, with `package` to install, since the
/// helper can only report it on the console. `view` names what the
/// machine needs of the host's private directories (used when root).
pub fn machine_command(
    program: &str,
    package: &str,
    view: &super::machine_view::MachineView,
) -> std::io::Result<std::process::Command> {
    if !super::on_path(program) {
        let why = format!("{program} is not on PATH (install {package})");
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, why));
    }
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg("__machine").args(view.args()).arg("--").arg(program);
    Ok(cmd)
}

/// A machine's own directory in `run_dir`: its disk, its sockets, UML's
/// umid directory. When clonet is root the machine runs as a uid of its
/// own that owns this directory and sees nothing else of the run
/// directory (see `machine_view`).
pub fn machine_dir(run_dir: &Path, node: &str) -> PathBuf {
    run_dir.join(format!("{node}.machine"))
}

/// Makes `machine_dir` (private to its owner) if it is not there yet.
pub fn make_machine_dir(run_dir: &Path, node: &str) -> Result<PathBuf, HostError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = machine_dir(run_dir, node);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(HostError::io(format!("creating {}", dir.display()))(e))
        }
        _ => Ok(dir),
    }
}

/// The console log of a node in `run_dir`.
pub fn console_log(run_dir: &Path, node: &str) -> PathBuf {
    run_dir.join(format!("{node}.console.log"))
}

/// The console socket of a node in `run_dir` (see `host::console`).
pub fn console_socket(run_dir: &Path, node: &str) -> PathBuf {
    run_dir.join(format!("{node}.console.sock"))
}

/// The last non-empty lines of a node's console log, for error messages,
/// after the first line that says why a kernel stopped, if one does (a
/// panic's stack trace would push it out of the tail).
pub fn console_tail(run_dir: &Path, node: &str) -> String {
    summarize_console(&std::fs::read_to_string(console_log(run_dir, node)).unwrap_or_default())
}

/// `console_tail` of a log's text (sans-IO).
pub fn summarize_console(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    let why = ["Kernel panic", "VFS:", "Failed to", "No working init", "Cannot open"];
    let cause = lines[..lines.len() - tail.len()].iter().find(|l| why.iter().any(|w| l.contains(w)));
    let mut parts: Vec<&str> = cause.into_iter().copied().collect();
    if cause.is_some() {
        parts.push("…");
    }
    parts.extend(tail);
    parts.join(" | ")
}

/// The host end of a guest agent's line (see `agent` and
/// `images/clonet-agent.sh`).
pub struct AgentLine {
    node: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_request: u64,
    said_hello: bool,
    /// The start of a line not complete yet (while waiting for hello).
    pending: Vec<u8>,
}

impl AgentLine {
    pub fn new(node: &str, stream: UnixStream) -> std::io::Result<AgentLine> {
        let writer = stream.try_clone()?;
        Ok(AgentLine {
            node: node.to_string(),
            reader: BufReader::new(stream),
            writer,
            next_request: 1,
            said_hello: false,
            pending: Vec::new(),
        })
    }

    /// Waits until `deadline` for the agent's hello (the guest has booted).
    pub fn wait_hello(&mut self, deadline: Instant) -> bool {
        if self.said_hello {
            return true;
        }
        loop {
            // A line cut by the timeout stays in `pending` for the next call.
            match read_bounded_line(&mut self.reader, &mut self.pending, MAX_BOOT_LINE, deadline) {
                Ok(LineEnd::Line) => {
                    let line = std::mem::take(&mut self.pending);
                    let hello = std::str::from_utf8(&line).map(|l| parse_line(l.trim_end()));
                    if matches!(hello, Ok(Ok(AgentMsg::Hello { .. }))) {
                        self.said_hello = true;
                        return true;
                    }
                }
                Ok(LineEnd::TooLong) => {}
                _ => return false,
            }
        }
    }

    /// Runs a script in the guest and waits for its result, keeping at
    /// most `limit` bytes of each output stream.
    pub fn run(
        &mut self,
        script: &str,
        stdin: &[u8],
        timeout: Duration,
        limit: OutputLimit,
    ) -> Result<ExecOutput, HostError> {
        let id = self.next_request;
        self.next_request += 1;
        let line = encode_exec(id, timeout.as_secs().max(1), script, stdin, limit.get());
        let what = format!("talking to the agent of {}", self.node);
        self.writer.write_all(line.as_bytes()).map_err(HostError::io(what.clone()))?;
        // The guest kills the command at its timeout; give the answer a
        // margin. The deadline is for the whole answer, however it trickles.
        let deadline = Instant::now() + timeout + Duration::from_secs(10);
        let max = max_answer_len(limit.get());
        loop {
            let mut reply = Vec::new();
            match read_bounded_line(&mut self.reader, &mut reply, max, deadline) {
                Ok(LineEnd::Line) => {}
                Ok(LineEnd::Closed) => return Err(HostError::Gone(self.node.clone())),
                Ok(LineEnd::TimedOut) => return Err(HostError::Timeout(timeout)),
                Ok(LineEnd::TooLong) => {
                    return Err(HostError::io(what)(std::io::Error::other(format!(
                        "the guest answered with a line longer than {max} bytes (more output than max_output \
                         {limit} allows); the answer was dropped"
                    ))))
                }
                Err(e) => return Err(HostError::io(what)(e)),
            }
            let reply = String::from_utf8_lossy(&reply);
            match parse_line(reply.trim_end()) {
                Ok(AgentMsg::Result { id: got, output }) if got == id => return Ok(output),
                // An answer to an earlier, abandoned request: skip it.
                Ok(_) => continue,
                Err(e) => return Err(HostError::start_from(&self.node, "", e)),
            }
        }
    }

    /// Runs a script that must succeed.
    pub fn must(&mut self, script: &str, what: &str) -> Result<(), HostError> {
        let out = self.run(script, b"", Duration::from_secs(20), OutputLimit::DEFAULT)?;
        if out.status != 0 {
            return Err(HostError::Io {
                what: format!("{what} on {}", self.node),
                source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            });
        }
        Ok(())
    }

    /// Runs `argv` as `exec` does.
    pub fn exec(&mut self, req: &crate::vocab::exec::ExecRequest) -> Result<ExecOutput, HostError> {
        if req.user.is_some() {
            // The guest's agent runs as the guest's root, and a machine's
            // image need not have su or setpriv: say so rather than guess.
            return Err(HostError::Unsupported(
                "exec's user option is for ns nodes: in a machine, run su in the command",
            ));
        }
        let mut script = script_for(&req.argv);
        if let Some(cwd) = &req.cwd {
            script = format!("cd {} || exit 126\n{script}", super::agent::shell_quote(cwd));
        }
        self.run(&script, &req.stdin, req.timeout.get(), req.max_output)
    }

    /// One ICMP echo from the guest; the RTT if answered.
    pub fn ping(&mut self, target: std::net::IpAddr, timeout: Duration) -> Result<Option<Duration>, HostError> {
        let secs = timeout.as_secs().max(1);
        let flag = if target.is_ipv6() { "-6 " } else { "" };
        let start = Instant::now();
        let script = format!("ping {flag}-c 1 -W {secs} {target}");
        let out = self.run(&script, b"", timeout + Duration::from_secs(2), OutputLimit::DEFAULT)?;
        if out.status != 0 {
            return Ok(None);
        }
        // Fall back to the round trip we saw.
        Ok(Some(ping_rtt(&out.stdout).unwrap_or_else(|| start.elapsed())))
    }
}

/// The round-trip time ping printed in the guest: busybox prints
/// "time=0.512 ms". None for a time no `Duration` holds (negative, not a
/// number, too large): the guest's output is untrusted. Sans-IO.
pub fn ping_rtt(stdout: &[u8]) -> Option<Duration> {
    let text = String::from_utf8_lossy(stdout);
    text.split("time=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|ms| ms.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
}

/// The guest command that names the NIC `found` (a shell expression giving
/// the kernel's name for it) `ifname`, with `mac` and `mtu`, up; it waits
/// up to 5 s for the NIC to appear.
pub fn bring_up_nic(find: &str, ifname: &str, mac: MacAddr, mtu: u32) -> String {
    format!(
        "i=0; while [ -z \"$({find})\" ] && [ $i -lt 50 ]; do busybox usleep 100000; i=$((i+1)); done; \
         dev=$({find}); [ -n \"$dev\" ] || {{ echo 'no such NIC in the guest' >&2; exit 1; }}; \
         ip link set \"$dev\" name {ifname} && ip link set {ifname} address {mac} mtu {mtu} && ip link set {ifname} up"
    )
}

/// The guest command that adds `route`.
pub fn route_command(route: &Route) -> String {
    let mut cmd =
        format!("ip route add {}", if route.dst.len == 0 { "default".to_string() } else { route.dst.to_string() });
    if let Some(via) = route.via {
        cmd.push_str(&format!(" via {via}"));
    }
    if let Some(dev) = &route.dev {
        cmd.push_str(&format!(" dev {dev}"));
    }
    cmd
}

#[cfg(test)]
mod console_tests {
    use super::summarize_console;

    #[test]
    fn the_reason_a_kernel_stopped_is_kept_before_its_stack_trace() {
        let log = "booting\nVFS: Cannot open root device \"ubda\"\nKernel panic - x\n t1\n t2\n t3\n t4\n t5\n";
        assert_eq!(summarize_console(log), "VFS: Cannot open root device \"ubda\" | … | t1 | t2 | t3 | t4 | t5");
        assert_eq!(summarize_console("a\n\nb\n"), "a | b");
        assert_eq!(summarize_console(""), "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_commands_name_everything() {
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let c = bring_up_nic("echo vec0", "eth1", mac, 9000);
        assert!(c.contains("name eth1") && c.contains("address 02:00:00:00:00:01 mtu 9000"), "{c}");
        let r = Route { dst: "default".parse().unwrap(), via: Some("10.0.0.1".parse().unwrap()), dev: None };
        assert_eq!(route_command(&r), "ip route add default via 10.0.0.1");
    }

    #[test]
    fn a_ping_time_is_read_and_one_no_duration_holds_is_not() {
        let out = |time: &str| format!("64 bytes from 10.0.0.2: seq=0 ttl=64 time={time} ms\n").into_bytes();
        assert_eq!(ping_rtt(&out("0.512")), Some(Duration::from_micros(512)));
        for odd in ["-5", "1e300", "666666666666666666666666", "NaN", "inf", "x"] {
            assert_eq!(ping_rtt(&out(odd)), None, "{odd}");
        }
        assert_eq!(ping_rtt(b"no reply"), None);
    }

    #[test]
    fn an_agent_line_waits_for_hello_then_runs_requests() {
        let (host, guest) = UnixStream::pair().unwrap();
        let mut line = AgentLine::new("g", host).unwrap();
        assert!(!line.wait_hello(Instant::now() + Duration::from_millis(20)), "no hello yet");
        let mut g = guest;
        g.write_all(b"H clonet-agent 1\n").unwrap();
        assert!(line.wait_hello(Instant::now() + Duration::from_secs(5)));
        let guest_side = std::thread::spawn(move || {
            let mut r = BufReader::new(g.try_clone().unwrap());
            let mut req = String::new();
            r.read_line(&mut req).unwrap();
            assert!(req.starts_with("X 1 "), "{req}");
            g.write_all(b"R 0 0 - -\nR 1 3 aGk= -\n").unwrap();
        });
        let out = line.run("echo hi", b"", Duration::from_secs(5), OutputLimit::DEFAULT).unwrap();
        assert_eq!((out.status, out.stdout.as_slice()), (3, &b"hi"[..]));
        guest_side.join().unwrap();
    }

    #[test]
    fn a_guest_cannot_hold_the_line_with_endless_or_trickling_answers() {
        let (host, guest) = UnixStream::pair().unwrap();
        let mut line = AgentLine::new("g", host).unwrap();
        line.said_hello = true;
        let mut g = guest;
        let flood = std::thread::spawn(move || {
            let mut r = BufReader::new(g.try_clone().unwrap());
            let mut req = String::new();
            r.read_line(&mut req).unwrap();
            assert!(req.trim_end().ends_with(" 10"), "the limit goes to the guest: {req}");
            // An answer far longer than 10 bytes of output allow, then a
            // good one: the first is dropped whole, the line goes on.
            let _ = g.write_all(format!("R 1 0 {} -\n", "A".repeat(1 << 20)).as_bytes());
            req.clear();
            r.read_line(&mut req).unwrap();
            g.write_all(b"R 2 0 aGk= - 0\n").unwrap();
            // Then one byte a while, never a newline.
            req.clear();
            r.read_line(&mut req).unwrap();
            for _ in 0..40 {
                if g.write_all(b"R").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let limit = OutputLimit::new(10).unwrap();
        let e = line.run("yes", b"", Duration::from_secs(5), limit).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        let out = line.run("echo hi", b"", Duration::from_secs(5), limit).unwrap();
        assert_eq!(out.stdout, b"hi");
        let mut pending = Vec::new();
        let started = Instant::now();
        line.writer.write_all(b"X 3\n").unwrap();
        let end = read_bounded_line(&mut line.reader, &mut pending, 100, started + Duration::from_millis(500)).unwrap();
        assert_eq!(end, LineEnd::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(1), "the deadline is for the whole line");
        flood.join().unwrap();
    }
}
