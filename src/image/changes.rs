//! `skiff import --change 'INSTRUCTION ARGS'`: the Dockerfile instructions that set image
//! configuration (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL), in
//! docker's syntax: CMD and ENTRYPOINT take a JSON array (exec form) or a command line
//! (shell form, run by `/bin/sh -c`); ENV and LABEL take `KEY=VALUE...` (values may be
//! double-quoted) or, for ENV, `KEY VALUE`.

use super::{Error, ImageChanges};

fn bad(change: &str, reason: impl Into<String>) -> Error {
    Error::InvalidImage {
        what: format!("change {change:?}"),
        reason: reason.into(),
    }
}

/// Applies one `--change` to `changes`.
pub fn apply_change(changes: &mut ImageChanges, change: &str) -> Result<(), Error> {
    let trimmed = change.trim();
    let (instr, args) = trimmed
        .split_once(|c: char| c.is_whitespace())
        .map(|(i, a)| (i, a.trim()))
        .unwrap_or((trimmed, ""));
    let upper = instr.to_ascii_uppercase();
    if args.is_empty() {
        let reason = match example(&upper) {
            Some(e) => format!("it has no arguments (e.g. {e})"),
            None => unsupported(instr),
        };
        return Err(bad(change, reason));
    }
    match upper.as_str() {
        "CMD" => changes.cmd = Some(command(change, args)?),
        "ENTRYPOINT" => changes.entrypoint = Some(command(change, args)?),
        "ENV" => {
            let words = words(change, args)?;
            if words.len() >= 2 && !words[0].contains('=') {
                // ENV KEY VALUE... (the legacy form: the rest of the line is the value)
                let value = args[words[0].len()..].trim();
                set_env(&mut changes.env, &words[0], value);
            } else {
                for (k, v) in pairs(change, &words)? {
                    set_env(&mut changes.env, &k, &v);
                }
            }
        }
        "LABEL" => {
            for (k, v) in pairs(change, &words(change, args)?)? {
                changes.labels.insert(k, v);
            }
        }
        "WORKDIR" => changes.workdir = Some(args.to_string()),
        "USER" => changes.user = Some(args.to_string()),
        "STOPSIGNAL" => {
            // Checked as `run --stop-signal` is: a container of this image must be
            // stoppable with it.
            if crate::procutil::signal_number(args).is_none() {
                return Err(bad(
                    change,
                    format!("{args:?} is not a signal: {}", crate::procutil::SIGNAL_HINT),
                ));
            }
            changes.stop_signal = Some(args.to_string());
        }
        "EXPOSE" => {
            for p in args.split_whitespace() {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                let ok = port.parse::<u16>().is_ok_and(|n| n > 0)
                    && matches!(proto, "tcp" | "udp" | "sctp");
                if !ok {
                    return Err(bad(change, format!("{p:?} is not PORT[/tcp|udp|sctp]")));
                }
                let v = format!("{port}/{proto}");
                if !changes.exposed_ports.contains(&v) {
                    changes.exposed_ports.push(v);
                }
            }
        }
        _ => return Err(bad(change, unsupported(instr))),
    }
    Ok(())
}

/// An example of each instruction, for a change that lacks its arguments.
fn example(instr: &str) -> Option<&'static str> {
    Some(match instr {
        "CMD" => r#"CMD ["/bin/sh"]"#,
        "ENTRYPOINT" => r#"ENTRYPOINT ["/bin/app", "--flag"]"#,
        "ENV" => "ENV NAME=value",
        "WORKDIR" => "WORKDIR /srv",
        "USER" => "USER 1000:1000",
        "LABEL" => "LABEL key=value",
        "EXPOSE" => "EXPOSE 80/tcp",
        "STOPSIGNAL" => "STOPSIGNAL SIGINT",
        _ => return None,
    })
}

fn unsupported(instr: &str) -> String {
    format!(
        "{instr} is not supported; use CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE or \
         STOPSIGNAL"
    )
}

fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let prefix = format!("{key}=");
    env.retain(|e| !e.starts_with(&prefix));
    env.push(format!("{key}={value}"));
}

/// Exec form (a JSON array of strings) or shell form.
fn command(change: &str, args: &str) -> Result<Vec<String>, Error> {
    if args.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(args) {
            return Ok(v);
        }
        return Err(bad(
            change,
            "the exec form must be a JSON array of strings, e.g. [\"/bin/sh\", \"-c\", \"x\"]",
        ));
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), args.to_string()])
}

/// Splits on whitespace, keeping double-quoted parts (with `\"` and `\\` escapes)
/// together and unquoted.
fn words(change: &str, s: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(bad(change, "a double quote is not closed"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn pairs(change: &str, words: &[String]) -> Result<Vec<(String, String)>, Error> {
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(bad(change, format!("{w:?} is not KEY=VALUE"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(list: &[&str]) -> ImageChanges {
        let mut c = ImageChanges::default();
        for s in list {
            apply_change(&mut c, s).unwrap();
        }
        c
    }

    #[test]
    fn every_instruction_in_both_forms() {
        let c = apply(&[
            r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
            "entrypoint /bin/run --flag",
            "ENV A=1 B=\"two words\"",
            "ENV C three words",
            "ENV A=override",
            "WORKDIR /srv",
            "USER 1000:1000",
            r#"LABEL org.x="a b" y=z"#,
            "EXPOSE 80 53/udp",
            "STOPSIGNAL SIGINT",
            "STOPSIGNAL quit",
            "STOPSIGNAL 15",
        ]);
        assert_eq!(c.cmd.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "/bin/run --flag"]);
        assert_eq!(c.env, ["B=two words", "C=three words", "A=override"]);
        assert_eq!(c.workdir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.labels["org.x"], "a b");
        assert_eq!(c.labels["y"], "z");
        assert_eq!(c.exposed_ports, ["80/tcp", "53/udp"]);
        assert_eq!(c.stop_signal.as_deref(), Some("15"));
    }

    #[test]
    fn bad_changes_say_what_is_wrong() {
        for (change, want) in [
            ("RUN make", "RUN is not supported"),
            ("CMD", "no arguments"),
            ("CMD [\"a\", 1]", "JSON array of strings"),
            ("LABEL novalue", "not KEY=VALUE"),
            ("EXPOSE 99999", "not PORT"),
            ("ENV A=\"open", "not closed"),
            ("ENV", "no arguments (e.g. ENV NAME=value)"),
            ("USER", "no arguments (e.g. USER 1000:1000)"),
            ("workdir", "no arguments (e.g. WORKDIR /srv)"),
            ("STOPSIGNAL", "no arguments (e.g. STOPSIGNAL SIGINT)"),
            ("RUN", "RUN is not supported"),
            ("STOPSIGNAL SIGBOGUS", "\"SIGBOGUS\" is not a signal"),
            ("STOPSIGNAL 0", "\"0\" is not a signal"),
        ] {
            let e = apply_change(&mut ImageChanges::default(), change)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{change}: {e}");
        }
    }
}
