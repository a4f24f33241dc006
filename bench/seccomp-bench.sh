#!/usr/bin/env bash
# bench/seccomp-bench.sh: what the default seccomp filter costs a container's start.
#
# Usage: bench/seccomp-bench.sh [-n ROUNDS] [--bin-dir DIR]
#
# Times `skiff run --rm --network none IMG true` with the default seccomp profile
# against the same with `--security-opt seccomp=unconfined`, ROUNDS times each
# (default 40) interleaved, after one warm-up each (which also puts the compiled
# default filter in skiffd's cache), and prints the median and p90 in ms, the
# difference of the medians and their ratio. Both sides have docker's default
# capabilities; only the filter differs. Network none: no userspace network helper
# adds noise.
#
# Setup, staging (as root: release build, re-run as the test user) and cleanup are
# bench/common.sh's (its podman side is set up but not timed here).
set -euo pipefail

BENCH=seccomp-bench
ROUNDS=40
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
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "seccomp-bench: -n needs a positive integer" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_reexec_as_user -n "$ROUNDS"
bench_setup

# interleave times SKIFF_CMD as "skiff" and PODMAN_CMD as "podman": here both are skiff.
SKIFF_CMD=("${SKIFF_CLI[@]}" run --rm --network none "$IMAGE" true)
PODMAN_CMD=("${SKIFF_CLI[@]}" run --rm --network none --security-opt seccomp=unconfined "$IMAGE" true)

interleave "$ROUNDS"

diff=$(awk -v a="$s_med" -v b="$p_med" 'BEGIN { printf "%.2f", a - b }')
echo "== results ($ROUNDS runs each)"
printf '   %-48s median %8.1f ms   p90 %8.1f ms\n' "skiff run --rm IMG true (default seccomp)" "$s_med" "$s_p90"
printf '   %-48s median %8.1f ms   p90 %8.1f ms\n' "skiff run --rm --security-opt seccomp=unconfined" "$p_med" "$p_p90"
echo "default profile vs unconfined: median $s_med ms vs $p_med ms; difference ${diff} ms; ratio ${r}x"
