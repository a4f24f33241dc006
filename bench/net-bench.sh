#!/usr/bin/env bash
# bench/net-bench.sh: TCP throughput into a container through a published port.
#
# Usage: bench/net-bench.sh [-n ROUNDS] [-s GIB] [--bin-dir DIR]
#
# What is measured: a host-side sender (python3, 1 MiB send() calls) connects to
# 127.0.0.1:PORT, sends GIB GiB of zeros, shuts down its write side and waits for
# the peer to close; the time from connect to that close gives the throughput of
# bytes delivered to the receiver. The receiver is busybox `nc -l -p 5201 >/dev/null`
# in a container published with -p 127.0.0.1:PORT:5201 (the busybox image has no
# iperf3 and no static iperf3 exists here), for:
#   skiff + slirp4netns (add_hostfwd: the client's address is kept)
#   skiff + pasta
#   podman (rootless, same image, temp storage) with its default network
#     (slirp4netns + rootlessport port handler on podman 4.x) and with
#     slirp4netns:port_handler=slirp4netns (the same forwarding path as skiff's)
#   the host: the same nc sink on the host's loopback (the limit)
# ROUNDS (default 3) interleaved rounds of each, after one warm-up; the median is
# reported in Gbit/s and as a ratio to the host loopback. iperf3 on the host's
# loopback is printed as a reference for the sender/sink overhead.
#
# Everything is private and temporary (dbus-daemon, skiffd, XDG dirs, podman
# storage) and only 127.0.0.1 is used. As root: builds release binaries and
# re-runs itself as $SKIFF_TEST_USER (default skifftest).
set -euo pipefail

ROUNDS=3
GIB=1
BIN_DIR=${SKIFF_BIN_DIR:-}
IMAGE=demo/busybox
BUS_NAME=org.skiff.skiff1

