//! `skiff push`: the upload job of skiffd with one progress bar per blob, a line per
//! layer ("Layer already exists" / "Pushed") when stderr is not a terminal, then the
//! pushed manifest's digest.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use zbus::{Connection, OwnedVariant, Variant};

use super::connect::fail;
use super::output::{errln, outln};
use super::progress::{job_proxy, JobWatcher};
use super::{table, Failure};

/// The flags of `skiff push`.
#[derive(Debug, Args, Clone)]
pub struct PushArgs {
    /// No progress output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Verify TLS certificates; =false also allows plain HTTP to the registry.
    #[arg(long = "tls-verify", value_name = "BOOL", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub tls_verify: bool,
    /// Auth file with the registry credentials (podman/docker auths format).
    #[arg(long = "authfile", value_name = "FILE")]
    pub authfile: Option<String>,
    /// Also write the pushed manifest's digest to FILE.
    #[arg(long = "digestfile", value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// The local image: NAME[:TAG] or id.
    pub image: String,
    /// Where to push it: HOST[:PORT]/REPO[:TAG] (default: the image's name).
    pub destination: Option<String>,
}

fn variant<'a>(v: impl Into<Variant<'a>>) -> Result<OwnedVariant, Failure> {
    OwnedVariant::try_from(v.into()).map_err(|e| Failure::msg(e.to_string()))
}

/// `skiff push [-q] [--tls-verify=false] [--authfile F] [--digestfile F] IMAGE [DEST]`.
pub async fn push(conn: &Connection, args: &PushArgs) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let mut options: HashMap<&str, OwnedVariant> = HashMap::new();
    if !args.tls_verify {
        options.insert("tls-verify", variant(false)?);
    }
    if let Some(f) = super::pull::auth_file(args.authfile.as_deref())? {
        options.insert("auth-file", variant(f)?);
    }
    let destination = args.destination.clone().unwrap_or_default();
    // Subscribe before the call, so that no progress signal is missed.
    let watcher = JobWatcher::subscribe(conn).await?;
    let (_, job_path) = mgr
        .push_image(&args.image, &destination, options)
        .await
        .map_err(|e| fail(e, 1))?;
    let end = watcher.follow(conn, &job_path, None, !args.quiet).await?;
    if end.result != "done" {
        return Err(Failure::msg(end.detail));
    }
    let job = job_proxy(conn, &job_path).await?;
    let digest = job.digest().await.map_err(|e| fail(e, 1))?;
    if let Some(f) = &args.digestfile {
        std::fs::write(f, &digest)
            .map_err(|e| Failure::msg(format!("writing the digest to {}: {e}", f.display())))?;
    }
    if !args.quiet {
        if !std::io::stderr().is_terminal() {
            for (d, status) in &end.blobs {
                let short = d.strip_prefix("sha256:").unwrap_or(d);
                let short = &short[..short.len().min(12)];
                match status.as_str() {
                    "exists" => errln!("{short}: Layer already exists"),
                    "pushed" => errln!("{short}: Pushed"),
                    "mounted" => errln!("{short}: Mounted from another repository"),
                    _ => {}
                }
            }
        }
        // Blobs the registry had or mounted.
        let skipped = job.blobs_skipped().await.unwrap_or(0);
        let bytes = job.bytes_done().await.unwrap_or(0);
        let pushed = end.blobs.iter().filter(|(_, s)| s == "pushed").count();
        errln!(
            "Pushed {pushed} blob(s) ({}), skipped {skipped} already in the registry",
            table::human_size(bytes)
        );
    }
    outln!("Digest: {digest}");
    Ok(0)
}
