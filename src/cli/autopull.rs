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
    until_signalled(ensure_image(conn, image, flags)).await
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
            Err(e) if is_missing_image(&e) => Some(missing_locally(image)),
            Err(e) => return Err(fail(e, EXIT)),
        }
    };
    pull_for(conn, image, flags, missing_reason).await
}

/// Whether `run`/`create` make the container first and look at the image only when that
/// call fails with `NoSuchImage` (as docker's CLI does with its create call): one D-Bus
/// round trip less on every run. Not with `--pull always` (it pulls first) nor with
/// `--platform` (a local image of another platform is pulled again): those call
/// [`ensure_image`] before.
pub fn pull_on_failure(flags: &PullFlags) -> bool {
    flags.pull != PullPolicy::Always && flags.platform.is_none()
}

/// Whether a failed call says the image is not in the store.
fn is_missing_image(e: &zbus::Error) -> bool {
    error_name(e).as_deref() == Some("org.skiff.Error.NoSuchImage")
}

/// The line before the pull of an image that is not in the store (docker's).
fn missing_locally(image: &str) -> String {
    format!("Unable to find image '{image}' locally")
}

/// What to do after a failed `RunContainer` or `CreateContainer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// The image was missing and is pulled now: make the call again.
    Retry,
    /// Ended by this signal during the pull: exit with 128 + it.
    Exit(i32),
}

/// After `RunContainer`/`CreateContainer` failed with `e`: when [`pull_on_failure`] holds
/// and the image was missing, does what [`ensure_image`] would have done before the call
/// (the same messages; `--pull never` fails) and says to call again. Any other failure
/// is `failure(e)`. `interruptible`: the pull is ended by SIGINT, SIGTERM or SIGHUP, as
/// in [`ensure_image_interruptible`].
pub async fn after_failed_call(
    conn: &Connection,
    image: &str,
    flags: &PullFlags,
    e: zbus::Error,
    interruptible: bool,
    failure: fn(zbus::Error) -> Failure,
) -> Result<AfterFailure, Failure> {
    if !pull_on_failure(flags) || !is_missing_image(&e) {
        return Err(failure(e));
    }
    let pull = pull_for(conn, image, flags, Some(missing_locally(image)));
    if !interruptible {
        return pull.await.map(|()| AfterFailure::Retry);
    }
    match until_signalled(pull).await? {
        None => Ok(AfterFailure::Retry),
        Some(code) => Ok(AfterFailure::Exit(code)),
    }
}

/// Runs `work`, ended by SIGINT, SIGTERM or SIGHUP (`Some(128 + the signal)`).
async fn until_signalled(
    work: impl std::future::Future<Output = Result<(), Failure>>,
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
        r = work => r.map(|()| None),
        Some(()) = sa.recv() => Ok(Some(128 + *a)),
        Some(()) = sb.recv() => Ok(Some(128 + *b)),
        Some(()) = sc.recv() => Ok(Some(128 + *c)),
    }
}

/// Pulls `image` for `run`/`create` (`missing_reason`: why, said first; `None` with
/// `--pull always`), or fails for `--pull never`.
async fn pull_for(
    conn: &Connection,
    image: &str,
    flags: &PullFlags,
    missing_reason: Option<String>,
) -> Result<(), Failure> {
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
