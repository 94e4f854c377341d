//! The hidden subcommands clonet runs as itself, inside the namespaces of
//! `ns` nodes and between TAPs: `__ns-init`, `__ns-enter`,
//! `__tap-forward`. The library does the work; these only pass the
//! arguments on.
//!
//! Owns: their argument shapes. Must not touch: anything else (they run
//! in a node's namespaces, with the node's environment).
use std::path::Path;

use clonet::host::helpers::{machine_main, ns_enter_main, ns_init_main, RootLayers};
use clonet::host::split_root::SplitPlan;

/// `__ns-init [--split-plan JSON] [--binds JSON] [--cgroup PROCS]… HOSTNAME HOSTS [LOWER UPPER WORK MERGED]`:
/// a node's init; the JSON is the engine's plan for a root in a user
/// namespace, and the host paths shown in the node; the node's control
/// groups, joined first.
pub fn ns_init(
    hostname: &str,
    hosts: &Path,
    root: &[String],
    split_plan: Option<&str>,
    binds: Option<&str>,
    cgroups: &[std::path::PathBuf],
) -> ! {
    // First, so the node's init (forked below) is counted in its groups.
    if let Err(e) = clonet::host::cgroup::join(cgroups) {
        println!("error: joining the node's control group: {e}");
        std::process::exit(clonet::host::helpers::HELPER_FAILED)
    }
    let binds: Vec<clonet::vocab::Bind> = match binds.map(serde_json::from_str).transpose() {
        Ok(binds) => binds.unwrap_or_default(),
        Err(e) => {
            println!("error: reading --binds: {e}");
            std::process::exit(clonet::host::helpers::HELPER_FAILED)
        }
    };
    let split: Option<SplitPlan> = match split_plan.map(serde_json::from_str).transpose() {
        Ok(plan) => plan,
        Err(e) => {
            println!("error: reading --split-plan: {e}");
            std::process::exit(clonet::host::helpers::HELPER_FAILED)
        }
    };
    let layers = match root {
        [lower, upper, work, merged] => {
            Some(RootLayers { lower: lower.clone(), upper: upper.into(), work: work.into(), merged: merged.into() })
        }
        _ => None,
    };
    ns_init_main(hostname, hosts, layers, split, &binds)
}

/// `__ns-enter PID [--cwd DIR] [--user U] [--cgroup PROCS]… -- ARGV`: runs a command in a
/// node's namespaces.
pub fn ns_enter(
    pid: i32,
    argv: &[String],
    cwd: Option<String>,
    user: Option<String>,
    cgroups: &[std::path::PathBuf],
) -> ! {
    if let Err(e) = clonet::host::cgroup::join(cgroups) {
        eprintln!("clonet: joining the node's control group: {e}");
        std::process::exit(clonet::host::helpers::HELPER_FAILED)
    }
    ns_enter_main(pid, argv, &clonet::host::helpers::RunAs { cwd, user })
}

/// `__machine [--own DIR]… [--see FILE]… -- PROGRAM ARGS…`: a machine as
/// the init of its own PID namespace, unprivileged when clonet is root.
pub fn machine(own: Vec<std::path::PathBuf>, see: Vec<std::path::PathBuf>, argv: &[String]) -> ! {
    machine_main(&clonet::host::machine_view::MachineView { own, see }, argv)
}

/// `__tap-forward PID_A PID_B OWNER`: the benchmark's TAP-to-TAP baseline.
pub fn tap_forward(pid_a: i32, pid_b: i32, owner: i32) -> ! {
    clonet::host::tapfwd::tap_forward_main(pid_a, pid_b, owner)
}
