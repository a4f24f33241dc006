//! The build instructions that only change the image configuration: ENV, LABEL,
//! WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE, VOLUME, STOPSIGNAL, SHELL, HEALTHCHECK,
//! ONBUILD, MAINTAINER. Each returns the canonical text that keys the cache.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::parser::{self, Args, Instruction};
use crate::image::changes::apply_change;
use crate::image::derive::Derived;
use crate::image::ImageChanges;

/// What a stage's config steps need besides the configuration.
pub(crate) struct StageVars<'a> {
    /// Variables for substitution (ARGs, then ENV over them).
    pub(crate) vars: &'a BTreeMap<String, String>,
    /// The escape character.
    pub(crate) escape: char,
    /// The SHELL in force.
    pub(crate) shell: &'a mut Vec<String>,
    /// Whether CMD was set in this stage (ENTRYPOINT then keeps it).
    pub(crate) cmd_set: &'a mut bool,
}

fn word(i: &Instruction, v: &StageVars<'_>) -> Result<String, String> {
    parser::expand_word(&i.text(), v.vars, v.escape)
}

/// A command in exec form, or the shell form run by the SHELL in force.
fn command(i: &Instruction, shell: &[String]) -> Vec<String> {
    match &i.args {
        Args::Exec(v) => v.clone(),
        Args::Shell(s) => {
            let mut c = shell.to_vec();
            c.push(s.clone());
            c
        }
    }
}

/// Applies one config instruction to `cfg`; returns the text it is recorded with.
pub(crate) fn apply(
    i: &Instruction,
    cfg: &mut Derived,
    v: &mut StageVars<'_>,
) -> Result<String, String> {
    let mut ch = ImageChanges::default();
    let text = match i.cmd.as_str() {
        "ENV" => {
            let mut parts = Vec::new();
            for (k, val) in parser::key_values(&i.text(), v.vars, v.escape, true)? {
                let val = val.ok_or_else(|| format!("ENV {k}: give a value (ENV {k}=value)"))?;
                cfg.set_env(&k, &val);
                parts.push(format!("{k}={val}"));
            }
            format!("ENV {}", parts.join(" "))
        }
        "LABEL" => {
            let mut parts = Vec::new();
            for (k, val) in parser::key_values(&i.text(), v.vars, v.escape, false)? {
                let val =
                    val.ok_or_else(|| format!("LABEL {k}: give a value (LABEL {k}=value)"))?;
                parts.push(format!("{k}={val}"));
                ch.labels.insert(k, val);
            }
            format!("LABEL {}", parts.join(" "))
        }
        "WORKDIR" => {
            let w = word(i, v)?;
            let cur = cfg
                .config_value()
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_string();
            let path = if w.starts_with('/') {
                w
            } else {
                format!("{}/{w}", cur.trim_end_matches('/'))
            };
            ch.workdir = Some(path.clone());
            format!("WORKDIR {path}")
        }
        "USER" => {
            let u = word(i, v)?;
            ch.user = Some(u.clone());
            format!("USER {u}")
        }
        "CMD" => {
            let c = command(i, v.shell);
            *v.cmd_set = true;
            cfg.config().insert("Cmd".into(), json!(c));
            format!("CMD {}", json!(c))
        }
        "ENTRYPOINT" => {
            let c = command(i, v.shell);
            let conf = cfg.config();
            conf.insert("Entrypoint".into(), json!(c));
            if !*v.cmd_set {
                // docker: an ENTRYPOINT drops the CMD inherited from the base image.
                conf.remove("Cmd");
            }
            format!("ENTRYPOINT {}", json!(c))
        }
        "EXPOSE" | "STOPSIGNAL" => {
            let t = format!("{} {}", i.cmd, word(i, v)?);
            apply_change(&mut ch, &t).map_err(|e| e.to_string())?;
            t
        }
        "VOLUME" => {
            let paths = match &i.args {
                Args::Exec(list) => list.clone(),
                Args::Shell(s) => parser::expand_words(s, v.vars, v.escape)?,
            };
            let t = format!("VOLUME {}", json!(paths));
            apply_change(&mut ch, &t).map_err(|e| e.to_string())?;
            t
        }
        "SHELL" => {
            let Args::Exec(s) = &i.args else {
                return Err("SHELL requires the JSON form".into());
            };
            if s.is_empty() {
                return Err("SHELL needs at least the shell's path".into());
            }
            *v.shell = s.clone();
            cfg.config().insert("Shell".into(), json!(s));
            format!("SHELL {}", json!(s))
        }
        "HEALTHCHECK" => healthcheck(i, cfg, v.shell)?,
        "ONBUILD" => {
            let t = i.text();
            let conf = cfg.config();
            let list = conf.entry("OnBuild").or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            if let Some(a) = list.as_array_mut() {
                a.push(json!(t));
            }
            format!("ONBUILD {t}")
        }
        "MAINTAINER" => {
            let m = i.text();
            if let Some(o) = cfg.0.as_object_mut() {
                o.insert("author".into(), json!(m));
            }
            format!("MAINTAINER {m}")
        }
        other => return Err(format!("{other} is not a configuration instruction")),
    };
    cfg.apply(&ch);
    Ok(text)
}

