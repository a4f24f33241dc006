//! The `a{sv}` container config that `run` and `create` send, built from their flags.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use super::{CreateArgs, Failure};

fn ov<'a>(v: impl Into<Variant<'a>>) -> Result<OwnedVariant, Failure> {
    OwnedVariant::try_from(v.into()).map_err(|e| Failure::msg(format!("encoding the config: {e}")))
}

/// The `a{sv}` config for `args`; a bad flag fails with docker's 125, as every other
/// failure of `run`/`create` before the command runs.
pub(super) fn config(
    args: &CreateArgs,
    auto_remove: bool,
) -> Result<HashMap<&'static str, OwnedVariant>, Failure> {
    build_config(args, auto_remove).map_err(|f| Failure { code: 125, ..f })
}

fn build_config(
    args: &CreateArgs,
    auto_remove: bool,
) -> Result<HashMap<&'static str, OwnedVariant>, Failure> {
    let mut m = HashMap::new();
    m.insert("image", ov(args.image.as_str())?);
    super::units::add_limits(&args.units, &mut m)?;
    if !args.command.is_empty() {
        m.insert("command", ov(args.command.clone())?);
    }
    if let Some(e) = &args.entrypoint {
        // `--entrypoint ''` clears the image's entrypoint (an empty list), as docker.
        let list: Vec<String> = if e.is_empty() {
            Vec::new()
        } else {
            vec![e.clone()]
        };
        m.insert("entrypoint", ov(list)?);
    }
    if let Some(n) = &args.name {
        m.insert("name", ov(n.as_str())?);
    }
    // --env-file first, then -e (which wins), as docker.
    let mut env: Vec<String> = Vec::new();
    for f in &args.env_file {
        env.extend(
            super::envfile::read(f, |k| std::env::var(k).ok())
                .map_err(|message| Failure { message, code: 125 })?,
        );
    }
    env.extend(
        args.env
            .iter()
            .map(|e| match (e.contains('='), std::env::var(e)) {
                // `-e NAME` takes NAME from skiff's environment, as docker does.
                (false, Ok(v)) => format!("{e}={v}"),
                _ => e.clone(),
            }),
    );
    if !env.is_empty() {
        m.insert("env", ov(env)?);
    }
    if let Some(w) = &args.workdir {
        m.insert("workdir", ov(w.as_str())?);
    }
    if let Some(u) = &args.user {
        m.insert("user", ov(u.as_str())?);
    }
    if !args.group_add.is_empty() {
        m.insert("group-add", ov(args.group_add.clone())?);
    }
    if args.init {
        m.insert("init", ov(true)?);
    }
    if let Some(u) = &args.userns {
        m.insert("userns", ov(u.as_str())?);
    }
    if let Some(s) = &args.shm_size {
        m.insert("shm-size", ov(s.as_str())?);
    }
    if let Some(h) = &args.hostname {
        m.insert("hostname", ov(h.as_str())?);
    }
    if let Some(n) = &args.network {
        m.insert("network", ov(n.as_str())?);
    }
    for (key, list) in [
        ("publish", &args.publish),
        ("expose", &args.expose),
        ("dns", &args.dns),
        ("dns-search", &args.dns_search),
        ("dns-option", &args.dns_option),
        ("add-host", &args.add_host),
    ] {
        if !list.is_empty() {
            m.insert(key, ov(list.clone())?);
        }
    }
    if args.publish_all {
        m.insert("publish-all", ov(true)?);
    }
    if args.host_loopback {
        m.insert("host-loopback", ov(true)?);
    }
    if !args.labels.is_empty() {
        let labels: HashMap<String, String> = args
            .labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l.clone(), String::new()),
            })
            .collect();
        m.insert("labels", ov(labels)?);
    }
    if args.interactive {
        m.insert("interactive", ov(true)?);
    }
    if args.tty {
        m.insert("tty", ov(true)?);
        // The pty starts with our terminal's size (docker's ConsoleSize).
        if let Some((rows, cols)) = super::tty::window_size() {
            m.insert("console-size", ov(vec![u32::from(rows), u32::from(cols)])?);
        }
    }
    if auto_remove {
        m.insert("auto-remove", ov(true)?);
    }
    if let Some(r) = &args.restart {
        m.insert("restart", ov(r.as_str())?);
    }
    if let Some(sig) = &args.stop_signal {
        m.insert("stop-signal", ov(super::control::parse_signal(sig)?)?);
    }
    if let Some(t) = args.stop_timeout {
        m.insert("stop-timeout", ov(t)?);
    }
    if !args.log_opts.is_empty() {
        let opts: HashMap<String, String> = args
            .log_opts
            .iter()
            .map(|o| match o.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(Failure::msg(format!("--log-opt {o:?}: use KEY=VALUE"))),
            })
            .collect::<Result<_, _>>()?;
        m.insert("log-opts", ov(opts)?);
    }
    super::security_args::insert(&args.security, &mut m)?;
    super::volumes::add_mount_keys(&mut m, &args.volumes, &args.mounts, &args.tmpfs)?;
    Ok(m)
}
