#!/usr/bin/env bash
# bench/format-bench.sh: Go templates on many containers, skiff vs podman+runc:
# `ps -a --format '{{.Names}}'` and `inspect -f '{{.State.Status}}'` of one container.
#
# Usage: bench/format-bench.sh [-n CONTAINERS] [-r ROUNDS] [--bin-dir DIR] [-j JOBS]
#
# 1. Creates CONTAINERS (default 1000) containers in each, `skiff create --name fb-I
#    IMG true` and `podman create --name fb-I localhost/IMG true`, JOBS at a time
#    (default 4; not measured).
# 2. Checks that `ps -a --format '{{.Names}}'` prints CONTAINERS names in each and that
#    `inspect -f '{{.State.Status}}' fb-1` prints `created`, then times ROUNDS (default
#    20) runs of each command in each tool, interleaved (one warm-up each), and prints
#    the median, the p90 and the ratio skiff/podman of the medians.
#
# Setup, binaries (--bin-dir DIR, else $SKIFF_BIN_DIR, else cargo build --release),
# running as root (re-runs itself as the test user) and cleanup are bench/common.sh's.
set -euo pipefail

BENCH=format-bench
COUNT=1000
ROUNDS=20
JOBS=4
BIN_DIR=${SKIFF_BIN_DIR:-}

usage() {
    echo "usage: $0 [-n CONTAINERS] [-r ROUNDS] [--bin-dir DIR] [-j JOBS]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; COUNT=$2; shift ;;
        -r) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        -j) [ $# -ge 2 ] || usage; JOBS=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
for v in "$COUNT" "$ROUNDS" "$JOBS"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: -n, -r and -j need positive integers" >&2; exit 2; }
done

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_reexec_as_user -n "$COUNT" -r "$ROUNDS" -j "$JOBS"
bench_setup
echo "   podman storage driver: $PODMAN_DRIVER; $COUNT containers each"

create_all() {
    local tool=$1 rc=0
    shift
    seq "$COUNT" | xargs -P "$JOBS" -I{} "$@" >/dev/null 2>"$T/create-$tool.err" || rc=$?
    if [ "$rc" != 0 ]; then
        tail -n 20 "$T/create-$tool.err" >&2
        die "$tool create failed (xargs exit $rc)"
    fi
}
echo "== creating $COUNT containers in each, $JOBS at a time"
create_all skiff "${SKIFF_CLI[@]}" create --name "fb-{}" "$IMAGE" true
create_all podman "${PODMAN[@]}" create --name "fb-{}" "localhost/$IMAGE" true

# check CMD... : output must be EXPECTED lines, the first matching PATTERN.
check() {
    local lines=$1 pattern=$2 out
    shift 2
    out=$("$@" 2>&1 </dev/null) || { echo "$out" >&2; die "failed: $*"; }
    [ "$(printf '%s\n' "$out" | wc -l)" = "$lines" ] ||
        { printf '%s\n' "$out" | head -n 5 >&2; die "$* printed $(printf '%s\n' "$out" | wc -l) lines, not $lines"; }
    printf '%s\n' "$out" | head -n 1 | grep -Eq "$pattern" ||
        die "$*: first line $(printf '%s\n' "$out" | head -n 1), not /$pattern/"
}
check "$COUNT" '^fb-[0-9]+$' "${SKIFF_CLI[@]}" ps -a --format '{{.Names}}'
check "$COUNT" '^fb-[0-9]+$' "${PODMAN[@]}" ps -a --format '{{.Names}}'
check 1 '^created$' "${SKIFF_CLI[@]}" inspect -f '{{.State.Status}}' fb-1
check 1 '^created$' "${PODMAN[@]}" inspect -f '{{.State.Status}}' fb-1

report() {
    printf '   %-44s median %8.1f ms   p90 %8.1f ms\n' "skiff $1" "$s_med" "$s_p90"
    printf '   %-44s median %8.1f ms   p90 %8.1f ms\n' "podman $1" "$p_med" "$p_p90"
    printf '   %-44s %s\n' "ratio skiff/podman (medians)" "$r"
}

echo "== ps -a --format '{{.Names}}' ($COUNT containers)"
SKIFF_CMD=("${SKIFF_CLI[@]}" ps -a --format '{{.Names}}')
PODMAN_CMD=("${PODMAN[@]}" ps -a --format '{{.Names}}')
interleave "$ROUNDS"
report "ps -a --format '{{.Names}}'"
ps_line=$(report "ps -a --format '{{.Names}}'")

echo "== inspect -f '{{.State.Status}}' fb-1 ($COUNT containers)"
SKIFF_CMD=("${SKIFF_CLI[@]}" inspect -f '{{.State.Status}}' fb-1)
PODMAN_CMD=("${PODMAN[@]}" inspect -f '{{.State.Status}}' fb-1)
interleave "$ROUNDS"
report "inspect -f '{{.State.Status}}'"

echo "== summary"
echo "$ps_line"
report "inspect -f '{{.State.Status}}'"
