//! `skiff cp`: copies between the host and a container as a tar stream over skiffd's
//! `CopyTo`/`CopyFrom` (see `crate::cp`). The host side runs here, as the calling user:
//! a source is archived by this process (owned by the container's root unless `-a`),
//! and what comes out of a container is extracted by it (owned by the user), with the
//! layer unpacker's refusals of hostile entries.

use std::collections::HashMap;
use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use zbus::{Connection, OwnedVariant, Variant as Value};

use super::connect::fail;
use super::containers::container;
use super::Failure;
use crate::cp::rules::{self, Source};
use crate::cp::stream::{extract_placed, top_name, write_tree};
use crate::image::UnpackOptions;

/// The flags and operands of `skiff cp`.
#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// Follow a symlink named by SRC_PATH (else the link itself is copied).
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Keep the files' numeric owners (else files copied in belong to the container's
    /// root).
    #[arg(short = 'a', long = "archive")]
    pub archive: bool,
    /// CONTAINER:SRC_PATH, a local path, or - (a tar on stdin).
    pub src: String,
    /// CONTAINER:DEST_PATH, a local path, or - (a tar on stdout).
    pub dest: String,
}

/// One operand: a local path (or `-`) or a path in a container.
#[derive(Debug, PartialEq, Eq)]
enum Loc<'a> {
    Local(&'a str),
    Container { name: &'a str, path: &'a str },
}

/// docker's reading: `NAME:PATH` is in a container unless the text before the first
/// `:` contains a `/` (so `./a:b` and `/a:b` are local paths).
fn parse_loc(s: &str) -> Result<Loc<'_>, Failure> {
    if s.starts_with('/') || s.starts_with('.') || s == "-" {
        return Ok(Loc::Local(s));
    }
    match s.split_once(':') {
        Some((name, _)) if name.contains('/') => Ok(Loc::Local(s)),
        Some((name, path)) if name.is_empty() || path.is_empty() => Err(Failure::msg(format!(
            "bad syntax {s:?}: give CONTAINER:PATH (a local path with a ':' must start with \
             ./ or /)"
        ))),
        Some((name, path)) => Ok(Loc::Container { name, path }),
        None if s.is_empty() => Err(Failure::msg("an empty path: give a file or directory")),
        None => Ok(Loc::Local(s)),
    }
}

fn opts(
    pairs: Vec<(&'static str, Value<'static>)>,
) -> Result<HashMap<&'static str, OwnedVariant>, Failure> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            OwnedVariant::try_from(v)
                .map(|v| (k, v))
                .map_err(|e| Failure::msg(e.to_string()))
        })
        .collect()
}

/// `skiff cp [-L] [-a] SRC DEST`.
pub async fn cp(conn: &Connection, args: &CpArgs) -> Result<i32, Failure> {
    match (parse_loc(&args.src)?, parse_loc(&args.dest)?) {
        (Loc::Container { .. }, Loc::Container { .. }) => Err(Failure::msg(
            "copying between containers is not supported: copy to the host first",
        )),
        (Loc::Local(_), Loc::Local(_)) => Err(Failure::msg(
            "must specify at least one container source (CONTAINER:PATH)",
        )),
        (Loc::Local(src), Loc::Container { name, path }) => {
            copy_in(conn, src, name, path, args).await
        }
        (Loc::Container { name, path }, Loc::Local(dest)) => {
            copy_out(conn, name, path, dest, args.follow_link).await
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Failure> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Failure::msg(format!("cannot make a pipe: {e}")))
}

async fn copy_in(
    conn: &Connection,
    src: &str,
    name: &str,
    path: &str,
    args: &CpArgs,
) -> Result<i32, Failure> {
    let c = container(conn, name).await.map_err(|e| fail(e, 1))?;
    if src == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(Failure::msg(
                "refusing to read an archive from a terminal: redirect stdin from a tar",
            ));
        }
        let o = opts(vec![("mode", Value::from("extract"))])?;
        let warnings = c
            .copy_to(stdin.as_fd().into(), path, o)
            .await
            .map_err(|e| fail(e, 1))?;
        warn(&warnings);
        return Ok(0);
    }
    let (trimmed, must_be_dir) = rules::split_dir_suffix(src);
    let follow = args.follow_link || must_be_dir;
    let meta = match follow {
        true => std::fs::metadata(trimmed),
        false => std::fs::symlink_metadata(trimmed),
    }
    .map_err(|e| Failure::msg(format!("{src}: {e}")))?;
    if must_be_dir && !meta.is_dir() {
        return Err(Failure::msg(format!("{src}: not a directory")));
    }
    let mode = match meta.is_dir() && rules::wants_contents(src) {
        true => "contents",
        false => "tree",
    };
    let owner = (!args.archive).then_some((0, 0));
    let (r, w) = pipe()?;
    let (from, top) = (trimmed.to_string(), top_name(src));
    let writer = std::thread::spawn(move || {
        crate::cp::stream::block_sigpipe();
        write_tree(File::from(w), Path::new(&from), &top, follow, owner).map(drop)
    });
    let o = opts(vec![("mode", Value::from(mode))])?;
    let res = c.copy_to(r.as_fd().into(), path, o).await;
    drop(r);
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(crate::cp::Error::Path("the archive writer panicked".into())));
    match (res, written) {
        (_, Err(crate::cp::Error::Io { source, what }))
            if source.kind() != std::io::ErrorKind::BrokenPipe =>
        {
            Err(Failure::msg(format!("{what}: {source}")))
        }
        (Err(e), _) => Err(fail(e, 1)),
        (Ok(warnings), _) => {
            warn(&warnings);
            Ok(0)
        }
    }
}

