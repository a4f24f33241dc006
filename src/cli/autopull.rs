//! Auto-pull for `run` and `create`: `--pull missing|always|never` and `--platform`.
//! A missing image (or, with `--platform`, a local image of another platform) is pulled
//! through skiffd with the progress of `skiff pull` on stderr before the container is
//! made; stdout stays the container's.

use clap::{Args, ValueEnum};
use zbus::Connection;

use super::connect::{error_name, fail};
use super::output::errln;
use super::pull::{pull_with_progress, PullArgs};
use super::Failure;
use crate::dbus::proxy::ImageProxy;

/// docker's exit code for a `run`/`create` that failed before the container existed.
const EXIT: i32 = 125;

/// When `run`/`create` pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PullPolicy {
    /// When it is not in the store (or is for another platform than `--platform`).
    #[default]
    Missing,
    /// Every time, before the container is made.
    Always,
    /// Never: a missing image is an error.
    Never,
}

/// The flags of `run` and `create` about pulling.
#[derive(Debug, Args, Clone, Default)]
pub struct PullFlags {
    /// Pull the image: missing (when not in the store), always, never.
    #[arg(long = "pull", value_enum, value_name = "POLICY", default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// Platform of the image (OS/ARCH[/VARIANT]): pulled for it, and a local image of
    /// another platform is pulled again.
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
}

/// The platform of a local image as `os/arch[/variant]`, from its inspect JSON.
fn local_platform(inspect: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(inspect).ok()?;
    let v = if v.is_array() { v.get(0)? } else { &v };
    let os = v.get("Os")?.as_str()?;
    let arch = v.get("Architecture")?.as_str()?;
    let mut p = format!("{os}/{arch}");
    if let Some(var) = v.get("Variant").and_then(|x| x.as_str()) {
        if !var.is_empty() {
            p.push('/');
            p.push_str(var);
        }
    }
    Some(p)
}

/// Whether a local image's platform `have` satisfies `want` (a `want` without variant
/// accepts any variant).
fn platform_matches(have: &str, want: &str) -> bool {
    have == want || (want.matches('/').count() == 1 && have.starts_with(&format!("{want}/")))
}

/// [`ensure_image`], ended by SIGINT, SIGTERM or SIGHUP as `run` is (exit 128 + the
/// signal): a CLI waiting for a busy or stopped skiffd, or in a long pull, must still
/// end when told to (the pull job goes on in skiffd, as docker's does).
pub async fn ensure_image_interruptible(
    conn: &Connection,
    image: &str,
    flags: &PullFlags,
) -> Result<Option<i32>, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigs = Vec::new();
    for signo in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let s = signal(SignalKind::from_raw(signo))
            .map_err(|e| Failure::msg(format!("cannot handle signal {signo}: {e}")))?;
        sigs.push((signo, s));
    }
    let [(a, sa), (b, sb), (c, sc)] = &mut sigs[..] else {
        return Err(Failure::msg("signal set-up"));
    };
    tokio::select! {
        r = ensure_image(conn, image, flags) => r.map(|()| None),
        Some(()) = sa.recv() => Ok(Some(128 + *a)),
        Some(()) = sb.recv() => Ok(Some(128 + *b)),
        Some(()) = sc.recv() => Ok(Some(128 + *c)),
    }
}

/// Makes sure `image` is in the store as `flags` ask, pulling it when needed.
pub async fn ensure_image(
    conn: &Connection,
    image: &str,
    flags: &PullFlags,
) -> Result<(), Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, EXIT))?;
    let missing_reason = if flags.pull == PullPolicy::Always {
        None
    } else {
        match mgr.get_image(image).await {
            Ok(path) => {
                let Some(want) = flags.platform.as_deref() else {
                    return Ok(());
                };
                let proxy = ImageProxy::builder(conn)
                    .path(path)
                    .build()
                    .await
                    .map_err(|e| fail(e, EXIT))?;
                let have = local_platform(&proxy.inspect().await.map_err(|e| fail(e, EXIT))?);
                match have {
                    Some(h) if !platform_matches(&h, want) => {
                        Some(format!("the local image {image} is for {h}, not {want}"))
                    }
                    _ => return Ok(()),
                }
            }
            Err(e) if error_name(&e).as_deref() == Some("org.skiff.Error.NoSuchImage") => {
                Some(format!("Unable to find image '{image}' locally"))
            }
            Err(e) => return Err(fail(e, EXIT)),
        }
    };
    if flags.pull == PullPolicy::Never {
        let why = missing_reason.unwrap_or_default();
        return Err(Failure {
            message: format!(
                "No such image: {image} ({why}; --pull never does not pull: run `skiff pull \
                 {image}` first, or drop --pull never)"
            ),
            code: EXIT,
        });
    }
    if let Some(why) = missing_reason {
        errln!("{why}");
    }
    let args = PullArgs {
        quiet: false,
        tls_verify: true,
        authfile: None,
        platform: flags.platform.clone(),
        reference: image.to_string(),
    };
    pull_with_progress(conn, &args)
        .await
        .map(|_| ())
        .map_err(|f| match f.code {
            130 => f,
            _ => Failure {
                message: format!(
                    "no such image {image} here, and pulling it failed: {}",
                    f.message
                ),
                code: EXIT,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_of_local_images() {
        let j = r#"[{"Os":"linux","Architecture":"arm","Variant":"v7"}]"#;
        assert_eq!(local_platform(j).as_deref(), Some("linux/arm/v7"));
        let j = r#"{"Os":"linux","Architecture":"amd64"}"#;
        assert_eq!(local_platform(j).as_deref(), Some("linux/amd64"));
        assert_eq!(local_platform("{}"), None);
        assert!(platform_matches("linux/arm/v7", "linux/arm"));
        assert!(platform_matches("linux/amd64", "linux/amd64"));
        assert!(!platform_matches("linux/arm/v7", "linux/arm/v6"));
        assert!(!platform_matches("linux/amd64", "linux/arm64"));
    }
}
