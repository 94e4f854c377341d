//! What the REPL knows about a line of input before running it (sans-IO):
//! whether it is complete, and what could complete the word at the cursor.

/// Whether `text` still has an open bracket, brace, parenthesis, string or
/// block comment, so the REPL should read another line.
pub fn is_incomplete(text: &str) -> bool {
    if text.trim_start().starts_with(':') {
        return false;
    }
    let chars: Vec<char> = text.chars().collect();
    let mut depth: i32 = 0;
    // Nesting of `${ … }` inside backtick strings: depth at which each began.
    let mut interp: Vec<i32> = Vec::new();
    let mut in_backtick = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if in_backtick {
            match c {
                '\\' => i += 1,
                '`' => in_backtick = false,
                '$' if next == Some('{') => {
                    interp.push(depth);
                    depth += 1;
                    in_backtick = false;
                    i += 1;
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            '"' | '\'' => {
                // Skip to the closing quote; an unclosed one is incomplete.
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return true;
                }
            }
            '`' => in_backtick = true,
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let rest: String = chars[i + 2..].iter().collect();
                match rest.find("*/") {
                    Some(end) => i += 2 + rest[..end].chars().count() + 1,
                    None => return true,
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if interp.last() == Some(&depth) {
                    interp.pop();
                    in_backtick = true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    depth > 0 || in_backtick
}

/// The `import … as …;` statements an input starts with, so the REPL can
/// keep them (and only them) for later inputs.
pub fn leading_imports(text: &str) -> Option<String> {
    let mut rest = text.trim_start();
    let mut out = String::new();
    while rest.starts_with("import") && rest[6..].starts_with(char::is_whitespace) {
        // The statement ends at the first `;` outside a string.
        let mut in_string = false;
        let end = rest.char_indices().find(|(_, c)| {
            if *c == '"' {
                in_string = !in_string;
            }
            *c == ';' && !in_string
        });
        let Some((end, _)) = end else { break };
        out.push_str(&rest[..=end]);
        out.push('\n');
        rest = rest[end + 1..].trim_start();
    }
    (!out.is_empty()).then_some(out)
}

/// What kind of word the cursor is in.
#[derive(Debug, PartialEq, Eq)]
pub enum WordKind {
    /// After a `.`: a method or property.
    Method,
    /// Inside a string: a node, LAN or link name.
    Name,
    /// A meta command after a leading `:`.
    Meta,
    /// Anything else: a function or variable.
    Free,
}

/// The start of the word ending at `pos`, and what kind of word it is.
pub fn word_at(line: &str, pos: usize) -> (usize, WordKind) {
    let before = &line[..pos];
    // Byte index just after the last character that cannot be in a name
    // (any width: the line may hold non-ASCII text).
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let prev = before[..start].chars().last();
    let quotes = before[..start].matches('"').count();
    let kind = if before.trim_start().starts_with(':') && !before.contains(' ') {
        WordKind::Meta
    } else if prev == Some('"') && quotes % 2 == 1 {
        WordKind::Name
    } else if prev == Some('.') {
        WordKind::Method
    } else {
        WordKind::Free
    };
    (start, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_brackets_and_strings_are_incomplete() {
        assert!(!is_incomplete("let a = node(\"a\");"));
        assert!(is_incomplete("for i in 0..3 {"));
        assert!(is_incomplete("link(a, b, #{ ip_a: \"10.0.0.1/24\","));
        assert!(is_incomplete("print(\"unterminated"));
        assert!(is_incomplete("print(`x ${ 1 + "));
        assert!(!is_incomplete("print(`x ${ #{a: 1}.a } y`)"));
        assert!(is_incomplete("let s = `open"));
        assert!(!is_incomplete("let s = \"}\"; // {"));
        assert!(is_incomplete("/* still"));
        assert!(!is_incomplete("/* done */ 1"));
        assert!(!is_incomplete(":help link"));
        assert!(!is_incomplete("fn f() {\n  1\n}"));
    }

    #[test]
    fn only_the_imports_are_kept() {
        assert_eq!(
            leading_imports("import \"topo\" as topo; import \"a;b\" as x;  let r = node(\"r\");").as_deref(),
            Some("import \"topo\" as topo;\nimport \"a;b\" as x;\n")
        );
        assert_eq!(leading_imports("let important = 1;"), None);
        assert_eq!(leading_imports("imports();"), None);
    }

    #[test]
    fn words_are_classified() {
        assert_eq!(word_at("lin", 3), (0, WordKind::Free));
        assert_eq!(word_at("let x = pi", 10), (8, WordKind::Free));
        assert_eq!(word_at("a.exe", 5), (2, WordKind::Method));
        assert_eq!(word_at("get_node(\"r", 11), (10, WordKind::Name));
        assert_eq!(word_at("get_node(\"a\").ex", 16), (14, WordKind::Method));
        assert_eq!(word_at(":ne", 3), (1, WordKind::Meta));
        let line = "print(\"héllo wor";
        assert_eq!(word_at(line, line.len()), (line.len() - 3, WordKind::Free));
        let line = "print(\"é";
        assert_eq!(word_at(line, line.len()).0, line.len(), "no panic inside a multi-byte character");
    }
}
