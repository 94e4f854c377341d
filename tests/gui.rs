//! The web GUI in a real browser: Debian's headless chromium driven by
//! chromedriver (W3C WebDriver over HTTP), against `clonet serve --gui`.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// One request on the lab's control socket.
fn lab_request(socket: &PathBuf, command: Value) -> Value {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(format!("{}\n", json!({ "id": 1, "command": command })).as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    v["ok"].clone()
}

/// A raw HTTP GET: the whole response.
fn http_get(addr: &str, target: &str, host: &str, extra: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// A raw HTTP GET: the status line.
fn http_status(addr: &str, target: &str, host: &str, extra: &str) -> String {
    http_get(addr, target, host, extra).lines().next().unwrap_or_default().to_string()
}

/// A chromedriver process and one headless chromium session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) must be installed: tools/test.sh installs it");
        let base = format!("http://127.0.0.1:{port}");
        assert!(eventually(20, || ureq::get(&format!("{base}/status")).call().is_ok()), "chromedriver answers");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,800"]
        }}}});
        let reply: Value =
            ureq::post(&format!("{base}/session")).send_json(caps).expect("a browser session").into_json().unwrap();
        let session = reply["value"]["sessionId"].as_str().expect("session id").to_string();
        Browser { driver, base, session }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let reply = match method {
            "GET" => ureq::get(&url).call(),
            _ => ureq::post(&url).send_json(body),
        };
        match reply {
            Ok(r) => r.into_json::<Value>().unwrap()["value"].clone(),
            Err(ureq::Error::Status(code, r)) => {
                panic!("WebDriver {path}: {code} {}", r.into_string().unwrap_or_default())
            }
            Err(e) => panic!("WebDriver {path}: {e}"),
        }
    }

    fn js(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({ "script": script, "args": [] }))
    }

    fn wait_js(&self, what: &str, script: &str) {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if self.js(script) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what} ({script}); page: {}", self.js("return document.body.outerHTML"));
    }

    fn click(&self, css: &str) {
        let found = self.call("POST", "/element", json!({ "using": "css selector", "value": css }));
        let id =
            found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("element id").to_string();
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_gui_draws_the_lab_and_changes_it_from_clicks_in_a_real_browser() {
    let sb = Sandbox::new();
    let lab = serve(
        &sb,
        "web",
        r#"
lab_info(#{ description: "Three hosts", author: "A. Teacher", course: "nets-101" });
let a = node("a"); let b = node("b"); let c = node("c");
link(a, b, #{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24", a_to_b: #{ delay: "20ms" } });
let sw = lan("sw");
link(c, sw, #{ ip: "10.1.0.3/24" });
"#,
        true,
    );
    let (addr, token) = gui_address(&lab);

    // The page, its script and style hold no secret and need no token;
    // no cookie is set.
    let page = http_get(&addr, "/", &addr, "");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(!page.to_ascii_lowercase().contains("set-cookie"), "{page}");
    assert!(page.contains("frame-ancestors 'none'"), "{page}");
    assert!(http_status(&addr, "/app.js", &addr, "").contains("200"));
    // What reaches the lab needs the token, in a header or (WebSocket) a
    // subprotocol; not in a cookie nor the URL. Another Host, another Origin: refused.
    let capture = "/capture?target=nope&seconds=1";
    assert!(
        http_status(&addr, capture, &addr, &format!("X-Clonet-Token: {token}\r\n")).contains("400"),
        "past the token"
    );
    assert!(http_status(&addr, capture, &addr, "X-Clonet-Token: 0000\r\n").contains("401"));
    assert!(http_status(&addr, capture, &addr, "").contains("401"));
    assert!(http_status(&addr, capture, &addr, &format!("Cookie: clonet_token={token}\r\n")).contains("401"));
    assert!(http_status(&addr, &format!("{capture}&token={token}"), &addr, "").contains("401"));
    assert!(http_status(&addr, "/", "evil.example", "").contains("403"));
    let ws_headers = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let offered = |t: &str| format!("{ws_headers}Sec-WebSocket-Protocol: clonet, clonet-token.{t}\r\n");
    assert!(http_status(&addr, "/ws", &addr, &offered("0000")).contains("401"));
    assert!(http_status(&addr, "/ws", &addr, &format!("{ws_headers}Cookie: clonet_token={token}\r\n")).contains("401"));
    let cross = format!("{}Origin: http://evil.example\r\n", offered(&token));
    assert!(http_status(&addr, "/ws", &addr, &cross).contains("403"));
    let mut ws = control_websocket(&addr, &token);
    assert_eq!(ws_request(&mut ws, 1, json!({ "op": "lab_info" }))["name"], json!("web"));
    drop(ws);

    let browser = Browser::start();
    browser.call("POST", "/url", json!({ "url": lab.url }));
    // The page took the token out of the address bar into this tab's
    // storage; no cookie holds it.
    browser.wait_js("the token kept", &format!("return sessionStorage.getItem('clonet-token') === '{token}'"));
    assert_eq!(browser.js("return location.hash + '|' + document.cookie"), json!("|"));
    // Every node and the LAN are drawn, with their kind and state, and the
    // links with their impairment label.
    browser.wait_js("the topology", "return document.querySelectorAll('svg [data-node]').length === 3 && !!document.querySelector('svg [data-lan=\"sw\"].vertex')");
    let kinds = browser.js("return [...document.querySelectorAll('svg [data-node]')].map(n => n.dataset.node + ':' + n.dataset.kind + ':' + n.dataset.state).sort().join(' ')");
    assert_eq!(kinds, json!("a:ns:running b:ns:running c:ns:running"));
    // What the lab says about itself (lab_info, Kathará's LAB_* lines).
    assert_eq!(
        browser.js("return document.getElementById('lab-about').textContent"),
        json!("Three hosts · A. Teacher")
    );
    assert_eq!(
        browser.js("return document.getElementById('lab-about').title"),
        json!("author: A. Teacher\ncourse: nets-101\ndescription: Three hosts")
    );
    assert_eq!(browser.js("return document.querySelector('[data-link=\"a--b\"] text').textContent"), json!("→ 20 ms"));
    assert_eq!(browser.js("return !!document.querySelector('[data-port=\"c:eth0\"][data-lan=\"sw\"]')"), json!(true));
    // Let the layout settle before clicking moving shapes.
    std::thread::sleep(Duration::from_secs(2));

    // Add a link by clicking: link mode, then two nodes.
    browser.click("#link-mode");
    browser.click("svg [data-node=\"b\"]");
    browser.click("svg [data-node=\"c\"]");
    browser.wait_js("the new link drawn", "return !!document.querySelector('svg [data-link=\"b--c\"]')");
    let topo = lab_request(&lab.socket, json!({ "op": "topology" }));
    assert!(topo["links"]["b--c"].is_object(), "the lab has the link: {}", topo["links"]);

    // Set a link down from its panel: the lab has it down, and it is drawn so.
    browser.click("svg [data-link=\"a--b\"] line.hit");
    browser.wait_js("the link's panel", "return !!document.getElementById('down')");
    browser.click("#down");
    browser.wait_js("the link drawn down", "const l = document.querySelector('svg [data-link=\"a--b\"]'); return !!l && l.dataset.up === 'false' && l.classList.contains('down')");
    let topo = lab_request(&lab.socket, json!({ "op": "topology" }));
    assert_eq!(topo["links"]["a--b"]["up"], json!(false));

    // A change made elsewhere (the control socket) shows up by itself.
    lab_request(&lab.socket, json!({ "op": "add_node", "name": "d", "kind": "ns" }));
    browser.wait_js("a node added by another client", "return !!document.querySelector('svg [data-node=\"d\"]')");

    // Impairments from the link's panel: the lab has them, the label shows them.
    browser.click("svg [data-link=\"b--c\"] line.hit");
    browser.wait_js("the new link's panel", "return !!document.getElementById('impair-delay')");
    browser.js("document.getElementById('impair-delay').value = '30'; document.getElementById('impair-loss').value = '2'; return true");
    browser.click("#impair-apply");
    browser.wait_js("the impairment label", "const t = document.querySelector('svg [data-link=\"b--c\"] text'); return !!t && t.textContent === '30 ms, 2% loss'");
    let topo = lab_request(&lab.socket, json!({ "op": "topology" }));
    assert_eq!(topo["links"]["b--c"]["impair"]["a_to_b"]["delay"], json!({ "secs": 0, "nanos": 30_000_000 }));
    assert_eq!(topo["links"]["b--c"]["impair"]["b_to_a"]["loss"]["random"]["p"], json!(0.02));
    // The link's capture button: a 10-second pcap, saved once it is whole
    // (looked at below, while the test goes on).
    browser.click("#capture");

    // A pcap download of a link, fetched as the page's capture button does.
    let magic = browser.js(
        "return fetch('/capture?target=b--c&seconds=1', { headers: { 'X-Clonet-Token': sessionStorage.getItem('clonet-token') } }).then(r => r.arrayBuffer().then(a => r.status + ':' + [...new Uint8Array(a).slice(0, 4)].join(',')))"
    );
    assert_eq!(magic, json!("200:77,60,178,161"), "a pcap file (nanosecond magic, little-endian)");

    // A node's console in the page: a shell in the ns node answers.
    browser.click("svg [data-node=\"a\"]");
    browser.wait_js("the node's panel", "return !!document.getElementById('console-open')");
    browser.click("#console-open");
    std::thread::sleep(Duration::from_millis(500));
    browser.js("const i = document.getElementById('console-in'); i.value = 'echo hello-from-$(hostname)'; i.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); return true");
    browser.wait_js(
        "the console's answer",
        "return document.getElementById('console-out').textContent.includes('hello-from-a')",
    );

    // Delete a node from its panel.
    browser.click("svg [data-node=\"d\"]");
    browser.wait_js("d's panel", "return !!document.getElementById('delete')");
    browser.click("#delete");
    browser.wait_js("d gone", "return !document.querySelector('svg [data-node=\"d\"]')");
    let topo = lab_request(&lab.socket, json!({ "op": "topology" }));
    assert!(topo["nodes"]["d"].is_null(), "the lab no longer has d");

    // The capture button's pcap was saved: at least its 24-byte header.
    browser.wait_js(
        "the capture button's pcap",
        "const c = document.body.dataset.captured || ''; return c.startsWith('b--c:') && Number(c.split(':')[1]) >= 24",
    );

    // The screenshot, kept as a test artifact.
    let png = browser.call("GET", "/screenshot", json!(null));
    let png = base64_decode(png.as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot ({} bytes)", png.len());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("gui.png"), &png).unwrap();

    // One watcher (the page) while it is open, none once the browser is
    // gone: the GUI server lets go of the lab.
    assert_eq!(lab_request(&lab.socket, json!({ "op": "lab_info" }))["watchers"], json!(1));
    drop(browser);
    assert!(
        eventually(10, || lab_request(&lab.socket, json!({ "op": "lab_info" }))["watchers"] == json!(0)),
        "the page's watcher ends with the page"
    );
    let out = sb.clonet().args(["stop", "web"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(lab);
    assert_nothing_left(&sb);
}

/// A lab with nothing in it that needs a process: the GUI is what is tested.
const EMPTY_LAB: &str = "lan(\"sw\");\n";

#[test]
fn a_slow_loris_is_closed_at_its_deadline_while_the_page_and_its_websocket_go_on() {
    let sb = Sandbox::new();
    let lab = serve(&sb, "loris", EMPTY_LAB, true);
    let (addr, token) = gui_address(&lab);
    // A client that sends its request head a byte every 1.3 s (well apart
    // from the 10 s deadline, so no byte is in flight when it is closed)
    // and never ends it: how long until the server closes it, and what it
    // said.
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1300))).unwrap();
            let start = Instant::now();
            let head = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
            let mut bytes = head.bytes().chain(std::iter::repeat(b'a'));
            let mut said = Vec::new();
            while start.elapsed() < Duration::from_secs(20) {
                let _ = s.write_all(&[bytes.next().unwrap()]);
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(0) => return (Some(start.elapsed()), text(&said)),
                    Ok(n) => said.extend_from_slice(&buf[..n]),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => return (Some(start.elapsed()), text(&said)),
                }
            }
            (None, text(&said))
        })
    };
    // Meanwhile a page loads and its WebSocket answers, again and again.
    let mut ws = control_websocket(&addr, &token);
    let mut id = 0;
    while !slow.is_finished() {
        id += 1;
        let started = Instant::now();
        assert!(http_status(&addr, "/", &addr, "").contains("200"));
        assert!(http_status(&addr, "/app.js", &addr, "").contains("200"));
        assert_eq!(ws_request(&mut ws, id, json!({ "op": "lab_info" }))["name"], json!("loris"));
        assert!(started.elapsed() < Duration::from_secs(2), "the page is slow beside the slow client");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (closed_after, said) = slow.join().unwrap();
    let closed_after = closed_after.expect("the slow client is closed (not after 20 s)");
    eprintln!("the slow client was closed after {closed_after:?}, told {:?}", said.lines().next());
    assert!(
        closed_after > Duration::from_secs(8) && closed_after < Duration::from_secs(12),
        "closed at its 10 s deadline, not after {closed_after:?}"
    );
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(id >= 10, "the page was used all along ({id} rounds)");
    // The WebSocket outlived the slow client's deadline: the deadline is the
    // request head's, not the connection's.
    assert_eq!(ws_request(&mut ws, id + 1, json!({ "op": "lab_info" }))["name"], json!("loris"));
    drop(ws);
    let out = sb.clonet().args(["stop", "loris"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(lab);
    assert_nothing_left(&sb);
}

#[test]
fn connections_over_the_ceiling_are_closed_at_once_and_counted() {
    let sb = Sandbox::new();
    let lab = serve(&sb, "flood", EMPTY_LAB, true);
    let (addr, _) = gui_address(&lab);
    // A flood of connections that say nothing, as many as the ceiling. The
    // server accepts in the order of connection, so these hold every slot.
    let flood: Vec<TcpStream> = (0..clonet::gui::MAX_CONNECTIONS).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let start = Instant::now();
    let mut over = TcpStream::connect(&addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut said = String::new();
    let end = over.read_to_string(&mut said);
    assert!(end.is_ok() && start.elapsed() < Duration::from_secs(2), "closed at once, not after {:?}", start.elapsed());
    assert!(said.is_empty() || said.starts_with("HTTP/1.1 503"), "{said}");
    // And counted, on serve's stderr.
    let deadline = Instant::now() + Duration::from_secs(5);
    let counted = std::iter::from_fn(|| lab.log.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok())
        .find(|line| line.contains("web GUI refused a connection"))
        .expect("the refusal is reported");
    assert!(counted.contains("(1 refused so far)"), "{counted}");
    // Once the flood is gone, the page is served again.
    drop(flood);
    assert!(eventually(5, || http_status(&addr, "/", &addr, "").contains("200")), "served again");
    let out = sb.clonet().args(["stop", "flood"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(lab);
    assert_nothing_left(&sb);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}
