//! Labs written for other tools, run unchanged: Kathará's `lab.conf`
//! directories and containerlab's `.clab.yml` topologies. Each is read
//! into a model (sans-IO, every error at `file:line:col`), then written
//! out as the Rhai script that builds the same lab. Running such a lab is
//! running that script: `clonet convert` shows it, `clonet run DIR` runs
//! it, `load_kathara()` / `load_clab()` run it inside a test.
//!
//! Owns: the two formats, their defaults, and how they map to clonet.
//! Must not touch: the host (the only I/O is reading the lab's files, in
//! `load`), the lab (the script does that).
pub mod clab;
pub mod images;
pub mod kathara;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use images::{ImagePolicy, ImageTarget};

/// An image a lab runs as itself: (reference, where the lab asks for it,
/// the device), for [`images::ensure`].
pub type NeededImage = (String, String, String);

/// A lab file that cannot be run: where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ImportError {
    pub file: String,
    /// 1-based; `None` for the file as a whole.
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.col) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl ImportError {
    pub fn at(file: &str, line: usize, col: usize, message: impl Into<String>) -> ImportError {
        ImportError { file: file.to_string(), line: Some(line), col: Some(col), message: message.into() }
    }

    pub fn file(file: &str, message: impl Into<String>) -> ImportError {
        ImportError { file: file.to_string(), line: None, col: None, message: message.into() }
    }
}

/// The most devices, links and lines a lab file may bring: bounds on what
/// an imported file makes the engine do.
pub const MAX_DEVICES: usize = 4096;
pub const MAX_LINKS: usize = 65536;
/// The largest lab file read (lab.conf, lab.dep, a topology).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// A lab in another tool's format, found from a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Foreign {
    /// A Kathará lab: its directory (holding `lab.conf`).
    Kathara(PathBuf),
    /// A containerlab topology file.
    Clab(PathBuf),
}

impl Foreign {
    /// What `path` names: a directory holding `lab.conf`, a `lab.conf`, a
    /// `*.clab.yml` / `*.clab.yaml` file; `None` for anything else (a
    /// Rhai script).
    pub fn detect(path: &Path) -> Option<Foreign> {
        if path.is_dir() {
            return path.join("lab.conf").is_file().then(|| Foreign::Kathara(path.to_path_buf()));
        }
        let name = path.file_name()?.to_string_lossy();
        if name == "lab.conf" {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            return Some(Foreign::Kathara(dir.to_path_buf()));
        }
        if name.ends_with(".clab.yml") || name.ends_with(".clab.yaml") {
            return Some(Foreign::Clab(path.to_path_buf()));
        }
        None
    }

    /// The file errors and reports name.
    pub fn source_file(&self) -> PathBuf {
        match self {
            Foreign::Kathara(dir) => dir.join("lab.conf"),
            Foreign::Clab(file) => file.clone(),
        }
    }

    /// The directory relative paths of the lab are found from.
    pub fn dir(&self) -> PathBuf {
        match self {
            Foreign::Kathara(dir) => dir.clone(),
            Foreign::Clab(file) => file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).into(),
        }
    }

    /// Reads the lab and writes it as Rhai. `lab_dir` is how the script
    /// names the lab's directory: `"."` when the script sits in it (or is
    /// run in its place), an absolute path otherwise. Warnings (options
    /// with no equivalent) come back beside the script.
    pub fn to_rhai(&self, images: &ImagePolicy, lab_dir: &str) -> Result<Converted, ImportError> {
        match self {
            Foreign::Kathara(dir) => kathara::load(dir)?.to_rhai(images, lab_dir),
            Foreign::Clab(file) => clab::load(file)?.to_rhai(images, lab_dir),
        }
    }
}

/// A lab written as Rhai.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    pub script: String,
    /// What did not map exactly, each with its place in the lab's files.
    pub warnings: Vec<String>,
    /// The container images its nodes run as themselves.
    pub images: Vec<NeededImage>,
}

/// Reads a lab file, bounded in size; a failure names the file.
/// A container's memory limit (`512m`, `1g`, `1Gb`, `268435456`: Docker's
/// units, base 1024) in MiB, rounded up, within what clonet takes.
pub(crate) fn memory_mib(text: &str) -> Result<u32, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|r| r.ends_with(['k', 'm', 'g', 't'])).unwrap_or(&t);
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not an amount of memory (e.g. 512m, 1g)"))?;
    let factor = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (b, k, m, g)")),
    };
    let mib = (number * factor / (1024.0 * 1024.0)).ceil();
    if !(16.0..=65536.0).contains(&mib) {
        return Err(format!("{text:?} is out of range (16m..=64g)"));
    }
    Ok(mib as u32)
}

