//! Finding the session bus before connecting to it: over ssh or su there is often none
//! (no `DBUS_SESSION_BUS_ADDRESS`, no `$XDG_RUNTIME_DIR/bus`), and the connection error
//! alone does not say what to do.

use std::path::PathBuf;

/// How to get a session bus for skiff, for the messages below.
pub const HOW_TO_GET_A_BUS: &str = "either log in so that a systemd user session runs \
(or, as root, `loginctl enable-linger USER` once) and use `systemctl --user start skiffd`, \
or run skiffd and your skiff commands inside one session bus: \
`dbus-run-session -- bash`, then `skiffd &` and `skiff ...` in that shell \
(a bus of your own: give its address to both in SKIFF_BUS_ADDRESS)";

/// Where the session bus would be without `DBUS_SESSION_BUS_ADDRESS`
/// (`$XDG_RUNTIME_DIR/bus`, else `/run/user/UID/bus`, as libdbus and zbus look).
pub fn default_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("bus"),
        None => PathBuf::from(format!("/run/user/{}/bus", nix::unistd::getuid())),
    }
}

/// `Some(why)` when there is plainly no session bus: `DBUS_SESSION_BUS_ADDRESS` is
/// unset and the default socket does not exist. `None` when one may be there.
pub fn missing() -> Option<String> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|a| !a.is_empty()) {
        return None;
    }
    let sock = default_socket();
    if sock.exists() {
        return None;
    }
    Some(format!(
        "no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set and {} does not exist \
         (usual over ssh or su without a login session)",
        sock.display()
    ))
}
