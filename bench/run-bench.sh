#!/usr/bin/env bash
# bench/run-bench.sh: container start-to-exit latency, skiff vs podman+runc.
#
# Usage: bench/run-bench.sh [-n ROUNDS] [--bin-dir DIR] [--podman-network MODE]
#
# Times `skiff run --rm IMG true` against `podman --runtime runc run --rm IMG true`
# on the same busybox image (scripts/mkrootfs.sh), ROUNDS times each (default 20)
# interleaved, after one warm-up run each, and prints the median and p90 in ms and
# the ratio of the medians. Any failing run aborts the benchmark with its output.
#
# Everything is private and temporary: a dbus-daemon, a skiffd, XDG dirs, and
# podman storage (--root/--runroot), all removed on exit.
#
# Binaries: --bin-dir DIR, else $SKIFF_BIN_DIR, else `cargo build --release`
# (when cargo is available), else skiff/skiffd from PATH.
#
# As root: builds the release binaries, stages them with this script and
# mkrootfs.sh in a temp dir, and re-runs itself there as the unprivileged test
# user ($SKIFF_TEST_USER, default skifftest: run scripts/test.sh once as root to
# create it with subuid/subgid ranges).
#
# --podman-network MODE  adds `--network MODE` to podman run (e.g. none, to leave
#                        slirp4netns/pasta setup out of podman's time).
set -euo pipefail

ROUNDS=20
BIN_DIR=${SKIFF_BIN_DIR:-}
PODMAN_NET=""
BUS_NAME=org.skiff.skiff1
IMAGE=demo/busybox

usage() {
    echo "usage: $0 [-n ROUNDS] [--bin-dir DIR] [--podman-network MODE]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        -n*) ROUNDS=${1#-n} ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --podman-network) [ $# -ge 2 ] || usage; PODMAN_NET=$2; shift ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "run-bench: -n needs a positive integer" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/.." && pwd -P)
