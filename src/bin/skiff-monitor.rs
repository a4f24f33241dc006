//! `skiff-monitor`: the per-container monitor (conmon's role), a binary of its own so
//! that each running container costs only what the monitor needs — no async runtime, no
//! D-Bus, no registry or TLS code — rather than a re-executed skiffd.
//!
//! skiffd starts it as `skiff-monitor __zygote` once (see [`skiff::monitor::zygote`]),
//! and forks each monitor from that zygote with the command line
//! `skiff-monitor __monitor BUNDLE`; when the zygote cannot serve, it execs
//! `skiff-monitor __monitor BUNDLE` itself (for a run, before the bundle is written: see
//! [`skiff::monitor::handoff`]; the same command line as its own hidden `__monitor`
//! helper, which it falls back to when this binary is not installed next to it);
//! everything else comes from the bundle and the descriptors skiffd passes (see
//! [`skiff::monitor`]). skiffd also runs the shared network's holder from it
//! (`skiff-monitor __netns DIR`, see [`skiff::netns::shared`]).

use std::ffi::OsString;
use std::path::Path;

fn usage() -> ! {
    eprintln!(
        "skiff-monitor: skiffd's per-container monitor, not meant to be run by hand \
         (usage: skiff-monitor __monitor BUNDLE)"
    );
    std::process::exit(2)
}

/// The monitor's entry, exec'd or forked by the zygote: `args` after argv\[0\].
fn monitor(args: Vec<OsString>) -> i32 {
    // As skiffd's helpers do: nothing we inherited beyond stdio reaches the container.
    if let Err(e) = skiff::fdutil::cloexec_from(3) {
        eprintln!("skiff-monitor: cannot mark inherited descriptors close-on-exec: {e}");
        return 1;
    }
    let [cmd, bundle] = <[OsString; 2]>::try_from(args).unwrap_or_else(|_| usage());
    if cmd != "__monitor" {
        usage()
    }
    // Started before its bundle was written: waits for it (none coming: exit).
    if !skiff::monitor::handoff::wait_for_bundle() {
        return 0;
    }
    // Single-threaded: the logger writes each line itself (to the daemon's log, fd 5).
    skiff::logging::init_helper(false);
    // Under a user manager: not before skiffd has put us in our own scope.
    skiff::daemon::scope::wait_at_gate();
    skiff::monitor::main(Path::new(&bundle))
}

/// `skiff-monitor __netns DIR`: the shared network's holder (see
/// [`skiff::netns::shared`]), run from this binary rather than skiffd when it is
/// installed: it lives as long as the containers on that network, and this binary's
/// pages are mostly those the monitors already share.
fn netns_holder(dir: &OsString) -> i32 {
    if let Err(e) = skiff::fdutil::cloexec_from(3) {
        eprintln!("skiff-monitor: cannot mark inherited descriptors close-on-exec: {e}");
        return 1;
    }
    skiff::logging::init_helper(false);
    // Under a user manager: not before skiffd has put us in our own scope.
    skiff::daemon::scope::wait_at_gate();
    skiff::netns::shared::holder_main(Path::new(dir))
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if let [cmd, dir] = args.as_slice() {
        if cmd == skiff::netns::shared::HOLDER_ARG {
            std::process::exit(netns_holder(dir))
        }
    }
    if args
        .first()
        .is_some_and(|a| a == skiff::monitor::zygote::ZYGOTE_ARG)
    {
        match skiff::monitor::zygote::serve(monitor) {
            2 => usage(),
            code => std::process::exit(code),
        }
    }
    std::process::exit(monitor(args))
}
