#!/usr/bin/env bash
# bench/fuse-bench.sh: skiff's FUSE overlay vs fuse-overlayfs vs kernel overlayfs vs the
# plain directory, in one run, inside one unprivileged user+mount namespace.
#
# Usage: bench/fuse-bench.sh [--reps N] [--skiffd PATH] [--baseline PATH] [--tests "seqread stat ..."]
#                            [--dir DIR]
#
# --dir DIR puts the layers and mounts in DIR (default /tmp), e.g. a reflink filesystem
# (xfs, btrfs) to see copy-up by FICLONE; the test user must be able to write there.
#
# --baseline PATH adds a fifth candidate, "base": another skiffd (e.g. a build of the
# previous commit), to compare a change side by side in the same run.
#
# Tests (each on a fresh mount; "warm" is a second pass on the same mount):
#   seqread  sequential read of a BIG_MB (1024) MiB lower file, cold and warm
#   stat     find + lstat over TREE_FILES (20000) lower files, cold and warm
#   lsR      ls -lR of that tree, cold and warm
#   readdir  ls -f of a DIR_FILES (30000) entry lower dir, cold and warm
#   lsl      ls -l of that dir, cold and warm
#   untar    tar -x of TAR_MB (200) MB in TAR_FILES (11000) files onto the mount
#   copyup   append one byte to a COPYUP_MB (512) MiB lower file (after a sync)
#   rm       rm -rf of a lower dir of RM_FILES (2000) files
# The layers are three lower dirs (L0 holds the data, L1 and L2 add entries to the shared
# dirs); kernel overlay uses userxattr; "plain" runs the same commands on a plain
# directory (for writes: a scratch copy, copy-up = cp + append). Candidates are
# interleaved round-robin, REPS (3) times; medians in seconds, and ratios, are printed
# and written to $OUT (default /tmp/fuse-bench-results.txt).
#
# As root it re-runs itself as $SKIFF_TEST_USER (skifftest); as a user it re-runs itself
# in `unshare -rm`. Page caches cannot be dropped unprivileged: "cold" means a fresh
# mount (the FUSE and overlay caches are empty; the backing files may be cached).
set -euo pipefail

REPS=${REPS:-3}
SKIFFD=${SKIFFD:-}
BASE=${BASE:-}
TESTS=${TESTS:-"seqread stat lsR readdir lsl untar copyup rm"}
BIG_MB=${BIG_MB:-1024}
TREE_FILES=${TREE_FILES:-20000}
DIR_FILES=${DIR_FILES:-30000}
TAR_MB=${TAR_MB:-200}
TAR_FILES=${TAR_FILES:-11000}
COPYUP_MB=${COPYUP_MB:-512}
RM_FILES=${RM_FILES:-2000}
OUT=${OUT:-/tmp/fuse-bench-results.txt}
FB_DIR=${FB_DIR:-/tmp}
# glibc's tunables for the skiff servers: skiffd starts a container's monitor (and so
# its FUSE server, a fork) without the per-thread malloc cache since 2026-12-07
# (src/monitor/heap.rs, TCACHE_TUNABLE); "base" is taken to be an earlier build.
OURS_TUNABLES=${OURS_TUNABLES-glibc.malloc.tcache_count=0}
BASE_TUNABLES=${BASE_TUNABLES-}

while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS=$2; shift ;;
        --skiffd) SKIFFD=$2; shift ;;
        --baseline) BASE=$2; shift ;;
        --tests) TESTS=$2; shift ;;
        --dir) FB_DIR=$2; shift ;;
        *) echo "usage: $0 [--reps N] [--skiffd PATH] [--baseline PATH] [--tests LIST] [--dir DIR]" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$SKIFFD" ]; then
    here=$(cd "$(dirname "$0")/.." && pwd)
    SKIFFD=$here/target/release/skiffd
fi
SKIFFD=$(readlink -f "$SKIFFD")
[ -z "$BASE" ] || BASE=$(readlink -f "$BASE")
export REPS SKIFFD BASE TESTS BIG_MB TREE_FILES DIR_FILES TAR_MB TAR_FILES COPYUP_MB RM_FILES OUT FB_DIR
export OURS_TUNABLES BASE_TUNABLES

