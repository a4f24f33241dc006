//! `skiff-monitor`: the per-container monitor (conmon's role), a binary of its own so
//! that each running container costs only what the monitor needs — no async runtime, no
//! D-Bus, no registry or TLS code — rather than a re-executed skiffd.
//!
//! skiffd starts it as `skiff-monitor __monitor BUNDLE` (for a run, before the bundle is
//! written: see [`skiff::monitor::handoff`]; the same command line as its own
//! hidden `__monitor` helper, which it falls back to when this binary is not installed
//! next to it); everything else comes from the bundle and the descriptors skiffd passes
//! (see [`skiff::monitor`]).

use std::path::Path;

fn usage() -> ! {
    eprintln!(
        "skiff-monitor: skiffd's per-container monitor, not meant to be run by hand \
         (usage: skiff-monitor __monitor BUNDLE)"
    );
    std::process::exit(2)
}

fn main() {
    // As skiffd's helpers do: nothing we inherited beyond stdio reaches the container.
    if let Err(e) = skiff::fdutil::cloexec_from(3) {
        eprintln!("skiff-monitor: cannot mark inherited descriptors close-on-exec: {e}");
        std::process::exit(1);
    }
    let mut args = std::env::args_os().skip(1);
    let (Some(cmd), Some(bundle), None) = (args.next(), args.next(), args.next()) else {
        usage()
    };
    if cmd != "__monitor" {
        usage()
    }
    // Started before its bundle was written: waits for it (none coming: exit).
    if !skiff::monitor::handoff::wait_for_bundle() {
        std::process::exit(0)
    }
    // Single-threaded: the logger writes each line itself (to the daemon's log, fd 5).
    skiff::logging::init_helper(false);
    // Under a user manager: not before skiffd has put us in our own scope.
    skiff::daemon::scope::wait_at_gate();
    std::process::exit(skiff::monitor::main(Path::new(&bundle)))
}
