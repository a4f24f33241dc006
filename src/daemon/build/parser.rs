//! The Dockerfile parser (pure: text in, instructions out) and docker's word expansion.
//!
//! - Parser directives at the top (`# escape=\` or `` ` ``; `# syntax=` is ignored).
//! - Comment lines (first non-blank character `#`) are dropped, also inside a
//!   continuation; a line ending in the escape character continues on the next.
//! - RUN here-documents (`<<EOF`, `<<-EOF`, quoted terminators): their lines follow the
//!   instruction up to the terminator; `RUN <<EOF` alone becomes the script, else the
//!   text is kept in the command for the shell to read.
//! - Each instruction keeps its line, its upper-cased name, leading `--flag=value`
//!   flags (FROM, RUN, COPY, ADD, HEALTHCHECK) and its arguments; RUN, CMD, ENTRYPOINT
//!   and SHELL are in exec form when their arguments are a JSON array of strings.
//! - [`expand_words`] / [`expand_word`] do docker's substitution and quoting: `$V`,
//!   `${V}`, `${V:-word}`, `${V:+word}`, single quotes literal, double quotes with
//!   expansion, the escape character escaping the next one.
//!
//! Errors name the file and line.

use std::collections::BTreeMap;

/// A parse or expansion error, naming `file:line`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {msg}")]
pub struct ParseError {
    /// The Dockerfile's name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

/// Arguments of an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// A JSON array of strings (exec form).
    Exec(Vec<String>),
    /// The rest of the line (shell form, or any other instruction's arguments).
    Shell(String),
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// Upper-cased name (`RUN`).
    pub cmd: String,
    /// Leading `--name=value` flags (`--name` alone has value "").
    pub flags: Vec<(String, String)>,
    /// The arguments.
    pub args: Args,
    /// The instruction as written (continuations joined), for progress lines.
    pub original: String,
}

