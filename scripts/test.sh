#!/usr/bin/env bash
# scripts/test.sh: the one test command of skiff.
#
# Usage: scripts/test.sh [LIBTEST-ARGS...]
#   Extra arguments go to every test executable (libtest): test name filters,
#   --nocapture, --test-threads=N, --ignored, ...
#
# Two modes:
#  * As root (CI, fresh Debian 12): installs the missing apt packages, creates the
#    unprivileged user $SKIFF_TEST_USER (default skifftest) with subuid/subgid
#    ranges, makes /dev/fuse and /dev/net/tun 0666, runs cargo fmt/clippy
#    (and shellcheck when installed), checks the systemd unit files, builds the
#    test executables as root, copies them with the skiff binaries into a
#    staging dir readable by the test user and runs each of them as that user
#    (rootless containers need a non-root user with subordinate ID ranges).
#    Lint failures are reported at the end but do not stop the tests; doc
#    tests run as root through cargo.
#  * As a normal user: checks the prerequisites (and says how to fix what is
#    missing), then runs cargo fmt --check, clippy and `cargo test` directly.
#
# The last line printed is "N passed, M failed" (totalled over all test
# executables; an executable that dies without a libtest result line counts as
# one failure), with ", K skipped" when tests could not run here: such a test
# prints a line starting with "skiff-test: SKIPPED " (libtest has no skip; it
# counts the test as passed, this script as skipped, and lists each with why). The exit status is non-zero if any test, lint or check failed.
#
# Environment knobs:
#   SKIFF_TEST_USER     test user in root mode (default skifftest)
#   SKIFF_TEST_TIMEOUT  seconds allowed per test executable (default 600)
#   SKIFF_SKIP_LINT=1   skip cargo fmt / clippy / shellcheck
#   SKIFF_KEEP_STAGE=1  keep the root-mode staging dir (test executables, logs)
#   SKIFF_NORANGES_USER a user without subuid/subgid ranges, created in root mode
#                       (default skiffnoranges), for the doctor tests
#   SKIFF_SETUP_ONLY=1  root mode: only install the runtime packages and set up
#                       the user (scripts/demo.sh uses it), no build, no tests
#
# In root mode a real `systemd --user` runs for the test user while the tests run
# (scripts/user-manager.sh); its XDG_RUNTIME_DIR is passed to the tests as
# SKIFF_USER_MANAGER_RUNTIME_DIR.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"

TEST_USER=${SKIFF_TEST_USER:-skifftest}
TEST_TIMEOUT=${SKIFF_TEST_TIMEOUT:-600}
SUBID_COUNT=65536
TEST_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# rustup's default location; also when HOME is unset (CI runs as root).
for d in "${HOME:-/root}/.cargo/bin" /root/.cargo/bin; do
    if [ -d "$d" ] && ! command -v cargo >/dev/null 2>&1; then PATH="$d:$PATH"; fi
done
export PATH

T0=$SECONDS
section() { printf '\n==== %s ==== [%ss]\n' "$*" "$((SECONDS - T0))"; }
note() { printf '  %s\n' "$*"; }
warn() { printf 'test.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'test.sh: error: %s\n' "$*" >&2
    exit 1
}

FAILED_STEPS=() # lint/check steps that failed (tests are counted separately)
RESULTS=()      # one summary line per test executable
TOTAL_PASSED=0
TOTAL_FAILED=0
TOTAL_SKIPPED=0
SKIPPED_MARK="skiff-test: SKIPPED "
SKIP_LINES=() # "EXECUTABLE: TEST: why" of every skipped test

# run_step NAME CMD...: run a non-test step; record (but survive) a failure.
run_step() {
    local name=$1
    shift
    if "$@"; then
        note "$name: ok"
    else
        note "$name: FAILED"
        FAILED_STEPS+=("$name")
    fi
}

