//! OCI container images as the roots of ns nodes: read from an OCI image
//! layout (`oci:DIR[:TAG]`), a `docker save` / `podman save` archive
//! (`docker-archive:FILE`, `oci-archive:FILE`) or a registry
//! (`registry/repo:tag`, see `registry.rs`), every blob checked against its
//! digest, and each layer unpacked once into a content-addressed cache.
//!
//! A layer is unpacked as an overlayfs lower layer: an OCI whiteout
//! (`.wh.NAME`) becomes the overlay's own (a 0/0 character device, which
//! Linux lets an unprivileged user make), and an opaque directory
//! (`.wh..wh..opq`) becomes a whiteout for every name the layers below
//! have there, so no overlay xattr is needed and the same layers serve
//! labs run by root and by an ordinary user. Because of that, a layer's
//! unpacked form depends on the layers under it: the cache is keyed by
//! the layer's chain id (its diff id chained with those below, as the
//! OCI image spec defines it), and a hundred nodes of one image share
//! one copy.
//!
//! Owns: the OCI cache (`$CLONET_DATA_DIR/oci`) and the image records.
//! Must not touch: labs, nodes.
use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The most a layer may hold once decompressed, and how many entries.
pub const MAX_LAYER_BYTES: u64 = 32 << 30;
pub const MAX_LAYER_ENTRIES: u64 = 2_000_000;
/// The most layers an image may have (the overlay's options must fit a page).
pub const MAX_LAYERS: usize = 64;
/// The largest manifest, index or config read.
const MAX_JSON_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0:?} is not an image reference: {1}")]
    BadReference(String, &'static str),
    #[error("{0}")]
    Bad(String),
    #[error("{what} {digest} does not match its digest (got {got}): refused")]
    Mismatch { what: String, digest: String, got: String },
    #[error("image {0} is not in clonet's cache (clonet image pull {0})")]
    NotCached(String),
    #[error("{0}")]
    Registry(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OciError {
    let what = what.into();
    move |e| OciError::Io(what, e)
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory, and the tag (`ref.name`) to take.
    Layout {
        dir: PathBuf,
        tag: Option<String>,
    },
    DockerArchive(PathBuf),
    OciArchive(PathBuf),
    /// `registry/repository` with a tag or a digest (`sha256:…`).
    Registry {
        registry: String,
        repository: String,
        reference: String,
    },
}

impl std::str::FromStr for ImageRef {
    type Err = OciError;

    fn from_str(text: &str) -> Result<ImageRef, OciError> {
        let bad = |why| OciError::BadReference(text.to_string(), why);
        if text.is_empty() || text.len() > 1024 || text.contains(['\0', '\n', ' ']) {
            return Err(bad("empty, too long, or with spaces"));
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            // `oci:DIR:TAG`: the tag is what follows the last colon, if the
            // part before it is a directory name (a path may hold colons).
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') && !t.is_empty() => (d, Some(t.to_string())),
                _ => (rest, None),
            };
            if dir.is_empty() {
                return Err(bad("oci: needs a directory"));
            }
            return Ok(ImageRef::Layout { dir: dir.into(), tag });
        }
        if let Some(f) = text.strip_prefix("docker-archive:") {
            return if f.is_empty() {
                Err(bad("docker-archive: needs a file"))
            } else {
                Ok(ImageRef::DockerArchive(f.into()))
            };
        }
        if let Some(f) = text.strip_prefix("oci-archive:") {
            return if f.is_empty() {
                Err(bad("oci-archive: needs a file"))
            } else {
                Ok(ImageRef::OciArchive(f.into()))
            };
        }
        let text = text.strip_prefix("docker://").unwrap_or(text);
        let (name, reference) = match text.split_once('@') {
            Some((n, d)) => {
                if !d.starts_with("sha256:") || d.len() != 71 || !d[7..].bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("a digest is sha256: and 64 hex digits"));
                }
                (n, d.to_string())
            }
            None => {
                let last = text.rfind('/').map_or(0, |i| i + 1);
                match text[last..].rfind(':') {
                    Some(i) => (&text[..last + i], text[last + i + 1..].to_string()),
                    None => (text, "latest".to_string()),
                }
            }
        };
        // Docker's rule: the first part is a registry if it has a dot or a
        // port, or is localhost; otherwise Docker Hub.
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ if name.contains('/') => ("docker.io".to_string(), name.to_string()),
            _ => ("docker.io".to_string(), format!("library/{name}")),
        };
        let repo_ok = |r: &str| {
            !r.is_empty()
                && r.split('/').all(|p| {
                    !p.is_empty()
                        && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                })
        };
        if !repo_ok(&repository) {
            return Err(bad("a repository is lower-case letters, digits, '.', '_', '-' and '/'"));
        }
        let tag_ok = reference.starts_with("sha256:")
            || (reference.len() <= 128 && reference.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
        if !tag_ok {
            return Err(bad("a tag is up to 128 letters, digits, '.', '_' and '-'"));
        }
        Ok(ImageRef::Registry { registry, repository, reference })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Layout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageRef::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
            ImageRef::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            ImageRef::Registry { registry, repository, reference } if reference.starts_with("sha256:") => {
                write!(f, "{registry}/{repository}@{reference}")
            }
            ImageRef::Registry { registry, repository, reference } => write!(f, "{registry}/{repository}:{reference}"),
        }
    }
}