impl Instruction {
    /// The value of flag `name`, if given.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The arguments as one string (an exec form re-joined with spaces).
    pub fn text(&self) -> String {
        match &self.args {
            Args::Shell(s) => s.clone(),
            Args::Exec(v) => v.join(" "),
        }
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character.
    pub escape: char,
    /// The instructions in order.
    pub instructions: Vec<Instruction>,
}

const KNOWN: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// Instructions whose leading `--flags` are parsed.
const WITH_FLAGS: &[&str] = &["FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"];

/// Parses Dockerfile `text`; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile, ParseError> {
    let err = |line: usize, msg: String| ParseError {
        file: file.to_string(),
        line,
        msg,
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut i = 0;
    // Directives: only at the very top, before any other line.
    while i < lines.len() {
        let t = lines[i].trim();
        let Some(rest) = t.strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "escape" => {
                escape = match v {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(err(
                            i + 1,
                            format!("invalid escape character {v:?}: use \\ or `"),
                        ))
                    }
                }
            }
            "syntax" | "check" => {}
            _ => break,
        }
        i += 1;
    }
    let mut out = Vec::new();
    while i < lines.len() {
        let start = i;
        let first = lines[i];
        i += 1;
        let t = first.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        // Join continuation lines.
        let mut logical = String::new();
        let mut cur = first.to_string();
        loop {
            let trimmed = cur.trim_end();
            if let Some(body) = trimmed.strip_suffix(escape) {
                logical.push_str(body);
                // The next non-comment line continues this one.
                let mut next = None;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let lt = l.trim_start();
                    if lt.starts_with('#') || lt.is_empty() {
                        continue;
                    }
                    next = Some(l.to_string());
                    break;
                }
                match next {
                    Some(n) => cur = n,
                    None => break,
                }
            } else {
                logical.push_str(trimmed);
                break;
            }
        }
        let logical = logical.trim().to_string();
        let (name, rest) = match logical.split_once(char::is_whitespace) {
            Some((n, r)) => (n, r.trim_start()),
            None => (logical.as_str(), ""),
        };
        let cmd = name.to_ascii_uppercase();
        if !KNOWN.contains(&cmd.as_str()) {
            return Err(err(
                start + 1,
                format!("unknown instruction {name:?} (known: {})", KNOWN.join(", ")),
            ));
        }
        let mut rest = rest.to_string();
        let mut flags = Vec::new();
        if WITH_FLAGS.contains(&cmd.as_str()) {
            while let Some(f) = rest.strip_prefix("--") {
                let (word, tail) = match f.split_once(char::is_whitespace) {
                    Some((w, t)) => (w.to_string(), t.trim_start().to_string()),
                    None => (f.to_string(), String::new()),
                };
                let (k, v) = word.split_once('=').unwrap_or((&word, ""));
                flags.push((k.to_string(), v.to_string()));
                rest = tail;
            }
        }
        if cmd == "RUN" {
            let docs = super::heredoc::openers(&rest);
            if !docs.is_empty() {
                let mut bodies = Vec::new();
                for (word, strip_tabs) in &docs {
                    let mut body = Vec::new();
                    loop {
                        let Some(l) = lines.get(i) else {
                            return Err(err(
                                start + 1,
                                format!(
                                    "the here-document <<{word} has no end: add a line {word} \
                                     after its text"
                                ),
                            ));
                        };
                        i += 1;
                        let l: &str = if *strip_tabs {
                            l.trim_start_matches('\t')
                        } else {
                            l
                        };
                        if l == word {
                            break;
                        }
                        body.push(l.to_string());
                    }
                    bodies.push((word.clone(), body));
                }
                // `RUN <<EOF`: the text is the script; else the shell reads the
                // here-documents itself (`RUN cat <<EOF > f`).
                let alone = rest.trim().starts_with("<<") && !rest.trim().contains(' ');
                rest = match bodies.as_slice() {
                    [(_, body)] if alone => body.join("\n"),
                    _ => {
                        let mut t = rest.clone();
                        for (word, body) in &bodies {
                            for b in body {
                                t.push('\n');
                                t.push_str(b);
                            }
                            t.push('\n');
                            t.push_str(word);
                        }
                        t
                    }
                };
            }
        }
        if rest.is_empty() && cmd != "HEALTHCHECK" {
            return Err(err(start + 1, format!("{cmd} requires arguments")));
        }
        let json_forms = ["RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"];
        let args = match serde_json::from_str::<Vec<String>>(&rest) {
            Ok(v) if rest.starts_with('[') && json_forms.contains(&cmd.as_str()) => Args::Exec(v),
            _ if cmd == "SHELL" => {
                return Err(err(
                    start + 1,
                    "SHELL requires the JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]".into(),
                ))
            }
            _ => Args::Shell(rest),
        };
        out.push(Instruction {
            line: start + 1,
            cmd,
            flags,
            args,
            original: logical,
        });
    }
    Ok(Dockerfile {
        escape,
        instructions: out,
    })
}

/// Splits `s` into words with docker's quoting and substitutes variables from `vars`.
pub fn expand_words(
    s: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<Vec<String>, String> {
    lex(s, vars, escape, true, true)
}

/// Expands `s` as one word (no splitting on blanks).
pub fn expand_word(
    s: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<String, String> {
    Ok(lex(s, vars, escape, false, false)?.join(""))
}

/// The lexer: with `split`, blanks separate words; with `split_values`, so do blanks
/// in unquoted variable values (COPY sources), else a value stays in its word (ENV).
fn lex(
    s: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
    split: bool,
    split_values: bool,
) -> Result<Vec<String>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if split && c.is_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
            i += 1;
            continue;
        }
        in_word = true;
        if c == escape {
            if let Some(n) = chars.get(i + 1) {
                cur.push(*n);
            }
            i += 2;
        } else if c == '\'' {
            let end = chars[i + 1..]
                .iter()
                .position(|x| *x == '\'')
                .ok_or("a single quote is not closed")?;
            cur.extend(&chars[i + 1..i + 1 + end]);
            i += end + 2;
        } else if c == '"' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("a double quote is not closed".into()),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(e) if *e == escape => {
                        match chars.get(i + 1) {
                            Some(n @ ('"' | '$')) => cur.push(*n),
                            Some(n) if *n == escape => cur.push(*n),
                            Some(n) => {
                                cur.push(escape);
                                cur.push(*n);
                            }
                            None => {}
                        }
                        i += 2;
                    }
                    Some('$') => i = substitute(&chars, i, vars, escape, &mut cur)?,
                    Some(x) => {
                        cur.push(*x);
                        i += 1;
                    }
                }
            }
        } else if c == '$' {
            // Unquoted: the value is split on blanks too, as docker's lexer does.
            let mut value = String::new();
            i = substitute(&chars, i, vars, escape, &mut value)?;
            for ch in value.chars() {
                if split_values && ch.is_whitespace() {
                    if in_word {
                        out.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                } else {
                    cur.push(ch);
                    in_word = true;
                }
            }
        } else {
            cur.push(c);
            i += 1;
        }
    }
    if in_word || !split {
        out.push(cur);
    }
    Ok(out)
}

