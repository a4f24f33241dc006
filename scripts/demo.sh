#!/usr/bin/env bash
# scripts/demo.sh: see skiff work, end to end, as a normal user.
#
# Usage: scripts/demo.sh [--private] [--user NAME]
#
# As root (a fresh Debian 12): installs the packages skiff needs (uidmap,
# dbus-daemon, dbus-bin, dbus-user-session, fuse3, slirp4netns, passt,
# busybox-static, libglib2.0-bin), makes sure the user NAME (default: the user
# who ran sudo, else skiffdemo, created if missing) has subuid/subgid ranges
# (scripts/test.sh with SKIFF_SETUP_ONLY=1), builds skiff (needs cargo: rustup,
# Rust 1.89 or newer), then runs this demo as that user (with --private).
#
# As a normal user: first runs `skiff doctor`; if something blocks containers,
# prints the one command to run as root.
#
# Builds skiff (cargo build --release, when cargo is available; otherwise uses
# $SKIFF_BIN_DIR or skiff/skiffd from PATH), makes a busybox rootfs tarball with
# scripts/mkrootfs.sh, starts skiffd in the background (on your session bus, or
# on a private dbus-daemon when $DBUS_SESSION_BUS_ADDRESS is unset), imports the
# tarball as demo/busybox and runs a container in it. Everything it started is
# stopped on exit. If a skiffd already owns org.skiff.skiff1 on the bus, that
# daemon is used instead.
#
# --private: always use a private bus and temporary XDG dirs, so nothing is
#            left in ~/.local/share/skiff.
#
# Needs: subuid/subgid ranges for your user, newuidmap/newgidmap (uidmap),
# dbus-daemon, gdbus or busctl, /bin/busybox (busybox-static).
set -euo pipefail

