//! Which root a foreign lab's container image becomes: `--images`.
//!
//! A lab names images (`kathara/frr`, `quay.io/frrouting/frr:9.1.0`) that
//! this machine may not be able to have. By default each is an error
//! naming every missing image; `--images host` runs such nodes on the
//! host's own root (which then needs the lab's programs), and `--images
//! FILE.toml` maps image names to local roots:
//!
//! ```toml
//! "kathara/frr" = "host"                     # the host's own root
//! "kathara/base" = "rootfs:/srv/roots/deb"   # a directory as the lower layer
//! "*" = "host"                               # every image not named above
//! ```
//!
//! Owns: the policy and the matching of names. Must not touch: images
//! themselves.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ImportError;

/// What an image becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageTarget {
    /// The host's own root, under the node's copy-on-write layer.
    Host,
    /// A directory as the root's lower layer (`rootfs`).
    Rootfs(PathBuf),
    /// A container image (pulled, or from a layout or archive).
    Image(String),
}

/// The user's choice for images (`--images`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ImagePolicy {
    /// Each image as itself, pulled if not in the cache.
    #[default]
    AsNamed,
    /// Every image on the host's root.
    Host,
    /// Named images mapped; `"*"` maps the rest.
    Map { file: PathBuf, entries: BTreeMap<String, ImageTarget> },
}

/// The longest image name taken.
const MAX_IMAGE_NAME: usize = 512;

/// Whether `name` looks like an image reference: printable, no spaces,
/// not too long (the registry checks the rest).
pub fn valid_image_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IMAGE_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "./:_-@+".contains(c))
}

impl ImagePolicy {
    /// `--images VALUE`: `host`, or a TOML file of mappings.
    pub fn from_option(value: &str) -> Result<ImagePolicy, ImportError> {
        match value {
            "host" => Ok(ImagePolicy::Host),
            "" => Ok(ImagePolicy::AsNamed),
            file => {
                let path = Path::new(file);
                let text = super::read_bounded(path)?;
                ImagePolicy::from_toml(path, &text)
            }
        }
    }

    /// A map file's text.
    pub fn from_toml(path: &Path, text: &str) -> Result<ImagePolicy, ImportError> {
        let name = path.display().to_string();
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            ImportError::at(&name, line, col, e.message().to_string())
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut entries = BTreeMap::new();
        for (image, value) in &table {
            let at = |msg: String| {
                let offset = text.find(image.as_str()).unwrap_or(0);
                let (line, col) = line_col(text, offset);
                ImportError::at(&name, line, col, msg)
            };
            if image != "*" && !valid_image_name(image) {
                return Err(at(format!("{image:?} is not an image name")));
            }
            let Some(target) = value.as_str() else {
                return Err(at(format!("{image}: the value is a string: \"host\", \"rootfs:DIR\" or an image")));
            };
            let target = match target {
                "host" => ImageTarget::Host,
                t if t.starts_with("rootfs:") => {
                    let dir_text = &t["rootfs:".len()..];
                    if dir_text.is_empty() {
                        return Err(at(format!("{image}: rootfs: needs a directory")));
                    }
                    ImageTarget::Rootfs(dir.join(dir_text))
                }
                t => {
                    // Another image: local ones found from the map's directory.
                    let parsed: crate::image::oci::ImageRef = t.parse().map_err(|e| {
                        at(format!("{image}: {t:?} is not \"host\", \"rootfs:DIR\" or an image reference ({e})"))
                    })?;
                    let parsed = match parsed {
                        crate::image::oci::ImageRef::Layout { dir: d, tag } => {
                            crate::image::oci::ImageRef::Layout { dir: dir.join(d), tag }
                        }
                        crate::image::oci::ImageRef::DockerArchive(f) => {
                            crate::image::oci::ImageRef::DockerArchive(dir.join(f))
                        }
                        crate::image::oci::ImageRef::OciArchive(f) => {
                            crate::image::oci::ImageRef::OciArchive(dir.join(f))
                        }
                        r => r,
                    };
                    ImageTarget::Image(parsed.to_string())
                }
            };
            entries.insert(image.clone(), target);
        }
        Ok(ImagePolicy::Map { file: path.to_path_buf(), entries })
    }

    /// What `image` becomes: an exact match, then the name without its
    /// tag or digest, then `"*"`; an image the map does not name is
    /// itself.
    pub fn resolve(&self, image: &str) -> ImageTarget {
        match self {
            ImagePolicy::AsNamed => ImageTarget::Image(image.to_string()),
            ImagePolicy::Host => ImageTarget::Host,
            ImagePolicy::Map { entries, .. } => {
                let bare = without_tag(image);
                [image, bare, "*"]
                    .iter()
                    .find_map(|k| entries.get(*k))
                    .cloned()
                    .unwrap_or_else(|| ImageTarget::Image(image.to_string()))
            }
        }
    }

