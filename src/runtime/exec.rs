//! Finding and executing the container's command, with docker's exit codes for failures:
//! 127 when the command does not exist, 126 when it cannot be executed.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Exit code for a failure of skiff itself before the command ran (docker's 125).
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit code for a command that exists but cannot be executed (docker's 126).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code for a command that does not exist (docker's 127).
pub const EXIT_NOT_FOUND: i32 = 127;

/// The default `PATH` when the container's environment has none (docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the command could not be started: an exit code and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFailure {
    /// 126 or 127 (or 125 for malformed arguments).
    pub code: i32,
    /// A docker-style message, e.g. `exec: "foo": executable file not found in $PATH`.
    pub message: String,
}

/// The `PATH` value of an environment list (`K=V` strings), if any.
pub fn path_of_env(env: &[String]) -> Option<&str> {
    env.iter().find_map(|kv| kv.strip_prefix("PATH="))
}

/// Resolves `cmd` the way execvp does, but against the container's `PATH` and filesystem:
/// a name with a `/` is used as it is; otherwise each `PATH` entry is tried in turn.
/// `exists` abstracts the filesystem so the logic can be tested.
pub fn resolve(
    cmd: &str,
    path_var: &str,
    is_executable_file: impl Fn(&Path) -> bool,
) -> Result<PathBuf, ExecFailure> {
    if cmd.is_empty() {
        return Err(ExecFailure {
            code: EXIT_NOT_FOUND,
            message: "exec: \"\": executable file not found in $PATH".into(),
        });
    }
    if cmd.contains('/') {
        return Ok(PathBuf::from(cmd));
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(cmd);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(ExecFailure {
        code: EXIT_NOT_FOUND,
        message: format!("exec: \"{cmd}\": executable file not found in $PATH"),
    })
}

/// Is `p` a regular file with an execute bit? (Used by [`resolve`] inside the container.)
pub fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Maps an `execve` error to docker's exit code and message.
pub fn classify(path: &Path, errno: Errno) -> ExecFailure {
    let shown = path.display();
    match errno {
        Errno::ENOENT | Errno::ENOTDIR => ExecFailure {
            code: EXIT_NOT_FOUND,
            message: format!("exec: \"{shown}\": no such file or directory"),
        },
        Errno::EACCES | Errno::EPERM | Errno::EISDIR => ExecFailure {
            code: EXIT_NOT_EXECUTABLE,
            message: format!("exec: \"{shown}\": permission denied"),
        },
        Errno::ENOEXEC => ExecFailure {
            code: EXIT_NOT_EXECUTABLE,
            message: format!("exec: \"{shown}\": exec format error"),
        },
        other => ExecFailure {
            code: EXIT_NOT_EXECUTABLE,
            message: format!("exec: \"{shown}\": {}", other.desc()),
        },
    }
}

/// Converts strings to C strings, refusing interior NUL bytes.
pub fn cstrings<S: AsRef<[u8]>>(items: &[S]) -> Result<Vec<CString>, ExecFailure> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_ref()).map_err(|_| ExecFailure {
                code: EXIT_SETUP_FAILED,
                message: "argument or environment contains a NUL byte".into(),
            })
        })
        .collect()
}

/// Resolves and executes the command with only fds 0-2; returns only on failure.
pub fn exec(args: &[String], env: &[String]) -> ExecFailure {
    let Some(cmd) = args.first() else {
        return ExecFailure {
            code: EXIT_SETUP_FAILED,
            message: "no command specified".into(),
        };
    };
    let path_var = path_of_env(env).unwrap_or(DEFAULT_PATH);
    let path = match resolve(cmd, path_var, is_executable_file) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let (c_path, c_args, c_env) = match (
        CString::new(path.as_os_str().as_bytes()),
        cstrings(args),
        cstrings(env),
    ) {
        (Ok(p), Ok(a), Ok(e)) => (p, a, e),
        (Err(_), _, _) => {
            return ExecFailure {
                code: EXIT_SETUP_FAILED,
                message: "command path contains a NUL byte".into(),
            }
        }
        (_, Err(f), _) | (_, _, Err(f)) => return f,
    };
    // The command gets exactly fds 0-2: whatever else this process holds (the sync
    // channel, anything inherited) closes with the exec, as runc does since
    // CVE-2024-21626.
    if let Err(e) = crate::fdutil::cloexec_from(3) {
        return ExecFailure {
            code: EXIT_SETUP_FAILED,
            message: format!("marking descriptors close-on-exec: {e}"),
        };
    }
    match nix::unistd::execve(&c_path, &c_args, &c_env) {
        Err(errno) => classify(&path, errno),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_searches_path_in_order() {
        let exists = |p: &Path| p == Path::new("/usr/bin/ls") || p == Path::new("/bin/ls");
        assert_eq!(
            resolve("ls", "/usr/local/bin:/usr/bin:/bin", exists).unwrap(),
            PathBuf::from("/usr/bin/ls")
        );
    }

    #[test]
    fn resolve_keeps_paths_with_slash_and_reports_missing() {
        assert_eq!(
            resolve("./x", "/bin", |_| false).unwrap(),
            PathBuf::from("./x")
        );
        let f = resolve("nosuch", "/bin:/usr/bin", |_| false).unwrap_err();
        assert_eq!(f.code, EXIT_NOT_FOUND);
        assert!(f
            .message
            .contains("\"nosuch\": executable file not found in $PATH"));
    }

    #[test]
    fn classify_maps_errno_to_docker_codes() {
        assert_eq!(classify(Path::new("/x"), Errno::ENOENT).code, 127);
        assert_eq!(classify(Path::new("/x"), Errno::EACCES).code, 126);
        assert_eq!(classify(Path::new("/x"), Errno::ENOEXEC).code, 126);
    }

    #[test]
    fn env_path_lookup() {
        let env = vec!["A=1".to_string(), "PATH=/opt/bin".to_string()];
        assert_eq!(path_of_env(&env), Some("/opt/bin"));
        assert_eq!(path_of_env(&[]), None);
    }

    #[test]
    fn nul_bytes_are_refused() {
        assert_eq!(cstrings(&["a\0b"]).unwrap_err().code, EXIT_SETUP_FAILED);
    }
}