/// Expands the variable reference at `chars[i]` (`$`) into `cur`; returns the index
/// after it.
fn substitute(
    chars: &[char],
    i: usize,
    vars: &BTreeMap<String, String>,
    escape: char,
    cur: &mut String,
) -> Result<usize, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let close = chars[i + 2..]
                .iter()
                .position(|c| *c == '}')
                .ok_or("a ${ is not closed by }")?;
            let inner: String = chars[i + 2..i + 2 + close].iter().collect();
            let (name, op) = match inner.find(':') {
                Some(p) => (&inner[..p], Some(&inner[p..])),
                None => (inner.as_str(), None),
            };
            if name.is_empty() || !name.chars().all(is_name) {
                return Err(format!("bad substitution ${{{inner}}}"));
            }
            let val = vars.get(name).filter(|v| !v.is_empty());
            match op {
                None => cur.push_str(vars.get(name).map(String::as_str).unwrap_or("")),
                Some(o) if o.starts_with(":-") => match val {
                    Some(v) => cur.push_str(v),
                    None => cur.push_str(&expand_word(&o[2..], vars, escape)?),
                },
                Some(o) if o.starts_with(":+") => {
                    if val.is_some() {
                        cur.push_str(&expand_word(&o[2..], vars, escape)?)
                    }
                }
                Some(o) => return Err(format!("unsupported modifier {o:?} in ${{{inner}}}")),
            }
            Ok(i + 3 + close)
        }
        Some(c) if is_name(*c) => {
            let len = chars[i + 1..].iter().take_while(|c| is_name(**c)).count();
            let name: String = chars[i + 1..i + 1 + len].iter().collect();
            cur.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
            Ok(i + 1 + len)
        }
        _ => {
            cur.push('$');
            Ok(i + 1)
        }
    }
}

