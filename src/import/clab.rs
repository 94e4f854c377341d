//! containerlab topologies (`*.clab.yml`): `name`, `topology.nodes`
//! with `kinds`, `groups` and `defaults` (a node's own setting wins, then
//! its group's, its kind's, the defaults'), and `links` between
//! `node:interface` endpoints, short or extended.
//!
//! Kinds: `linux` is an ns node, `bridge` and `ovs-bridge` a LAN of
//! clonet's switch, `frr` an ns node whose `startup-config` becomes its
//! `/etc/frr/frr.conf` with the daemons it needs started. A `host:IF`
//! endpoint is a host interface. Anything else is refused, naming the
//! kind and the node. containerlab's management network is not made:
//! clonet reaches its nodes without one.
//!
//! Owns: reading the YAML (sans-IO but for `load`, every error at
//! `file:line:col`) and writing the lab as Rhai. Must not touch: the lab.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};

use super::images::{ImagePolicy, ImageTarget};
use super::{comment, rhai_str, var, Converted, ImportError};

/// What a node becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Linux,
    Frr,
    Bridge,
}

/// Where something was written: line and column.
type At = (usize, usize);

/// A node after inheritance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClabNode {
    pub name: String,
    pub at: At,
    pub kind: Kind,
    pub image: Option<(String, At)>,
    pub env: BTreeMap<String, String>,
    /// `HOST:GUEST[:ro]`, host relative to the topology file.
    pub binds: Vec<(String, At)>,
    pub exec: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// `startup-config`, relative to the topology file.
    pub startup_config: Option<(String, At)>,
    /// `memory`, in MiB.
    pub memory: Option<u32>,
    /// `cpu`, in whole CPUs, and whether it was rounded up.
    pub cpu: Option<(u32, bool)>,
    /// Settings read but not mapped, with where.
    pub ignored: Vec<(String, At)>,
}

/// One end of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub node: String,
    pub iface: String,
    pub mac: Option<crate::vocab::MacAddr>,
    /// Where it is written.
    pub at: At,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClabLink {
    pub a: Endpoint,
    pub b: Endpoint,
    pub mtu: Option<u32>,
    pub at: At,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClabLab {
    pub file: PathBuf,
    pub name: String,
    pub nodes: Vec<ClabNode>,
    pub links: Vec<ClabLink>,
    pub has_mgmt: bool,
    pub warnings: Vec<String>,
}

fn at_of(span: &Span) -> At {
    span.start().map_or((1, 1), |m| (m.line(), m.column()))
}

struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn err(&self, at: At, msg: impl Into<String>) -> ImportError {
        ImportError::at(self.file, at.0, at.1, msg)
    }

    fn map<'n>(&self, node: &'n Node, what: &str) -> Result<&'n MarkedMappingNode, ImportError> {
        node.as_mapping().ok_or_else(|| self.err(at_of(node.span()), format!("{what} must be a mapping")))
    }

    fn scalar<'n>(&self, node: &'n Node, what: &str) -> Result<&'n MarkedScalarNode, ImportError> {
        node.as_scalar().ok_or_else(|| self.err(at_of(node.span()), format!("{what} must be a single value")))
    }

    fn strings(&self, node: &Node, what: &str) -> Result<Vec<(String, At)>, ImportError> {
        let seq = node.as_sequence().ok_or_else(|| self.err(at_of(node.span()), format!("{what} must be a list")))?;
        seq.iter().map(|n| self.scalar(n, what).map(|s| (s.as_str().to_string(), at_of(s.span())))).collect()
    }

    fn string_map(&self, node: &Node, what: &str) -> Result<BTreeMap<String, String>, ImportError> {
        let map = self.map(node, what)?;
        map.iter().map(|(k, v)| Ok((k.as_str().to_string(), self.scalar(v, what)?.as_str().to_string()))).collect()
    }
}

/// The settings one level (defaults, a kind, a group, a node) gives.
#[derive(Clone, Debug, Default)]
struct Level {
    kind: Option<(String, At)>,
    image: Option<(String, At)>,
    env: BTreeMap<String, String>,
    binds: Vec<(String, At)>,
    exec: Vec<String>,
    labels: BTreeMap<String, String>,
    startup_config: Option<(String, At)>,
    group: Option<(String, At)>,
    /// A memory limit (`memory: 512MB`), in MiB.
    memory: Option<u32>,
    /// A CPU limit (`cpu: 1.5`), in whole CPUs, and whether it was rounded.
    cpu: Option<(u32, bool)>,
    ignored: Vec<(String, At)>,
}

