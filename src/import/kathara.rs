//! Kathará labs: a directory with `lab.conf` (devices, their interfaces
//! on collision domains, their options, `LAB_*` facts), `lab.dep` (start
//! order), a directory of files per device copied into its root,
//! `DEVICE.startup` shell scripts, and `shared/` and `shared.startup` for
//! every device.
//!
//! The format's device defaults are part of it, and labs that route rely
//! on them: IPv4 forwarding on, `rp_filter` off, no ICMP rate limit, and
//! IPv6 off unless a device asks for it (then forwarding on). The
//! `kathara` stdlib module applies them, runs the start-up files and
//! gives the devices a `systemctl` that runs `/etc/init.d` scripts.
//!
//! Owns: reading lab.conf and lab.dep (sans-IO) and writing the lab as
//! Rhai. Must not touch: the lab.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::images::{ImagePolicy, ImageTarget};
use super::{comment, rhai_str, var, Converted, ImportError};
use crate::vocab::MacAddr;

/// The image Kathará gives a device that names none.
pub const DEFAULT_IMAGE: &str = "kathara/base";

/// The highest interface number taken (`eth0` … `eth255`).
const MAX_IFACE: u32 = 255;

/// One interface of a device: `dev[N]=CD` or `dev[N]=CD/MAC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub domain: String,
    pub mac: Option<MacAddr>,
    pub line: usize,
}

/// A host port published to the device: `dev[port]=HOST:GUEST/PROTO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub host: u16,
    pub guest: u16,
    pub protocol: String,
}

/// A device of `lab.conf`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    /// The line that first named it.
    pub line: usize,
    pub ifaces: BTreeMap<u32, Iface>,
    pub image: Option<(String, usize)>,
    pub mem: Option<String>,
    pub cpus: Option<String>,
    pub bridged: bool,
    pub ipv6: Option<bool>,
    pub sysctls: Vec<(String, String)>,
    pub exec: Vec<String>,
    pub ports: Vec<Port>,
    pub env: Vec<(String, String)>,
    /// `volume`: `HOST|GUEST` pairs (host relative to the lab).
    pub volumes: Vec<(String, String)>,
    /// Options read but with no clonet equivalent: (option, value, line).
    pub ignored: Vec<(String, String, usize)>,
    /// Whether the lab has `DEVICE/` and `DEVICE.startup`.
    pub has_dir: bool,
    pub has_startup: bool,
}

/// A whole Kathará lab.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KatharaLab {
    pub dir: PathBuf,
    /// `LAB_DESCRIPTION` and friends, as `lab_info` keys.
    pub about: Vec<(String, String)>,
    /// In the order lab.conf first names them.
    pub devices: Vec<Device>,
    /// Device names in start order (lab.dep, else lab.conf's).
    pub order: Vec<String>,
    pub has_shared_dir: bool,
    pub has_shared_startup: bool,
    /// Notes for the converted script: lines read but not mapped.
    pub warnings: Vec<String>,
}

/// Names Kathará reserves, which a device may not take.
const RESERVED: &[&str] = &["shared", "_test", "_lab"];

/// `LAB_*` keys and what `lab_info` calls them.
const LAB_FACTS: &[(&str, &str)] = &[
    ("LAB_NAME", "title"),
    ("LAB_DESCRIPTION", "description"),
    ("LAB_VERSION", "version"),
    ("LAB_AUTHOR", "author"),
    ("LAB_EMAIL", "email"),
    ("LAB_WEB", "web"),
];

