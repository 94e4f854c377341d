//! A property test of the control protocol: random command JSON, some of
//! it well-formed and in range, much of it not, sent through a lab's real
//! control socket to a lab on the fake host. Every request must get
//! exactly one answer (a reply or an error), no thread of the lab may
//! die, and the lab must still answer after each one.
//!
//! The generator is seeded, so a failure names the seed and the request
//! that broke the lab, and reruns the same way. A second test makes the
//! fake host panic inside one command: that command fails alone.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::control::SOCKET;
use super::Lab;
use crate::host::fake::FakeHost;
use crate::switch::impair::Rng;

/// Names the commands refer to: mostly a small pool, so that commands act
/// on each other's nodes, LANs and links.
const NAMES: &[&str] = &["a", "b", "c", "sw", "sw2", "a--b", "a:eth0", "s1", "eth0", "eth1"];
const NUMBERS: &[f64] = &[
    0.0,
    1.0,
    -1.0,
    0.5,
    7.0,
    68.0,
    1500.0,
    4094.0,
    4095.0,
    65521.0,
    65536.0,
    4294967295.0,
    18446744073709551615.0,
    -9223372036854775808.0,
    1e300,
];
const OPS: &[&str] = &[
    "add_node",
    "delete_node",
    "stop_node",
    "start_node",
    "add_lan",
    "delete_lan",
    "add_link",
    "join_lan",
    "link_lans",
    "delete_link",
    "unlink",
    "set_link_up",
    "set_impairment",
    "seed",
    "start_capture",
    "stop_capture",
    "set_ip",
    "add_route",
    "exec",
    "ping",
    "node_info",
    "pause_node",
    "snapshot",
    "clone",
    "restore",
    "snapshots",
    "delete_snapshot",
    "save_lab",
    "load_lab",
    "console",
    "counters",
    "fdb",
    "topology",
    "lab_info",
    "no_such_op",
];