/// Settings clonet reads at every level.
const KEYS: &[&str] = &["kind", "image", "env", "binds", "exec", "labels", "startup-config", "group", "memory", "cpu"];

impl Reader<'_> {
    fn level(&self, node: &Node, what: &str) -> Result<Level, ImportError> {
        let map = self.map(node, what)?;
        let mut level = Level::default();
        for (k, v) in map.iter() {
            let key = k.as_str();
            let at = at_of(k.span());
            let one = |r: &Self| r.scalar(v, key).map(|s| (s.as_str().to_string(), at_of(s.span())));
            match key {
                "kind" => level.kind = Some(one(self)?),
                "image" => level.image = Some(one(self)?),
                "group" => level.group = Some(one(self)?),
                "startup-config" => level.startup_config = Some(one(self)?),
                "env" => level.env = self.string_map(v, "env")?,
                "labels" => level.labels = self.string_map(v, "labels")?,
                "binds" => level.binds = self.strings(v, "binds")?,
                "exec" => level.exec = self.strings(v, "exec")?.into_iter().map(|(s, _)| s).collect(),
                "memory" => {
                    let (text, at) = one(self)?;
                    level.memory = Some(super::memory_mib(&text).map_err(|e| self.err(at, format!("memory: {e}")))?);
                }
                "cpu" => {
                    let (text, at) = one(self)?;
                    level.cpu = Some(super::whole_cpus(&text).map_err(|e| self.err(at, format!("cpu: {e}")))?);
                }
                other => level.ignored.push((other.to_string(), at)),
            }
        }
        debug_assert!(level.ignored.iter().all(|(k, _)| !KEYS.contains(&k.as_str())));
        Ok(level)
    }
}

/// An endpoint `node:interface`.
fn endpoint(r: &Reader, text: &str, at: At) -> Result<Endpoint, ImportError> {
    let (node, iface) = text
        .split_once(':')
        .filter(|(n, i)| !n.is_empty() && !i.is_empty())
        .ok_or_else(|| r.err(at, format!("endpoint {text:?} is not NODE:INTERFACE")))?;
    Ok(Endpoint { node: node.to_string(), iface: iface.to_string(), mac: None, at })
}