/// `KEY=VALUE` pairs (ENV, LABEL, ARG), or for ENV the legacy `KEY VALUE...`.
pub fn key_values(
    s: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
    legacy: bool,
) -> Result<Vec<(String, Option<String>)>, String> {
    let first = s.split_whitespace().next().unwrap_or("");
    if legacy && !first.contains('=') {
        let value = s[s.find(first).unwrap_or(0) + first.len()..].trim();
        return Ok(vec![(
            first.to_string(),
            Some(expand_word(value, vars, escape)?),
        )]);
    }
    lex(s, vars, escape, true, false)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("{w:?} has no name before =")),
            Some((k, v)) => Ok((k.to_string(), Some(v.to_string()))),
            None => Ok((w, None)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn run_here_documents() {
        let df = parse(
            "FROM b\nRUN <<EOF\necho a\n# kept\necho $((1<<3))\nEOF\nRUN cat <<-'END' > /f\n\tx $HOME\n\tEND\nRUN echo $((2<<1))\n",
            "Dockerfile",
        )
        .unwrap();
        let i = &df.instructions;
        assert_eq!(i.len(), 4, "{i:?}");
        assert_eq!(
            i[1].args,
            Args::Shell("echo a\n# kept\necho $((1<<3))".into())
        );
        assert_eq!(i[2].line, 7);
        assert_eq!(
            i[2].args,
            Args::Shell("cat <<-'END' > /f\nx $HOME\nEND".into())
        );
        assert_eq!(i[3].args, Args::Shell("echo $((2<<1))".into()));
        let e = parse("FROM b\nRUN <<EOF\necho\n", "Dockerfile").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("has no end"), "{e}");
    }

    #[test]
    fn continuations_comments_and_forms() {
        let df = parse(
            "# syntax=docker/dockerfile:1\nFROM busybox AS base\n# a comment\nRUN echo a \\\n  # inside\n  && echo b\nCMD [\"/bin/sh\", \"-c\", \"x\"]\nCOPY --chown=1:2 --from=base a b /d/\n",
            "Dockerfile",
        )
        .unwrap();
        let i = &df.instructions;
        assert_eq!(i.len(), 4);
        assert_eq!(i[0].text(), "busybox AS base");
        assert_eq!(i[1].line, 4);
        assert_eq!(i[1].args, Args::Shell("echo a   && echo b".into()));
        assert_eq!(
            i[2].args,
            Args::Exec(vec!["/bin/sh".into(), "-c".into(), "x".into()])
        );
        assert_eq!(i[3].flag("chown"), Some("1:2"));
        assert_eq!(i[3].flag("from"), Some("base"));
        assert_eq!(i[3].text(), "a b /d/");
    }

    #[test]
    fn escape_directive() {
        let df = parse("# escape=`\nFROM x\nRUN dir `\n  c:\\\n", "D").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.instructions[1].text(), "dir   c:\\");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("FROM x\n\nBOGUS y\n", "sub/Dockerfile").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.to_string()
                .starts_with("sub/Dockerfile:3: unknown instruction"),
            "{e}"
        );
        let e = parse("FROM x\nRUN\n", "D").unwrap_err();
        assert_eq!(e.to_string(), "D:2: RUN requires arguments");
        let e = parse("SHELL sh -c\n", "D").unwrap_err();
        assert!(e.msg.contains("JSON form"), "{e}");
    }

    #[test]
    fn substitution_rules() {
        let v = vars(&[("A", "1"), ("E", ""), ("P", "/x y")]);
        let w = |s: &str| expand_word(s, &v, '\\').unwrap();
        assert_eq!(w("$A"), "1");
        assert_eq!(w("${A}b"), "1b");
        assert_eq!(w("$Ab"), "");
        assert_eq!(w("${N:-def}"), "def");
        assert_eq!(w("${E:-def}"), "def");
        assert_eq!(w("${A:-def}"), "1");
        assert_eq!(w("${A:+set}"), "set");
        assert_eq!(w("${N:+set}"), "");
        assert_eq!(w("${N:-$A}"), "1");
        assert_eq!(w("\\$A"), "$A");
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A\""), "1");
        assert_eq!(w("a$"), "a$");
        assert_eq!(
            expand_words("$P \"q r\" 's t'", &v, '\\').unwrap(),
            ["/x", "y", "q r", "s t"]
        );
        assert!(expand_word("${A", &v, '\\').is_err());
        assert!(expand_word("\"open", &v, '\\').is_err());
    }

    #[test]
    fn key_values_both_forms() {
        let v = vars(&[("A", "1")]);
        assert_eq!(
            key_values("K=$A L=\"two words\" M", &v, '\\', true).unwrap(),
            [
                ("K".into(), Some("1".into())),
                ("L".into(), Some("two words".into())),
                ("M".into(), None)
            ]
        );
        let p = vars(&[("P", "/x y")]);
        assert_eq!(
            key_values("K=$P", &p, '\\', false).unwrap(),
            [("K".into(), Some("/x y".into()))]
        );
        assert_eq!(
            key_values("K some $A words", &v, '\\', true).unwrap(),
            [("K".into(), Some("some 1 words".into()))]
        );
    }
}
