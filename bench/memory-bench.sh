#!/usr/bin/env bash
# bench/memory-bench.sh: the memory each idle running container costs outside itself,
# skiff vs podman+runc, over many containers, and skiffd's own growth per container.
#
# Usage: bench/memory-bench.sh [-n CONTAINERS] [--bin-dir DIR] [--network MODE]
#                              [--storage-driver D] [--breakdown]
#
# 1. Reads skiffd's VmRSS and Pss, then starts CONTAINERS (default 100) idle containers
#    in skiff, `skiff run -d [--network MODE] IMG sleep 100000`, and notes the processes
#    of this run (bench_procs in common.sh) that are new, less each container's own
#    (its init, State.Pid, and what runs below it). For skiff that is, per container, the
#    monitor (skiff-monitor), the FUSE rootfs server (fuse storage, a fork of the
#    monitor) and the network helper (slirp4netns or pasta; none with --network none);
#    the port relay is a thread of the monitor. (pasta makes itself non-dumpable: its
#    memory cannot be read as the user, so it shows no row; read it as root.) Reads skiffd again: its growth divided
#    by CONTAINERS is the daemon's cost per container.
# 2. The same in podman: `podman run -d [--network MODE] IMG sleep 100000`; what stays
#    is conmon, plus slirp4netns (or pasta) with networking, and podman's rootless pause
#    process, which is shared by all containers and shown apart.
# 3. Prints, for each side, the processes by name (count, mean VmRSS, mean Pss, mean
#    anonymous) and the sums per container: VmRSS (/proc/PID/status) and Pss
#    (/proc/PID/smaps_rollup; pages shared between processes are split among them, so
#    the Pss sum over all of a side's processes divided by CONTAINERS is what each
#    container costs), and the ratios.
# 4. With --breakdown: for one process of each name on each side, where its memory is
#    (bench/smaps-breakdown.py: the program's text, relocations and data, heap, thread
#    stacks, malloc arenas, other anonymous mappings; Rss, Pss and private dirty KiB).
#
# Setup, binaries (--bin-dir DIR, else $SKIFF_BIN_DIR, else cargo build --release),
# running as root (re-runs itself as the test user) and cleanup are bench/common.sh's.
set -euo pipefail

BENCH=memory-bench
COUNT=100
BIN_DIR=${SKIFF_BIN_DIR:-}
NET=""
SKIFFD_ARGS=()
BREAKDOWN=""
SETTLE=5

usage() {
    echo "usage: $0 [-n CONTAINERS] [--bin-dir DIR] [--network MODE] [--storage-driver D] [--breakdown]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; COUNT=$2; shift ;;
        -n*) COUNT=${1#-n} ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --network) [ $# -ge 2 ] || usage; NET=$2; shift ;;
        --storage-driver) [ $# -ge 2 ] || usage; SKIFFD_ARGS=(--storage-driver "$2"); shift ;;
        --breakdown) BREAKDOWN=1 ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
