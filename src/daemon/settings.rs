//! skiffd's own configuration: `$XDG_CONFIG_HOME/skiff/skiffd.toml` (or `--config
//! PATH`), merged with the command line (flags win) into the effective settings, each
//! value with where it came from (`skiff info` shows both).
//!
//! TOML rather than dockerd's `daemon.json`: the file is written by hand, and TOML has
//! comments, needs no quoting of keys, and its parser gives a line and column for every
//! error, unknown keys included (`deny_unknown_fields`), which the refusal names.
//!
//! What can change while skiffd runs (see [`Settings::reload_diff`]): everything but the
//! storage driver, which needs a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::netns::Mode;
use crate::runtime::RootfsDriver;

/// The file's name under `$XDG_CONFIG_HOME/skiff`.
pub const FILE_NAME: &str = "skiffd.toml";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A syntax error, an unknown key or a bad value in the file.
    #[error("{path}:{line}:{col}: {msg}\n  fix the file (see `skiffd --help` for the keys: each flag's name without the dashes), or move it away to use the defaults")]
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong.
        msg: String,
    },
    /// A bad value on the command line.
    #[error("{flag}: {msg}")]
    Flag {
        /// The flag.
        flag: String,
        /// What is wrong.
        msg: String,
    },
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// skiff's built-in default.
    Default,
    /// The environment (`RUST_LOG` for the log level).
    Env,
    /// The configuration file.
    File,
    /// skiffd's command line.
    Flag,
}

/// The file's schema: one key per skiffd flag, named as the flag without its dashes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSettings {
    storage_driver: Option<Spanned<String>>,
    network: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    registry_mirrors: Option<Spanned<Vec<String>>>,
    insecure_registries: Option<Spanned<Vec<String>>>,
    default_ulimits: Option<Spanned<Vec<String>>>,
    log_opts: Option<Spanned<BTreeMap<String, String>>>,
    layer_max_entries: Option<Spanned<i64>>,
    layer_max_bytes: Option<Spanned<SizeValue>>,
}

/// A size: a number of bytes or docker's `64g` form.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(i64),
    Text(String),
}

