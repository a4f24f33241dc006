//! `sdnotify-send MSG...`: sends one sd_notify datagram (the arguments, one per line) to
//! `$NOTIFY_SOCKET`, as a container's service would; exits 1 when it cannot. Built
//! static by build.rs for the tests of `skiff run --sdnotify=container` (container
//! images need not have a C library).

use std::os::unix::net::UnixDatagram;

fn main() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        eprintln!("sdnotify-send: NOTIFY_SOCKET is not set");
        std::process::exit(1);
    };
    let msg: Vec<String> = std::env::args().skip(1).collect();
    let sent = UnixDatagram::unbound().and_then(|s| s.send_to(msg.join("\n").as_bytes(), &path));
    if let Err(e) = sent {
        eprintln!("sdnotify-send: {}: {e}", path.to_string_lossy());
        std::process::exit(1);
    }
}