/// A value as lab.conf writes it: optionally in matching quotes, with an
/// optional `# comment` after blanks.
fn unquote(raw: &str) -> Option<&str> {
    let raw = raw.trim();
    let raw = match raw.find(" #").or_else(|| raw.find("\t#")) {
        Some(i) if !raw.starts_with(['"', '\'']) || raw[..i].trim_end().ends_with(['"', '\'']) => raw[..i].trim_end(),
        _ => raw,
    };
    for q in ['"', '\''] {
        if let Some(inner) = raw.strip_prefix(q) {
            return inner.strip_suffix(q).filter(|v| !v.contains(q));
        }
    }
    (!raw.contains(['"', '\''])).then_some(raw)
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `lab.conf`'s text (`file` names it in errors).
pub fn parse_lab_conf(file: &str, text: &str) -> Result<KatharaLab, ImportError> {
    let mut lab = KatharaLab::default();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (n, raw_line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw_line.trim_start_matches('\u{feff}').trim_end_matches('\r');
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let col = line.len() - line.trim_start().len() + 1;
        let err = |c: usize, msg: String| ImportError::at(file, line_no, c, msg);
        let Some((left, right)) = trimmed.split_once('=') else {
            return Err(err(col, format!("expected DEVICE[OPTION]=VALUE or LAB_…=VALUE, got {trimmed:?}")));
        };
        let value_col = col + left.len() + 1;
        let Some(value) = unquote(right) else {
            return Err(err(value_col, format!("unbalanced quotes in {right:?}")));
        };
        if let Some((key, _)) = LAB_FACTS.iter().find(|(k, _)| *k == left) {
            let about_key = LAB_FACTS.iter().find(|(k, _)| k == key).map(|(_, a)| *a).unwrap_or("title");
            lab.about.retain(|(k, _)| k != about_key);
            lab.about.push((about_key.to_string(), value.to_string()));
            continue;
        }
        let Some((device, option)) = left.strip_suffix(']').and_then(|l| l.split_once('[')) else {
            return Err(err(col, format!("expected DEVICE[OPTION]=VALUE or LAB_…=VALUE, got {trimmed:?}")));
        };
        if !is_word(device) || device.len() > 30 || device.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err(col, format!("{device:?} is not a device name: up to 30 of a-z, 0-9 and _")));
        }
        if RESERVED.contains(&device) {
            return Err(err(col, format!("{device:?} is a name Kathará reserves")));
        }
        if crate::lab::names::validate("node", device).is_err() {
            return Err(err(col, format!("device {device:?}: clonet node names start with a letter")));
        }
        if !is_word(option) {
            return Err(err(col + device.len() + 1, format!("{option:?} is not an interface number or option")));
        }
        if value.is_empty() {
            return Err(err(value_col, format!("{device}[{option}] has no value")));
        }
        let at = *index.entry(device.to_string()).or_insert_with(|| {
            lab.devices.push(Device { name: device.to_string(), line: line_no, ..Default::default() });
            lab.devices.len() - 1
        });
        if lab.devices.len() > super::MAX_DEVICES {
            return Err(err(col, format!("more than {} devices", super::MAX_DEVICES)));
        }
        let d = &mut lab.devices[at];
        if let Ok(number) = option.parse::<u32>() {
            if number > MAX_IFACE {
                return Err(err(col, format!("interface number {number} is above {MAX_IFACE}")));
            }
            let (domain, mac) = match value.split_once('/') {
                Some((cd, mac)) => {
                    let mac: MacAddr = mac.parse().map_err(|e| err(value_col, format!("{device}[{number}]: {e}")))?;
                    (cd, Some(mac))
                }
                None => (value, None),
            };
            if !is_word(domain) {
                return Err(err(value_col, format!("collision domain {domain:?}: letters, digits and _ only")));
            }
            if let Some(old) = d.ifaces.get(&number) {
                return Err(err(col, format!("{device}[{number}] is already on {} (line {})", old.domain, old.line)));
            }
            if let Some((n, old)) = d.ifaces.iter().find(|(_, i)| i.domain == domain) {
                return Err(err(
                    value_col,
                    format!("{device} is already on collision domain {domain} (eth{n}, line {})", old.line),
                ));
            }
            d.ifaces.insert(number, Iface { domain: domain.to_string(), mac, line: line_no });
            continue;
        }
        let bad = |msg: String| err(value_col, format!("{device}[{option}]: {msg}"));
        match option {
            "image" => {
                if !super::images::valid_image_name(value) {
                    return Err(bad(format!("{value:?} is not an image name")));
                }
                d.image = Some((value.to_string(), line_no));
            }
            "mem" => {
                super::memory_mib(value).map_err(bad)?;
                d.mem = Some(value.to_string());
            }
            "cpus" => {
                super::whole_cpus(value).map_err(bad)?;
                d.cpus = Some(value.to_string());
            }
            "bridged" => d.bridged = parse_bool(value).ok_or_else(|| bad(format!("{value:?} is not true or false")))?,
            "ipv6" => d.ipv6 = Some(parse_bool(value).ok_or_else(|| bad(format!("{value:?} is not true or false")))?),
            "sysctl" => {
                let (k, v) = value.split_once('=').ok_or_else(|| bad("expected net.KEY=VALUE".into()))?;
                if !k.starts_with("net.") || crate::vocab::node::sysctl_path(k).is_err() {
                    return Err(bad(format!("{k:?} is not a key under net. (Kathará takes only those)")));
                }
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    return Err(bad(format!("{v:?} is not a sysctl value")));
                }
                d.sysctls.push((k.to_string(), v.to_string()));
            }
            "exec" => d.exec.push(value.to_string()),
            "port" => d.ports.push(parse_port(value).ok_or_else(|| bad("expected [HOST:]GUEST[/tcp|/udp]".into()))?),
            "env" => {
                let (k, v) = value.split_once('=').ok_or_else(|| bad("expected NAME=VALUE".into()))?;
                if !crate::vocab::node::is_env_name(k) {
                    return Err(bad(format!("{k:?} is not a variable name")));
                }
                d.env.push((k.to_string(), v.to_string()));
            }
            "volume" => {
                let (host, guest) = value.split_once('|').ok_or_else(|| bad("expected HOST|GUEST".into()))?;
                d.volumes.push((host.to_string(), guest.to_string()));
            }
            "shell" | "num_terms" | "privileged" | "ulimit" | "hosts" | "entrypoint" => {
                d.ignored.push((option.to_string(), value.to_string(), line_no))
            }
            other => {
                lab.warnings
                    .push(format!("{file}:{line_no}:{col}: {device}[{other}] is not a Kathará option: ignored"));
            }
        }
    }
    for d in &lab.devices {
        if let Some(missing) = (0..d.ifaces.len() as u32).find(|n| !d.ifaces.contains_key(n)) {
            let line = d.ifaces.values().map(|i| i.line).max().unwrap_or(d.line);
            return Err(ImportError::at(
                file,
                line,
                1,
                format!("{} has no interface {missing}: Kathará numbers them from 0 without gaps", d.name),
            ));
        }
    }
    let links: usize = lab.devices.iter().map(|d| d.ifaces.len()).sum();
    if links > super::MAX_LINKS {
        return Err(ImportError::file(file, format!("more than {} interfaces", super::MAX_LINKS)));
    }
    lab.order = lab.devices.iter().map(|d| d.name.clone()).collect();
    Ok(lab)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" | "t" => Some(true),
        "false" | "no" | "n" | "off" | "0" | "f" => Some(false),
        _ => None,
    }
}

