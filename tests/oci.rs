//! OCI images as the roots of ns nodes. The test builds a small image
//! itself (busybox, a marker file, a second layer with a whiteout and an
//! opaque directory, `Env`, `WorkingDir` and `Cmd`), and runs it from an
//! OCI layout, from a docker archive, and from Debian's `docker-registry`
//! on 127.0.0.1 (pushed there with `skopeo`).
mod common;
use common::*;

use std::path::{Path, PathBuf};

fn sha(bytes: &[u8]) -> String {
    clonet::image::oci::digest_of(bytes)
}

/// A tar of entries: (path, contents) files, (path, target) symlinks.
fn layer(files: &[(&str, &[u8], u32)], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        // The site belongs to the image's user `web`.
        if p.starts_with("srv/") {
            h.set_uid(1000);
            h.set_gid(1000);
        }
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, p, *data).unwrap();
    }
    for (p, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_cksum();
        b.append_link(&mut h, p, target).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, bytes).unwrap();
    gz.finish().unwrap()
}

/// The test image: its two layer tars (uncompressed) and its config.
fn test_image() -> (Vec<Vec<u8>>, Vec<u8>) {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let tools =
        ["sh", "cat", "ls", "echo", "env", "sleep", "test", "pwd", "id", "ip", "ping", "httpd", "wget", "stat", "head"];
    let links: Vec<(String, String)> = tools.iter().map(|t| (format!("bin/{t}"), "busybox".to_string())).collect();
    let links: Vec<(&str, &str)> = links.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let base = layer(
        &[
            ("bin/busybox", &busybox, 0o755),
            ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/srv:/bin/sh\n", 0o644),
            ("etc/group", b"root:x:0:\nweb:x:1000:\n", 0o644),
            ("etc/marker", b"layer one\n", 0o644),
            ("opt/gone", b"deleted by layer two\n", 0o644),
            ("opt/dir/a", b"a\n", 0o644),
            ("opt/dir/b", b"b\n", 0o644),
            ("srv/index.html", b"served from the image\n", 0o644),
        ],
        &links,
    );
    let top = layer(
        &[
            ("opt/.wh.gone", b"", 0o644),
            ("opt/dir/.wh..wh..opq", b"", 0o644),
            ("opt/dir/c", b"c\n", 0o644),
            ("etc/marker2", b"layer two\n", 0o644),
        ],
        &[],
    );
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "GREETING=hello from the image"],
            "WorkingDir": "/srv",
            "User": "web",
            "Cmd": ["httpd", "-f", "-p", "8080", "-h", "/srv"]
        },
        "rootfs": {"type": "layers", "diff_ids": [sha(&base), sha(&top)]}
    });
    (vec![base, top], serde_json::to_vec(&config).unwrap())
}

/// Writes the image as an OCI layout in `dir`, tagged `tag`; returns the
/// compressed layer blobs' paths.
fn write_layout(dir: &Path, tag: &str) -> Vec<PathBuf> {
    write_layout_as(dir, tag, Compression::Gzip)
}

#[derive(Clone, Copy, PartialEq)]
enum Compression {
    Gzip,
    /// Each layer as two zstd frames with a skippable frame between, as
    /// zstd:chunked layers are.
    ZstdFrames,
}

fn zstd_frames(bytes: &[u8]) -> Vec<u8> {
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};
    let (a, b) = bytes.split_at(bytes.len() / 2);
    let mut out = compress_to_vec(a, CompressionLevel::Fastest);
    // A skippable frame: magic 0x184D2A5?, length, that many bytes.
    out.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(b"skip");
    out.extend(compress_to_vec(b, CompressionLevel::Fastest));
    out
}

fn write_layout_as(dir: &Path, tag: &str, compression: Compression) -> Vec<PathBuf> {
    let (layers, config) = test_image();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let mut layer_descs = Vec::new();
    let mut paths = Vec::new();
    for l in &layers {
        let (blob, media) = match compression {
            Compression::Gzip => (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip"),
            Compression::ZstdFrames => (zstd_frames(l), "application/vnd.oci.image.layer.v1.tar+zstd"),
        };
        let d = put(&blob);
        paths.push(blobs.join(&d[7..]));
        layer_descs.push(serde_json::json!({"mediaType": media, "digest": d, "size": blob.len()}));
    }
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layer_descs
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    paths
}

/// Writes the image as `docker save` does (uncompressed layer tars).
fn write_docker_archive(file: &Path) {
    let (layers, config) = test_image();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes).unwrap();
    };
    let config_name = format!("{}.json", &sha(&config)[7..]);
    add(&config_name, &config);
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let n = format!("layer{i}/layer.tar");
        add(&n, l);
        names.push(n);
    }
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": ["test/busy:1"], "Layers": names}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    std::fs::write(file, b.into_inner().unwrap()).unwrap();
}

