//! What the GUI server accepts, decided without I/O: the request head,
//! the routes, and the checks every request passes (the address it was
//! sent to, the page it came from, the access token where the lab is
//! reached).
use std::collections::HashMap;

/// The parts of a request head the server looks at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Whether the client asks to switch to a WebSocket.
    pub fn wants_websocket(&self) -> bool {
        self.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    }

    /// The subprotocols a WebSocket handshake offers.
    pub fn subprotocols(&self) -> impl Iterator<Item = &str> {
        self.header("sec-websocket-protocol").unwrap_or_default().split(',').map(str::trim).filter(|p| !p.is_empty())
    }

    /// The access token the request carries: in the [`TOKEN_HEADER`]
    /// header, or, in a WebSocket handshake (a browser's WebSocket can set
    /// no header of its own), as a subprotocol after [`TOKEN_SUBPROTOCOL`].
    /// Never in a cookie: a browser sends the cookies of 127.0.0.1 to every
    /// port there, so to any other local user's server too. Nor in the URL,
    /// which browsers keep in their history.
    pub fn token(&self) -> Option<&str> {
        self.header(TOKEN_HEADER).or_else(|| self.subprotocols().find_map(|p| p.strip_prefix(TOKEN_SUBPROTOCOL)))
    }
}

/// The header a download or a script sends the token in.
pub const TOKEN_HEADER: &str = "x-clonet-token";
/// The subprotocol the page's WebSockets ask for, named back by the server.
pub const SUBPROTOCOL: &str = "clonet";
/// The prefix of the second subprotocol they offer: the token after it.
pub const TOKEN_SUBPROTOCOL: &str = "clonet-token.";

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Page,
    Script,
    Style,
    /// A pcap download.
    Capture,
    /// The WebSocket relayed to the control socket.
    Control,
    /// The WebSocket relayed to a node's console.
    Console,
    NotFound,
}

impl Route {
    pub fn of(head: &Head) -> Route {
        match (head.path.as_str(), head.wants_websocket()) {
            ("/", false) => Route::Page,
            ("/app.js", false) => Route::Script,
            ("/style.css", false) => Route::Style,
            ("/capture", false) => Route::Capture,
            ("/ws", true) => Route::Control,
            ("/console", true) => Route::Console,
            _ => Route::NotFound,
        }
    }

    /// Whether the route reaches the lab, and so needs the token. The page,
    /// its script and its style are the same for every lab and hold no
    /// secret; the browser loads them with no token, since it has none to
    /// send: the URL clonet prints holds it in its fragment, which browsers
    /// never send, and the page's script takes it from there.
    pub fn needs_token(self) -> bool {
        matches!(self, Route::Capture | Route::Control | Route::Console)
    }
}

/// Decodes `%XX` and `+` in a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a request head (everything up to the blank line). `None` if it
/// is not a complete, well-formed HTTP/1.x head.
pub fn parse_head(buf: &[u8]) -> Option<Head> {
    let mut raw = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut raw);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let target = req.path?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_string()))
        .collect();
    Some(Head { method: req.method?.to_string(), path: path.to_string(), query, headers })
}

/// Why a request is refused, with its HTTP status.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Sent to another name than 127.0.0.1 / localhost and our port (DNS
    /// rebinding), or from a page of another origin.
    Forbidden(&'static str),
    /// No token, or a wrong one.
    Unauthorized,
}

