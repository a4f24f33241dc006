//! End to end: `--userns keep-id` on the kernel overlay driver. The image's layers get a
//! keep-id copy each (once per mapping, shared by the containers, removed with the
//! image); a container sees what the FUSE driver (which translates owners instead) shows
//! for the same image, whiteouts and opaque directories included; a bind-mounted host
//! directory gets files owned by the user; a file capability works for the keep-id root;
//! `skiff cp` works on a stopped container.

mod common;
mod image_support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{entries, Env};
use image_support::multi_layer_archive;

const IMAGE: &str = "demo/multi:1";

/// What a container reports of itself and the image: ids, owners, modes, sizes, times,
/// link counts, and what the whiteouts and the opaque directory leave. (Directories made
/// by the unpacker for a whiteout have no time of the image's; link counts and sizes of
/// directories are the filesystem's.)
const LOOK: &str = "id -u; id -g; stat -c '%u:%g %a' /; \
    stat -c '%n %u:%g %a %Y' /bin /home/user /tmp /opq; \
    stat -c '%n %u:%g %a %s %Y %h' /bin/busybox /bin/sh /home/user/owned /etc/passwd \
    /opq/new /keep/a /keep/b /links/x /links/y /top; \
    test ! -e /etc/gone && echo gone stays gone; test ! -e /keep/c && echo c stays gone; \
    echo opq:; ls -a /opq; echo keep:; ls /keep; \
    test $(stat -c %i /links/x) = $(stat -c %i /links/y) && echo linked";

fn env_with(driver: &str) -> Env {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", driver]);
    let archive = multi_layer_archive(&env, IMAGE);
    env.skiff_ok(&["load", "-i", archive.to_str().unwrap()]);
    env
}

/// Every keep-id copy in the store: `layers/<hex>/keepid/<key>`.
fn copies(env: &Env) -> Vec<PathBuf> {
    let layers = env.data().join("storage/layers");
    let mut out = Vec::new();
    for l in entries(&layers) {
        let dir = layers.join(l).join("keepid");
        for c in entries(&dir) {
            if !c.starts_with('.') && !c.ends_with(".lock") {
                out.push(dir.join(c));
            }
        }
    }
    out.sort();
    out
}

