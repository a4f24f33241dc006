//! The FUSE overlay (`skiffd __fuse-mount`) against the kernel's overlayfs, continued
//! from fuse_overlay.rs: `security.capability` on lower files, whiteouts and opaque
//! directories in kernel and OCI form, and `mv` of lower directories.

mod fuse_support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fuse_support::ops::{mknod, setxattr, sys, xattrs_raw};
use fuse_support::{in_userns, mount_kernel, umount, Fuse};

/// A `security.capability` blob (revision 2, effective, CAP_NET_RAW permitted), as
/// `setcap cap_net_raw+ep` writes it.
fn cap_blob() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    v.extend_from_slice(&(1u32 << 13).to_le_bytes()); // CAP_NET_RAW
    v.extend_from_slice(&[0u8; 12]);
    v
}

fn hex(v: Option<Vec<u8>>) -> String {
    match v {
        Some(v) => v.iter().map(|b| format!("{b:02x}")).collect(),
        None => "none".into(),
    }
}

/// Layers with whiteouts and an opaque dir, a lower file carrying `security.capability`
/// and a lower directory tree to move. `oci`: the whiteout and the opaque dir in OCI form
/// (`.wh.NAME`, `.wh..wh..opq`, which our overlay honours and the kernel's does not),
/// else in kernel form (0/0 char device, `user.overlay.opaque`).
fn make_cap_layers(base: &Path, oci: bool) -> Result<Vec<PathBuf>, String> {
    let (l1, l2) = (base.join("l1"), base.join("l2"));
    let w = |p: PathBuf, s: &str| sys(&format!("write {}", p.display()), fs::write(&p, s));
    for d in ["opq", "olddir/sub", "bin"] {
        sys("mkdir", fs::create_dir_all(l2.join(d)))?;
    }
    sys("mkdir", fs::create_dir_all(l1.join("opq")))?;
    w(l2.join("gone"), "whited out\n")?;
    w(l2.join("opq/old"), "hidden\n")?;
    w(l2.join("olddir/a"), "a\n")?;
    w(l2.join("olddir/sub/b"), "b\n")?;
    w(l2.join("bin/ping"), "not really ping\n")?;
    sys(
        "setxattr security.capability",
        setxattr(&l2.join("bin/ping"), "security.capability", &cap_blob()),
    )?;
    if oci {
        w(l1.join(".wh.gone"), "")?;
        w(l1.join("opq/.wh..wh..opq"), "")?;
    } else {
        mknod(&l1.join("gone"), libc::S_IFCHR, 0)?;
        sys(
            "opaque",
            setxattr(&l1.join("opq"), "user.overlay.opaque", b"y"),
        )?;
    }
    w(l1.join("opq/new"), "new\n")?;
    Ok(vec![l1, l2])
}

/// What a container sees of `security.capability`, OCI whiteouts and `mv` of a lower
/// directory (coreutils and busybox): one line per observation.
fn caps_and_mv_script(m: &Path, upper: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let names = |p: &Path| -> String {
        let mut v: Vec<String> = fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.join(",")
    };
    log.push(format!("root: {}", names(m)));
    log.push(format!("opq: {}", names(&m.join("opq"))));
    let cap = |p: &Path| hex(xattrs_raw(p, "security.capability"));
    log.push(format!("lower cap: {}", cap(&m.join("bin/ping"))));
    let chmod = fs::set_permissions(m.join("bin/ping"), fs::Permissions::from_mode(0o4755));
    log.push(format!("chmod (copy-up): {chmod:?}"));
    log.push(format!("cap after copy-up: {}", cap(&m.join("bin/ping"))));
    log.push(format!("cap in upper: {}", cap(&upper.join("bin/ping"))));
    let new = fs::write(m.join("bin/mine"), "mine\n")
        .and_then(|()| setxattr(&m.join("bin/mine"), "security.capability", &cap_blob()));
    log.push(format!("set cap on a new file: {new:?}"));
    log.push(format!("cap read back: {}", cap(&m.join("bin/mine"))));
    log.push(format!("cap in upper: {}", cap(&upper.join("bin/mine"))));
    let write = OpenOptions::new()
        .append(true)
        .open(m.join("bin/mine"))
        .and_then(|mut f| f.write_all(b"more\n"));
    log.push(format!("write: {write:?}"));
    log.push(format!("cap after a write: {}", cap(&m.join("bin/mine"))));
    for (tool, args, from, to) in [
        ("coreutils", vec!["mv"], "olddir", "newdir"),
        ("busybox", vec!["busybox", "mv"], "newdir", "newerdir"),
    ] {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .arg(m.join(from))
            .arg(m.join(to))
            .output();
        let ok = out.as_ref().map(|o| o.status.success()).unwrap_or(false);
        let err = out
            .map(|o| String::from_utf8_lossy(&o.stderr).to_string())
            .unwrap_or_else(|e| e.to_string());
        log.push(format!(
            "{tool} mv {from} {to}: ok={ok} {err} {from} exists={} {to}: {} sub: {} b: {:?}",
            m.join(from).exists(),
            names(&m.join(to)),
            names(&m.join(to).join("sub")),
            fs::read_to_string(m.join(to).join("sub/b")).ok(),
        ));
    }
    log
}

/// `security.capability` set as the namespace's root on an upper file reads back, a
/// lower file's survives copy-up, a write drops it; OCI whiteouts and opaque markers in
/// our layers hide what the kernel's forms hide in the kernel's; `mv olddir newdir` of a lower directory works with
/// coreutils and busybox mv. All compared with kernel overlayfs on identical layers.
#[test]
fn security_capability_oci_whiteouts_and_mv_of_lower_dirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let mut logs = Vec::new();
        for which in ["fuse", "kernel"] {
            let b = base.join(which);
            for d in ["upper", "work", "mnt"] {
                sys("mkdir", fs::create_dir_all(b.join(d)))?;
            }
            let lower = make_cap_layers(&b, which == "fuse")?;
            let (upper, work, mnt) = (b.join("upper"), b.join("work"), b.join("mnt"));
            let log = if which == "fuse" {
                let f = Fuse::mount(&lower, &upper, &work, &mnt)?;
                let log = caps_and_mv_script(&mnt, &upper);
                f.unmount()?;
                log
            } else {
                mount_kernel(&lower, &upper, &work, &mnt)?;
                let log = caps_and_mv_script(&mnt, &upper);
                umount(&mnt)?;
                log
            };
            logs.push(log.join("\n"));
        }
        let _ = fs::remove_dir_all(&base);
        if logs[0] != logs[1] {
            return Err(format!(
                "differs\n--- fuse\n{}\n--- kernel\n{}",
                logs[0], logs[1]
            ));
        }
        Ok(logs[0].clone())
    });
    let cap = hex(Some(cap_blob()));
    for want in [
        "root: bin,olddir,opq\n".to_string(),
        "opq: new\n".to_string(),
        format!("lower cap: {cap}\n"),
        format!("cap after copy-up: {cap}\ncap in upper: {cap}\n"),
        format!("cap read back: {cap}\ncap in upper: {cap}\n"),
        "cap after a write: none\n".to_string(),
        "coreutils mv olddir newdir: ok=true  olddir exists=false newdir: a,sub sub: b".into(),
        "busybox mv newdir newerdir: ok=true  newdir exists=false newerdir: a,sub sub: b".into(),
    ] {
        assert!(out.contains(&want), "want {want:?} in\n{out}");
    }
}
