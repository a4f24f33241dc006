//! The parser of skiff's Go templates (`text/template`'s syntax): text and `{{actions}}`
//! with trim markers and comments, pipelines, variables, `if`/`else if`/`range`/`with`/
//! `break`/`continue`. Errors are worded as Go's (`template: :LINE: ...`).

use super::funcs;
use super::lex::{err, scan, Action, Piece, Tok, Token};
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
