//! Builds `skiff-init` (src/pid1/main.rs), the init `--init` bind-mounts into containers,
//! as a static executable: container images need not have a C library, and Cargo cannot
//! link one binary of a crate statically and the others not. skiffd embeds the result.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/pid1/main.rs";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let bin = out.join("skiff-init");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "skiff_init",
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
        .expect("running rustc for skiff-init");
    assert!(status.success(), "building skiff-init (static) failed");
}
