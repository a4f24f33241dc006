//! The lexer of skiff's Go templates: splits the source into text and actions (trim
//! markers applied, comments dropped) and each action into tokens.

use super::TemplateError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Field(String),
    Var(String),
    Dot,
    Ident(String),
    Str(String),
    Num(serde_json::Value),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// A token and whether space came before it (`$x.A` vs `$x .A`).
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub tok: Tok,
    pub spaced: bool,
    pub col: usize,
}

/// One `{{...}}` as tokens, with its line.
pub(super) struct Action {
    pub toks: Vec<Token>,
    pub line: usize,
    pub col: usize,
    pub text: String,
}

pub(super) enum Piece {
    Text(String),
    Action(Action),
}

pub(super) fn err(line: usize, msg: impl std::fmt::Display) -> TemplateError {
    TemplateError::Parse(format!("template: :{line}: {msg}"))
}

/// Splits the source into text and actions (trim markers applied, comments dropped).
pub(super) fn scan(src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut line = 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let text = if trim_next { rest.trim_start() } else { rest };
            out.push(Piece::Text(text.to_string()));
            break;
        };
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let trim_left = after.starts_with("- ")
            || after.starts_with("-\t")
            || after.starts_with("-\n")
            || after.starts_with("-\r");
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            out.push(Piece::Text(text.to_string()));
        }
        line += rest[..open].matches('\n').count();
        let col = rest[..open].rfind('\n').map_or(open, |i| open - i - 1) + 1;
        let body_start = if trim_left { 2 } else { 0 };
        let body = &after[body_start..];
        let (toks, used, trim_right) = lex_action(body, line)?;
        let text_of = body[..used].to_string();
        line += body[..used].matches('\n').count();
        if let Some(toks) = toks {
            out.push(Piece::Action(Action {
                toks,
                line,
                col,
                text: text_of,
            }));
        }
        let close = used + if trim_right { 4 } else { 2 };
        rest = &body[close..];
        trim_next = trim_right;
    }
    Ok(out)
}

/// Lexes one action's body up to `}}`: (tokens, or None for a comment; bytes before the
/// closing delimiter; whether it was ` -}}`).
#[allow(clippy::type_complexity)]
pub(super) fn lex_action(
    body: &str,
    line: usize,
) -> Result<(Option<Vec<Token>>, usize, bool), TemplateError> {
    let b = body.as_bytes();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while *i < b.len() && (b[*i] as char).is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_space(&mut i);
    if body[i..].starts_with("/*") {
        let Some(end) = body[i + 2..].find("*/") else {
            return Err(err(line, "unclosed comment"));
        };
        let mut j = i + 2 + end + 2;
        skip_space(&mut j);
        let close = &body[j..];
        // Go wants the comment to end the action (a trim marker may follow).
        if close.starts_with("}}") {
            return Ok((None, j, false));
        }
        if close.starts_with("-}}") && j > 0 && (b[j - 1] as char).is_ascii_whitespace() {
            return Ok((None, j - 1, true));
        }
        return Err(err(line, "comment ends before closing delimiter"));
    }
    let mut toks = Vec::new();
    loop {
        let before = i;
        skip_space(&mut i);
        let spaced = i > before;
        if i >= b.len() {
            return Err(err(line, "unclosed action"));
        }
        let rest = &body[i..];
        if rest.starts_with("}}") {
            return Ok((Some(toks), i, false));
        }
        if spaced && rest.starts_with("-}}") {
            return Ok((Some(toks), i - 1, true));
        }
        // The character (not the byte: a name may be non-ASCII).
        let c = rest.chars().next().unwrap_or(' ');
        let start = i;
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            '|' => {
                i += 1;
                Tok::Pipe
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '=' => {
                i += 1;
                Tok::Assign
            }
            ':' if rest.starts_with(":=") => {
                i += 2;
                Tok::Declare
            }
            '"' => {
                let (s, used) = lex_quoted(rest, line)?;
                i += used;
                Tok::Str(s)
            }
            '`' => match rest[1..].find('`') {
                Some(end) => {
                    i += end + 2;
                    Tok::Str(rest[1..1 + end].to_string())
                }
                None => return Err(err(line, "unterminated raw quoted string")),
            },
            '.' if !rest[1..].starts_with(|c: char| c.is_ascii_digit()) => {
                let n = ident_len(&rest[1..]);
                i += 1 + n;
                if n == 0 {
                    Tok::Dot
                } else {
                    Tok::Field(rest[1..1 + n].to_string())
                }
            }
            '$' => {
                let n = ident_len(&rest[1..]);
                i += 1 + n;
                Tok::Var(rest[..1 + n].to_string())
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let n = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "+-._".contains(c)))
                    .unwrap_or(rest.len());
                let word = &rest[..n];
                i += n;
                Tok::Num(
                    parse_number(word)
                        .ok_or_else(|| err(line, format!("bad number syntax: {word:?}")))?,
                )
            }
            c if c.is_alphabetic() || c == '_' => {
                // At least the first character: an identifier is never empty.
                let n = ident_len(rest).max(c.len_utf8());
                i += n;
                Tok::Ident(rest[..n].to_string())
            }
            '\'' => {
                // A character constant: its code point, as Go.
                let mut cs = rest[1..].chars();
                match (cs.next(), cs.next()) {
                    (Some(ch), Some('\'')) if ch != '\\' => {
                        i += 2 + ch.len_utf8();
                        Tok::Num((ch as u32).into())
                    }
                    _ => return Err(err(line, "unsupported character constant")),
                }
            }
            other => {
                return Err(err(line, format!("unexpected {other:?} in command")));
            }
        };
        toks.push(Token {
            tok,
            spaced,
            col: start,
        });
    }
}

pub(super) fn ident_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

pub(super) fn parse_number(w: &str) -> Option<serde_json::Value> {
    let clean = w.replace('_', "");
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, clean.trim_start_matches('+').to_string()),
    };
    let int = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else {
        digits.parse::<i64>().ok()
    };
    if let Some(n) = int {
        return Some(serde_json::Value::from(if neg { -n } else { n }));
    }
    let f: f64 = digits.parse().ok()?;
    serde_json::Number::from_f64(if neg { -f } else { f }).map(serde_json::Value::Number)
}

/// A Go interpreted string literal at the start of `s`: (value, bytes used).
pub(super) fn lex_quoted(s: &str, line: usize) -> Result<(String, usize), TemplateError> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\n' => break,
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String =
                            (0..n).filter_map(|_| chars.next().map(|x| x.1)).collect();
                        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                            Some(ch) if hex.len() == n => out.push(ch),
                            _ => return Err(err(line, format!("bad escape \\{e}{hex} in string"))),
                        }
                    }
                    other => return Err(err(line, format!("unknown escape sequence: \\{other}"))),
                }
            }
            c => out.push(c),
        }
    }
    Err(err(line, "unterminated quoted string"))
}
