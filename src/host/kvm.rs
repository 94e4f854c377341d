//! `kvm` nodes: a `qemu-system-x86_64` machine (KVM where a real probe
//! boot shows it works, TCG otherwise) booting the host's kernel with
//! clonet's initramfs on a qcow2 overlay of the busybox disk. NICs are
//! virtio-net devices on `-netdev stream` sockets the switch pumps,
//! hot-plugged through the QMP connection the node keeps; commands run
//! through the guest agent on a virtio-serial port; the serial console
//! goes through a console relay like uml's. No privilege is needed; run
//! by root, QEMU runs as a uid of its own that sees only its own
//! directory, its kernel, initramfs and backing disks (`machine_view`).
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;

use super::guest::{
    bring_up_nic, console_log, console_socket, console_tail, machine_dir, make_machine_dir, route_command, AgentLine,
};
use super::machine_view::{hand_over, machine_owner, MachineView};
use super::qmp::Qmp;
use super::{proc_start_time, ExecOutput, ExecRequest, HostError, KvmBoot, NodeSpec, ProcRecord, RunningNode};
use crate::switch::port::{PortIo, StreamPort};
use crate::sys::proc::node_process;
use crate::vocab::addr::{Cidr, Route};
use crate::vocab::{Accel, MacAddr};

/// How long a guest may take to boot until its agent answers (TCG is slow).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long QEMU may take to connect its sockets after it starts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Guest memory when the script does not say.
pub const DEFAULT_MEM_MB: u32 = 128;
/// Overlays hold a node's writes only: small clusters keep a clone's
/// disk small (a fresh overlay takes 16 KiB instead of 196 KiB, and a
/// small write allocates 4 KiB, not 64).
const OVERLAY_OPTIONS: &str = "cluster_size=4096";
/// The node's qcow2 overlay in its machine directory.
pub const OVERLAY_FILE: &str = "disk.qcow2";
/// The QEMU id of a node's disk (for live snapshots).
const DISK_ID: &str = "disk0";
/// The name of the agent's virtio-serial port.
const AGENT_PORT: &str = "clonet.agent";

/// QEMU's seccomp sandbox, every optional part denied.
const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Everything the QEMU command line depends on.
#[derive(Clone, Debug)]
pub struct MachineArgs {
    pub name: String,
    pub accel: Accel,
    pub mem_mb: u32,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    pub agent_socket: PathBuf,
    pub qmp_socket: PathBuf,
    /// More QEMU arguments, given by the script.
    pub extra: Vec<String>,
}

/// A path as a value in a QEMU option list (`-drive file=…`,
/// `-chardev path=…`): commas separate options there, so a comma in the
/// path is doubled, QEMU's escape for it; unescaped, a path like
/// `/labs/x,file=/etc/shadow` would smuggle in an option of its own.
fn option_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The QEMU command line (sans-IO). Console on stdin/stdout; QEMU connects
/// to clonet's agent and QMP sockets, which must listen already.
pub fn qemu_args(m: &MachineArgs) -> Vec<String> {
    let mut a: Vec<String> = vec!["-nodefaults".into(), "-no-user-config".into(), "-display".into(), "none".into()];
    a.extend(["-name".into(), m.name.clone()]);
    a.extend(["-machine".into(), format!("pc,accel={}", m.accel)]);
    a.extend(["-cpu".into(), if m.accel == Accel::Kvm { "host".into() } else { "max".into() }]);
    a.extend(["-m".into(), m.mem_mb.to_string(), "-smp".into(), m.cpus.to_string(), "-no-reboot".into()]);
    a.extend(["-kernel".into(), m.kernel.display().to_string(), "-initrd".into(), m.initrd.display().to_string()]);
    a.extend([
        "-append".into(),
        format!("console=ttyS0 quiet panic=-1 clonet.hostname={} clonet.agent=virtio:{AGENT_PORT}", m.name),
    ]);
    a.extend(["-drive".into(), format!("file={},if=virtio,format=qcow2,id={DISK_ID}", option_value(&m.disk))]);
    a.extend(["-chardev".into(), "stdio,id=con,signal=off".into(), "-serial".into(), "chardev:con".into()]);
    a.extend(["-chardev".into(), format!("socket,id=agent,path={},server=off", option_value(&m.agent_socket))]);
    a.extend(["-device".into(), "virtio-serial-pci,id=vser".into()]);
    a.extend(["-device".into(), format!("virtserialport,chardev=agent,name={AGENT_PORT}")]);
    a.extend(["-chardev".into(), format!("socket,id=qmp,path={},server=off", option_value(&m.qmp_socket))]);
    a.extend(["-mon".into(), "chardev=qmp,mode=control".into()]);
    // A seccomp filter: a guest that escapes into QEMU cannot gain
    // privileges, start programs, or change its own limits.
    a.extend(["-sandbox".into(), SANDBOX.into()]);
    a.extend(m.extra.iter().cloned());
    a
}