die() {
    echo "run-bench: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------
# Root: build, stage, and re-run as the test user.
# ---------------------------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
    user=${SKIFF_TEST_USER:-skifftest}
    id -u "$user" >/dev/null 2>&1 ||
        die "user $user does not exist: run scripts/test.sh once as root to create it"
    user_home=$(getent passwd "$user" | cut -d: -f6)
    export PATH="${HOME:-/root}/.cargo/bin:/root/.cargo/bin:$PATH"
    stage=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    chmod 0755 "$stage"
    mkdir -m 0755 "$stage/bin" "$stage/bench" "$stage/scripts"
    if [ -n "$BIN_DIR" ]; then
        src_bin=$BIN_DIR
    else
        echo "== cargo build --release"
        (cd "$REPO" && cargo build --release --bins)
        src_bin=${CARGO_TARGET_DIR:-$REPO/target}/release
    fi
    install -m 0755 "$src_bin/skiff" "$src_bin/skiffd" "$stage/bin/"
    install -m 0755 "$HERE/run-bench.sh" "$stage/bench/"
    install -m 0755 "$REPO/scripts/mkrootfs.sh" "$stage/scripts/"
    args=(-n "$ROUNDS" --bin-dir "$stage/bin")
    [ -z "$PODMAN_NET" ] || args+=(--podman-network "$PODMAN_NET")
    echo "== re-running as $user"
    cd "$stage"
    rc=0
    runuser -u "$user" -- env -i HOME="$user_home" USER="$user" LOGNAME="$user" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash "$stage/bench/run-bench.sh" "${args[@]}" || rc=$?
    exit "$rc"
fi

# ---------------------------------------------------------------------------
# Normal user: set up.
# ---------------------------------------------------------------------------
for c in dbus-daemon podman runc newuidmap; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (apt-get install dbus-daemon podman runc uidmap)"
done

if [ -z "$BIN_DIR" ]; then
    if command -v cargo >/dev/null 2>&1 && [ -f "$REPO/Cargo.toml" ]; then
        echo "== cargo build --release"
        (cd "$REPO" && cargo build --release --bins)
        BIN_DIR=${CARGO_TARGET_DIR:-$REPO/target}/release
    elif command -v skiffd >/dev/null 2>&1; then
        BIN_DIR=$(dirname "$(command -v skiffd)")
    else
        die "no skiff binaries: pass --bin-dir, set SKIFF_BIN_DIR, or install cargo"
    fi
fi
SKIFF=$BIN_DIR/skiff
SKIFFD=$BIN_DIR/skiffd
if [ ! -x "$SKIFF" ] || [ ! -x "$SKIFFD" ]; then die "skiff/skiffd not found in $BIN_DIR"; fi

T=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench.XXXXXX")
mkdir -m 0700 "$T/run"
mkdir -p "$T/data" "$T/config" "$T/podman"
# Both skiffd and podman keep their state under these.
export XDG_RUNTIME_DIR=$T/run XDG_DATA_HOME=$T/data XDG_CONFIG_HOME=$T/config
unset DBUS_SESSION_BUS_ADDRESS SKIFF_BUS_ADDRESS
BUS_PID=""
SKIFFD_PID=""
PODMAN=()

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
    local rc=$? pause
    [ -z "$SKIFFD_PID" ] || stop "$SKIFFD_PID"
    [ -z "$BUS_PID" ] || stop "$BUS_PID"
    # podman's rootless pause process keeps its user namespace alive.
    pause=$(cat "$T/run/libpod/tmp/pause.pid" 2>/dev/null || true)
    [ -z "$pause" ] || kill "$pause" 2>/dev/null || true
    # Image layers belong to subordinate ids: delete inside a user namespace.
    rm -rf "$T" 2>/dev/null ||
        unshare --map-root-user --map-auto rm -rf "$T" 2>/dev/null ||
        echo "run-bench: could not fully remove $T" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== setup (temp dir $T)"
"$REPO/scripts/mkrootfs.sh" "$T/busybox.tar"

dbus-daemon --session --nofork --print-address=3 --address="unix:path=$T/bus" 3>"$T/addr" &
BUS_PID=$!
for _ in $(seq 100); do
    [ -s "$T/addr" ] && break
    sleep 0.1
done
[ -s "$T/addr" ] || die "dbus-daemon did not start"
ADDR=$(head -n 1 "$T/addr")

name_has_owner() {
    if command -v gdbus >/dev/null 2>&1; then
        gdbus call --address "$ADDR" --dest org.freedesktop.DBus \
            --object-path /org/freedesktop/DBus \
            --method org.freedesktop.DBus.NameHasOwner "$BUS_NAME" 2>/dev/null | grep -q true
    else
        busctl --address="$ADDR" list --no-legend 2>/dev/null | grep -q "^$BUS_NAME "
    fi
}
RUST_LOG=${RUST_LOG:-warn} "$SKIFFD" --bus-address "$ADDR" 2>"$T/skiffd.log" &
SKIFFD_PID=$!
for _ in $(seq 100); do
    name_has_owner && break
    kill -0 "$SKIFFD_PID" 2>/dev/null || { cat "$T/skiffd.log" >&2; die "skiffd exited"; }
    sleep 0.1
done
name_has_owner || { cat "$T/skiffd.log" >&2; die "skiffd did not take $BUS_NAME"; }
"$SKIFF" --bus-address "$ADDR" image import "$T/busybox.tar" "$IMAGE" >/dev/null

# podman with private storage; overlay when it works here, else vfs.
podman_for() {
    PODMAN=(podman --root "$T/podman/$1/root" --runroot "$T/podman/$1/runroot"
        --storage-driver "$1" --cgroup-manager cgroupfs --events-backend file --runtime runc)
}
driver=""
for d in overlay vfs; do
    podman_for "$d"
    if "${PODMAN[@]}" import "$T/busybox.tar" "localhost/$IMAGE" >"$T/podman-import.log" 2>&1; then
        driver=$d
        break
    fi
done
[ -n "$driver" ] || { cat "$T/podman-import.log" >&2; die "podman import failed"; }
PODMAN_RUN=("${PODMAN[@]}" run --rm)
[ -z "$PODMAN_NET" ] || PODMAN_RUN+=(--network "$PODMAN_NET")

SKIFF_CMD=("$SKIFF" --bus-address "$ADDR" run --rm "$IMAGE" true)
PODMAN_CMD=("${PODMAN_RUN[@]}" "localhost/$IMAGE" true)

echo "   kernel $(uname -r), $(nproc) CPUs, $(podman --version), runc $(runc --version | sed -n '1s/^runc version //p')"
echo "   podman storage driver: $driver${PODMAN_NET:+, network $PODMAN_NET}"

# timed TOOL CMD...: run CMD once, append its wall time (us) to $T/TOOL.times;
# abort with CMD's output if it fails.
timed() {
    local tool=$1 t0 t1 rc=0
    shift
    t0=${EPOCHREALTIME//[!0-9]/}
    "$@" >"$T/out" 2>&1 </dev/null || rc=$?
    t1=${EPOCHREALTIME//[!0-9]/}
    if [ "$rc" != 0 ]; then
        echo "run-bench: $tool run failed (exit $rc): $*" >&2
        cat "$T/out" >&2
        if [ "$tool" = skiff ]; then
            echo "--- skiffd log ---" >&2
            tail -n 30 "$T/skiffd.log" >&2
        fi
        exit 1
    fi
    echo $((t1 - t0)) >>"$T/$tool.times"
}

echo "== warm-up"
timed skiff "${SKIFF_CMD[@]}"
timed podman "${PODMAN_CMD[@]}"
rm -f "$T/skiff.times" "$T/podman.times"

echo "== $ROUNDS rounds, interleaved"
for i in $(seq "$ROUNDS"); do
    timed skiff "${SKIFF_CMD[@]}"
    timed podman "${PODMAN_CMD[@]}"
    printf '.'
    [ $((i % 50)) != 0 ] || printf '\n'
done
echo

# stats FILE: "median p90" in ms (p90 by nearest rank).
stats() {
    sort -n "$1" | awk '{ a[NR] = $1 }
        END {
            n = NR
            med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            k = int(0.9 * n); if (k < 0.9 * n) k++; if (k < 1) k = 1
            printf "%.1f %.1f\n", med / 1000, a[k] / 1000
        }'
}
read -r s_med s_p90 < <(stats "$T/skiff.times")
read -r p_med p_p90 < <(stats "$T/podman.times")
ratio=$(awk -v a="$s_med" -v b="$p_med" 'BEGIN { printf "%.2f", a / b }')

echo "== results ($ROUNDS runs each)"
printf '   %-40s median %8.1f ms   p90 %8.1f ms\n' "skiff run --rm $IMAGE true" "$s_med" "$s_p90"
printf '   %-40s median %8.1f ms   p90 %8.1f ms\n' "podman --runtime runc run --rm ... true" "$p_med" "$p_p90"
echo "skiff run --rm true: median $s_med ms; podman: $p_med ms; ratio ${ratio}x"