/// Parses a topology's text.
pub fn parse(file: &str, text: &str) -> Result<ClabLab, ImportError> {
    let r = Reader { file };
    check_nesting(file, text)?;
    let options = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true).prevent_coercion(false);
    // The YAML library is third-party code fed an imported file: a panic
    // in it is a refusal of the file, not the end of clonet.
    let parsed = std::panic::catch_unwind(|| marked_yaml::parse_yaml_with_options(0, text, options))
        .map_err(|_| ImportError::file(file, "the YAML reader failed on this file"))?;
    let root = parsed.map_err(|e| {
        let text = e.to_string();
        let (line, col) = yaml_error_at(&e);
        let message = text.split_once(": ").map_or(text.as_str(), |(_, m)| m).to_string();
        let message = if message.contains("anchor") {
            format!("{message} (YAML anchors and aliases are not taken: write the values out)")
        } else {
            message
        };
        ImportError::at(file, line, col, message)
    })?;
    let top = root.as_mapping().ok_or_else(|| ImportError::at(file, 1, 1, "the topology must be a mapping"))?;
    let mut lab = ClabLab { file: file.into(), ..Default::default() };
    lab.name = match top.get_scalar("name") {
        Some(n) => n.as_str().to_string(),
        None => return Err(ImportError::at(file, 1, 1, "the topology has no name")),
    };
    lab.has_mgmt = top.get_node("mgmt").is_some();
    let topology = top.get_node("topology").ok_or_else(|| ImportError::at(file, 1, 1, "no topology: section"))?;
    let topology = r.map(topology, "topology")?;
    let defaults = topology.get_node("defaults").map(|n| r.level(n, "defaults")).transpose()?.unwrap_or_default();
    let mut kinds = BTreeMap::new();
    if let Some(k) = topology.get_node("kinds") {
        for (name, v) in r.map(k, "kinds")?.iter() {
            kinds.insert(name.as_str().to_string(), r.level(v, "a kind")?);
        }
    }
    let mut groups = BTreeMap::new();
    if let Some(g) = topology.get_node("groups") {
        for (name, v) in r.map(g, "groups")?.iter() {
            groups.insert(name.as_str().to_string(), r.level(v, "a group")?);
        }
    }
    let nodes = topology.get_node("nodes").ok_or_else(|| r.err(at_of(topology.span()), "no nodes: in topology"))?;
    for (name, v) in r.map(nodes, "nodes")?.iter() {
        let at = at_of(name.span());
        let name = name.as_str().to_string();
        if crate::lab::names::validate("node", &name).is_err() {
            return Err(r.err(
                at,
                format!(
                    "node name {name:?}: clonet takes letters, digits, - and _, starting with a letter, at most 32"
                ),
            ));
        }
        if lab.nodes.len() >= super::MAX_DEVICES {
            return Err(r.err(at, format!("more than {} nodes", super::MAX_DEVICES)));
        }
        let own =
            if v.as_scalar().is_some_and(|s| s.as_str().is_empty()) { Level::default() } else { r.level(v, "a node")? };
        let group = match &own.group {
            Some((g, gat)) => Some(groups.get(g).ok_or_else(|| r.err(*gat, format!("no group {g:?} in groups")))?),
            None => None,
        };
        let kind_text = own
            .kind
            .clone()
            .or_else(|| group.and_then(|g| g.kind.clone()))
            .or_else(|| defaults.kind.clone())
            .ok_or_else(|| r.err(at, format!("node {name} has no kind (nor its group, nor defaults)")))?;
        let kind = match kind_text.0.as_str() {
            "linux" => Kind::Linux,
            "frr" => Kind::Frr,
            "bridge" | "ovs-bridge" => Kind::Bridge,
            other => {
                return Err(r.err(
                    kind_text.1,
                    format!("node {name}: kind {other:?} is not one clonet runs (linux, frr, bridge, ovs-bridge)"),
                ))
            }
        };
        let kind_level = kinds.get(&kind_text.0);
        // containerlab's order: the node, its group, its kind, defaults.
        let levels: Vec<&Level> = [Some(&own), group, kind_level, Some(&defaults)].into_iter().flatten().collect();
        let first = |f: fn(&Level) -> Option<(String, At)>| levels.iter().find_map(|l| f(l));
        let mut env = BTreeMap::new();
        let mut labels = BTreeMap::new();
        let mut binds: Vec<(String, At)> = Vec::new();
        for l in levels.iter().rev() {
            env.extend(l.env.clone());
            labels.extend(l.labels.clone());
            for b in &l.binds {
                // A later (closer) bind of the same target replaces it.
                let target = |s: &str| s.split(':').nth(1).unwrap_or("").to_string();
                binds.retain(|(old, _)| target(old) != target(&b.0));
                binds.push(b.clone());
            }
        }
        let exec = levels.iter().find(|l| !l.exec.is_empty()).map(|l| l.exec.clone()).unwrap_or_default();
        let mut ignored: Vec<(String, At)> = own.ignored.clone();
        ignored.extend(group.map(|g| g.ignored.clone()).unwrap_or_default());
        lab.nodes.push(ClabNode {
            name,
            at,
            kind,
            image: first(|l| l.image.clone()),
            env,
            binds,
            exec,
            labels,
            startup_config: first(|l| l.startup_config.clone()),
            memory: levels.iter().find_map(|l| l.memory),
            cpu: levels.iter().find_map(|l| l.cpu),
            ignored,
        });
    }
    if let Some(links) = topology.get_node("links") {
        let seq = links.as_sequence().ok_or_else(|| r.err(at_of(links.span()), "links must be a list"))?;
        for l in seq.iter() {
            let at = at_of(l.span());
            let map = r.map(l, "a link")?;
            if lab.links.len() >= super::MAX_LINKS {
                return Err(r.err(at, format!("more than {} links", super::MAX_LINKS)));
            }
            let link_type = map.get_scalar("type").map(|t| t.as_str().to_string());
            let mtu = match map.get_scalar("mtu") {
                Some(m) => Some(
                    m.as_str()
                        .parse::<u32>()
                        .ok()
                        .filter(|v| crate::vocab::Mtu::new(i64::from(*v)).is_ok())
                        .ok_or_else(|| r.err(at_of(m.span()), format!("mtu {:?} is not an MTU", m.as_str())))?,
                ),
                None => None,
            };
            let ends: Vec<Endpoint> = match link_type.as_deref() {
                None | Some("veth") => {
                    let eps = map
                        .get_node("endpoints")
                        .ok_or_else(|| r.err(at, "a link needs endpoints: [\"a:eth1\", \"b:eth1\"]"))?;
                    let seq = eps.as_sequence().ok_or_else(|| r.err(at_of(eps.span()), "endpoints must be a list"))?;
                    seq.iter()
                        .map(|e| {
                            let eat = at_of(e.span());
                            if let Some(s) = e.as_scalar() {
                                return endpoint(&r, s.as_str(), eat);
                            }
                            let m = r.map(e, "an endpoint")?;
                            let node = m.get_scalar("node").ok_or_else(|| r.err(eat, "an endpoint needs node:"))?;
                            let iface =
                                m.get_scalar("interface").ok_or_else(|| r.err(eat, "an endpoint needs interface:"))?;
                            let mac = match m.get_scalar("mac") {
                                Some(mac) => Some(
                                    mac.as_str().parse().map_err(|e| r.err(at_of(mac.span()), format!("mac: {e}")))?,
                                ),
                                None => None,
                            };
                            Ok(Endpoint { node: node.as_str().into(), iface: iface.as_str().into(), mac, at: eat })
                        })
                        .collect::<Result<_, _>>()?
                }
                Some("host") => {
                    let e = map.get_node("endpoint").ok_or_else(|| r.err(at, "a host link needs endpoint:"))?;
                    let m = r.map(e, "endpoint")?;
                    let node = m.get_scalar("node").ok_or_else(|| r.err(at, "endpoint needs node:"))?;
                    let iface = m.get_scalar("interface").ok_or_else(|| r.err(at, "endpoint needs interface:"))?;
                    let host = map
                        .get_scalar("host-interface")
                        .ok_or_else(|| r.err(at, "a host link needs host-interface:"))?;
                    vec![
                        Endpoint {
                            node: node.as_str().into(),
                            iface: iface.as_str().into(),
                            mac: None,
                            at: at_of(node.span()),
                        },
                        Endpoint {
                            node: "host".into(),
                            iface: host.as_str().into(),
                            mac: None,
                            at: at_of(host.span()),
                        },
                    ]
                }
                Some(other) => {
                    return Err(r.err(at, format!("link type {other:?} is not one clonet makes (veth, host)")));
                }
            };
            let [a, b]: [Endpoint; 2] = ends.try_into().map_err(|_| r.err(at, "a link has exactly two endpoints"))?;
            for e in [&a, &b] {
                if e.node == "mgmt-net" || e.node == "macvlan" {
                    return Err(r.err(e.at, format!("{}: clonet has no {} endpoints", e.node, e.node)));
                }
                if e.node != "host" && !lab.nodes.iter().any(|n| n.name == e.node) {
                    return Err(r.err(e.at, format!("endpoint {}:{}: no node {:?}", e.node, e.iface, e.node)));
                }
            }
            if a.node == "host" && b.node == "host" {
                return Err(r.err(at, "a link between two host interfaces"));
            }
            lab.links.push(ClabLink { a, b, mtu, at });
        }
    }
    Ok(lab)
}

