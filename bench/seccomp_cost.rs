//! bench/seccomp_cost.rs: what each step of the default seccomp profile costs a start,
//! measured in-process (`cargo run --release --example seccomp_cost`), so that the
//! figures do not drown in the noise of a whole `skiff run`.
//!
//! Per start, skiffd resolves the profile against the container's capabilities and
//! writes it into config.json; the monitor (and each exec) reads it back, finds the
//! compiled program in the cache by the digest of its JSON, and init loads it. This
//! times each of those, the first (uncached) compile, and the filter's cost per system
//! call (getppid in a loop, with and without the filter, in forked children).

use std::time::{Duration, Instant};

use skiff::daemon::seccomp_profile::Profile;
use skiff::daemon::security::default_caps;
use skiff::runtime::seccomp;

fn per_iter(n: u32, mut f: impl FnMut()) -> Duration {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

/// ns per getppid in a forked child, after loading `filter` (None: no filter).
fn syscall_ns(filter: Option<&seccomp::Filter>) -> f64 {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child makes raw system calls only and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => {
            if let Some(f) = filter {
                // SAFETY: prctl on integers.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                seccomp::load(f).expect("load the filter");
            }
            let n = 2_000_000u32;
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: getppid has no arguments and no side effects.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            let ns = (t.elapsed().as_nanos() as f64 / n as f64)
                .to_bits()
                .to_le_bytes();
            // SAFETY: writes 8 bytes from our stack to our pipe, then exits.
            unsafe {
                libc::write(fds[1], ns.as_ptr().cast(), 8);
                libc::_exit(0)
            }
        }
        pid => {
            let mut b = [0u8; 8];
            // SAFETY: reads 8 bytes into `b`; waits for our own child.
            unsafe {
                libc::read(fds[0], b.as_mut_ptr().cast(), 8);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            f64::from_bits(u64::from_le_bytes(b))
        }
    }
}

fn main() {
    let t = Instant::now();
    let profile = Profile::default_profile();
    println!(
        "parse the default profile (once per skiffd):   {:>9.1?}",
        t.elapsed()
    );
    let caps = default_caps();
    let oci = profile.to_oci(caps).expect("resolve");
    println!(
        "resolve it for docker's capabilities:         {:>9.1?}",
        per_iter(200, || drop(profile.to_oci(caps)))
    );
    let json = serde_json::to_vec(&oci).expect("json");
    println!(
        "its JSON in config.json: {} bytes; write+read: {:>9.1?}",
        json.len(),
        per_iter(200, || {
            let v = serde_json::to_vec(&oci).unwrap_or_default();
            let _: Option<oci_spec::runtime::LinuxSeccomp> = serde_json::from_slice(&v).ok();
        })
    );
    let f = seccomp::compile(&oci).expect("compile");
    println!(
        "compile to BPF (uncached, {} instructions):  {:>9.1?}",
        f.program.len(),
        per_iter(200, || drop(seccomp::compile(&oci)))
    );
    let dir = tempfile::tempdir().expect("tempdir");
    seccomp::compile_cached(&oci, Some(dir.path())).expect("cache");
    println!(
        "find it in the cache (digest + read):          {:>9.1?}",
        per_iter(200, || drop(seccomp::compile_cached(
            &oci,
            Some(dir.path())
        )))
    );
    let bare = syscall_ns(None);
    let filtered = syscall_ns(Some(&f));
    println!("getppid: {bare:.0} ns unfiltered, {filtered:.0} ns with the default filter");
}
