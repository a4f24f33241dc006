#!/usr/bin/env bash
# bench/push-bench.sh: push of a ~100 MB multi-layer image to a loopback registry,
# skiff vs podman.
#
# Usage: bench/push-bench.sh [-n ROUNDS] [--bin-dir DIR] [--mb SIZE]
#
# Starts two of Debian's docker-registry on 127.0.0.1 (config and storage in the temp
# dir): the source, where skopeo pushes an OCI layout written with python3 (a busybox
# layer and three layers of incompressible data, SIZE MB in all, default 100), and the
# targets. skiff and podman each pull the image from the source once; then
# `skiff push IMG TARGET/skiff/app:1` and `podman push --tls-verify=false IMG
# TARGET/podman/app:1` are timed ROUNDS times each (default 5), interleaved, each round
# to a new, empty target registry: every blob is uploaded, and neither side can mount
# a blob from a repository it pushed to before (podman remembers where it pushed blobs
# and mounts them from there when it can). skiff sends
# the layers as stored (gzip, as pulled); podman stores layers uncompressed and
# compresses them again on push (its default). Prints the median and p90 in ms and the
# ratio of the medians.
#
# Binaries: --bin-dir DIR, else $SKIFF_BIN_DIR, else `cargo build --release`. As root:
# re-runs itself as the test user (see bench/common.sh).
set -euo pipefail

BENCH=push-bench
ROUNDS=5
MB=100
BIN_DIR=${SKIFF_BIN_DIR:-}

usage() {
    echo "usage: $0 [-n ROUNDS] [--bin-dir DIR] [--mb SIZE]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --mb) [ $# -ge 2 ] || usage; MB=$2; shift ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: -n needs a positive integer" >&2; exit 2; }
[[ "$MB" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: --mb needs a positive integer" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_reexec_as_user -n "$ROUNDS" --mb "$MB"
for c in docker-registry skopeo; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (apt-get install docker-registry skopeo)"
done
bench_setup

REG_PIDS=()
stop_registries() {
    local p
    for p in "${REG_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
# The registries go first, then common.sh's cleanup.
trap 'stop_registries; bench_cleanup' EXIT

# start_registry NAME PORT: a registry on 127.0.0.1:PORT, storage under $T/NAME.
start_registry() {
    local name=$1 port=$2
    mkdir -p "$T/$name"
    cat >"$T/$name/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $T/$name/storage
http:
  addr: 127.0.0.1:$port
EOF
    docker-registry serve "$T/$name/config.yml" >"$T/$name/log" 2>&1 &
    REG_PIDS+=($!)
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    die "docker-registry $name did not listen: $(cat "$T/$name/log")"
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
start_registry source "$PORT"

echo "== building a ${MB} MB image and pushing it"
python3 "$HERE/oci-layout.py" "$T/layout" "$MB" "$(command -v busybox)"
skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
    "oci:$T/layout:big" "docker://127.0.0.1:$PORT/bench/big:1" ||
    die "skopeo copy failed: $(cat "$T/registry/log")"
REF=127.0.0.1:$PORT/bench/big:1
"${SKIFF_CLI[@]}" pull -q "$REF" >/dev/null || die "skiff pull failed"
"${PODMAN[@]}" pull -q --tls-verify=false "$REF" >/dev/null || die "podman pull failed"
echo "   podman storage driver: $PODMAN_DRIVER; skiff: up to 3 parallel blob uploads"

one_round() {
    local n=$1 tport
    tport=$(free_port)
    start_registry "target-$n" "$tport"
    timed skiff "${SKIFF_CLI[@]}" push -q "$REF" "127.0.0.1:$tport/skiff/app:1"
    timed podman "${PODMAN[@]}" push -q --tls-verify=false "$REF" "127.0.0.1:$tport/podman/app:1"
    kill "${REG_PIDS[-1]}" 2>/dev/null || true
    wait "${REG_PIDS[-1]}" 2>/dev/null || true
    rm -rf "$T/target-$n"
}

echo "== warm-up"
one_round 0
rm -f "$T/skiff.times" "$T/podman.times"

echo "== $ROUNDS rounds, interleaved, a new target registry each"
for i in $(seq "$ROUNDS"); do
    one_round "$i"
done

read -r s_med s_p90 < <(stats "$T/skiff.times")
read -r p_med p_p90 < <(stats "$T/podman.times")
echo "== push of ${MB} MB (4 layers) to 127.0.0.1, $ROUNDS rounds"
printf '   %-8s median %9s ms   p90 %9s ms\n' skiff "$s_med" "$s_p90" podman "$p_med" "$p_p90"
echo "   ratio skiff/podman (median): $(ratio "$s_med" "$p_med")"
