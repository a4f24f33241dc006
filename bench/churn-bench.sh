#!/usr/bin/env bash
# bench/churn-bench.sh: a metadata-heavy workload inside a container on skiff's FUSE
# storage driver, on its kernel-overlay driver, and on podman (kernel overlay), in one
# run, interleaved.
#
# Usage: bench/churn-bench.sh [-n ROUNDS] [--files N] [--bin-dir DIR] [--baseline DIR]
#
# --baseline DIR adds a fourth candidate, "base": the fuse driver with the skiff,
# skiffd (and skiff-monitor) in DIR (e.g. main's release build), same bus and image
# store, to compare a change side by side in the same run.
#
# The workload (busybox sh in the busybox image of scripts/mkrootfs.sh, on the
# container's root filesystem, so through the storage driver):
#   create  N small files in 20 directories (shell redirections: no fork per file)
#   lsR     ls -lR of them (a stat and the label question per file)
#   find    find -type f of them, and ls -lR of the image's own (lower-layer) /bin /etc
#   rename  mv of every file (busybox mv: one fork+exec of /bin/mv per file)
#   rm      rm -rf of the whole tree
# Each candidate runs `run --rm IMG true` (the start cost) and `run --rm IMG sh -c
# WORKLOAD` in every round; the figure is the median of (workload - start of the same
# round), in ms. skiffd is restarted with the other storage driver between its two
# candidates (same image store). ROUNDS (default 5) rounds after one warm-up of each;
# the candidates' order rotates from round to round.
#
# As root it stages the binaries and re-runs itself as the test user (bench/common.sh).
# The stores are made under TMPDIR (default /tmp): the create phase depends on that
# filesystem more than on the drivers (see bench_storage_line in bench/common.sh), so the
# first line of the output says which one it is; e.g. TMPDIR=/mnt/ext4-journaled.
set -euo pipefail

BENCH=churn-bench
ROUNDS=5
FILES=2000
BIN_DIR=${SKIFF_BIN_DIR:-}
BASE_DIR=""
SKIFFD_ARGS=(--storage-driver fuse)

usage() {
    echo "usage: $0 [-n ROUNDS] [--files N] [--bin-dir DIR] [--baseline DIR]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        --files) [ $# -ge 2 ] || usage; FILES=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --baseline) [ $# -ge 2 ] || usage; BASE_DIR=$2; shift ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "churn-bench: -n needs a positive integer" >&2; exit 2; }
[[ "$FILES" =~ ^[1-9][0-9]*$ ]] || { echo "churn-bench: --files needs a positive integer" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ -n "$BASE_DIR" ]; then
    if [ ! -x "$BASE_DIR/skiff" ] || [ ! -x "$BASE_DIR/skiffd" ]; then
        echo "churn-bench: no skiff/skiffd in $BASE_DIR" >&2
        exit 2
    fi
    bench_reexec_as_user -n "$ROUNDS" --files "$FILES" --baseline "$BASE_DIR"
else
    bench_reexec_as_user -n "$ROUNDS" --files "$FILES"
fi
bench_setup

# The workload, run by the container's busybox sh (expanded there, but FILES).
# shellcheck disable=SC2016
WORKLOAD='set -e
mkdir /w && cd /w
d=0; while [ $d -lt 20 ]; do mkdir d$d; d=$((d+1)); done
i=0; while [ $i -lt '"$FILES"' ]; do echo "$i" > d$((i%20))/f$i; i=$((i+1)); done
ls -lR /w > /dev/null
find /w -type f | wc -l > /dev/null
ls -lR /bin /etc > /dev/null
i=0; while [ $i -lt '"$FILES"' ]; do mv d$((i%20))/f$i d$((i%20))/g$i; i=$((i+1)); done
ls -lR /w > /dev/null
cd / && rm -rf /w'

# restart_skiffd DRIVER [SKIFFD]: skiffd (or the given one) again on the same bus and
# state, with another driver.
restart_skiffd() {
    stop_pid "$SKIFFD_PID"
    RUST_LOG=${RUST_LOG:-warn} "${2:-$SKIFFD}" --bus-address "$ADDR" --storage-driver "$1" 2>>"$T/skiffd.log" &
    SKIFFD_PID=$!
    for _ in $(seq 100); do
        name_has_owner && return 0
        kill -0 "$SKIFFD_PID" 2>/dev/null || { tail -n 20 "$T/skiffd.log" >&2; die "skiffd exited"; }
        sleep 0.1
    done
    die "skiffd did not take $BUS_NAME"
}

# one CANDIDATE: its start run and its workload run, timed into CANDIDATE-{true,work}.times.
one() {
    local c=$1 run
    case "$c" in
        fuse | overlay) run=("${SKIFF_CLI[@]}" run --rm --network none "$IMAGE") ;;
        base) run=("$BASE_DIR/skiff" --bus-address "$ADDR" run --rm --network none "$IMAGE") ;;
        podman) run=("${PODMAN[@]}" run --rm --network none "localhost/$IMAGE") ;;
    esac
    timed "$c-true" "${run[@]}" true
    timed "$c-work" "${run[@]}" sh -c "$WORKLOAD"
}

CANDS="fuse overlay podman"
[ -z "$BASE_DIR" ] || CANDS="$CANDS base"
# start CANDIDATE: the skiffd it needs.
start_for() {
    case "$1" in
        fuse | overlay) restart_skiffd "$1" ;;
        base) restart_skiffd fuse "$BASE_DIR/skiffd" ;;
    esac
}
echo "== $FILES files; storage: $(bench_storage_line "$T"); podman storage driver: $PODMAN_DRIVER; warm-up"
for c in $CANDS; do
    start_for "$c"
    one "$c"
done
rm -f "$T"/*.times
echo "== $ROUNDS rounds, interleaved (the order rotates each round)"
read -ra order <<<"$CANDS"
for i in $(seq "$ROUNDS"); do
    # Round i starts with the (i-1)th candidate: no candidate always runs first (the
    # first one of a round ran measurably slower or faster, by ~6 %, in session 10).
    n=${#order[@]}
    for ((k = 0; k < n; k++)); do
        c=${order[$(((i - 1 + k) % n))]}
        start_for "$c"
        one "$c"
    done
    printf '.'
done
echo
echo "== results (ms; work = workload run - start run of the same round; median, p90)"
for c in $CANDS; do
    paste "$T/$c-work.times" "$T/$c-true.times" | awk '{ print $1 - $2 }' >"$T/$c-net.times"
    read -r med p90 < <(stats "$T/$c-net.times")
    read -r tmed _ < <(stats "$T/$c-true.times")
    eval "med_$c=$med"
    printf '   %-8s work median %8.1f   p90 %8.1f   (start median %6.1f)\n' "$c" "$med" "$p90" "$tmed"
    sed "s/^/   raw $c work+start us: /" "$T/$c-work.times" | paste -sd' ' >&2
done
# shellcheck disable=SC2154 # set by eval above
echo "fuse / overlay driver: $(ratio "$med_fuse" "$med_overlay")x; fuse / podman: $(ratio "$med_fuse" "$med_podman")x; overlay / podman: $(ratio "$med_overlay" "$med_podman")x"
if [ -n "$BASE_DIR" ]; then
    # shellcheck disable=SC2154 # set by eval above
    echo "base / overlay driver: $(ratio "$med_base" "$med_overlay")x; fuse / base: $(ratio "$med_fuse" "$med_base")x"
fi
