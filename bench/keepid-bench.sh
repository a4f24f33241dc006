#!/usr/bin/env bash
# bench/keepid-bench.sh: first and second start of a ~100 MB image with `--userns keep-id`,
# skiff vs podman+runc, and the disk each uses for it.
#
# Usage: bench/keepid-bench.sh [-n ROUNDS] [--bin-dir DIR] [--storage-driver fuse|vfs|overlay]
#                              [--size-mb MB] [--files N]
#
# The image: the busybox tar (scripts/mkrootfs.sh) plus /data with N files (default 1000)
# of random bytes, MB megabytes in all (default 100), owned by root. Each round, on each
# side, the image is removed and imported again (not timed), so the start timed is the
# image's first keep-id start: podman has to make its chowned copy of the image for the
# keep-id mapping then (it caches it for later starts), skiff's FUSE overlay translates
# owners in its replies and copies nothing, skiff's kernel overlay driver makes its own
# keep-id copy of each layer (cached too). Right after, a second keep-id start of the same
# image is timed on each side (the copies reused). Rounds interleave skiff and podman.
#
# Disk: the size of each side's storage (du -sk, inside a user namespace since layers
# belong to subordinate ids) right after the import, after the first and after the
# second keep-id run, in the last round; the differences are what keep-id cost on disk.
#
# Setup and cleanup are bench/common.sh's (private dbus-daemon, skiffd, podman storage).
set -euo pipefail

BENCH=keepid-bench
ROUNDS=5
BIN_DIR=${SKIFF_BIN_DIR:-}
SKIFFD_ARGS=()
SIZE_MB=100
FILES=1000

usage() {
    echo "usage: $0 [-n ROUNDS] [--bin-dir DIR] [--storage-driver D] [--size-mb MB] [--files N]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; ROUNDS=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        --storage-driver) [ $# -ge 2 ] || usage; SKIFFD_ARGS=(--storage-driver "$2"); shift ;;
        --size-mb) [ $# -ge 2 ] || usage; SIZE_MB=$2; shift ;;
        --files) [ $# -ge 2 ] || usage; FILES=$2; shift ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
for v in "$ROUNDS" "$SIZE_MB" "$FILES"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: counts must be positive integers" >&2; exit 2; }
done

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

args=(-n "$ROUNDS" --size-mb "$SIZE_MB" --files "$FILES")
args+=(${SKIFFD_ARGS[@]+"${SKIFFD_ARGS[@]}"})
bench_reexec_as_user "${args[@]}"
bench_setup

BIG=demo/big
echo "== the image: busybox + $FILES files, $SIZE_MB MB"
python3 - "$T/busybox.tar" "$T/big.tar" "$SIZE_MB" "$FILES" <<'EOF'
import io, os, sys, tarfile
src, dst, mb, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
size = mb * 1024 * 1024 // n
with tarfile.open(src) as i, tarfile.open(dst, "w") as o:
    for m in i.getmembers():
        o.addfile(m, i.extractfile(m) if m.isfile() else None)
    d = tarfile.TarInfo("data")
    d.type, d.mode = tarfile.DIRTYPE, 0o755
    o.addfile(d)
    for k in range(n):
        f = tarfile.TarInfo("data/f%05d" % k)
        f.size, f.mode = size, 0o644
        o.addfile(f, io.BytesIO(os.urandom(size)))
EOF

du_k() {
    unshare --map-root-user --map-auto du -sk "$1" 2>/dev/null | cut -f1
}
SKIFF_STORE=$XDG_DATA_HOME/skiff/storage
PODMAN_STORE=$T/podman/$PODMAN_DRIVER/root

skiff_import() {
    "${SKIFF_CLI[@]}" rmi "$BIG" >/dev/null 2>&1 || true
    "${SKIFF_CLI[@]}" image import "$T/big.tar" "$BIG" >/dev/null
}
podman_import() {
    "${PODMAN[@]}" rmi -f "localhost/$BIG" >/dev/null 2>&1 || true
    "${PODMAN[@]}" import "$T/big.tar" "localhost/$BIG" >/dev/null 2>"$T/podman-import.log" ||
        { cat "$T/podman-import.log" >&2; die "podman import failed"; }
}
SKIFF_CMD=("${SKIFF_CLI[@]}" run --rm --userns keep-id "$BIG" true)
PODMAN_CMD=("${PODMAN[@]}" run --rm --userns keep-id "localhost/$BIG" true)

echo "   podman storage driver: $PODMAN_DRIVER; skiff: ${SKIFFD_ARGS[*]:-default driver}"
echo "== warm-up (busybox, default mapping)"
timed skiff "${SKIFF_CLI[@]}" run --rm "$IMAGE" true
timed podman "${PODMAN[@]}" run --rm "localhost/$IMAGE" true
rm -f "$T/skiff.times" "$T/podman.times" "$T/skiff2.times" "$T/podman2.times"

echo "== $ROUNDS rounds, interleaved (re-import, then the timed first and second keep-id starts)"
for _ in $(seq "$ROUNDS"); do
    skiff_import
    s_before=$(du_k "$SKIFF_STORE")
    timed skiff "${SKIFF_CMD[@]}"
    s_after=$(du_k "$SKIFF_STORE")
    timed skiff2 "${SKIFF_CMD[@]}"
    s_after2=$(du_k "$SKIFF_STORE")
    podman_import
    p_before=$(du_k "$PODMAN_STORE")
    timed podman "${PODMAN_CMD[@]}"
    p_after=$(du_k "$PODMAN_STORE")
    timed podman2 "${PODMAN_CMD[@]}"
    p_after2=$(du_k "$PODMAN_STORE")
    printf '.'
done
echo
read -r s_med s_p90 < <(stats "$T/skiff.times")
read -r p_med p_p90 < <(stats "$T/podman.times")
r=$(ratio "$s_med" "$p_med")
read -r s2_med s2_p90 < <(stats "$T/skiff2.times")
read -r p2_med p2_p90 < <(stats "$T/podman2.times")
r2=$(ratio "$s2_med" "$p2_med")

echo "== results ($ROUNDS first and second starts each)"
printf '   %-52s median %8.1f ms   p90 %8.1f ms\n' "skiff run --rm --userns keep-id $BIG true" "$s_med" "$s_p90"
printf '   %-52s median %8.1f ms   p90 %8.1f ms\n' "podman run --rm --userns keep-id ... true" "$p_med" "$p_p90"
printf '   %-52s median %8.1f ms   p90 %8.1f ms\n' "skiff, second keep-id start" "$s2_med" "$s2_p90"
printf '   %-52s median %8.1f ms   p90 %8.1f ms\n' "podman, second keep-id start" "$p2_med" "$p2_p90"
echo "   disk (last round, du -sk of the storage): skiff ${s_before} -> ${s_after} -> ${s_after2} KiB (+$((s_after - s_before)), then +$((s_after2 - s_after))), podman ${p_before} -> ${p_after} -> ${p_after2} KiB (+$((p_after - p_before)), then +$((p_after2 - p_after)))"
echo "first keep-id start: skiff median $s_med ms; podman: $p_med ms; ratio ${r}x"
echo "second keep-id start: skiff median $s2_med ms; podman: $p2_med ms; ratio ${r2}x"