# lint: cargo fmt, clippy, shellcheck (when installed).
lint() {
    if [ "${SKIFF_SKIP_LINT:-0}" = 1 ]; then
        section "lint (skipped: SKIFF_SKIP_LINT=1)"
        return
    fi
    section "cargo fmt --check"
    run_step "cargo fmt" cargo fmt --all -- --check
    section "cargo clippy"
    run_step "cargo clippy" cargo clippy --all-targets -- -D warnings
    if command -v shellcheck >/dev/null 2>&1; then
        section "shellcheck"
        local f scripts=()
        for f in scripts/*.sh bench/*.sh .ci/run; do
            [ -f "$f" ] && scripts+=("$f")
        done
        run_step "shellcheck" shellcheck "${scripts[@]}"
    fi
}

# run_logged LOG CMD...: run CMD with stdout+stderr into LOG while streaming
# LOG to our stdout. Output goes through a file, not a pipe, so a process
# leaked by a test (holding the output fd open) cannot hang the harness.
# Returns CMD's exit status. CMD runs in the background, where bash would make
# it ignore SIGINT/SIGQUIT (inherited by skiffd and containers!): env restores
# the defaults. Ctrl-C / SIGTERM to this script stop CMD via the trap below.
CURRENT_PID=""
TAIL_PID=""
# shellcheck disable=SC2317 # invoked via trap
on_signal() {
    trap - INT TERM
    if [ -n "$CURRENT_PID" ]; then kill -TERM "$CURRENT_PID" 2>/dev/null || true; fi
    if [ -n "$TAIL_PID" ]; then kill -TERM "$TAIL_PID" 2>/dev/null || true; fi
    printf '\ntest.sh: interrupted\n' >&2
    exit 130
}
trap on_signal INT TERM
run_logged() {
    local log=$1 rc=0
    shift
    : >"$log"
    env --default-signal=INT,QUIT "$@" >"$log" 2>&1 </dev/null &
    CURRENT_PID=$!
    # tail runs in the background too: `wait` (unlike a foreground command)
    # lets the signal trap run at once.
    tail -n +1 -s 0.2 -f --pid="$CURRENT_PID" "$log" &
    TAIL_PID=$!
    wait "$TAIL_PID" || true
    wait "$CURRENT_PID" || rc=$?
    CURRENT_PID=""
    TAIL_PID=""
    return "$rc"
}

# account NAME LOG RC SECS: parse libtest "test result:" lines of LOG, add
# them to the totals and record a summary line.
account() {
    local name=$1 log=$2 rc=$3 secs=$4 passed=0 failed=0 skipped=0 n=0 p f status
    while read -r p f; do
        passed=$((passed + p))
        failed=$((failed + f))
        n=$((n + 1))
    done < <(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed;.*/\1 \2/p' "$log")
    if [ "$rc" = 0 ]; then
        status=ok
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        status="TIMED OUT (${TEST_TIMEOUT}s)"
    else
        status="FAILED (exit $rc)"
    fi
    if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
        # Died without reporting a failed test (crash, abort, timeout, build error).
        failed=1
        status="$status, no libtest failure reported: counted as 1 failure"
    fi
    if [ "$n" = 0 ] && [ "$rc" = 0 ]; then
        status="ok (no libtest result line?)"
    fi
    # A test that could not run here prints one SKIPPED_MARK line (straight to
    # stderr, past libtest's capture) and returns: libtest counts it as passed, we
    # count it as skipped instead.
    skipped=$(grep -c "^$SKIPPED_MARK" "$log" || true)
    if [ "$skipped" -gt "$passed" ]; then skipped=$passed; fi
    local line
    while IFS= read -r line; do
        SKIP_LINES+=("$name: ${line#"$SKIPPED_MARK"}")
    done < <(grep "^$SKIPPED_MARK" "$log" || true)
    passed=$((passed - skipped))
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    TOTAL_SKIPPED=$((TOTAL_SKIPPED + skipped))
    RESULTS+=("$(printf '%-28s %4d passed, %3d failed, %3d skipped  %5ss  %s' "$name" "$passed" "$failed" "$skipped" "$secs" "$status")")
}

# finish: print the summary and exit with the overall status.
finish() {
    section "summary"
    local r s
    for r in "${RESULTS[@]}"; do note "$r"; done
    for s in "${FAILED_STEPS[@]}"; do note "step failed: $s"; done
    note "total time: $((SECONDS - T0))s"
    for s in "${SKIP_LINES[@]}"; do note "$s"; done
    if [ "$TOTAL_SKIPPED" != 0 ]; then
        echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
    else
        echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
    fi
    if [ "$TOTAL_FAILED" != 0 ] || [ "${#FAILED_STEPS[@]}" != 0 ]; then
        exit 1
    fi
    exit 0
}

