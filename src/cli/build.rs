//! `skiff build [-t NAME]... [-f FILE] [--build-arg NAME[=VALUE]]... [--target STAGE]
//! [--no-cache] [-q] CONTEXT|-`: the context directory is streamed to skiffd as a tar
//! over a pipe (symlinks as links, without what `.dockerignore` excludes:
//! [`super::build_context`]), or a tar on stdin is passed as it is; skiffd's
//! progress is copied to stdout; Ctrl-C cancels the build.

use std::collections::HashMap;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use zbus::{Connection, OwnedVariant, Variant};

use super::connect::fail;
use super::output::{errln, outln};
use super::Failure;

/// The flags and operands of `skiff build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Name the image (NAME[:TAG]); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; for a context on stdin, the
    /// tar's Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,
    /// A build argument (NAME=VALUE, or NAME to take the value from the environment).
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    pub build_args: Vec<String>,
    /// Stop at this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Print only the image id.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The context directory, or - for a tar on stdin.
    pub context: String,
}

fn opt<T: Into<Variant<'static>>>(v: T) -> Result<OwnedVariant, Failure> {
    OwnedVariant::try_from(v.into()).map_err(|e| Failure::msg(e.to_string()))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Failure> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Failure::msg(format!("pipe: {e}")))
}

/// `skiff build`.
pub async fn build(conn: &Connection, args: &BuildArgs) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let mut options: HashMap<&str, OwnedVariant> = HashMap::new();
    let from_stdin = args.context == "-";
    if !from_stdin && !Path::new(&args.context).is_dir() {
        return Err(Failure::msg(format!(
            "the build context {:?} is not a directory: give a directory, or - for a tar \
             on stdin",
            args.context
        )));
    }
    let dockerfile = match (&args.file, from_stdin) {
        (Some(f), _) => Some(f.clone()),
        (None, false) => Some(format!("{}/Dockerfile", args.context.trim_end_matches('/'))),
        (None, true) => None,
    };
    if let Some(f) = &dockerfile {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Failure::msg(format!("reading the Dockerfile {f}: {e}")))?;
        options.insert("dockerfile", opt(text)?);
        options.insert("dockerfile-name", opt(f.clone())?);
    }
    if !args.tags.is_empty() {
        options.insert("tags", opt(args.tags.clone())?);
    }
    let mut build_args = Vec::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some(_) => build_args.push(a.clone()),
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.push(format!("{a}={v}"));
                }
            }
        }
    }
    if !build_args.is_empty() {
        options.insert("build-args", opt(build_args)?);
    }
    if let Some(t) = &args.target {
        options.insert("target", opt(t.clone())?);
    }
    if args.no_cache {
        options.insert("no-cache", opt(true)?);
    }
    // The context: stdin as it is, or a tar of the directory written by a thread.
    let stdin = std::io::stdin();
    let (ctx_fd, writer): (
        OwnedFd,
        Option<std::thread::JoinHandle<std::io::Result<()>>>,
    ) = if from_stdin {
        if stdin.is_terminal() {
            return Err(Failure::msg(
                "the context is a tar on stdin (-), but stdin is a terminal: pipe one in",
            ));
        }
        let fd = stdin
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Failure::msg(format!("stdin: {e}")))?;
        (fd, None)
    } else {
        let (r, w) = pipe()?;
        let dir = args.context.clone();
        let h = std::thread::spawn(move || {
            crate::cp::stream::block_sigpipe();
            super::build_context::write_context(Path::new(&dir), File::from(w))
        });
        (r, Some(h))
    };
    let (out_r, out_w) = pipe()?;
    let quiet = args.quiet;
    let printer = std::thread::spawn(move || {
        let mut r = File::from(out_r);
        let mut buf = vec![0u8; 1 << 14];
        let stdout = std::io::stdout();
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if !quiet => {
                    let mut o = stdout.lock();
                    if o.write_all(&buf[..n]).and_then(|()| o.flush()).is_err() {
                        // A closed stdout: keep draining so the build goes on.
                    }
                }
                Ok(_) => {}
            }
        }
    });
    let called = mgr
        .build_image(ctx_fd.as_fd().into(), out_w.as_fd().into(), options)
        .await;
    drop(ctx_fd);
    drop(out_w);
    let (_, job_path) = called.map_err(|e| fail(e, 1))?;
    let job = super::progress::job_proxy(conn, &job_path).await?;
    let ended = tokio::select! {
        r = job.wait() => r.map_err(|e| fail(e, 1))?,
        _ = tokio::signal::ctrl_c() => {
            let _ = job.cancel().await;
            job.wait().await.map_err(|e| fail(e, 1))?
        }
    };
    let _ = printer.join();
    if let Some(w) = writer {
        if let Ok(Err(e)) = w.join() {
            if ended.0 != "done" {
                errln!("skiff: writing the build context: {e}");
            }
        }
    }
    match ended.0.as_str() {
        "done" => {
            outln!("{}", ended.1);
            Ok(0)
        }
        "cancelled" => Err(Failure::msg("the build was cancelled")),
        _ => Err(Failure::msg(ended.1)),
    }
}
