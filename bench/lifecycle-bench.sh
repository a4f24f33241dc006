#!/usr/bin/env bash
# bench/lifecycle-bench.sh: `ps -a` with many containers, and the memory that stays per
# idle running container, skiff vs podman+runc.
#
# Usage: bench/lifecycle-bench.sh [-n CONTAINERS] [--bin-dir DIR] [-j JOBS]
#
# 1. Creates CONTAINERS (default 1000) containers in each, `skiff create --name lc-I
#    IMG true` and `podman create --name lc-I localhost/IMG true`, JOBS at a time
#    (default 4; not the measurement: the wall time is printed for information).
# 2. Runs `skiff ps -a` and `podman ps -a` once each and checks that they print
#    CONTAINERS+1 lines, then times 5 runs of each, interleaved, output to /dev/null,
#    and prints the median, the slowest and the ratio of the medians.
# 3. Starts one idle container in each, `skiff run -d IMG sleep 1000`, then
#    `podman run -d --network none localhost/IMG sleep 1000`, then the same with
#    podman's default network (reported separately; skipped with a note if it fails),
#    and finds the processes that each start left behind outside the container: the
#    processes of this run (by their environment or command line, see bench_procs in
#    common.sh) that were not there before it, less the container's own. For skiff
#    that is its monitor (`skiff-monitor __monitor BUNDLE`, State.MonitorPid; its FUSE server `skiff-fuse`), for podman
#    conmon (State.ConmonPid) plus slirp4netns or pasta with networking. It prints
#    VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of each, their sums per
#    container and the ratios. Processes shared by all containers of a user are shown
#    apart: skiffd (the daemon, here with CONTAINERS+1 containers) and podman's
#    rootless pause process.
#
# Setup, binaries (--bin-dir DIR, else $SKIFF_BIN_DIR, else cargo build --release),
# running as root (re-runs itself as the test user) and cleanup are bench/common.sh's.
set -euo pipefail

BENCH=lifecycle-bench
COUNT=1000
JOBS=4
RUNS=5
BIN_DIR=${SKIFF_BIN_DIR:-}