if [ -z "${FB_INNER:-}" ]; then
    if [ "$(id -u)" = 0 ]; then
        stage=$(mktemp -d /tmp/fuse-bench-stage.XXXX)
        cp "$0" "$stage/" && cp "$SKIFFD" "$stage/skiffd"
        sbase=""
        if [ -n "$BASE" ]; then
            mkdir "$stage/base" && cp "$BASE" "$stage/base/skiffd" && sbase="$stage/base/skiffd"
        fi
        chmod -R 755 "$stage"
        trap 'rm -rf "$stage"' EXIT
        runuser -u "${SKIFF_TEST_USER:-skifftest}" -- env -i HOME=/tmp PATH=/usr/bin:/bin:/usr/sbin:/sbin \
            REPS="$REPS" SKIFFD="$stage/skiffd" BASE="$sbase" TESTS="$TESTS" BIG_MB="$BIG_MB" TREE_FILES="$TREE_FILES" \
            DIR_FILES="$DIR_FILES" TAR_MB="$TAR_MB" TAR_FILES="$TAR_FILES" COPYUP_MB="$COPYUP_MB" \
            RM_FILES="$RM_FILES" OUT="$OUT" FB_DIR="$FB_DIR" OURS_TUNABLES="$OURS_TUNABLES" \
            BASE_TUNABLES="$BASE_TUNABLES" bash "$stage/$(basename "$0")"
        exit
    fi
    exec env FB_INNER=1 unshare -rm bash "$0"
fi

W=$(mktemp -d "$FB_DIR/fuse-bench.XXXX")
echo "layers and mounts on $(stat -f -c %T "$W") ($W)" >&2
cleanup() {
    for m in "$W"/mnt-*; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
mount --make-rprivate /

echo "building data in $W ..." >&2
python3 - "$W" <<'EOF'
import os, sys
w = sys.argv[1]
env = lambda k: int(os.environ[k])
L0, L1, L2 = (os.path.join(w, n) for n in ("L0", "L1", "L2"))
for l in (L0, L1, L2):
    os.makedirs(l)
def write(p, n):
    with open(p, "wb") as f:
        left = n
        chunk = os.urandom(1 << 20)
        while left > 0:
            f.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)
write(os.path.join(L0, "big"), env("BIG_MB") << 20)
write(os.path.join(L0, "cu"), env("COPYUP_MB") << 20)
small = b"x" * 100
def tree(root, files, per_dir=100):
    for i in range(files):
        d = os.path.join(root, "d%03d" % (i // per_dir))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%05d" % i), "wb") as f:
            f.write(small)
tree(os.path.join(L0, "tree"), env("TREE_FILES"))
for l in (L1, L2):  # more entries in shared dirs
    tree(os.path.join(l, "tree"), 200)
big = os.path.join(L0, "d30k")
os.makedirs(big)
for i in range(env("DIR_FILES")):
    open(os.path.join(big, "e%05d" % i), "wb").close()
os.makedirs(os.path.join(L1, "d30k"))
open(os.path.join(L1, "d30k", "top"), "wb").close()
rmd = os.path.join(L0, "rmdir")
tree(rmd, env("RM_FILES"))
# The tarball's source.
src = os.path.join(w, "tarsrc")
n = env("TAR_FILES")
size = (env("TAR_MB") << 20) // n
blob = os.urandom(size)
for i in range(n):
    d = os.path.join(src, "t%03d" % (i // 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(blob)
EOF
tar -C "$W/tarsrc" -cf "$W/data.tar" . && rm -rf "$W/tarsrc"
LOWER_TOPFIRST="$W/L2:$W/L1:$W/L0"

now() { date +%s%N; }
# secs CMD...: runs CMD, prints its wall time in seconds.
secs() {
    local s e
    s=$(now)
    "$@" >/dev/null 2>&1 || { echo fail; return; }
    e=$(now)
    awk -v a="$s" -v b="$e" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'
}

fresh() {
    local c=$1
    M="$W/mnt-$c"
    rm -rf "$W/upper-$c" "$W/work-$c" "$M"
    mkdir -p "$W/upper-$c" "$W/work-$c" "$M"
    case $c in
        plain) ;;
        kovl) mount -t overlay overlay -o "lowerdir=$LOWER_TOPFIRST,upperdir=$W/upper-$c,workdir=$W/work-$c,userxattr" "$M" ;;
        fovl) fuse-overlayfs -o "lowerdir=$LOWER_TOPFIRST,upperdir=$W/upper-$c,workdir=$W/work-$c" "$M" ;;
        ours|base)
            local bin=$SKIFFD tunables=$OURS_TUNABLES
            [ "$c" = ours ] || { bin=$BASE; tunables=$BASE_TUNABLES; }
            GLIBC_TUNABLES=$tunables "$bin" __fuse-mount --lowerdir "$LOWER_TOPFIRST" --upper "$W/upper-$c" --work "$W/work-$c" "$M" 2>"$W/$c.log" &
            for _ in $(seq 200); do
                [ "$(stat -f -c %T "$M")" = fuseblk ] || [ "$(stat -f -c %T "$M")" = fuse ] && break
                sleep 0.02
            done ;;
    esac
}
gone() {
    local c=$1
    [ "$c" = plain ] || umount "$W/mnt-$c" 2>/dev/null || umount -l "$W/mnt-$c"
    wait 2>/dev/null || true
}
# The path a test reads: the mount, or L0 for plain.
src() { if [ "$1" = plain ]; then echo "$W/L0"; else echo "$W/mnt-$1"; fi; }

