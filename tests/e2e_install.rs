//! scripts/install.sh into a temporary prefix, as the unprivileged user: the installed
//! unit and activation file name the installed skiffd, `systemd-analyze verify` accepts
//! the unit, and what the build made beside the binaries (generator, man pages,
//! completions) lands in its place.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{bin, require, stderr, stdout};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh");

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn install_into_a_prefix_writes_the_installed_paths() {
    let tmp = tempfile::tempdir().unwrap();
    // A build directory: the binaries, and what other parts of the build make.
    let build = tmp.path().join("build");
    std::fs::create_dir_all(build.join("man")).unwrap();
    std::fs::create_dir_all(build.join("completions")).unwrap();
    for b in ["skiff", "skiffd", "skiff-monitor"] {
        std::fs::copy(bin(b), build.join(b)).unwrap();
    }
    std::fs::write(build.join("skiff-systemd-generator"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        build.join("skiff-systemd-generator"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(build.join("man/skiff-run.1"), ".TH SKIFF-RUN 1\n").unwrap();
    std::fs::write(build.join("completions/_skiff"), "#compdef skiff\n").unwrap();
    std::fs::write(
        build.join("completions/skiff.bash"),
        "complete -F _skiff skiff\n",
    )
    .unwrap();

    let prefix = tmp.path().join("prefix");
    let out = Command::new(require("bash"))
        .arg(SCRIPT)
        .arg("--prefix")
        .arg(&prefix)
        .arg("--bin-dir")
        .arg(&build)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}{}",
        stdout(&out),
        stderr(&out)
    );

    let skiffd = prefix.join("bin/skiffd");
    let v = Command::new(&skiffd).arg("--version").output().unwrap();
    assert!(stdout(&v).starts_with("skiffd "), "{}", stdout(&v));
    assert!(prefix.join("bin/skiff").exists());
    assert!(prefix.join("bin/skiff-monitor").exists());

    let unit = prefix.join("lib/systemd/user/skiffd.service");
    let text = read(&unit);
    assert!(
        text.contains(&format!("\nExecStart={}\n", skiffd.display())),
        "{text}"
    );
    assert!(
        text.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"),
        "{text}"
    );
    // Every page Documentation= names was installed.
    let doc = text
        .lines()
        .find_map(|l| l.strip_prefix("Documentation="))
        .expect("a Documentation= line");
    for page in doc.split_whitespace() {
        let path = page.strip_prefix("file://").expect("a file:// page");
        assert!(
            path.starts_with(prefix.to_str().unwrap()) && Path::new(path).exists(),
            "{page}"
        );
    }
    let act = read(&prefix.join("share/dbus-1/services/org.skiff.skiff1.service"));
    assert!(
        act.contains(&format!("\nExec={}\n", skiffd.display())),
        "{act}"
    );
    assert!(act.contains("\nSystemdService=skiffd.service"), "{act}");

    let generator = prefix.join("lib/systemd/user-generators/skiff-systemd-generator");
    assert_eq!(
        std::fs::metadata(&generator).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(prefix.join("share/man/man1/skiff-run.1").exists());
    assert!(prefix.join("share/zsh/site-functions/_skiff").exists());
    assert!(prefix
        .join("share/bash-completion/completions/skiff")
        .exists());

    // systemd's own check of the installed unit (it fails on an ExecStart that is not
    // there: see below).
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if analyze.exists() {
        let rt = tmp.path().join("rt");
        std::fs::create_dir(&rt).unwrap();
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
        let verify = || {
            Command::new(analyze)
                .args(["verify", "--user", "--man=no"])
                .arg(&unit)
                .env("XDG_RUNTIME_DIR", &rt)
                .output()
                .unwrap()
        };
        let out = verify();
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}",
            stderr(&out)
        );
        std::fs::rename(&skiffd, prefix.join("bin/skiffd.moved")).unwrap();
        let out = verify();
        assert!(
            !out.status.success() && stderr(&out).contains("bin/skiffd"),
            "verify sees a missing ExecStart: {}",
            stderr(&out)
        );
    }
}

#[test]
fn install_refuses_a_relative_prefix_and_missing_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(require("bash"))
        .args([SCRIPT, "--prefix", "relative/dir"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("absolute path"), "{}", stderr(&out));
    let out = Command::new(require("bash"))
        .arg(SCRIPT)
        .arg("--prefix")
        .arg(tmp.path().join("p"))
        .arg("--bin-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cargo build --release"),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("p").exists(), "nothing installed");
}

#[test]
fn install_for_one_user_goes_under_home() {
    let home = tempfile::tempdir().unwrap();
    let build = home.path().join("build");
    std::fs::create_dir(&build).unwrap();
    for b in ["skiff", "skiffd", "skiff-systemd-generator"] {
        std::fs::copy(bin(b), build.join(b)).unwrap();
    }
    let out = Command::new(require("bash"))
        .arg(SCRIPT)
        .arg("--user")
        .arg("--bin-dir")
        .arg(&build)
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh --user: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let h = home.path();
    let skiffd = h.join(".local/bin/skiffd");
    assert!(skiffd.exists() && h.join(".local/bin/skiff").exists());
    // systemd reads no user generator directory under HOME: the generator goes beside
    // the binaries, and the one root command that links it in is printed.
    let generator = h.join(".local/bin/skiff-systemd-generator");
    assert!(generator.exists());
    assert!(!h.join(".config/systemd/user-generators").exists());
    assert!(
        stdout(&out).contains(&format!(
            "ln -s {} /etc/systemd/user-generators/",
            generator.display()
        )),
        "{}",
        stdout(&out)
    );
    let unit = read(&h.join(".config/systemd/user/skiffd.service"));
    assert!(
        unit.contains(&format!("\nExecStart={}\n", skiffd.display())),
        "{unit}"
    );
    let act = read(&h.join(".local/share/dbus-1/services/org.skiff.skiff1.service"));
    assert!(
        act.contains(&format!("\nExec={}\n", skiffd.display())),
        "{act}"
    );
    assert!(h.join(".local/share/doc/skiff/configuration.md").exists());
    assert!(
        stdout(&out).contains("systemctl --user daemon-reload"),
        "{}",
        stdout(&out)
    );
}