/// `CLONET_ACCEL` if set, else the cached verdict of a probe boot, else a
/// new probe: a tiny real boot under KVM that must report within a time
/// limit (on some hosts `/dev/kvm` opens but guests hang).
pub fn choose_accel(kernel: &Path, initrd: &Path, cache: &Path) -> Accel {
    match std::env::var("CLONET_ACCEL").as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return Accel::Tcg;
    }
    let key = format!("{}:{}", kernel.display(), std::fs::metadata(kernel).map(|m| m.len()).unwrap_or(0));
    if let Ok(text) = std::fs::read_to_string(cache) {
        if let Some((k, v)) = text.trim().rsplit_once(' ') {
            if k == key {
                return if v == "kvm" { Accel::Kvm } else { Accel::Tcg };
            }
        }
    }
    let verdict = if probe_kvm(kernel, initrd) { Accel::Kvm } else { Accel::Tcg };
    let _ = std::fs::write(cache, format!("{key} {verdict}\n"));
    verdict
}

fn probe_kvm(kernel: &Path, initrd: &Path) -> bool {
    // The probe is a machine too: run by root, it runs unprivileged.
    let view = MachineView { own: Vec::new(), see: vec![kernel.to_path_buf(), initrd.to_path_buf()] };
    let Ok(mut cmd) = super::guest::machine_command("qemu-system-x86_64", "qemu-system-x86", &view) else {
        return false;
    };
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none", "-machine", "pc,accel=kvm", "-cpu", "host"])
        .args(["-m", "128", "-no-reboot", "-serial", "stdio", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1 clonet.probe=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    node_process(&mut cmd);
    let Ok(mut child) = cmd.spawn() else { return false };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                return false;
            }
        }
    }
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut out);
    out.contains("clonet-kvm-probe-ok")
}

