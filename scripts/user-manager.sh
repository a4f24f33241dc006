#!/usr/bin/env bash
# scripts/user-manager.sh: a real `systemd --user` for one user on a machine whose
# PID 1 is not systemd (containers, CI), for the tests of skiff's systemd support.
#
# Usage (as root):
#   scripts/user-manager.sh start USER STATE_DIR   # prints the manager's XDG_RUNTIME_DIR
#   scripts/user-manager.sh stop STATE_DIR         # ends everything it started
#
# What start does:
#  * STATE_DIR (created, root's, 0755) holds the manager's pid, its cgroup's path
#    (cgroups) and its log (log: systemd's own messages; launch.log: its launcher's);
#    STATE_DIR/rt (the user's, 0700) is its XDG_RUNTIME_DIR, where the user bus
#    listens ($XDG_RUNTIME_DIR/bus, from dbus-user-session) and with config/ and data/
#    as its XDG_CONFIG_HOME and XDG_DATA_HOME, so the manager shares no unit files or
#    data with the user's real ones or with another manager of the same user.
#    STATE_DIR/rt/user-generators is the manager's /run/systemd/user-generators (its
#    user generators: the tests install skiff-systemd-generator there).
#  * cgroups: cgroup v2 only. One directory for this manager in the unified hierarchy
#    (/sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on a v2-only one),
#    delegated to USER (chowned). The manager runs in a cgroup namespace rooted at that
#    directory, with a cgroup2 mounted on /sys/fs/cgroup in its private mount
#    namespace: it sees a cgroup v2-only system that is its subtree ("Found cgroup2 on
#    /sys/fs/cgroup/, full unified hierarchy" in its debug log) and never uses a v1
#    hierarchy; no v1 hierarchy is written to, nothing is mounted on the host. Its
#    ControlGroup= paths are relative to its directory; its processes' cgroups, seen
#    from outside (/proc/PID/cgroup), are under it. A host without cgroup v2: start
#    fails (the tests that need a manager are then skipped).
#  * systemd decides it is the init system when /run/systemd/system exists: that
#    directory is made on a tmpfs mounted over /run/systemd in the manager's private
#    mount namespace only (on the host it would make apt's scripts believe that
#    systemd runs). The empty mount point /run/systemd is made on the host if the
#    machine has none, and removed again at stop.
#  * The manager's log: systemd logs to a console only if it is a terminal, so it logs
#    to "the kernel log": its /dev/kmsg is a pipe to STATE_DIR/log.
#  * The manager runs as USER with a clean environment; start returns when it has
#    reached its default target and the user bus answers.
#
# Tests reach it as USER with XDG_RUNTIME_DIR=STATE_DIR/rt (systemctl --user,
# busctl --user) and DBUS_SESSION_BUS_ADDRESS=unix:path=STATE_DIR/rt/bus.
#
# stop: SIGTERM to the manager (it stops its units), then SIGKILL to whatever is
# still in its cgroup, removes it and STATE_DIR. It fails (exit 1, naming them) if
# directories appeared under a cgroup v1 hierarchy since start: at the top of one, or
# anywhere owned by USER (start takes a snapshot; the check runs when the manager is
# ready and at stop).
set -euo pipefail

UNIFIED=/sys/fs/cgroup/unified
SYSTEMD=${SKIFF_SYSTEMD:-/lib/systemd/systemd}
START_TIMEOUT=${SKIFF_USER_MANAGER_TIMEOUT:-60}

die() {
    printf 'user-manager.sh: %s\n' "$*" >&2
    exit 1
}

usage() {
    die "usage: $0 start USER STATE_DIR | stop STATE_DIR"
}

# v2_root: where the unified (cgroup v2) hierarchy is mounted: /sys/fs/cgroup on a
# cgroup v2-only host, /sys/fs/cgroup/unified on a hybrid one. Fails without one.
v2_root() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        echo /sys/fs/cgroup
    elif [ -f "$UNIFIED/cgroup.controllers" ]; then
        echo "$UNIFIED"
    else
        return 1
    fi
}

# v1_hierarchies: the mount points of the cgroup v1 hierarchies (none on a v2-only host).
v1_hierarchies() {
    # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPER
    awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup") print $5; break } }' \
        /proc/self/mountinfo
}

# v1_snapshot USER: what a run could add under the cgroup v1 hierarchies: their
# top-level directories (root could make one) and every directory USER owns in them
# (the only places where USER's processes could make one). Not the whole trees: other
# software makes and removes cgroups deeper down all the time.
v1_snapshot() {
    local h
    while read -r h; do
        find "$h" -mindepth 1 -maxdepth 1 -type d 2>/dev/null || true
        find "$h" -mindepth 1 -type d -user "$1" 2>/dev/null || true
    done < <(v1_hierarchies) | sort -u
}