/// `[HOST:]GUEST[/PROTO]`; Kathará's default host port is 3000.
fn parse_port(v: &str) -> Option<Port> {
    let (ports, protocol) = v.split_once('/').unwrap_or((v, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    if protocol != "tcp" && protocol != "udp" {
        return None;
    }
    let (host, guest) = match ports.split_once(':') {
        Some((h, g)) => (h.parse().ok()?, g.parse().ok()?),
        None => (3000, ports.parse().ok()?),
    };
    (host != 0 && guest != 0).then_some(Port { host, guest, protocol })
}

/// Applies `lab.dep` (`DEVICE: DEP DEP…`, one device per line): the start
/// order puts every device after those it depends on, otherwise keeping
/// lab.conf's order. A cycle is an error naming it.
pub fn apply_lab_dep(lab: &mut KatharaLab, file: &str, text: &str) -> Result<(), ImportError> {
    let names: BTreeSet<&str> = lab.devices.iter().map(|d| d.name.as_str()).collect();
    let mut deps: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.split('#').next().unwrap_or("").trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((left, right)) = line.split_once(':') else {
            return Err(ImportError::at(file, line_no, 1, format!("expected DEVICE: DEVICE…, got {:?}", line.trim())));
        };
        let device = left.trim();
        let at_col = |word: &str| line.find(word).map_or(1, |i| i + 1);
        if !names.contains(device) {
            return Err(ImportError::at(
                file,
                line_no,
                at_col(device),
                format!("{device:?} is not a device of lab.conf"),
            ));
        }
        let list = right.split_whitespace().collect::<Vec<_>>();
        if list.is_empty() {
            return Err(ImportError::at(file, line_no, line.len() + 1, format!("{device} depends on nothing")));
        }
        for dep in list {
            if !names.contains(dep) {
                return Err(ImportError::at(
                    file,
                    line_no,
                    at_col(dep),
                    format!("{dep:?} is not a device of lab.conf"),
                ));
            }
            deps.entry(device.to_string()).or_default().push((dep.to_string(), line_no));
        }
    }
    // Depth-first, in lab.conf's order: a device goes after what it needs.
    let mut order = Vec::new();
    let mut state: BTreeMap<String, u8> = BTreeMap::new(); // 1 visiting, 2 done
    fn visit(
        d: &str,
        deps: &BTreeMap<String, Vec<(String, usize)>>,
        state: &mut BTreeMap<String, u8>,
        order: &mut Vec<String>,
        path: &mut Vec<(String, usize)>,
    ) -> Result<(), (Vec<String>, usize)> {
        match state.get(d) {
            Some(2) => return Ok(()),
            Some(1) => {
                let start = path.iter().position(|(n, _)| n == d).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|(n, _)| n.clone()).collect();
                cycle.push(d.to_string());
                return Err((cycle, path.last().map_or(1, |(_, l)| *l)));
            }
            _ => {}
        }
        state.insert(d.to_string(), 1);
        for (dep, line) in deps.get(d).into_iter().flatten() {
            path.push((d.to_string(), *line));
            visit(dep, deps, state, order, path)?;
            path.pop();
        }
        state.insert(d.to_string(), 2);
        order.push(d.to_string());
        Ok(())
    }
    for d in &lab.order {
        visit(d, &deps, &mut state, &mut order, &mut Vec::new()).map_err(|(cycle, line)| {
            ImportError::at(file, line, 1, format!("lab.dep has a cycle: {}", cycle.join(" → ")))
        })?;
    }
    lab.order = order;
    Ok(())
}