# ============================================================================
# Root mode
# ============================================================================

# What skiff's default drivers need at run time (README lists the same), and
# scripts/demo.sh's busybox image and bus calls.
RUNTIME_PACKAGES=(uidmap dbus-daemon dbus-bin dbus-user-session fuse3 slirp4netns passt)
DEMO_PACKAGES=(busybox-static libglib2.0-bin)
# ... and what the tests need besides.
APT_PACKAGES=(
    "${RUNTIME_PACKAGES[@]}" "${DEMO_PACKAGES[@]}"
    systemd util-linux passwd procps python3 gcc libc6-dev
    fuse-overlayfs podman runc skopeo umoci docker-registry iperf3 apache2-utils openssl man-db zsh fish strace
)

pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]
}

# root_install_packages [PACKAGE...]: install what is missing (default: APT_PACKAGES).
root_install_packages() {
    section "apt packages"
    local p missing=() log wanted=("$@")
    [ "${#wanted[@]}" != 0 ] || wanted=("${APT_PACKAGES[@]}")
    for p in "${wanted[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" = 0 ]; then
        note "all ${#wanted[@]} packages present"
        return
    fi
    note "installing: ${missing[*]}"
    log=$(mktemp)
    if ! {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}"
    } >"$log" 2>&1 </dev/null; then
        tail -n 40 "$log" >&2
        die "apt-get failed (full log: $log)"
    fi
    rm -f "$log"
    note "installed"
}

# has_subid_range FILE USER UID: FILE has a range of >= SUBID_COUNT ids for USER.
has_subid_range() {
    awk -F: -v u="$2" -v id="$3" -v n="$SUBID_COUNT" \
        '($1 == u || $1 == id) && $3 + 0 >= n { found = 1 } END { exit !found }' "$1"
}

root_setup_user() {
    section "test user $TEST_USER"
    if ! id -u "$TEST_USER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$TEST_USER"
        note "created user $TEST_USER"
    fi
    TEST_UID=$(id -u "$TEST_USER")
    TEST_HOME=$(getent passwd "$TEST_USER" | cut -d: -f6)
    [ -d "$TEST_HOME" ] || die "home directory $TEST_HOME of $TEST_USER does not exist"

    touch /etc/subuid /etc/subgid
    local need=() start end
    has_subid_range /etc/subuid "$TEST_USER" "$TEST_UID" || need+=(subuid)
    has_subid_range /etc/subgid "$TEST_USER" "$TEST_UID" || need+=(subgid)
    if [ "${#need[@]}" != 0 ]; then
        # First id above every existing range (in either file), at least 200000.
        start=$(awk -F: 'BEGIN { m = 200000 } NF >= 3 && $2 + $3 > m { m = $2 + $3 } END { print m }' \
            /etc/subuid /etc/subgid)
        end=$((start + SUBID_COUNT - 1))
        local args=()
        [[ " ${need[*]} " == *" subuid "* ]] && args+=(--add-subuids "$start-$end")
        [[ " ${need[*]} " == *" subgid "* ]] && args+=(--add-subgids "$start-$end")
        usermod "${args[@]}" "$TEST_USER"
        note "added ${need[*]} range $start-$end"
    fi
    note "uid $TEST_UID, home $TEST_HOME"
    note "subuid: $(grep -E "^($TEST_USER|$TEST_UID):" /etc/subuid | tr '\n' ' ')"
    note "subgid: $(grep -E "^($TEST_USER|$TEST_UID):" /etc/subgid | tr '\n' ' ')"
}

# A second unprivileged user with no subordinate ranges, for the tests that check
# that `skiff doctor` reports them missing (tests/e2e_doctor.rs); its name is passed
# to the tests as SKIFF_NORANGES_USER.
NORANGES_USER=${SKIFF_NORANGES_USER:-skiffnoranges}
root_setup_noranges_user() {
    if ! id -u "$NORANGES_USER" >/dev/null 2>&1; then
        # -K ...=0: Debian's useradd would give it ranges otherwise.
        useradd -M -d /nonexistent -s /usr/sbin/nologin \
            -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$NORANGES_USER"
        note "created user $NORANGES_USER (no subuid/subgid ranges)"
    fi
    local uid f flag start count
    uid=$(id -u "$NORANGES_USER")
    for f in subuid subgid; do
        flag=--del-${f}s
        while IFS=: read -r _ start count; do
            usermod "$flag" "$start-$((start + count - 1))" "$NORANGES_USER"
            note "removed the $f range $start+$count of $NORANGES_USER"
        done < <(grep -E "^($NORANGES_USER|$uid):" "/etc/$f" || true)
    done
}

