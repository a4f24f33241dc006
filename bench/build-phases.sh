#!/usr/bin/env bash
# bench/build-phases.sh: where the time of a cold `skiff build --no-cache` of
# build-bench.sh's Dockerfile goes, phase by phase.
#
# Usage: bench/build-phases.sh [-n ROUNDS] [--files N] [--file-kib K] [--bin-dir DIR]
#                              [--keep-log FILE] [--fresh] [--podman]
#
# The context and Dockerfile are bench/build-bench.sh's (FROM busybox, COPY N files of
# K KiB, two RUN steps, ENV, CMD). skiffd runs with `--log-level
# warn,skiff::phase=debug`: skiffd, its helpers (the unpack and commit helpers) and the
# RUN containers' monitors log a timestamp (µs since the epoch) at each phase
# (src/phase.rs). After one warm-up, ROUNDS (default 5) cold builds run one after the
# other; the wall time is noted just before the CLI starts (cli-exec) and just after it
# exits (cli-exit). For each round the marks between the two are taken, and one row per
# phase is printed in order: the median time from cli-exec to the mark and the step from
# the row above (what that phase cost). A mark reached more than once in a round (one
# per step, per RUN container) gets #2, #3, ...
# With --fresh, one context file gets new bytes before each build (as in
# build-bench.sh --fresh), so the COPY layer is new and extracted every time; without
# it the store holds it from the warm-up and it is not extracted again. With --podman,
# a `podman build --no-cache` of the same context runs (untimed) before each round, as
# in build-bench.sh's interleaved rounds (its writes and deletions are then the disk's
# recent history).
#
# Setup, binaries (--bin-dir DIR, else $SKIFF_BIN_DIR, else cargo build --release),
# running as root (re-runs itself as the test user) and cleanup are bench/common.sh's.
set -euo pipefail

BENCH=build-phases
ROUNDS=5
FILES=1000
KIB=50
BIN_DIR=${SKIFF_BIN_DIR:-}
SKIFFD_ARGS=()
KEEP_LOG=""
FRESH=""
WITH_PODMAN=""

usage() {
    echo "usage: $0 [-n ROUNDS] [--files N] [--file-kib K] [--bin-dir DIR] [--keep-log FILE] [--fresh] [--podman]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        --files) [ $# -ge 2 ] || usage; FILES=$2; shift ;;
        --file-kib) [ $# -ge 2 ] || usage; KIB=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --keep-log) [ $# -ge 2 ] || usage; KEEP_LOG=$2; shift ;;
        --fresh) FRESH=1 ;;
        --podman) WITH_PODMAN=1 ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
for v in "$ROUNDS" "$FILES" "$KIB"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: -n, --files and --file-kib take positive integers" >&2; exit 2; }
done

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

args=(-n "$ROUNDS" --files "$FILES" --file-kib "$KIB")
[ -z "$KEEP_LOG" ] || args+=(--keep-log "$KEEP_LOG")
[ -z "$FRESH" ] || args+=(--fresh)
[ -z "$WITH_PODMAN" ] || args+=(--podman)
bench_reexec_as_user "${args[@]}"
SKIFFD_ARGS+=(--log-level "warn,skiff::phase=debug")
bench_setup

CTX=$T/ctx
bench_build_context "$CTX" "$FILES" "$KIB"
SKIFF_CMD=("${SKIFF_CLI[@]}" build --no-cache --build-arg "BASE=$IMAGE" -t bench/built "$CTX")

echo "== warm-up"
timed skiff "${SKIFF_CMD[@]}"
: >"$T/rounds"
echo "== $ROUNDS cold builds ($FILES files of $KIB KiB${FRESH:+, one changed before each}), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$ROUNDS"); do
    [ -z "$FRESH" ] || head -c $((KIB * 1024)) /dev/urandom >"$CTX/data/d0/f00000.bin"
    [ -z "$WITH_PODMAN" ] || TIMED_STDOUT=/dev/null timed podman "${PODMAN[@]}" build --pull=never \
        --no-cache --build-arg "BASE=localhost/$IMAGE" -t bench/built "$CTX"
    t0=${EPOCHREALTIME//[!0-9]/}
    timed skiff "${SKIFF_CMD[@]}"
    t1=${EPOCHREALTIME//[!0-9]/}
    echo "$t0 $t1" >>"$T/rounds"
    printf '.'
done
echo
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "$KEEP_LOG" ] || cp "$T/skiffd.log" "$KEEP_LOG"

python3 "$HERE/phase-table.py" "$T/rounds" "$T/skiffd.log" build-phases "phases of a cold build"