/// Reads a lab directory: lab.conf, lab.dep, and which device files exist.
pub fn load(dir: &Path) -> Result<KatharaLab, ImportError> {
    let conf = dir.join("lab.conf");
    let conf_name = conf.display().to_string();
    let mut lab = parse_lab_conf(&conf_name, &super::read_bounded(&conf)?)?;
    if lab.devices.is_empty() {
        return Err(ImportError::file(&conf_name, "it names no device"));
    }
    lab.dir = dir.to_path_buf();
    let dep = dir.join("lab.dep");
    if dep.exists() {
        apply_lab_dep(&mut lab, &dep.display().to_string(), &super::read_bounded(&dep)?)?;
    }
    let is_dir = |p: PathBuf| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let is_file = |p: PathBuf| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file());
    for d in &mut lab.devices {
        d.has_dir = is_dir(dir.join(&d.name));
        d.has_startup = is_file(dir.join(format!("{}.startup", d.name)));
    }
    // A lab from elsewhere shows its devices its own files, not the host's.
    let root = std::fs::canonicalize(dir).map_err(|e| ImportError::file(&conf_name, e.to_string()))?;
    for d in &lab.devices {
        for (host, _) in &d.volumes {
            let inside = std::fs::canonicalize(dir.join(host))
                .map_err(|_| ImportError::file(&conf_name, format!("{}[volume]: {host} does not exist", d.name)))?;
            if !inside.starts_with(&root) {
                return Err(ImportError::file(
                    &conf_name,
                    format!("{}[volume]: {host} is outside the lab's directory {}: refused", d.name, root.display()),
                ));
            }
        }
    }
    lab.has_shared_dir = is_dir(dir.join("shared"));
    lab.has_shared_startup = is_file(dir.join("shared.startup"));
    // A start-up or directory for a device lab.conf does not name is
    // most likely a typo in one or the other.
    if let Ok(entries) = std::fs::read_dir(dir) {
        let known: BTreeSet<&str> = lab.devices.iter().map(|d| d.name.as_str()).collect();
        let mut strays: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter_map(|n| n.strip_suffix(".startup").map(str::to_string))
            .filter(|n| n != "shared" && !known.contains(n.as_str()))
            .collect();
        strays.sort();
        for s in strays {
            lab.warnings.push(format!("{}: {s}.startup belongs to no device of lab.conf: not run", dir.display()));
        }
    }
    Ok(lab)
}