/// What skiffd's command line set (each `None`/empty when not given).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--storage-driver`.
    pub storage_driver: Option<String>,
    /// `--network`.
    pub network: Option<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--registry-mirror` (repeated).
    pub registry_mirrors: Vec<String>,
    /// `--insecure-registry` (repeated).
    pub insecure_registries: Vec<String>,
    /// `--default-ulimit` (repeated).
    pub default_ulimits: Vec<String>,
    /// `--log-opt K=V` (repeated).
    pub log_opts: Vec<String>,
    /// `--layer-max-entries`.
    pub layer_max_entries: Option<String>,
    /// `--layer-max-bytes`.
    pub layer_max_bytes: Option<String>,
}

/// The effective settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The storage driver; `None`: skiffd chooses ([`RootfsDriver::choose_default`]).
    pub storage_driver: Option<RootfsDriver>,
    /// The network mode of new containers that do not name one.
    pub network: Mode,
    /// `network = "auto"`: pasta where a trial run shows it works, else slirp4netns
    /// (`network` then holds the fallback).
    pub network_auto: bool,
    /// The log filter (tracing's EnvFilter syntax).
    pub log_level: String,
    /// Mirrors of docker.io (`host[:port]`), tried in order before it.
    pub registry_mirrors: Vec<String>,
    /// Registries (`host[:port]`) reached without verifying TLS, plain HTTP allowed.
    pub insecure_registries: Vec<String>,
    /// Ulimits of new containers that do not set that limit themselves.
    pub default_ulimits: Vec<String>,
    /// Log options of new containers that do not set that option themselves.
    pub log_opts: BTreeMap<String, String>,
    /// Most archive members of one image layer.
    pub layer_max_entries: u64,
    /// Most bytes of regular files in one image layer.
    pub layer_max_bytes: u64,
    /// Where each value came from, by key.
    pub sources: BTreeMap<&'static str, Source>,
    /// The file read, if there was one.
    pub file: Option<PathBuf>,
}

/// The keys, and whether a change needs a restart.
pub const KEYS: &[(&str, bool)] = &[
    ("storage-driver", true),
    ("network", false),
    ("log-level", false),
    ("registry-mirrors", false),
    ("insecure-registries", false),
    ("default-ulimits", false),
    ("log-opts", false),
    ("layer-max-entries", false),
    ("layer-max-bytes", false),
];

/// The default file: `$XDG_CONFIG_HOME/skiff/skiffd.toml`.
pub fn default_path(paths: &crate::paths::Paths) -> PathBuf {
    paths.config.join(FILE_NAME)
}

impl Settings {
    /// Reads `path` (a missing file is fine unless `required`: the defaults apply) and
    /// merges `flags` over it; `env` reads skiffd's environment (`RUST_LOG`,
    /// `SKIFF_LAYER_MAX_ENTRIES`, `SKIFF_LAYER_MAX_BYTES`), below the file.
    pub fn load(
        path: &Path,
        required: bool,
        flags: &Flags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(source) => {
                return Err(SettingsError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let mut s = Settings::defaults(&env)?;
        if let Some(text) = &text {
            s.file = Some(path.to_path_buf());
            s.apply_file(path, text)?;
        }
        s.apply_flags(flags)?;
        Ok(s)
    }

    fn defaults(env: &impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let mut sources: BTreeMap<&'static str, Source> =
            KEYS.iter().map(|(k, _)| (*k, Source::Default)).collect();
        let log_level = match env("RUST_LOG").filter(|l| !l.is_empty()) {
            Some(l) => {
                sources.insert("log-level", Source::Env);
                l
            }
            None => "info".into(),
        };
        let limits = crate::image::unpack::UnpackOptions::from_env(env).map_err(|e| {
            SettingsError::Flag {
                flag: "skiffd's environment".into(),
                msg: e.to_string(),
            }
        })?;
        for (var, key) in [
            (crate::image::unpack::MAX_ENTRIES_ENV, "layer-max-entries"),
            (crate::image::unpack::MAX_BYTES_ENV, "layer-max-bytes"),
        ] {
            if env(var).is_some() {
                sources.insert(key, Source::Env);
            }
        }
        Ok(Settings {
            storage_driver: None,
            network: Mode::Slirp4netns,
            network_auto: false,
            log_level,
            registry_mirrors: Vec::new(),
            insecure_registries: Vec::new(),
            default_ulimits: Vec::new(),
            log_opts: BTreeMap::new(),
            layer_max_entries: limits.max_entries,
            layer_max_bytes: limits.max_bytes,
            sources,
            file: None,
        })
    }

    fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), SettingsError> {
        let at = |span: std::ops::Range<usize>, msg: String| {
            let (line, col) = line_col(text, span.start);
            SettingsError::File {
                path: path.to_path_buf(),
                line,
                col,
                msg,
            }
        };
        let f: FileSettings = toml::from_str(text).map_err(|e| {
            at(
                e.span().unwrap_or(0..0),
                e.message()
                    .trim_end()
                    .replace("unknown field", "unknown key"),
            )
        })?;
        let key = |k| format!("key \"{k}\": ");
        if let Some(v) = f.storage_driver {
            let d = v
                .get_ref()
                .parse()
                .map_err(|e: String| at(v.span(), key("storage-driver") + &e))?;
            self.set("storage-driver", Source::File, |s| {
                s.storage_driver = Some(d)
            });
        }
        if let Some(v) = f.network {
            let (m, auto) =
                parse_network(v.get_ref()).map_err(|e| at(v.span(), key("network") + &e))?;
            self.set("network", Source::File, |s| {
                s.network = m;
                s.network_auto = auto;
            });
        }
        if let Some(v) = f.log_level {
            check_log_level(v.get_ref())
                .map_err(|e: String| at(v.span(), key("log-level") + &e))?;
            self.set("log-level", Source::File, |s| s.log_level = v.into_inner());
        }
        if let Some(v) = f.registry_mirrors {
            let m = registries(v.get_ref())
                .map_err(|e: String| at(v.span(), key("registry-mirrors") + &e))?;
            self.set("registry-mirrors", Source::File, |s| s.registry_mirrors = m);
        }
        if let Some(v) = f.insecure_registries {
            let m = registries(v.get_ref())
                .map_err(|e: String| at(v.span(), key("insecure-registries") + &e))?;
            self.set("insecure-registries", Source::File, |s| {
                s.insecure_registries = m
            });
        }
        if let Some(v) = f.default_ulimits {
            check_ulimits(v.get_ref())
                .map_err(|e: String| at(v.span(), key("default-ulimits") + &e))?;
            self.set("default-ulimits", Source::File, |s| {
                s.default_ulimits = v.into_inner()
            });
        }
        if let Some(v) = f.log_opts {
            check_log_opts(v.get_ref()).map_err(|e: String| at(v.span(), key("log-opts") + &e))?;
            self.set("log-opts", Source::File, |s| s.log_opts = v.into_inner());
        }
        if let Some(v) = f.layer_max_entries {
            let n = u64::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    at(
                        v.span(),
                        key("layer-max-entries") + "must be a number above 0",
                    )
                })?;
            self.set("layer-max-entries", Source::File, |s| {
                s.layer_max_entries = n
            });
        }
        if let Some(v) = f.layer_max_bytes {
            let n = match v.get_ref() {
                SizeValue::Bytes(n) => u64::try_from(*n).ok().filter(|n| *n > 0),
                SizeValue::Text(t) => super::config::parse_size(t).filter(|n| *n > 0),
            }
            .ok_or_else(|| {
                at(
                    v.span(),
                    key("layer-max-bytes") + "must be a size above 0 (bytes, or e.g. 512m, 64g)",
                )
            })?;
            self.set("layer-max-bytes", Source::File, |s| s.layer_max_bytes = n);
        }
        Ok(())
    }

    fn apply_flags(&mut self, f: &Flags) -> Result<(), SettingsError> {
        let bad = |flag: &str, msg: String| SettingsError::Flag {
            flag: format!("--{flag}"),
            msg,
        };
        if let Some(v) = &f.storage_driver {
            let d = v.parse().map_err(|e| bad("storage-driver", e))?;
            self.set("storage-driver", Source::Flag, |s| {
                s.storage_driver = Some(d)
            });
        }
        if let Some(v) = &f.network {
            let (m, auto) = parse_network(v).map_err(|e| bad("network", e))?;
            self.set("network", Source::Flag, |s| {
                s.network = m;
                s.network_auto = auto;
            });
        }
        if let Some(v) = &f.log_level {
            check_log_level(v).map_err(|e| bad("log-level", e))?;
            self.set("log-level", Source::Flag, |s| s.log_level = v.clone());
        }
        if !f.registry_mirrors.is_empty() {
            let m = registries(&f.registry_mirrors).map_err(|e| bad("registry-mirror", e))?;
            self.set("registry-mirrors", Source::Flag, |s| s.registry_mirrors = m);
        }
        if !f.insecure_registries.is_empty() {
            let m = registries(&f.insecure_registries).map_err(|e| bad("insecure-registry", e))?;
            self.set("insecure-registries", Source::Flag, |s| {
                s.insecure_registries = m
            });
        }
        if !f.default_ulimits.is_empty() {
            check_ulimits(&f.default_ulimits).map_err(|e| bad("default-ulimit", e))?;
            self.set("default-ulimits", Source::Flag, |s| {
                s.default_ulimits = f.default_ulimits.clone()
            });
        }
        if !f.log_opts.is_empty() {
            let mut opts = BTreeMap::new();
            for kv in &f.log_opts {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    bad("log-opt", format!("{kv:?} is not of the form KEY=VALUE"))
                })?;
                opts.insert(k.to_string(), v.to_string());
            }
            check_log_opts(&opts).map_err(|e| bad("log-opt", e))?;
            self.set("log-opts", Source::Flag, |s| s.log_opts = opts);
        }
        if let Some(v) = &f.layer_max_entries {
            let n = v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                bad(
                    "layer-max-entries",
                    format!("{v:?} is not a number above 0"),
                )
            })?;
            self.set("layer-max-entries", Source::Flag, |s| {
                s.layer_max_entries = n
            });
        }
        if let Some(v) = &f.layer_max_bytes {
            let n = super::config::parse_size(v)
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    bad(
                        "layer-max-bytes",
                        format!("{v:?} is not a size above 0 (bytes, or e.g. 512m, 64g)"),
                    )
                })?;
            self.set("layer-max-bytes", Source::Flag, |s| s.layer_max_bytes = n);
        }
        Ok(())
    }

    fn set(&mut self, key: &'static str, source: Source, f: impl FnOnce(&mut Settings)) {
        f(self);
        self.sources.insert(key, source);
    }

    /// Where `key` came from.
    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).copied().unwrap_or(Source::Default)
    }

    /// `key`'s value as JSON (for `skiff info`).
    pub fn value(&self, key: &str) -> serde_json::Value {
        use serde_json::json;
        match key {
            "storage-driver" => json!(self.storage_driver.map(|d| d.to_string())),
            "network" if self.network_auto => json!("auto"),
            "network" => json!(self.network.to_string()),
            "log-level" => json!(self.log_level),
            "registry-mirrors" => json!(self.registry_mirrors),
            "insecure-registries" => json!(self.insecure_registries),
            "default-ulimits" => json!(self.default_ulimits),
            "log-opts" => json!(self.log_opts),
            "layer-max-entries" => json!(self.layer_max_entries),
            "layer-max-bytes" => json!(self.layer_max_bytes),
            _ => serde_json::Value::Null,
        }
    }

    /// Every key with its value and source, for `skiff info`:
    /// `{"KEY": {"value": ..., "source": "default|env|file|flag"}}`.
    pub fn describe(&self) -> BTreeMap<String, serde_json::Value> {
        KEYS.iter()
            .map(|(k, _)| {
                (
                    k.to_string(),
                    serde_json::json!({"value": self.value(k), "source": self.source(k)}),
                )
            })
            .collect()
    }

    /// The keys whose value differs in `new`: (changed live, need a restart).
    pub fn reload_diff(&self, new: &Settings) -> (Vec<&'static str>, Vec<&'static str>) {
        let mut live = Vec::new();
        let mut restart = Vec::new();
        for (k, needs_restart) in KEYS {
            if self.value(k) != new.value(k) {
                if *needs_restart {
                    restart.push(*k);
                } else {
                    live.push(*k);
                }
            }
        }
        (live, restart)
    }

    /// Fills in a new container's ulimits and log options from the defaults, for each
    /// limit and option it does not set itself (docker's `default-ulimits`, `log-opts`).
    pub fn apply_container_defaults(&self, cfg: &mut super::ContainerConfig) {
        let name = |u: &str| u.split_once('=').map_or(u, |(n, _)| n).to_string();
        let own: Vec<String> = cfg.ulimits.iter().map(|u| name(u)).collect();
        let mut add: Vec<String> = self
            .default_ulimits
            .iter()
            .filter(|u| !own.contains(&name(u)))
            .cloned()
            .collect();
        add.append(&mut cfg.ulimits);
        cfg.ulimits = add;
        for (k, v) in &self.log_opts {
            cfg.log_opts.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    /// The layer limits as the environment of the helpers that unpack archives
    /// (`__unpack`, `__cp`: [`crate::image::unpack::UnpackOptions::from_env`]).
    pub fn layer_limit_envs(&self) -> [(&'static str, String); 2] {
        use crate::image::unpack::{MAX_BYTES_ENV, MAX_ENTRIES_ENV};
        [
            (MAX_ENTRIES_ENV, self.layer_max_entries.to_string()),
            (MAX_BYTES_ENV, self.layer_max_bytes.to_string()),
        ]
    }

    /// Whether `domain` (`host[:port]`) is an insecure registry.
    pub fn is_insecure(&self, domain: &str) -> bool {
        self.insecure_registries.iter().any(|r| r == domain)
    }
}

/// 1-based line and column of byte `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = text.get(..pos).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn check_log_level(spec: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(spec)
        .map(|_| ())
        .map_err(|e| format!("{spec:?} is not a log filter ({e}); e.g. info, debug, skiff=trace"))
}

