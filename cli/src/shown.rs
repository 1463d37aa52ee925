//! Text from a store on its way to a terminal. Integration names come from
//! clients' User-Agent headers, plugin log lines and errors from plugins and
//! the endpoints they call: escape sequences in them must not reach the
//! operator's terminal as escape sequences.

use std::borrow::Cow;

/// Characters printed as escapes: control characters (C0, DEL, C1) and the
/// bidirectional overrides that reorder what a line appears to say.
fn hidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every hidden character as `\u{..}`.
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Serialised JSON with every hidden character serde_json leaves raw (DEL,
/// C1, bidi overrides) as a `\uXXXX` escape: still the same JSON value.
pub(crate) fn json(serialised: String) -> String {
    if !serialised.chars().any(hidden) {
        return serialised;
    }
    let mut out = String::with_capacity(serialised.len() + 8);
    for c in serialised.chars() {
        // Outside strings JSON has only whitespace, which is not hidden
        // except for '\n', '\r' and '\t', which stay.
        if hidden(c) && !matches!(c, '\n' | '\r' | '\t') {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_reach_the_terminal_as_text() {
        assert_eq!(text("Zapier/1.0"), "Zapier/1.0");
        assert_eq!(text("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(text("x\u{9b}31my\u{202e}z"), "x\\u{9b}31my\\u{202e}z");
        let v = serde_json::json!({ "ua": "a\u{1b}b\u{9b}c\u{7f}" });
        let shown = json(serde_json::to_string(&v).unwrap());
        assert!(!shown.chars().any(hidden), "{shown}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&shown).unwrap(),
            v
        );
    }
}
