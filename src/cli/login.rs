//! `skiff login` and `skiff logout`: the credentials of a registry in the auth file
//! that pulls and pushes read (podman's `$XDG_RUNTIME_DIR/containers/auth.json`, or
//! `$REGISTRY_AUTH_FILE`, or `--authfile`). They need no daemon.
//!
//! The password never travels on a command line: it comes from `--password-stdin` or
//! a prompt on the terminal with echo off. It is checked against the registry before
//! it is stored.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use clap::Args;
use nix::sys::termios::{self, LocalFlags, SetArg};

use super::output::{errln, outln};
use super::Failure;
use crate::image::registry::login;

/// The flags of `skiff login`.
#[derive(Debug, Args, Clone)]
pub struct LoginArgs {
    /// User name (prompted for on a terminal when not given).
    #[arg(short = 'u', long = "username")]
    pub username: Option<String>,
    /// Read the password from stdin (one line; a trailing newline is dropped).
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Auth file to write (default: $REGISTRY_AUTH_FILE, else
    /// $XDG_RUNTIME_DIR/containers/auth.json).
    #[arg(long = "authfile", value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Verify TLS certificates; =false also allows plain HTTP to the registry.
    #[arg(long = "tls-verify", value_name = "BOOL", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub tls_verify: bool,
    /// The registry: HOST[:PORT] (default docker.io).
    pub registry: Option<String>,
}

/// The flags of `skiff logout`.
#[derive(Debug, Args, Clone)]
pub struct LogoutArgs {
    /// Remove the credentials of every registry.
    #[arg(short = 'a', long = "all", conflicts_with = "registry")]
    pub all: bool,
    /// Auth file to change (default: as for login).
    #[arg(long = "authfile", value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// The registry: HOST[:PORT] (default docker.io).
    pub registry: Option<String>,
}

fn failure(e: impl std::fmt::Display) -> Failure {
    Failure::msg(e.to_string())
}

/// Reads one line from the terminal, with echo off when `secret`. `None` without a
/// controlling terminal.
fn prompt(label: &str, secret: bool) -> Result<Option<String>, Failure> {
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return Ok(None);
    };
    let mut out = &tty;
    let _ = write!(out, "{label}");
    let _ = out.flush();
    let saved = if secret {
        let saved = termios::tcgetattr(tty.as_fd())
            .map_err(|e| Failure::msg(format!("cannot read the terminal's settings: {e}")))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        termios::tcsetattr(tty.as_fd(), SetArg::TCSAFLUSH, &quiet)
            .map_err(|e| Failure::msg(format!("cannot turn the terminal's echo off: {e}")))?;
        Some(saved)
    } else {
        None
    };
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if let Some(saved) = saved {
        let _ = termios::tcsetattr(tty.as_fd(), SetArg::TCSAFLUSH, &saved);
    }
    read.map_err(|e| Failure::msg(format!("reading the terminal: {e}")))?;
    Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
}

/// `skiff login [-u USER] [--password-stdin] [--authfile F] [REGISTRY]`.
pub async fn login(args: &LoginArgs) -> Result<i32, Failure> {
    let registry =
        login::registry_key(args.registry.as_deref().unwrap_or("docker.io")).map_err(failure)?;
    let path = login::login_file(args.authfile.as_deref()).map_err(failure)?;
    let username = match &args.username {
        Some(u) => u.clone(),
        None if args.password_stdin => {
            return Err(Failure::msg(
                "--password-stdin needs the user name: pass -u USER",
            ))
        }
        None => prompt("Username: ", false)?
            .ok_or_else(|| Failure::msg("no terminal to ask for the user name: pass -u USER"))?,
    };
    if username.is_empty() || username.contains(':') {
        return Err(Failure::msg(
            "the user name must not be empty or contain ':'",
        ));
    }
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::msg(format!("reading the password from stdin: {e}")))?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else {
        prompt("Password: ", true)?.ok_or_else(|| {
            Failure::msg("no terminal to ask for the password: pipe it in with --password-stdin")
        })?
    };
    if password.is_empty() {
        return Err(Failure::msg("the password is empty"));
    }
    login::verify(&registry, &username, &password, args.tls_verify)
        .await
        .map_err(failure)?;
    login::store(&path, &registry, &username, &password).map_err(failure)?;
    errln!("Credentials stored in {}", path.display());
    outln!("Login Succeeded!");
    Ok(0)
}

/// `skiff logout [--all | REGISTRY] [--authfile F]`.
pub fn logout(args: &LogoutArgs) -> Result<i32, Failure> {
    let path = login::login_file(args.authfile.as_deref()).map_err(failure)?;
    if args.all {
        login::remove(&path, None).map_err(failure)?;
        outln!("Removed login credentials for all registries");
        return Ok(0);
    }
    let registry =
        login::registry_key(args.registry.as_deref().unwrap_or("docker.io")).map_err(failure)?;
    if login::remove(&path, Some(&registry)).map_err(failure)? == 0 {
        return Err(Failure::msg(format!(
            "not logged into {registry} (no entry in {})",
            path.display()
        )));
    }
    outln!("Removed login credentials for {registry}");
    Ok(0)
}
