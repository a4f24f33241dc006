#!/usr/bin/env bash
# bench/start-phases.sh: where the time of `skiff run --rm IMG true` goes, phase by phase.
#
# Usage: bench/start-phases.sh [-n ROUNDS] [--bin-dir DIR] [--network MODE]
#                              [--storage-driver D] [--runtime-tmpfs] [--keep-log FILE]
#
# Starts skiffd with `--log-level warn,skiff::phase=debug`: skiffd, the monitor, the
# intermediate and the container's init (up to its exec) then log a timestamp (µs since
# the epoch) at each phase of a start and of the end (src/phase.rs). After one warm-up,
# runs ROUNDS (default 20) `skiff run --rm [--network MODE] IMG true` one after the
# other, noting the wall time just before the CLI starts (cli-exec) and just after it
# exits (cli-exit). For each round it takes the marks between the two, and prints one row
# per phase, in order: the median time from cli-exec to the mark, and the step from the
# row above (the difference of the two medians: what that phase cost). The D-Bus gate
# marks name the method (gate-in/RunContainer); a mark reached twice in a round gets #2.
# The rows of the CLI's own work show as the gaps around the daemon's marks (cli-exec ->
# the first gate mark: the CLI's start and its connection to the bus).
#
# --runtime-tmpfs puts skiffd's runtime directory (the bundles) on a tmpfs, as under a
# systemd session (bench/common.sh).
#
# Setup, binaries (--bin-dir DIR, else $SKIFF_BIN_DIR, else cargo build --release),
# running as root (re-runs itself as the test user) and cleanup are bench/common.sh's
# (it also imports the image into podman, which this script does not time).
set -euo pipefail

BENCH=start-phases
ROUNDS=20
BIN_DIR=${SKIFF_BIN_DIR:-}
SKIFF_NET=""
SKIFFD_ARGS=()
RUNTIME_TMPFS=""
KEEP_LOG=""

usage() {
    echo "usage: $0 [-n ROUNDS] [--bin-dir DIR] [--network MODE] [--storage-driver D] [--keep-log FILE] [--runtime-tmpfs]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        -n*) ROUNDS=${1#-n} ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --network) [ $# -ge 2 ] || usage; SKIFF_NET=$2; shift ;;
        --storage-driver) [ $# -ge 2 ] || usage; SKIFFD_ARGS=(--storage-driver "$2"); shift ;;
        --keep-log) [ $# -ge 2 ] || usage; KEEP_LOG=$2; shift ;;
        --runtime-tmpfs) RUNTIME_TMPFS=1 ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: -n needs a positive integer" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

args=(-n "$ROUNDS")
[ -z "$SKIFF_NET" ] || args+=(--network "$SKIFF_NET")
args+=(${SKIFFD_ARGS[@]+"${SKIFFD_ARGS[@]}"})
[ -z "$KEEP_LOG" ] || args+=(--keep-log "$KEEP_LOG")
[ "$RUNTIME_TMPFS" != 1 ] || args+=(--runtime-tmpfs)
bench_reexec_as_user "${args[@]}"
SKIFFD_ARGS+=(--log-level "warn,skiff::phase=debug")
bench_setup

SKIFF_RUN=("${SKIFF_CLI[@]}" run --rm)
[ -z "$SKIFF_NET" ] || SKIFF_RUN+=(--network "$SKIFF_NET")
SKIFF_CMD=("${SKIFF_RUN[@]}" "$IMAGE" true)

echo "== warm-up"
timed skiff "${SKIFF_CMD[@]}"
: >"$T/rounds"
echo "== $ROUNDS rounds: ${SKIFF_CMD[*]##*/}"
for i in $(seq "$ROUNDS"); do
    t0=${EPOCHREALTIME//[!0-9]/}
    timed skiff "${SKIFF_CMD[@]}"
    t1=${EPOCHREALTIME//[!0-9]/}
    echo "$t0 $t1" >>"$T/rounds"
    printf '.'
    [ $((i % 50)) != 0 ] || printf '\n'
done
echo
[ -z "$KEEP_LOG" ] || cp "$T/skiffd.log" "$KEEP_LOG"

# What each step (from the row above to the mark) was, as far as one mark tells.
cat >"$T/steps.tsv" <<'TSV'
gate-in/RunContainer	the CLI started, connected to the bus, sent RunContainer
gate-out/RunContainer	D-Bus gate: the caller's credentials
run-call	zbus dispatch, the config parsed
created	create: image lookup, container directory (the spare, renamed) and record written
bundle-written	spec, /etc files, bundle (runtime dir; a first start: into the spare bundle's files)
monitor-main	the monitor (a run's: spawned during the create, waiting) goes on
monitor-locked	the bundle lock
monitor-spawned	(skiffd: spawn returned; a run's: the monitor told to go)
monitor-prepared	monitor.json, config.json read, cgroup, pipes, attach socket
security-prepared	capabilities, rlimits, seccomp filter (from its cache)
userns-unshared	fork, unshare(CLONE_NEWUSER) (--userns private, keep-id)
id-maps-written	newuidmap + newgidmap
userns-joined	fork of the intermediate, which joins the shared user namespace
fuse-mounted	the FUSE server's mount reported (it mounts while the namespaces are unshared and init forked)
namespaces-unshared	FUSE server forked; unshare of the other namespaces
init-begin	fork of init; it waits for the FUSE mount
init-forked	(monitor: init's pid, the intermediate reaped)
network-spawned	network helper: fork+exec of slirp4netns
network-ready	network helper: its namespace configured (ready fd)
ports-added	published ports added (API socket, relay)
network-connected	(monitor: the helper connected)
proceed-sent	(monitor: init may exec)
rootfs-prepared	rootfs mount, /dev, /proc, /sys
spec-mounted	the spec's mounts, resolved in the root (openat2)
pivoted	hostname, loopback, pivot_root
program-read-ahead	the command's program resolved, opened, its read-ahead asked for
libraries-read-ahead	a dynamic program's loader and libraries: their read-ahead asked for
masked	masked and read-only paths, sysctls
proceed-received	init waited for the monitor (network)
user-resolved	/etc/passwd lookup, workdir
user-switched	setgroups, setresgid, setresuid
exec	PDEATHSIG check, capabilities, no_new_privs, seccomp
container-started	exec done (the monitor sees init's channel close)
started-reported	status pipe to skiffd
running-recorded	running record written
run-reply	RunContainer replied
init-exited	the command ran and exited
cgroup-removed	the container's cgroup emptied and removed
network-stop	network helper told to stop
network-stopped	network helper gone, its files removed
output-finished	output drained, attach clients told
exit-file-written	attach socket removed, exit file (runtime dir) written while the FUSE server ends
orphans-reaped	orphans (the FUSE server) reaped
run-ended	skiffd: status pipe end, monitor reaped
exit-recorded	exit recorded (die event)
auto-remove	--rm: removal starts
wait-reply/removed	the container out of the table, its directory in the trash
auto-removed	files removed (after the answer)
TSV
python3 "$HERE/phase-table.py" "$T/rounds" "$T/skiffd.log" start-phases \
    "phases of \`run --rm IMG true\`" "$T/steps.tsv"
