//! `mem` and `cpus` of ns nodes (and Kathará's `node[mem]`, `node[cpus]`):
//! a control group per node that its init and every command join, the
//! kernel holding the node to it, the groups gone after the lab, also
//! after a SIGKILL and `clonet clean`; as an ordinary user without a
//! delegated group, the node runs and says why its limits do not hold.
mod common;

use common::*;

/// The control groups clonet made for lab `lab` (any hierarchy).
fn groups_of(lab: &str) -> Vec<String> {
    let out = std::process::Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "4", "-type", "d", "-name"])
        .arg(format!("clonet-{lab}-*"))
        .output()
        .unwrap();
    text(&out.stdout).lines().map(String::from).collect()
}

/// What the first of `files` that each group has holds (v1 or v2 names).
fn read_in(groups: &[String], files: &[&str]) -> Vec<String> {
    groups
        .iter()
        .filter_map(|g| files.iter().find_map(|f| std::fs::read_to_string(format!("{g}/{f}")).ok()))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn an_ns_nodes_memory_and_cpus_are_held_by_the_kernel_for_every_process_in_it() {
    require_root();
    let sb = Sandbox::new();
    let out = sb.run_ok(
        "held.rhai",
        r#"
let small = node("small", #{ mem: 32, cpus: 1 });
let free = node("free");
print(`detail ${small.info().detail}`);
// The node's init (PID 1 in it) and a command both sit in its groups.
print(`init ${small.exec("grep -c clonet-held-small /proc/1/cgroup").stdout.trimmed()}`);
print(`exec ${small.exec("grep -c clonet-held-small /proc/self/cgroup").stdout.trimmed()}`);
// dd reads a block of bs bytes into one buffer: that much memory, touched.
let a = small.exec("dd if=/dev/zero of=/dev/null bs=8M count=1 2>&1 | head -c 9");
print(`within ${a.status} ${a.stdout.trimmed()}`);
let b = small.exec(["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]);
print(`beyond ${b.status}`);
let c = free.exec("dd if=/dev/zero of=/dev/null bs=200M count=1 2>&1 | head -c 9");
print(`unlimited ${c.status} ${c.stdout.trimmed()}`);
print(`still ${small.exec("echo alive").stdout.trimmed()}`);
"#,
    );
    assert!(out.contains("detail limits: mem 32 MiB, cpus 1"), "{out}");
    // Both hierarchies on a v1 host (memory and cpu), one on a v2 host.
    let init: u32 = printed(&out, "init")[0].parse().unwrap();
    let exec: u32 = printed(&out, "exec")[0].parse().unwrap();
    assert!(init >= 1 && init == exec, "the init and the command are in the node's groups: {out}");
    assert!(out.contains("within 0 1+0 recor"), "{out}");
    assert!(out.contains("beyond 137"), "200 MiB in a 32 MiB node is killed by the kernel: {out}");
    assert!(out.contains("unlimited 0 1+0 recor"), "a node without limits is not held: {out}");
    assert!(out.contains("still alive"), "the node lives on after one of its commands was killed: {out}");
    assert!(groups_of("held").is_empty(), "groups left: {:?}", groups_of("held"));
    assert_nothing_left(&sb);
}

#[test]
fn a_cpu_quota_is_set_and_the_groups_of_a_killed_lab_go_with_clean() {
    require_root();
    let sb = Sandbox::new();
    let served = serve(&sb, "quota", "let r = node(\"r\", #{ mem: 64, cpus: 2 });\nr.exec(\"true\");\n", false);
    let groups = groups_of("quota");
    assert!(!groups.is_empty(), "the node has control groups");
    let quota = read_in(&groups, &["cpu.cfs_quota_us", "cpu.max"]);
    assert!(
        quota.iter().any(|q| q == "200000" || q == "200000 100000"),
        "2 CPUs of quota per 100 ms period: {quota:?} in {groups:?}"
    );
    let memory = read_in(&groups, &["memory.limit_in_bytes", "memory.max"]);
    assert!(memory.contains(&(64u64 << 20).to_string()), "{memory:?}");
    let mut served = served;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(served.child.id() as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    served.child.wait().unwrap();
    assert!(!groups_of("quota").is_empty(), "a SIGKILL leaves the groups");
    let clean = sb.clonet().arg("clean").output().unwrap();
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    assert!(eventually(5, || groups_of("quota").is_empty()), "clean removes them: {:?}", groups_of("quota"));
    assert_nothing_left(&sb);
}

#[test]
fn kathara_mem_and_cpus_become_the_nodes_limits() {
    require_root();
    let sb = Sandbox::new();
    let lab = sb.dir.path().join("klab");
    std::fs::create_dir_all(&lab).unwrap();
    std::fs::write(lab.join("lab.conf"), "pc1[0]=A\npc1[mem]=48m\npc1[cpus]=0.5\npc2[0]=A\n").unwrap();
    let converted = sb.clonet().arg("convert").arg(&lab).output().unwrap();
    let script = text(&converted.stdout);
    assert!(script.contains("mem: 48, cpus: 1"), "{script}");
    assert!(script.contains("cpus=0.5: 1 (clonet limits ns nodes to whole CPUs)"), "{script}");
    let test = sb.write(
        "klab.rhai",
        &format!(
            "let lab = load_kathara({:?}, #{{ images: \"host\" }});\nprint(`detail ${{get_node(\"pc1\").info().detail}}`);\n",
            lab.display()
        ),
    );
    let out = sb.run(&test);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("detail limits: mem 48 MiB, cpus 1"), "{stdout}");
    assert_nothing_left(&sb);
}

#[test]
fn as_an_ordinary_user_without_a_delegated_group_the_node_runs_and_says_why() {
    let user = UserSandbox::with_subordinate_ids();
    let out = user.run_ok(
        "unheld.rhai",
        "let n = node(\"n\", #{ mem: 32 });\nprint(`detail ${n.info().detail}`);\nprint(`runs ${n.exec(\"echo yes\").stdout.trimmed()}`);\n",
    );
    assert!(out.contains("detail limits: mem 32 MiB not enforced ("), "{out}");
    assert!(out.contains("runs yes"), "{out}");
    user.assert_nothing_left();
}
