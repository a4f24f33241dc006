#!/usr/bin/env bash
# bench/fuse-phases.sh: bench/churn-bench.sh's workload, phase by phase, on
# `skiffd __fuse-mount` and on the kernel overlay (userxattr), each mounted in a user
# namespace as a container's root filesystem is, busybox (static) in the lower layer
# and the workload chrooted into the mount (so the `mv` phase execs busybox through
# the mount, as in a container). Candidates alternate, the order rotating each round;
# per phase the wall time (ms) and, for a FUSE server, its CPU time (ms).
#
# Usage: bench/fuse-phases.sh [-n ROUNDS] [--files N] [--skiffd PATH]...
# Each --skiffd adds a FUSE candidate (fuse1, fuse2, ... in that order; default
# target/release/skiffd); the kernel overlay ("kovl") is always one. Needs unprivileged
# user namespaces (unshare -rm) and a static busybox. The layers are made under TMPDIR
# (default /tmp); the first line says which filesystem that is.
set -euo pipefail

ROUNDS=4
FILES=2000
SKIFFDS=()
usage() {
    echo "usage: $0 [-n ROUNDS] [--files N] [--skiffd PATH]..." >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        --files) [ $# -ge 2 ] || usage; FILES=$2; shift ;;
        --skiffd) [ $# -ge 2 ] || usage; SKIFFDS+=("$(realpath "$2")"); shift ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "fuse-phases: -n needs a positive integer" >&2; exit 2; }
[[ "$FILES" =~ ^[1-9][0-9]*$ ]] || { echo "fuse-phases: --files needs a positive integer" >&2; exit 2; }
[ ${#SKIFFDS[@]} -gt 0 ] || SKIFFDS=("$(realpath "$(dirname "${BASH_SOURCE[0]}")/../target/release/skiffd")")
BUSYBOX=$(command -v busybox) || { echo "fuse-phases: needs a static busybox (busybox-static)" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
T=$(mktemp -d "${TMPDIR:-/tmp}/fuse-phases.XXXXXX")
trap 'rm -rf "$T"' EXIT
L=$T/lower
mkdir -p "$L/bin" "$L/etc" "$L/tmp" "$L/dev"
cp "$BUSYBOX" "$L/bin/busybox"
for a in sh mv ls find rm mkdir wc cat; do ln -s busybox "$L/bin/$a"; done
for i in $(seq 50); do echo "line $i" > "$L/etc/file$i"; done
cat > "$L/phases.sh" <<PHASES
set -e
cd /w
case "\$1" in
create) i=0; while [ \$i -lt $FILES ]; do echo "\$i" > d\$((i%20))/f\$i; i=\$((i+1)); done ;;
lsR) ls -lR /w > /dev/null ;;
find) find /w -type f | wc -l > /dev/null; ls -lR /bin /etc > /dev/null ;;
rename) i=0; while [ \$i -lt $FILES ]; do mv d\$((i%20))/f\$i d\$((i%20))/g\$i; i=\$((i+1)); done ;;
lsR2) ls -lR /w > /dev/null ;;
rm) cd / && rm -rf /w ;;
esac
PHASES
PHASE_LIST="create lsR find rename lsR2 rm"
NPHASES=6

# one NAME SKIFFD|kovl: a fresh mount, the phases timed; appends "phase ms cpu_ms" lines
# to $T/NAME.res.
one() {
    local name=$1 what=$2 d=$T/run
    rm -rf "$d"
    mkdir -p "$d/upper" "$d/work" "$d/mnt"
    # shellcheck disable=SC2016
    unshare -rm bash -c '
        set -e
        what=$1 d=$2 L=$3 phases=$4 res=$5
        if [ "$what" = kovl ]; then
            mount -t overlay overlay -o "userxattr,lowerdir=$L,upperdir=$d/upper,workdir=$d/work" "$d/mnt"
            pid=""
        else
            "$what" __fuse-mount --upper "$d/upper" --work "$d/work" "$L" "$d/mnt" &
            pid=$!
            while ! mountpoint -q "$d/mnt"; do sleep 0.02; done
        fi
        mkdir "$d/mnt/w"
        for i in $(seq 0 19); do mkdir "$d/mnt/w/d$i"; done
        cpu() { if [ -z "$pid" ]; then echo 0; else awk "{ print (\$14 + \$15) * 10 }" "/proc/$pid/stat"; fi; }
        for p in $phases; do
            c0=$(cpu); t0=$EPOCHREALTIME
            chroot "$d/mnt" /bin/sh /phases.sh "$p"
            t1=$EPOCHREALTIME; c1=$(cpu)
            echo "$p $(( (${t1/./} - ${t0/./}) / 1000 )) $((c1 - c0))" >> "$res"
        done
        umount "$d/mnt"
        [ -z "$pid" ] || wait "$pid"
    ' - "$what" "$d" "$L" "$PHASE_LIST" "$T/$name.res"
}

CANDS=(kovl)
declare -A WHAT=([kovl]=kovl)
n=0
for s in "${SKIFFDS[@]}"; do
    n=$((n + 1))
    CANDS+=("fuse$n")
    WHAT[fuse$n]=$s
    echo "fuse$n = $s"
done
echo "== $FILES files, $ROUNDS rounds (+1 warm-up), storage: $(bench_storage_line "$T"), load: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in "${CANDS[@]}"; do one "$c" "${WHAT[$c]}"; done
rm -f "$T"/*.res
nc=${#CANDS[@]}
for r in $(seq "$ROUNDS"); do
    for k in $(seq 0 $((nc - 1))); do
        c=${CANDS[$(((k + r) % nc))]}
        one "$c" "${WHAT[$c]}"
    done
    printf '.'
done
echo " load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== medians: wall ms (server CPU ms)"
printf '%-8s' phase
for c in "${CANDS[@]}"; do printf '%16s' "$c"; done
echo
for p in $PHASE_LIST total; do
    printf '%-8s' "$p"
    for c in "${CANDS[@]}"; do
        if [ "$p" = total ]; then
            awk -v k=$NPHASES '{ w += $2; u += $3 } NR % k == 0 { print w, u; w = 0; u = 0 }' "$T/$c.res"
        else
            awk -v p="$p" '$1 == p { print $2, $3 }' "$T/$c.res"
        fi | sort -n | awk '{ w[NR] = $1; u[NR] = $2 } END { m = int((NR + 1) / 2); printf "%9d (%4d)", w[m], u[m] }'
    done
    echo
done
for c in "${CANDS[@]}"; do
    echo "raw $c: $(awk -v k=$NPHASES '{ printf "%s=%s/%s ", $1, $2, $3 } NR % k == 0 { printf "| " }' "$T/$c.res")"
done