/// Makes the node's overlay on `base` (never written): qcow2 with `base`
/// as its backing file, in the format `qemu-img` finds it in.
fn create_overlay(base: &Path, overlay: &Path) -> Result<(), String> {
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(base)
        .output()
        .map_err(|e| format!("qemu-img (install qemu-utils): {e}"))?;
    if !info.status.success() {
        return Err(format!("{}: {}", base.display(), String::from_utf8_lossy(&info.stderr).trim()));
    }
    let format = serde_json::from_slice::<serde_json::Value>(&info.stdout)
        .ok()
        .and_then(|v| v["format"].as_str().map(str::to_string))
        .unwrap_or_else(|| "raw".into());
    let base_abs = std::fs::canonicalize(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o", OVERLAY_OPTIONS, "-F", &format, "-b"])
        .arg(&base_abs)
        .arg(overlay)
        .output()
        .map_err(|e| format!("qemu-img: {e}"))?;
    if !out.status.success() {
        return Err(format!("qemu-img create: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The virtual size of a disk image in bytes, read even while a running
/// QEMU holds it (`-U`).
fn virtual_size(image: &Path) -> Result<u64, String> {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(image)
        .output()
        .map_err(|e| format!("qemu-img: {e}"))?;
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["virtual-size"].as_u64())
        .ok_or_else(|| format!("qemu-img info {}: {}", image.display(), String::from_utf8_lossy(&out.stderr).trim()))
}

/// The files below the top of a disk's backing chain, which QEMU opens
/// by the names stored in the chain (read even while a QEMU holds them).
fn backing_files(disk: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--backing-chain", "--output=json"])
        .arg(disk)
        .output()
        .map_err(|e| format!("qemu-img: {e}"))?;
    let chain: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("qemu-img info {}: {}", disk.display(), String::from_utf8_lossy(&out.stderr).trim()))?;
    Ok(chain.iter().skip(1).filter_map(|i| i["filename"].as_str()).map(PathBuf::from).collect())
}

/// Waits for one connection on `listener`, up to `timeout`, while `child` runs.
fn accept_from(listener: &UnixListener, child: &mut Child, timeout: Duration) -> Result<UnixStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("qemu-system-x86_64 exited ({status})"));
        }
        if Instant::now() > deadline {
            return Err("QEMU did not connect its sockets".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct KvmNode {
    name: String,
    child: Child,
    record: ProcRecord,
    /// The uid QEMU runs as, when not clonet's own.
    owner: Option<u32>,
    agent: AgentLine,
    booted: bool,
    boot_deadline: Instant,
    qmp: Qmp,
    console: super::console::ConsoleRelay,
    run_dir: PathBuf,
    accel: Accel,
    /// Interface name -> the NIC's QMP ids.
    nics: HashMap<String, u32>,
    next_nic: u32,
}

/// Starts a kvm node booting from `boot` and returns once QEMU is
/// connected; the first request to the node waits for the boot to end.
/// The base disk, `boot.disk`, is never written: clonet's own, or the
/// node's `image` (an ext4 root file system with an `/init`, such as a
/// customised copy of clonet's own disk).
pub fn start(spec: &NodeSpec, boot: &KvmBoot, mem_mb: u32, cpus: u32) -> Result<Box<dyn RunningNode>, HostError> {
    let err = |why: String| HostError::start(spec.name.clone(), why);
    let run_dir = spec.run_dir.clone();
    let dir = make_machine_dir(&run_dir, &spec.name)?;
    let overlay = dir.join(OVERLAY_FILE);
    let (base, accel) = (&boot.disk, boot.accel);
    match &spec.disk {
        super::DiskStart::Keep if overlay.is_file() => {}
        super::DiskStart::Fresh | super::DiskStart::Keep => create_overlay(base, &overlay).map_err(err)?,
        super::DiskStart::From(layer) => create_overlay(layer, &overlay).map_err(err)?,
    }
    let agent_socket = dir.join("agent.sock");
    let qmp_socket = dir.join("qmp.sock");
    let listen = |p: &Path| {
        let _ = std::fs::remove_file(p);
        UnixListener::bind(p).map_err(|e| HostError::start_from(&spec.name, &p.display().to_string(), e))
    };
    let agent_listener = listen(&agent_socket)?;
    let qmp_listener = listen(&qmp_socket)?;
    let log = super::console::RotatingLog::open(&console_log(&run_dir, &spec.name), super::console::CONSOLE_LOG_CAP)
        .map_err(HostError::io("creating the console log"))?;
    let (console_host, console_guest) = UnixStream::pair().map_err(HostError::io("creating the console line"))?;
    let machine = MachineArgs {
        name: spec.name.clone(),
        accel,
        mem_mb,
        cpus,
        kernel: boot.kernel.clone(),
        initrd: boot.initrd.clone(),
        disk: overlay.clone(),
        agent_socket: agent_socket.clone(),
        qmp_socket: qmp_socket.clone(),
        extra: spec.options.args.clone(),
    };
    let console_in = console_guest.try_clone().map_err(HostError::io("console line"))?;
    let mut see = vec![boot.kernel.clone(), boot.initrd.clone()];
    // Only a machine under a uid of its own has a view to fill.
    if super::machine_view::gives_guest_ids() {
        see.extend(backing_files(&overlay).map_err(err)?);
    }
    let view = MachineView { own: vec![dir.clone()], see };
    let mut cmd = super::guest::machine_command("qemu-system-x86_64", "qemu-system-x86", &view)
        .map_err(|e| err(format!("cannot run qemu-system-x86_64: {e}")))?;
    cmd.args(qemu_args(&machine))
        .stdin(Stdio::from(OwnedFd::from(console_in)))
        .stderr(Stdio::from(OwnedFd::from(
            console_guest.try_clone().map_err(HostError::io("sharing the console line"))?,
        )))
        .stdout(Stdio::from(OwnedFd::from(console_guest)));
    node_process(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| err(format!("cannot run qemu-system-x86_64: {e}")))?;
    drop(cmd);
    let pid = child.id() as i32;
    // The console is relayed from the start, so that what QEMU (or its
    // helper) says when it fails at once is in the log the error quotes.
    let mut console =
        match super::console::ConsoleRelay::spawn(console_host.into(), log, &console_socket(&run_dir, &spec.name)) {
            Ok(c) => c,
            Err(e) => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = child.wait();
                return Err(err(format!("console relay: {e}")));
            }
        };
    let cleanup = |child: &mut Child, console: &mut super::console::ConsoleRelay| {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = child.wait();
        console.join();
        for p in [&agent_socket, &qmp_socket] {
            let _ = std::fs::remove_file(p);
        }
    };
    let connected = (|| {
        let record = ProcRecord { pid, start_time: proc_start_time(pid).ok_or("qemu-system-x86_64 exited at once")? };
        let agent_stream = accept_from(&agent_listener, &mut child, CONNECT_TIMEOUT)?;
        let qmp_stream = accept_from(&qmp_listener, &mut child, CONNECT_TIMEOUT)?;
        let qmp = Qmp::handshake(qmp_stream, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        let agent = AgentLine::new(&spec.name, agent_stream).map_err(|e| e.to_string())?;
        Ok::<_, String>((record, agent, qmp))
    })();
    let (record, agent, qmp) = match connected {
        Ok(c) => c,
        Err(why) => {
            cleanup(&mut child, &mut console);
            let tail = console_tail(&run_dir, &spec.name);
            return Err(err(format!("{why}; console ends with: {tail}")));
        }
    };
    let _ = std::fs::remove_file(&agent_socket);
    let _ = std::fs::remove_file(&qmp_socket);
    Ok(Box::new(KvmNode {
        name: spec.name.clone(),
        child,
        record,
        owner: machine_owner(pid as u32),
        agent,
        booted: false,
        boot_deadline: Instant::now() + super::guest::boot_timeout(BOOT_TIMEOUT),
        qmp,
        console,
        run_dir,
        accel,
        nics: HashMap::new(),
        next_nic: 0,
    }))
}

impl KvmNode {
    /// Waits until the guest's agent said hello. A guest that does not
    /// boot in time is killed and the error quotes its console.
    fn booted(&mut self) -> Result<(), HostError> {
        if !self.booted {
            if !self.agent.wait_hello(self.boot_deadline) {
                self.kill();
                let tail = console_tail(&self.run_dir, &self.name);
                return Err(HostError::start(
                    self.name.clone(),
                    format!(
                        "the guest agent did not answer within {:?} ({}); console ends with: {tail}",
                        super::guest::boot_timeout(BOOT_TIMEOUT),
                        self.accel
                    ),
                ));
            }
            self.booted = true;
        }
        Ok(())
    }

    fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.record.pid), Signal::SIGKILL);
        let _ = self.child.wait();
        self.console.join();
    }

    fn socket_path(&self, ifname: &str) -> PathBuf {
        machine_dir(&self.run_dir, &self.name).join(format!("{ifname}.sock"))
    }

    /// Runs a human-monitor command (savevm and loadvm have no QMP form in
    /// QEMU 7.2); HMP reports failure as text.
    fn hmp(&mut self, command: &str) -> Result<(), HostError> {
        let out = self
            .qmp
            .execute("human-monitor-command", json!({ "command-line": command }))
            .map_err(|e| self.qmp_err(e))?;
        let text = out.as_str().unwrap_or_default().trim().to_string();
        if text.to_lowercase().contains("error") || text.contains("not found") || text.contains("could not") {
            return Err(HostError::start(self.name.clone(), format!("{command}: {text}")));
        }
        Ok(())
    }

    fn qmp_err(&self, e: super::qmp::QmpError) -> HostError {
        HostError::start_from(&self.name, "", e)
    }

    /// How this machine runs guest code.
    pub fn accel(&self) -> Accel {
        self.accel
    }
}