root_setup_kernel() {
    section "kernel and devices"
    # Debian's defaults are 0666 for both; some VMs/containers ship them 0600.
    # fuse-overlayfs needs /dev/fuse, slirp4netns and pasta need /dev/net/tun.
    local dev
    for dev in /dev/fuse /dev/net/tun; do
        if [ -c "$dev" ]; then
            chmod 0666 "$dev"
            note "$dev: mode 0666"
        else
            warn "$dev missing: the tests that need it will fail"
        fi
    done
    local f=/proc/sys/kernel/unprivileged_userns_clone
    if [ -e "$f" ] && [ "$(cat "$f")" = 0 ]; then
        echo 1 >"$f"
        note "enabled kernel.unprivileged_userns_clone"
    fi
    f=/proc/sys/user/max_user_namespaces
    if [ -e "$f" ] && [ "$(cat "$f")" = 0 ]; then
        die "user namespaces are disabled (user.max_user_namespaces = 0)"
    fi
    local b
    for b in /usr/bin/newuidmap /usr/bin/newgidmap; do
        [ -u "$b" ] || getcap "$b" 2>/dev/null | grep -q cap_set || warn "$b is neither setuid nor has file capabilities"
    done
    note "kernel $(uname -r)"
}

# Validate the systemd user unit offline, with ExecStart at the built skiffd.
check_systemd_units() {
    section "systemd unit files"
    local ok=1 dir rt err
    if command -v systemd-analyze >/dev/null 2>&1; then
        dir=$(mktemp -d)
        rt=$(mktemp -d)
        sed "s|^ExecStart=.*|ExecStart=$REPO/target/debug/skiffd|" systemd/skiffd.service >"$dir/skiffd.service"
        if ! err=$(XDG_RUNTIME_DIR=$rt systemd-analyze verify --user --man=no "$dir/skiffd.service" 2>&1 >/dev/null) ||
            [ -n "$err" ]; then
            printf '%s\n' "$err" >&2
            ok=0
        fi
        rm -rf "$dir" "$rt"
    else
        note "systemd-analyze not installed: skipping skiffd.service verification"
    fi
    # The D-Bus activation file must agree with the unit.
    local act=systemd/org.skiff.skiff1.service
    grep -qx '\[D-BUS Service\]' "$act" || { warn "$act: no [D-BUS Service] header"; ok=0; }
    grep -qx 'Name=org.skiff.skiff1' "$act" || { warn "$act: Name= is not org.skiff.skiff1"; ok=0; }
    grep -qx 'SystemdService=skiffd.service' "$act" || { warn "$act: SystemdService= is not skiffd.service"; ok=0; }
    grep -qE '^Exec=/' "$act" || { warn "$act: Exec= must be an absolute path"; ok=0; }
    grep -qx 'BusName=org.skiff.skiff1' systemd/skiffd.service || { warn "skiffd.service: BusName= mismatch"; ok=0; }
    # shellcheck disable=SC2016 # $MAINPID is systemd's, not ours
    grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' systemd/skiffd.service ||
        { warn "skiffd.service: ExecReload= must send SIGHUP (skiffd re-reads skiffd.toml)"; ok=0; }
    if [ "$ok" = 1 ]; then note "systemd units: ok"; else FAILED_STEPS+=("systemd units"); fi
}

# stage_file SRC DEST: an executable into the staging dir: a hard link where it can
# (the debug executables are some 6 GB together, and several worktrees' runs share
# the disk), else a copy; 0755 either way (cargo makes them so).
stage_file() {
    if [ "$(stat -c %a "$1")" = 755 ] && ln -f "$1" "$2" 2>/dev/null; then
        return 0
    fi
    install -m 0755 "$1" "$2"
}

