#!/usr/bin/env bash
# bench/build-bench.sh: `skiff build` vs `podman build` (buildah) of the same 6-step
# Dockerfile on the same context: a cold build and a fully cached rebuild.
#
# Usage: bench/build-bench.sh [-r ROUNDS] [--files N] [--file-kib K] [--bin-dir DIR]
#                              [--fresh]
#
# The context: N files (default 1000) of K KiB each (default 50; ~50 MB in all) of
# random bytes in 10 directories, and this Dockerfile (ARG BASE is the test busybox
# image: skiff's demo/busybox, podman's localhost/demo/busybox):
#
#     ARG BASE
#     FROM $BASE
#     COPY data/ /data/
#     RUN ls -R /data | wc -l > /count
#     RUN du -s /data > /du
#     ENV APP=bench
#     CMD ["cat", "/count"]
#
# 1. Cold: ROUNDS (default 5) builds of each with --no-cache, interleaved (one warm-up
#    each first, not counted). RUN steps use each tool's default build network.
# 2. Cached: one build of each fills its cache, then ROUNDS rebuilds each, interleaved;
#    every step must be a cache hit (skiff: "Using cache" for the 5 steps after FROM;
#    podman: "Using cache" likewise), else the bench aborts.
#    With --fresh, one file of the context gets new random bytes before each cold build
#    (of either tool, timed with it: ~1 ms), so the COPY layer is a new one every time:
#    without it, skiff's repeated cold builds copy the same files into a layer its store
#    holds already, which it does not extract again (podman makes a new one each time).
# Prints the median and p90 of each and the ratios skiff/podman of the medians. The
# aim (issue 17): <= 0.5 cold, <= 0.2 cached.
#
# Setup, binaries (--bin-dir DIR, else $SKIFF_BIN_DIR, else cargo build --release),
# running as root (re-runs itself as the test user) and cleanup are bench/common.sh's.
set -euo pipefail

BENCH=build-bench
ROUNDS=5
FILES=1000
KIB=50
BIN_DIR=${SKIFF_BIN_DIR:-}
FRESH=""

usage() {
    echo "usage: $0 [-r ROUNDS] [--files N] [--file-kib K] [--bin-dir DIR] [--fresh]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -r) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        --files) [ $# -ge 2 ] || usage; FILES=$2; shift ;;
        --file-kib) [ $# -ge 2 ] || usage; KIB=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --fresh) FRESH=1 ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
for v in "$ROUNDS" "$FILES" "$KIB"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: -r, --files and --file-kib take positive integers" >&2; exit 2; }
done

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_reexec_as_user -r "$ROUNDS" --files "$FILES" --file-kib "$KIB" ${FRESH:+--fresh}
bench_setup

CTX=$T/ctx
bench_build_context "$CTX" "$FILES" "$KIB"
echo "   context: $FILES files of $KIB KiB ($(du -sm "$CTX" | cut -f1) MB); podman storage driver: $PODMAN_DRIVER"

SKIFF_BUILD=("${SKIFF_CLI[@]}" build --build-arg "BASE=$IMAGE" -t bench/built "$CTX")
PODMAN_BUILD=("${PODMAN[@]}" build --pull=never --build-arg "BASE=localhost/$IMAGE" -t bench/built "$CTX")

# ---------------------------------------------------------------------------
# 1. Cold builds.
# ---------------------------------------------------------------------------
echo "== cold builds (--no-cache${FRESH:+, one file changed before each})"
# fresh CMD...: gives one context file new bytes, then runs CMD.
fresh() {
    head -c $((KIB * 1024)) /dev/urandom >"$CTX/data/d0/f00000.bin"
    "$@"
}
SKIFF_CMD=(${FRESH:+fresh} "${SKIFF_BUILD[@]}" --no-cache)
PODMAN_CMD=(${FRESH:+fresh} "${PODMAN_BUILD[@]}" --no-cache)
echo "   load average: $(cut -d' ' -f1-3 /proc/loadavg)"
interleave "$ROUNDS"
cold=("$s_med" "$s_p90" "$p_med" "$p_p90" "$r")

# ---------------------------------------------------------------------------
# 2. Cached rebuilds.
# ---------------------------------------------------------------------------
echo "== cached rebuilds"
SKIFF_CMD=("${SKIFF_BUILD[@]}")
PODMAN_CMD=("${PODMAN_BUILD[@]}")
# check_cached TOOL: the last build's output ($T/out) shows 5 cache hits.
check_cached() {
    local hits
    hits=$(cat "$T/out" "$T/err" | grep -c -i "using cache" || true)
    [ "$hits" -ge 5 ] || { cat "$T/out" "$T/err" >&2; die "$1: a rebuild was not all cache hits ($hits)"; }
}
interleave "$ROUNDS"
check_cached podman
timed skiff "${SKIFF_CMD[@]}"
check_cached skiff
cached=("$s_med" "$s_p90" "$p_med" "$p_p90" "$r")

echo "== results ($ROUNDS rounds each; ms)"
printf '   %-22s %10s %10s %10s %10s %8s\n' "" "skiff med" "skiff p90" "podman med" "podman p90" "ratio"
printf '   %-22s %10.1f %10.1f %10.1f %10.1f %8s\n' "cold (--no-cache${FRESH:+, fresh})" "${cold[@]}"
printf '   %-22s %10.1f %10.1f %10.1f %10.1f %8s\n' "cached rebuild" "${cached[@]}"
echo "   aim: cold <= 0.5, cached <= 0.2; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
