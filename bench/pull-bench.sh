#!/usr/bin/env bash
# bench/pull-bench.sh: pull of a ~100 MB multi-layer image from a loopback registry,
# skiff vs podman.
#
# Usage: bench/pull-bench.sh [-n ROUNDS] [--bin-dir DIR] [--mb SIZE]
#
# Starts Debian's docker-registry on 127.0.0.1 (config and storage in the temp dir),
# writes an OCI layout with python3 (a busybox layer and three layers of
# incompressible data, SIZE MB in all, default 100), pushes it with skopeo, then times
# `skiff pull -q` against `podman pull -q --tls-verify=false` ROUNDS times each
# (default 5), interleaved, each pull into an empty store: skiff gets a fresh skiffd
# with a fresh data directory per round, podman's image is removed after each pull.
# Prints the median and p90 in ms and the ratio of the medians.
#
# Binaries: --bin-dir DIR, else $SKIFF_BIN_DIR, else `cargo build --release`. As root:
# re-runs itself as the test user (see bench/common.sh).
set -euo pipefail

BENCH=pull-bench
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

REG_PID=""
stop_registry() {
    if [ -n "$REG_PID" ]; then
        kill "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
    fi
}
# The registry goes first, then common.sh's cleanup; skiffds of the rounds are
# stopped as they end.
trap 'stop_registry; bench_cleanup' EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$T/registry"
cat >"$T/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $T/registry/storage
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$T/registry/config.yml" >"$T/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

echo "== building a ${MB} MB image and pushing it"
python3 "$HERE/oci-layout.py" "$T/layout" "$MB" "$(command -v busybox)"
skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
    "oci:$T/layout:big" "docker://127.0.0.1:$PORT/bench/big:1" ||
    die "skopeo copy failed: $(cat "$T/registry/log")"
REF=127.0.0.1:$PORT/bench/big:1
echo "   podman storage driver: $PODMAN_DRIVER; skiff: up to 3 parallel blob downloads"
du -sh "$T/registry/storage" | sed 's/^/   registry storage: /'

# A fresh skiffd with an empty store for each skiff round.
ROUND_PID=""
skiff_round_start() {
    local n=$1
    mkdir -p "$T/round-$n/data" "$T/round-$n/run"
    chmod 700 "$T/round-$n/run"
    XDG_DATA_HOME=$T/round-$n/data RUST_LOG=warn "$SKIFFD" --bus-address "$ADDR" \
        2>>"$T/skiffd.log" &
    ROUND_PID=$!
    for _ in $(seq 100); do
        name_has_owner && return 0
        sleep 0.05
    done
    die "round skiffd did not take $BUS_NAME"
}
skiff_round_stop() {
    local n=$1
    kill "$ROUND_PID" 2>/dev/null || true
    wait "$ROUND_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        name_has_owner || break
        sleep 0.05
    done
    # Layers belong to subordinate ids: delete inside a user namespace.
    rm -rf "$T/round-$n" 2>/dev/null ||
        unshare --map-root-user --map-auto rm -rf "$T/round-$n" 2>/dev/null || true
}

# The setup's skiffd makes way for the per-round ones.
kill "$SKIFFD_PID" 2>/dev/null || true
wait "$SKIFFD_PID" 2>/dev/null || true
SKIFFD_PID=""
for _ in $(seq 100); do
    name_has_owner || break
    sleep 0.05
done

PODMAN_PULL=("${PODMAN[@]}" pull -q --tls-verify=false "$REF")
SKIFF_PULL=("${SKIFF_CLI[@]}" pull -q "$REF")

one_round() {
    local n=$1
    skiff_round_start "$n"
    timed skiff "${SKIFF_PULL[@]}"
    skiff_round_stop "$n"
    timed podman "${PODMAN_PULL[@]}"
    "${PODMAN[@]}" rmi -f "$REF" >/dev/null
}

echo "== warm-up"
one_round 0
rm -f "$T/skiff.times" "$T/podman.times"

echo "== $ROUNDS rounds, interleaved, empty stores"
for i in $(seq "$ROUNDS"); do
    one_round "$i"
done

read -r s_med s_p90 < <(stats "$T/skiff.times")
read -r p_med p_p90 < <(stats "$T/podman.times")
echo "== pull of ${MB} MB (4 layers) from 127.0.0.1, $ROUNDS rounds"
printf '   %-8s median %9s ms   p90 %9s ms\n' skiff "$s_med" "$s_p90" podman "$p_med" "$p_p90"
echo "   ratio skiff/podman (median): $(ratio "$s_med" "$p_med")"