impl RunningNode for KvmNode {
    fn processes(&self) -> Vec<ProcRecord> {
        vec![self.record.clone()]
    }

    fn pid(&self) -> i32 {
        self.record.pid
    }

    fn console(&self) -> super::console::ConsoleTarget {
        super::console::ConsoleTarget::Socket(console_socket(&self.run_dir, &self.name))
    }

    fn snapshot(&mut self, dir: &Path, name: &str) -> Result<PathBuf, HostError> {
        // A live external snapshot: the current overlay becomes the
        // read-only snapshot (moved into `dir`; QEMU keeps its open file),
        // and the machine goes on, on a new overlay over it at the usual
        // place, made here so that its backing path names the moved file.
        let active = machine_dir(&self.run_dir, &self.name).join(OVERLAY_FILE);
        let layer = dir.join(format!("{name}.qcow2"));
        let size = virtual_size(&active).map_err(|e| HostError::start(self.name.clone(), e))?;
        std::fs::rename(&active, &layer).map_err(HostError::io(format!("moving {}", active.display())))?;
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-u", "-f", "qcow2", "-o", OVERLAY_OPTIONS, "-F", "qcow2", "-b"])
            .arg(&layer)
            .arg(&active)
            .arg(size.to_string())
            .output()
            .map_err(HostError::io("running qemu-img"))?;
        // QEMU opens the new overlay as the machine's uid.
        let handed = if made.status.success() { hand_over(&active, self.owner) } else { Ok(()) };
        let switched = if let Err(e) = handed {
            Err(e)
        } else if made.status.success() {
            self.qmp
                .execute(
                    "blockdev-snapshot-sync",
                    json!({ "device": DISK_ID, "snapshot-file": active.display().to_string(),
                            "format": "qcow2", "mode": "existing" }),
                )
                .map_err(|e| self.qmp_err(e))
        } else {
            Err(HostError::start(self.name.clone(), String::from_utf8_lossy(&made.stderr).trim().to_string()))
        };
        if let Err(e) = switched {
            // Put the disk back where it was: the machine never left it.
            let _ = std::fs::rename(&layer, &active);
            return Err(e);
        }
        Ok(layer)
    }

