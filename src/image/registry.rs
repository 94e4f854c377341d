//! Pulling images through the OCI distribution API: the manifest (or the
//! host's platform's, from an index), the config and the layers of
//! `registry/repository:tag`, anonymously or with the credentials of the
//! usual auth files, through a bearer token when the registry asks for
//! one. Loopback registries are spoken to over plain HTTP (a test's
//! `docker-registry` on 127.0.0.1), every other over HTTPS.
//!
//! Every blob is checked against its digest (`oci.rs`); manifests fetched
//! by digest are too. Owns: the HTTP exchange. Must not touch: the cache.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::oci::{digest_of, Fetched, ImageRef, LayerSource, OciError, RunConfig};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest or config taken from a registry.
const MAX_JSON: u64 = 4 << 20;

/// Whether `registry` (`host[:port]`) is this machine.
fn loopback(registry: &str) -> bool {
    let host =
        registry
            .rsplit_once(':')
            .map_or(registry, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { registry });
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// The base URL of a registry's API.
fn base_url(registry: &str) -> String {
    let host = if registry == "docker.io" { "registry-1.docker.io" } else { registry };
    let scheme = if loopback(registry) { "http" } else { "https" };
    format!("{scheme}://{host}/v2")
}

/// `user:password` for `registry` from the usual auth files: Podman's
/// (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`) and Docker's (`~/.docker/config.json`).
pub fn credentials(registry: &str) -> Option<String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut files: Vec<PathBuf> = Vec::new();
    files.extend(std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from));
    files.extend(std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("containers/auth.json")));
    files.extend(home.as_ref().map(|h| h.join(".config/containers/auth.json")));
    files.extend(home.as_ref().map(|h| h.join(".docker/config.json")));
    let keys = if registry == "docker.io" {
        vec!["docker.io".to_string(), "https://index.docker.io/v1/".to_string(), "registry-1.docker.io".to_string()]
    } else {
        vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")]
    };
    for f in files {
        let Ok(text) = std::fs::read(&f) else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else { continue };
        for k in &keys {
            if let Some(auth) = v["auths"][k]["auth"].as_str() {
                use base64::Engine;
                if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(auth) {
                    if let Ok(s) = String::from_utf8(b) {
                        return Some(s);
                    }
                }
            }
        }
    }
    None
}

/// The `key="value"` parameters of a `WWW-Authenticate` challenge.
pub fn challenge_params(header: &str) -> Option<(String, Vec<(String, String)>)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.push((k.trim().to_ascii_lowercase(), v.to_string()));
        rest = tail.trim_start_matches([',', ' ']);
    }
    Some((scheme.to_ascii_lowercase(), params))
}

/// A session with one registry: its agent and the authorization it gave.
struct Session {
    agent: ureq::Agent,
    base: String,
    registry: String,
    repository: String,
    authorization: Option<String>,
}

