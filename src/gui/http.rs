//! What the GUI server accepts, decided without I/O: the request head,
//! the routes, and the checks every request passes (the address it was
//! sent to, the page it came from, the access token).
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

    /// The value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
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
/// loopback name, a browser page that sent it is one of ours, and it
/// carries the token (in the query, or the cookie the page set).
pub fn authorize(head: &Head, port: u16, token: &str) -> Result<(), Refusal> {
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
    let given = head.query.get("token").map(String::as_str).or_else(|| head.cookie(COOKIE));
    match given {
        Some(t) if same_secret(t, token) => Ok(()),
        _ => Err(Refusal::Unauthorized),
    }
}

/// The cookie the page sets, so its scripts and styles need no token in
/// their URLs.
pub const COOKIE: &str = "clonet_token";

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
    fn heads_queries_and_cookies_are_parsed() {
        let h = head("GET /capture?target=a--b&seconds=5&x=%41+b HTTP/1.1\nHost: 127.0.0.1:8000\nCookie: a=1; clonet_token=s3cret\n\n");
        assert_eq!(h.path, "/capture");
        assert_eq!(h.query["target"], "a--b");
        assert_eq!(h.query["x"], "A b");
        assert_eq!(h.cookie(COOKIE), Some("s3cret"));
        assert!(!h.wants_websocket());
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n").is_none(), "incomplete");
        assert!(parse_head(b"\x00\x01garbage\r\n\r\n").is_none());
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn only_loopback_names_our_pages_and_the_token_get_in() {
        let ok = head("GET /?token=T0K HTTP/1.1\nHost: 127.0.0.1:9\n\n");
        assert_eq!(authorize(&ok, 9, "T0K"), Ok(()));
        let by_cookie = head("GET /app.js HTTP/1.1\nHost: localhost:9\nCookie: clonet_token=T0K\n\n");
        assert_eq!(authorize(&by_cookie, 9, "T0K"), Ok(()));
        let wrong = head("GET /?token=T0X HTTP/1.1\nHost: 127.0.0.1:9\n\n");
        assert_eq!(authorize(&wrong, 9, "T0K"), Err(Refusal::Unauthorized));
        let missing = head("GET / HTTP/1.1\nHost: 127.0.0.1:9\n\n");
        assert_eq!(authorize(&missing, 9, "T0K"), Err(Refusal::Unauthorized));
        let rebound = head("GET /?token=T0K HTTP/1.1\nHost: evil.example:9\n\n");
        assert!(matches!(authorize(&rebound, 9, "T0K"), Err(Refusal::Forbidden(_))));
        let other_port = head("GET /?token=T0K HTTP/1.1\nHost: 127.0.0.1:10\n\n");
        assert!(matches!(authorize(&other_port, 9, "T0K"), Err(Refusal::Forbidden(_))));
        let cross = head("GET /ws?token=T0K HTTP/1.1\nHost: 127.0.0.1:9\nOrigin: http://evil.example\n\n");
        assert!(matches!(authorize(&cross, 9, "T0K"), Err(Refusal::Forbidden(_))));
        let same =
            head("GET /ws?token=T0K HTTP/1.1\nHost: 127.0.0.1:9\nOrigin: http://127.0.0.1:9\nUpgrade: websocket\n\n");
        assert_eq!(authorize(&same, 9, "T0K"), Ok(()));
        assert!(same.wants_websocket());
    }
}
