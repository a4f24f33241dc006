//! The images of the users tests: `demo/busybox`, `demo/users` (passwd and group files
//! with alice, 1500:1600, in wheel and audio) and `demo/entry` (an ENTRYPOINT and a
//! CMD), imported into a fresh skiffd.
#![allow(dead_code)]

use crate::common::{stderr, write_busybox_tar, Env};

pub const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
    user:x:1000:1000:user:/home/user:/bin/sh\n\
    alice:x:1500:1600:Alice:/home/alice:/bin/sh\n";
pub const GROUP: &[u8] = b"root:x:0:\nuser:x:1000:\nstaff:x:1600:\n\
    wheel:x:10:alice,bob\naudio:x:29:bob,alice\nextra:x:1700:\n";

/// An Env whose `demo/users` image has alice (1500:1600, in wheel and audio) in its
/// passwd and group files, and whose `demo/entry` image has an ENTRYPOINT and a CMD.
pub fn env() -> Env {
    env_with(&[])
}

/// [`env`] with skiffd started with `args`.
pub fn env_with(args: &[&str]) -> Env {
    let mut env = Env::bus_only();
    env.start_daemon_with(args);
    let tar = env.busybox_tar();
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "import failed: {}", stderr(&out));
    let tar = env.data().join("users.tar");
    write_busybox_tar(
        &tar,
        &[
            ("etc/passwd", 0, 0, 0o644, PASSWD),
            ("etc/group", 0, 0, 0o644, GROUP),
        ],
    );
    let out = env.skiff(&["import", tar.to_str().unwrap(), "demo/users"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&[
        "import",
        tar.to_str().unwrap(),
        "demo/entry",
        "--change",
        r#"ENTRYPOINT ["/bin/echo", "from-entrypoint"]"#,
        "--change",
        r#"CMD ["echo", "from-cmd"]"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    env
}