/// Rhai that checks one node of the image: files, whiteouts, env, the
/// main program (httpd as user web, in /srv), and that a second node
/// shares the layers.
fn checks(image: &str) -> String {
    format!(
        r#"
let a = node("a", #{{ image: "{image}" }});
let b = node("b", #{{ image: "{image}" }});
link(a, b, #{{ ip_a: "10.0.0.1/24", ip_b: "10.0.0.2/24" }});
print(`marker ${{a.exec("cat /etc/marker /etc/marker2").stdout}}`);
print(`gone ${{a.exec("test -e /opt/gone && echo present || echo whited-out").stdout.trimmed()}}`);
print(`opaque ${{a.exec("ls /opt/dir").stdout.trimmed()}}`);
print(`env ${{a.exec("echo $GREETING").stdout.trimmed()}}`);
print(`host-free ${{a.exec("test -e /usr/bin/apt && echo host || echo image").stdout.trimmed()}}`);
if !wait_until(|| b.exec("wget -q -O - http://10.0.0.1:8080/index.html").stdout.contains("served"), 10000) {{ throw "httpd"; }}
print(`served ${{b.exec("wget -q -O - http://10.0.0.1:8080/index.html").stdout.trimmed()}}`);
print(`user ${{a.exec("for p in /proc/[0-9]*; do case \"$(head -c 5 $p/cmdline)\" in httpd) stat -c %u $p;; esac; done").stdout.trimmed()}}`);
print(`owner ${{a.exec("stat -c %u:%g /srv/index.html").stdout.trimmed()}}`);
print(`detail ${{a.info().detail}}`);
print(`pwd ${{a.exec("pwd").stdout.trimmed()}} ${{a.exec("pwd", #{{ cwd: "/etc" }}).stdout.trimmed()}}`);
print(`as ${{a.exec("id -u").stdout.trimmed()}} ${{a.exec(["id", "-u"], #{{ user: "web" }}).stdout.trimmed()}}`);
let brief = node("brief", #{{ image: "{image}", cmd: ["sh", "-c", "echo bye; exit 3"] }});
if !wait_until(|| !brief.info().running, 10000) {{ throw "a node whose main program ends is not stopped"; }}
print(`brief ${{brief.info().detail}}`);
a.exec("echo written > /etc/marker");
print(`b-untouched ${{b.exec("cat /etc/marker").stdout.trimmed()}}`);
let s = snapshot(a, "s1");
let c = clone(s, "c");
print(`clone ${{c.exec("cat /etc/marker /etc/marker2").stdout}}`);
"#
    )
}

fn assert_checks(out: &str) {
    assert!(out.contains("marker layer one\nlayer two"), "{out}");
    assert!(out.contains("gone whited-out"), "{out}");
    assert!(out.contains("opaque c"), "the opaque directory hides a and b: {out}");
    assert!(out.contains("env hello from the image"), "{out}");
    assert!(out.contains("host-free image"), "{out}");
    assert!(out.contains("served served from the image"), "{out}");
    assert!(out.contains("user 1000"), "httpd runs as the image's User: {out}");
    assert!(out.contains("owner 1000:1000"), "{out}");
    assert!(out.contains("detail main program \"httpd -f -p 8080 -h /srv\": running"), "{out}");
    assert!(
        out.contains("brief died: its main program \"sh -c echo bye; exit 3\" exited with status 3"),
        "a node whose main program ends dies, and says why: {out}"
    );
    assert!(out.contains("pwd /srv /etc"), "exec runs in the image's WorkingDir unless told: {out}");
    assert!(out.contains("as 0 1000"), "exec runs as root unless told, as the image's user when told: {out}");
    assert!(out.contains("b-untouched layer one"), "{out}");
    assert!(out.contains("clone written\nlayer two"), "{out}");
}

#[test]
fn an_image_whose_layers_are_zstd_in_several_frames_runs() {
    let sb = Sandbox::new();
    let layout = sb.dir.path().join("zstd");
    write_layout_as(&layout, "z", Compression::ZstdFrames);
    let script = format!(
        "let a = node(\"a\", #{{ image: \"oci:{}:z\", cmd: [] }});\nprint(a.exec(\"cat /etc/marker /etc/marker2; test -e /opt/gone || echo whited-out\").stdout);\n",
        layout.display()
    );
    let out = sb.run_ok("zstd.rhai", &script);
    assert!(out.contains("layer one\nlayer two\nwhited-out"), "{out}");
    assert_nothing_left(&sb);
}

#[test]
fn an_image_runs_from_an_oci_layout_and_a_docker_archive_and_its_layers_are_shared() {
    let sb = Sandbox::new();
    let layout = sb.dir.path().join("layout");
    write_layout(&layout, "v1");
    let out = sb.run_ok("layout.rhai", &checks(&format!("oci:{}:v1", layout.display())));
    assert_checks(&out);
    // One copy of each layer, whatever the number of nodes.
    let layers = sb.data_dir().join("oci/l");
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 2);

    let archive = sb.dir.path().join("busy.tar");
    write_docker_archive(&archive);
    let out = sb.run_ok("archive.rhai", &checks(&format!("docker-archive:{}", archive.display())));
    assert_checks(&out);
    // The same layers (same diff ids): nothing new unpacked.
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 2);

    // `podman save --format oci-archive`: the layout as a tar.
    let oci_archive = sb.dir.path().join("busy-oci.tar");
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&oci_archive)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = sb.write(
        "oa.rhai",
        &format!(
            "let a = node(\"a\", #{{ image: \"oci-archive:{}\" }});\nprint(a.exec(\"cat /etc/marker2\").stdout);\n",
            oci_archive.display()
        ),
    );
    let out = sb.run(&script);
    assert!(out.status.success() && text(&out.stdout).contains("layer two"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 2);
    let out = sb.clonet().args(["image", "rm", &format!("oci-archive:{}", oci_archive.display())]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // `clonet image ls` shows both references; `rm` and `gc` free them.
    let ls = text(&sb.clonet().args(["image", "ls"]).output().unwrap().stdout);
    assert!(ls.contains(&format!("oci:{}:v1", layout.display())) && ls.contains("docker-archive:"), "{ls}");
    for r in [format!("oci:{}:v1", layout.display()), format!("docker-archive:{}", archive.display())] {
        let out = sb.clonet().args(["image", "rm", &r]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = sb.clonet().args(["image", "gc"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 0);
    assert_nothing_left(&sb);
}

#[test]
fn a_tampered_layer_is_refused_and_nothing_is_kept() {
    let sb = Sandbox::new();
    let layout = sb.dir.path().join("layout");
    let blobs = write_layout(&layout, "v1");
    // Flip one byte of the top layer's blob.
    let mut bytes = std::fs::read(&blobs[1]).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&blobs[1], bytes).unwrap();
    let script = sb.write("t.rhai", &format!("node(\"a\", #{{ image: \"oci:{}:v1\" }});\n", layout.display()));
    let out = sb.run(&script);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not match its digest") && stderr.contains("refused"), "{stderr}");
    // The good bottom layer may stay cached; no half-unpacked one does.
    let tmp = sb.data_dir().join("oci/tmp");
    assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0);
    assert!(std::fs::read_dir(sb.data_dir().join("oci/l")).map(|d| d.count()).unwrap_or(0) <= 1);
    assert_nothing_left(&sb);
}

/// Debian's docker-registry on 127.0.0.1, storage in `dir`, until dropped.
struct Registry {
    child: std::process::Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry (Debian's docker-registry package)");
    let up = eventually(20, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(up, "docker-registry did not listen on 127.0.0.1:{port}");
    Registry { child, port }
}

#[test]
fn an_image_is_pulled_from_a_registry_on_loopback() {
    let sb = Sandbox::new();
    let layout = sb.dir.path().join("layout");
    write_layout(&layout, "v1");
    let registry = start_registry(sb.dir.path());
    let reference = format!("127.0.0.1:{}/test/busy:1", registry.port);
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
    let pull = sb.clonet().args(["image", "pull", &reference]).output().unwrap();
    assert!(pull.status.success(), "{}", text(&pull.stderr));
    let out = sb.run_ok("t.rhai", &checks(&reference));
    assert_checks(&out);
    // A tag the registry does not have is a clear error.
    let missing = format!("127.0.0.1:{}/test/busy:nope", registry.port);
    let out = sb.clonet().args(["image", "pull", &missing]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));
    assert_nothing_left(&sb);
}

#[test]
fn as_an_ordinary_user_an_image_keeps_its_owners() {
    let user = UserSandbox::with_subordinate_ids();
    let layout = user.home.join("layout");
    write_layout(&layout, "v1");
    let out = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&layout).output().unwrap();
    assert!(out.status.success());
    let out = user.run_ok("t.rhai", &checks(&format!("oci:{}:v1", layout.display())));
    assert_checks(&out);
    user.assert_nothing_left();
}
