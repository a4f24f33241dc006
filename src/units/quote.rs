//! Splitting and quoting command lines as systemd does (systemd.syntax(7),
//! systemd.service(5) "Command lines"): whitespace separates words, `"…"` and `'…'`
//! quote, `\` escapes; `%` is a specifier and `$` a variable, so literal ones are doubled.

/// Splits a value into words (systemd's rules for `Exec=`, `Environment=`, `Label=`).
pub fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => match chars.next() {
                Some('n') => cur.push('\n'),
                Some('t') => cur.push('\t'),
                Some(e) => cur.push(e),
                None => return Err("a trailing backslash escapes nothing".into()),
            },
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
                continue;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                continue;
            }
            (None, c) => cur.push(c),
        }
        in_word = true;
    }
    if let Some(q) = quote {
        return Err(format!("a {q} quote is not closed"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// One word for a systemd command line: specifiers and variables escaped, quoted when
/// it has whitespace, quotes or backslashes (or is empty).
pub fn quote(word: &str) -> String {
    quote_escaped(word.replace('%', "%%").replace('$', "$$"))
}

/// A value of `Environment=`: specifiers escaped (systemd expands no variables there),
/// quoted as [`quote`] does.
pub fn quote_env(assignment: &str) -> String {
    quote_escaped(assignment.replace('%', "%%"))
}

fn quote_escaped(escaped: String) -> String {
    if !escaped.is_empty()
        && !escaped
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        return escaped;
    }
    let mut out = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A command line of quoted words.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_systemd() {
        assert_eq!(
            split(r#"sh -c "echo 'a b'; exit 3" x\ y ''"#).unwrap(),
            vec!["sh", "-c", "echo 'a b'; exit 3", "x y", ""]
        );
        assert!(split("a \"b").is_err());
        assert!(split("a\\").is_err());
    }

    #[test]
    fn quote_round_trips_through_split() {
        for w in [
            "plain",
            "two words",
            "q\"uote",
            "back\\slash",
            "",
            "semi;colon",
        ] {
            assert_eq!(split(&quote(w)).unwrap(), vec![w.to_string()], "{w}");
        }
        assert_eq!(quote("100%"), "100%%");
        assert_eq!(quote("$HOME"), "$$HOME");
        assert_eq!(quote_env("A=$x 5%"), "\"A=$x 5%%\"");
    }
}
