//! Load on one lab: 50 control clients running 1,000 execs between them
//! while 5 GUI pages ask for the lab's state over their WebSockets. No
//! deadlock, every request answered correctly, and the lab's memory stays
//! bounded.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const NODES: usize = 10;
const CLIENTS: usize = 50;
const EXECS_PER_CLIENT: usize = 20;
const PAGES: usize = 5;

/// The lab process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn fifty_clients_five_pages_and_a_thousand_execs_are_all_answered() {
    let sb = Sandbox::new();
    let script = format!(
        "let sw = lan(\"sw\");\nfor i in 0..{NODES} {{ link(node(`n${{i}}`), sw, #{{ ip: `10.7.0.${{i + 1}}/24` }}); }}\n"
    );
    let lab = serve(&sb, "load", &script, true);
    let (addr, token) = gui_address(&lab);
    let before = rss_kib(lab.child.id());
    let started = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pages: Vec<_> = (0..PAGES)
        .map(|_| {
            let (addr, token, done) = (addr.clone(), token.clone(), done.clone());
            std::thread::spawn(move || {
                let mut ws = control_websocket(&addr, &token);
                let mut answered = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let info = ws_request(&mut ws, answered + 1, json!({ "op": "lab_info" }));
                    assert_eq!(info["name"], "load", "{info}");
                    answered += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                answered
            })
        })
        .collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let socket = lab.socket.clone();
            std::thread::spawn(move || {
                let mut raw = Raw::connect(&socket);
                let mut seen = Vec::new();
                for e in 0..EXECS_PER_CLIENT {
                    let (id, node) = (e as u64 + 1, format!("n{}", (c + e) % NODES));
                    let word = format!("c{c}e{e}");
                    let request = json!({ "id": id, "command": { "op": "exec", "node": node, "request": {
                        "argv": ["sh", "-c", format!("echo {word} $(hostname)")], "stdin": [],
                        "timeout": { "secs": 60, "nanos": 0 } } } });
                    raw.send(&request.to_string());
                    let answer = raw.answer(id, &mut seen);
                    let out: Vec<u8> = serde_json::from_value(answer["ok"]["stdout"].clone())
                        .unwrap_or_else(|_| panic!("client {c}, exec {e}: {answer}"));
                    assert_eq!(String::from_utf8_lossy(&out), format!("{word} {node}\n"), "client {c}, exec {e}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client got every answer right");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let page_answers: Vec<u64> = pages.into_iter().map(|p| p.join().expect("a page got its answers")).collect();
    let elapsed = started.elapsed();
    let after = rss_kib(lab.child.id());
    println!(
        "{} execs from {CLIENTS} clients in {elapsed:.1?}; pages answered {page_answers:?} times; RSS {before} -> {after} KiB",
        CLIENTS * EXECS_PER_CLIENT
    );
    assert!(page_answers.iter().all(|n| *n > 0), "every page was answered while the execs ran");
    assert!(elapsed < Duration::from_secs(300), "no deadlock: {elapsed:?}");
    assert!(after < before + 256 * 1024, "memory stays bounded: {before} -> {after} KiB");
    drop(lab);
    assert_nothing_left(&sb);
}
