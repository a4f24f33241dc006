//! Keeping what a user gave out of messages when it is huge: an error that echoes a 1 MiB
//! name or reference shows its first [`KEEP`] characters and its size, not all of it.
//! Applied where messages leave skiff (skiffd's D-Bus error replies, the CLI's stderr), so
//! every message that quotes an input is covered, whoever wrote it.

use std::borrow::Cow;

/// How many characters of a long input a message keeps.
pub const KEEP: usize = 200;

/// Inputs up to this many characters more than [`KEEP`] stay whole: so a cut input (its
/// `…(N bytes)` is at most 29 characters) is not cut again where a message passes two
/// cutting places (skiffd's reply, then the CLI).
const SLACK: usize = 32;

/// `input` cut to its first [`KEEP`] characters and `…(N bytes)` when longer.
pub fn cut(input: &str) -> Cow<'_, str> {
    if input.char_indices().nth(KEEP + SLACK).is_none() {
        return Cow::Borrowed(input);
    }
    match input.char_indices().nth(KEEP) {
        None => Cow::Borrowed(input),
        Some((end, _)) => Cow::Owned(format!("{}…({} bytes)", &input[..end], input.len())),
    }
}

/// `msg` with every long quoted string (`"…"`, as `{:?}` writes one) and every long run
/// without whitespace cut by [`cut`]; short messages are returned as they are.
pub fn long_inputs(msg: &str) -> Cow<'_, str> {
    if msg.len() <= KEEP {
        return Cow::Borrowed(msg);
    }
    let mut out = String::with_capacity(msg.len().min(4 * KEEP));
    let mut changed = false;
    let mut rest = msg;
    while !rest.is_empty() {
        let (piece, tail) = split_piece(rest);
        if let Some(inner) = piece.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            let c = cut(inner);
            changed |= matches!(c, Cow::Owned(_));
            out.push('"');
            out.push_str(&c);
            out.push('"');
        } else {
            let c = cut(piece);
            changed |= matches!(c, Cow::Owned(_));
            out.push_str(&c);
        }
        rest = tail;
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(msg)
    }
}

/// The first piece of `s`: a quoted string (with `\` escapes) up to its closing quote, a
/// run of whitespace, or a run of anything else up to whitespace or a quote.
fn split_piece(s: &str) -> (&str, &str) {
    let mut chars = s.char_indices();
    let Some((_, first)) = chars.next() else {
        return (s, "");
    };
    let end = if first == '"' {
        let mut escaped = false;
        let mut end = s.len();
        for (i, c) in chars {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = i + 1;
                break;
            }
        }
        end
    } else if first.is_whitespace() {
        chars
            .find(|(_, c)| !c.is_whitespace())
            .map_or(s.len(), |(i, _)| i)
    } else {
        chars
            .find(|(_, c)| c.is_whitespace() || *c == '"')
            .map_or(s.len(), |(i, _)| i)
    };
    s.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_stay_as_they_are() {
        let m = "no such container: \"web\"";
        assert!(matches!(long_inputs(m), Cow::Borrowed(_)));
        let long_but_wordy = "word ".repeat(100);
        assert_eq!(long_inputs(&long_but_wordy), long_but_wordy);
    }

    #[test]
    fn long_quoted_and_bare_inputs_are_cut_keeping_the_rest() {
        let big = "a".repeat(1 << 20);
        let m = format!("invalid image reference {big:?}: see --help");
        let c = long_inputs(&m);
        assert_eq!(
            c,
            format!(
                "invalid image reference \"{}…(1048576 bytes)\": see --help",
                "a".repeat(KEEP)
            )
        );
        let m = format!("no such container: {big} (try ps -a)");
        let c = long_inputs(&m);
        assert!(c.ends_with("…(1048576 bytes) (try ps -a)"), "{c}");
        assert!(c.len() < 300);
    }

    #[test]
    fn cutting_respects_characters_and_escapes() {
        let big = "é\"".repeat(300);
        let m = format!("bad {big:?} end");
        let c = long_inputs(&m);
        assert!(c.ends_with(" end"), "{c}");
        assert!(c.len() < 700, "{}", c.len());
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn a_cut_message_is_not_cut_again() {
        let m = format!("no such image {:?}", "x".repeat(5000));
        let once = long_inputs(&m).into_owned();
        assert_eq!(long_inputs(&once), once);
        assert!(once.contains("…(5000 bytes)"), "{once}");
    }
}
