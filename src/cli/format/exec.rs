//! Executes a parsed template on JSON data, with Go's semantics: a missing map key is
//! `<no value>`, a missing field of a struct-shaped object is an error, truth is Go's
//! (false, 0, nil, empty), `range` over lists, objects (sorted keys) and integers.

use serde_json::Value;

use super::funcs;
use super::parse::{Arg, Cmd, Node, Pipe, Template};
use super::TemplateError;

/// A value: `None` is Go's "no value" (a missing key).
pub(super) type Val = Option<Value>;

enum Flow {
    Normal,
    Break,
    Continue,
}

/// Header mode's field-to-header function.
pub(super) type HeaderFn<'a> = &'a dyn Fn(&[String]) -> String;

/// The state of one execution.
struct Exec<'a> {
    vars: Vec<(String, Val)>,
    out: String,
    /// Header mode (the first line of a `table`): a field is its column header.
    header: Option<HeaderFn<'a>>,
}

/// Runs `t` on `data`.
pub(super) fn execute(t: &Template, data: &Value) -> Result<String, TemplateError> {
    run(t, data, None)
}

/// Runs `t` with every field replaced by `header(field path)`.
pub(super) fn execute_header(
    t: &Template,
    header: &dyn Fn(&[String]) -> String,
) -> Result<String, TemplateError> {
    run(t, &Value::Null, Some(header))
}

fn run(t: &Template, data: &Value, header: Option<HeaderFn<'_>>) -> Result<String, TemplateError> {
    let mut e = Exec {
        vars: vec![("$".into(), Some(data.clone()))],
        out: String::new(),
        header,
    };
    let dot = Some(data.clone());
    e.list(&t.nodes, &dot)?;
    Ok(e.out)
}

/// Go's truth: false, 0, nil, "" and empty lists and maps are false.
pub(super) fn truth(v: &Val) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// Go-ish type names for messages.
pub(super) fn type_name(v: &Val) -> &'static str {
    match v {
        None => "no value",
        Some(Value::Null) => "nil",
        Some(Value::Bool(_)) => "bool",
        Some(Value::Number(n)) if n.is_f64() => "float64",
        Some(Value::Number(_)) => "int",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "list",
        Some(Value::Object(_)) => "map",
    }
}