[[ "$COUNT" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: -n needs a positive integer" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

args=(-n "$COUNT")
[ -z "$NET" ] || args+=(--network "$NET")
args+=(${SKIFFD_ARGS[@]+"${SKIFFD_ARGS[@]}"})
[ -z "$BREAKDOWN" ] || args+=(--breakdown)
bench_reexec_as_user "${args[@]}"
bench_setup
echo "   podman storage driver: $PODMAN_DRIVER; skiff storage: ${SKIFFD_ARGS[1]:-default};" \
    "network: ${NET:-defaults}; $COUNT containers each"

# mem PID...: "pid comm VmRSS Pss Anonymous" (KiB) of each PID that still runs.
mem() {
    python3 - "$@" <<'PY'
import sys
def field(path, name):
    with open(path) as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise OSError("no %s in %s" % (name, path))
for pid in sys.argv[1:]:
    try:
        comm = open("/proc/%s/comm" % pid).read().strip()
        print(pid, comm, field("/proc/%s/status" % pid, "VmRSS"),
              field("/proc/%s/smaps_rollup" % pid, "Pss"),
              field("/proc/%s/smaps_rollup" % pid, "Anonymous"))
    except OSError:
        pass
PY
}

# start_all TOOL INSPECT CMD...: run CMD COUNT times (each prints a container id), then
# write "keeper init" per container to $T/pids.TOOL using INSPECT ID.
skiff_pids() {
    "${SKIFF_CLI[@]}" inspect "$1" |
        python3 -c 'import json, sys; s = json.load(sys.stdin)[0]["State"]; print(s["MonitorPid"], s["Pid"])'
}
podman_pids() {
    "${PODMAN[@]}" inspect --format '{{.State.ConmonPid}} {{.State.Pid}}' "$1"
}
start_all() {
    local tool=$1 inspect=$2 i id t0 t1
    shift 2
    : >"$T/pids.$tool"
    t0=${EPOCHREALTIME//[!0-9]/}
    for i in $(seq "$COUNT"); do
        id=$("$@" 2>"$T/err" </dev/null) || { cat "$T/err" >&2; die "$tool: start $i failed"; }
        "$inspect" "$(tail -n 1 <<<"$id")" >>"$T/pids.$tool"
        [ $((i % 10)) != 0 ] || printf '.'
    done
    t1=${EPOCHREALTIME//[!0-9]/}
    printf ' %s: %d starts in %.1f s\n' "$tool" "$COUNT" "$(awk -v us=$((t1 - t0)) 'BEGIN { print us / 1e6 }')"
}

# left_behind TOOL BEFORE AFTER: mem of the pids in AFTER not in BEFORE and not in (or
# below) a container's init from $T/pids.TOOL, to $T/mem.TOOL.
left_behind() {
    local tool=$1
    # shellcheck disable=SC2046 # one pid per word
    python3 - "$T/pids.$tool" "$2" "$3" >"$T/new.$tool" <<'PY'
import sys
inits = {int(l.split()[1]) for l in open(sys.argv[1]) if l.strip()}
before = {int(l) for l in open(sys.argv[2]) if l.strip()}
after = [int(l) for l in open(sys.argv[3]) if l.strip()]
def ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])
def in_container(pid):
    while pid > 1:
        if pid in inits:
            return True
        try:
            pid = ppid(pid)
        except OSError:
            return False
    return False
for pid in after:
    if pid not in before and not in_container(pid):
        print(pid)
PY
    # shellcheck disable=SC2046 # one pid per word
    mem $(cat "$T/new.$tool") >"$T/mem.$tool"
}

# breakdown TOOL: bench/smaps-breakdown.py on the first process of each name in
# $T/mem.TOOL (with --breakdown).
breakdown() {
    [ -n "$BREAKDOWN" ] || return 0
    # shellcheck disable=SC2046 # one pid per word
    python3 "$(dirname "${BASH_SOURCE[0]}")/smaps-breakdown.py" $(awk '!seen[$2]++ { print $1 }' "$T/mem.$1")
}

# report TOOL: the processes by name and the per-container sums; sets rss_TOOL pss_TOOL.
report() {
    local tool=$1 shared=${2:-}
    awk -v n="$COUNT" -v shared="$shared" -v tool="$tool" '
        $1 == shared { printf "      (shared, not counted) %-14s VmRSS %6d KiB  Pss %6d KiB\n", $2, $3, $4; next }
        { c[$2]++; r[$2] += $3; p[$2] += $4; a[$2] += $5; R += $3; P += $4 }
        END {
            for (k in c)
                printf "      %-16s x%-4d mean VmRSS %6.0f KiB  Pss %6.0f KiB  anon %6.0f KiB\n", k, c[k], r[k] / c[k], p[k] / c[k], a[k] / c[k]
            printf "   %s per container: VmRSS %.0f KiB, Pss %.0f KiB\n", tool, R / n, P / n
            printf "%.0f %.0f\n", R / n, P / n > "/dev/stderr"
        }' "$T/mem.$tool" 2>"$T/sum.$tool"
}

skiff_run=("${SKIFF_CLI[@]}" run -d)
podman_run=("${PODMAN[@]}" run -d)
if [ -n "$NET" ]; then
    skiff_run+=(--network "$NET")
    podman_run+=(--network "$NET")
fi

echo "== skiff: $COUNT idle containers"
read -r _ _ d0_rss d0_pss _ < <(mem "$SKIFFD_PID")
bench_procs >"$T/procs.0"
start_all skiff skiff_pids "${skiff_run[@]}" "$IMAGE" sleep 100000
sleep "$SETTLE" # let the starts settle (idle FUSE servers trim their heap after 1-2 s)
bench_procs >"$T/procs.1"
read -r _ _ d1_rss d1_pss _ < <(mem "$SKIFFD_PID")
left_behind skiff "$T/procs.0" "$T/procs.1"
report skiff
breakdown skiff

echo "== podman: $COUNT idle containers"
start_all podman podman_pids "${podman_run[@]}" "localhost/$IMAGE" sleep 100000
sleep "$SETTLE"
bench_procs >"$T/procs.2"
left_behind podman "$T/procs.1" "$T/procs.2"
pause=$(cat "$T/run/libpod/tmp/pause.pid" 2>/dev/null || true)
report podman "$pause"
breakdown podman

read -r s_rss s_pss <"$T/sum.skiff"
read -r p_rss p_pss <"$T/sum.podman"
echo "== summary ($COUNT idle containers each, network ${NET:-defaults})"
echo "per container, VmRSS / Pss: skiff $s_rss / $s_pss KiB; podman $p_rss / $p_pss KiB;" \
    "ratio $(ratio "$s_rss" "$p_rss")x / $(ratio "$s_pss" "$p_pss")x"
awk -v n="$COUNT" -v r0="$d0_rss" -v r1="$d1_rss" -v p0="$d0_pss" -v p1="$d1_pss" 'BEGIN {
    printf "skiffd: VmRSS %d -> %d KiB, Pss %d -> %d KiB; growth per container VmRSS %.1f KiB, Pss %.1f KiB\n",
        r0, r1, p0, p1, (r1 - r0) / n, (p1 - p0) / n }'
