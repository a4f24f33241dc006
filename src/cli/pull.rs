//! `skiff pull`: one progress bar per blob (see [`super::progress`]), a summary, then
//! the image id on stdout.

use super::output::{errln, outln};
use std::collections::HashMap;
use std::path::PathBuf;

use zbus::{Connection, OwnedVariant, Variant};

use super::connect::fail;
use super::progress::{job_proxy, JobWatcher};
use super::{table, Failure};

/// The flags of `skiff pull`.
#[derive(Debug, Clone)]
pub struct PullArgs {
    /// No progress output: only the image id.
    pub quiet: bool,
    /// Verify TLS certificates (false also allows plain HTTP).
    pub tls_verify: bool,
    /// Auth file (podman/docker `auths` format).
    pub authfile: Option<String>,
    /// `os/arch[/variant]`.
    pub platform: Option<String>,
    /// The image reference.
    pub reference: String,
}

fn variant<'a>(v: impl Into<Variant<'a>>) -> Result<OwnedVariant, Failure> {
    OwnedVariant::try_from(v.into()).map_err(|e| Failure::msg(e.to_string()))
}

/// The auth file to send: `--authfile`, else `$REGISTRY_AUTH_FILE` (the daemon may
/// run with another environment), made absolute.
pub(super) fn auth_file(flag: Option<&str>) -> Result<Option<String>, Failure> {
    let chosen = match flag {
        Some(f) => Some(PathBuf::from(f)),
        None => std::env::var_os("REGISTRY_AUTH_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    let Some(p) = chosen else { return Ok(None) };
    let abs = std::path::absolute(&p)
        .map_err(|e| Failure::msg(format!("auth file {}: {e}", p.display())))?;
    if !abs.is_file() {
        return Err(Failure::msg(format!(
            "auth file {} does not exist or is not a file (log in with: podman login \
             --authfile {} REGISTRY)",
            abs.display(),
            abs.display()
        )));
    }
    Ok(Some(abs.to_string_lossy().into_owned()))
}

/// `skiff pull [-q] [--tls-verify=false] [--authfile F] [--platform P] REF`.
pub async fn pull(conn: &Connection, args: PullArgs) -> Result<i32, Failure> {
    let id = pull_with_progress(conn, &args).await?;
    outln!("{id}");
    Ok(0)
}

/// Pulls `args.reference` through skiffd: the progress bars and a summary on stderr
/// (none with `quiet`). Returns the image id.
pub async fn pull_with_progress(conn: &Connection, args: &PullArgs) -> Result<String, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let mut options: HashMap<&str, OwnedVariant> = HashMap::new();
    if !args.tls_verify {
        options.insert("tls-verify", variant(false)?);
    }
    if let Some(f) = auth_file(args.authfile.as_deref())? {
        options.insert("auth-file", variant(f)?);
    }
    if let Some(p) = &args.platform {
        options.insert("platform", variant(p.as_str())?);
    }
    // Subscribe before the call, so that no progress signal is missed.
    let watcher = JobWatcher::subscribe(conn).await?;
    let (_, job_path) = mgr
        .pull_image(&args.reference, options)
        .await
        .map_err(|e| fail(e, 1))?;
    let end = watcher.follow(conn, &job_path, None, !args.quiet).await?;
    if end.result != "done" {
        return Err(Failure::msg(end.detail));
    }
    if args.quiet {
        return Ok(end.detail);
    }
    let job = job_proxy(conn, &job_path).await?;
    let skipped = job.blobs_skipped().await.unwrap_or(0);
    let bytes = job.bytes_done().await.unwrap_or(0);
    let digest = job.digest().await.unwrap_or_default();
    errln!(
        "Fetched {} blob(s) ({}), skipped {skipped} already present",
        end.fetched,
        table::human_size(bytes)
    );
    errln!("Digest: {digest}");
    Ok(end.detail)
}