record() { echo "$1 $2 $3" >>"$W/raw"; }

run_test() {
    local c=$1 t=$2 s
    fresh "$c"
    s=$(src "$c")
    case $t in
        seqread)
            record "$c" seqread "$(secs cat "$s/big")"
            record "$c" seqread_warm "$(secs cat "$s/big")" ;;
        stat)
            record "$c" stat "$(secs find "$s/tree" -printf '%s\n')"
            record "$c" stat_warm "$(secs find "$s/tree" -printf '%s\n')" ;;
        lsR)
            record "$c" lsR "$(secs ls -lR "$s/tree")"
            record "$c" lsR_warm "$(secs ls -lR "$s/tree")" ;;
        readdir)
            record "$c" readdir "$(secs ls -f "$s/d30k")"
            record "$c" readdir_warm "$(secs ls -f "$s/d30k")" ;;
        lsl)
            record "$c" lsl "$(secs ls -l "$s/d30k")"
            record "$c" lsl_warm "$(secs ls -l "$s/d30k")" ;;
        untar)
            if [ "$c" = plain ]; then mkdir -p "$W/scratch" && d="$W/scratch"; else d="$W/mnt-$c/x" && mkdir "$d"; fi
            record "$c" untar "$(secs tar -xf "$W/data.tar" -C "$d")"
            rm -rf "$W/scratch" ;;
        copyup)
            # The previous candidate's copy is still being written back: start clean.
            sync
            if [ "$c" = plain ]; then
                record "$c" copyup "$(secs sh -c "cp '$W/L0/cu' '$W/cu-copy' && echo x >> '$W/cu-copy'")"
                rm -f "$W/cu-copy"
            else
                record "$c" copyup "$(secs sh -c "echo x >> '$W/mnt-$c/cu'")"
            fi ;;
        rm)
            if [ "$c" = plain ]; then
                cp -a "$W/L0/rmdir" "$W/rmcopy"
                record "$c" rm "$(secs rm -rf "$W/rmcopy")"
            else
                record "$c" rm "$(secs rm -rf "$W/mnt-$c/rmdir")"
            fi ;;
    esac
    gone "$c"
}

CANDS="plain kovl fovl ours"
[ -z "$BASE" ] || CANDS="$CANDS base"
for rep in $(seq "$REPS"); do
    for t in $TESTS; do
        for c in $CANDS; do
            echo "rep $rep: $t on $c" >&2
            run_test "$c" "$t"
        done
    done
done

python3 - "$W/raw" "$OUT" <<'EOF'
import sys, statistics, collections
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    c, t, v = line.split()
    vals[(t, c)].append(v)
tests = []
for (t, c) in vals:
    if t not in tests:
        tests.append(t)
def med(t, c):
    v = vals.get((t, c), [])
    if not v or "fail" in v:
        return None
    return statistics.median(float(x) for x in v)
cands = [c for c in ("plain", "kovl", "fovl", "ours", "base") if any(k[1] == c for k in vals)]
names = {"plain": "plain", "kovl": "kernel overlay", "fovl": "fuse-overlayfs", "ours": "ours", "base": "ours before"}
ratios = [("ours", "fovl"), ("ours", "kovl")] + ([("base", "fovl"), ("ours", "base")] if "base" in cands else [])
out = ["| test (s, median) | " + " | ".join(names[c] for c in cands) + " | " + " | ".join("%s / %s" % (names[a], names[b]) for a, b in ratios) + " |",
       "|---" + "|---:" * (len(cands) + len(ratios)) + "|"]
f = lambda x: "fail" if x is None else "%.3f" % x
r = lambda a, b: "-" if a is None or b is None or b == 0 else "%.2f" % (a / b)
for t in tests:
    m = {c: med(t, c) for c in cands}
    out.append("| %s | %s | %s |" % (t, " | ".join(f(m[c]) for c in cands), " | ".join(r(m[a], m[b]) for a, b in ratios)))
raw = ["%s %s %s" % (t, c, ",".join(v)) for (t, c), v in sorted(vals.items())]
text = "\n".join(out) + "\n\nraw:\n" + "\n".join(raw) + "\n"
print(text)
open(sys.argv[2], "w").write(text)
EOF
