#!/usr/bin/env bash
# bench/run-bench.sh: container start-to-exit latency, skiff vs podman+runc.
#
# Usage: bench/run-bench.sh [-n ROUNDS] [--bin-dir DIR] [--baseline DIR] [--network MODE]
#                           [--podman-network MODE] [--storage-driver fuse|overlay|vfs]
#                           [--mounts] [--runtime-tmpfs]
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
# --baseline DIR         a second skiff build (skiff, skiffd, skiff-monitor in DIR, e.g.
#                        main's before a change), with a skiffd, bus and XDG dirs of its
#                        own, timed in the same rounds: before, after and podman in one
#                        run, with the ratio of the two builds.
# --network MODE         adds `--network MODE` to both skiff run and podman run (e.g.
#                        none: no userspace networking on either side; slirp4netns or
#                        pasta: the same helper on both sides).
# --podman-network MODE  adds `--network MODE` to podman run only.
# --storage-driver D     skiffd's storage driver (default: skiffd's own choice).
# --mounts               adds `-v VOL:/data -v DIR:/src` to both (a named volume made
#                        beforehand on each side, and a host directory): issue 13's
#                        `run --rm -v VOL:/data -v DIR:/src IMG true`.
# --runtime-tmpfs        both sides' runtime state (skiff's XDG_RUNTIME_DIR, podman's
#                        --runroot and runtime dir) on a tmpfs (/dev/shm), as under a
#                        systemd session's /run/user/UID; by default it is in the temp
#                        dir on /tmp with the rest (see bench/common.sh).
#
# Setup and cleanup are bench/common.sh's.
set -euo pipefail

BENCH=run-bench
ROUNDS=20
BIN_DIR=${SKIFF_BIN_DIR:-}
PODMAN_NET=""
SKIFF_NET=""
SKIFFD_ARGS=()
RUNTIME_TMPFS=""
MOUNTS=""

usage() {
    echo "usage: $0 [-n ROUNDS] [--bin-dir DIR] [--baseline DIR] [--network MODE] [--podman-network MODE] [--storage-driver D] [--mounts] [--runtime-tmpfs]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        -n*) ROUNDS=${1#-n} ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --baseline) [ $# -ge 2 ] || usage; BASE_DIR=$2; shift ;;
        --podman-network) [ $# -ge 2 ] || usage; PODMAN_NET=$2; shift ;;
        --network) [ $# -ge 2 ] || usage; SKIFF_NET=$2; PODMAN_NET=$2; shift ;;
        --storage-driver) [ $# -ge 2 ] || usage; SKIFFD_ARGS=(--storage-driver "$2"); shift ;;
        --mounts) MOUNTS=1 ;;
        --runtime-tmpfs) RUNTIME_TMPFS=1 ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "run-bench: -n needs a positive integer" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

args=(-n "$ROUNDS")
[ -z "$PODMAN_NET" ] || args+=(--podman-network "$PODMAN_NET")
[ -z "$SKIFF_NET" ] || args+=(--network "$SKIFF_NET")
args+=(${SKIFFD_ARGS[@]+"${SKIFFD_ARGS[@]}"})
[ -z "$MOUNTS" ] || args+=(--mounts)
[ "$RUNTIME_TMPFS" != 1 ] || args+=(--runtime-tmpfs)
bench_reexec_as_user "${args[@]}"
bench_setup
bench_baseline_setup

PODMAN_RUN=("${PODMAN[@]}" run --rm)
[ -z "$PODMAN_NET" ] || PODMAN_RUN+=(--network "$PODMAN_NET")

SKIFF_RUN=("${SKIFF_CLI[@]}" run --rm)
[ -z "$SKIFF_NET" ] || SKIFF_RUN+=(--network "$SKIFF_NET")
if [ -n "$MOUNTS" ]; then
    mkdir -p "$T/src"
    "${SKIFF_CLI[@]}" volume create benchvol >/dev/null
    "${PODMAN[@]}" volume create benchvol >/dev/null
    [ -z "$BASE_DIR" ] || "${BASE_CLI[@]}" volume create benchvol >/dev/null
    SKIFF_RUN+=(-v benchvol:/data -v "$T/src:/src")
    PODMAN_RUN+=(-v benchvol:/data -v "$T/src:/src")
fi
SKIFF_CMD=("${SKIFF_RUN[@]}" "$IMAGE" true)
if [ -n "$BASE_DIR" ]; then
    # The same command line, to the baseline's skiffd.
    BASE_CMD=("${BASE_CLI[@]}" "${SKIFF_RUN[@]:3}" "$IMAGE" true)
fi
PODMAN_CMD=("${PODMAN_RUN[@]}" "localhost/$IMAGE" true)

echo "   podman storage driver: $PODMAN_DRIVER${PODMAN_NET:+, podman network $PODMAN_NET}${SKIFF_NET:+, skiff network $SKIFF_NET}${MOUNTS:+, with -v VOL:/data -v DIR:/src}"

interleave "$ROUNDS"

echo "== results ($ROUNDS runs each)"
printf '   %-40s median %8.1f ms   p90 %8.1f ms\n' "skiff run --rm $IMAGE true" "$s_med" "$s_p90"
printf '   %-40s median %8.1f ms   p90 %8.1f ms\n' "podman --runtime runc run --rm ... true" "$p_med" "$p_p90"
if [ -n "$BASE_DIR" ]; then
    printf '   %-40s median %8.1f ms   p90 %8.1f ms\n' "baseline skiff run --rm $IMAGE true" "$b_med" "$b_p90"
    echo "baseline skiff run --rm true: median $b_med ms; ratio to podman ${rb}x; skiff/baseline $(ratio "$s_med" "$b_med")"
fi
echo "skiff run --rm true: median $s_med ms; podman: $p_med ms; ratio ${r}x"
