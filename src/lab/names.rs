//! Validation of every user-given name that ends up in a path, a kernel
//! object or a command line.
use std::fmt;

/// Longest node, link, LAN or lab name.
pub const MAX_NAME_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NameError {
    pub what: &'static str,
    pub name: String,
    pub why: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} name {:?}: {}", self.what, self.name, self.why)
    }
}

/// Accepts `[A-Za-z][A-Za-z0-9_-]*`, at most `MAX_NAME_LEN` bytes: safe as
/// a hostname, a file name and a shell word, and unable to escape a path.
pub fn validate(what: &'static str, name: &str) -> Result<(), NameError> {
    let err = |why| Err(NameError { what, name: name.to_string(), why });
    let Some(first) = name.chars().next() else { return err("it is empty") };
    if name.len() > MAX_NAME_LEN {
        return err("it is longer than 32 characters");
    }
    if !first.is_ascii_alphabetic() {
        return err("it must start with a letter");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return err("only letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["a", "r1", "host-2", "core_sw", "A", &"x".repeat(32)] {
            assert!(validate("node", n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_names_that_could_escape() {
        for n in ["", "../etc", "a/b", "a b", "a;rm", "1abc", "-x", "é", "a\0", "$(id)", &"x".repeat(33), ".", "a.b"] {
            let e = validate("node", n).unwrap_err();
            assert!(e.to_string().starts_with("invalid node name"), "{e}");
        }
    }
}
