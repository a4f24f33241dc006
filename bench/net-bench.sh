#!/usr/bin/env bash
# bench/net-bench.sh: TCP throughput with iperf3 into a container through a published
# port, skiff against podman and the host's loopback.
#
# Usage: bench/net-bench.sh [-n ROUNDS] [-t SECONDS] [--bin-dir DIR] [--before DIR]
#
# An image holding /usr/bin/iperf3 (Debian's) with the shared libraries ldd lists and
# the dynamic loader is built from the host's files and imported into skiff and into
# podman (private storage). `iperf3 -s` runs in a container published with
# -p 127.0.0.1:PORT:5201, and the host's `iperf3 -c 127.0.0.1 -p PORT -t SECONDS -J`
# measures TCP throughput (bits received by the server) for:
#   skiff-default-any  skiff's default network (slirp4netns unless network = "auto"),
#                    -p PORT:5201 (all addresses, the default form): TCP goes through
#                    the monitor's splice relay from a transparent socket bound to the
#                    client's address (a loopback client shows as 10.0.2.2)
#   skiff-default-ext  the same container, the client on the machine's own address
#                    (not loopback: the path a remote client takes, address kept)
#   podman-default-any, podman-default-ext  podman's default, -p PORT:5201, likewise
#   skiff-slirp      skiff + slirp4netns, -p 127.0.0.1:PORT:5201 (the relay too)
#   skiff-slirp-any  skiff + slirp4netns, -p PORT:5201 (all addresses; the relay since
#                    session 8, slirp4netns's add_hostfwd before)
#   skiff-pasta      skiff + pasta
#   podman-default   podman's default rootless network (podman 4.3: slirp4netns with
#                    the rootlessport port handler, which loses the client's address)
#   podman-slirp     podman, slirp4netns:port_handler=slirp4netns (skiff's path)
#   host             iperf3 -s on the host's loopback (the limit)
#   before-any, before-ext  with --before DIR: skiff's binaries in DIR (e.g. main's
#                    release build), on a second private bus and skiffd, with its
#                    default network and -p PORT:5201, loopback and non-loopback client
# ROUNDS (default 5) interleaved rounds after one warm-up round; the medians are
# reported in Gbit/s, as ratios to the host loopback and skiff to the best podman.
#
# Everything is private and temporary (bench/common.sh: dbus-daemon, skiffd, XDG
# dirs, podman storage); only 127.0.0.1 is used. As root: builds release binaries
# (or takes --bin-dir) and re-runs itself as $SKIFF_TEST_USER (default skifftest).
set -euo pipefail

BENCH=net-bench
ROUNDS=5
SECS=5
BIN_DIR=${SKIFF_BIN_DIR:-}
BEFORE_DIR=""

