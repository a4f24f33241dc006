//! skiffd's hidden helper subcommands, each a fresh single-threaded process (so it may
//! fork) that does work which must happen inside the user's user namespace:
//!
//! - `__unpack DEST`: extracts the layer tar on stdin into DEST as root of the
//!   namespace, so file owners land on the subordinate ids; prints the result as JSON.
//! - `__remove PATH...`: removes trees that hold files owned by subordinate ids, which
//!   the user cannot remove from outside.
//! - `__exec`: runs a process in a running container.
//! - `__commit`: writes a container's changes as an OCI layer tar on stdout (see
//!   [`crate::image::layer_diff`]).
//!
//! Each reads its spec (the id maps as JSON, or the exec's spec) from fd 4
//! ([`crate::fdutil::SPEC_FD`]), never from its command line or environment: those are
//! readable by every local user through /proc.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image::{self, UnpackOptions, UnpackStats};
use crate::runtime;
use crate::userns::IdMaps;

/// What `__unpack` prints on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnpackResult {
    /// The layer was extracted.
    Ok(UnpackStats),
    /// It was refused or failed; the message is for the user.
    Err(String),
}

/// The helper's spec from fd 4, decoded.
fn read_spec<T: serde::de::DeserializeOwned>(what: &str) -> Result<T, String> {
    let data = crate::fdutil::read_spec().map_err(|e| format!("reading the {what}: {e}"))?;
    serde_json::from_slice(&data).map_err(|e| format!("bad {what}: {e}"))
}

fn read_maps() -> Result<IdMaps, String> {
    read_spec("id maps")
}

/// `__unpack`: returns the process exit code.
pub fn unpack_main(dest: &Path) -> i32 {
    crate::phase::mark("unpack-helper-start");
    let result = read_maps().and_then(|maps| {
        let dest = dest.to_path_buf();
        runtime::run_in_userns(&maps, move || {
            let res = match UnpackOptions::from_env(|k| std::env::var(k).ok())
                .and_then(|opts| image::unpack_layer(std::io::stdin().lock(), &dest, &opts))
            {
                Ok(stats) => UnpackResult::Ok(stats),
                Err(e) => UnpackResult::Err(without_staging_paths(&e.to_string(), &dest)),
            };
            crate::phase::mark("unpack-done");
            let ok = matches!(res, UnpackResult::Ok(_));
            let mut out = std::io::stdout().lock();
            let printed = serde_json::to_writer(&mut out, &res).is_ok() && out.flush().is_ok();
            if ok && printed {
                0
            } else {
                1
            }
        })
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(code) => code,
        Err(msg) => {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut out, &UnpackResult::Err(msg));
            let _ = out.flush();
            1
        }
    }
}

/// `msg` with the paths inside the extraction directory `dest` made relative to it (the
/// staging directory is skiff's business; the user knows the layer's entry names).
pub fn without_staging_paths(msg: &str, dest: &Path) -> String {
    let mut out = msg.to_string();
    let mut prefixes = vec![dest.to_path_buf()];
    if let Some(parent) = dest.parent() {
        prefixes.push(parent.to_path_buf());
    }
    for p in prefixes {
        let p = p.display().to_string();
        if p.len() > 1 {
            out = out.replace(&format!("{p}/"), "").replace(&p, ".");
        }
    }
    out
}

/// `__remove`: returns the process exit code; failures are printed on stderr.
pub fn remove_main(paths: &[PathBuf]) -> i32 {
    let maps = match read_maps() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let paths = paths.to_vec();
    match runtime::run_in_userns(&maps, move || {
        let mut code = 0;
        for p in &paths {
            match std::fs::remove_dir_all(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    eprintln!("remove {}: {e}", p.display());
                    code = 1;
                }
            }
        }
        code
    }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `__exec`: runs a process in a running container (see `runtime::join`) by the spec
/// on fd 4, reports `Started`/`Failed`/`Exited` on the status pipe (fd 3) like the
/// monitor, and exits with the process's exit code.
pub fn exec_main() -> i32 {
    let mut pipe = crate::monitor::StatusPipe::open();
    let spec: runtime::join::JoinSpec = match read_spec("exec spec") {
        Ok(s) => s,
        Err(message) => {
            pipe.send(&crate::monitor::Status::Failed { code: 125, message });
            return 125;
        }
    };
    let code = match runtime::join::spawn(&spec) {
        Ok(joined) => {
            if let Some((master, path)) = joined.pty {
                // With a tty, our stdin is a SEQPACKET socket to skiffd: the master goes
                // there (before `Started`, so skiffd finds it queued).
                // SAFETY: fd 0 is ours; nothing else in this process uses it.
                let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(0) };
                let chan = runtime::sync::Channel::from_fd(sock);
                let msg = runtime::sync::Msg::Pty(path);
                if let Err(e) = chan.send_fd(&msg, std::os::fd::AsFd::as_fd(&master)) {
                    tracing::warn!("handing the pty to skiffd: {e}");
                }
            }
            let pid = joined.pid;
            pipe.send(&crate::monitor::Status::Started { pid: pid.as_raw() });
            runtime::wait_exit_code(pid).unwrap_or(125)
        }
        Err(e) => {
            let code = e.exit_code();
            pipe.send(&crate::monitor::Status::Failed {
                code,
                message: e.to_string(),
            });
            code
        }
    };
    pipe.send(&crate::monitor::Status::Exited { code });
    code
}

/// The `__commit` helper's spec (on its fd 4).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitSpec {
    /// The id maps the container's files are stored under (the daemon's).
    pub maps: IdMaps,
    /// The container's writable layer (an overlay upper directory, or the vfs copy).
    pub upper: PathBuf,
    /// With the vfs driver, the image's layer trees (top first) the copy is compared
    /// with; empty for the overlay drivers.
    pub vfs_lower: Option<Vec<PathBuf>>,
    /// vfs with `--userns keep-id` (`maps` are then the container's): how the layers'
    /// owners show in the container, for the comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remap: Option<crate::userns::keepid::IdRemap>,
}

/// `__commit`: returns the process exit code; failures are printed on stderr.
pub fn commit_main() -> i32 {
    let spec: CommitSpec = match read_spec("commit spec") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let maps = spec.maps.clone();
    match runtime::run_in_userns(&maps, move || {
        crate::cp::stream::block_sigpipe();
        let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let written = match &spec.vfs_lower {
            Some(lower) => {
                image::layer_diff::write_vfs_diff(out, &spec.upper, lower, spec.remap.as_ref())
            }
            // The upper directory becomes our root: a running container that swaps a
            // file or directory for a symlink while it is read cannot lead us out of it.
            None => match nix::unistd::chroot(&spec.upper).and_then(|()| nix::unistd::chdir("/")) {
                Ok(()) => image::layer_diff::write_upper(out, std::path::Path::new("/")),
                Err(e) => Err(image::Error::io(
                    "entering the container's upper directory",
                    e.into(),
                )),
            },
        };
        match written.and_then(|mut w| {
            w.flush()
                .map_err(|e| image::Error::io("writing the layer", e))
        }) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{}", without_staging_paths(&e.to_string(), &spec.upper));
                1
            }
        }
    }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
