//! Go's `fmt.Sprintf` for the template function `printf`: the verbs `%v %s %q %d %x %X
//! %o %b %c %f %F %e %g %t %%`, flags `- + 0 space`, width and precision; a bad verb or
//! argument prints Go's `%!d(string=hi)`, a missing one `%!d(MISSING)`.

use serde_json::Value;

use super::exec::{type_name, Val};
use super::funcs::print_value;

/// Formats `args` by `fmt`.
pub(super) fn sprintf(fmt: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut minus = false;
        let mut plus = false;
        let mut zero = false;
        let mut space = false;
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some(width.unwrap_or(0) * 10 + d as usize);
            chars.next();
        }
        let mut prec = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = p * 10 + d as usize;
                chars.next();
            }
            prec = Some(p);
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let bad = || format!("%!{verb}({}={})", type_name(arg), print_value(arg));
        let int = match arg {
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        let float = match arg {
            Some(Value::Number(n)) => n.as_f64(),
            _ => None,
        };
        let sign = |s: String, neg: bool| {
            if neg {
                s
            } else if plus {
                format!("+{s}")
            } else if space {
                format!(" {s}")
            } else {
                s
            }
        };
        let numeric = matches!(verb, 'd' | 'x' | 'X' | 'o' | 'b' | 'f' | 'F' | 'e' | 'g');
        let text = match verb {
            'v' | 's' => {
                let s = print_value(arg);
                match prec {
                    Some(p) if verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            'q' => match arg {
                Some(Value::String(s)) => serde_json::to_string(s).unwrap_or_default(),
                _ => match int
                    .and_then(|i| u32::try_from(i).ok())
                    .and_then(char::from_u32)
                {
                    Some(ch) => format!("{ch:?}"),
                    None => bad(),
                },
            },
            'd' => match int {
                Some(i) => sign(i.to_string(), i < 0),
                None => bad(),
            },
            'x' | 'X' | 'o' | 'b' => match (int, arg) {
                (Some(i), _) => {
                    let mag = i.unsigned_abs();
                    let s = match verb {
                        'x' => format!("{mag:x}"),
                        'X' => format!("{mag:X}"),
                        'o' => format!("{mag:o}"),
                        _ => format!("{mag:b}"),
                    };
                    sign(if i < 0 { format!("-{s}") } else { s }, i < 0)
                }
                (None, Some(Value::String(s))) if verb == 'x' || verb == 'X' => {
                    let h: String = s.bytes().map(|b| format!("{b:02x}")).collect();
                    if verb == 'X' {
                        h.to_uppercase()
                    } else {
                        h
                    }
                }
                _ => bad(),
            },
            'f' | 'F' | 'e' | 'g' => match float {
                Some(f) => {
                    let p = prec.unwrap_or(6);
                    let s = match verb {
                        'e' => go_exp(format!("{f:.p$e}")),
                        'g' => match prec {
                            Some(p) => format!("{:.*}", p.saturating_sub(1), f)
                                .trim_end_matches('0')
                                .trim_end_matches('.')
                                .to_string(),
                            None => f.to_string(),
                        },
                        _ => format!("{f:.p$}"),
                    };
                    sign(s, f.is_sign_negative())
                }
                None => bad(),
            },
            't' => match arg {
                Some(Value::Bool(b)) => b.to_string(),
                _ => bad(),
            },
            'c' => match int
                .and_then(|i| u32::try_from(i).ok())
                .and_then(char::from_u32)
            {
                Some(ch) => ch.to_string(),
                None => bad(),
            },
            _ => bad(),
        };
        out.push_str(&pad(text, width, minus, zero && numeric));
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", type_name(a), print_value(a)))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

/// Rust's `1.5e2` as Go's `1.5e+02`.
fn go_exp(s: String) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (neg, digits) = match e.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, e),
            };
            format!("{m}e{}{digits:0>2}", if neg { '-' } else { '+' })
        }
        None => s,
    }
}

fn pad(s: String, width: Option<usize>, left: bool, zero: bool) -> String {
    let Some(w) = width else { return s };
    let n = s.chars().count();
    if n >= w {
        return s;
    }
    let fill = w - n;
    if left {
        format!("{s}{}", " ".repeat(fill))
    } else if zero {
        match s.strip_prefix(['-', '+']) {
            Some(rest) => format!("{}{}{rest}", &s[..1], "0".repeat(fill)),
            None => format!("{}{s}", "0".repeat(fill)),
        }
    } else {
        format!("{}{s}", " ".repeat(fill))
    }
}