struct Gen {
    rng: Rng,
    /// Every path a command names lies under here (a saved lab or a
    /// capture must not land in the source tree).
    scratch: std::path::PathBuf,
}

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.next_u64() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())].clone()
    }

    fn number(&mut self) -> Value {
        let n = self.pick(NUMBERS);
        if n.fract() == 0.0 && n.abs() < 9.2e18 {
            json!(n as i64)
        } else if n == 18446744073709551615.0 {
            json!(u64::MAX)
        } else {
            json!(n)
        }
    }

    /// Any JSON value at all (the wrong type, most of the time).
    fn junk(&mut self, depth: u32) -> Value {
        match self.below(if depth > 2 { 4 } else { 6 }) {
            0 => Value::Null,
            1 => json!(self.chance(50)),
            2 => self.number(),
            3 => json!(["", "\u{0}", "ä", "../..", "x".repeat(300).as_str()][self.below(5)]),
            4 => Value::Array((0..self.below(3)).map(|_| self.junk(depth + 1)).collect()),
            _ => {
                let keys = ["cpus", "mem_mb", "delay", "p", "secs", "access", "trunk", "random", "x"];
                Value::Object(
                    (0..self.below(3)).map(|_| (self.pick(&keys).to_string(), self.junk(depth + 1))).collect(),
                )
            }
        }
    }

    /// A value for `field`, usually of the right shape, sometimes junk.
    fn field(&mut self, field: &str) -> Value {
        if self.chance(10) {
            return self.junk(0);
        }
        match field {
            "name" | "node" | "lan" | "link" | "a" | "b" | "from" | "snapshot" | "target" | "iface" => {
                if self.chance(90) {
                    json!(self.pick(NAMES))
                } else {
                    json!(["", "-x", "a b", "ä", "x".repeat(100).as_str()][self.below(5)])
                }
            }
            "kind" => json!(self.pick(&["ns", "uml", "kvm", "docker"])),
            "ip" | "ip_a" | "ip_b" | "cidr" => {
                json!(self.pick(&["10.0.0.1/24", "10.0.0.2/24", "fd00::1/64", "300.1.1.1/8", "10.0.0.1", "0.0.0.0/0"]))
            }
            "options" => self.options(),
            "vlan" => self.vlan(),
            "impair" => json!({ "a_to_b": self.direction(), "b_to_a": self.direction(), "seed": self.number() }),
            "up" | "paused" | "memory" => json!(self.chance(50)),
            "seed" | "id" | "timeout_ms" | "mem_mb" | "cpus" => self.number(),
            "file" | "dir" => {
                let name = format!("f{}", self.below(4));
                json!(self.scratch.join(name))
            }
            "route" => json!({
                "dst": self.pick(&["default", "10.2.0.0/24", "fd00:2::/64", "10.2.0.1/99"]),
                "via": self.pick(&[json!(null), json!("10.0.0.2"), json!("fd00::2"), json!("nonsense")]),
                "dev": self.pick(&[json!(null), json!("eth0"), json!("")]),
            }),
            "to" => json!(self.pick(&[json!({"node": "b"}), json!({"addr": "10.0.0.2"}), json!({"addr": "::1"})])),
            "source" => json!(self.pick(&[json!({"node": "a"}), json!({"snapshot": "s1"})])),
            "request" => json!({
                "argv": self.pick(&[json!(["true"]), json!([]), json!(["a\u{0}b"]), json!(["sh", "-c", "exit 3"])]),
                "stdin": self.pick(&[json!([]), json!([104, 105]), json!([300])]),
                "timeout": self.duration(),
            }),
            _ => self.junk(0),
        }
    }

    fn duration(&mut self) -> Value {
        let secs = self.pick(&[json!(0), json!(1), json!(3600), json!(3601), json!(u64::MAX), json!(-1)]);
        let nanos = self.pick(&[json!(0), json!(5_000_000), json!(999_999_999), json!(1_000_000_000)]);
        json!({ "secs": secs, "nanos": nanos })
    }

    fn vlan(&mut self) -> Value {
        match self.below(4) {
            0 => Value::Null,
            1 => json!({ "access": self.number() }),
            2 => {
                json!({ "trunk": (0..self.below(4)).map(|_| self.pick(&[1, 10, 10, 4094, 4095, 0])).collect::<Vec<_>>() })
            }
            _ => self.junk(1),
        }
    }

    fn probability(&mut self) -> Value {
        self.pick(&[json!(0.0), json!(0.25), json!(1.0), json!(1.5), json!(-0.1), json!(1e300)])
    }

    fn direction(&mut self) -> Value {
        let mut d = serde_json::Map::new();
        for key in
            ["delay", "jitter", "loss", "duplicate", "reorder", "gap", "corrupt", "rate", "limit", "distribution"]
        {
            if !self.chance(30) {
                continue;
            }
            let v = match key {
                "delay" | "jitter" => self.duration(),
                "loss" => match self.below(3) {
                    0 => json!("none"),
                    1 => json!({ "random": { "p": self.probability(), "correlation": self.probability() } }),
                    _ => json!({ "gilbert": { "p": self.probability(), "r": self.probability(),
                                               "h": self.probability(), "k": self.probability() } }),
                },
                "duplicate" | "reorder" | "corrupt" => self.probability(),
                "distribution" => json!(self.pick(&["uniform", "normal", "pareto", "gauss"])),
                _ => self.number(),
            };
            d.insert(key.to_string(), v);
        }
        Value::Object(d)
    }

    fn options(&mut self) -> Value {
        let mut o = serde_json::Map::new();
        let keys = [
            "mem_mb",
            "cpus",
            "rootfs",
            "accel",
            "image",
            "args",
            "mtu",
            "vlan",
            "name_a",
            "name_b",
            "link_name",
            "impair",
        ];
        for key in keys {
            if !self.chance(20) {
                continue;
            }
            let v = match key {
                "accel" => json!(self.pick(&["kvm", "tcg", "hvf"])),
                "rootfs" | "image" => json!(self.pick(&["", "/nonexistent", "a\u{0}b"])),
                "args" => json!(self.pick(&[json!([]), json!(["x=1"]), json!(["two words"])])),
                "vlan" => self.vlan(),
                "impair" => json!({ "a_to_b": self.direction(), "b_to_a": self.direction() }),
                "name_a" | "name_b" | "link_name" => self.field("name"),
                _ => self.number(),
            };
            o.insert(key.to_string(), v);
        }
        Value::Object(o)
    }

    fn command(&mut self) -> Value {
        let op = self.pick(OPS);
        let fields: &[&str] = match op {
            "add_node" => &["name", "kind", "options"],
            "delete_node" | "stop_node" | "start_node" | "node_info" | "console" => &["node"],
            "add_lan" | "delete_lan" | "delete_snapshot" => &["name"],
            "add_link" => &["a", "b", "ip_a", "ip_b", "options"],
            "join_lan" => &["node", "lan", "ip", "options"],
            "link_lans" => &["a", "b", "vlan"],
            "delete_link" => &["link"],
            "unlink" => &["a", "b"],
            "set_link_up" => &["link", "up"],
            "set_impairment" => &["link", "impair"],
            "seed" => &["seed"],
            "start_capture" => &["target", "file"],
            "stop_capture" => &["id"],
            "set_ip" => &["node", "iface", "cidr"],
            "add_route" => &["node", "route"],
            "exec" => &["node", "request"],
            "ping" => &["from", "to", "timeout_ms"],
            "pause_node" => &["node", "paused"],
            "snapshot" => &["node", "name", "memory"],
            "clone" => &["source", "name", "mem_mb", "cpus"],
            "restore" => &["node", "snapshot"],
            "save_lab" | "load_lab" => &["dir"],
            "fdb" => &["lan"],
            _ => &[],
        };
        let mut c = serde_json::Map::new();
        c.insert("op".into(), json!(op));
        for f in fields {
            // A field is sometimes missing; a stray one sometimes added.
            if self.chance(95) {
                let v = self.field(f);
                c.insert(f.to_string(), v);
            }
        }
        if self.chance(5) {
            let v = self.junk(0);
            c.insert("stray".into(), v);
        }
        Value::Object(c)
    }
}

