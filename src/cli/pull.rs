//! `skiff pull`: one progress bar per blob (indicatif, on stderr when it is a terminal),
//! a summary, then the image id on stdout.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use zbus::{Connection, MatchRule, MessageStream, OwnedVariant, Variant};

use super::connect::fail;
use super::{table, Failure};
use crate::dbus::proxy::JobProxy;

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
fn auth_file(flag: Option<&str>) -> Result<Option<String>, Failure> {
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
    if args.quiet {
        options.insert("wait", variant(true)?);
        let (_, job) = mgr
            .pull_image(&args.reference, options)
            .await
            .map_err(|e| fail(e, 1))?;
        let job = job_proxy(conn, &job).await?;
        let (_, id) = job.wait().await.map_err(|e| fail(e, 1))?;
        println!("{id}");
        return Ok(0);
    }

    // Subscribe before the call, so that no progress signal is missed.
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.skiff.skiff1.Job")
        .member("LayerProgress")
        .build()
        .map_err(|e| fail(e, 1))?;
    let mut signals = MessageStream::for_match_rule(rule, conn, NonZeroUsize::new(256))
        .await
        .map_err(|e| fail(e, 1))?;
    let (_, job_path) = mgr
        .pull_image(&args.reference, options)
        .await
        .map_err(|e| fail(e, 1))?;
    let job = job_proxy(conn, &job_path).await?;
    let mut bars = Bars::new();
    let wait = job.wait();
    tokio::pin!(wait);
    let (result, id) = loop {
        tokio::select! {
            r = &mut wait => break r.map_err(|e| fail(e, 1))?,
            Some(Ok(msg)) = signals.next() => {
                if msg.header().path().map(|p| p.as_str()) != Some(job_path.as_str()) {
                    continue;
                }
                if let Ok((digest, status, done, total)) =
                    msg.body().deserialize::<(String, String, u64, u64)>()
                {
                    bars.update(&digest, &status, done, total);
                }
            }
        }
    };
    // Signals already queued belong to this job's end: drain them without waiting.
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(Duration::from_millis(50), signals.next()).await
    {
        if msg.header().path().map(|p| p.as_str()) == Some(job_path.as_str()) {
            if let Ok((d, s, done, total)) = msg.body().deserialize::<(String, String, u64, u64)>()
            {
                bars.update(&d, &s, done, total);
            }
        }
    }
    bars.finish();
    if result != "done" {
        return Err(Failure::msg(id));
    }
    let skipped = job.blobs_skipped().await.unwrap_or(0);
    let bytes = job.bytes_done().await.unwrap_or(0);
    let digest = job.digest().await.unwrap_or_default();
    eprintln!(
        "Fetched {} blob(s) ({}), skipped {skipped} already present",
        bars.fetched(),
        table::human_size(bytes)
    );
    eprintln!("Digest: {digest}");
    println!("{id}");
    Ok(0)
}

async fn job_proxy<'a>(
    conn: &'a Connection,
    path: &'a zbus::OwnedObjectPath,
) -> Result<JobProxy<'a>, Failure> {
    JobProxy::builder(conn)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| fail(e, 1))
}

/// One bar per blob, keyed by digest.
struct Bars {
    multi: MultiProgress,
    bars: Vec<(String, ProgressBar, String)>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)),
            bars: Vec::new(),
        }
    }

    fn update(&mut self, digest: &str, status: &str, done: u64, total: u64) {
        let short = digest.strip_prefix("sha256:").unwrap_or(digest);
        let short = &short[..short.len().min(12)];
        let idx = match self.bars.iter().position(|(d, _, _)| d == digest) {
            Some(i) => i,
            None => {
                let bar = self.multi.add(ProgressBar::new(total));
                let style =
                    ProgressStyle::with_template("{prefix} {wide_bar} {bytes}/{total_bytes} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_prefix(format!("Copying blob {short}"));
                self.bars.push((digest.to_string(), bar, String::new()));
                self.bars.len() - 1
            }
        };
        let (_, bar, last) = &mut self.bars[idx];
        bar.set_length(total);
        bar.set_position(done.min(total));
        if *last != status {
            match status {
                "skipped" => bar.finish_with_message("skipped: already present"),
                "done" => bar.finish_with_message("done"),
                other => bar.set_message(other.to_string()),
            }
            *last = status.to_string();
        }
    }

    fn fetched(&self) -> usize {
        self.bars.iter().filter(|(_, _, s)| s != "skipped").count()
    }

    fn finish(&self) {
        for (_, bar, _) in &self.bars {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}