/// Paths under `dir` with their inode numbers.
fn inodes(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = e.path().symlink_metadata().unwrap();
            out.push((e.path(), md.ino()));
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn keep_id_on_overlay_sees_what_fuse_shows_and_shares_one_copy_per_layer() {
    let me = nix::unistd::getuid().as_raw();
    let my_gid = nix::unistd::getgid().as_raw();

    // The FUSE driver's answer (owners translated in its replies) is the oracle.
    let fuse = env_with("fuse");
    let want = fuse.skiff_ok(&[
        "run", "--rm", "--userns", "keep-id", IMAGE, "sh", "-c", LOOK,
    ]);
    drop(fuse);
    assert!(
        want.starts_with(&format!("{me}\n{my_gid}\n0:0 755\n")),
        "{want}"
    );
    for line in [
        "/home/user/owned 1000:1000 644 5 1700000000 1",
        "gone stays gone",
        "c stays gone",
        "opq:\n.\n..\nnew\nkeep:\na\nb\n",
        "linked",
    ] {
        assert!(want.contains(line), "{line:?} missing: {want}");
    }

    let env = env_with("overlay");
    let info: serde_json::Value = serde_json::from_str(&env.skiff_ok(&["info"])).unwrap();
    assert!(
        info["userns_keep_id"]["overlay"]
            .as_str()
            .unwrap()
            .starts_with("supported, one copy per layer and mapping"),
        "{info}"
    );
    assert!(copies(&env).is_empty());
    assert_eq!(
        info["keep_id_copies"],
        serde_json::json!({"count": 0, "bytes": 0})
    );
    let src = env.data().join("src");
    std::fs::create_dir(&src).unwrap();
    let bind = format!("{}:/src", src.display());
    let look_and_write = format!("{LOOK}; touch /src/built");
    let got = env.skiff_ok(&[
        "run",
        "--rm",
        "--userns",
        "keep-id",
        "-v",
        &bind,
        IMAGE,
        "sh",
        "-c",
        &look_and_write,
    ]);
    assert_eq!(got, want, "overlay keep-id differs from fuse keep-id");
    // Files written into a bind mount of the user's directory are the user's.
    let md = std::fs::symlink_metadata(src.join("built")).unwrap();
    assert_eq!((md.uid(), md.gid()), (me, my_gid));

    // One copy per layer, made once: a second keep-id container uses the same files.
    let made = copies(&env);
    assert_eq!(made.len(), 3, "{made:?}");
    // `info` counts them, each with its layer's size (the image's size in all).
    let info: serde_json::Value = serde_json::from_str(&env.skiff_ok(&["info"])).unwrap();
    let images: serde_json::Value =
        serde_json::from_str(&env.skiff_ok(&["image", "inspect", IMAGE])).unwrap();
    let size = images[0]["Size"].as_u64().unwrap();
    assert!(size > 1_000_000, "{images}");
    assert_eq!(
        info["keep_id_copies"],
        serde_json::json!({"count": 3, "bytes": size}),
        "{info}"
    );
    let before: Vec<_> = made.iter().flat_map(|c| inodes(c)).collect();
    assert!(before.iter().any(|(p, _)| p.ends_with("bin/busybox")));
    let busybox = before
        .iter()
        .find(|(p, _)| p.ends_with("bin/busybox"))
        .unwrap();
    let (sub_uid, _) = common::first_subordinate_ids();
    assert_eq!(
        std::fs::symlink_metadata(&busybox.0).unwrap().uid(),
        sub_uid,
        "the copy's root-owned files belong to the keep-id root (the first subordinate id)"
    );
    let again = env.skiff_ok(&[
        "run", "--rm", "--userns", "keep-id", IMAGE, "sh", "-c", LOOK,
    ]);
    assert_eq!(again, want);
    assert_eq!(copies(&env), made);
    let after: Vec<_> = made.iter().flat_map(|c| inodes(c)).collect();
    assert_eq!(
        after, before,
        "the second keep-id container made a new copy"
    );

    // The layers themselves are untouched: a default container sees the image as ever.
    let out = env.skiff_ok(&[
        "run",
        "--rm",
        IMAGE,
        "stat",
        "-c",
        "%u:%g",
        "/bin/busybox",
        "/home/user/owned",
    ]);
    assert_eq!(out, "0:0\n1000:1000\n");

    // The copies go with the image.
    env.skiff_ok(&["rmi", IMAGE]);
    assert!(copies(&env).is_empty(), "{:?}", copies(&env));
    let info: serde_json::Value = serde_json::from_str(&env.skiff_ok(&["info"])).unwrap();
    assert_eq!(
        info["keep_id_copies"],
        serde_json::json!({"count": 0, "bytes": 0})
    );
    assert!(
        entries(&env.data().join("storage/layers")).is_empty(),
        "{:?}",
        entries(&env.data().join("storage/layers"))
    );
    assert!(
        entries(&env.data().join("storage/tmp")).is_empty(),
        "{:?}",
        entries(&env.data().join("storage/tmp"))
    );
}

#[test]
fn cp_into_and_out_of_a_stopped_keep_id_container_on_overlay() {
    let me = nix::unistd::getuid().as_raw();
    let env = env_with("overlay");
    env.skiff_ok(&[
        "create",
        "--name",
        "kid",
        "--userns",
        "keep-id",
        IMAGE,
        "sh",
        "-c",
        "stat -c '%u:%g' / /top /tmp/in.txt; cat /tmp/in.txt; id -u",
    ]);
    let file = env.data().join("in.txt");
    std::fs::write(&file, "copied in\n").unwrap();
    // Before the first start: the copy of the layers is made for the copy.
    env.skiff_ok(&["cp", file.to_str().unwrap(), "kid:/tmp/"]);
    let out_dir = env.data().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    env.skiff_ok(&["cp", "kid:/top", out_dir.to_str().unwrap()]);
    let top = out_dir.join("top");
    assert_eq!(std::fs::read_to_string(&top).unwrap(), "top\n");
    assert_eq!(std::fs::symlink_metadata(&top).unwrap().uid(), me);
    let out = env.skiff_ok(&["start", "-a", "kid"]);
    assert_eq!(out, format!("0:0\n0:0\n0:0\ncopied in\n{me}\n"));
    assert_eq!(copies(&env).len(), 3);
    // `image prune -a` removes the copies with the unused image's layers.
    env.skiff_ok(&["rm", "-f", "kid"]);
    env.skiff_ok(&["image", "prune", "-a"]);
    assert!(copies(&env).is_empty(), "{:?}", copies(&env));
    assert!(entries(&env.data().join("storage/layers")).is_empty());
}

/// Imports busybox plus `/bin/busybox-cap`, a busybox with the file capability
/// `cap_net_raw+ep` (a `security.capability` PAX xattr, as `docker save` writes it), as
/// `demo/cap`.
fn import_cap_image(env: &Env) {
    let base = env.data().join("cap-base.tar");
    common::write_busybox_tar(&base, &[]);
    let path = env.data().join("cap.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut src = tar::Archive::new(std::fs::File::open(&base).unwrap());
    for e in src.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let p = e.path().unwrap().into_owned();
        if h.entry_type() == tar::EntryType::Symlink {
            let target = e.link_name().unwrap().unwrap().into_owned();
            b.append_link(&mut h, &p, &target).unwrap();
        } else {
            b.append_data(&mut h, &p, &mut e).unwrap();
        }
    }
    // Revision 2, effective, CAP_NET_RAW (13) permitted: what `setcap cap_net_raw+ep` writes.
    let mut cap = Vec::new();
    cap.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    cap.extend_from_slice(&(1u32 << 13).to_le_bytes());
    cap.extend_from_slice(&[0u8; 12]);
    b.append_pax_extensions([("SCHILY.xattr.security.capability", &cap[..])])
        .unwrap();
    let data = std::fs::read(common::require("busybox")).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, "bin/busybox-cap", &data[..]).unwrap();
    b.finish().unwrap();
    drop(b);
    env.skiff_ok(&["import", path.to_str().unwrap(), "demo/cap"]);
}

#[test]
fn a_file_capability_of_the_image_works_in_a_keep_id_container_on_overlay() {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", "overlay"]);
    import_cap_image(&env);
    let eff = "/bin/busybox-cap sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status";
    // The capability raises CAP_NET_RAW for an unprivileged user, in a default container
    // (uid 1000) and in a keep-id one (you).
    let out = env.skiff_ok(&["run", "--rm", "-u", "1000", "demo/cap", "sh", "-c", eff]);
    assert_eq!(out, "0000000000002000\n");
    let out = env.skiff_ok(&[
        "run", "--rm", "--userns", "keep-id", "demo/cap", "sh", "-c", eff,
    ]);
    assert_eq!(out, "0000000000002000\n", "{}", env.daemon_log());
}
