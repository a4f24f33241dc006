//! `skiff commit [-c CHANGE]... [-m MSG] [-a AUTHOR] [-p=true|false] CONTAINER
//! [REPO[:TAG]]`: a container's changes become a new image (`Container.Commit`).

use std::collections::HashMap;

use zbus::{Connection, OwnedVariant, Variant};

use super::connect::fail;
use super::containers::container;
use super::output::outln;
use super::Failure;

/// The flags and operands of `skiff commit`.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV,
    /// WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL); repeatable.
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// The commit message (the history entry's comment).
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
    /// The author (e.g. "Jane <jane@example.com>").
    #[arg(short = 'a', long = "author")]
    pub author: Option<String>,
    /// Freeze a running container while its changes are read.
    #[arg(short = 'p', long = "pause", default_value = "true", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub pause: bool,
    /// Print only the image id (without its `sha256:` prefix).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The container (name, id or id prefix).
    pub container: String,
    /// The new image's name (default: an untagged image).
    pub reference: Option<String>,
}

fn opt<T: Into<Variant<'static>>>(v: T) -> Result<OwnedVariant, Failure> {
    OwnedVariant::try_from(v.into()).map_err(|e| Failure::msg(e.to_string()))
}

/// `skiff commit`.
pub async fn commit(conn: &Connection, args: &CommitArgs) -> Result<i32, Failure> {
    let c = container(conn, &args.container)
        .await
        .map_err(|e| fail(e, 1))?;
    let mut options: HashMap<&str, OwnedVariant> = HashMap::new();
    if !args.changes.is_empty() {
        options.insert("changes", opt(args.changes.clone())?);
    }
    if let Some(m) = &args.message {
        options.insert("message", opt(m.clone())?);
    }
    if let Some(a) = &args.author {
        options.insert("author", opt(a.clone())?);
    }
    options.insert("pause", opt(args.pause)?);
    let reference = args.reference.as_deref().unwrap_or("");
    let id = c.commit(reference, options).await.map_err(|e| fail(e, 1))?;
    if args.quiet {
        outln!("{id}");
    } else {
        outln!("sha256:{id}");
    }
    Ok(0)
}
