# shellcheck shell=bash
# bench/common.sh: the setup shared by the bench/ scripts. Sourced, not run.
#
# The sourcing script sets BENCH (its name, for messages) and BIN_DIR (from --bin-dir,
# may be empty), parses its own options, then:
#
#   bench_reexec_as_user ARGS...   as root: stage the binaries (built with cargo unless
#                                  BIN_DIR is set), bench/*.sh, *.py and scripts/mkrootfs.sh
#                                  in a temp dir and re-run "$0" there as the test user
#                                  ($SKIFF_TEST_USER, default skifftest) with ARGS plus
#                                  --bin-dir; exits with its status. As any other user:
#                                  returns at once.
#   bench_setup                    check the tools, find the binaries, make the temp dir
#                                  $T with private XDG dirs, start a dbus-daemon and a
#                                  skiffd on it, import the busybox image into skiff and
#                                  into podman with private storage, and trap EXIT to
#                                  clean all of it up.
#
# SKIFFD_ARGS (an array, optional): extra skiffd flags (e.g. --storage-driver overlay).
# RUNTIME_TMPFS (optional, from a script's --runtime-tmpfs): when 1, both sides' runtime
# state goes to a tmpfs, as in a real session (/run/user/UID is a tmpfs there): skiffd's
# XDG_RUNTIME_DIR (bundles, exit files, sockets) and podman's --runroot and runtime dir
# are made under /dev/shm instead of $T (on /tmp, often a disk filesystem, where every
# start's new inodes cost more). The data directories (skiff's containers and images,
# podman's --root) stay in $T either way. $RUN is the runtime directory in both cases.
# TMPDIR (optional, passed on to the test user): where $T is made, so the stores can be put
# on another filesystem (e.g. a journaled ext4 or an xfs image mounted for the purpose);
# bench_storage_line says which filesystem that is.
# After bench_setup: $T, $ADDR (the bus), $SKIFF, $SKIFFD, SKIFF_CLI (skiff on the
# bus), PODMAN (podman with private storage and runc), $PODMAN_DRIVER, $IMAGE (skiff's
# name for it; podman's is localhost/$IMAGE). Helpers: die, timed, stats, ratio,
# interleave, bench_procs, bench_storage_line. Cleanup removes skiff's running containers and all of podman's first
# (monitors and conmons outlive the CLIs; podman's locks outlive its storage), then
# stops skiffd, the bus and podman's pause process and deletes $T.

BUS_NAME=org.skiff.skiff1
IMAGE=demo/busybox
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/.." && pwd -P)
T=""
RUN=""
RUNTIME_TMPFS=${RUNTIME_TMPFS:-}
ADDR=""
BUS_PID=""
SKIFFD_PID=""
SKIFF=""
SKIFFD=""
SKIFF_CLI=()
BASE_CMD=()
PODMAN=()
PODMAN_DRIVER=""
BASE_DIR=${BASE_DIR:-}
BASE_T=""
BASE_BUS_PID=""
BASE_PID=""
BASE_CLI=()

die() {
    echo "$BENCH: $*" >&2
    exit 1
}

# build_release: cargo build --release --bins in the repo; prints the binaries' dir.
build_release() {
    echo "== cargo build --release" >&2
    (cd "$REPO" && cargo build --release --bins) >&2
    echo "${CARGO_TARGET_DIR:-$REPO/target}/release"
}

