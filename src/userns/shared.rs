//! The shared user namespace: podman's pause process, kept by skiffd as a descriptor.
//!
//! Every container with the default mapping (`--userns` not given) runs in one user
//! namespace per skiffd, made once with newuidmap/newgidmap, instead of a namespace of
//! its own whose maps cost two setuid helper runs per start. The containers still get
//! their own mount, pid, ipc, uts, network (and cgroup) namespaces.
//!
//! * skiffd runs its hidden helper `__userns` ([`holder_main`]): it unshares a user
//!   namespace, says so on stdout and waits for its stdin to close. skiffd opens the
//!   helper's `/proc/PID/ns/user`, writes the maps, then closes the helper's stdin: the
//!   helper exits and skiffd's descriptor keeps the namespace. No process holds it, so
//!   there is nothing a container could signal or trace, and nothing to leak.
//! * skiffd passes a copy of the descriptor to each monitor on [`USERNS_FD`]; the
//!   monitor's first child joins it ([`crate::runtime::nsproc::fork_joining_userns`])
//!   and closes it before anything else runs.
//! * A running container keeps the namespace alive through its processes, whatever
//!   happens to skiffd; a new skiffd makes a new one at its first start.
//!
//! Helpers that join a running container (exec, cp, commit, slirp4netns, pasta) do so by
//! the container's pid, so they join the shared namespace as they joined a private one.

use std::io::{Read, Write};
use std::os::fd::RawFd;

use nix::sched::{unshare, CloneFlags};

/// The descriptor number on which a monitor gets the shared user namespace.
pub const USERNS_FD: RawFd = 7;

/// The `userns` value that asks for a namespace of the container's own, with the
/// default mapping.
pub const PRIVATE: &str = "private";

/// Whether a container with this `userns` setting joins the shared namespace: only the
/// default mapping does (keep-id and `private` get namespaces of their own).
pub fn shares(userns: Option<&str>) -> bool {
    matches!(userns, None | Some(""))
}

/// `skiffd __userns`: unshares a user namespace, writes one byte to stdout, then waits
/// until stdin is closed (skiffd has opened the namespace and written its maps).
/// Returns the exit code.
pub fn holder_main() -> i32 {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        tracing::error!("unshare(CLONE_NEWUSER): {e}");
        eprintln!("unshare(CLONE_NEWUSER): {e}");
        return 1;
    }
    tracing::debug!("user namespace made, waiting for its maps");
    let mut out = std::io::stdout();
    if out.write_all(b"u").and_then(|()| out.flush()).is_err() {
        return 1;
    }
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_default_mapping_shares() {
        assert!(shares(None));
        assert!(shares(Some("")));
        assert!(!shares(Some("keep-id")));
        assert!(!shares(Some(PRIVATE)));
    }
}