    /// How the policy was given, for messages and comments.
    pub fn describe(&self) -> String {
        match self {
            ImagePolicy::AsNamed => "each image as named".into(),
            ImagePolicy::Host => "--images host".into(),
            ImagePolicy::Map { file, .. } => format!("--images {}", file.display()),
        }
    }
}

/// `repo/name` of `repo/name:tag` or `repo/name@sha256:…` (a registry's
/// `host:port/` prefix keeps its colon).
pub fn without_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].find(':') {
        Some(i) => &image[..last_slash + i],
        None => image,
    }
}

/// Makes sure every image a lab runs is in the cache, pulling those that
/// are not: `(reference, place in the lab's files, device)`. Every image
/// that cannot be had is named in one error, with where the lab asks for
/// it and why, and the ways around it.
pub fn ensure(images: &[(String, String, String)], progress: &mut dyn FnMut(&str)) -> Result<(), String> {
    let mut failed = Vec::new();
    let mut done: std::collections::BTreeMap<String, Result<(), String>> = Default::default();
    for (reference, place, device) in images {
        let outcome = done
            .entry(reference.clone())
            .or_insert_with(|| {
                let parsed: crate::image::oci::ImageRef = reference.parse().map_err(|e| format!("{e}"))?;
                let parsed = parsed.absolute();
                if crate::image::oci::cached(&parsed.to_string()).is_some() {
                    return Ok(());
                }
                progress(&format!("pulling {parsed}"));
                crate::image::oci::pull(&parsed, &mut |_| {}).map(|_| ()).map_err(|e| e.to_string())
            })
            .clone();
        if let Err(why) = outcome {
            failed.push(format!("{place}: {device} needs image {reference}: {why}"));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} image(s) cannot be had:\n  {}\nRun with --images host (the nodes run the host's own programs) or --images MAP.toml (image = \"host\", \"rootfs:DIR\" or another image)",
        failed.len(),
        failed.join("\n  ")
    ))
}

/// The 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests_come_off_but_a_registry_port_stays() {
        assert_eq!(without_tag("kathara/frr:latest"), "kathara/frr");
        assert_eq!(without_tag("kathara/frr"), "kathara/frr");
        assert_eq!(without_tag("localhost:5000/frr:9"), "localhost:5000/frr");
        assert_eq!(without_tag("quay.io/frrouting/frr@sha256:abcd"), "quay.io/frrouting/frr");
    }

    #[test]
    fn a_map_matches_exactly_then_without_the_tag_then_star() {
        let text = "\"kathara/frr\" = \"host\"\n\"kathara/base:9\" = \"rootfs:roots/deb\"\n";
        let p = ImagePolicy::from_toml(Path::new("/m/map.toml"), text).unwrap();
        assert_eq!(p.resolve("kathara/frr:latest"), ImageTarget::Host);
        assert_eq!(p.resolve("kathara/base:9"), ImageTarget::Rootfs("/m/roots/deb".into()));
        assert_eq!(p.resolve("kathara/base:10"), ImageTarget::Image("kathara/base:10".into()));
        let star = ImagePolicy::from_toml(Path::new("m.toml"), "\"*\" = \"host\"").unwrap();
        assert_eq!(star.resolve("anything"), ImageTarget::Host);
        assert_eq!(ImagePolicy::Host.resolve("x"), ImageTarget::Host);
        assert_eq!(ImagePolicy::AsNamed.resolve("x"), ImageTarget::Image("x".into()));
        let local = ImagePolicy::from_toml(Path::new("/m/map.toml"), "\"a\" = \"oci:imgs/a:v1\"").unwrap();
        assert_eq!(local.resolve("a"), ImageTarget::Image("oci:/m/imgs/a:v1".into()));
    }

    #[test]
    fn a_bad_map_says_where() {
        let e = ImagePolicy::from_toml(Path::new("m.toml"), "\"a\" = \"host\"\n\"b\" = \"Docker Hub\"\n").unwrap_err();
        assert_eq!((e.line, e.message.contains("\"Docker Hub\"")), (Some(2), true), "{e}");
        let e = ImagePolicy::from_toml(Path::new("m.toml"), "\"a\" = \n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let e = ImagePolicy::from_toml(Path::new("m.toml"), "\"a b\" = \"host\"").unwrap_err();
        assert!(e.to_string().starts_with("m.toml:1:"), "{e}");
    }
}