# start_user_manager: a real `systemd --user` for the test user
# (scripts/user-manager.sh); the tests of skiff's systemd support use it through
# SKIFF_USER_MANAGER_RUNTIME_DIR and are counted as skipped without it.
USER_MANAGER_STATE=""
USER_MANAGER_RT=""
start_user_manager() {
    section "user manager (systemd --user for $TEST_USER)"
    USER_MANAGER_STATE=$STAGE/user-manager
    if USER_MANAGER_RT=$("$REPO/scripts/user-manager.sh" start "$TEST_USER" "$USER_MANAGER_STATE"); then
        note "running; XDG_RUNTIME_DIR=$USER_MANAGER_RT"
    else
        USER_MANAGER_RT=""
        USER_MANAGER_STATE=""
        warn "no user manager could be started: the tests that need one are skipped"
    fi
}

# stop_user_manager: after the tests (a failed step if the run made anything
# under a cgroup v1 hierarchy); again by the EXIT trap, which
# then finds nothing to stop unless the script ended early.
# shellcheck disable=SC2317 # invoked via trap
stop_user_manager() {
    if [ -n "$USER_MANAGER_STATE" ] && [ -d "$USER_MANAGER_STATE" ]; then
        if ! "$REPO/scripts/user-manager.sh" stop "$USER_MANAGER_STATE"; then
            warn "stopping the user manager failed (see above)"
            FAILED_STEPS+=("user manager stop (its message above)")
        fi
    fi
    USER_MANAGER_STATE=""
}

# SKIFF_SETUP_ONLY=1 (scripts/demo.sh as root): only what skiff itself needs:
# the runtime packages, the user $SKIFF_TEST_USER with ranges, devices and sysctls.
root_setup_only() {
    root_install_packages "${RUNTIME_PACKAGES[@]}" "${DEMO_PACKAGES[@]}"
    root_setup_user
    root_setup_kernel
}