# ---------------------------------------------------------------------------
# Root: build, stage, and re-run as the test user.
# ---------------------------------------------------------------------------
bench_reexec_as_user() {
    [ "$(id -u)" = 0 ] || return 0
    local user user_home stage src_bin rc=0 script
    user=${SKIFF_TEST_USER:-skifftest}
    id -u "$user" >/dev/null 2>&1 ||
        die "user $user does not exist: run scripts/test.sh once as root to create it"
    user_home=$(getent passwd "$user" | cut -d: -f6)
    export PATH="${HOME:-/root}/.cargo/bin:/root/.cargo/bin:$PATH"
    stage=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench.XXXXXX")
    # shellcheck disable=SC2064 # expand $stage now
    trap "rm -rf '$stage'" EXIT
    chmod 0755 "$stage"
    mkdir -m 0755 "$stage/bin" "$stage/bench" "$stage/scripts"
    if [ -n "$BIN_DIR" ]; then
        src_bin=$BIN_DIR
    else
        src_bin=$(build_release)
    fi
    install -m 0755 "$src_bin/skiff" "$src_bin/skiffd" "$stage/bin/"
    # Without it skiffd runs itself as the monitor (how to measure the difference).
    if [ -e "$src_bin/skiff-monitor" ]; then install -m 0755 "$src_bin/skiff-monitor" "$stage/bin/"; fi
    # A baseline build (--baseline DIR, where the script takes it): staged beside, and
    # the staged copy named last on the command line (the last --baseline wins).
    local base_args=()
    if [ -n "$BASE_DIR" ]; then
        mkdir -m 0755 "$stage/base"
        install -m 0755 "$BASE_DIR/skiff" "$BASE_DIR/skiffd" "$stage/base/"
        if [ -e "$BASE_DIR/skiff-monitor" ]; then install -m 0755 "$BASE_DIR/skiff-monitor" "$stage/base/"; fi
        base_args=(--baseline "$stage/base")
    fi
    install -m 0755 "$HERE"/*.sh "$HERE"/*.py "$stage/bench/"
    install -m 0755 "$REPO/scripts/mkrootfs.sh" "$stage/scripts/"
    script=$(basename "$0")
    echo "== re-running as $user"
    cd "$stage" || exit 1
    runuser -u "$user" -- env -i HOME="$user_home" USER="$user" LOGNAME="$user" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin ${TMPDIR:+TMPDIR="$TMPDIR"} \
        bash "$stage/bench/$script" "$@" ${base_args[@]+"${base_args[@]}"} --bin-dir "$stage/bin" || rc=$?
    exit "$rc"
}

# ---------------------------------------------------------------------------
# Normal user: set up, and clean up on exit.
# ---------------------------------------------------------------------------
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
    local rc=$? pause ids left
    trap - EXIT
    [ -n "$T" ] || exit "$rc"
    # Running containers first: their monitors (skiff) and conmons (podman) outlive the
    # CLI and the daemon. Created ones hold no process and go with $T.
    if [ -n "$SKIFFD_PID" ] && kill -0 "$SKIFFD_PID" 2>/dev/null; then
        ids=$("${SKIFF_CLI[@]}" ps -q 2>/dev/null || true)
        # shellcheck disable=SC2086 # one id per word
        [ -z "$ids" ] || "${SKIFF_CLI[@]}" rm -f $ids >/dev/null 2>&1 ||
            echo "$BENCH: skiff rm -f of running containers failed" >&2
    fi
    # podman: all of them, created ones too. Each holds one of the user's podman locks
    # (num_locks, 2048 by default, in /dev/shm/libpod_rootless_lock_UID, shared by
    # every podman storage of the user), which deleting $T would leak.
    if [ -n "$PODMAN_DRIVER" ]; then
        "${PODMAN[@]}" rm -a -f -t 0 >/dev/null 2>&1 ||
            echo "$BENCH: podman rm -a -f failed" >&2
    fi
    if [ -n "$BASE_PID" ] && kill -0 "$BASE_PID" 2>/dev/null; then
        ids=$("${BASE_CLI[@]}" ps -q 2>/dev/null || true)
        # shellcheck disable=SC2086 # one id per word
        [ -z "$ids" ] || "${BASE_CLI[@]}" rm -f $ids >/dev/null 2>&1 ||
            echo "$BENCH: baseline skiff rm -f of running containers failed" >&2
    fi
    [ -z "$SKIFFD_PID" ] || stop_pid "$SKIFFD_PID"
    [ -z "$BUS_PID" ] || stop_pid "$BUS_PID"
    [ -z "$BASE_PID" ] || stop_pid "$BASE_PID"
    [ -z "$BASE_BUS_PID" ] || stop_pid "$BASE_BUS_PID"
    # podman's rootless pause process keeps its user namespace alive.
    pause=$(cat "$RUN/libpod/tmp/pause.pid" 2>/dev/null || true)
    [ -z "$pause" ] || kill "$pause" 2>/dev/null || true
    for _ in $(seq 30); do
        left=$(bench_procs)
        [ -n "$left" ] || break
        sleep 0.1
    done
    left=${left//$'\n'/ }
    [ -z "$left" ] || echo "$BENCH: processes of this run still there: $left" >&2
    # Image layers belong to subordinate ids: delete inside a user namespace.
    for d in "$T" ${RUNTIME_TMPFS:+"$RUN"}; do
        [ -n "$d" ] || continue
        rm -rf "$d" 2>/dev/null ||
            unshare --map-root-user --map-auto rm -rf "$d" 2>/dev/null ||
            echo "$BENCH: could not fully remove $d" >&2
    done
    exit "$rc"
}

name_has_owner() {
    if command -v gdbus >/dev/null 2>&1; then
        gdbus call --address "$ADDR" --dest org.freedesktop.DBus \
            --object-path /org/freedesktop/DBus \
            --method org.freedesktop.DBus.NameHasOwner "$BUS_NAME" 2>/dev/null | grep -q true
    else
        busctl --address="$ADDR" list --no-legend 2>/dev/null | grep -q "^$BUS_NAME "
    fi
}

# start_bus DIR: a dbus-daemon listening on DIR/bus, in the background; sets
# STARTED_BUS_PID and STARTED_BUS_ADDR (its address).
start_bus() {
    local dir=$1
    dbus-daemon --session --nofork --print-address=3 --address="unix:path=$dir/bus" 3>"$dir/addr" &
    STARTED_BUS_PID=$!
    for _ in $(seq 100); do
        [ -s "$dir/addr" ] && break
        sleep 0.1
    done
    [ -s "$dir/addr" ] || die "dbus-daemon did not start (bus in $dir)"
    STARTED_BUS_ADDR=$(head -n 1 "$dir/addr")
}

bench_setup() {
    local c d runroot
    for c in dbus-daemon podman runc newuidmap python3; do
        command -v "$c" >/dev/null 2>&1 ||
            die "$c not found (apt-get install dbus-daemon podman runc uidmap python3)"
    done
    if [ -z "$BIN_DIR" ]; then
        if command -v cargo >/dev/null 2>&1 && [ -f "$REPO/Cargo.toml" ]; then
            BIN_DIR=$(build_release)
        elif command -v skiffd >/dev/null 2>&1; then
            BIN_DIR=$(dirname "$(command -v skiffd)")
        else
            die "no skiff binaries: pass --bin-dir, set SKIFF_BIN_DIR, or install cargo"
        fi
    fi
    SKIFF=$BIN_DIR/skiff
    SKIFFD=$BIN_DIR/skiffd
    if [ ! -x "$SKIFF" ] || [ ! -x "$SKIFFD" ]; then die "skiff/skiffd not found in $BIN_DIR"; fi

    T=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    if [ "$RUNTIME_TMPFS" = 1 ]; then
        [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] || die "--runtime-tmpfs: /dev/shm is not a tmpfs"
        RUN=$(mktemp -d /dev/shm/skiff-bench-run.XXXXXX)
        chmod 0700 "$RUN"
    else
        RUN=$T/run
        mkdir -m 0700 "$RUN"
    fi
    mkdir -p "$T/data" "$T/config" "$T/podman"
    # Both skiffd and podman keep their state under these.
    export XDG_RUNTIME_DIR=$RUN XDG_DATA_HOME=$T/data XDG_CONFIG_HOME=$T/config
    unset DBUS_SESSION_BUS_ADDRESS SKIFF_BUS_ADDRESS

    echo "== setup (temp dir $T, runtime dir $RUN: $(stat -f -c %T "$RUN"))"
    "$REPO/scripts/mkrootfs.sh" "$T/busybox.tar"

    start_bus "$T"
    BUS_PID=$STARTED_BUS_PID
    ADDR=$STARTED_BUS_ADDR
    SKIFF_CLI=("$SKIFF" --bus-address "$ADDR")

    RUST_LOG=${RUST_LOG:-warn} "$SKIFFD" --bus-address "$ADDR" ${SKIFFD_ARGS[@]+"${SKIFFD_ARGS[@]}"} 2>"$T/skiffd.log" &
    SKIFFD_PID=$!
    for _ in $(seq 100); do
        name_has_owner && break
        kill -0 "$SKIFFD_PID" 2>/dev/null || { cat "$T/skiffd.log" >&2; die "skiffd exited"; }
        sleep 0.1
    done
    name_has_owner || { cat "$T/skiffd.log" >&2; die "skiffd did not take $BUS_NAME"; }
    "${SKIFF_CLI[@]}" image import "$T/busybox.tar" "$IMAGE" >/dev/null

    # podman with private storage; overlay when it works here, else vfs.
    for d in overlay vfs; do
        if [ "$RUNTIME_TMPFS" = 1 ]; then runroot=$RUN/podman/$d/runroot; else runroot=$T/podman/$d/runroot; fi
        PODMAN=(podman --root "$T/podman/$d/root" --runroot "$runroot"
            --storage-driver "$d" --cgroup-manager cgroupfs --events-backend file --runtime runc)
        if "${PODMAN[@]}" import "$T/busybox.tar" "localhost/$IMAGE" >"$T/podman-import.log" 2>&1; then
            PODMAN_DRIVER=$d
            break
        fi
    done
    [ -n "$PODMAN_DRIVER" ] || { cat "$T/podman-import.log" >&2; die "podman import failed"; }

    echo "   kernel $(uname -r), $(nproc) CPUs, $(podman --version), runc $(runc --version | sed -n '1s/^runc version //p')"
}

# bench_baseline_setup: after bench_setup, when BASE_DIR is set: a second skiffd (that
# directory's build) with a bus, XDG directories and the image of its own under
# $T/base, for before/after figures in one run; BASE_CLI is its skiff.
bench_baseline_setup() {
    local addr
    [ -n "$BASE_DIR" ] || return 0
    [ -x "$BASE_DIR/skiff" ] && [ -x "$BASE_DIR/skiffd" ] || die "--baseline: no skiff/skiffd in $BASE_DIR"
    BASE_T=$T/base
    mkdir -p "$BASE_T/data" "$BASE_T/config"
    mkdir -m 0700 "$BASE_T/run"
    start_bus "$BASE_T"
    BASE_BUS_PID=$STARTED_BUS_PID
    addr=$STARTED_BUS_ADDR
    BASE_CLI=(env XDG_RUNTIME_DIR="$BASE_T/run" XDG_DATA_HOME="$BASE_T/data"
        XDG_CONFIG_HOME="$BASE_T/config" "$BASE_DIR/skiff" --bus-address "$addr")
    XDG_RUNTIME_DIR=$BASE_T/run XDG_DATA_HOME=$BASE_T/data XDG_CONFIG_HOME=$BASE_T/config \
        RUST_LOG=${RUST_LOG:-warn} "$BASE_DIR/skiffd" --bus-address "$addr" \
        ${SKIFFD_ARGS[@]+"${SKIFFD_ARGS[@]}"} 2>"$BASE_T/skiffd.log" &
    BASE_PID=$!
    for _ in $(seq 100); do
        "${BASE_CLI[@]}" version >/dev/null 2>&1 && break
        kill -0 "$BASE_PID" 2>/dev/null || { cat "$BASE_T/skiffd.log" >&2; die "the baseline skiffd exited"; }
        sleep 0.1
    done
    "${BASE_CLI[@]}" image import "$T/busybox.tar" "$IMAGE" >/dev/null
    echo "   baseline: $BASE_DIR"
}

# ---------------------------------------------------------------------------
# Measuring.
# ---------------------------------------------------------------------------

# timed TOOL CMD...: run CMD once, append its wall time (us) to $T/TOOL.times; abort
# with CMD's output if it fails. Its stdout goes to $TIMED_STDOUT (default $T/out).
timed() {
    local tool=$1 t0 t1 rc=0 out=${TIMED_STDOUT:-$T/out}
    shift
    t0=${EPOCHREALTIME//[!0-9]/}
    "$@" >"$out" 2>"$T/err" </dev/null || rc=$?
    t1=${EPOCHREALTIME//[!0-9]/}
    if [ "$rc" != 0 ]; then
        echo "$BENCH: $tool run failed (exit $rc): $*" >&2
        [ "$out" = /dev/null ] || cat "$out" >&2
        cat "$T/err" >&2
        if [ "$tool" = skiff ]; then
            echo "--- skiffd log ---" >&2
            tail -n 30 "$T/skiffd.log" >&2
        fi
        exit 1
    fi
    echo $((t1 - t0)) >>"$T/$tool.times"
}

# stats FILE: "median p90" in ms (p90 by nearest rank) of the us figures in FILE.
stats() {
    sort -n "$1" | awk '{ a[NR] = $1 }
        END {
            n = NR
            med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            k = int(0.9 * n); if (k < 0.9 * n) k++; if (k < 1) k = 1
            printf "%.1f %.1f\n", med / 1000, a[k] / 1000
        }'
}

# ratio A B: A/B to two decimals.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f\n", a / b }'
}

# interleave ROUNDS: one warm-up each of "${SKIFF_CMD[@]}" and "${PODMAN_CMD[@]}" (and
# "${BASE_CMD[@]}" when set), then ROUNDS interleaved timed runs of each; sets s_med
# s_p90 p_med p_p90 (ms) and r (skiff/podman median ratio), and b_med b_p90 rb for the
# baseline.
# shellcheck disable=SC2034,SC2153 # SKIFF_CMD/PODMAN_CMD in, the figures out: the caller's
interleave() {
    local rounds=$1 i
    echo "== warm-up"
    timed skiff "${SKIFF_CMD[@]}"
    timed podman "${PODMAN_CMD[@]}"
    [ ${#BASE_CMD[@]} = 0 ] || timed base "${BASE_CMD[@]}"
    rm -f "$T/skiff.times" "$T/podman.times" "$T/base.times"
    echo "== $rounds rounds, interleaved"
    for i in $(seq "$rounds"); do
        timed skiff "${SKIFF_CMD[@]}"
        timed podman "${PODMAN_CMD[@]}"
        [ ${#BASE_CMD[@]} = 0 ] || timed base "${BASE_CMD[@]}"
        printf '.'
        [ $((i % 50)) != 0 ] || printf '\n'
    done
    echo
    read -r s_med s_p90 < <(stats "$T/skiff.times")
    read -r p_med p_p90 < <(stats "$T/podman.times")
    r=$(ratio "$s_med" "$p_med")
    if [ ${#BASE_CMD[@]} != 0 ]; then
        read -r b_med b_p90 < <(stats "$T/base.times")
        rb=$(ratio "$b_med" "$p_med")
    fi
}

# bench_procs: the pids (one a line) of this user's processes that belong to this run:
# XDG_RUNTIME_DIR=$RUN in their environment or $T/ or $RUN/ in their command line (skiffd, the
# bus, monitors, conmon, slirp4netns, podman's pause process), but not this shell, nor
# the processes inside containers (their environment is the image's).
bench_procs() {
    python3 - "$T" "$$" "$RUN" <<'EOF'
import os, sys
t, shell, run = sys.argv[1], int(sys.argv[2]), sys.argv[3]
me, parent = os.getpid(), os.getppid()
env = ("XDG_RUNTIME_DIR=%s" % run).encode()
uid = os.getuid()
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    pid = int(d)
    if pid in (me, parent, shell):
        continue
    try:
        if os.stat("/proc/" + d).st_uid != uid:
            continue
        with open("/proc/%s/cmdline" % d, "rb") as f:
            cmd = f.read()
        with open("/proc/%s/environ" % d, "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        continue
    if env in environ or (t + "/").encode() in cmd or (run + "/").encode() in cmd:
        print(pid)
EOF
}

# bench_build_context DIR FILES KIB: build-bench.sh's context in DIR: FILES files of KIB
# KiB of random bytes in 10 directories under data/, and the 6-step Dockerfile (ARG BASE
# is the image to build from). build-phases.sh times the same build step by step.
bench_build_context() {
    local dir=$1 files=$2 kib=$3
    mkdir -p "$dir/data"
    python3 - "$dir/data" "$files" "$kib" <<'PY'
import os, sys
root, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, "d%d" % (i % 10))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
        f.write(os.urandom(kib * 1024))
PY
    cat >"$dir/Dockerfile" <<'DF'
ARG BASE
FROM $BASE
COPY data/ /data/
RUN ls -R /data | wc -l > /count
RUN du -s /data > /du
ENV APP=bench
CMD ["cat", "/count"]
DF
}

# bench_storage_line DIR: "TYPE at DIR", plus "(no journal)" for an ext4 without one: there
# every new inode costs a scan past the recently deleted ones (ext4's find_inode_bit skips
# inodes deleted in the last 1-5 minutes when it has no journal), which makes a create-heavy
# workload several times slower and its timings depend on what ran just before.
bench_storage_line() {
    local dir=$1 type src journal=""
    type=$(stat -f -c %T "$dir" 2>/dev/null || echo unknown)
    if [ "$type" = ext2/ext3 ]; then
        type=ext4
        src=$(findmnt -n -o SOURCE --target "$dir" 2>/dev/null || true)
        if [ -n "$src" ] && [ -r "/sys/fs/ext4/$(basename "$src")/journal_task" ] &&
            [ "$(cat "/sys/fs/ext4/$(basename "$src")/journal_task")" = "<none>" ]; then
            journal=" (no journal)"
        fi
    fi
    echo "$type$journal at $dir"
}