usage() {
    echo "usage: $0 [-n CONTAINERS] [--bin-dir DIR] [-j JOBS]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; COUNT=$2; shift ;;
        -n*) COUNT=${1#-n} ;;
        -j) [ $# -ge 2 ] || usage; JOBS=$2; shift ;;
        -j*) JOBS=${1#-j} ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
[[ "$COUNT" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: -n needs a positive integer" >&2; exit 2; }
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: -j needs a positive integer" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_reexec_as_user -n "$COUNT" -j "$JOBS"
bench_setup
echo "   podman storage driver: $PODMAN_DRIVER; $COUNT containers each"

# ---------------------------------------------------------------------------
# 1. Create.
# ---------------------------------------------------------------------------
# create_all TOOL CMD...: run CMD COUNT times, JOBS at a time; abort on any failure.
create_all() {
    local tool=$1 t0 t1 rc=0
    shift
    t0=${EPOCHREALTIME//[!0-9]/}
    seq "$COUNT" | xargs -P "$JOBS" -I{} "$@" >/dev/null 2>"$T/create-$tool.err" || rc=$?
    t1=${EPOCHREALTIME//[!0-9]/}
    if [ "$rc" != 0 ]; then
        tail -n 20 "$T/create-$tool.err" >&2
        die "$tool create failed (xargs exit $rc)"
    fi
    printf '   %-7s %d creates in %.1f s\n' "$tool" "$COUNT" "$(awk -v us=$((t1 - t0)) 'BEGIN { print us / 1e6 }')"
}
echo "== creating $COUNT containers in each, $JOBS at a time"
# Named explicitly: skiffd picks a free random name before it registers the container,
# so parallel creates can pick the same one and one of them fails.
create_all skiff "${SKIFF_CLI[@]}" create --name "lc-{}" "$IMAGE" true
create_all podman "${PODMAN[@]}" create --name "lc-{}" "localhost/$IMAGE" true

# ---------------------------------------------------------------------------
# 2. ps -a.
# ---------------------------------------------------------------------------
SKIFF_PS=("${SKIFF_CLI[@]}" ps -a)
PODMAN_PS=("${PODMAN[@]}" ps -a)

# check_rows TOOL CMD...: CMD must print COUNT+1 lines (header and one per container).
check_rows() {
    local tool=$1 rows
    shift
    "$@" >"$T/ps-$tool.out" 2>"$T/err" </dev/null || { cat "$T/err" >&2; die "$tool ps -a failed"; }
    rows=$(wc -l <"$T/ps-$tool.out")
    [ "$rows" = $((COUNT + 1)) ] ||
        { head -n 5 "$T/ps-$tool.out" >&2; die "$tool ps -a printed $rows lines, not $((COUNT + 1))"; }
}
echo "== ps -a: row check (also the warm-up), then $RUNS runs each, interleaved"
check_rows skiff "${SKIFF_PS[@]}"
check_rows podman "${PODMAN_PS[@]}"
rm -f "$T/skiff.times" "$T/podman.times"
for _ in $(seq "$RUNS"); do
    TIMED_STDOUT=/dev/null timed skiff "${SKIFF_PS[@]}"
    TIMED_STDOUT=/dev/null timed podman "${PODMAN_PS[@]}"
done
read -r s_med s_max < <(stats "$T/skiff.times")
read -r p_med p_max < <(stats "$T/podman.times")
ps_ratio=$(ratio "$s_med" "$p_med")
printf '   %-36s median %8.1f ms   max %8.1f ms\n' "skiff ps -a ($COUNT containers)" "$s_med" "$s_max"
printf '   %-36s median %8.1f ms   max %8.1f ms\n' "podman ps -a ($COUNT containers)" "$p_med" "$p_max"

# ---------------------------------------------------------------------------
# 3. Memory per idle running container.
# ---------------------------------------------------------------------------
# mem EXCLUDE PID...: one line per PID that is not EXCLUDE or below it:
# "pid comm VmRSS-KiB Pss-KiB anonymous-KiB command line" (all KiB; the rest of the
# RSS is file-backed: the binary and its libraries).
mem() {
    python3 - "$@" <<'EOF'
import sys
exclude, pids = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]

def ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

def under(pid):
    while pid > 1:
        if pid == exclude:
            return True
        pid = ppid(pid)
    return False

def field(path, name):
    with open(path) as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise OSError("no %s in %s" % (name, path))

for pid in pids:
    try:
        if exclude > 0 and under(pid):
            continue
        with open("/proc/%d/comm" % pid) as f:
            comm = f.read().strip()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        rss = field("/proc/%d/status" % pid, "VmRSS")
        pss = field("/proc/%d/smaps_rollup" % pid, "Pss")
        anon = field("/proc/%d/smaps_rollup" % pid, "Anonymous")
    except OSError as e:
        print("%d ? 0 0 0 (%s)" % (pid, e))
        continue
    if " __monitor " in cmd:
        comm += "-monitor"
    if len(cmd) > 70:
        cmd = cmd[:67] + "..."
    print("%d %s %d %d %d %s" % (pid, comm, rss, pss, anon, cmd))
EOF
}

snap=0
bench_procs >"$T/procs.$snap"
# left_behind EXCLUDE: mem of the processes of this run that are new since the last
# call, less EXCLUDE and what runs below it. Not in a subshell: it counts snapshots.
left_behind() {
    local prev=$snap
    snap=$((snap + 1))
    sleep 1 # let the start settle
    bench_procs >"$T/procs.$snap"
    # shellcheck disable=SC2046 # one pid per word
    mem "$1" $(sort "$T/procs.$prev" | comm -13 - <(sort "$T/procs.$snap"))
}

# inspect_pids TOOL ID: "monitor-or-conmon-pid container-pid".
inspect_pids() {
    if [ "$1" = skiff ]; then
        "${SKIFF_CLI[@]}" inspect "$2" |
            python3 -c 'import json, sys; s = json.load(sys.stdin)[0]["State"]; print(s["MonitorPid"], s["Pid"])'
    else
        "${PODMAN[@]}" inspect --format '{{.State.ConmonPid}} {{.State.Pid}}' "$2"
    fi
}

PAUSE_PID=""
# idle LABEL TOOL CMD...: start an idle container with CMD (prints its id), list the
# processes it left behind in $T/mem.LABEL and print them; podman's pause process,
# if it shows up, goes to $T/mem.shared instead.
idle() {
    local label=$1 tool=$2 id rc=0 keeper cpid row
    shift 2
    id=$("$@" 2>"$T/err" </dev/null) || rc=$?
    if [ "$rc" != 0 ]; then
        echo "   $label: could not start an idle container (exit $rc): $(head -n 1 "$T/err")"
        return 1
    fi
    id=$(tail -n 1 <<<"$id")
    row=$(inspect_pids "$tool" "$id") || die "$label: $tool inspect $id failed"
    read -r keeper cpid <<<"$row"
    if [ "${keeper:-0}" -le 0 ] || [ "${cpid:-0}" -le 0 ]; then
        die "$label: no monitor/container pid in $tool inspect $id: $row"
    fi
    PAUSE_PID=$(cat "$T/run/libpod/tmp/pause.pid" 2>/dev/null || true)
    : >"$T/mem.$label"
    left_behind "$cpid" >"$T/new"
    while read -r row; do
        if [ "${row%% *}" = "$PAUSE_PID" ]; then
            echo "$row" >>"$T/mem.shared"
        else
            echo "$row" >>"$T/mem.$label"
        fi
    done <"$T/new"
    grep -q "^$keeper " "$T/mem.$label" ||
        { cat "$T/mem.$label" >&2; die "$label: $keeper (State of $id) is not among the new processes"; }
    grep -q '^[0-9]* ? ' "$T/mem.$label" && { cat "$T/mem.$label" >&2; die "$label: cannot read a process's memory"; }
    echo "   $label: container $cpid, left behind:"
    awk '{ printf "      %-7s %-14s VmRSS %6d KiB  Pss %6d KiB  anon %6d KiB  ", $1, $2, $3, $4, $5
           $1 = $2 = $3 = $4 = $5 = ""; sub(/^ +/, ""); print substr($0, 1, 40) }' "$T/mem.$label"
}
# sums LABEL: "VmRSS Pss" summed over $T/mem.LABEL, KiB.
sums() {
    awk '{ r += $3; p += $4 } END { printf "%d %d\n", r, p }' "$T/mem.$1"
}

echo "== processes that stay per idle running container (besides the container's own)"
: >"$T/mem.shared"
idle skiff skiff "${SKIFF_CLI[@]}" run -d "$IMAGE" sleep 1000
idle podman-none podman "${PODMAN[@]}" run -d --network none "localhost/$IMAGE" sleep 1000
net_ok=1
idle podman-default podman "${PODMAN[@]}" run -d "localhost/$IMAGE" sleep 1000 || net_ok=0

echo "   shared by all containers of the user (not per container):"
mem 0 "$SKIFFD_PID" >>"$T/mem.shared"
[ -z "$PAUSE_PID" ] || grep -q "^$PAUSE_PID " "$T/mem.shared" || mem 0 "$PAUSE_PID" >>"$T/mem.shared"
awk '{ printf "      %-7s %-14s VmRSS %6d KiB  Pss %6d KiB  anon %6d KiB  ", $1, $2, $3, $4, $5
       $1 = $2 = $3 = $4 = $5 = ""; sub(/^ +/, ""); print substr($0, 1, 40) }' "$T/mem.shared"

read -r s_rss s_pss < <(sums skiff)
read -r n_rss n_pss < <(sums podman-none)
names() { awk '{ print $2 }' "$T/mem.$1" | paste -sd+ -; }

echo "== summary"
echo "ps -a, $COUNT created containers: skiff $s_med ms, podman $p_med ms (median of $RUNS); ratio ${ps_ratio}x"
echo "per idle container, VmRSS / Pss: skiff ($(names skiff)) $s_rss / $s_pss KiB;" \
    "podman --network none ($(names podman-none)) $n_rss / $n_pss KiB;" \
    "ratio $(ratio "$s_rss" "$n_rss")x / $(ratio "$s_pss" "$n_pss")x"
if [ "$net_ok" = 1 ]; then
    read -r d_rss d_pss < <(sums podman-default)
    echo "  vs podman default network ($(names podman-default)) $d_rss / $d_pss KiB;" \
        "ratio $(ratio "$s_rss" "$d_rss")x / $(ratio "$s_pss" "$d_pss")x"
else
    echo "  podman with its default network: did not start here"
fi
echo "shared per user, VmRSS / Pss: $(awk '{ printf "%s%s %d / %d KiB", sep, $2, $3, $4; sep = "; " }' "$T/mem.shared")"