    fn snapshot_memory(&mut self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), HostError> {
        // The disk as an external layer (for clones), then, on the new
        // overlay, an internal qcow2 snapshot of RAM, devices and disk
        // (`savevm`), which `restore_memory` loads back in place.
        self.booted()?;
        let layer = self.snapshot(dir, name)?;
        self.hmp(&format!("savevm {name}"))?;
        Ok((layer, machine_dir(&self.run_dir, &self.name).join(OVERLAY_FILE)))
    }

    fn forget_memory(&mut self, name: &str) -> Result<(), HostError> {
        self.hmp(&format!("delvm {name}"))
    }

    fn restore_memory(&mut self, name: &str) -> Result<(), HostError> {
        self.booted()?;
        self.hmp(&format!("loadvm {name}"))
    }

    fn pause(&mut self, paused: bool) -> Result<(), HostError> {
        let verb = if paused { "stop" } else { "cont" };
        self.qmp.execute(verb, json!({})).map(|_| ()).map_err(|e| self.qmp_err(e))
    }

    fn set_link(&mut self, ifname: &str, up: bool, _routes: &[Route]) -> Result<Option<Box<dyn PortIo>>, HostError> {
        let Some(n) = self.nics.get(ifname) else { return Ok(None) };
        let name = format!("nic{n}");
        self.qmp.execute("set_link", json!({ "name": name, "up": up })).map(|_| None).map_err(|e| self.qmp_err(e))
    }

    fn detail(&self) -> Option<String> {
        Some(format!("accel={}", self.accel))
    }