/// The deepest nesting taken: flow brackets or block indentation. The
/// YAML reader recurses once per level, and a file from elsewhere must
/// not exhaust the stack.
const MAX_NESTING: usize = 64;

fn check_nesting(file: &str, text: &str) -> Result<(), ImportError> {
    // Flow brackets may span lines: their depth is carried over.
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        let mut deepest = depth;
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if indent / 2 + deepest > MAX_NESTING {
            return Err(ImportError::at(file, n + 1, 1, format!("nested more than {MAX_NESTING} levels deep")));
        }
    }
    let open = text.chars().filter(|c| matches!(c, '[' | '{')).count();
    if open > 100_000 {
        return Err(ImportError::at(file, 1, 1, "more than 100000 brackets"));
    }
    Ok(())
}

/// Where a YAML error is.
fn yaml_error_at(e: &marked_yaml::LoadError) -> At {
    use marked_yaml::LoadError::*;
    match e {
        TopLevelMustBeMapping(m)
        | TopLevelMustBeSequence(m)
        | UnexpectedAnchor(m)
        | MappingKeyMustBeScalar(m)
        | UnexpectedTag(m)
        | ScanError(m, _) => (m.line(), m.column()),
        DuplicateKey(inner) => inner.key.span().start().map_or((1, 1), |m| (m.line(), m.column())),
        #[allow(unreachable_patterns)]
        _ => (1, 1),
    }
}