impl Session {
    fn new(registry: &str, repository: &str) -> Session {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(120))
            .redirects(5)
            .build();
        Session {
            agent,
            base: base_url(registry),
            registry: registry.into(),
            repository: repository.into(),
            authorization: None,
        }
    }

    /// GET `path` (under /v2/REPO/), answering an authorization challenge
    /// once: the first one, or one for a token that expired during a long
    /// pull (a new token is asked for the same scope).
    fn get(&mut self, path: &str, accept: Option<&str>) -> Result<ureq::Response, OciError> {
        let url = format!("{}/{}/{path}", self.base, self.repository);
        let mut answered = false;
        for _ in 0..2 {
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(auth) = &self.authorization {
                req = req.set("Authorization", auth);
            }
            match req.call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if !answered => {
                    answered = true;
                    let challenge = r.header("www-authenticate").unwrap_or("").to_string();
                    self.authorization = Some(self.authorize(&challenge)?);
                }
                Err(ureq::Error::Status(401, _)) => break,
                Err(ureq::Error::Status(code, r)) => {
                    let body = r.into_string().unwrap_or_default();
                    let what = if code == 404 { "not found".to_string() } else { format!("HTTP {code}") };
                    return Err(OciError::Registry(format!(
                        "{}/{}: {path}: {what} {}",
                        self.registry,
                        self.repository,
                        body.chars().take(200).collect::<String>().trim()
                    )));
                }
                Err(e) => return Err(OciError::Registry(format!("{}: {e}", self.registry))),
            }
        }
        Err(OciError::Registry(format!("{}: access denied (check the credentials in your auth file)", self.registry)))
    }

    /// The `Authorization` a challenge asks for: Basic with the user's
    /// credentials, or a Bearer token from the realm (anonymous if none).
    fn authorize(&self, challenge: &str) -> Result<String, OciError> {
        use base64::Engine;
        let creds = credentials(&self.registry);
        let (scheme, params) = challenge_params(challenge).ok_or_else(|| {
            OciError::Registry(format!("{}: asks for authorization it does not describe", self.registry))
        })?;
        if scheme == "basic" {
            let c = creds.ok_or_else(|| {
                OciError::Registry(format!("{}: needs credentials (none in the auth files)", self.registry))
            })?;
            return Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(c)));
        }
        let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
        let realm = get("realm")
            .ok_or_else(|| OciError::Registry(format!("{}: a bearer challenge without realm", self.registry)))?;
        if !(realm.starts_with("https://") || (realm.starts_with("http://") && loopback(&self.registry))) {
            return Err(OciError::Registry(format!(
                "{}: refusing a token realm that is not HTTPS: {realm}",
                self.registry
            )));
        }
        let scope = get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut req = self.agent.get(&realm).query("scope", &scope);
        if let Some(service) = get("service") {
            req = req.query("service", &service);
        }
        if let Some(c) = creds {
            req = req.set("Authorization", &format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(c)));
        }
        let reply = req.call().map_err(|e| OciError::Registry(format!("{}: token: {e}", self.registry)))?;
        let v: serde_json::Value = serde_json::from_reader(reply.into_reader().take(MAX_JSON))
            .map_err(|e| OciError::Registry(format!("{}: token: {e}", self.registry)))?;
        let token = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| OciError::Registry(format!("{}: no token in the answer", self.registry)))?;
        Ok(format!("Bearer {token}"))
    }

    fn json(&mut self, path: &str, accept: Option<&str>, digest: Option<&str>) -> Result<(Vec<u8>, String), OciError> {
        let r = self.get(path, accept)?;
        let media = r.content_type().to_string();
        let mut bytes = Vec::new();
        r.into_reader()
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| OciError::Registry(format!("{path}: {e}")))?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(OciError::Registry(format!("{path}: larger than 4 MiB")));
        }
        if let Some(d) = digest {
            let got = digest_of(&bytes);
            if got != d {
                return Err(OciError::Mismatch { what: path.into(), digest: d.into(), got });
            }
        }
        Ok((bytes, media))
    }
}

fn is_index(media: &str, bytes: &[u8]) -> bool {
    media.contains("index") || media.contains("manifest.list") || {
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
        v.get("manifests").is_some()
    }
}