# v1_added STATE_DIR: the v1 directories made since start's snapshot (the manager must
# make none: it runs on cgroup v2 only).
v1_added() {
    [ -f "$1/v1-before" ] || return 0
    comm -13 "$1/v1-before" <(v1_snapshot "$(cat "$1/user")")
}

# as_user CMD...: run CMD as the manager's user, talking to the manager.
as_user() {
    runuser -u "$USER_NAME" -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME="$USER_HOME" USER="$USER_NAME" XDG_RUNTIME_DIR="$RT" \
        DBUS_SESSION_BUS_ADDRESS="unix:path=$RT/bus" "$@"
}

start() {
    [ $# = 2 ] || usage
    USER_NAME=$1
    local state=$2 uid gid v2 cg name pid i inner f
    [ "$(id -u)" = 0 ] || die "start must run as root (it creates cgroups and a mount namespace)"
    [ -x "$SYSTEMD" ] || die "$SYSTEMD not found; fix: apt-get install systemd"
    [ -f /usr/lib/systemd/user/dbus.socket ] ||
        die "no user bus unit (dbus.socket); fix: apt-get install dbus-user-session"
    uid=$(id -u "$USER_NAME") || die "no user $USER_NAME"
    gid=$(id -g "$USER_NAME")
    USER_HOME=$(getent passwd "$USER_NAME" | cut -d: -f6)
    [ ! -e "$state" ] || die "$state exists already (stop the manager that uses it first)"
    mkdir -m 0755 "$state"
    RT=$state/rt
    mkdir -m 0700 "$RT"
    mkdir -m 0700 "$RT/config" "$RT/data" "$RT/user-generators"
    chown -R "$uid:$gid" "$RT"

    # The manager's /run/systemd is a tmpfs mounted over that directory in its own mount
    # namespace: the mount point must exist. A machine whose PID 1 is not systemd may
    # have none (/run is a tmpfs, and nothing made it since the boot): make it, empty,
    # and remove it at stop (an empty /run/systemd tells no tool that systemd runs: they
    # look for /run/systemd/system).
    if [ ! -d /run/systemd ]; then
        mkdir -m 0755 /run/systemd
        : >"$state/made-run-systemd"
    fi

    # The manager's cgroup: a directory of the unified hierarchy, delegated to the user
    # (chowned). Unique per start: managers of several test runs may run at once.
    v2=$(v2_root) || die "no cgroup v2 hierarchy (neither /sys/fs/cgroup nor $UNIFIED is cgroup2); the manager runs on cgroup v2 only"
    echo "$USER_NAME" >"$state/user"
    v1_snapshot "$USER_NAME" >"$state/v1-before"
    name="skiff-user-manager-$uid-$(basename "$state")-$$"
    cg=$v2/$name
    mkdir "$cg"
    echo "$cg" >"$state/cgroups"
    chown "$uid:$gid" "$cg"
    for f in cgroup.procs cgroup.threads cgroup.subtree_control; do
        chown "$uid:$gid" "$cg/$f"
    done

    # The child moves itself into that cgroup, then gets a cgroup namespace rooted there
    # and a private mount namespace, where a cgroup2 mounted on /sys/fs/cgroup shows the
    # manager's subtree as a cgroup v2-only system (systemd then runs "unified": no v1
    # hierarchy is used), and makes /run/systemd/system; then it becomes the user's
    # manager. setsid: not in our session.
    # shellcheck disable=SC2016 # expanded by the inner bash
    inner='
        set -e
        # (First a tmpfs: on a v2-only host /sys/fs/cgroup is the root of a mount of
        # the same cgroup2 file system, and the kernel refuses to stack it on itself.)
        mount -t tmpfs -o mode=0755,size=64k skiff-cgroup /sys/fs/cgroup
        mount -t cgroup2 -o nosuid,nodev,noexec skiff-cgroup2 /sys/fs/cgroup
        # (systemd refuses a daemon-reload with less than 16M free there.)
        mount -t tmpfs -o mode=0755,size=64m skiff-run-systemd /run/systemd
        mkdir /run/systemd/system
        # User generators are looked for in system directories only: this one
        # (private to the manager) leads to a directory of the user, so tests can
        # install one (skiff-systemd-generator).
        ln -s "$3/user-generators" /run/systemd/user-generators
        # systemd logs to the console only if it is a terminal, to the kernel log
        # (--log-target=kmsg) always: here that is a pipe to STATE_DIR/log.
        mount --bind "$5" /dev/kmsg
        exec runuser -u "$1" -- env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME="$2" USER="$1" LOGNAME="$1" XDG_RUNTIME_DIR="$3" \
            XDG_CONFIG_HOME="$3/config" XDG_DATA_HOME="$3/data" \
            "$4" --user --log-target=kmsg
    '
    # The manager's log: what it writes to its /dev/kmsg, a pipe (the manager and its
    # children each open it: a plain file would be written over from its start by
    # each). The reader holds a writing end too (<>: it never sees an end of file)
    # and runs in our cgroup, not the manager's; stop ends it after the manager.
    mkfifo -m 0600 "$state/kmsg"
    chown "$uid:$gid" "$state/kmsg"
    setsid cat <>"$state/kmsg" >"$state/log" 2>/dev/null &
    echo $! >"$state/log-pid"
    # shellcheck disable=SC2016 # expanded by the outer bash -c
    setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -c '
            set -e
            echo $$ >"$1/cgroup.procs"
            exec unshare --cgroup --mount --propagation private -- bash -c "$2" "${@:3}"
        ' user-manager "$cg" "$inner" user-manager "$USER_NAME" "$USER_HOME" "$RT" "$SYSTEMD" "$state/kmsg" \
        </dev/null >"$state/launch.log" 2>&1 &
    pid=$!
    echo "$pid" >"$state/pid"

    # Ready: the manager's private socket and the user bus answer.
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$state/launch.log" "$state/log" >&2
            stop "$state" || true
            die "systemd --user exited at start (log above)"
        fi
        # Start-up is over ("degraded": a unit of the user's failed, fine for us).
        # Not is-system-running: outside the manager's mount namespace systemctl
        # sees no /run/systemd/system and answers "offline" without asking.
        if [ -S "$RT/systemd/private" ] && [ -S "$RT/bus" ] &&
            [[ "$(as_user systemctl --user show -p SystemState --value 2>/dev/null)" =~ ^(running|degraded)$ ]] &&
            as_user busctl --user status >/dev/null 2>&1; then
            # Checked again at stop (stop fails if anything was made).
            v1_added "$state" >"$state/v1-added"
            echo "$RT"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$state/launch.log" "$state/log" >&2
    stop "$state" || true
    die "systemd --user did not become ready in ${START_TIMEOUT}s (log above)"
}

# procs_of CGROUPS_FILE: every pid in the manager's cgroups, recursively.
procs_of() {
    local cg
    while read -r cg; do
        [ -d "$cg" ] && find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
    done <"$1"
    return 0
}

stop() {
    [ $# = 1 ] || usage
    local state=$1 pid i left cg
    [ "$(id -u)" = 0 ] || die "stop must run as root"
    [ -d "$state" ] || die "$state: no such manager state"
    # What the run made under cgroup v1 (before anything is stopped: a unit's cgroup
    # would go with it).
    local v1
    v1=$({ cat "$state/v1-added" 2>/dev/null || true; v1_added "$state"; } | sort -u)
    if [ -f "$state/pid" ]; then
        pid=$(cat "$state/pid")
        # The unshare process has exec'd into runuser, which waits for systemd:
        # SIGTERM to systemd (runuser's child) makes it stop every unit and exit.
        local mgr
        mgr=$(pgrep -P "$pid" -x systemd || true)
        if [ -n "$mgr" ]; then kill -TERM "$mgr" 2>/dev/null || true; fi
        for ((i = 0; i < 200; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    # Whatever is left (processes that ignored the stop, or a manager that hung).
    if [ -f "$state/cgroups" ]; then
        for ((i = 0; i < 100; i++)); do
            left=$(procs_of "$state/cgroups" | sort -u)
            [ -n "$left" ] || break
            # shellcheck disable=SC2086 # a list of pids
            kill -KILL $left 2>/dev/null || true
            sleep 0.1
        done
        [ -z "$left" ] || printf 'user-manager.sh: processes left in the cgroups: %s\n' "$left" >&2
        while read -r cg; do
            # Children first (rmdir of a cgroup with children fails).
            [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
            [ ! -d "$cg" ] || printf 'user-manager.sh: could not remove %s\n' "$cg" >&2
        done <"$state/cgroups"
    fi
    if [ -n "${pid:-}" ]; then wait "$pid" 2>/dev/null || true; fi
    # The log's reader (after the manager: a writer without a reader blocks).
    if [ -f "$state/log-pid" ]; then kill "$(cat "$state/log-pid")" 2>/dev/null || true; fi
    # The mount point start made (if still empty: another manager may use it).
    if [ -f "$state/made-run-systemd" ]; then rmdir /run/systemd 2>/dev/null || true; fi
    rm -rf "$state"
    if [ -n "$v1" ]; then
        printf 'user-manager.sh: directories appeared under a cgroup v1 hierarchy while the manager ran (it uses cgroup v2 only, and nothing may write there; left as they are):\n%s\n' "$v1" >&2
        return 1
    fi
}

case "${1:-}" in
start)
    shift
    start "$@"
    ;;
stop)
    shift
    stop "$@"
    ;;
*) usage ;;
esac