    fn add_iface(&mut self, ifname: &str, mac: MacAddr, mtu: u32) -> Result<Box<dyn PortIo>, HostError> {
        self.booted()?;
        let n = self.next_nic;
        self.next_nic += 1;
        let sock = self.socket_path(ifname);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).map_err(HostError::io(format!("creating {}:{ifname}", self.name)))?;
        hand_over(&sock, self.owner)?;
        let path = sock.display().to_string();
        self.qmp
            .execute(
                "netdev_add",
                json!({ "type": "stream", "id": format!("net{n}"), "server": false,
                        "addr": { "type": "unix", "path": path } }),
            )
            .map_err(|e| self.qmp_err(e))?;
        let stream = match accept_from(&listener, &mut self.child, CONNECT_TIMEOUT) {
            Ok(s) => s,
            Err(why) => return Err(HostError::start(self.name.clone(), why)),
        };
        drop(listener);
        let _ = std::fs::remove_file(&sock);
        self.qmp
            .execute(
                "device_add",
                json!({ "driver": "virtio-net-pci", "id": format!("nic{n}"), "netdev": format!("net{n}"),
                        "mac": mac.to_string(), "host_mtu": mtu.max(68) }),
            )
            .map_err(|e| self.qmp_err(e))?;
        let find = format!("for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {mac} ] && echo ${{d##*/}}; done");
        self.agent.must(&bring_up_nic(&find, ifname, mac, mtu), "bringing up a NIC")?;
        self.nics.insert(ifname.to_string(), n);
        stream.set_nonblocking(true).map_err(HostError::io("socket"))?;
        Ok(Box::new(StreamPort::new(OwnedFd::from(stream))))
    }

    fn add_addr(&mut self, ifname: &str, cidr: Cidr) -> Result<(), HostError> {
        self.booted()?;
        self.agent.must(&format!("ip addr add {cidr} dev {ifname}"), &format!("adding {cidr} to {ifname}"))
    }

    fn add_route(&mut self, route: &Route) -> Result<(), HostError> {
        self.booted()?;
        self.agent.must(&route_command(route), &format!("adding a route to {}", route.dst))
    }

    fn forget_iface(&mut self, ifname: &str) {
        if let Some(n) = self.nics.remove(ifname).filter(|_| super::is_alive(&self.record)) {
            let id = format!("nic{n}");
            let unplugged = self.qmp.execute("device_del", json!({ "id": id })).and_then(|_| {
                self.qmp.wait_event("DEVICE_DELETED", Duration::from_secs(10), |d| d["device"] == id.as_str())
            });
            if let Err(e) = unplugged {
                eprintln!("clonet: unplugging {}:{ifname}: {e}", self.name);
            }
            let _ = self.qmp.execute("netdev_del", json!({ "id": format!("net{n}") }));
        }
    }

    fn exec(&mut self, req: &ExecRequest) -> Result<ExecOutput, HostError> {
        if !super::is_alive(&self.record) {
            return Err(HostError::Gone(self.name.clone()));
        }
        self.booted()?;
        self.agent.exec(req)
    }

    fn ping(&mut self, target: std::net::IpAddr, timeout: Duration) -> Result<Option<Duration>, HostError> {
        self.booted()?;
        self.agent.ping(target, timeout)
    }

    fn stop(&mut self) -> Result<(), HostError> {
        if super::is_alive(&self.record) {
            let _ = self.qmp.execute("quit", json!({}));
            super::guest::wait_exit(&mut self.child, Duration::from_secs(3));
        }
        // The overlay stays for a restart; the run directory goes with the lab.
        self.kill();
        Ok(())
    }
}

impl Drop for KvmNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(accel: Accel) -> MachineArgs {
        MachineArgs {
            name: "vm1".into(),
            accel,
            mem_mb: 256,
            cpus: 2,
            kernel: "/k".into(),
            initrd: "/i".into(),
            disk: "/run/lab/vm1.qcow2".into(),
            agent_socket: "/run/lab/vm1.agent.sock".into(),
            qmp_socket: "/run/lab/vm1.qmp.sock".into(),
            extra: vec!["-device".into(), "x".into()],
        }
    }

    #[test]
    fn the_command_line_names_every_channel() {
        let a = qemu_args(&machine(Accel::Tcg)).join(" ");
        for want in [
            "-machine pc,accel=tcg",
            "-cpu max",
            "-m 256 -smp 2",
            "-kernel /k -initrd /i",
            "clonet.hostname=vm1 clonet.agent=virtio:clonet.agent",
            "-drive file=/run/lab/vm1.qcow2,if=virtio,format=qcow2,id=disk0",
            "socket,id=agent,path=/run/lab/vm1.agent.sock,server=off",
            "virtserialport,chardev=agent,name=clonet.agent",
            "-mon chardev=qmp,mode=control",
            "-chardev stdio,id=con,signal=off -serial chardev:con",
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ] {
            assert!(a.contains(want), "missing {want:?} in {a}");
        }
        let k = qemu_args(&machine(Accel::Kvm)).join(" ");
        assert!(k.contains("accel=kvm") && k.contains("-cpu host"), "{k}");
        assert!(k.ends_with("-device x"), "script arguments come last: {k}");
    }

    #[test]
    fn commas_in_paths_cannot_add_options() {
        let mut m = machine(Accel::Tcg);
        m.disk = "/labs/x,file=/etc/shadow".into();
        m.qmp_socket = "/run/a,b/q.sock".into();
        let a = qemu_args(&m);
        assert!(a.contains(&"file=/labs/x,,file=/etc/shadow,if=virtio,format=qcow2,id=disk0".to_string()), "{a:?}");
        assert!(a.contains(&"socket,id=qmp,path=/run/a,,b/q.sock,server=off".to_string()), "{a:?}");
    }
}