/// A container's CPU limit (`0.5`, `2`) as whole CPUs, rounded up (clonet
/// sets whole CPUs of quota), and whether it was rounded.
pub(crate) fn whole_cpus(text: &str) -> Result<(u32, bool), String> {
    let n: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of CPUs"))?;
    if !(n > 0.0 && n <= 64.0) {
        return Err(format!("{text:?} is out of range (0 < cpus <= 64)"));
    }
    Ok((n.ceil() as u32, n.fract() != 0.0))
}

pub(crate) fn read_bounded(path: &Path) -> Result<String, ImportError> {
    use std::io::Read;
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| ImportError::file(&name, format!("cannot read it: {e}")))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ImportError::file(&name, format!("cannot read it: {e}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ImportError::file(&name, format!("it is larger than {} MiB", MAX_FILE_BYTES >> 20)));
    }
    Ok(text)
}

/// A Rhai string literal of `text`: quotes, backslashes and control
/// characters escaped, so a lab's values can never end the literal.
pub fn rhai_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A comment line or lines: the text after `// `, one line each.
pub(crate) fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}// {}", line.trim_end());
    }
}

/// A name clonet accepts for a node or LAN, from a foreign one: kept when
/// it is valid, else `prefix_` + its characters with anything outside
/// `[A-Za-z0-9_-]` as `_`, cut to 32. `None` when nothing usable is left.
pub(crate) fn clonet_name(name: &str, prefix: &str) -> Option<String> {
    if crate::lab::names::validate("node", name).is_ok() {
        return Some(name.to_string());
    }
    let body: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let mut candidate = format!("{prefix}_{body}");
    candidate.truncate(crate::lab::names::MAX_NAME_LEN);
    crate::lab::names::validate("node", &candidate).is_ok().then_some(candidate)
}

/// A Rhai variable name for a node or LAN name (`n_r1`, `l_A`).
pub(crate) fn var(prefix: &str, name: &str) -> String {
    let body: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("{prefix}_{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rhai_strings_cannot_be_broken_out_of() {
        assert_eq!(rhai_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(rhai_str("x\ny\u{1}"), r#""x\ny\u0001""#);
        let engine = rhai::Engine::new();
        for text in ["plain", "quote \" and ${interp}", "back\\slash\n", "\u{7}bell", "`tick`"] {
            let back: String = engine.eval(&rhai_str(text)).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn container_memory_and_cpus_become_clonet_units() {
        assert_eq!(memory_mib("256m"), Ok(256));
        assert_eq!(memory_mib("1g"), Ok(1024));
        assert_eq!(memory_mib("1Gb"), Ok(1024));
        assert_eq!(memory_mib("512MB"), Ok(512));
        assert_eq!(memory_mib("100000k"), Ok(98));
        assert_eq!(memory_mib("268435456"), Ok(256));
        assert_eq!(memory_mib("1.5g"), Ok(1536));
        for bad in ["", "m", "12x", "-5m", "1m", "100g", "nan", "1e3m"] {
            assert!(memory_mib(bad).is_err(), "{bad}");
        }
        assert_eq!(whole_cpus("2"), Ok((2, false)));
        assert_eq!(whole_cpus("0.5"), Ok((1, true)));
        assert_eq!(whole_cpus("1.5"), Ok((2, true)));
        for bad in ["0", "-1", "65", "inf", "NaN", "x"] {
            assert!(whole_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn foreign_names_become_clonet_names_or_nothing() {
        assert_eq!(clonet_name("r1", "cd").as_deref(), Some("r1"));
        assert_eq!(clonet_name("10", "cd").as_deref(), Some("cd_10"));
        assert_eq!(clonet_name("a.b", "cd").as_deref(), Some("cd_a_b"));
        assert_eq!(clonet_name(&"x".repeat(40), "cd").map(|n| n.len()), Some(32));
        assert_eq!(var("n", "r-1"), "n_r_1");
    }

    #[test]
    fn errors_say_file_line_and_column() {
        assert_eq!(ImportError::at("lab.conf", 3, 1, "bad").to_string(), "lab.conf:3:1: bad");
        assert_eq!(ImportError::file("lab.dep", "cycle").to_string(), "lab.dep: cycle");
    }

    #[test]
    fn paths_say_which_format_they_hold() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Foreign::detect(d.path()), None);
        std::fs::write(d.path().join("lab.conf"), "a[0]=A\n").unwrap();
        assert_eq!(Foreign::detect(d.path()), Some(Foreign::Kathara(d.path().into())));
        assert_eq!(Foreign::detect(&d.path().join("lab.conf")), Some(Foreign::Kathara(d.path().into())));
        assert_eq!(Foreign::detect(Path::new("x/t.clab.yml")), Some(Foreign::Clab("x/t.clab.yml".into())));
        assert_eq!(Foreign::detect(Path::new("lab.rhai")), None);
    }
}
