//! `clonet image`: the busybox guest image is built without root from
//! Debian's busybox-static, cached, and boots under User-Mode Linux with
//! its base left untouched.
mod common;
use common::*;

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
