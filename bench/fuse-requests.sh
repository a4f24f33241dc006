#!/usr/bin/env bash
# bench/fuse-requests.sh: which FUSE requests the kernel sends, per file, for the shape of
# bench/churn-bench.sh's workload (create N small files in 20 directories, ls -lR, mv
# each, rm -rf) on `skiffd __fuse-mount`, mounted in a user namespace as a container's
# root filesystem is (the kernel treats such a mount differently: no POSIX ACL
# requests, for one). Counted with the fuse:fuse_request_send tracepoint, in a tracefs
# instance of its own, filtered on the mount's connection.
#
# Usage (as root, for tracefs): bench/fuse-requests.sh [--files N] [--skiffd PATH]
# --skiffd defaults to target/release/skiffd; the workload runs in busybox sh (its mv
# and rm applets, as the busybox image runs them) when busybox is installed, else sh.
set -euo pipefail

FILES=500
SKIFFD=""
usage() {
    echo "usage: $0 [--files N] [--skiffd PATH]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --files) [ $# -ge 2 ] || usage; FILES=$2; shift ;;
        --skiffd) [ $# -ge 2 ] || usage; SKIFFD=$2; shift ;;
        *) usage ;;
    esac
    shift
done
[[ "$FILES" =~ ^[1-9][0-9]*$ ]] || { echo "fuse-requests: --files needs a positive integer" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "fuse-requests: run as root (the tracepoint needs tracefs)" >&2; exit 2; }
SKIFFD=${SKIFFD:-$(dirname "${BASH_SOURCE[0]}")/../target/release/skiffd}
[ -x "$SKIFFD" ] || { echo "fuse-requests: no skiffd at $SKIFFD (--skiffd PATH)" >&2; exit 2; }
SKIFFD=$(realpath "$SKIFFD")
TRACEFS=/sys/kernel/tracing
[ -d "$TRACEFS/events/fuse/fuse_request_send" ] || { echo "fuse-requests: no fuse:fuse_request_send tracepoint in $TRACEFS" >&2; exit 2; }
SH="sh"
if command -v busybox > /dev/null; then SH="busybox sh"; fi

T=$(mktemp -d /tmp/fuse-requests.XXXXXX)
INST=$TRACEFS/instances/fuse-requests-$$
cleanup() {
    [ -d "$INST" ] && { echo 0 > "$INST/tracing_on"; rmdir "$INST"; }
    rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/lower/etc" "$T/upper" "$T/work" "$T/mnt"
echo x > "$T/lower/etc/hostname"
cat > "$T/workload.sh" <<EOF
set -e
cd "$T/mnt" && mkdir w && cd w
d=0; while [ \$d -lt 20 ]; do mkdir d\$d; d=\$((d+1)); done
i=0; while [ \$i -lt $FILES ]; do echo "\$i" > d\$((i%20))/f\$i; i=\$((i+1)); done
ls -lR . > /dev/null
i=0; while [ \$i -lt $FILES ]; do mv d\$((i%20))/f\$i d\$((i%20))/g\$i; i=\$((i+1)); done
cd / && rm -rf "$T/mnt/w"
EOF

mkdir "$INST"
# In a user and mount namespace of its own: the server mounts, reports the mount's
# device, waits for the go, runs the workload and unmounts.
# shellcheck disable=SC2016
unshare -rm sh -c '
    "$1" __fuse-mount --upper "$2/upper" --work "$2/work" "$2/lower" "$2/mnt" &
    while ! mountpoint -q "$2/mnt"; do sleep 0.05; done
    mountpoint -d "$2/mnt" > "$2/dev"
    while [ ! -e "$2/go" ]; do sleep 0.05; done
    '"$SH"' "$2/workload.sh"
    touch "$2/done"
    umount "$2/mnt"; wait' - "$SKIFFD" "$T" &
while [ ! -e "$T/dev" ]; do sleep 0.05; done
minor=$(cut -d: -f2 "$T/dev")
echo "connection == $minor" > "$INST/events/fuse/fuse_request_send/filter"
echo 1 > "$INST/events/fuse/fuse_request_send/enable"
echo 1 > "$INST/tracing_on"
touch "$T/go"
while [ ! -e "$T/done" ]; do sleep 0.05; done
echo 0 > "$INST/tracing_on"
wait
echo "== FUSE requests for $FILES files ($SH; $(uname -r))"
grep -o 'opcode [0-9]* ([A-Z_0-9]*)' "$INST/trace" | sort | uniq -c | sort -rn |
    awk -v n="$FILES" '{ printf "%8d  %6.2f per file  %s\n", $1, $1 / n, $4; t += $1 }
        END { printf "%8d  %6.2f per file  total\n", t, t / n }'
