//! The parser of skiff's Go templates (`text/template`'s syntax): text and `{{actions}}`
//! with trim markers and comments, pipelines, variables, `if`/`else if`/`range`/`with`/
//! `break`/`continue`. Errors are worded as Go's (`template: :LINE: ...`).

use super::funcs;
use super::TemplateError;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    pub(super) nodes: Vec<Node>,
}

/// A node of the tree.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Action(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
    Break,
    Continue,
}

/// A pipeline, with the variables it declares (`$x := ...`) or assigns (`$x = ...`).
#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub vars: Vec<String>,
    pub declare: bool,
    pub cmds: Vec<Cmd>,
    /// Where it starts (line, column), for execution errors.
    pub pos: (usize, usize),
}

/// One command of a pipeline: a function and its arguments, or one operand.
#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub args: Vec<Arg>,
    /// The command's text, for execution errors (`at <.Foo>`).
    pub text: String,
}

/// An operand.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// `.`
    Dot,
    /// `.A.B` (fields of dot).
    Field(Vec<String>),
    /// `$x.A.B` (`$` is the data the template was given).
    Var(String, Vec<String>),
    /// A function name.
    Func(String),
    /// `(pipeline).A.B`.
    Sub(Box<Pipe>, Vec<String>),
    /// A string, number, bool or nil constant.
    Const(serde_json::Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
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
struct Token {
    tok: Tok,
    spaced: bool,
    col: usize,
}

/// One `{{...}}` as tokens, with its line.
struct Action {
    toks: Vec<Token>,
    line: usize,
    col: usize,
    text: String,
}

enum Piece {
    Text(String),
    Action(Action),
}

fn err(line: usize, msg: impl std::fmt::Display) -> TemplateError {
    TemplateError::Parse(format!("template: :{line}: {msg}"))
}

/// Splits the source into text and actions (trim markers applied, comments dropped).
fn scan(src: &str) -> Result<Vec<Piece>, TemplateError> {
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
fn lex_action(body: &str, line: usize) -> Result<(Option<Vec<Token>>, usize, bool), TemplateError> {
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
        let c = b[i] as char;
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
                let n = ident_len(rest);
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

fn ident_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

fn parse_number(w: &str) -> Option<serde_json::Value> {
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
fn lex_quoted(s: &str, line: usize) -> Result<(String, usize), TemplateError> {
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

/// What ended a list of nodes.
enum Closer {
    Eof,
    End,
    Else(Option<Action>),
}

struct Parser {
    pieces: std::vec::IntoIter<Piece>,
    /// Variables in scope, innermost last.
    vars: Vec<String>,
    /// How many `range`s enclose the current node.
    ranges: usize,
}

/// Parses a template's source.
pub fn parse(src: &str) -> Result<Template, TemplateError> {
    let mut p = Parser {
        pieces: scan(src)?.into_iter(),
        vars: vec!["$".into()],
        ranges: 0,
    };
    let (nodes, end) = p.list()?;
    match end {
        Closer::Eof => Ok(Template { nodes }),
        Closer::End => Err(err(0, "unexpected {{end}}").relined()),
        Closer::Else(_) => Err(err(0, "unexpected {{else}}").relined()),
    }
}

impl TemplateError {
    fn relined(self) -> TemplateError {
        match self {
            TemplateError::Parse(m) => TemplateError::Parse(m.replace(":0:", ":")),
            other => other,
        }
    }
}

impl Parser {
    fn list(&mut self) -> Result<(Vec<Node>, Closer), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            let a = match piece {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Piece::Action(a) => a,
            };
            let line = a.line;
            let keyword = match a.toks.first() {
                Some(Token {
                    tok: Tok::Ident(k), ..
                }) => k.clone(),
                None => return Err(err(line, "missing value for command")),
                _ => String::new(),
            };
            match keyword.as_str() {
                "end" => {
                    if a.toks.len() > 1 {
                        return Err(err(line, "unexpected token in end"));
                    }
                    return Ok((nodes, Closer::End));
                }
                "else" => return Ok((nodes, Closer::Else(Some(a)))),
                "if" | "with" | "range" => nodes.push(self.control(&keyword, a)?),
                "break" | "continue" => {
                    if self.ranges == 0 {
                        return Err(err(
                            line,
                            format!("{{{{{keyword}}}}} outside {{{{range}}}}"),
                        ));
                    }
                    if a.toks.len() > 1 {
                        return Err(err(line, format!("unexpected token in {{{{{keyword}}}}}")));
                    }
                    nodes.push(if keyword == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    });
                }
                "define" | "template" | "block" => {
                    return Err(err(
                        line,
                        format!("{{{{{keyword}}}}} (named templates) is not supported by skiff"),
                    ))
                }
                _ => nodes.push(Node::Action(self.pipeline(&a, &a.toks, true)?)),
            }
        }
        Ok((nodes, Closer::Eof))
    }

    /// `if`, `with` or `range`, from its opening action to its `{{end}}`.
    fn control(&mut self, keyword: &str, a: Action) -> Result<Node, TemplateError> {
        let line = a.line;
        let scope = self.vars.len();
        let pipe = self.pipeline(&a, &a.toks[1..], keyword == "range")?;
        if pipe.cmds.is_empty() {
            return Err(err(line, format!("missing value for {keyword}")));
        }
        if keyword == "range" {
            self.ranges += 1;
        }
        let body = self.list();
        if keyword == "range" {
            self.ranges -= 1;
        }
        let (body, end) = body?;
        let els = match end {
            Closer::Eof => return Err(err(line, format!("unexpected EOF in {keyword}"))),
            Closer::End => Vec::new(),
            Closer::Else(Some(e)) if e.toks.len() > 1 => {
                // `else if ...` / `else with ...`: a nested control that shares our end.
                let chained = match &e.toks[1].tok {
                    Tok::Ident(k) if (k == "if" || k == "with") && k == keyword => k.clone(),
                    Tok::Ident(k) if k == "if" || k == "with" => k.clone(),
                    _ => return Err(err(e.line, "unexpected token in else")),
                };
                let rest = Action {
                    toks: e.toks[1..].to_vec(),
                    line: e.line,
                    col: e.col,
                    text: e.text.clone(),
                };
                vec![self.control(&chained, rest)?]
            }
            Closer::Else(_) => {
                let (els, end) = self.list()?;
                match end {
                    Closer::End => els,
                    Closer::Eof => return Err(err(line, format!("unexpected EOF in {keyword}"))),
                    Closer::Else(_) => {
                        return Err(err(
                            line,
                            format!("expected end; found {{{{else}}}} in {keyword}"),
                        ))
                    }
                }
            }
        };
        self.vars.truncate(scope);
        Ok(match keyword {
            "if" => Node::If(pipe, body, els),
            "with" => Node::With(pipe, body, els),
            _ => Node::Range(pipe, body, els),
        })
    }

    /// A pipeline, with a leading declaration when there is one.
    fn pipeline(
        &mut self,
        a: &Action,
        toks: &[Token],
        two_vars: bool,
    ) -> Result<Pipe, TemplateError> {
        let line = a.line;
        let mut vars = Vec::new();
        let mut declare = false;
        let mut rest = toks;
        // `$x :=`, `$x =`, or (range) `$i, $e :=`.
        let decl_end = toks
            .iter()
            .position(|t| matches!(t.tok, Tok::Declare | Tok::Assign));
        if let Some(end) = decl_end {
            let head = &toks[..end];
            let names: Vec<&str> = head
                .iter()
                .filter(|t| t.tok != Tok::Comma)
                .filter_map(|t| match &t.tok {
                    Tok::Var(v) => Some(v.as_str()),
                    _ => None,
                })
                .collect();
            let plain = head
                .iter()
                .all(|t| matches!(t.tok, Tok::Var(_) | Tok::Comma));
            if plain && !names.is_empty() {
                if names.len() > 2 || (names.len() == 2 && !two_vars) {
                    return Err(err(line, "too many declarations in command"));
                }
                declare = toks[end].tok == Tok::Declare;
                for n in &names {
                    if !declare && !self.vars.iter().any(|v| v == n) {
                        return Err(err(line, format!("undefined variable \"{n}\"")));
                    }
                    vars.push(n.to_string());
                }
                rest = &toks[end + 1..];
            }
        }
        let pipe = self.pipe_of(a, rest, line)?;
        if declare {
            self.vars.extend(vars.iter().cloned());
        }
        Ok(Pipe {
            vars,
            declare,
            cmds: pipe,
            pos: (line, a.col),
        })
    }

    /// Commands separated by `|`.
    fn pipe_of(&self, a: &Action, toks: &[Token], line: usize) -> Result<Vec<Cmd>, TemplateError> {
        let mut cmds = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let start = i;
            let mut args = Vec::new();
            while i < toks.len() && toks[i].tok != Tok::Pipe {
                let (arg, used) = self.operand(a, &toks[i..], line)?;
                if !args.is_empty() && !toks[i].spaced && toks[i].tok != Tok::LParen {
                    return Err(err(line, "missing space between operands"));
                }
                args.push(arg);
                i += used;
            }
            if args.is_empty() {
                return Err(err(line, "missing command in pipeline"));
            }
            let from = toks[start].col;
            let to = toks.get(i).map_or(a.text.len(), |t| t.col);
            let text = source_slice(&a.text, from, to);
            if !cmds.is_empty() {
                if let Arg::Const(_) = args[0] {
                    return Err(err(
                        line,
                        format!(
                            "non executable command in pipeline stage {}",
                            cmds.len() + 1
                        ),
                    ));
                }
            }
            cmds.push(Cmd { args, text });
            if i < toks.len() {
                i += 1; // the `|`
                if i == toks.len() {
                    return Err(err(line, "missing command after |"));
                }
            }
        }
        Ok(cmds)
    }

    /// One operand at the start of `toks`: (the operand, tokens used).
    fn operand(
        &self,
        a: &Action,
        toks: &[Token],
        line: usize,
    ) -> Result<(Arg, usize), TemplateError> {
        let fields = |from: usize| -> (Vec<String>, usize) {
            let mut f = Vec::new();
            let mut j = from;
            while let Some(Token {
                tok: Tok::Field(name),
                spaced: false,
                ..
            }) = toks.get(j)
            {
                f.push(name.clone());
                j += 1;
            }
            (f, j)
        };
        let t = &toks[0];
        Ok(match &t.tok {
            Tok::Dot => (Arg::Dot, 1),
            Tok::Field(name) => {
                let (mut more, used) = fields(1);
                more.insert(0, name.clone());
                (Arg::Field(more), used)
            }
            Tok::Var(v) => {
                if !self.vars.iter().any(|x| x == v) {
                    return Err(err(line, format!("undefined variable \"{v}\"")));
                }
                let (more, used) = fields(1);
                (Arg::Var(v.clone(), more), used)
            }
            Tok::Str(s) => (Arg::Const(s.clone().into()), 1),
            Tok::Num(n) => (Arg::Const(n.clone()), 1),
            Tok::Ident(id) => match id.as_str() {
                "true" => (Arg::Const(true.into()), 1),
                "false" => (Arg::Const(false.into()), 1),
                "nil" => (Arg::Const(serde_json::Value::Null), 1),
                name if funcs::exists(name) => (Arg::Func(name.to_string()), 1),
                name => return Err(err(line, format!("function \"{name}\" not defined"))),
            },
            Tok::LParen => {
                let mut depth = 0;
                let mut close = None;
                for (j, x) in toks.iter().enumerate() {
                    match x.tok {
                        Tok::LParen => depth += 1,
                        Tok::RParen => {
                            depth -= 1;
                            if depth == 0 {
                                close = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let close = close.ok_or_else(|| err(line, "unclosed left paren"))?;
                let inner = self.pipe_of(a, &toks[1..close], line)?;
                if inner.is_empty() {
                    return Err(err(line, "missing value for parenthesized pipeline"));
                }
                let (more, used) = fields(close + 1);
                let sub = Pipe {
                    vars: Vec::new(),
                    declare: false,
                    cmds: inner,
                    pos: (line, a.col),
                };
                (Arg::Sub(Box::new(sub), more), used)
            }
            Tok::RParen => return Err(err(line, "unexpected right paren")),
            Tok::Pipe => return Err(err(line, "missing command before |")),
            Tok::Comma => return Err(err(line, "unexpected \",\" in operand")),
            Tok::Declare | Tok::Assign => {
                return Err(err(line, "unexpected \":=\" or \"=\" in operand"))
            }
        })
    }
}

/// `text[from..to]` trimmed, safe for any byte offsets.
fn source_slice(text: &str, from: usize, to: usize) -> String {
    text.get(from.min(text.len())..to.min(text.len()))
        .unwrap_or(text)
        .trim()
        .to_string()
}