/// An image's config and layers from a registry. Layers are read when
/// unpacked, straight from the network, and checked there.
pub fn fetch(reference: &ImageRef, _scratch: &Path) -> Result<Fetched, OciError> {
    let ImageRef::Registry { registry, repository, reference: wanted } = reference else {
        return Err(OciError::Bad("not a registry reference".into()));
    };
    let mut s = Session::new(registry, repository);
    let by_digest = wanted.starts_with("sha256:").then_some(wanted.as_str());
    let (mut bytes, media) = s.json(&format!("manifests/{wanted}"), Some(ACCEPT), by_digest)?;
    if is_index(&media, &bytes) {
        let index = ImageIndex::from_reader(&bytes[..]).map_err(|e| OciError::Registry(format!("index: {e}")))?;
        let arch = super::oci::host_arch();
        let d = index
            .manifests()
            .iter()
            .find(|d| {
                d.platform()
                    .as_ref()
                    .is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
            })
            .ok_or_else(|| {
                OciError::Registry(format!("{registry}/{repository}:{wanted} has no image for linux/{arch}"))
            })?
            .digest()
            .to_string();
        (bytes, _) = s.json(&format!("manifests/{d}"), Some(ACCEPT), Some(&d))?;
    }
    let manifest = ImageManifest::from_reader(&bytes[..]).map_err(|e| OciError::Registry(format!("manifest: {e}")))?;
    let config_digest = manifest.config().digest().to_string();
    let (config_bytes, _) = s.json(&format!("blobs/{config_digest}"), None, Some(&config_digest))?;
    let config =
        ImageConfiguration::from_reader(&config_bytes[..]).map_err(|e| OciError::Registry(format!("config: {e}")))?;
    let diff_ids = super::oci::diff_ids_for(&config, manifest.layers().len())?;
    let session = std::rc::Rc::new(std::cell::RefCell::new(s));
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| {
            let digest = d.digest().to_string();
            let s = session.clone();
            let path = format!("blobs/{digest}");
            LayerSource {
                open: Box::new(move || {
                    let r = s.borrow_mut().get(&path, None).map_err(std::io::Error::other)?;
                    Ok(Box::new(r.into_reader()) as Box<dyn Read>)
                }),
                digest: Some(digest),
                diff_id,
                size: Some(d.size()),
            }
        })
        .collect();
    Ok(Fetched { config_digest, config: RunConfig::from_config(&config), layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry on loopback that hands out tokens `t1`, `t2`, … and
    /// takes only the newest: each token expires when the next one is
    /// given, and the first request of each pull is made to expire.
    fn token_registry() -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
        use std::io::{BufRead, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = issued.clone();
        let realm = format!("http://{addr}/token");
        std::thread::spawn(move || {
            for conn in listener.incoming().take(16) {
                let Ok(mut conn) = conn else { continue };
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut auth = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("authorization: ") {
                        auth = v.trim().to_string();
                    }
                }
                let reply = if request.starts_with("GET /token") {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = format!("{{\"token\":\"t{n}\"}}");
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                } else if auth == format!("bearer t{}", counter.load(Ordering::SeqCst)) && !auth.ends_with("t1") {
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_string()
                } else {
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                };
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        (addr, issued)
    }

    #[test]
    fn a_token_that_expires_during_a_pull_is_renewed_once_and_a_refusal_is_an_error() {
        let (addr, issued) = token_registry();
        let mut session = Session::new(&addr, "lib/img");
        // No token yet: challenged, t1 taken... which the registry no
        // longer accepts (expired): a second challenge is not answered in
        // the same request.
        let e = session.get("manifests/v1", None).unwrap_err().to_string();
        assert!(e.contains("access denied"), "{e}");
        assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The next request: t1 refused, t2 asked for and taken.
        let r = session.get("manifests/v1", None).unwrap();
        assert_eq!(r.into_string().unwrap(), "ok");
        assert_eq!(session.authorization.as_deref(), Some("Bearer t2"));
    }

    #[test]
    fn challenges_give_their_scheme_and_parameters() {
        let (scheme, p) = challenge_params(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(scheme, "bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.docker.io/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:library/alpine:pull".into()));
        assert_eq!(challenge_params("Basic realm=x").unwrap().1, vec![("realm".into(), "x".into())]);
        assert!(challenge_params("garbage").is_none());
    }

    #[test]
    fn loopback_registries_are_plain_http_and_the_rest_https() {
        assert_eq!(base_url("127.0.0.1:5000"), "http://127.0.0.1:5000/v2");
        assert_eq!(base_url("localhost"), "http://localhost/v2");
        assert_eq!(base_url("quay.io"), "https://quay.io/v2");
        assert_eq!(base_url("docker.io"), "https://registry-1.docker.io/v2");
    }

    #[test]
    fn credentials_come_from_the_auth_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("auth.json");
        std::fs::write(&f, r#"{"auths":{"127.0.0.1:5000":{"auth":"dTpw"}}}"#).unwrap();
        std::env::set_var("REGISTRY_AUTH_FILE", &f);
        assert_eq!(credentials("127.0.0.1:5000").as_deref(), Some("u:p"));
        assert_eq!(credentials("quay.io"), None);
        std::env::remove_var("REGISTRY_AUTH_FILE");
    }
}
