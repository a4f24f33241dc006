//! The template functions: Go's builtins (`and`, `or`, `not`, `len`, `index`, `slice`,
//! `print`, `printf`, `println`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`) and docker's
//! (`json`, `join`, `split`, `upper`, `lower`, `title`, `pad`, `truncate`), and Go's
//! `%v` printing of values.

use std::cmp::Ordering;

use serde_json::Value;

use super::exec::{truth, type_name, Val};

const NAMES: [&str; 23] = [
    "and", "or", "not", "len", "index", "slice", "print", "printf", "println", "eq", "ne", "lt",
    "le", "gt", "ge", "json", "join", "split", "upper", "lower", "title", "pad", "truncate",
];

/// Whether `name` is a function.
pub(super) fn exists(name: &str) -> bool {
    NAMES.contains(&name)
}

/// A value as Go's `%v` prints it: lists `[a b]`, maps `map[k:v]` (sorted keys), a
/// missing key `<no value>`, nil `<nil>`.
pub(super) fn print_value(v: &Val) -> String {
    match v {
        None => "<no value>".into(),
        Some(v) => print_json(v),
    }
}

fn print_json(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(print_json).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", print_json(&o[k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn want(name: &str, args: &[Val], n: usize) -> Result<(), String> {
    if args.len() != n {
        return Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn string_arg(name: &str, v: &Val) -> Result<String, String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        other => Err(format!(
            "{name} wants a string, got {} ({})",
            type_name(other),
            print_value(other)
        )),
    }
}

fn int_arg(name: &str, v: &Val) -> Result<i64, String> {
    match v {
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or(0)),
        other => Err(format!(
            "{name} wants an integer, got {} ({})",
            type_name(other),
            print_value(other)
        )),
    }
}

/// Calls function `name` (not `and`/`or`, which the executor evaluates lazily).
pub(super) fn call(name: &str, args: Vec<Val>) -> Result<Val, String> {
    let s = |v: String| Ok(Some(Value::String(v)));
    match name {
        "not" => {
            want(name, &args, 1)?;
            Ok(Some(Value::Bool(!truth(&args[0]))))
        }
        "len" => {
            want(name, &args, 1)?;
            let n = match &args[0] {
                Some(Value::String(x)) => x.len(),
                Some(Value::Array(a)) => a.len(),
                Some(Value::Object(o)) => o.len(),
                other => return Err(format!("len of type {}", type_name(other))),
            };
            Ok(Some(Value::from(n)))
        }
        "index" => {
            if args.is_empty() {
                return Err("wrong number of args for index: want at least 1 got 0".into());
            }
            let mut it = args.into_iter();
            let mut v = it.next().unwrap_or(None);
            for k in it {
                v = index(&v, &k)?;
            }
            Ok(v)
        }
        "slice" => {
            if args.is_empty() || args.len() > 3 {
                return Err(format!(
                    "wrong number of args for slice: want 1 to 3 got {}",
                    args.len()
                ));
            }
            let bounds: Vec<i64> = args[1..]
                .iter()
                .map(|a| int_arg("slice", a))
                .collect::<Result<_, _>>()?;
            slice(&args[0], &bounds)
        }
        "print" => s(sprint(&args)),
        "println" => s(args.iter().map(print_value).collect::<Vec<_>>().join(" ") + "\n"),
        "printf" => {
            let Some(fmt) = args.first() else {
                return Err("wrong number of args for printf: want at least 1 got 0".into());
            };
            let fmt = string_arg("printf", fmt)?;
            s(super::printf::sprintf(&fmt, &args[1..]))
        }
        "eq" => {
            if args.len() < 2 {
                return Err("missing argument for comparison".into());
            }
            let mut any = false;
            for b in &args[1..] {
                if compare(&args[0], b)? == Some(Ordering::Equal) {
                    any = true;
                }
            }
            Ok(Some(Value::Bool(any)))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want(name, &args, 2)?;
            let ord = compare(&args[0], &args[1])?;
            if name != "ne" && !orderable(&args[0]) {
                return Err(format!(
                    "invalid type for comparison: {}",
                    type_name(&args[0])
                ));
            }
            let r = match (name, ord) {
                ("ne", o) => o != Some(Ordering::Equal),
                (_, None) => false,
                ("lt", Some(o)) => o == Ordering::Less,
                ("le", Some(o)) => o != Ordering::Greater,
                ("gt", Some(o)) => o == Ordering::Greater,
                (_, Some(o)) => o != Ordering::Less,
            };
            Ok(Some(Value::Bool(r)))
        }
        "json" => {
            want(name, &args, 1)?;
            let v = args.into_iter().next().flatten().unwrap_or(Value::Null);
            serde_json::to_string(&v)
                .map(|t| Some(Value::String(t)))
                .map_err(|e| e.to_string())
        }
        "join" => {
            want(name, &args, 2)?;
            let sep = string_arg("join", &args[1])?;
            match &args[0] {
                Some(Value::Array(a)) => s(a.iter().map(print_json).collect::<Vec<_>>().join(&sep)),
                Some(Value::String(x)) => s(x.clone()),
                None | Some(Value::Null) => s(String::new()),
                other => Err(format!("join wants a list, got {}", type_name(other))),
            }
        }
        "split" => {
            want(name, &args, 2)?;
            let text = string_arg("split", &args[0])?;
            let sep = string_arg("split", &args[1])?;
            let parts: Vec<Value> = if sep.is_empty() {
                text.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                text.split(sep.as_str())
                    .map(|p| Value::String(p.into()))
                    .collect()
            };
            Ok(Some(Value::Array(parts)))
        }
        "upper" | "lower" | "title" => {
            want(name, &args, 1)?;
            let text = string_arg(name, &args[0])?;
            s(match name {
                "upper" => text.to_uppercase(),
                "lower" => text.to_lowercase(),
                _ => title(&text),
            })
        }
        "pad" => {
            want(name, &args, 3)?;
            let text = print_value(&args[0]);
            let before = int_arg("pad", &args[1])?.max(0) as usize;
            let after = int_arg("pad", &args[2])?.max(0) as usize;
            s(format!("{}{text}{}", " ".repeat(before), " ".repeat(after)))
        }
        "truncate" => {
            want(name, &args, 2)?;
            let text = print_value(&args[0]);
            let n = int_arg("truncate", &args[1])?.max(0) as usize;
            s(text.chars().take(n).collect())
        }
        other => Err(format!("function \"{other}\" not defined")),
    }
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
fn sprint(args: &[Val]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = |v: &Val| matches!(v, Some(Value::String(_)));
        if i > 0 && !is_str(a) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&print_value(a));
    }
    out
}