/// A struct-shaped object (docker's structs: every key capitalised) answers a missing
/// field with an error; a map (labels, ports, attributes) with "no value".
fn struct_like(o: &serde_json::Map<String, Value>) -> bool {
    !o.is_empty()
        && o.keys()
            .all(|k| k.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// `.name` of `v`.
fn field(v: &Val, name: &str) -> Result<Val, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => match o.get(name) {
            Some(x) => Ok(Some(x.clone())),
            None if struct_like(o) => Err(format!(
                "can't evaluate field {name} (the object has: {})",
                o.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            None => Ok(None),
        },
        other => Err(format!(
            "can't evaluate field {name} in type {}",
            type_name(other)
        )),
    }
}

impl Exec<'_> {
    fn fail(
        &self,
        pipe_pos: (usize, usize),
        cmd: &Cmd,
        msg: impl std::fmt::Display,
    ) -> TemplateError {
        TemplateError::Exec(format!(
            "template: :{}:{}: executing \"\" at <{}>: {msg}",
            pipe_pos.0, pipe_pos.1, cmd.text
        ))
    }

    fn list(&mut self, nodes: &[Node], dot: &Val) -> Result<Flow, TemplateError> {
        for n in nodes {
            match self.node(n, dot)? {
                Flow::Normal => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Normal)
    }

    fn node(&mut self, n: &Node, dot: &Val) -> Result<Flow, TemplateError> {
        match n {
            Node::Text(t) => self.out.push_str(t),
            Node::Action(p) => {
                let v = self.pipe(p, dot)?;
                if p.vars.is_empty() {
                    self.out.push_str(&funcs::print_value(&v));
                }
            }
            Node::If(p, body, els) | Node::With(p, body, els) => {
                let scope = self.vars.len();
                let v = self.pipe(p, dot)?;
                let flow = if truth(&v) {
                    let inner = if matches!(n, Node::With(..)) { &v } else { dot };
                    self.list(body, inner)?
                } else {
                    self.list(els, dot)?
                };
                self.vars.truncate(scope);
                return Ok(flow);
            }
            Node::Range(p, body, els) => {
                let scope = self.vars.len();
                let flow = self.range(p, body, els, dot);
                self.vars.truncate(scope);
                return flow.map(|_| Flow::Normal);
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn range(
        &mut self,
        p: &Pipe,
        body: &[Node],
        els: &[Node],
        dot: &Val,
    ) -> Result<(), TemplateError> {
        // The pipeline's value, without declaring (the variables are per element).
        let bare = Pipe {
            vars: Vec::new(),
            declare: false,
            cmds: p.cmds.clone(),
            pos: p.pos,
        };
        let v = self.pipe(&bare, dot)?;
        let items: Vec<(Value, Value)> = match &v {
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, x)| (Value::from(i), x.clone()))
                .collect(),
            Some(Value::Object(o)) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                keys.into_iter()
                    .map(|k| (Value::from(k.clone()), o[k].clone()))
                    .collect()
            }
            Some(Value::Number(n)) if n.as_i64().is_some() => (0..n.as_i64().unwrap_or(0).max(0))
                .map(|i| (Value::from(i), Value::from(i)))
                .collect(),
            None | Some(Value::Null) => Vec::new(),
            other => {
                let cmd = &p.cmds[0];
                return Err(self.fail(
                    p.pos,
                    cmd,
                    format!("range can't iterate over {}", funcs::print_value(other)),
                ));
            }
        };
        if items.is_empty() {
            self.list(els, dot)?;
            return Ok(());
        }
        let scope = self.vars.len();
        for (k, x) in items {
            self.vars.truncate(scope);
            match p.vars.as_slice() {
                [one] => self.vars.push((one.clone(), Some(x.clone()))),
                [a, b] => {
                    self.vars.push((a.clone(), Some(k)));
                    self.vars.push((b.clone(), Some(x.clone())));
                }
                _ => {}
            }
            match self.list(body, &Some(x))? {
                Flow::Break => break,
                Flow::Normal | Flow::Continue => {}
            }
        }
        Ok(())
    }

    fn pipe(&mut self, p: &Pipe, dot: &Val) -> Result<Val, TemplateError> {
        let mut last: Option<Val> = None;
        for cmd in &p.cmds {
            last = Some(self.cmd(p, cmd, dot, last)?);
        }
        let v = last.unwrap_or(None);
        if !p.vars.is_empty() {
            for name in &p.vars {
                if p.declare {
                    self.vars.push((name.clone(), v.clone()));
                } else if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    slot.1 = v.clone();
                }
            }
        }
        Ok(v)
    }

    fn cmd(
        &mut self,
        p: &Pipe,
        cmd: &Cmd,
        dot: &Val,
        fin: Option<Val>,
    ) -> Result<Val, TemplateError> {
        match &cmd.args[0] {
            Arg::Func(name) if name == "and" || name == "or" => {
                let mut rest: Vec<&Arg> = cmd.args[1..].iter().collect();
                let mut last = None;
                if rest.is_empty() && fin.is_none() {
                    return Err(self.fail(
                        p.pos,
                        cmd,
                        format!("wrong number of args for {name}: want at least 1 got 0"),
                    ));
                }
                let fin_arg;
                if let Some(f) = fin {
                    fin_arg = Arg::Const(f.unwrap_or(Value::Null));
                    rest.push(&fin_arg);
                }
                for a in rest {
                    let v = self.arg(p, cmd, a, dot)?;
                    let t = truth(&v);
                    last = v;
                    if (name == "and" && !t) || (name == "or" && t) {
                        break;
                    }
                }
                Ok(last)
            }
            Arg::Func(name) => {
                let mut args = Vec::with_capacity(cmd.args.len());
                for a in &cmd.args[1..] {
                    args.push(self.arg(p, cmd, a, dot)?);
                }
                if let Some(f) = fin {
                    args.push(f);
                }
                funcs::call(name, args)
                    .map_err(|m| self.fail(p.pos, cmd, format!("error calling {name}: {m}")))
            }
            Arg::Field(path)
                if path.last().is_some_and(|l| l == "Label") && self.header.is_none() =>
            {
                // docker's method of list rows: `.Label "KEY"`, a value of `.Labels`.
                let mut args = Vec::new();
                for a in &cmd.args[1..] {
                    args.push(self.arg(p, cmd, a, dot)?);
                }
                args.extend(fin);
                let key = match args.as_slice() {
                    [Some(Value::String(k))] => k.clone(),
                    _ => {
                        return Err(self.fail(
                            p.pos,
                            cmd,
                            "Label takes one argument: the label's key",
                        ))
                    }
                };
                let parent = Arg::Field(path[..path.len() - 1].to_vec());
                let owner = if path.len() == 1 {
                    dot.clone()
                } else {
                    self.arg(p, cmd, &parent, dot)?
                };
                let labels = field(&owner, "Labels").map_err(|m| self.fail(p.pos, cmd, m))?;
                Ok(Some(Value::String(label(&labels, &key))))
            }
            first => {
                if cmd.args.len() > 1 || fin.is_some() {
                    return Err(self.fail(
                        p.pos,
                        cmd,
                        format!("can't give argument to non-function {}", cmd.args_text()),
                    ));
                }
                self.arg(p, cmd, first, dot)
            }
        }
    }

    fn arg(&mut self, p: &Pipe, cmd: &Cmd, a: &Arg, dot: &Val) -> Result<Val, TemplateError> {
        let chain = |this: &Self, mut v: Val, fields: &[String]| -> Result<Val, TemplateError> {
            for f in fields {
                v = field(&v, f).map_err(|m| this.fail(p.pos, cmd, m))?;
            }
            Ok(v)
        };
        match a {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(fields) => {
                if let Some(h) = self.header {
                    return Ok(Some(Value::String(h(fields))));
                }
                chain(self, dot.clone(), fields)
            }
            Arg::Var(name, fields) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(None);
                chain(self, v, fields)
            }
            Arg::Const(c) => Ok(Some(c.clone())),
            Arg::Func(name) => funcs::call(name, Vec::new())
                .map_err(|m| self.fail(p.pos, cmd, format!("error calling {name}: {m}"))),
            Arg::Sub(inner, fields) => {
                let v = self.pipe(inner, dot)?;
                chain(self, v, fields)
            }
        }
    }
}

/// The value of label `key` in a row's `Labels` (`k=v,k2=v2`) or an object of labels;
/// "" when it has none.
fn label(labels: &Val, key: &str) -> String {
    match labels {
        Some(Value::String(s)) => s
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
        Some(Value::Object(o)) => o
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

impl Cmd {
    fn args_text(&self) -> &str {
        &self.text
    }
}
