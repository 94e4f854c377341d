//! Helpers for integration tests: run the real `clonet` binary on real
//! scripts in a temporary directory, and look for anything a lab leaked.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Fails loudly when not root: these tests create namespaces and TAPs, and
/// must never pass by skipping.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this integration test needs root (namespaces, TAP devices); run the suite as root"
    );
}

/// A scratch directory with its own clonet run directory.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        require_root();
        Sandbox { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn run_base(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write script");
        p
    }

    /// Where this sandbox keeps guest images.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `clonet ARGS…` with this sandbox's run and data directories and no
    /// colours.
    pub fn clonet(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_clonet"));
        c.env("CLONET_RUN_DIR", self.run_base())
            .env("CLONET_DATA_DIR", self.data_dir())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, script: &Path) -> Output {
        self.clonet().arg("run").arg(script).output().expect("spawn clonet")
    }

    /// Runs `script` (written as `name`), requires success and a clean run
    /// base afterwards, and returns its output.
    pub fn run_ok(&self, name: &str, script: &str) -> String {
        let out = self.run(&self.write(name, script));
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(self.run_dirs().is_empty(), "run directories left: {:?}", self.run_dirs());
        stdout
    }

    /// Lab directories still present in the run base.
    pub fn run_dirs(&self) -> Vec<String> {
        match std::fs::read_dir(self.run_base()) {
            Ok(d) => d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect(),
            Err(_) => vec![],
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Every network namespace (as `net:[inode]`) some process holds open,
/// as its own namespace or through an fd, or that a mount pins.
pub fn live_netns() -> HashSet<String> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.path();
        if let Ok(l) = std::fs::read_link(pid.join("ns/net")) {
            out.insert(l.to_string_lossy().to_string());
        }
        for fd in std::fs::read_dir(pid.join("fd")).into_iter().flatten().flatten() {
            if let Ok(l) = std::fs::read_link(fd.path()) {
                let l = l.to_string_lossy().to_string();
                if l.starts_with("net:[") {
                    out.insert(l);
                }
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        if let Some(i) = line.find("net:[") {
            out.insert(line[i..].split(']').next().unwrap_or("").to_string() + "]");
        }
    }
    out
}

/// Processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Mounts whose mount point or source mentions `needle`.
pub fn mounts_matching(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Values printed by a script as `key value` lines.
pub fn printed(stdout: &str, key: &str) -> Vec<String> {
    stdout.lines().filter_map(|l| l.strip_prefix(&format!("{key} ")).map(str::to_string)).collect()
}

/// Polls `cond` for up to `secs` seconds.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    cond()
}

/// Asserts that a sandbox's labs left nothing: no run directory (sockets,
/// COW files, layers), no process (ns inits, linux.uml, QEMU) and no mount.
pub fn assert_nothing_left(sb: &Sandbox) {
    assert!(sb.run_dirs().is_empty(), "run directory left: {:?}", sb.run_dirs());
    let base = sb.run_base().to_string_lossy().to_string();
    assert!(eventually(5, || processes_matching(&base).is_empty()), "processes left: {:?}", processes_matching(&base));
    assert!(mounts_matching(&base).is_empty(), "mounts left: {:?}", mounts_matching(&base));
}

/// A lab run by `clonet serve` (with `--gui` if asked), once it has said
/// where it is served. Dropping it (a test that failed half-way) sends
/// SIGTERM, on which `serve` tears the lab down.
pub struct Served {
    pub child: std::process::Child,
    pub name: String,
    pub socket: PathBuf,
    /// The GUI's URL, with its token (`--gui` only).
    pub url: String,
    /// What `serve` prints on stderr after it said where it serves the lab.
    pub log: std::sync::mpsc::Receiver<String>,
}

/// `clonet serve [--gui] NAME.rhai` of `script`, once it says where it serves the lab.
pub fn serve(sb: &Sandbox, name: &str, script: &str, gui: bool) -> Served {
    let path = sb.write(&format!("{name}.rhai"), script);
    serve_with(sb.clonet(), name, &path, gui)
}

/// `clonet attach LAB` through `cmd` (a `clonet` command with its
/// environment) with `input` typed, until it ends.
pub fn attach_with_input(mut cmd: Command, lab: &str, input: &str) -> Output {
    use std::io::Write;
    let mut child =
        cmd.args(["attach", lab]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `serve` through `cmd` (a `clonet` command with its environment).
pub fn serve_with(cmd: Command, name: &str, path: &Path, gui: bool) -> Served {
    serve_with_args(cmd, name, path, gui, &[])
}

/// [`serve_with`], with more arguments after the path.
pub fn serve_with_args(mut cmd: Command, name: &str, path: &Path, gui: bool, more: &[&str]) -> Served {
    use std::io::BufRead;
    cmd.arg("serve");
    if gui {
        cmd.arg("--gui");
    }
    let mut child = cmd.arg(path).args(more).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut served = Served { child, name: name.to_string(), socket: PathBuf::new(), url: String::new(), log: rx };
    while served.socket.as_os_str().is_empty() {
        let line = served
            .log
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("clonet serve says where it serves the lab (and its GUI)");
        if let Some(rest) = line.split("web GUI at ").nth(1) {
            served.url = rest.split_whitespace().next().unwrap().to_string();
        }
        if let Some(rest) = line.split(" is served on ").nth(1) {
            served.socket = PathBuf::from(rest.split(';').next().unwrap());
        }
    }
    served
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// A raw client: JSON lines in, JSON values out.
pub struct Raw {
    pub reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    pub writer: std::os::unix::net::UnixStream,
}

impl Raw {
    pub fn connect(socket: &Path) -> Raw {
        use std::os::unix::net::UnixStream;
        let s = UnixStream::connect(socket).expect("connect to the control socket");
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        Raw { writer: s.try_clone().unwrap(), reader: std::io::BufReader::new(s) }
    }

    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        self.writer.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    pub fn next(&mut self) -> serde_json::Value {
        use std::io::BufRead;
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line from the lab");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    /// The answer to request `id` (events before it are kept in `seen`).
    pub fn answer(&mut self, id: u64, seen: &mut Vec<serde_json::Value>) -> serde_json::Value {
        loop {
            let v = self.next();
            if v.get("event").is_some() {
                seen.push(v);
            } else if v["id"] == id {
                return v;
            }
        }
    }

    /// Events until one matches `want` (or none within the read timeout).
    pub fn event_where(
        &mut self,
        seen: &mut Vec<serde_json::Value>,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> bool {
        if seen.iter().any(&want) {
            return true;
        }
        loop {
            let v = self.next();
            let hit = want(&v);
            seen.push(v);
            if hit {
                return true;
            }
        }
    }
}

/// The GUI's address (`127.0.0.1:PORT`) and token, from the URL it printed.
pub fn gui_address(lab: &Served) -> (String, String) {
    let addr = lab.url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let token = lab.url.split("#token=").nth(1).expect("the token, in the URL's fragment").to_string();
    (addr, token)
}

/// A WebSocket to the GUI's relay of the control socket, as the page opens
/// it: from the page's origin, the token offered as a subprotocol.
pub fn control_websocket(addr: &str, token: &str) -> tungstenite::WebSocket<std::net::TcpStream> {
    use tungstenite::client::IntoClientRequest;
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Origin", format!("http://{addr}").parse().unwrap());
    headers.insert("Sec-WebSocket-Protocol", format!("clonet, clonet-token.{token}").parse().unwrap());
    let (ws, response) = tungstenite::client(request, stream).expect("the WebSocket handshake");
    assert_eq!(response.headers()["sec-websocket-protocol"], "clonet");
    ws
}

/// One request on a control WebSocket: its answer's `ok`.
pub fn ws_request(
    ws: &mut tungstenite::WebSocket<std::net::TcpStream>,
    id: u64,
    command: serde_json::Value,
) -> serde_json::Value {
    ws.send(tungstenite::Message::text(serde_json::json!({ "id": id, "command": command }).to_string())).unwrap();
    loop {
        let message = ws.read().expect("an answer on the WebSocket");
        let Ok(text) = message.to_text() else { continue };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        if v["id"] == id {
            return v["ok"].clone();
        }
    }
}

/// A sandbox an ordinary user (uid and gid 65534, with no subordinate
/// ids) may use: its own copy of clonet, scripts, run and data
/// directories in `home`.
pub struct UserSandbox {
    pub sb: Sandbox,
    pub home: PathBuf,
    /// The user's uid (and gid).
    pub uid: u32,
}

/// The ordinary user with subordinate ids that `tools/test.sh` makes.
pub const TEST_USER: &str = "clonet-test";

impl UserSandbox {
    /// As uid 65534, which has no subordinate ids.
    pub fn new() -> UserSandbox {
        Self::as_uid(65534)
    }

    /// As `TEST_USER`, whose subordinate ids the lab maps.
    pub fn with_subordinate_ids() -> UserSandbox {
        let user = nix::unistd::User::from_name(TEST_USER).ok().flatten().unwrap_or_else(|| {
            panic!("no user {TEST_USER}: tools/test.sh makes it (with subordinate ids) before the tests")
        });
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        assert!(subuid.lines().any(|l| l.starts_with(&format!("{TEST_USER}:"))), "{TEST_USER} has no subordinate uids");
        Self::as_uid(user.uid.as_raw())
    }

    fn as_uid(uid: u32) -> UserSandbox {
        use std::os::unix::fs::PermissionsExt;
        let sb = Sandbox::new();
        let home = sb.dir.path().join("user");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_clonet"), home.join("clonet")).unwrap();
        UserSandbox { sb, home, uid }
    }

    /// Copies `dir` (a tree of scripts) into the sandbox, readable by the user.
    pub fn copy_dir(&self, dir: &Path, name: &str) -> PathBuf {
        let to = self.home.join(name);
        let out = Command::new("cp").arg("-r").arg(dir).arg(&to).output().unwrap();
        assert!(out.status.success());
        let out = Command::new("chmod").args(["-R", "a+rX"]).arg(&to).output().unwrap();
        assert!(out.status.success());
        to
    }

    pub fn run_base(&self) -> PathBuf {
        self.home.join("run")
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.home.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `clonet ARGS…` as the user, with a clean environment.
    pub fn clonet(&self) -> Command {
        self.clonet_with(&[])
    }

    /// `clonet`, with these variables added to the clean environment.
    pub fn clonet_with(&self, vars: &[(&str, &str)]) -> Command {
        let mut c = Command::new("setpriv");
        let id = self.uid.to_string();
        c.args(["--reuid", &id, "--regid", &id, "--clear-groups", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
            .args(vars.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("CLONET_RUN_DIR={}", self.run_base().display()))
            .arg(format!("CLONET_DATA_DIR={}", self.home.join("data").display()))
            .arg("NO_COLOR=1")
            .arg(self.home.join("clonet"))
            .current_dir(&self.home)
            .stdin(Stdio::null());
        c
    }

    /// `clonet serve [--gui]` of `script` as the user (see `serve`).
    pub fn serve(&self, name: &str, script: &str, gui: bool) -> Served {
        let path = self.write(&format!("{name}.rhai"), script);
        serve_with(self.clonet(), name, &path, gui)
    }

    /// Runs a script as the user, requires success, returns its stdout.
    pub fn run_ok(&self, name: &str, script: &str) -> String {
        let path = self.write(name, script);
        let out = self.clonet().arg("run").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// Nothing of the user's labs is left: run directories, processes,
    /// mounts (the lab's own mounts die with its mount namespace).
    pub fn assert_nothing_left(&self) {
        let left: Vec<_> = std::fs::read_dir(self.run_base()).map(|d| d.flatten().collect()).unwrap_or_default();
        assert!(left.is_empty(), "run directories left: {left:?}");
        let home = self.home.to_string_lossy().to_string();
        assert!(
            eventually(5, || processes_matching(&home).is_empty()),
            "processes left: {:?}",
            processes_matching(&home)
        );
        assert!(mounts_matching(&home).is_empty(), "mounts left: {:?}", mounts_matching(&home));
        let in_namespaces = || self.processes_in_user_namespaces();
        assert!(
            eventually(5, || in_namespaces().is_empty()),
            "processes of the user still in a lab's namespaces (and so the namespaces): {:?}",
            in_namespaces()
        );
    }

    /// The user's processes (its uid or one of its subordinate ids) that
    /// run in a user namespace other than the host's: every process of a
    /// user's lab does, and a namespace lives only as long as something
    /// holds it (a process, or a mount, checked above).
    pub fn processes_in_user_namespaces(&self) -> Vec<String> {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.uid)).ok().flatten().map(|u| u.name);
        let subordinate = std::fs::read_to_string("/etc/subuid").unwrap_or_default().lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let ours = f.first().is_some_and(|w| Some(w.to_string()) == name || *w == self.uid.to_string());
            match (ours, f.get(1).and_then(|s| s.parse::<u32>().ok()), f.get(2).and_then(|c| c.parse::<u32>().ok())) {
                (true, Some(start), Some(count)) => Some(start..start.saturating_add(count)),
                _ => None,
            }
        });
        let host_userns = std::fs::read_link("/proc/self/ns/user").unwrap();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let Some(uid) = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok())
            else {
                continue;
            };
            let ours = uid == self.uid || subordinate.as_ref().is_some_and(|r| r.contains(&uid));
            let userns = std::fs::read_link(entry.path().join("ns/user"));
            if ours && userns.is_ok_and(|ns| ns != host_userns) {
                let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push(format!(
                    "{}: {}",
                    entry.file_name().to_string_lossy(),
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                ));
            }
        }
        found
    }
}

/// A network namespace of the test's, removed on drop: a stand-in for a
/// host, so that nothing a test does touches the machine's own network.
pub struct TestNetns(pub String);

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        let name = format!("clonet-t-{tag}-{}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let ns = TestNetns(name);
        assert!(ns.ip(&["link", "set", "lo", "up"]).status.success());
        ns
    }

    /// `ip ARGS…` inside it.
    pub fn ip(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip").args(["netns", "exec", &self.0, "ip"]).args(args).output().unwrap()
    }

    /// `ARGV…` run inside it.
    pub fn run(&self, argv: &[&str]) -> std::process::Output {
        Command::new("ip").args(["netns", "exec", &self.0]).args(argv).output().unwrap()
    }

    /// `clonet` of `sb` inside it.
    pub fn clonet(&self, sb: &Sandbox) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, env!("CARGO_BIN_EXE_clonet")])
            .env("CLONET_RUN_DIR", sb.run_base())
            .env("CLONET_DATA_DIR", sb.data_dir())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}
