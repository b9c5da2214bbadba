//! Text that is safe to put on a terminal.
//!
//! Tags, source paths, file names and host names come from users, from
//! disks and from repositories someone else may have written. Printed raw,
//! a newline in one breaks a table into false rows, an escape sequence
//! clears the screen or retitles the window, and a bidi override makes a
//! name read backwards. Every line meant for a person goes through
//! [`printable`] at the point where it is printed; JSON output is for
//! programs and keeps every byte (serde escapes what JSON must).

use std::borrow::Cow;

/// Whether `c` changes how a terminal shows what follows rather than
/// showing itself: C0 and C1 controls (CSI is U+009B), DEL, line and
/// paragraph separators, and the bidirectional marks and overrides.
pub fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every control character written as an escape (`\n`, `\t`,
/// `\r`, `\u{1b}`), so it stays on one line and shows what it holds.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Writes `line` for a person on stderr, control characters escaped. A
/// stderr that cannot be written (a closed pipe, a full disk under a log
/// file) loses the line, never the work: no panic, no changed exit code.
pub fn to_stderr(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{}", printable(line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_is_kept() {
        assert_eq!(printable("plain päth/ünïcode"), "plain päth/ünïcode");
        assert_eq!(printable("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(printable("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(printable("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(printable("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(printable("\u{7f}\u{0}"), "\\u{7f}\\u{0}");
    }
}
