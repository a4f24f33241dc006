//! `Manager.BuildImage`: decodes the options and runs the build as a job (see
//! `crate::daemon::build`).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use zbus::{Connection, ObjectServer, OwnedObjectPath, OwnedVariant, Variant};

use super::manager::Ctx;
use super::SkiffError;
use crate::daemon::build::BuildOptions;

fn strings(k: &str, v: &Variant<'_>) -> Result<Vec<String>, SkiffError> {
    v.try_clone()
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            SkiffError::invalid_args(format!("option {k:?} must be an array of strings"))
        })
}

/// Starts a build job reading the context tar from `context` and writing progress to
/// `output`.
pub async fn start_build(
    ctx: &Ctx,
    conn: &Connection,
    server: &ObjectServer,
    context: OwnedFd,
    output: OwnedFd,
    options: HashMap<String, OwnedVariant>,
) -> Result<(u32, OwnedObjectPath), SkiffError> {
    let mut opts = BuildOptions {
        dockerfile_name: "Dockerfile".into(),
        ..BuildOptions::default()
    };
    let mut wait = false;
    for (k, v) in &options {
        let bad = |ty: &str| SkiffError::invalid_args(format!("option {k:?} must be {ty}"));
        match (k.as_str(), &**v) {
            ("wait", Variant::Bool(b)) => wait = *b,
            ("no-cache", Variant::Bool(b)) => opts.no_cache = *b,
            ("dockerfile", Variant::Str(s)) => opts.dockerfile = Some(s.to_string()),
            ("dockerfile-name", Variant::Str(s)) => opts.dockerfile_name = s.to_string(),
            ("target", Variant::Str(s)) if !s.is_empty() => opts.target = Some(s.to_string()),
            ("target", Variant::Str(_)) => {}
            ("tags", v) => opts.tags = strings(k, v)?,
            ("build-args", v) => {
                for a in strings(k, v)? {
                    match a.split_once('=') {
                        Some((n, val)) if !n.is_empty() => {
                            opts.build_args.insert(n.to_string(), val.to_string());
                        }
                        _ => {
                            return Err(SkiffError::invalid_args(format!(
                                "build arg {a:?} is not NAME=VALUE"
                            )))
                        }
                    }
                }
            }
            ("wait" | "no-cache", _) => return Err(bad("a boolean")),
            ("dockerfile" | "dockerfile-name" | "target", _) => return Err(bad("a string")),
            (other, _) => {
                return Err(SkiffError::invalid_args(format!(
                    "unknown build option {other:?} (known: dockerfile, dockerfile-name, tags, \
                     build-args, target, no-cache, wait)"
                )))
            }
        }
    }
    let daemon = ctx.daemon.clone();
    let state = Arc::new(super::job::JobState::default());
    let progress = state.progress.clone();
    let reference = opts.tags.first().cloned().unwrap_or_default();
    let work: super::job::JobWork = Box::pin(async move {
        Ok(vec![
            daemon.build_image(context, output, opts, progress).await?,
        ])
    });
    let spec = super::job::JobSpec {
        typ: "build",
        reference,
        wait,
        state,
    };
    super::job::start_job(ctx, conn, server, spec, work).await
}
