#!/usr/bin/env bash
# scripts/demo.sh: see skiff work, end to end, as a normal user.
#
# Usage: scripts/demo.sh [--private]
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
for arg in "$@"; do
    case "$arg" in
        --private) private=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "usage: $0 [--private]" >&2
            exit 2
            ;;
    esac
done

if [ "$(id -u)" = 0 ]; then
    cat >&2 <<'EOF'
demo.sh: do not run this as root: skiff is a rootless runtime.
Run it as a normal user that has /etc/subuid and /etc/subgid ranges. As root,
after scripts/test.sh has created the user skifftest (the checkout must be
readable by it; SKIFF_BIN_DIR names a directory with skiff and skiffd when
that user has no cargo):
    runuser -u skifftest -- env SKIFF_BIN_DIR=/path/to/bin scripts/demo.sh
or use scripts/test.sh, which sets up such a user and runs the whole test suite.
EOF
    exit 1
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
die() {
    echo "demo.sh: $*" >&2
    exit 1
}
step() { printf '\n### %s\n' "$*"; }

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
    die "no cargo to build skiff, and skiff/skiffd are not on PATH (or set SKIFF_BIN_DIR)"
fi
if [ ! -x "$BIN/skiff" ] || [ ! -x "$BIN/skiffd" ]; then die "skiff and skiffd not found in $BIN"; fi
echo "using $BIN/skiff and $BIN/skiffd"

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
