#!/usr/bin/env bash
# bench/exec-bench.sh: exec latency into a running container, skiff vs podman+runc.
#
# Usage: bench/exec-bench.sh [-n ROUNDS] [--bin-dir DIR]
#
# Starts one `sleep` container on each side (same busybox image, scripts/mkrootfs.sh;
# network none on both, so no userspace network helper is involved), then times
# `skiff exec box true` against `podman --runtime runc exec box true`, ROUNDS times
# each (default 30) interleaved, after one warm-up each, and prints the median and
# p90 in ms and the ratio of the medians. Any failing exec aborts with its output.
#
# Setup, staging (as root: release build, re-run as the test user) and cleanup are
# bench/common.sh's.
set -euo pipefail

BENCH=exec-bench
ROUNDS=30
BIN_DIR=${SKIFF_BIN_DIR:-}

usage() {
    echo "usage: $0 [-n ROUNDS] [--bin-dir DIR]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        -n*) ROUNDS=${1#-n} ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "exec-bench: -n needs a positive integer" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_reexec_as_user -n "$ROUNDS"
bench_setup

echo "   podman storage driver: $PODMAN_DRIVER; both containers with --network none"
"${SKIFF_CLI[@]}" run -d --name box --network none "$IMAGE" sleep 100000 >/dev/null ||
    die "skiff could not start the container"
"${PODMAN[@]}" run -d --name box --network none "localhost/$IMAGE" sleep 100000 >/dev/null ||
    die "podman could not start the container"

SKIFF_CMD=("${SKIFF_CLI[@]}" exec box true)
PODMAN_CMD=("${PODMAN[@]}" exec box true)

interleave "$ROUNDS"

echo "== results ($ROUNDS execs each)"
printf '   %-40s median %8.1f ms   p90 %8.1f ms\n' "skiff exec box true" "$s_med" "$s_p90"
printf '   %-40s median %8.1f ms   p90 %8.1f ms\n' "podman --runtime runc exec box true" "$p_med" "$p_p90"
echo "skiff exec box true: median $s_med ms; podman: $p_med ms; ratio ${r}x"
