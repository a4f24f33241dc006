//! `network = "auto"`: the default network of new containers is pasta where it is
//! installed and can connect a namespace on this host, else slirp4netns (podman 5 made
//! pasta its default; skiff's default stays slirp4netns, see docs/configuration.md). pasta's
//! published ports keep a remote client's address and splice local clients' data, at
//! several times slirp4netns's `add_hostfwd` throughput; slirp4netns stays the fallback
//! and the mode on request. The choice is made once per skiffd by a trial run of pasta
//! ([`choose_default`]); a container whose default pasta still fails to start falls
//! back to slirp4netns in the monitor (see [`super::connect`]).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{pasta, Mode};

/// How long the trial run of pasta may take.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// `name`'s path in `$PATH`, if it is there and executable.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The mode for containers that name none, and why (for `skiff info`, `inspect` and
/// skiffd's log).
pub fn choose_default() -> (Mode, String) {
    if find_in_path("pasta").is_none() {
        return (
            Mode::Slirp4netns,
            "slirp4netns: pasta is not installed (Debian: the passt package), so the \
             default is slirp4netns"
                .into(),
        );
    }
    match trial() {
        Ok(()) => (
            Mode::Pasta,
            "pasta: installed and able to connect a namespace on this host (published \
             ports keep the client's address, at near loopback speed)"
                .into(),
        ),
        Err(why) => (
            Mode::Slirp4netns,
            format!("slirp4netns: pasta cannot connect a namespace on this host ({why})"),
        ),
    }
}

/// Runs `pasta ... -- true` with the options a container gets: pasta makes a user and
/// network namespace of its own, configures it as it would a container's, and runs
/// `true` in it. Err: why it failed (e.g. no interface with a default route).
fn trial() -> Result<(), String> {
    let mut args = pasta::base_args();
    args.extend(
        [
            "--no-map-gw",
            "-T",
            "none",
            "-U",
            "none",
            "-t",
            "none",
            "-u",
            "none",
        ]
        .map(String::from),
    );
    args.extend(["--", "true"].map(String::from));
    let out_path = std::env::temp_dir().join(format!("skiff-pasta-trial-{}", std::process::id()));
    let out = std::fs::File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()));
    let mut cmd = Command::new("pasta");
    cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null());
    match &out {
        Ok(f) => match f.try_clone() {
            Ok(f) => cmd.stderr(f),
            Err(_) => cmd.stderr(Stdio::null()),
        },
        Err(_) => cmd.stderr(Stdio::null()),
    };
    let started = cmd.spawn();
    let result = match started {
        Err(e) => Err(format!("cannot run pasta: {e}")),
        Ok(mut child) => {
            let deadline = Instant::now() + TRIAL_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(s)) if s.success() => break Ok(()),
                    Ok(Some(s)) => {
                        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
                        let why = pasta::stderr_summary(&text);
                        break Err(if why.is_empty() {
                            format!("pasta exited with {s}")
                        } else {
                            format!("pasta: {why}")
                        });
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(format!(
                            "pasta did not finish a trial run in {} s",
                            TRIAL_TIMEOUT.as_secs()
                        ));
                    }
                    Err(e) => break Err(format!("waiting for pasta: {e}")),
                }
            }
        }
    };
    let _ = std::fs::remove_file(&out_path);
    result
}
