//! `--env-file`: docker's format. One variable per line, `NAME=VALUE` (the value taken
//! verbatim, spaces and quotes included) or `NAME` alone (the value of skiff's own
//! environment, skipped when unset); blank lines and lines starting with `#` are
//! ignored. Errors name the file and the line.

use std::path::Path;

/// Reads `path`; `lookup` gives the client's environment for `NAME` lines.
pub fn read(path: &Path, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    let data = std::fs::read(path).map_err(|e| {
        format!(
            "--env-file {}: {e}: give the path of a readable file",
            path.display()
        )
    })?;
    parse(&path.display().to_string(), &data, lookup)
}

/// Parses the contents of an env file called `name`.
pub fn parse(
    name: &str,
    data: &[u8],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, raw) in data.split(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let line = std::str::from_utf8(raw)
            .map_err(|_| format!("{name}:{n}: the line is not valid UTF-8"))?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = if n == 1 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if key.is_empty() {
            return Err(format!(
                "{name}:{n}: no variable name before '=' in {line:?}: use NAME=VALUE"
            ));
        }
        if key.contains(char::is_whitespace) {
            return Err(format!(
                "{name}:{n}: variable name {key:?} contains whitespace: use NAME=VALUE, \
                 with no spaces around '='"
            ));
        }
        match value {
            Some(v) => out.push(format!("{key}={v}")),
            None => {
                if let Some(v) = lookup(key) {
                    out.push(format!("{key}={v}"));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "FROM_HOST").then(|| "host value".to_string())
    }

    #[test]
    fn docker_format() {
        let data = b"# comment\n\n  A=1\nB= spaced \"quoted\" \nFROM_HOST\nUNSET\nC=\r\nD=x=y\n";
        assert_eq!(
            parse("f", data, env).unwrap(),
            vec![
                "A=1",
                "B= spaced \"quoted\" ",
                "FROM_HOST=host value",
                "C=",
                "D=x=y"
            ]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("app.env", b"A=1\n# x\nBAD NAME=2\n", env).unwrap_err();
        assert!(e.starts_with("app.env:3: "), "{e}");
        assert!(e.contains("whitespace"), "{e}");
        let e = parse("app.env", b"=v\n", env).unwrap_err();
        assert!(e.starts_with("app.env:1: no variable name"), "{e}");
        let e = parse("app.env", b"A=1\nB=\xff\n", env).unwrap_err();
        assert!(e.starts_with("app.env:2: "), "{e}");
        let e = read(Path::new("/nonexistent/app.env"), env).unwrap_err();
        assert!(e.contains("/nonexistent/app.env"), "{e}");
    }
}
