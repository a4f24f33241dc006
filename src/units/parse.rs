//! Reading a `.container` file: systemd's unit-file syntax (sections, `KEY=VALUE`
//! lines, `#`/`;` comments, a trailing `\` continues a line). `[Container]` keys are
//! checked; `[Unit]`, `[Service]` and `[Install]` lines are kept as they are for the
//! service. Every error names the file and line.

use std::path::{Path, PathBuf};

use super::quote::split;

/// An error in a `.container` file.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// The file could not be read.
    #[error("{0}: {1}")]
    Read(String, #[source] std::io::Error),
    /// A line is wrong.
    #[error("{file}:{line}: {msg}")]
    Line {
        /// The file.
        file: String,
        /// The line number (from 1).
        line: usize,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// Something the whole file lacks.
    #[error("{0}: {1}")]
    File(String, String),
}

/// The `[Container]` keys, as in podman's Quadlet.
pub const KEYS: &[&str] = &[
    "Image",
    "Exec",
    "Name",
    "PublishPort",
    "Volume",
    "Environment",
    "EnvironmentFile",
    "User",
    "Network",
    "Label",
    "Notify",
    "StopTimeout",
];

/// A parsed `.container` file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerUnit {
    /// The file it came from.
    pub source: PathBuf,
    /// The service's name without `.service` (the file's stem).
    pub unit: String,
    /// The container's name (`Name=`, default the unit's name).
    pub name: String,
    /// `Image=`.
    pub image: String,
    /// `Exec=`, split into words (empty: the image's command).
    pub exec: Vec<String>,
    /// `PublishPort=` values.
    pub publish: Vec<String>,
    /// `Volume=` values.
    pub volumes: Vec<String>,
    /// `Environment=` assignments, in order.
    pub env: Vec<(String, String)>,
    /// `EnvironmentFile=` paths.
    pub env_files: Vec<String>,
    /// `User=`.
    pub user: Option<String>,
    /// `Network=`.
    pub network: Option<String>,
    /// `Label=` assignments.
    pub labels: Vec<String>,
    /// `Notify=yes`: the container's process says when it is ready.
    pub notify: bool,
    /// `StopTimeout=` seconds (default 10).
    pub stop_timeout: u64,
    /// `[Unit]` lines, as written.
    pub unit_lines: Vec<String>,
    /// `[Service]` lines, as written.
    pub service_lines: Vec<String>,
    /// `[Install]` lines, as written.
    pub install_lines: Vec<String>,
}

fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Whether `name` is a usable container (and unit) name.
fn valid_name(name: &str) -> bool {
    // skiff's container names: [a-zA-Z0-9][a-zA-Z0-9_.-]+
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl ContainerUnit {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ContainerUnit, UnitError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UnitError::Read(path.display().to_string(), e))?;
        Self::parse(path, &text)
    }

    /// Parses the text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ContainerUnit, UnitError> {
        let file = path.display().to_string();
        let err = |line: usize, msg: String| UnitError::Line {
            file: file.clone(),
            line,
            msg,
        };
        let unit = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if !valid_name(&unit) {
            return Err(UnitError::File(
                file.clone(),
                format!("{unit:?} is not a usable unit name: use letters, digits, _ . -"),
            ));
        }
        let mut u = ContainerUnit {
            source: path.to_path_buf(),
            unit: unit.clone(),
            name: unit,
            stop_timeout: 10,
            ..Default::default()
        };
        let mut section: Option<String> = None;
        let mut seen_container = false;
        let mut pending = String::new();
        let mut start_line = 0;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            if pending.is_empty() {
                start_line = n;
            }
            if let Some(cont) = raw.strip_suffix('\\') {
                pending.push_str(cont);
                pending.push(' ');
                continue;
            }
            pending.push_str(raw);
            let line = std::mem::take(&mut pending);
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
                continue;
            }
            if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                if !matches!(name, "Container" | "Unit" | "Service" | "Install") {
                    return Err(err(
                        start_line,
                        format!(
                            "unknown section [{name}]: use [Container], [Unit], [Service] or [Install]"
                        ),
                    ));
                }
                seen_container |= name == "Container";
                section = Some(name.to_string());
                continue;
            }
            let Some((key, value)) = t.split_once('=') else {
                return Err(err(start_line, format!("{t:?} is not KEY=VALUE")));
            };
            let (key, value) = (key.trim(), value.trim());
            match section.as_deref() {
                None => {
                    return Err(err(
                        start_line,
                        "a key before any section: start with [Container]".into(),
                    ))
                }
                Some("Unit") => u.unit_lines.push(t.to_string()),
                Some("Service") => u.service_lines.push(t.to_string()),
                Some("Install") => u.install_lines.push(t.to_string()),
                Some(_) => u
                    .container_key(key, value)
                    .map_err(|m| err(start_line, m))?,
            }
        }
        if !pending.is_empty() {
            return Err(err(
                start_line,
                "the file ends in a line continuation".into(),
            ));
        }
        if !seen_container {
            return Err(UnitError::File(
                file,
                "no [Container] section: a .container file needs one, with Image=".into(),
            ));
        }
        if u.image.is_empty() {
            return Err(UnitError::File(file, "[Container] has no Image=".into()));
        }
        Ok(u)
    }

    fn container_key(&mut self, key: &str, value: &str) -> Result<(), String> {
        let one = |v: &str| -> Result<String, String> {
            if v.is_empty() {
                Err(format!("{key}= needs a value"))
            } else {
                Ok(v.to_string())
            }
        };
        match key {
            "Image" => self.image = one(value)?,
            "Exec" => self.exec = split(value).map_err(|e| format!("Exec=: {e}"))?,
            "Name" => {
                if !valid_name(value) {
                    return Err(format!(
                        "Name={value:?} is not a container name: letters, digits, _ . - \
                         (two or more, starting with a letter or digit)"
                    ));
                }
                self.name = value.to_string();
            }
            "PublishPort" => self.publish.push(one(value)?),
            "Volume" => self.volumes.push(one(value)?),
            "Environment" => {
                for w in split(value).map_err(|e| format!("Environment=: {e}"))? {
                    match w.split_once('=') {
                        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                            self.env.push((k.to_string(), v.to_string()))
                        }
                        _ => return Err(format!("Environment=: {w:?} is not NAME=VALUE")),
                    }
                }
            }
            "EnvironmentFile" => self.env_files.push(one(value)?),
            "User" => self.user = Some(one(value)?),
            "Network" => self.network = Some(one(value)?),
            "Label" => {
                for w in split(value).map_err(|e| format!("Label=: {e}"))? {
                    if !w.contains('=') {
                        return Err(format!("Label=: {w:?} is not KEY=VALUE"));
                    }
                    self.labels.push(w);
                }
            }
            "Notify" => {
                self.notify =
                    boolean(value).ok_or_else(|| format!("Notify={value:?}: use yes or no"))?
            }
            "StopTimeout" => {
                self.stop_timeout = value
                    .parse()
                    .map_err(|_| format!("StopTimeout={value:?} is not a number of seconds"))?
            }
            other => {
                return Err(format!(
                    "unknown key {other}= in [Container] (known: {})",
                    KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ContainerUnit, UnitError> {
        ContainerUnit::parse(Path::new("/u/web.container"), text)
    }

    #[test]
    fn keys_and_passed_through_sections() {
        let u = parse(
            "# a web server\n[Unit]\nDescription=web\n[Container]\nImage=demo/busybox\n\
             Exec=httpd -f -p 80 \\\n  -h /www\nPublishPort=8080:80\nEnvironment=A=1 \"B=two words\"\n\
             Label=app=web\nNotify=yes\n[Service]\nRestart=on-failure\n[Install]\nWantedBy=default.target\n",
        )
        .unwrap();
        assert_eq!(u.name, "web");
        assert_eq!(u.exec, vec!["httpd", "-f", "-p", "80", "-h", "/www"]);
        assert_eq!(
            u.env,
            vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        assert!(u.notify);
        assert_eq!(u.unit_lines, vec!["Description=web"]);
        assert_eq!(u.service_lines, vec!["Restart=on-failure"]);
        assert_eq!(u.install_lines, vec!["WantedBy=default.target"]);
    }

    #[test]
    fn errors_carry_file_and_line() {
        let e = parse("[Container]\nImage=x\n\nImgae=y\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/u/web.container:4: unknown key Imgae="),
            "{e}"
        );
        let e = parse("[Container]\nImage=x\n[Bogus]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/u/web.container:3: unknown section"), "{e}");
        let e = parse("[Container]\nExec=sh -c 'x\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/u/web.container:2: Exec=:"), "{e}");
        let e = parse("[Container]\nName=xy\n").unwrap_err().to_string();
        assert!(e.contains("no Image="), "{e}");
    }
}