impl ImageRef {
    /// Local references with relative paths, made absolute: the record
    /// then names one image wherever it is asked from.
    pub fn absolute(self) -> ImageRef {
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        match self {
            ImageRef::Layout { dir, tag } => ImageRef::Layout { dir: abs(dir), tag },
            ImageRef::DockerArchive(p) => ImageRef::DockerArchive(abs(p)),
            ImageRef::OciArchive(p) => ImageRef::OciArchive(abs(p)),
            r => r,
        }
    }
}

/// What of an image's config a node honours.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

impl RunConfig {
    pub(super) fn from_config(c: &ImageConfiguration) -> RunConfig {
        let Some(cfg) = c.config() else { return RunConfig::default() };
        let env = cfg
            .env()
            .clone()
            .unwrap_or_default()
            .iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        RunConfig {
            env,
            working_dir: cfg.working_dir().clone().filter(|w| !w.is_empty()),
            user: cfg.user().clone().filter(|u| !u.is_empty()),
            entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
            cmd: cfg.cmd().clone().unwrap_or_default(),
        }
    }

    /// The main program: Entrypoint then Cmd, as Docker runs them.
    pub fn main_program(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// An image in the cache: its layers (bottom first) and what it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciImage {
    /// As the user named it (`oci:/srv/img:v1`, `docker.io/library/x:1`).
    pub reference: String,
    /// The digest of its config: the image's identity.
    pub id: String,
    /// Unpacked layer directories, the lowest first.
    pub layers: Vec<PathBuf>,
    pub config: RunConfig,
    /// What its layers take on disk, shared ones counted.
    pub bytes: u64,
}

/// Where OCI images live: `$CLONET_DATA_DIR/oci`, beside the guest images.
pub fn oci_dir() -> PathBuf {
    super::cache_dir().with_file_name("oci")
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:…` of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// The chain id of a layer whose parent chain is `parent` (OCI image spec).
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => digest_of(format!("{p} {diff_id}").as_bytes()),
    }
}

/// A reader that hashes what goes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
    limit: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes > self.limit {
            return Err(std::io::Error::other(format!("more than {} bytes", self.limit)));
        }
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R, limit: u64) -> Self {
        Hashing { inner, hash: Sha256::new(), bytes: 0, limit }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hash.clone().finalize()))
    }
}

/// Reads a JSON blob, bounded, checking it against `digest` when given.
fn read_json_blob(path: &Path, digest: Option<&str>, what: &str) -> Result<Vec<u8>, OciError> {
    let f = std::fs::File::open(path).map_err(io(format!("{what} {}", path.display())))?;
    let mut bytes = Vec::new();
    f.take(MAX_JSON_BYTES + 1).read_to_end(&mut bytes).map_err(io(format!("{what} {}", path.display())))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(OciError::Bad(format!("{what} {} is larger than 4 MiB", path.display())));
    }
    if let Some(d) = digest {
        let got = digest_of(&bytes);
        if got != d {
            return Err(OciError::Mismatch { what: what.into(), digest: d.into(), got });
        }
    }
    Ok(bytes)
}

/// The config's diff ids, one per layer of the manifest (which has `layers`).
pub(super) fn diff_ids_for(config: &ImageConfiguration, layers: usize) -> Result<Vec<String>, OciError> {
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != layers {
        return Err(OciError::Bad(format!(
            "the manifest has {layers} layers and the config {} diff ids",
            diff_ids.len()
        )));
    }
    Ok(diff_ids)
}

/// A layer to unpack: how to open its blob and what it must hash to.
pub struct LayerSource {
    pub open: Box<dyn FnMut() -> std::io::Result<Box<dyn Read>>>,
    /// The digest of the blob as stored (compressed), when known.
    pub digest: Option<String>,
    /// The digest of the uncompressed tar (the config's diff id).
    pub diff_id: String,
    pub size: Option<u64>,
}

/// An image's config and layers, from wherever it came.
pub struct Fetched {
    pub config_digest: String,
    pub config: RunConfig,
    pub layers: Vec<LayerSource>,
}

/// The blob `digest` of a layout directory.
fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, OciError> {
    let (alg, hexd) = digest.split_once(':').ok_or_else(|| OciError::Bad(format!("{digest:?} is not a digest")))?;
    if alg != "sha256" || hexd.len() != 64 || !hexd.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OciError::Bad(format!("{digest:?}: only sha256 digests are taken")));
    }
    Ok(dir.join("blobs").join(alg).join(hexd))
}

/// The host's architecture as OCI names it.
pub(super) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An image from an OCI image layout directory.
pub fn from_layout(dir: &Path, tag: Option<&str>) -> Result<Fetched, OciError> {
    let index_path = dir.join("index.json");
    let index_bytes = read_json_blob(&index_path, None, "the layout's index")?;
    let index = ImageIndex::from_reader(&index_bytes[..])
        .map_err(|e| OciError::Bad(format!("{}: {e}", index_path.display())))?;
    let named = |d: &oci_spec::image::Descriptor| {
        d.annotations().as_ref().and_then(|a| a.get("org.opencontainers.image.ref.name")).cloned()
    };
    let chosen = match tag {
        Some(t) => index.manifests().iter().find(|d| named(d).as_deref() == Some(t)).ok_or_else(|| {
            let tags: Vec<String> = index.manifests().iter().filter_map(named).collect();
            OciError::Bad(format!("{} has no image tagged {t:?} (it has: {})", dir.display(), tags.join(", ")))
        })?,
        None => match index.manifests().as_slice() {
            [one] => one,
            [] => return Err(OciError::Bad(format!("{} holds no image", dir.display()))),
            many => {
                let tags: Vec<String> = many.iter().filter_map(named).collect();
                return Err(OciError::Bad(format!(
                    "{} holds {} images: name one (oci:DIR:TAG; tags: {})",
                    dir.display(),
                    many.len(),
                    tags.join(", ")
                )));
            }
        },
    };
    let mut desc = chosen.clone();
    // An index inside (several platforms): the host's.
    for _ in 0..4 {
        if *desc.media_type() != MediaType::ImageIndex {
            break;
        }
        let digest = desc.digest().to_string();
        let bytes = read_json_blob(&blob_path(dir, &digest)?, Some(&digest), "an image index")?;
        let inner = ImageIndex::from_reader(&bytes[..]).map_err(|e| OciError::Bad(format!("{digest}: {e}")))?;
        desc = inner
            .manifests()
            .iter()
            .find(|d| {
                d.platform()
                    .as_ref()
                    .is_none_or(|p| p.os().to_string() == "linux" && p.architecture().to_string() == host_arch())
            })
            .cloned()
            .ok_or_else(|| OciError::Bad(format!("{} has no image for linux/{}", dir.display(), host_arch())))?;
    }
    let digest = desc.digest().to_string();
    let manifest_bytes = read_json_blob(&blob_path(dir, &digest)?, Some(&digest), "the manifest")?;
    let manifest = ImageManifest::from_reader(&manifest_bytes[..])
        .map_err(|e| OciError::Bad(format!("manifest {digest}: {e}")))?;
    let config_digest = manifest.config().digest().to_string();
    let config_bytes = read_json_blob(&blob_path(dir, &config_digest)?, Some(&config_digest), "the image config")?;
    let config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|e| OciError::Bad(format!("config {config_digest}: {e}")))?;
    let diff_ids = diff_ids_for(&config, manifest.layers().len())?;
    let mut layers = Vec::new();
    for (d, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let path = blob_path(dir, d.digest().as_ref())?;
        layers.push(LayerSource {
            open: Box::new(move || Ok(Box::new(std::fs::File::open(&path)?) as Box<dyn Read>)),
            digest: Some(d.digest().to_string()),
            diff_id,
            size: Some(d.size()),
        });
    }
    Ok(Fetched { config_digest, config: RunConfig::from_config(&config), layers })
}

/// `docker save`'s manifest.json entry.
#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A path inside an unpacked archive, refused if it could leave it.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, OciError> {
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(OciError::Bad(format!("{rel:?} leaves the archive")));
    }
    Ok(dir.join(p))
}

/// An image from a `docker save` archive unpacked into `dir`.
pub fn from_docker_dir(dir: &Path) -> Result<Fetched, OciError> {
    let bytes = read_json_blob(&dir.join("manifest.json"), None, "the archive's manifest.json")?;
    let manifests: Vec<DockerManifest> =
        serde_json::from_slice(&bytes).map_err(|e| OciError::Bad(format!("manifest.json: {e}")))?;
    let m = manifests.into_iter().next().ok_or_else(|| OciError::Bad("manifest.json names no image".into()))?;
    // The config's file name is its digest (`<hex>.json` or `blobs/sha256/<hex>`).
    let stem = Path::new(&m.config).file_name().and_then(|n| n.to_str()).unwrap_or("").trim_end_matches(".json");
    let expected = (stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{stem}"));
    let config_bytes = read_json_blob(&inside(dir, &m.config)?, expected.as_deref(), "the image config")?;
    let config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|e| OciError::Bad(format!("config {}: {e}", m.config)))?;
    let diff_ids = diff_ids_for(&config, m.layers.len())?;
    let mut layers = Vec::new();
    for (rel, diff_id) in m.layers.iter().zip(diff_ids) {
        let path = inside(dir, rel)?;
        layers.push(LayerSource {
            open: Box::new(move || Ok(Box::new(std::fs::File::open(&path)?) as Box<dyn Read>)),
            digest: None,
            diff_id,
            size: None,
        });
    }
    Ok(Fetched { config_digest: digest_of(&config_bytes), config: RunConfig::from_config(&config), layers })
}

/// Unpacks an archive (a tar, maybe gzipped) into `into`, every path kept inside.
pub fn unpack_archive(file: &Path, into: &Path) -> Result<(), OciError> {
    let f = std::fs::File::open(file).map_err(io(file.display().to_string()))?;
    let reader = decompressing(std::io::BufReader::new(f)).map_err(io(file.display().to_string()))?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(io(file.display().to_string()))? {
        let mut entry = entry.map_err(io(file.display().to_string()))?;
        let t = entry.header().entry_type();
        if !(t.is_file() || t.is_dir() || t.is_symlink() || t.is_hard_link()) {
            continue;
        }
        if !entry.unpack_in(into).map_err(io(format!("unpacking {}", file.display())))? {
            return Err(OciError::Bad(format!("{}: an entry leaves the archive", file.display())));
        }
    }
    Ok(())
}

/// gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// A zstd frame's magic bytes (0xFD2FB528, little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A decoder for the stream by its first bytes: gzip, zstd, or none (a
/// plain tar).
fn decompressing<'a, R: BufRead + 'a>(mut r: R) -> std::io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    if head.starts_with(&GZIP_MAGIC) {
        return Ok(Box::new(flate2::read::GzDecoder::new(r)));
    }
    if head.starts_with(&ZSTD_MAGIC) {
        return Ok(Box::new(ZstdFrames::new(r)));
    }
    Ok(Box::new(r))
}

/// Reads a layer blob as unpacking does, without writing anything: its
/// decompressed tar, entry by entry, at most `limit` bytes of it; returns
/// the number of entries. For the fuzzer: no blob may panic.
pub fn walk_layer(blob: &[u8], limit: u64) -> std::io::Result<usize> {
    let decoded = decompressing(std::io::Cursor::new(blob))?;
    let mut archive = tar::Archive::new(decoded.take(limit));
    let mut count = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let _ = entry.path()?;
        let _ = entry.link_name()?;
        std::io::copy(&mut entry, &mut std::io::sink())?;
        count += 1;
    }
    Ok(count)
}

/// The content of every zstd frame in a stream, one after another: a layer
/// written as several frames (zstd:chunked) is one tar; skippable frames
/// are skipped. ruzstd's decoder keeps a bounded window, whatever a frame
/// asks for (a larger one is an error, not an allocation).
struct ZstdFrames<R: BufRead> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> ZstdFrames<R> {
        ZstdFrames { source, decoder: ruzstd::decoding::FrameDecoder::new(), in_frame: false }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        use ruzstd::decoding::BlockDecodingStrategy;
        if buf.is_empty() {
            return Ok(0);
        }
        let bad = |e: FrameDecoderError| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("zstd: {e}"));
        loop {
            if !self.in_frame {
                if self.source.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.decoder.init(&mut self.source) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                        length, ..
                    })) => {
                        std::io::copy(&mut (&mut self.source).take(u64::from(length)), &mut std::io::sink())?;
                    }
                    Err(e) => return Err(bad(e)),
                }
                continue;
            }
            if self.decoder.can_collect() > 0 {
                return self.decoder.read(buf);
            }
            if self.decoder.is_finished() {
                self.in_frame = false;
                continue;
            }
            self.decoder.decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1)).map_err(bad)?;
        }
    }
}

/// Walks `rel` under `root` one name at a time, making missing
/// directories and refusing a symbolic link on the way: a layer's own
/// links must not send a whiteout anywhere else.
fn dir_inside(root: &Path, rel: &Path) -> Result<PathBuf, OciError> {
    let mut at = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(n) => at.push(n),
            Component::CurDir => continue,
            _ => return Err(OciError::Bad(format!("{} leaves the layer", rel.display()))),
        }
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(OciError::Bad(format!("{} is not a directory in the layer", rel.display()))),
            Err(_) => std::fs::create_dir(&at).map_err(io(format!("creating {}", at.display())))?,
        }
    }
    Ok(at)
}

/// Makes an overlayfs whiteout (a 0/0 character device) at `path`.
fn whiteout(path: &Path) -> Result<(), OciError> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            std::fs::remove_dir_all(path).map_err(io(format!("removing {}", path.display())))?;
        } else {
            std::fs::remove_file(path).map_err(io(format!("removing {}", path.display())))?;
        }
    }
    nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
        .map_err(|e| OciError::Io(format!("making the whiteout {}", path.display()), e.into()))
}

/// What unpacking a layer found.
#[derive(Debug, Default)]
pub struct Unpacked {
    pub bytes: u64,
    pub entries: u64,
    /// Entries whose owner this user cannot give (no subordinate ids).
    pub unowned: u64,
    /// Device nodes, which a node's root does without.
    pub devices_skipped: u64,
}

/// Unpacks one layer blob into `into` (a new directory), on top of
/// `lowers` (bottom first), checking the blob against `digest` and the
/// tar against `diff_id`. On a mismatch the caller drops `into`.
pub fn unpack_layer(
    blob: Box<dyn Read>,
    digest: Option<&str>,
    diff_id: &str,
    into: &Path,
    lowers: &[PathBuf],
) -> Result<Unpacked, OciError> {
    let mut compressed = Hashing::new(blob, MAX_LAYER_BYTES);
    let unpacked = unpack_tar(&mut compressed, diff_id, into);
    // The rest of the blob (a gzip trailer, padding) is part of its digest.
    let drained = std::io::copy(&mut compressed, &mut std::io::sink());
    if let Some(d) = digest {
        let got = compressed.digest();
        if got != d {
            // Whatever else went wrong (a broken gzip stream), the blob is
            // not the one the manifest names: that is the error to give.
            return Err(OciError::Mismatch { what: "layer".into(), digest: d.into(), got });
        }
    }
    let (stats, opaque) = unpacked?;
    drained.map_err(io("reading the layer"))?;
    // An opaque directory hides everything the layers below have there.
    for dir in opaque {
        let here = into.join(&dir);
        let mut names = BTreeSet::new();
        for lower in lowers {
            if let Ok(entries) = std::fs::read_dir(lower.join(&dir)) {
                names.extend(entries.flatten().map(|e| e.file_name()));
            }
        }
        for n in names {
            if std::fs::symlink_metadata(here.join(&n)).is_err() {
                whiteout(&here.join(&n))?;
            }
        }
    }
    Ok(stats)
}

/// Unpacks the tar in `compressed` (gzipped or not) into `into`, checking
/// it against `diff_id`; returns what it found and its opaque directories.
fn unpack_tar(
    compressed: &mut Hashing<Box<dyn Read>>,
    diff_id: &str,
    into: &Path,
) -> Result<(Unpacked, BTreeSet<PathBuf>), OciError> {
    let mut stats = Unpacked::default();
    let mut opaque: BTreeSet<PathBuf> = BTreeSet::new();
    let as_root = nix::unistd::geteuid().is_root();
    {
        let buffered = std::io::BufReader::new(compressed);
        // The decompressed tar is hashed for the diff id.
        let decoded = decompressing(buffered).map_err(io("reading the layer"))?;
        let mut tar_stream = Hashing::new(decoded, MAX_LAYER_BYTES);
        {
            let mut archive = tar::Archive::new(&mut tar_stream);
            archive.set_preserve_permissions(true);
            archive.set_preserve_mtime(true);
            archive.set_unpack_xattrs(false);
            for entry in archive.entries().map_err(io("reading the layer"))? {
                let mut entry = entry.map_err(io("reading the layer"))?;
                stats.entries += 1;
                if stats.entries > MAX_LAYER_ENTRIES {
                    return Err(OciError::Bad(format!("a layer has more than {MAX_LAYER_ENTRIES} entries")));
                }
                let path = entry.path().map_err(io("reading the layer"))?.into_owned();
                let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if name == ".wh..wh..opq" {
                    dir_inside(into, &parent)?;
                    opaque.insert(parent);
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(".wh.") {
                    if hidden.is_empty() || hidden == "." || hidden == ".." {
                        return Err(OciError::Bad(format!("bad whiteout {}", path.display())));
                    }
                    let dir = dir_inside(into, &parent)?;
                    whiteout(&dir.join(hidden))?;
                    continue;
                }
                let kind = entry.header().entry_type();
                if kind.is_block_special() || kind.is_character_special() || kind.is_fifo() {
                    stats.devices_skipped += 1;
                    continue;
                }
                if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
                    continue;
                }
                if !entry.unpack_in(into).map_err(io(format!("unpacking {}", path.display())))? {
                    return Err(OciError::Bad(format!("{}: the entry leaves the layer", path.display())));
                }
                stats.bytes += entry.header().size().unwrap_or(0);
                if as_root {
                    let (uid, gid) = (entry.header().uid().unwrap_or(0), entry.header().gid().unwrap_or(0));
                    let target = into.join(&path);
                    let owned = u32::try_from(uid).ok().zip(u32::try_from(gid).ok());
                    let given =
                        owned.is_some_and(|(u, g)| std::os::unix::fs::lchown(&target, Some(u), Some(g)).is_ok());
                    if !given && (uid, gid) != (0, 0) {
                        stats.unowned += 1;
                    }
                }
            }
        }
        // What follows the tar's end (padding) is part of the diff id.
        std::io::copy(&mut tar_stream, &mut std::io::sink()).map_err(io("reading the layer"))?;
        let got = tar_stream.digest();
        if got != diff_id {
            return Err(OciError::Mismatch { what: "layer (uncompressed)".into(), digest: diff_id.into(), got });
        }
    }
    Ok((stats, opaque))
}

/// The cache's record of an image named `reference`.
fn record_path(reference: &str) -> PathBuf {
    oci_dir().join("images").join(format!("{}.json", &digest_of(reference.as_bytes())[7..27]))
}

/// The directory of the layer with chain id `chain`.
fn layer_dir(chain: &str) -> PathBuf {
    // Short names: every lower layer's path goes into one page of mount
    // options.
    oci_dir().join("l").join(&chain[7..7 + 24])
}

/// The cached image named `reference`, if all its layers are there.
pub fn cached(reference: &str) -> Option<OciImage> {
    let bytes = std::fs::read(record_path(reference)).ok()?;
    let image: OciImage = serde_json::from_slice(&bytes).ok()?;
    (image.reference == reference && image.layers.iter().all(|l| l.is_dir())).then_some(image)
}

/// Every cached image.
pub fn list() -> Vec<OciImage> {
    let mut all: Vec<OciImage> = std::fs::read_dir(oci_dir().join("images"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    all.sort_by(|a: &OciImage, b| a.reference.cmp(&b.reference));
    all
}

/// Progress of a pull, for a bar.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Layer `index` of `count` begins (its size, if known).
    Layer {
        index: usize,
        count: usize,
        size: Option<u64>,
        cached: bool,
    },
    Done,
}

/// Fetches (if needed) and unpacks an image, and records it.
pub fn pull(reference: &ImageRef, progress: &mut dyn FnMut(Progress)) -> Result<OciImage, OciError> {
    let name = reference.to_string();
    let base = oci_dir();
    let tmp = base.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    // An archive is unpacked into a scratch directory first.
    let scratch = tmp.join(format!("src-{}-{}", std::process::id(), &digest_of(name.as_bytes())[7..19]));
    let _ = std::fs::remove_dir_all(&scratch);
    let cleanup = Scratch(scratch.clone());
    let fetched = match reference {
        ImageRef::Layout { dir, tag } => from_layout(dir, tag.as_deref())?,
        ImageRef::OciArchive(file) => {
            std::fs::create_dir_all(&scratch).map_err(io("creating a scratch directory"))?;
            unpack_archive(file, &scratch)?;
            from_layout(&scratch, None)?
        }
        ImageRef::DockerArchive(file) => {
            std::fs::create_dir_all(&scratch).map_err(io("creating a scratch directory"))?;
            unpack_archive(file, &scratch)?;
            from_docker_dir(&scratch)?
        }
        ImageRef::Registry { .. } => super::registry::fetch(reference, &scratch)?,
    };
    if fetched.layers.len() > MAX_LAYERS {
        return Err(OciError::Bad(format!(
            "{name} has {} layers; clonet takes at most {MAX_LAYERS}",
            fetched.layers.len()
        )));
    }
    let count = fetched.layers.len();
    let mut layers = Vec::new();
    let mut parent: Option<String> = None;
    let mut bytes = 0;
    for (index, mut l) in fetched.layers.into_iter().enumerate() {
        let chain = chain_id(parent.as_deref(), &l.diff_id);
        if !chain.starts_with("sha256:") || chain.len() != 71 {
            return Err(OciError::Bad(format!("{:?} is not a sha256 diff id", l.diff_id)));
        }
        let dir = layer_dir(&chain);
        let cached = dir.is_dir();
        progress(Progress::Layer { index, count, size: l.size, cached });
        if !cached {
            let part = tmp.join(format!("layer-{}-{}", std::process::id(), &chain[7..31]));
            let _ = std::fs::remove_dir_all(&part);
            std::fs::create_dir_all(&part).map_err(io(format!("creating {}", part.display())))?;
            let blob =
                (l.open)().map_err(io(format!("opening layer {}", l.digest.as_deref().unwrap_or(&l.diff_id))))?;
            match unpack_layer(blob, l.digest.as_deref(), &l.diff_id, &part, &layers) {
                Ok(stats) => {
                    if stats.unowned > 0 {
                        eprintln!(
                            "clonet: {} files of a layer of {name} keep their owner as root: this user has no subordinate ids for theirs",
                            stats.unowned
                        );
                    }
                    std::fs::create_dir_all(dir.parent().expect("under l/")).map_err(io("creating the layer cache"))?;
                    if let Err(e) = std::fs::rename(&part, &dir) {
                        // Another pull stored the same layer meanwhile:
                        // its copy is as good as ours.
                        let _ = std::fs::remove_dir_all(&part);
                        if !dir.is_dir() {
                            return Err(OciError::Io(format!("storing layer {chain}"), e));
                        }
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&part);
                    return Err(e);
                }
            }
        }
        bytes += super::bytes_on_disk(&dir);
        layers.push(dir);
        parent = Some(chain);
    }
    drop(cleanup);
    let image = OciImage { reference: name.clone(), id: fetched.config_digest, layers, config: fetched.config, bytes };
    let record = record_path(&name);
    std::fs::create_dir_all(record.parent().expect("under images/")).map_err(io("creating the image records"))?;
    let text = serde_json::to_vec_pretty(&image).expect("serializes");
    let part = record.with_extension("part");
    std::fs::write(&part, text).map_err(io(format!("writing {}", part.display())))?;
    std::fs::rename(&part, &record).map_err(io(format!("writing {}", record.display())))?;
    progress(Progress::Done);
    Ok(image)
}

/// Removes a scratch directory when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Forgets the image named `reference` (its layers stay until `gc`).
pub fn remove(reference: &str) -> Result<(), OciError> {
    let record = record_path(reference);
    match cached(reference).or_else(|| serde_json::from_slice(&std::fs::read(&record).ok()?).ok()) {
        Some(_) => std::fs::remove_file(&record).map_err(io(format!("removing {}", record.display()))),
        None => Err(OciError::NotCached(reference.to_string())),
    }
}

/// Deletes the layers no recorded image uses, and scratch left by
/// interrupted pulls; returns what they took.
pub fn gc() -> u64 {
    let used: BTreeSet<PathBuf> = list().into_iter().flat_map(|i| i.layers).collect();
    let mut freed = 0;
    for dir in [oci_dir().join("l"), oci_dir().join("tmp")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if !used.contains(&p) && e.file_type().is_ok_and(|t| t.is_dir() && !t.is_symlink()) {
                freed += super::bytes_on_disk(&p);
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_streams_of_several_frames_decode_whole_and_damage_is_an_error() {
        use ruzstd::encoding::{compress_to_vec, CompressionLevel};
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let (a, b) = data.split_at(123_457);
        let mut stream = compress_to_vec(a, CompressionLevel::Fastest);
        stream.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        stream.extend_from_slice(&3u32.to_le_bytes());
        stream.extend_from_slice(b"abc");
        stream.extend(compress_to_vec(b, CompressionLevel::Fastest));
        let mut out = Vec::new();
        decompressing(std::io::Cursor::new(stream.clone())).unwrap().read_to_end(&mut out).unwrap();
        assert!(out == data, "every frame, in order");
        // Cut short, or with damage inside: an error, never a panic.
        for cut in [5, stream.len() / 3, stream.len() - 1] {
            let mut out = Vec::new();
            let r = decompressing(std::io::Cursor::new(stream[..cut].to_vec())).unwrap().read_to_end(&mut out);
            assert!(r.is_err() || out != data, "cut at {cut}");
        }
        let mut damaged = stream.clone();
        for i in (20..damaged.len()).step_by(97) {
            damaged[i] ^= 0x5a;
        }
        let mut out = Vec::new();
        let r = decompressing(std::io::Cursor::new(damaged)).unwrap().read_to_end(&mut out);
        assert!(r.is_err() || out != data);
    }

    #[test]
    fn references_name_layouts_archives_and_registries() {
        let r = |t: &str| t.parse::<ImageRef>().unwrap();
        assert_eq!(r("oci:/srv/img:v1"), ImageRef::Layout { dir: "/srv/img".into(), tag: Some("v1".into()) });
        assert_eq!(r("oci:img"), ImageRef::Layout { dir: "img".into(), tag: None });
        assert_eq!(r("docker-archive:a.tar"), ImageRef::DockerArchive("a.tar".into()));
        assert_eq!(r("oci-archive:/x/a.tar"), ImageRef::OciArchive("/x/a.tar".into()));
        let reg = |t: &str| match r(t) {
            ImageRef::Registry { registry, repository, reference } => (registry, repository, reference),
            other => panic!("{other:?}"),
        };
        assert_eq!(reg("alpine"), ("docker.io".into(), "library/alpine".into(), "latest".into()));
        assert_eq!(reg("kathara/frr:3.0"), ("docker.io".into(), "kathara/frr".into(), "3.0".into()));
        assert_eq!(reg("127.0.0.1:5000/t/busy:1"), ("127.0.0.1:5000".into(), "t/busy".into(), "1".into()));
        assert_eq!(reg("localhost/x").0, "localhost");
        let d = format!("quay.io/frrouting/frr@sha256:{}", "a".repeat(64));
        assert_eq!(reg(&d).2, format!("sha256:{}", "a".repeat(64)));
        assert_eq!(r(&d).to_string(), d);
        for bad in ["", "Upper/case", "x@sha256:12", "a b", "oci:", "x:tag with/slash", "a//b"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(chain_id(None, &a), a);
        assert_eq!(chain_id(Some(&a), &b), digest_of(format!("{a} {b}").as_bytes()));
    }

    /// A tar of (path, contents) files, plus whiteout entries.
    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, p, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_layer_unpacks_with_its_whiteouts_and_a_wrong_digest_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let low = d.path().join("low");
        std::fs::create_dir(&low).unwrap();
        let lower_tar = tar_of(&[("etc/a", b"a"), ("etc/b", b"b"), ("opt/keep", b"k"), ("opt/gone", b"g")]);
        let s =
            unpack_layer(Box::new(std::io::Cursor::new(lower_tar.clone())), None, &digest_of(&lower_tar), &low, &[])
                .unwrap();
        assert_eq!(s.entries, 4);
        assert_eq!(std::fs::read(low.join("etc/a")).unwrap(), b"a");

        let up = d.path().join("up");
        std::fs::create_dir(&up).unwrap();
        let upper_tar = tar_of(&[("etc/.wh..wh..opq", b""), ("etc/c", b"c"), ("opt/.wh.gone", b"")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &upper_tar).unwrap();
        let blob = gz.finish().unwrap();
        unpack_layer(
            Box::new(std::io::Cursor::new(blob.clone())),
            Some(&digest_of(&blob)),
            &digest_of(&upper_tar),
            &up,
            std::slice::from_ref(&low),
        )
        .unwrap();
        use std::os::unix::fs::FileTypeExt;
        let is_whiteout = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device());
        assert!(is_whiteout(&up.join("etc/a")) && is_whiteout(&up.join("etc/b")), "the opaque etc hides a and b");
        assert!(is_whiteout(&up.join("opt/gone")) && !up.join("opt/keep").exists());
        assert_eq!(std::fs::read(up.join("etc/c")).unwrap(), b"c");

        let bad = d.path().join("bad");
        std::fs::create_dir(&bad).unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let e =
            unpack_layer(Box::new(std::io::Cursor::new(blob.clone())), Some(&wrong), &digest_of(&upper_tar), &bad, &[])
                .unwrap_err();
        assert!(e.to_string().contains("does not match its digest"), "{e}");
        let e = unpack_layer(Box::new(std::io::Cursor::new(blob)), None, &wrong, &bad, &[]).unwrap_err();
        assert!(e.to_string().contains("layer (uncompressed)"), "{e}");
    }

    #[test]
    fn a_whiteout_cannot_leave_the_layer() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_cksum();
        b.append_link(&mut h, "etc", "/tmp").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "etc/.wh.x", &b""[..]).unwrap();
        let t = b.into_inner().unwrap();
        let e =
            unpack_layer(Box::new(std::io::Cursor::new(t.clone())), None, &digest_of(&t), d.path(), &[]).unwrap_err();
        assert!(e.to_string().contains("not a directory in the layer"), "{e}");
    }
}