/// `HEALTHCHECK [--interval=D --timeout=D --start-period=D --retries=N] CMD ...` or
/// `HEALTHCHECK NONE`.
fn healthcheck(i: &Instruction, cfg: &mut Derived, shell: &[String]) -> Result<String, String> {
    let text = i.text();
    let mut hc = serde_json::Map::new();
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("NONE") {
        hc.insert("Test".into(), json!(["NONE"]));
    } else {
        let Some(rest) = trimmed
            .strip_prefix("CMD")
            .or_else(|| trimmed.strip_prefix("cmd"))
        else {
            return Err("HEALTHCHECK takes NONE or CMD followed by a command".into());
        };
        let rest = rest.trim();
        let test = match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) if rest.starts_with('[') => {
                let mut t = vec!["CMD".to_string()];
                t.extend(v);
                t
            }
            _ => {
                let _ = shell;
                vec!["CMD-SHELL".to_string(), rest.to_string()]
            }
        };
        hc.insert("Test".into(), json!(test));
        for (flag, key) in [
            ("interval", "Interval"),
            ("timeout", "Timeout"),
            ("start-period", "StartPeriod"),
            ("start-interval", "StartInterval"),
        ] {
            if let Some(d) = i.flag(flag) {
                hc.insert(key.into(), json!(duration_ns(d)?));
            }
        }
        if let Some(r) = i.flag("retries") {
            let n: u64 = r
                .parse()
                .map_err(|_| format!("HEALTHCHECK --retries={r}: give a number"))?;
            hc.insert("Retries".into(), json!(n));
        }
    }
    cfg.config().insert("Healthcheck".into(), Value::Object(hc));
    Ok(i.original.clone())
}

/// A Go-style duration (`30s`, `1m30s`, `500ms`) in nanoseconds.
fn duration_ns(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 30s, 1m30s, 500ms)");
    let mut total: u64 = 0;
    let mut num = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            num.push(c);
            i += 1;
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let (unit, len) = match (c, chars.get(i + 1)) {
            ('m', Some('s')) => (1_000_000, 2),
            ('u', Some('s')) => (1_000, 2),
            ('n', Some('s')) => (1, 2),
            ('h', _) => (3_600_000_000_000, 1),
            ('m', _) => (60_000_000_000, 1),
            ('s', _) => (1_000_000_000, 1),
            _ => return Err(bad()),
        };
        total += n * unit;
        i += len;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ns("30s").unwrap(), 30_000_000_000);
        assert_eq!(duration_ns("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(duration_ns("500ms").unwrap(), 500_000_000);
        assert!(duration_ns("5").is_err());
    }
}