/// Reads a topology file, checking the files it names.
pub fn load(file: &Path) -> Result<ClabLab, ImportError> {
    let name = file.display().to_string();
    let mut lab = parse(&name, &super::read_bounded(file)?)?;
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    for n in &lab.nodes {
        if let Some((cfg, at)) = &n.startup_config {
            if !dir.join(cfg).is_file() {
                return Err(ImportError::at(
                    &name,
                    at.0,
                    at.1,
                    format!("{}: startup-config {cfg} is not a file", n.name),
                ));
            }
        }
        for (b, at) in &n.binds {
            let host = b.split(':').next().unwrap_or("");
            let err = |why: String| ImportError::at(&name, at.0, at.1, format!("{}: binds: {host} {why}", n.name));
            let (Ok(inside), Ok(root)) = (std::fs::canonicalize(dir.join(host)), std::fs::canonicalize(dir)) else {
                return Err(err("does not exist".into()));
            };
            // A lab from elsewhere shows its nodes its own files, not the host's.
            if !inside.starts_with(&root) {
                return Err(err(format!("is outside the topology's directory {}: refused", root.display())));
            }
        }
    }
    lab.file = file.to_path_buf();
    Ok(lab)
}

impl ClabLab {
    fn node(&self, name: &str) -> Option<&ClabNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn is_bridge(&self, name: &str) -> bool {
        self.node(name).is_some_and(|n| n.kind == Kind::Bridge)
    }

