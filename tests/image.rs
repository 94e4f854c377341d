//! `clonet image`: the busybox guest image is built without root from
//! Debian's busybox-static, cached, and boots under User-Mode Linux with
//! its base left untouched.
mod common;
use common::*;

use std::os::unix::process::CommandExt;
use std::process::Command;

fn clonet(data: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clonet"));
    c.env("CLONET_DATA_DIR", data).env("NO_COLOR", "1");
    c
}

#[test]
fn the_image_is_built_once_listed_and_boots_under_uml() {
    let data = tempfile::tempdir().unwrap();
    let out = clonet(data.path()).args(["image", "build"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("uml-busybox built: "), "{}", text(&out.stdout));
    let img = data.path().join("images/uml-busybox.img");
    let built_at = std::fs::metadata(&img).unwrap().modified().unwrap();

    let again = clonet(data.path()).args(["image", "build"]).output().unwrap();
    assert!(text(&again.stdout).starts_with("uml-busybox up to date"), "{}", text(&again.stdout));
    assert_eq!(std::fs::metadata(&img).unwrap().modified().unwrap(), built_at, "not rebuilt");
    let ls = clonet(data.path()).args(["image", "ls"]).output().unwrap();
    assert!(text(&ls.stdout).contains("uml-busybox"), "{}", text(&ls.stdout));

    // Boot it on a copy-on-write layer: init reports, then powers off.
    let before = std::fs::read(&img).unwrap();
    let cow = data.path().join("node.cow");
    let boot = Command::new("timeout")
        .arg("60")
        .arg("linux.uml")
        .arg(format!("ubd0={},{}", cow.display(), img.display()))
        .args(["root=/dev/ubda", "rw", "init=/init", "mem=64M", "con0=null,fd:1", "con=null", "quiet"])
        .args(["clonet.selftest=1", "clonet.hostname=probe"])
        .output()
        .expect("linux.uml (Debian's user-mode-linux) is installed by tools/test.sh");
    let console = text(&boot.stdout);
    assert!(console.contains("clonet-image-ok probe "), "console:\n{console}{}", text(&boot.stderr));
    assert!(std::fs::read(&img).unwrap() == before, "the base image must never be written");
    assert!(cow.exists(), "writes went to the COW file");
    let cow_name = cow.to_string_lossy().to_string();
    assert!(eventually(5, || processes_matching(&cow_name).is_empty()), "no UML process outlives the guest");
}

#[test]
fn a_forced_build_rebuilds() {
    let data = tempfile::tempdir().unwrap();
    assert!(clonet(data.path()).args(["image", "build"]).status().unwrap().success());
    let out = clonet(data.path()).args(["image", "build", "--force"]).output().unwrap();
    assert!(text(&out.stdout).starts_with("uml-busybox built"), "{}", text(&out.stdout));
    let leftovers: Vec<_> = std::fs::read_dir(data.path().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");
}

#[test]
fn mconsole_talks_to_a_running_uml_and_halts_it() {
    use clonet::host::mconsole::Mconsole;
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    assert!(clonet(data.path()).args(["image", "build"]).status().unwrap().success());
    let img = data.path().join("images/uml-busybox.img");
    let uml_dir = data.path().join("uml");
    std::fs::create_dir_all(&uml_dir).unwrap();
    let mut uml = Command::new("linux.uml")
        .arg(format!("ubd0={},{}", data.path().join("m.cow").display(), img.display()))
        .args(["root=/dev/ubda", "rw", "init=/init", "mem=64M", "con0=null,fd:1", "con=null", "quiet", "umid=m1"])
        .arg(format!("uml_dir={}", uml_dir.display()))
        .arg("clonet.selftest=hold")
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(uml.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("clonet-image-holding"))), "the guest came up");
    let mc = Mconsole::new(&uml_dir.join("m1/mconsole"), std::time::Duration::from_secs(5)).unwrap();
    assert!(mc.command("version").unwrap().contains("6.1"));
    // Hot-plugging a vector NIC is accepted; a malformed one is refused.
    let sock = data.path().join("sw.sock");
    mc.command(&format!("config vec0:transport=bess,dst={}", sock.display())).unwrap();
    let err = mc.command("config vec1=nonsense").unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    mc.command("halt").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while uml.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "UML did not halt");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // UML runs as several processes: the whole group must be gone.
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(uml.id() as i32), nix::sys::signal::Signal::SIGKILL);
    assert!(eventually(5, || processes_matching(&uml_dir.to_string_lossy()).is_empty()), "no UML process left");
}

#[test]
fn the_guest_agent_runs_commands_over_a_serial_line() {
    use clonet::host::agent::{encode_exec, parse_line, AgentMsg};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let data = tempfile::tempdir().unwrap();
    assert!(clonet(data.path()).args(["image", "build"]).status().unwrap().success());
    let img = data.path().join("images/uml-busybox.img");
    let (host_end, guest_end) = UnixStream::pair().unwrap();
    let mut uml = Command::new("linux.uml")
        .arg(format!("ubd0={},{}", data.path().join("a.cow").display(), img.display()))
        .args(["root=/dev/ubda", "rw", "init=/init", "mem=64M", "con0=null,fd:1", "con=null", "quiet"])
        .args(["ssl=null", "ssl1=fd:0", "clonet.agent=ttyS1", "clonet.selftest=hold"])
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(guest_end)))
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    host_end.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut lines = BufReader::new(host_end.try_clone().unwrap()).lines();
    let mut writer = host_end;
    let mut next = || parse_line(&lines.next().expect("a line").expect("read")).expect("a valid line");
    assert_eq!(next(), AgentMsg::Hello { version: 1 });
    let mut run = |id: u64, secs: u64, script: &str, stdin: &[u8]| {
        writer.write_all(encode_exec(id, secs, script, stdin, 1 << 20).as_bytes()).unwrap();
        match next() {
            AgentMsg::Result { id: got, output } => {
                assert_eq!(got, id);
                output
            }
            other => panic!("{other:?}"),
        }
    };
    let o = run(1, 10, "echo hi; echo err >&2; exit 3", b"");
    assert_eq!((o.status, o.stdout.as_slice(), o.stderr.as_slice()), (3, &b"hi\n"[..], &b"err\n"[..]));
    assert_eq!(run(2, 10, "printf '\\000\\377\\001'", b"").stdout, vec![0, 255, 1], "binary-safe");
    let big = run(3, 30, "seq 1 30000", b"").stdout;
    let expected: String = (1..=30000).map(|i| format!("{i}\n")).collect();
    assert!(big == expected.as_bytes(), "large output intact ({} bytes)", big.len());
    assert_eq!(run(4, 10, "wc -c", b"12345").stdout, b"5\n");
    assert_eq!(run(5, 1, "sleep 5", b"").status, 137, "the guest kills a command past its time");
    assert_eq!(run(6, 10, "hostname", b"").status, 0, "the agent goes on after a timeout");
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(uml.id() as i32), nix::sys::signal::Signal::SIGKILL);
    let _ = uml.wait();
}