root_main() {
    if [ "${SKIFF_SETUP_ONLY:-0}" = 1 ]; then
        root_setup_only
        return
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found in PATH (rustup installs it in ~/.cargo/bin)"
    command -v runuser >/dev/null 2>&1 || die "runuser not found (util-linux)"
    root_install_packages
    root_setup_user
    root_setup_noranges_user
    root_setup_kernel
    lint

    section "build test executables"
    local json
    json=$(mktemp)
    # json-render-diagnostics: compiler errors stay human-readable on stderr.
    if ! cargo test --no-run --message-format=json-render-diagnostics >"$json"; then
        rm -f "$json"
        die "cargo test --no-run failed (compiler output above)"
    fi
    # kind<TAB>name<TAB>path of every test executable, library first.
    local exes
    exes=$(python3 - "$json" <<'PY'
import json, sys
seen, out = set(), []
order = {"lib": 0, "bin": 1, "test": 2}
with open(sys.argv[1]) as f:
    for line in f:
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") != "compiler-artifact" or not m.get("executable"):
            continue
        if not m.get("profile", {}).get("test"):
            continue
        exe = m["executable"]
        if exe in seen:
            continue
        seen.add(exe)
        kind = m["target"]["kind"][0]
        kind = {"rlib": "lib", "cdylib": "lib", "proc-macro": "lib"}.get(kind, kind)
        out.append((order.get(kind, 3), kind, m["target"]["name"], exe))
for _, kind, name, exe in sorted(out):
    print(f"{kind}\t{name}\t{exe}")
PY
    )
    rm -f "$json"
    [ -n "$exes" ] || die "no test executables found in cargo's output"
    section "cargo build --bins"
    cargo build --bins

    check_systemd_units

    section "staging"
    STAGE=$(mktemp -d "${TMPDIR:-/tmp}/skiff-test.XXXXXX")
    if [ "${SKIFF_KEEP_STAGE:-0}" = 1 ]; then
        note "keeping $STAGE (SKIFF_KEEP_STAGE=1)"
        trap 'stop_user_manager' EXIT
    else
        trap 'stop_user_manager; rm -rf "$STAGE" 2>/dev/null || warn "could not fully remove $STAGE"' EXIT
    fi
    chmod 0755 "$STAGE"
    mkdir -m 0755 "$STAGE/bin" "$STAGE/tests"
    mkdir -m 0700 "$STAGE/logs"
    local b
    for b in skiff skiffd skiff-systemd-generator skiff-monitor; do
        stage_file "target/debug/$b" "$STAGE/bin/$b"
    done
    local kind name exe staged=()
    while IFS=$'\t' read -r kind name exe; do
        stage_file "$exe" "$STAGE/tests/$kind-$name"
        staged+=("$kind-$name")
        note "$kind-$name  <- ${exe#"$REPO"/}"
    done <<<"$exes"

    # Doc tests can only run through cargo (as root); they are pure Rust snippets.
    section "doc tests (as root)"
    local t rc start
    if grep -q '"lib"' <<<"$(cargo metadata --no-deps --format-version 1 2>/dev/null || true)"; then
        start=$SECONDS
        rc=0
        run_logged "$STAGE/logs/doctests.log" cargo test --doc -- "$@" || rc=$?
        account "doctests" "$STAGE/logs/doctests.log" "$rc" "$((SECONDS - start))"
    fi

    start_user_manager

    # Test executables run from the staging dir (runuser keeps the cwd), with a
    # clean environment: no XDG_RUNTIME_DIR / DBUS_SESSION_BUS_ADDRESS, the tests
    # make their own bus and XDG dirs (those of skiff's systemd support find the
    # real user manager on SKIFF_USER_MANAGER_RUNTIME_DIR). timeout kills the
    # executable's whole process group when it overruns.
    cd "$STAGE"
    local before after
    for t in "${staged[@]}"; do
        section "test $t (as $TEST_USER)"
        before=$(pgrep -u "$TEST_USER" | sort || true)
        start=$SECONDS
        rc=0
        run_logged "$STAGE/logs/$t.log" \
            runuser -u "$TEST_USER" -- env -i \
            HOME="$TEST_HOME" PATH="$TEST_PATH" USER="$TEST_USER" LOGNAME="$TEST_USER" \
            SKIFF_BIN_DIR="$STAGE/bin" RUST_BACKTRACE=1 ${USER_MANAGER_RT:+SKIFF_USER_MANAGER_RUNTIME_DIR="$USER_MANAGER_RT"} \
            ${NORANGES_USER:+SKIFF_NORANGES_USER="$NORANGES_USER"} \
            timeout -k 30 "$TEST_TIMEOUT" "$STAGE/tests/$t" "$@" || rc=$?
        account "$t" "$STAGE/logs/$t.log" "$rc" "$((SECONDS - start))"
        # Report (do not kill) processes the test executable left behind.
        after=$(pgrep -u "$TEST_USER" | sort || true)
        local leaked
        leaked=$(comm -13 <(echo "$before") <(echo "$after") | tr '\n' ',' | sed 's/^,*//; s/,*$//')
        if [ -n "$leaked" ]; then
            warn "$t left processes of $TEST_USER running:"
            ps -o pid=,args= -p "$leaked" >&2 || true
        fi
    done
    run_as_noranges_user "$@"
    section "user manager stop"
    stop_user_manager
    finish
}