    /// The topology as a Rhai script.
    pub fn to_rhai(&self, images: &ImagePolicy, lab_dir: &str) -> Result<Converted, ImportError> {
        let file = self.file.display().to_string();
        let mut warnings = self.warnings.clone();
        let mut roots = BTreeMap::new();
        let mut needed = Vec::new();
        for n in self.nodes.iter().filter(|n| n.kind != Kind::Bridge) {
            let Some((image, at)) = &n.image else {
                return Err(ImportError::at(&file, n.at.0, n.at.1, format!("node {} has no image", n.name)));
            };
            let target = images.resolve(image);
            if let ImageTarget::Image(r) = &target {
                needed.push((r.clone(), format!("{file}:{}:{}", at.0, at.1), n.name.clone()));
            }
            roots.insert(n.name.clone(), (image.clone(), target));
        }
        let mut out = String::new();
        comment(
            &mut out,
            "",
            &format!(
                "containerlab topology {:?} from {file}, written as Rhai by `clonet convert`.\nlinux and frr nodes are ns nodes, bridges LANs of clonet's switch.",
                self.name
            ),
        );
        if self.has_mgmt {
            comment(&mut out, "", "The management network (mgmt:) is not made: clonet reaches its nodes without one.");
        }
        if roots.values().any(|(_, t)| *t == ImageTarget::Host) {
            comment(
                &mut out,
                "",
                &format!("Images run on the host's own root ({}): the host needs their programs.", images.describe()),
            );
        }
        if self.nodes.iter().any(|n| n.kind == Kind::Frr) {
            let _ = writeln!(out, "import \"frr\" as frr;\n");
        }
        let _ = writeln!(out, "// The topology file's directory: binds and startup-config are found from it.");
        let _ = writeln!(out, "let lab = {};", rhai_str(lab_dir));
        let _ = writeln!(out, "lab_info(#{{ title: {} }});", rhai_str(&self.name));
        let _ = writeln!(out, "\n// Nodes (kinds, groups and defaults applied).");
        for n in &self.nodes {
            let v = var("n", &n.name);
            if n.kind == Kind::Bridge {
                let _ = writeln!(out, "let {} = lan({});   // kind bridge", var("l", &n.name), rhai_str(&n.name));
                continue;
            }
            let (image, target) = &roots[&n.name];
            // Literals joined to `lab`, never template text: a path cannot
            // become code.
            let mut binds = vec!["lab + \":/hostlab:ro\"".to_string()];
            for (b, at) in &n.binds {
                let host = b.split(':').next().unwrap_or("");
                if crate::vocab::Bind::parse(&format!("/lab/{b}")).is_err() || Path::new(host).is_absolute() {
                    return Err(ImportError::at(
                        &file,
                        at.0,
                        at.1,
                        format!(
                            "{}: binds: {b:?} is not RELATIVE_HOST_PATH:/PATH[:ro] (imported labs bind only their own files)",
                            n.name
                        ),
                    ));
                }
                binds.push(format!("lab + {}", rhai_str(&format!("/{b}"))));
            }
            let mut opts = Vec::new();
            match target {
                ImageTarget::Host => {
                    let _ =
                        writeln!(out, "// {}: kind {}, image {image}, on the host's root", n.name, kind_name(n.kind));
                }
                ImageTarget::Rootfs(dir) => {
                    let _ = writeln!(out, "// {}: image {image}, as the directory {}", n.name, dir.display());
                    opts.push(format!("rootfs: {}", rhai_str(&dir.display().to_string())));
                }
                ImageTarget::Image(r) => {
                    let _ = writeln!(out, "// {}: kind {}", n.name, kind_name(n.kind));
                    opts.push(format!("image: {}", rhai_str(r)));
                }
            }
            opts.push(format!("binds: [{}]", binds.join(", ")));
            if !n.env.is_empty() {
                if let Some(k) = n.env.keys().find(|k| !crate::vocab::node::is_env_name(k)) {
                    return Err(ImportError::at(
                        &file,
                        n.at.0,
                        n.at.1,
                        format!("{}: env {k:?} is not a variable name", n.name),
                    ));
                }
                let vars: Vec<String> =
                    n.env.iter().map(|(k, v)| format!("{}: {}", rhai_str(k), rhai_str(v))).collect();
                opts.push(format!("env: #{{ {} }}", vars.join(", ")));
            }
            if !n.labels.is_empty() {
                let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                comment(&mut out, "", &format!("  labels: {}", labels.join(", ")));
            }
            if let Some(mib) = n.memory {
                opts.push(format!("mem: {mib}"));
            }
            if let Some((cpus, rounded)) = n.cpu {
                if rounded {
                    let _ = writeln!(out, "//   cpu: rounded up to {cpus} (clonet limits ns nodes to whole CPUs)");
                }
                opts.push(format!("cpus: {cpus}"));
            }
            for (key, at) in &n.ignored {
                let _ = writeln!(out, "//   {key} (line {}): no clonet equivalent", at.0);
                warnings.push(format!("{file}:{}:{}: {}: {key} is not taken", at.0, at.1, n.name));
            }
            let _ = writeln!(out, "let {v} = node({}, #{{ {} }});", rhai_str(&n.name), opts.join(", "));
        }
        let _ = writeln!(out, "\n// Links.");
        let mut host_lans = 0;
        for l in &self.links {
            let (a, b) = (&l.a, &l.b);
            let mut mtu = String::new();
            if let Some(m) = l.mtu {
                mtu = format!(", mtu: {m}");
            }
            let mac = |key: &str, e: &Endpoint| e.mac.map(|m| format!(", {key}: \"{m}\"")).unwrap_or_default();
            match (a.node == "host" || b.node == "host", self.is_bridge(&a.node), self.is_bridge(&b.node)) {
                (true, _, _) => {
                    let (host, node) = if a.node == "host" { (a, b) } else { (b, a) };
                    if !valid_ifname(&host.iface) {
                        return Err(ImportError::at(
                            &file,
                            l.at.0,
                            l.at.1,
                            format!("host:{} is not an interface name", host.iface),
                        ));
                    }
                    if self.is_bridge(&node.node) {
                        let _ = writeln!(
                            out,
                            "host_iface({}, #{{ name: {} }});",
                            var("l", &node.node),
                            rhai_str(&host.iface)
                        );
                    } else {
                        host_lans += 1;
                        let lan = format!("host-{host_lans}");
                        let _ = writeln!(
                            out,
                            "// {}:{} to the host's {}: a LAN of the two",
                            node.node, node.iface, host.iface
                        );
                        let _ = writeln!(out, "let {} = lan({});", var("l", &lan), rhai_str(&lan));
                        let _ = writeln!(
                            out,
                            "link({}, {}, #{{ iface: {}{}{mtu} }});",
                            var("n", &node.node),
                            var("l", &lan),
                            rhai_str(&node.iface),
                            mac("mac", node)
                        );
                        let _ =
                            writeln!(out, "host_iface({}, #{{ name: {} }});", var("l", &lan), rhai_str(&host.iface));
                    }
                }
                (false, true, true) => {
                    let _ = writeln!(out, "link({}, {});", var("l", &a.node), var("l", &b.node));
                }
                (false, false, true) | (false, true, false) => {
                    let (bridge, node) = if self.is_bridge(&a.node) { (a, b) } else { (b, a) };
                    let _ = writeln!(
                        out,
                        "link({}, {}, #{{ iface: {}{}{mtu} }});",
                        var("n", &node.node),
                        var("l", &bridge.node),
                        rhai_str(&node.iface),
                        mac("mac", node)
                    );
                }
                (false, false, false) => {
                    let _ = writeln!(
                        out,
                        "link({}, {}, #{{ iface_a: {}, iface_b: {}{}{}{mtu} }});",
                        var("n", &a.node),
                        var("n", &b.node),
                        rhai_str(&a.iface),
                        rhai_str(&b.iface),
                        mac("mac_a", a),
                        mac("mac_b", b)
                    );
                }
            }
        }
        let starts: Vec<&ClabNode> =
            self.nodes.iter().filter(|n| n.startup_config.is_some() || !n.exec.is_empty()).collect();
        if !starts.is_empty() {
            let _ = writeln!(out, "\n// Once the links exist: startup-config, then exec.");
        }
        for n in starts {
            let v = var("n", &n.name);
            if let Some((cfg, _)) = &n.startup_config {
                if n.kind == Kind::Frr {
                    // A router forwards: a new network namespace does not.
                    let _ = writeln!(out, "{v}.sysctl(\"net.ipv4.ip_forward\", \"1\");");
                    let _ = writeln!(out, "{v}.sysctl(\"net.ipv6.conf.all.forwarding\", \"1\");");
                    let _ = writeln!(
                        out,
                        "frr::start({v}, {v}.exec([\"cat\", {}]).stdout);",
                        rhai_str(&format!("/hostlab/{cfg}"))
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "// {}: startup-config is for kind frr; linux nodes have no configuration to load",
                        n.name
                    );
                    warnings.push(format!(
                        "{file}:{}:{}: {}: startup-config on a linux node is not used",
                        n.at.0, n.at.1, n.name
                    ));
                }
            }
            if !n.exec.is_empty() {
                // containerlab reports a failed exec and goes on: so does this.
                let cmds: Vec<String> = n.exec.iter().map(|c| rhai_str(c)).collect();
                let _ = writeln!(
                    out,
                    "for c in [{}] {{ let r = {v}.exec(c); if !r.ok {{ warn(`{}: exec ${{c}}: status ${{r.status}} ${{r.stderr.trimmed()}}`); }} }}",
                    cmds.join(", "),
                    n.name
                );
            }
        }
        Ok(Converted { script: out, warnings, images: needed })
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Linux => "linux",
        Kind::Frr => "frr",
        Kind::Bridge => "bridge",
    }
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPO: &str = "\
name: ospf
mgmt:
  network: custom
topology:
  defaults:
    env:
      LEVEL: defaults
      FROM_DEFAULTS: yes
  kinds:
    linux:
      image: alpine:3
      env:
        LEVEL: kind
  groups:
    routers:
      kind: frr
      image: quay.io/frrouting/frr:9.1.0
      memory: 256MB
      cpu: 1.5
      env:
        LEVEL: group
  nodes:
    r1:
      group: routers
      startup-config: r1.conf
      env:
        LEVEL: node
    r2:
      group: routers
      startup-config: r2.conf
    h1:
      kind: linux
      binds:
        - shared:/shared
      exec:
        - ip addr add 10.0.1.2/24 dev eth1
      labels:
        role: client
    sw:
      kind: bridge
  links:
    - endpoints: [\"r1:eth1\", \"r2:eth1\"]
    - endpoints: [\"h1:eth1\", \"sw:p1\"]
    - type: veth
      mtu: 9000
      endpoints:
        - node: r1
          interface: eth2
          mac: 02:00:00:00:00:21
        - node: sw
          interface: p2
";

    #[test]
    fn nodes_inherit_from_their_group_kind_and_defaults_in_containerlab_order() {
        let lab = parse("t.clab.yml", TOPO).unwrap();
        assert_eq!(lab.name, "ospf");
        let r1 = lab.node("r1").unwrap();
        assert_eq!(r1.kind, Kind::Frr);
        assert_eq!(r1.image.as_ref().unwrap().0, "quay.io/frrouting/frr:9.1.0");
        assert_eq!(r1.env["LEVEL"], "node");
        assert_eq!(r1.env["FROM_DEFAULTS"], "yes");
        assert_eq!(lab.node("r2").unwrap().env["LEVEL"], "group");
        assert_eq!((r1.memory, r1.cpu), (Some(256), Some((2, true))), "limits come from the group");
        let h1 = lab.node("h1").unwrap();
        assert_eq!(
            (h1.kind, h1.env["LEVEL"].as_str(), h1.image.as_ref().unwrap().0.as_str()),
            (Kind::Linux, "kind", "alpine:3")
        );
        assert_eq!(h1.labels["role"], "client");
        assert_eq!(lab.links.len(), 3);
        assert_eq!(lab.links[2].a.mac, Some("02:00:00:00:00:21".parse().unwrap()));
        assert_eq!(lab.links[2].mtu, Some(9000));
    }

    #[test]
    fn the_script_links_nodes_bridges_and_starts_frr() {
        let lab = parse("/t/t.clab.yml", TOPO).unwrap();
        let named = lab.to_rhai(&ImagePolicy::AsNamed, ".").unwrap();
        assert!(
            named.images.iter().any(|(r, _, n)| r == "quay.io/frrouting/frr:9.1.0" && n == "r1"),
            "{:?}",
            named.images
        );
        assert!(named.script.contains("image: \"alpine:3\""), "{}", named.script);
        let s = lab.to_rhai(&ImagePolicy::Host, ".").unwrap().script;
        for needle in [
            "let l_sw = lan(\"sw\");",
            "link(n_r1, n_r2, #{ iface_a: \"eth1\", iface_b: \"eth1\" });",
            "link(n_h1, l_sw, #{ iface: \"eth1\" });",
            "link(n_r1, l_sw, #{ iface: \"eth2\", mac: \"02:00:00:00:00:21\", mtu: 9000 });",
            "frr::start(n_r1, n_r1.exec([\"cat\", \"/hostlab/r1.conf\"]).stdout);",
            "binds: [lab + \":/hostlab:ro\", lab + \"/shared:/shared\"]",
            "The management network (mgmt:) is not made",
            "mem: 256, cpus: 2 });",
            "//   cpu: rounded up to 2",
        ] {
            assert!(s.contains(needle), "{needle}\n{s}");
        }
        rhai::Engine::new().compile(&s).unwrap();
    }

    #[test]
    fn what_clonet_cannot_make_is_refused_with_its_place() {
        let cases = [
            ("name: x\ntopology:\n  nodes:\n    r1:\n      kind: nokia_srlinux\n", 5, 13, "kind \"nokia_srlinux\""),
            ("name: x\ntopology:\n  nodes:\n    r1:\n      image: a\n", 4, 5, "has no kind"),
            ("name: x\ntopology:\n  nodes:\n    r1: {kind: linux, group: g}\n", 4, 30, "no group \"g\""),
            ("name: x\ntopology:\n  nodes:\n    1r: {kind: linux}\n", 4, 5, "node name"),
            (
                "name: x\ntopology:\n  nodes:\n    a: {kind: linux}\n  links:\n    - endpoints: [\"a:e1\", \"b:e1\"]\n",
                6,
                27,
                "no node \"b\"",
            ),
            (
                "name: x\ntopology:\n  nodes:\n    a: {kind: linux}\n  links:\n    - endpoints: [\"a\", \"a:e1\"]\n",
                6,
                19,
                "NODE:INTERFACE",
            ),
            ("name: x\ntopology:\n  nodes:\n    a: {kind: linux}\n    a: {kind: linux}\n", 5, 5, "uplicate"),
            ("name: x\ntopology:\n  nodes: &n\n    a: {kind: linux}\n", 4, 6, "anchors"),
            ("name: x\ntopology: [\n", 3, 1, ""),
            ("name: x\ntopology:\n  nodes:\n    a: {kind: linux, memory: lots}\n", 4, 30, "memory: \"lots\""),
            ("name: x\ntopology:\n  nodes:\n    a: {kind: linux, cpu: 0}\n", 4, 27, "cpu: \"0\" is out of range"),
        ];
        for (text, line, col, needle) in cases {
            let e = parse("t.clab.yml", text).unwrap_err();
            assert_eq!((e.line, e.col), (Some(line), Some(col)), "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
        // An alias to nothing is an error, not a crash; nesting is bounded.
        assert!(parse("t.clab.yml", "name: x\ntopology: *nothing\n").is_err());
        let deep = format!("name: x\ntopology: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse("t.clab.yml", &deep).unwrap_err().to_string().contains("nested more than 64"));
    }
}
