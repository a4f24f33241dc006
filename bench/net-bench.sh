#!/usr/bin/env bash
# bench/net-bench.sh: TCP throughput with iperf3 into a container through a published
# port, skiff against podman and the host's loopback.
#
# Usage: bench/net-bench.sh [-n ROUNDS] [-t SECONDS] [--bin-dir DIR]
#
# An image holding /usr/bin/iperf3 (Debian's) with the shared libraries ldd lists and
# the dynamic loader is built from the host's files and imported into skiff and into
# podman (private storage). `iperf3 -s` runs in a container published with
# -p 127.0.0.1:PORT:5201, and the host's `iperf3 -c 127.0.0.1 -p PORT -t SECONDS -J`
# measures TCP throughput (bits received by the server) for:
#   skiff-default-any  skiff's default network (pasta where it works), -p PORT:5201
#                    (all addresses, the default form): pasta splices a loopback
#                    client's data and keeps a remote client's address
#   skiff-default-ext  the same container, the client on the machine's own address
#                    (not loopback: the path a remote client takes, address kept)
#   podman-default-any, podman-default-ext  podman's default, -p PORT:5201, likewise
#   skiff-slirp      skiff + slirp4netns, -p 127.0.0.1:PORT:5201: a loopback host address
#                    goes through the monitor's splice relay into the container's
#                    namespace (its clients are the host itself: no address to keep)
#   skiff-slirp-any  skiff + slirp4netns, -p PORT:5201 (all addresses): slirp4netns's
#                    add_hostfwd, which keeps the client's address (the client still
#                    connects to 127.0.0.1)
#   skiff-pasta      skiff + pasta
#   podman-default   podman's default rootless network (podman 4.3: slirp4netns with
#                    the rootlessport port handler, which loses the client's address)
#   podman-slirp     podman, slirp4netns:port_handler=slirp4netns (skiff's path)
#   host             iperf3 -s on the host's loopback (the limit)
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

usage() {
    echo "usage: $0 [-n ROUNDS] [-t SECONDS] [--bin-dir DIR]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        -t) [ $# -ge 2 ] || usage; SECS=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || usage
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || usage

# shellcheck source=bench/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/common.sh"
bench_reexec_as_user -n "$ROUNDS" -t "$SECS"

for c in iperf3 ldd slirp4netns pasta tar; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (apt-get install iperf3 slirp4netns passt)"
done

HOST_PID=""
net_cleanup() {
    local rc=$?
    [ -z "$HOST_PID" ] || stop_pid "$HOST_PID"
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
if [ -n "$EXT_IP" ]; then
    PORT[skiff-default-ext]=${PORT[skiff-default-any]}
    PORT[podman-default-ext]=${PORT[podman-default-any]}
    CLIENT[skiff-default-ext]=$EXT_IP
    CLIENT[podman-default-ext]=$EXT_IP
    CASES+=(skiff-default-ext podman-default-ext)
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
echo "== $ROUNDS rounds of $SECS s each, interleaved"
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
echo "== results (median of $ROUNDS; ratio to the host loopback)"
for c in "${CASES[@]}"; do
    printf '   %-16s %8.2f Gbit/s  %5sx\n' "$c" "${MED[$c]}" "$(ratio "${MED[$c]}" "${MED[host]}")"
done
best=${MED[podman-default]}
if awk -v a="${MED[podman-slirp]}" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=${MED[podman-slirp]}; fi
echo "   all addresses, loopback client: skiff default / podman default: $(ratio "${MED[skiff-default-any]}" "${MED[podman-default-any]}")x"
[ -z "$EXT_IP" ] ||
    echo "   all addresses, client on $EXT_IP: skiff default / podman default: $(ratio "${MED[skiff-default-ext]}" "${MED[podman-default-ext]}")x"
echo "   skiff-slirp / best podman: $(ratio "${MED[skiff-slirp]}" "$best")x;" \
    "skiff-pasta / best podman: $(ratio "${MED[skiff-pasta]}" "$best")x;" \
    "skiff-slirp-any / podman-slirp: $(ratio "${MED[skiff-slirp-any]}" "${MED[podman-slirp]}")x"