# The doctor test that needs a real user without ranges, as that user.
run_as_noranges_user() {
    local t=test-e2e_doctor name=doctor_as_a_user_really_without_ranges rc=0 start=$SECONDS
    [ -n "$NORANGES_USER" ] && [ -x "$STAGE/tests/$t" ] || return 0
    # Only when the filters given (if any) select it.
    if [ $# != 0 ] && ! printf '%s\n' "$@" | grep -qF -e "$name" -e doctor; then
        return 0
    fi
    section "test $t $name (as $NORANGES_USER)"
    run_logged "$STAGE/logs/$t-noranges.log" \
        runuser -u "$NORANGES_USER" -- env -i \
        HOME=/tmp PATH="$TEST_PATH" USER="$NORANGES_USER" LOGNAME="$NORANGES_USER" \
        SKIFF_BIN_DIR="$STAGE/bin" RUST_BACKTRACE=1 SKIFF_NORANGES_USER="$NORANGES_USER" \
        timeout -k 30 "$TEST_TIMEOUT" "$STAGE/tests/$t" --ignored --exact "$name" || rc=$?
    account "$t (as $NORANGES_USER)" "$STAGE/logs/$t-noranges.log" "$rc" "$((SECONDS - start))"
}

# ============================================================================
# Normal-user mode
# ============================================================================

user_check_prereqs() {
    section "prerequisites"
    local problems=() warnings=() c f user uid
    user=$(id -un)
    uid=$(id -u)
    command -v cargo >/dev/null 2>&1 ||
        problems+=("cargo not found in PATH; fix: install Rust with rustup (https://rustup.rs), then add ~/.cargo/bin to PATH")
    if [ "${SKIFF_SKIP_LINT:-0}" != 1 ] && command -v cargo >/dev/null 2>&1 &&
        ! { command -v rustfmt && command -v cargo-clippy; } >/dev/null 2>&1; then
        problems+=("rustfmt/clippy not found; fix: rustup component add rustfmt clippy (or SKIFF_SKIP_LINT=1)")
    fi
    # command:package; needed now.
    for c in dbus-daemon:dbus-daemon gdbus:libglib2.0-bin busctl:systemd newuidmap:uidmap newgidmap:uidmap \
        python3:python3 slirp4netns:slirp4netns pasta:passt; do
        command -v "${c%%:*}" >/dev/null 2>&1 ||
            problems+=("${c%%:*} not found; fix: sudo apt-get install ${c#*:}")
    done
    if [ ! -x /bin/busybox ]; then
        problems+=("/bin/busybox not found; fix: sudo apt-get install busybox-static")
    elif ldd /bin/busybox 2>/dev/null | grep -q '=>'; then
        problems+=("/bin/busybox is dynamically linked; fix: sudo apt-get install busybox-static")
    fi
    local b
    for b in newuidmap newgidmap; do
        b=$(command -v "$b" 2>/dev/null) || continue
        [ -u "$b" ] || getcap "$b" 2>/dev/null | grep -q cap_set ||
            problems+=("$b is neither setuid nor has file capabilities; fix: sudo chmod u+s $b")
    done
    local nosub=()
    for f in /etc/subuid /etc/subgid; do
        if [ ! -r "$f" ] || ! has_subid_range "$f" "$user" "$uid"; then nosub+=("$f"); fi
    done
    if [ "${#nosub[@]}" != 0 ]; then
        problems+=("no range of >= $SUBID_COUNT ids for $user in ${nosub[*]}; fix (with a range no other user has):" \
            "    sudo usermod --add-subuids 200000-265535 --add-subgids 200000-265535 $user")
    fi
    if [ -e /proc/sys/kernel/unprivileged_userns_clone ] &&
        [ "$(cat /proc/sys/kernel/unprivileged_userns_clone)" = 0 ]; then
        problems+=("unprivileged user namespaces are disabled; fix: sudo sysctl kernel.unprivileged_userns_clone=1")
    fi
    # Needed by later milestones only: warn.
    for c in fusermount3:fuse3 fuse-overlayfs:fuse-overlayfs \
        podman:podman runc:runc skopeo:skopeo umoci:umoci docker-registry:docker-registry iperf3:iperf3; do
        command -v "${c%%:*}" >/dev/null 2>&1 ||
            warnings+=("${c%%:*} not found (some tests need it); fix: sudo apt-get install ${c#*:}")
    done
    for f in /dev/fuse /dev/net/tun; do
        if [ ! -e "$f" ]; then
            warnings+=("$f does not exist (FUSE/userspace networking tests need it)")
        elif ! [ -r "$f" ] || ! [ -w "$f" ]; then
            warnings+=("$f is not accessible; fix: sudo chmod 0666 $f")
        fi
    done
    for c in "${warnings[@]}"; do warn "$c"; done
    if [ "${#problems[@]}" != 0 ]; then
        printf 'test.sh: missing prerequisites:\n' >&2
        for c in "${problems[@]}"; do printf '  %s\n' "$c" >&2; done
        printf '(or run scripts/test.sh as root, which sets everything up and tests as user %s)\n' "$TEST_USER" >&2
        exit 1
    fi
    note "ok (user $user, uid $uid)"
}

user_main() {
    user_check_prereqs
    lint
    section "cargo test"
    local log rc=0 start=$SECONDS
    log=$(mktemp)
    run_logged "$log" cargo test --no-fail-fast -- "$@" || rc=$?
    account "cargo test" "$log" "$rc" "$((SECONDS - start))"
    rm -f "$log"
    finish
}

if [ "$(id -u)" = 0 ]; then
    root_main "$@"
else
    user_main "$@"
fi