/// Registries as `host[:port]` (a leading `https://` or `http://` and a trailing `/`
/// are dropped, as docker's `registry-mirrors` are URLs).
fn registries(list: &[String]) -> Result<Vec<String>, String> {
    list.iter()
        .map(|r| {
            let host = r
                .trim()
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
            if ok {
                Ok(host.to_string())
            } else {
                Err(format!(
                    "{r:?} is not a registry: give HOST or HOST:PORT (e.g. mirror.example:5000)"
                ))
            }
        })
        .collect()
}

fn check_ulimits(list: &[String]) -> Result<(), String> {
    let cfg = super::ContainerConfig {
        ulimits: list.to_vec(),
        ..Default::default()
    };
    super::security::ulimits(&cfg)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_log_opts(opts: &BTreeMap<String, String>) -> Result<(), String> {
    let cfg = super::ContainerConfig {
        log_opts: opts.clone(),
        ..Default::default()
    };
    cfg.log_limits().map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;

/// A `network` value: a mode, or `auto` (pasta where it works, with slirp4netns as the
/// fallback).
fn parse_network(v: &str) -> Result<(Mode, bool), String> {
    if v == "auto" {
        return Ok((Mode::Slirp4netns, true));
    }
    v.parse()
        .map(|m| (m, false))
        .map_err(|e: String| format!("{e}, or auto (pasta where it works, else slirp4netns)"))
}