/// One request line and its answer.
fn ask(reader: &mut BufReader<UnixStream>, writer: &mut UnixStream, line: &str) -> Value {
    writer.write_all(format!("{line}\n").as_bytes()).expect("the lab reads requests");
    let mut answer = String::new();
    reader.read_line(&mut answer).expect("the lab answers");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("an answer that is not JSON ({e}): {answer:?} to {line}"))
}

/// Serves `lab` and connects one raw client to its control socket.
fn served(lab: Lab) -> (super::shared::SharedLab, BufReader<UnixStream>, UnixStream) {
    let shared = lab.serve().expect("served");
    let run_dir = shared.lock().run_dir().expect("run dir").to_path_buf();
    let stream = UnixStream::connect(run_dir.join(SOCKET)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let writer = stream.try_clone().expect("clone");
    (shared, BufReader::new(stream), writer)
}

fn run(seed: u64, requests: u64, scratch: &Path) {
    let lab = Lab::new("fuzz", Box::new(FakeHost::default()), &scratch.join("run"), None).expect("lab");
    let (shared, mut reader, mut writer) = served(lab);
    let mut gen = Gen { rng: Rng::seeded(seed), scratch: scratch.join("files") };
    std::fs::create_dir_all(&gen.scratch).expect("scratch");
    let (mut done, mut refused) = (0, 0);
    for id in 0..requests {
        let command = gen.command();
        let line = json!({ "id": id, "command": command }).to_string();
        let answer = ask(&mut reader, &mut writer, &line);
        assert_eq!(answer["id"], json!(id), "seed {seed}: the answer to {line} is {answer}");
        match (answer.get("ok"), answer.get("error")) {
            (Some(_), None) => done += 1,
            (None, Some(Value::String(e))) => {
                assert!(!e.contains("has ended"), "seed {seed}: the lab died on {line}: {e}");
                refused += 1;
            }
            _ => panic!("seed {seed}: neither a reply nor an error: {answer} to {line}"),
        }
        let info = ask(&mut reader, &mut writer, r#"{"id":0,"command":{"op":"lab_info"}}"#);
        assert!(info.get("ok").is_some(), "seed {seed}: after {line} the lab no longer answers: {info}");
    }
    eprintln!("seed {seed}: {done} done, {refused} refused");
    // Both outcomes were exercised, so the generator is neither all junk nor all good.
    assert!(done > requests / 10 && refused > requests / 10, "seed {seed}: {done} done, {refused} refused");
    drop((reader, writer));
    let mut guard = shared.lock();
    guard.teardown();
    assert!(guard.is_torn_down());
}

#[test]
fn random_commands_are_refused_or_executed_and_the_lab_answers_after_each() {
    for seed in [1, 2, 3] {
        let scratch = tempfile::tempdir().expect("tempdir");
        run(seed, 2000, scratch.path());
    }
}

#[test]
fn a_command_that_panics_fails_alone_and_the_lab_goes_on() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let host = FakeHost::default();
    host.panic_on_exec_of("boom");
    let lab = Lab::new("panics", Box::new(host), &scratch.path().join("run"), None).expect("lab");
    let (shared, mut reader, mut writer) = served(lab);
    let add = r#"{"id":1,"command":{"op":"add_node","name":"a","kind":"ns"}}"#;
    assert!(ask(&mut reader, &mut writer, add).get("ok").is_some());
    let exec = |argv: &str| {
        format!(
            r#"{{"id":2,"command":{{"op":"exec","node":"a","request":{{"argv":["{argv}"],"stdin":[],"timeout":{{"secs":1,"nanos":0}}}}}}}}"#
        )
    };
    let answer = ask(&mut reader, &mut writer, &exec("boom"));
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("failed inside clonet") && answer["kind"] == "host", "{answer}");
    // The same client, and the lab, go on.
    let answer = ask(&mut reader, &mut writer, &exec("true"));
    assert_eq!(answer["ok"]["status"], 0, "{answer}");
    let info = ask(&mut reader, &mut writer, r#"{"id":3,"command":{"op":"lab_info"}}"#);
    assert_eq!(info["ok"]["nodes"], 1, "{info}");
    drop((reader, writer));
    shared.teardown();
}