usage() {
    echo "usage: $0 [-n ROUNDS] [-s GIB] [--bin-dir DIR]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        -s) [ $# -ge 2 ] || usage; GIB=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || usage
[[ "$GIB" =~ ^[1-9][0-9]*$ ]] || usage

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/.." && pwd -P)
die() {
    echo "net-bench: $*" >&2
    exit 1
}

if [ "$(id -u)" = 0 ]; then
    user=${SKIFF_TEST_USER:-skifftest}
    id -u "$user" >/dev/null 2>&1 || die "user $user does not exist: run scripts/test.sh once as root"
    user_home=$(getent passwd "$user" | cut -d: -f6)
    export PATH="${HOME:-/root}/.cargo/bin:/root/.cargo/bin:$PATH"
    stage=$(mktemp -d "${TMPDIR:-/tmp}/skiff-netbench.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    chmod 0755 "$stage"
    mkdir -m 0755 "$stage/bin" "$stage/bench" "$stage/scripts"
    if [ -n "$BIN_DIR" ]; then
        src_bin=$BIN_DIR
    else
        (cd "$REPO" && cargo build --release --bins)
        src_bin=${CARGO_TARGET_DIR:-$REPO/target}/release
    fi
    install -m 0755 "$src_bin/skiff" "$src_bin/skiffd" "$stage/bin/"
    install -m 0755 "$HERE/net-bench.sh" "$stage/bench/"
    install -m 0755 "$REPO/scripts/mkrootfs.sh" "$stage/scripts/"
    cd "$stage"
    rc=0
    runuser -u "$user" -- env -i HOME="$user_home" USER="$user" LOGNAME="$user" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash "$stage/bench/net-bench.sh" -n "$ROUNDS" -s "$GIB" --bin-dir "$stage/bin" || rc=$?
    exit "$rc"
fi

for c in dbus-daemon podman python3 busybox slirp4netns pasta; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found"
done
if [ -z "$BIN_DIR" ]; then
    (cd "$REPO" && cargo build --release --bins)
    BIN_DIR=${CARGO_TARGET_DIR:-$REPO/target}/release
fi
SKIFF=$BIN_DIR/skiff
SKIFFD=$BIN_DIR/skiffd

T=$(mktemp -d "${TMPDIR:-/tmp}/skiff-netbench.XXXXXX")
# A short runtime dir: podman's slirp4netns API socket path must fit in 108 bytes.
mkdir -m 0700 "$T/run"
RUN=$(mktemp -d /tmp/nb.XXXXXX)
chmod 0700 "$RUN"
mkdir -p "$T/data" "$T/config" "$T/podman"
export XDG_RUNTIME_DIR=$RUN XDG_DATA_HOME=$T/data XDG_CONFIG_HOME=$T/config
unset DBUS_SESSION_BUS_ADDRESS SKIFF_BUS_ADDRESS
BUS_PID="" SKIFFD_PID="" HOSTSINK_PID=""
PODMAN=()
SKIFF_CTRS=() PODMAN_CTRS=()

stop() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local rc=$? c pause
    for c in "${SKIFF_CTRS[@]}"; do "$SKIFF" --bus-address "$ADDR" rm -f "$c" >/dev/null 2>&1 || true; done
    for c in "${PODMAN_CTRS[@]}"; do "${PODMAN[@]}" rm -f "$c" >/dev/null 2>&1 || true; done
    if [ -n "$HOSTSINK_PID" ]; then
        # The loop's current nc is its child: end both.
        pkill -P "$HOSTSINK_PID" 2>/dev/null || true
        stop "$HOSTSINK_PID"
        pkill -P "$HOSTSINK_PID" 2>/dev/null || true
    fi
    [ -z "$SKIFFD_PID" ] || stop "$SKIFFD_PID"
    [ -z "$BUS_PID" ] || stop "$BUS_PID"
    pause=$(cat "$RUN/libpod/tmp/pause.pid" 2>/dev/null || true)
    [ -z "$pause" ] || kill "$pause" 2>/dev/null || true
    rm -rf "$RUN" 2>/dev/null || true
    rm -rf "$T" 2>/dev/null || unshare --map-root-user --map-auto rm -rf "$T" 2>/dev/null ||
        echo "net-bench: could not fully remove $T" >&2
    exit "$rc"
}
ADDR=""
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== setup (temp dir $T)"
"$REPO/scripts/mkrootfs.sh" "$T/busybox.tar"
dbus-daemon --session --nofork --print-address=3 --address="unix:path=$T/bus" 3>"$T/addr" &
BUS_PID=$!
for _ in $(seq 100); do [ -s "$T/addr" ] && break; sleep 0.1; done
ADDR=$(head -n 1 "$T/addr")
RUST_LOG=warn "$SKIFFD" --bus-address "$ADDR" 2>"$T/skiffd.log" &
SKIFFD_PID=$!
for _ in $(seq 100); do
    gdbus call --address "$ADDR" --dest org.freedesktop.DBus --object-path /org/freedesktop/DBus \
        --method org.freedesktop.DBus.NameHasOwner "$BUS_NAME" 2>/dev/null | grep -q true && break
    sleep 0.1
done
"$SKIFF" --bus-address "$ADDR" image import "$T/busybox.tar" "$IMAGE" >/dev/null

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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SINK='while true; do nc -l -p 5201 >/dev/null; done'

declare -A PORT
start_skiff() { # NAME NETWORK
    local p
    p=$(free_port)
    "$SKIFF" --bus-address "$ADDR" run -d --name "$1" --network "$2" -p "127.0.0.1:$p:5201" \
        "$IMAGE" sh -c "$SINK" >/dev/null || { tail -n 20 "$T/skiffd.log" >&2; die "skiff run ($2) failed"; }
    SKIFF_CTRS+=("$1")
    PORT[$1]=$p
}
start_podman() { # NAME NETWORK
    local p
    p=$(free_port)
    "${PODMAN[@]}" run -d --name "$1" ${2:+--network "$2"} -p "127.0.0.1:$p:5201" \
        "localhost/$IMAGE" sh -c "$SINK" >/dev/null || die "podman run ($1) failed"
    PODMAN_CTRS+=("$1")
    PORT[$1]=$p
}
start_host() {
    local p
    p=$(free_port)
    (while true; do busybox nc -l -p "$p" >/dev/null 2>&1 || sleep 0.1; done) &
    HOSTSINK_PID=$!
    PORT[host]=$p
}

start_skiff skiff-slirp slirp4netns
start_skiff skiff-pasta pasta
start_podman podman-default ""
start_podman podman-slirp "slirp4netns:port_handler=slirp4netns"
start_host
CASES=(skiff-slirp skiff-pasta podman-default podman-slirp host)
sleep 1

# send PORT: prints Gbit/s of GIB GiB delivered to 127.0.0.1:PORT.
send() {
    python3 - "$1" "$GIB" <<'PY'
import socket, sys, time
port, gib = int(sys.argv[1]), int(sys.argv[2])
total = gib << 30
chunk = bytes(1 << 20)
deadline = time.time() + 15
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.1)
t0 = time.perf_counter()
sent = 0
while sent < total:
    s.sendall(chunk)
    sent += len(chunk)
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
dt = time.perf_counter() - t0
print(f"{total * 8 / dt / 1e9:.3f}")
PY
}

echo "   kernel $(uname -r), $(nproc) CPUs, $(podman --version) ($driver), $(slirp4netns --version | head -1), passt $(dpkg-query -W -f='${Version}' passt 2>/dev/null || echo '?')"
echo "== warm-up"
for c in "${CASES[@]}"; do send "${PORT[$c]}" >/dev/null; done
echo "== $ROUNDS rounds of $GIB GiB each, interleaved"
for i in $(seq "$ROUNDS"); do
    for c in "${CASES[@]}"; do
        g=$(send "${PORT[$c]}")
        echo "$g" >>"$T/$c.gbps"
        printf '   round %d %-15s %8s Gbit/s\n' "$i" "$c" "$g"
    done
done
median() { sort -g "$1" | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
host=$(median "$T/host.gbps")
echo "== results (median of $ROUNDS; ratio to the host loopback)"
for c in "${CASES[@]}"; do
    m=$(median "$T/$c.gbps")
    printf '   %-15s %8.2f Gbit/s  %5.2fx\n' "$c" "$m" "$(awk -v a="$m" -v b="$host" 'BEGIN { print a / b }')"
done
if command -v iperf3 >/dev/null 2>&1; then
    p=$(free_port)
    iperf3 -s -1 -B 127.0.0.1 -p "$p" >/dev/null 2>&1 &
    sleep 0.5
    echo "   reference: iperf3 on the host loopback: $(iperf3 -c 127.0.0.1 -p "$p" -t 5 -f g 2>/dev/null | awk '/receiver/ { print $(NF-2), $(NF-1) }')"
fi