fn warn(warnings: &[String]) {
    for w in warnings {
        super::output::err_line(format_args!("skiff: warning: {w}"));
    }
}

async fn copy_out(
    conn: &Connection,
    name: &str,
    path: &str,
    dest: &str,
    follow: bool,
) -> Result<i32, Failure> {
    let c = container(conn, name).await.map_err(|e| fail(e, 1))?;
    let o = opts(vec![("follow", Value::from(follow))])?;
    if dest == "-" {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            return Err(Failure::msg(
                "refusing to write an archive to a terminal: redirect stdout or pipe it to tar",
            ));
        }
        c.copy_from(path, stdout.as_fd().into(), o)
            .await
            .map_err(|e| fail(e, 1))?;
        return Ok(0);
    }
    let state = rules::dest_state(dest);
    let contents = rules::wants_contents(path);
    let refused: Arc<Mutex<Option<String>>> = Arc::default();
    let why = refused.clone();
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = started.clone();
    let dest_owned = dest.to_string();
    let (r, w) = pipe()?;
    let reader = std::thread::spawn(move || {
        let opts = UnpackOptions {
            preserve_ownership: false,
            whiteouts: false,
            ..UnpackOptions::default()
        };
        extract_placed(
            File::from(r),
            move |is_dir| {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                let src = Source { is_dir, contents };
                rules::place(&src, &dest_owned, state)
                    .map(|p| (p.dir, p.rename))
                    .map_err(|e| {
                        if let Ok(mut g) = why.lock() {
                            *g = Some(e.clone());
                        }
                        crate::cp::Error::Path(e)
                    })
            },
            &opts,
        )
    });
    let res = c.copy_from(path, w.as_fd().into(), o).await;
    drop(w);
    let extracted = reader
        .join()
        .unwrap_or_else(|_| Err(crate::cp::Error::Path("the archive reader panicked".into())));
    if let Some(msg) = refused.lock().ok().and_then(|g| g.clone()) {
        return Err(Failure::msg(msg));
    }
    // Once entries arrived, a failure here is the cause (skiffd then only saw the pipe
    // close); before, skiffd's error says why nothing came.
    let started = started.load(std::sync::atomic::Ordering::SeqCst);
    if let (true, Err(e)) = (started, &extracted) {
        return Err(Failure::msg(e.to_string()));
    }
    res.map_err(|e| fail(e, 1))?;
    let stats = extracted.map_err(|e| Failure::msg(e.to_string()))?;
    warn(&stats.warnings);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands() {
        assert_eq!(
            parse_loc("box:/etc/hostname").unwrap(),
            Loc::Container {
                name: "box",
                path: "/etc/hostname"
            }
        );
        assert_eq!(parse_loc("./a:b").unwrap(), Loc::Local("./a:b"));
        assert_eq!(parse_loc("/x/a:b").unwrap(), Loc::Local("/x/a:b"));
        assert_eq!(parse_loc("d/a:b").unwrap(), Loc::Local("d/a:b"));
        assert_eq!(parse_loc("-").unwrap(), Loc::Local("-"));
        assert_eq!(parse_loc("file").unwrap(), Loc::Local("file"));
        for bad in ["box:", ":/etc", ""] {
            assert!(parse_loc(bad).is_err(), "{bad}");
        }
    }
}