impl Refusal {
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Refusal::Forbidden(_) => (403, "Forbidden"),
            Refusal::Unauthorized => (401, "Unauthorized"),
        }
    }
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The checks every request passes: it was sent to this server by its
/// loopback name, a browser page that sent it is one of ours, and, if it
/// reaches the lab, it carries the token.
pub fn authorize(head: &Head, route: Route, port: u16, token: &str) -> Result<(), Refusal> {
    let ours = [format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    match head.header("host") {
        Some(h) if ours.iter().any(|o| o == h) => {}
        _ => return Err(Refusal::Forbidden("this server answers only at 127.0.0.1 or localhost")),
    }
    if let Some(origin) = head.header("origin") {
        if !ours.iter().any(|o| origin == format!("http://{o}")) {
            return Err(Refusal::Forbidden("requests from other pages are refused"));
        }
    }
    if !route.needs_token() {
        return Ok(());
    }
    match head.token() {
        Some(t) if same_secret(t, token) => Ok(()),
        _ => Err(Refusal::Unauthorized),
    }
}

/// A response with a body, as bytes.
pub fn response(status: u16, reason: &str, content_type: &str, extra: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.replace('\n', "\r\n").as_bytes()).expect("a complete head")
    }

    #[test]
    fn heads_and_queries_are_parsed() {
        let h = head(
            "GET /capture?target=a--b&seconds=5&x=%41+b HTTP/1.1\nHost: 127.0.0.1:8000\nX-Clonet-Token: s3cret\n\n",
        );
        assert_eq!(h.path, "/capture");
        assert_eq!(h.query["target"], "a--b");
        assert_eq!(h.query["x"], "A b");
        assert_eq!(h.token(), Some("s3cret"));
        assert_eq!(Route::of(&h), Route::Capture);
        assert!(!h.wants_websocket());
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n").is_none(), "incomplete");
        assert!(parse_head(b"\x00\x01garbage\r\n\r\n").is_none());
        assert_eq!(percent_decode("100%"), "100%");
        let ws = head("GET /ws HTTP/1.1\nUpgrade: websocket\nSec-WebSocket-Protocol: clonet, clonet-token.T0K\n\n");
        assert_eq!(ws.subprotocols().collect::<Vec<_>>(), ["clonet", "clonet-token.T0K"]);
        assert_eq!((ws.token(), Route::of(&ws)), (Some("T0K"), Route::Control));
        assert_eq!(Route::of(&head("GET /ws HTTP/1.1\n\n")), Route::NotFound, "/ws is a WebSocket only");
    }

    #[test]
    fn only_loopback_names_our_pages_and_the_token_get_in() {
        let check = |text: &str| {
            let h = head(text);
            authorize(&h, Route::of(&h), 9, "T0K")
        };
        assert_eq!(check("GET /capture?target=x HTTP/1.1\nHost: 127.0.0.1:9\nX-Clonet-Token: T0K\n\n"), Ok(()));
        assert_eq!(
            check("GET /capture HTTP/1.1\nHost: 127.0.0.1:9\nX-Clonet-Token: T0X\n\n"),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(check("GET /capture HTTP/1.1\nHost: localhost:9\n\n"), Err(Refusal::Unauthorized));
        // The token is taken from no cookie and no URL.
        assert_eq!(
            check("GET /capture HTTP/1.1\nHost: 127.0.0.1:9\nCookie: clonet_token=T0K\n\n"),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(check("GET /capture?token=T0K HTTP/1.1\nHost: 127.0.0.1:9\n\n"), Err(Refusal::Unauthorized));
        // The page itself needs none, but the loopback name and our origin all the same.
        assert_eq!(check("GET / HTTP/1.1\nHost: 127.0.0.1:9\n\n"), Ok(()));
        assert_eq!(check("GET /app.js HTTP/1.1\nHost: localhost:9\n\n"), Ok(()));
        assert!(matches!(check("GET / HTTP/1.1\nHost: evil.example:9\n\n"), Err(Refusal::Forbidden(_))));
        assert!(matches!(check("GET / HTTP/1.1\nHost: 127.0.0.1:10\n\n"), Err(Refusal::Forbidden(_))));
        let ws = "GET /ws HTTP/1.1\nHost: 127.0.0.1:9\nUpgrade: websocket\nSec-WebSocket-Protocol: clonet, clonet-token.T0K\n";
        assert_eq!(check(&format!("{ws}Origin: http://127.0.0.1:9\n\n")), Ok(()));
        assert!(matches!(check(&format!("{ws}Origin: http://evil.example\n\n")), Err(Refusal::Forbidden(_))));
        assert!(matches!(check(&format!("{ws}Origin: http://127.0.0.1:10\n\n")), Err(Refusal::Forbidden(_))));
        let wrong = "GET /console?node=a HTTP/1.1\nHost: 127.0.0.1:9\nUpgrade: websocket\nSec-WebSocket-Protocol: clonet, clonet-token.T0X\n\n";
        assert_eq!(check(wrong), Err(Refusal::Unauthorized));
    }
}