BUS_NAME=org.skiff.skiff1
private=0
demo_user=""
while [ $# -gt 0 ]; do
    case "$1" in
        --private) private=1 ;;
        --user)
            [ $# -ge 2 ] || { echo "usage: $0 [--private] [--user NAME]" >&2; exit 2; }
            demo_user=$2
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "usage: $0 [--private] [--user NAME]" >&2
            exit 2
            ;;
    esac
    shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
die() {
    echo "demo.sh: $*" >&2
    exit 1
}
step() { printf '\n### %s\n' "$*"; }

# ---------------------------------------------------------------------------
# As root: set the host up, then the demo as a normal user.
if [ "$(id -u)" = 0 ]; then
    user=${demo_user:-${SUDO_USER:-skiffdemo}}
    [ "$user" != root ] || user=skiffdemo
    step "host set-up for $user (scripts/test.sh, SKIFF_SETUP_ONLY=1)"
    SKIFF_SETUP_ONLY=1 SKIFF_TEST_USER=$user "$REPO/scripts/test.sh" ||
        die "the set-up failed (above)"
    step "skiff binaries (built as root)"
    for d in "${HOME:-/root}/.cargo/bin" /root/.cargo/bin; do
        if [ -d "$d" ] && ! command -v cargo >/dev/null 2>&1; then PATH="$d:$PATH"; fi
    done
    if [ -n "${SKIFF_BIN_DIR:-}" ]; then
        src=$SKIFF_BIN_DIR
    elif command -v cargo >/dev/null 2>&1; then
        (cd "$REPO" && cargo build --release --bins)
        src=${CARGO_TARGET_DIR:-$REPO/target}/release
    else
        die "cargo not found: install Rust 1.89 or newer with rustup (https://rustup.rs), or set SKIFF_BIN_DIR to a directory with skiff and skiffd"
    fi
    # A copy the user can read, whatever the checkout's permissions.
    stage=$(mktemp -d "${TMPDIR:-/tmp}/skiff-demo-stage.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    chmod 0755 "$stage"
    mkdir -m 0755 "$stage/bin" "$stage/scripts"
    install -m 0755 "$src/skiff" "$src/skiffd" "$stage/bin/"
    install -m 0755 "$REPO/scripts/demo.sh" "$REPO/scripts/mkrootfs.sh" "$stage/scripts/"
    home=$(getent passwd "$user" | cut -d: -f6)
    step "the demo as $user"
    rc=0
    (cd "$stage" && runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" \
        PATH=/usr/local/bin:/usr/bin:/bin SKIFF_BIN_DIR="$stage/bin" \
        bash "$stage/scripts/demo.sh" --private) || rc=$?
    exit "$rc"
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/skiff-demo.XXXXXX")
BUS_PID=""
SKIFFD_PID=""

# stop PID: SIGTERM, wait up to 5 s, then SIGKILL.
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && [ -s "$T/skiffd.log" ]; then
        echo "--- last lines of the skiffd log ---" >&2
        tail -n 30 "$T/skiffd.log" >&2
    fi
    [ -z "$SKIFFD_PID" ] || stop "$SKIFFD_PID"
    [ -z "$BUS_PID" ] || stop "$BUS_PID"
    # With --private, image layers owned by subordinate ids live under $T:
    # those can only be deleted from inside a user namespace.
    rm -rf "$T" 2>/dev/null ||
        unshare --map-root-user --map-auto rm -rf "$T" 2>/dev/null ||
        echo "demo.sh: could not fully remove $T" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
step "skiff binaries"
if [ -n "${SKIFF_BIN_DIR:-}" ]; then
    BIN=$SKIFF_BIN_DIR
elif command -v cargo >/dev/null 2>&1 && [ -f "$REPO/Cargo.toml" ]; then
    (cd "$REPO" && cargo build --release --bins)
    BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
elif command -v skiff >/dev/null 2>&1 && command -v skiffd >/dev/null 2>&1; then
    BIN=$(dirname "$(command -v skiffd)")
else
    die "no cargo to build skiff, and skiff/skiffd are not on PATH (or set SKIFF_BIN_DIR): install Rust 1.89+ with rustup (https://rustup.rs), or as root run: sudo $REPO/scripts/demo.sh --user $(id -un)"
fi
if [ ! -x "$BIN/skiff" ] || [ ! -x "$BIN/skiffd" ]; then die "skiff and skiffd not found in $BIN"; fi
echo "using $BIN/skiff and $BIN/skiffd"

# ---------------------------------------------------------------------------
step "skiff doctor"
if ! "$BIN/skiff" doctor; then
    cat >&2 <<EOF

demo.sh: something above blocks containers for $(id -un). One command, as root, sets it
all up (packages, your subuid/subgid ranges, /dev/fuse) and runs this demo:
    sudo $REPO/scripts/demo.sh --user $(id -un)
EOF
    exit 1
fi

# ---------------------------------------------------------------------------
step "busybox rootfs"
"$REPO/scripts/mkrootfs.sh" "$T/busybox.tar"
echo "$T/busybox.tar: $(tar tf "$T/busybox.tar" | wc -l) entries, $(du -h "$T/busybox.tar" | cut -f1)"

# ---------------------------------------------------------------------------
step "D-Bus session bus"
if [ "$private" = 1 ] || [ -z "${DBUS_SESSION_BUS_ADDRESS:-}" ]; then
    dbus-daemon --session --nofork --print-address=3 --address="unix:path=$T/bus" 3>"$T/addr" &
    BUS_PID=$!
    for _ in $(seq 100); do
        [ -s "$T/addr" ] && break
        kill -0 "$BUS_PID" 2>/dev/null || die "dbus-daemon exited"
        sleep 0.1
    done
    [ -s "$T/addr" ] || die "dbus-daemon did not print its address"
    ADDR=$(head -n 1 "$T/addr")
    echo "started a private dbus-daemon (pid $BUS_PID) at $ADDR"
else
    ADDR=$DBUS_SESSION_BUS_ADDRESS
    echo "using your session bus at $ADDR"
fi

# XDG dirs: a private runtime dir when there is none (or with --private).
if [ "$private" = 1 ] || [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    mkdir -m 0700 "$T/run"
    export XDG_RUNTIME_DIR=$T/run
fi
if [ "$private" = 1 ]; then
    mkdir -p "$T/data" "$T/config"
    export XDG_DATA_HOME=$T/data XDG_CONFIG_HOME=$T/config
fi

name_has_owner() {
    if command -v gdbus >/dev/null 2>&1; then
        gdbus call --address "$ADDR" --dest org.freedesktop.DBus \
            --object-path /org/freedesktop/DBus \
            --method org.freedesktop.DBus.NameHasOwner "$BUS_NAME" 2>/dev/null | grep -q true
    else
        busctl --address="$ADDR" list --no-legend 2>/dev/null | grep -q "^$BUS_NAME "
    fi
}

# ---------------------------------------------------------------------------
step "skiffd"
if name_has_owner; then
    echo "a skiffd already owns $BUS_NAME on this bus: using it"
else
    RUST_LOG=${RUST_LOG:-info} "$BIN/skiffd" --bus-address "$ADDR" 2>"$T/skiffd.log" &
    SKIFFD_PID=$!
    for _ in $(seq 100); do
        name_has_owner && break
        kill -0 "$SKIFFD_PID" 2>/dev/null || die "skiffd exited early"
        sleep 0.1
    done
    name_has_owner || die "skiffd did not take $BUS_NAME within 10 s"
    echo "skiffd (pid $SKIFFD_PID) owns $BUS_NAME; its log: $T/skiffd.log"
fi

# show ARGS...: echo a skiff command line (shell-quoted), then run it with the right bus.
show() {
    local a line='$ skiff'
    for a in "$@"; do
        if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+-]+$ ]]; then
            line+=" $a"
        else
            line+=" '${a//\'/\'\\\'\'}'"
        fi
    done
    printf '\n%s\n' "$line"
    "$BIN/skiff" --bus-address "$ADDR" "$@"
}

# ---------------------------------------------------------------------------
step "import and run"
show image import "$T/busybox.tar" demo/busybox
show images
rc=0
show run --rm demo/busybox sh -c 'id; cat /proc/self/uid_map; hostname; echo oops >&2; exit 3' || rc=$?
printf '\nexit code: %s (the container exited with 3)\n' "$rc"
if [ "$rc" != 3 ]; then
    die "expected exit code 3 from the container, got $rc"
fi
echo
echo "demo: ok"
