//! Builds `skiff-init` (src/pid1/main.rs), the init `--init` bind-mounts into containers,
//! as a static executable: container images need not have a C library, and Cargo cannot
//! link one binary of a crate statically and the others not. skiffd embeds the result.
//! `sdnotify-send` (tests/sdnotify_support) is built the same way for the tests.

use std::path::PathBuf;
use std::process::Command;

/// Tells the crate its git commit and rustc version (`skiff version`), as
/// `SKIFF_GIT_COMMIT` and `SKIFF_RUSTC_VERSION` ("unknown" when git or the source's
/// `.git` is missing). Reruns when the commit changes.
fn build_facts() {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    if commit.is_some() {
        // A missing file would make cargo rerun this every build.
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
            if let Some(p) = git(&["rev-parse", "--git-path", name]) {
                if std::path::Path::new(&p).exists() {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
        }
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    println!(
        "cargo:rustc-env=SKIFF_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    println!(
        "cargo:rustc-env=SKIFF_RUSTC_VERSION={}",
        version.as_deref().unwrap_or("unknown")
    );
}

fn main() {
    build_facts();
    println!("cargo:rerun-if-changed=build.rs");
    // skiff-monitor stays a PIE like every other binary, although its relocated
    // .data.rel.ro/.got cost ~300 KiB of private memory per container: it (and its
    // fork, the FUSE server) reads input from the container, and -no-pie would give up
    // the randomised address of its own code (docs/benchmarks.md, session 6).
    static_bin("src/pid1/main.rs", "skiff_init", "skiff-init");
    // For the tests only (embedded by tests/e2e_units.rs): a process in a container that
    // sends READY=1 to $NOTIFY_SOCKET.
    static_bin(
        "tests/sdnotify_support/notify.rs",
        "sdnotify_send",
        "sdnotify-send",
    );
}

/// Builds `src` into `$OUT_DIR/name` as a static executable.
fn static_bin(src: &str, crate_name: &str, name: &str) {
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let bin = out.join(name);
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            crate_name,
            "--crate-type",
            "bin",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "target-feature=+crt-static", "-C", "debuginfo=0"])
        .arg("-o")
        .arg(&bin)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("running rustc for {name}: {e}"));
    assert!(status.success(), "building {name} (static) failed");
}