/// Go's `strings.Title`: each word's first letter upper-cased.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

fn index(v: &Val, k: &Val) -> Result<Val, String> {
    match (v, k) {
        (Some(Value::Array(a)), Some(Value::Number(n))) => {
            let i = n
                .as_i64()
                .ok_or("cannot index slice/array with a non-integer")?;
            usize::try_from(i)
                .ok()
                .and_then(|i| a.get(i))
                .map(|x| Some(x.clone()))
                .ok_or_else(|| format!("index out of range: {i}"))
        }
        (Some(Value::String(s)), Some(Value::Number(n))) => {
            let i = n.as_i64().ok_or("cannot index string with a non-integer")?;
            usize::try_from(i)
                .ok()
                .and_then(|i| s.as_bytes().get(i))
                .map(|b| Some(Value::from(*b)))
                .ok_or_else(|| format!("index out of range: {i}"))
        }
        (Some(Value::Object(o)), Some(Value::String(key))) => Ok(match o.get(key) {
            Some(x) => Some(x.clone()),
            // A map of strings (labels) gives "" for a missing key, as Go's zero value.
            None if o.values().all(Value::is_string) => Some(Value::String(String::new())),
            None => Some(Value::Null),
        }),
        (None | Some(Value::Null), _) => Err("index of untyped nil".into()),
        (Some(Value::Object(_)), other) => Err(format!(
            "value has type {}; should be string",
            type_name(other)
        )),
        (other, _) => Err(format!("can't index item of type {}", type_name(other))),
    }
}

fn slice(v: &Val, bounds: &[i64]) -> Result<Val, String> {
    let len = match v {
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(a)) => a.len(),
        other => return Err(format!("can't slice item of type {}", type_name(other))),
    } as i64;
    let from = bounds.first().copied().unwrap_or(0);
    let to = bounds.get(1).copied().unwrap_or(len);
    if from < 0 || to < from || to > len {
        return Err(format!(
            "index out of range: [{from}:{to}] with length {len}"
        ));
    }
    let (from, to) = (from as usize, to as usize);
    Ok(Some(match v {
        Some(Value::String(s)) => Value::String(
            s.get(from..to)
                .ok_or("slice splits a character")?
                .to_string(),
        ),
        Some(Value::Array(a)) => Value::Array(a[from..to].to_vec()),
        _ => Value::Null,
    }))
}

fn orderable(v: &Val) -> bool {
    matches!(v, Some(Value::Number(_)) | Some(Value::String(_)))
}

/// Compares two basic values; different kinds are an error, as in Go.
fn compare(a: &Val, b: &Val) -> Result<Option<Ordering>, String> {
    let a_null = matches!(a, None | Some(Value::Null));
    let b_null = matches!(b, None | Some(Value::Null));
    Ok(match (a, b) {
        _ if a_null && b_null => Some(Ordering::Equal),
        _ if a_null || b_null => None,
        (Some(Value::Number(x)), Some(Value::Number(y))) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x
                .as_f64()
                .zip(y.as_f64())
                .and_then(|(x, y)| x.partial_cmp(&y)),
        },
        (Some(Value::String(x)), Some(Value::String(y))) => Some(x.cmp(y)),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => Some(x.cmp(y)),
        (Some(Value::Array(_) | Value::Object(_)), _)
        | (_, Some(Value::Array(_) | Value::Object(_))) => {
            return Err("non-comparable type (a list or a map)".into())
        }
        _ => {
            return Err(format!(
                "incompatible types for comparison: {} and {}",
                type_name(a),
                type_name(b)
            ))
        }
    })
}