usage() {
    echo "usage: $0 [-n ROUNDS] [-t SECONDS] [--bin-dir DIR] [--before DIR]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        -t) [ $# -ge 2 ] || usage; SECS=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --before) [ $# -ge 2 ] || usage; BEFORE_DIR=$2; shift ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || usage
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || usage

# shellcheck source=bench/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/common.sh"
bench_reexec_as_user -n "$ROUNDS" -t "$SECS" ${BEFORE_DIR:+--before "$BEFORE_DIR"}

for c in iperf3 ldd slirp4netns pasta tar; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (apt-get install iperf3 slirp4netns passt)"
done

HOST_PID=""
B_BUS_PID=""
B_SKIFFD_PID=""
B_CLI=()
net_cleanup() {
    local rc=$?
    [ -z "$HOST_PID" ] || stop_pid "$HOST_PID"
    if [ -n "$B_SKIFFD_PID" ]; then
        B_CLI_ENV rm -f before-any >/dev/null 2>&1 || true
        stop_pid "$B_SKIFFD_PID"
    fi
    [ -z "$B_BUS_PID" ] || stop_pid "$B_BUS_PID"
    (exit "$rc")
    bench_cleanup
}
bench_setup
trap net_cleanup EXIT

# The iperf3 image: the binary, its libraries and the loader, owned by root.
IPERF_IMAGE=demo/iperf3
root=$T/iperf3-root
mkdir -p "$root/usr/bin" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
cp /usr/bin/iperf3 "$root/usr/bin/"
for lib in $(ldd /usr/bin/iperf3 | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
tar -C "$root" --owner=0 --group=0 --numeric-owner -cf "$T/iperf3.tar" .
"${SKIFF_CLI[@]}" image import "$T/iperf3.tar" "$IPERF_IMAGE" >/dev/null
"${PODMAN[@]}" import "$T/iperf3.tar" "localhost/$IPERF_IMAGE" >/dev/null 2>&1 ||
    die "podman import of the iperf3 image failed"

# The "before" skiff: its own bus, skiffd and XDG dirs under $T/before.
B_CLI_ENV() {
    XDG_RUNTIME_DIR=$T/before/run XDG_DATA_HOME=$T/before/data \
        XDG_CONFIG_HOME=$T/before/config "${B_CLI[@]}" "$@"
}
if [ -n "$BEFORE_DIR" ]; then
    [ -x "$BEFORE_DIR/skiffd" ] || die "no skiffd in $BEFORE_DIR"
    mkdir -p "$T/before/data" "$T/before/config"
    mkdir -m 0700 "$T/before/run"
    start_bus "$T/before"
    B_BUS_PID=$STARTED_BUS_PID
    B_ADDR=$STARTED_BUS_ADDR
    B_CLI=("$BEFORE_DIR/skiff" --bus-address "$B_ADDR")
    XDG_RUNTIME_DIR=$T/before/run XDG_DATA_HOME=$T/before/data XDG_CONFIG_HOME=$T/before/config \
        RUST_LOG=warn "$BEFORE_DIR/skiffd" --bus-address "$B_ADDR" 2>"$T/before/skiffd.log" &
    B_SKIFFD_PID=$!
    for _ in $(seq 100); do
        B_CLI_ENV ps >/dev/null 2>&1 && break
        sleep 0.1
    done
    B_CLI_ENV image import "$T/iperf3.tar" "$IPERF_IMAGE" >/dev/null ||
        { cat "$T/before/skiffd.log" >&2; die "the before skiffd did not start"; }
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -A PORT
start_skiff() { # NAME NETWORK (empty: skiffd's default) [HOST_IP]
    local p ip=${3-127.0.0.1}
    p=$(free_port)
    "${SKIFF_CLI[@]}" run -d --name "$1" ${2:+--network "$2"} -p "${ip:+$ip:}$p:5201" \
        "$IPERF_IMAGE" /usr/bin/iperf3 -s >/dev/null ||
        { tail -n 20 "$T/skiffd.log" >&2; die "skiff run ($2) failed"; }
    PORT[$1]=$p
}
start_podman() { # NAME [NETWORK] [HOST_IP]
    local p ip=${3-127.0.0.1}
    p=$(free_port)
    "${PODMAN[@]}" run -d --name "$1" ${2:+--network "$2"} -p "${ip:+$ip:}$p:5201" \
        "localhost/$IPERF_IMAGE" /usr/bin/iperf3 -s >/dev/null || die "podman run ($1) failed"
    PORT[$1]=$p
}
start_host() {
    local p
    p=$(free_port)
    iperf3 -s -B 127.0.0.1 -p "$p" >/dev/null 2>&1 &
    HOST_PID=$!
    PORT[host]=$p
}

# The machine's own non-loopback IPv4 address (traffic to it stays on the machine).
EXT_IP=$(ip -4 -o addr show scope global 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
declare -A CLIENT
start_skiff skiff-default-any "" ""
start_skiff skiff-slirp slirp4netns
start_skiff skiff-slirp-any slirp4netns ""
start_skiff skiff-pasta pasta
start_podman podman-default-any "" ""
start_podman podman-default ""
start_podman podman-slirp "slirp4netns:port_handler=slirp4netns"
start_host
echo "   skiff's default network: $("${SKIFF_CLI[@]}" inspect -f '{{.HostConfig.NetworkMode}}' skiff-default-any)"
CASES=(skiff-default-any podman-default-any)
if [ -n "$BEFORE_DIR" ]; then
    p=$(free_port)
    B_CLI_ENV run -d --name before-any -p "$p:5201" "$IPERF_IMAGE" /usr/bin/iperf3 -s >/dev/null ||
        { tail -n 20 "$T/before/skiffd.log" >&2; die "skiff run (before) failed"; }
    PORT[before-any]=$p
    CASES+=(before-any)
    if [ -n "$EXT_IP" ]; then
        PORT[before-ext]=$p
        CLIENT[before-ext]=$EXT_IP
    fi
fi
if [ -n "$EXT_IP" ]; then
    PORT[skiff-default-ext]=${PORT[skiff-default-any]}
    PORT[podman-default-ext]=${PORT[podman-default-any]}
    CLIENT[skiff-default-ext]=$EXT_IP
    CLIENT[podman-default-ext]=$EXT_IP
    CASES+=(skiff-default-ext podman-default-ext)
    [ -z "$BEFORE_DIR" ] || CASES+=(before-ext)
fi
CASES+=(skiff-slirp skiff-slirp-any skiff-pasta podman-default podman-slirp host)

# measure PORT SECS [CLIENT_IP]: prints the Gbit/s the server received (retries while
# it starts).
measure() {
    local i
    for i in $(seq 30); do
        if iperf3 -c "${3:-127.0.0.1}" -p "$1" -t "$2" -J >"$T/iperf.json" 2>/dev/null; then
            python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$T/iperf.json"
            return
        fi
        sleep 0.5
    done
    cat "$T/iperf.json" >&2
    die "iperf3 to port $1 failed"
}

echo "   $(slirp4netns --version | head -1), passt $(dpkg-query -W -f='${Version}' passt 2>/dev/null || echo '?'), $(iperf3 --version | head -1 | cut -d' ' -f1-2), podman storage $PODMAN_DRIVER"
echo "== warm-up (1 s each)"
for c in "${CASES[@]}"; do measure "${PORT[$c]}" 1 "${CLIENT[$c]-}" >/dev/null; done
echo "== $ROUNDS rounds of $SECS s each, interleaved (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
for i in $(seq "$ROUNDS"); do
    for c in "${CASES[@]}"; do
        g=$(measure "${PORT[$c]}" "$SECS" "${CLIENT[$c]-}")
        echo "$g" >>"$T/$c.gbps"
        printf '   round %d %-16s %8s Gbit/s\n' "$i" "$c" "$g"
    done
done
median() { sort -g "$1" | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
declare -A MED
for c in "${CASES[@]}"; do MED[$c]=$(median "$T/$c.gbps"); done
echo "== results (median of $ROUNDS; ratio to the host loopback; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
for c in "${CASES[@]}"; do
    printf '   %-16s %8.2f Gbit/s  %5sx\n' "$c" "${MED[$c]}" "$(ratio "${MED[$c]}" "${MED[host]}")"
done
best=${MED[podman-default]}
if awk -v a="${MED[podman-slirp]}" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=${MED[podman-slirp]}; fi
echo "   all addresses, loopback client: skiff default / podman default: $(ratio "${MED[skiff-default-any]}" "${MED[podman-default-any]}")x"
[ -z "$EXT_IP" ] ||
    echo "   all addresses, client on $EXT_IP: skiff default / podman default: $(ratio "${MED[skiff-default-ext]}" "${MED[podman-default-ext]}")x"
if [ -n "$BEFORE_DIR" ]; then
    echo "   all addresses, loopback client: before / podman default: $(ratio "${MED[before-any]}" "${MED[podman-default-any]}")x"
    [ -z "$EXT_IP" ] ||
        echo "   all addresses, client on $EXT_IP: before / podman default: $(ratio "${MED[before-ext]}" "${MED[podman-default-ext]}")x"
fi
echo "   skiff-slirp / best podman: $(ratio "${MED[skiff-slirp]}" "$best")x;" \
    "skiff-pasta / best podman: $(ratio "${MED[skiff-pasta]}" "$best")x;" \
    "skiff-slirp-any / podman-slirp: $(ratio "${MED[skiff-slirp-any]}" "${MED[podman-slirp]}")x"