impl KatharaLab {
    /// The LAN a collision domain becomes: its own name when clonet takes
    /// it and no device has it, else `cd_NAME`.
    fn lan_name(&self, domain: &str) -> String {
        let taken = self.devices.iter().any(|d| d.name == domain);
        match super::clonet_name(domain, "cd") {
            Some(n) if !taken && n == domain => n,
            _ => super::clonet_name(&format!("cd_{domain}"), "cd").unwrap_or_else(|| "cd".into()),
        }
    }

    /// The lab as a Rhai script.
    pub fn to_rhai(&self, images: &ImagePolicy, lab_dir: &str) -> Result<Converted, ImportError> {
        let conf = self.dir.join("lab.conf").display().to_string();
        let warnings = self.warnings.clone();
        // What each device's image becomes; those run as themselves are
        // listed for the caller to have them before the lab starts.
        let mut roots = BTreeMap::new();
        let mut needed = Vec::new();
        for d in &self.devices {
            let (image, line) = d.image.clone().unwrap_or((DEFAULT_IMAGE.to_string(), d.line));
            let target = images.resolve(&image);
            if let ImageTarget::Image(r) = &target {
                needed.push((r.clone(), format!("{conf}:{line}"), d.name.clone()));
            }
            roots.insert(d.name.clone(), (image, target));
        }
        let mut out = String::new();
        let title = self.about.iter().find(|(k, _)| k == "title").map(|(_, v)| v.as_str());
        comment(
            &mut out,
            "",
            &format!(
                "Kathará lab{} from {conf}, written as Rhai by `clonet convert`.\nEach device is an ns node; each collision domain a LAN of clonet's switch.",
                title.map(|t| format!(" {t:?}")).unwrap_or_default()
            ),
        );
        if roots.values().any(|(_, t)| *t == ImageTarget::Host) {
            let named: BTreeSet<&str> =
                roots.values().filter(|(_, t)| *t == ImageTarget::Host).map(|(i, _)| i.as_str()).collect();
            comment(
                &mut out,
                "",
                &format!(
                    "Images run on the host's own root ({}): the host needs their programs.\nImages: {}.",
                    images.describe(),
                    named.into_iter().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        let _ = writeln!(out, "import \"kathara\" as kathara;\n");
        let _ = writeln!(out, "// The lab's directory: device files, start-up files, shared/.");
        let _ = writeln!(out, "let lab = {};", rhai_str(lab_dir));
        if !self.about.is_empty() {
            let facts: Vec<String> = self.about.iter().map(|(k, v)| format!("{k}: {}", rhai_str(v))).collect();
            let _ = writeln!(out, "lab_info(#{{ {} }});", facts.join(", "));
        }
        let _ = writeln!(out, "\n// Devices: lab.conf, with Kathará's device defaults (kathara::defaults).");
        for d in &self.devices {
            // The lab's values are string literals joined to `lab`, never
            // template text: a path cannot become code.
            let mut binds = vec!["lab + \":/hostlab:ro\"".to_string()];
            if self.has_shared_dir {
                binds.push("lab + \"/shared:/shared\"".to_string());
            }
            for (host, guest) in &d.volumes {
                let bind = format!("{host}:{guest}");
                if crate::vocab::Bind::parse(&bind).is_err() || Path::new(host).is_absolute() {
                    return Err(ImportError::file(
                        &conf,
                        format!("{}[volume]: {host}|{guest} is not RELATIVE_HOST_PATH|/PATH", d.name),
                    ));
                }
                binds.push(format!("lab + {}", rhai_str(&format!("/{host}:{guest}"))));
            }
            let mut opts = vec![format!("binds: [{}]", binds.join(", "))];
            if !d.env.is_empty() {
                let vars: Vec<String> =
                    d.env.iter().map(|(k, v)| format!("{}: {}", rhai_str(k), rhai_str(v))).collect();
                opts.push(format!("env: #{{ {} }}", vars.join(", ")));
            }
            let (image, target) = &roots[&d.name];
            match target {
                ImageTarget::Host => {
                    let _ = writeln!(out, "// {}: image {image}, on the host's root", d.name);
                }
                ImageTarget::Rootfs(dir) => {
                    let _ = writeln!(out, "// {}: image {image}, as the directory {}", d.name, dir.display());
                    opts.insert(0, format!("rootfs: {}", rhai_str(&dir.display().to_string())));
                }
                ImageTarget::Image(r) => {
                    if r != image {
                        let _ = writeln!(out, "// {}: image {image}, as {r}", d.name);
                    }
                    // Kathará runs its own start-up, not the image's program.
                    opts.insert(0, format!("image: {}, cmd: []", rhai_str(r)));
                }
            }
            // Checked when lab.conf was read.
            if let Some(mib) = d.mem.as_deref().and_then(|m| super::memory_mib(m).ok()) {
                opts.push(format!("mem: {mib}"));
            }
            if let Some((cpus, rounded)) = d.cpus.as_deref().and_then(|c| super::whole_cpus(c).ok()) {
                if rounded {
                    let v = d.cpus.as_deref().unwrap_or_default();
                    let _ = writeln!(out, "//   cpus={v}: {cpus} (clonet limits ns nodes to whole CPUs)");
                }
                opts.push(format!("cpus: {cpus}"));
            }
            for (option, value, line) in &d.ignored {
                let _ = writeln!(out, "//   {option}={value}: no clonet equivalent (lab.conf line {line})");
            }
            let v = var("n", &d.name);
            let _ = writeln!(out, "let {v} = node({}, #{{ {} }});", rhai_str(&d.name), opts.join(", "));
            let mut defaults = vec![format!("ipv6: {}", d.ipv6.unwrap_or(false))];
            if !d.sysctls.is_empty() {
                let s: Vec<String> =
                    d.sysctls.iter().map(|(k, v)| format!("{}: {}", rhai_str(k), rhai_str(v))).collect();
                defaults.push(format!("sysctl: #{{ {} }}", s.join(", ")));
            }
            let _ = writeln!(out, "kathara::defaults({v}, #{{ {} }});", defaults.join(", "));
        }
        let _ = writeln!(out, "\n// Collision domains: one LAN each; interfaces keep Kathará's numbers.");
        let mut lans: Vec<String> = Vec::new();
        for d in &self.devices {
            for i in d.ifaces.values() {
                let lan = self.lan_name(&i.domain);
                if !lans.contains(&lan) {
                    if lan != i.domain {
                        let _ = writeln!(out, "// collision domain {} is LAN {lan}", i.domain);
                    }
                    let _ = writeln!(out, "let {} = lan({});", var("l", &lan), rhai_str(&lan));
                    lans.push(lan);
                }
            }
        }
        for d in &self.devices {
            for (n, i) in &d.ifaces {
                let mut opts = vec![format!("iface: \"eth{n}\"")];
                if let Some(mac) = i.mac {
                    opts.push(format!("mac: \"{mac}\""));
                }
                let lan = var("l", &self.lan_name(&i.domain));
                let _ = writeln!(out, "link({}, {lan}, #{{ {} }});", var("n", &d.name), opts.join(", "));
            }
            if d.bridged || !d.ports.is_empty() {
                let nat_name = format!("{}-nat", d.name);
                let forwards: Vec<String> =
                    d.ports.iter().map(|p| format!("\"{}:{}:{}\"", p.protocol, p.host, p.guest)).collect();
                let why = if d.bridged { "bridged" } else { "port (which needs a bridged interface)" };
                let _ = writeln!(out, "// {}[{why}]: the outside world through NAT, on its last interface", d.name);
                let nat_opts = if forwards.is_empty() {
                    String::new()
                } else {
                    format!(", #{{ forward: [{}] }}", forwards.join(", "))
                };
                let _ = writeln!(
                    out,
                    "link({}, nat({}{nat_opts}), #{{ iface_a: \"eth{}\" }});",
                    var("n", &d.name),
                    rhai_str(&nat_name),
                    d.ifaces.len()
                );
            }
        }
        let _ = writeln!(
            out,
            "\n// Start-up, in {} order: the device's files copied into its root,\n// shared.startup, DEVICE.startup, then its exec lines.",
            if self.dir.join("lab.dep").exists() { "lab.dep's" } else { "lab.conf's" }
        );
        for name in &self.order {
            let d = self.devices.iter().find(|d| &d.name == name).expect("order holds devices");
            let mut opts =
                vec![format!("files: {}", d.has_dir), format!("shared_startup: {}", self.has_shared_startup)];
            opts.push(format!("startup: {}", d.has_startup));
            if !d.exec.is_empty() {
                let cmds: Vec<String> = d.exec.iter().map(|c| rhai_str(c)).collect();
                opts.push(format!("exec: [{}]", cmds.join(", ")));
            }
            let _ = writeln!(out, "kathara::startup({}, #{{ {} }});", var("n", &d.name), opts.join(", "));
        }
        Ok(Converted { script: out, warnings, images: needed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "\
LAB_DESCRIPTION=\"Two routers\"
LAB_AUTHOR='A. Teacher'
# a comment
r1[0]=\"A\"
r1[1]=\"B/02:00:00:00:00:11\"   # with a MAC
r1[image]=\"kathara/frr\"
r1[sysctl]=\"net.ipv4.tcp_syncookies=0\"
r1[exec]=\"echo hi\"
r1[bridged]=true
r1[port]=\"8080:80/tcp\"
r2[0]=B
r2[ipv6]=\"true\"
r2[mem]=256m
r2[env]=\"GREETING=hi\"
pc1[0]=A
";

    #[test]
    fn lab_conf_gives_devices_interfaces_options_and_facts() {
        let lab = parse_lab_conf("lab.conf", CONF).unwrap();
        assert_eq!(
            lab.about,
            vec![("description".into(), "Two routers".into()), ("author".into(), "A. Teacher".into())]
        );
        let names: Vec<&str> = lab.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["r1", "r2", "pc1"]);
        let r1 = &lab.devices[0];
        assert_eq!(r1.ifaces[&1].domain, "B");
        assert_eq!(r1.ifaces[&1].mac, Some("02:00:00:00:00:11".parse().unwrap()));
        assert_eq!(r1.image, Some(("kathara/frr".into(), 6)));
        assert_eq!(r1.sysctls, vec![("net.ipv4.tcp_syncookies".into(), "0".into())]);
        assert_eq!(r1.ports, vec![Port { host: 8080, guest: 80, protocol: "tcp".into() }]);
        assert!(r1.bridged && r1.exec == ["echo hi"]);
        assert_eq!(lab.devices[1].ipv6, Some(true));
        assert_eq!(lab.devices[1].env, vec![("GREETING".into(), "hi".into())]);
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_and_column() {
        let cases = [
            ("r1[0]=A\nthis is not a line\n", 2, 1, "expected DEVICE[OPTION]=VALUE"),
            ("r1[0]=\"A\n", 1, 7, "unbalanced quotes"),
            ("R1[0]=A\n", 1, 1, "not a device name"),
            ("1r[0]=A\n", 1, 1, "start with a letter"),
            ("r1[0]=A-B\n", 1, 7, "collision domain"),
            ("r1[0]=A\nr1[0]=B\n", 2, 1, "already on A (line 1)"),
            ("r1[0]=A\nr1[1]=A\n", 2, 7, "already on collision domain A"),
            ("r1[0]=A\nr1[2]=B\n", 2, 1, "no interface 1"),
            ("r1[0]=A/zz:00\n", 1, 7, "r1[0]"),
            ("r1[sysctl]=kernel.panic=1\n", 1, 12, "under net."),
            ("r1[port]=http\n", 1, 10, "[HOST:]GUEST"),
            ("shared[0]=A\n", 1, 1, "reserves"),
            ("  r1[bridged]=maybe\n", 1, 15, "true or false"),
            ("r1[0]=A\nr1[mem]=lots\n", 2, 9, "r1[mem]: \"lots\" is not an amount of memory"),
            ("r1[0]=A\nr1[cpus]=0\n", 2, 10, "out of range"),
        ];
        for (text, line, col, needle) in cases {
            let e = parse_lab_conf("lab.conf", text).unwrap_err();
            assert_eq!((e.line, e.col), (Some(line), Some(col)), "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
        let lab = parse_lab_conf("lab.conf", "r1[0]=A\nr1[colour]=red\n").unwrap();
        assert_eq!(lab.warnings, ["lab.conf:2:1: r1[colour] is not a Kathará option: ignored"]);
    }

    #[test]
    fn lab_dep_orders_the_starts_and_refuses_cycles_and_strangers() {
        let mut lab = parse_lab_conf("lab.conf", "a[0]=X\nb[0]=X\nc[0]=X\nd[0]=X\n").unwrap();
        apply_lab_dep(&mut lab, "lab.dep", "# c first\na: c\nb: a d\n").unwrap();
        assert_eq!(lab.order, ["c", "a", "d", "b"]);
        let mut cyc = parse_lab_conf("lab.conf", "a[0]=X\nb[0]=X\nc[0]=X\n").unwrap();
        let e = apply_lab_dep(&mut cyc, "lab.dep", "a: b\nb: c\nc: a\n").unwrap_err();
        assert!(e.to_string().starts_with("lab.dep:3:1: lab.dep has a cycle: a → b → c → a"), "{e}");
        let e = apply_lab_dep(&mut cyc, "lab.dep", "a: b zz\n").unwrap_err();
        assert_eq!(e.to_string(), "lab.dep:1:6: \"zz\" is not a device of lab.conf");
        let e = apply_lab_dep(&mut cyc, "lab.dep", "a b\n").unwrap_err();
        assert!(e.to_string().starts_with("lab.dep:1:1: expected DEVICE: DEVICE…"), "{e}");
    }

    #[test]
    fn the_script_builds_devices_lans_and_start_ups_in_order() {
        let mut lab = parse_lab_conf("lab.conf", CONF).unwrap();
        lab.dir = "/labs/two".into();
        lab.has_shared_dir = true;
        lab.devices[0].has_startup = true;
        let named = lab.to_rhai(&ImagePolicy::AsNamed, ".").unwrap();
        assert_eq!(named.images[0], ("kathara/frr".into(), "/labs/two/lab.conf:6".into(), "r1".into()));
        assert_eq!(named.images[1], ("kathara/base".into(), "/labs/two/lab.conf:11".into(), "r2".into()));
        assert!(
            named.script.contains("let n_r1 = node(\"r1\", #{ image: \"kathara/frr\", cmd: [], binds:"),
            "{}",
            named.script
        );
        let c = lab.to_rhai(&ImagePolicy::Host, ".").unwrap();
        let s = &c.script;
        for needle in [
            "import \"kathara\" as kathara;",
            "let lab = \".\";",
            "lab_info(#{ description: \"Two routers\", author: \"A. Teacher\" });",
            "let n_r1 = node(\"r1\", #{ binds: [lab + \":/hostlab:ro\", lab + \"/shared:/shared\"] });",
            "kathara::defaults(n_r1, #{ ipv6: false, sysctl: #{ \"net.ipv4.tcp_syncookies\": \"0\" } });",
            "kathara::defaults(n_r2, #{ ipv6: true });",
            "env: #{ \"GREETING\": \"hi\" }",
            "let l_A = lan(\"A\");",
            "link(n_r1, l_B, #{ iface: \"eth1\", mac: \"02:00:00:00:00:11\" });",
            "link(n_r1, nat(\"r1-nat\", #{ forward: [\"tcp:8080:80\"] }), #{ iface_a: \"eth2\" });",
            "kathara::startup(n_r1, #{ files: false, shared_startup: false, startup: true, exec: [\"echo hi\"] });",
            "mem: 256 });",
        ] {
            assert!(s.contains(needle), "{needle}\n{s}");
        }
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // It parses as Rhai.
        rhai::Engine::new().compile(s).unwrap();
    }

    #[test]
    fn a_domain_named_like_a_device_or_a_number_gets_a_lan_name_of_its_own() {
        let lab = parse_lab_conf("lab.conf", "a[0]=b\nb[0]=10\n").unwrap();
        let s = lab.to_rhai(&ImagePolicy::Host, ".").unwrap().script;
        assert!(s.contains("let l_cd_b = lan(\"cd_b\");") && s.contains("let l_cd_10 = lan(\"cd_10\");"), "{s}");
    }
}
