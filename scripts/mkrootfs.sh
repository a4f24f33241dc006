#!/usr/bin/env bash
# scripts/mkrootfs.sh: build a small busybox root filesystem tarball, without root.
#
# Usage: scripts/mkrootfs.sh [--gzip] OUT.tar      (OUT may be "-" for stdout)
#
# The archive holds bin/busybox (from $BUSYBOX, default /bin/busybox, which must
# be statically linked: Debian's busybox-static) plus one bin/<applet> symlink per
# applet, sbin, usr/bin and usr/sbin as symlinks to bin, a minimal etc/ (passwd,
# group, empty hostname/hosts/resolv.conf), empty proc sys dev tmp root, www/index.html
# and home/user. Every entry is owned by 0:0 except home/user (1000:1000): GNU tar's
# --owner/--group record those owners, so no chown (and no root) is needed.
# Timestamps are fixed ($SOURCE_DATE_EPOCH, default 2024-01-01) and entries sorted,
# so the output is reproducible for a given busybox binary.
set -euo pipefail

usage() {
    echo "usage: $0 [--gzip] OUT.tar   (OUT may be - for stdout)" >&2
    exit 2
}

gzip_out=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --gzip | -z) gzip_out=1 ;;
        -h | --help) usage ;;
        -) [ -z "$out" ] || usage; out="-" ;;
        -*) usage ;;
        *) [ -z "$out" ] || usage; out="$1" ;;
    esac
    shift
done
[ -n "$out" ] || usage

busybox=${BUSYBOX:-/bin/busybox}
if [ ! -x "$busybox" ]; then
    echo "mkrootfs: $busybox not found; install it with: apt-get install busybox-static" >&2
    exit 1
fi
# A dynamically linked busybox would not run inside the rootfs (no libc there).
if ldd "$busybox" 2>/dev/null | grep -q '=>'; then
    echo "mkrootfs: $busybox is dynamically linked; install busybox-static" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
orig_dir=$PWD
umask 022
mkdir -p "$root"
cd "$root"

# --- the filesystem tree -------------------------------------------------------
mkdir -p bin etc proc sys dev tmp root home/user www usr
cp "$busybox" bin/busybox
chmod 0755 bin/busybox
for applet in $("$busybox" --list); do
    case "$applet" in
        busybox | */* | "") continue ;;
    esac
    ln -s busybox "bin/$applet"
done
ln -s bin sbin
ln -s ../bin usr/bin
ln -s ../bin usr/sbin

cat > etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > etc/group <<'EOF'
root:x:0:
user:x:1000:
nogroup:x:65534:
EOF
# Placeholders the runtime bind-mounts over (or fills in).
: > etc/hostname
: > etc/hosts
: > etc/resolv.conf
cat > www/index.html <<'EOF'
<!DOCTYPE html>
<html><head><title>skiff</title></head><body><p>hello from skiff</p></body></html>
EOF

chmod 0755 bin etc proc sys dev home home/user www usr
chmod 0644 etc/passwd etc/group etc/hostname etc/hosts etc/resolv.conf www/index.html
chmod 1777 tmp
chmod 0700 root

# --- the archive ---------------------------------------------------------------
mtime="@${SOURCE_DATE_EPOCH:-1704067200}"
common=(--format=gnu --numeric-owner --mtime="$mtime" --sort=name)
tarball="$work/rootfs.tar"
# Member names carry no "./" prefix (like `docker export`): list the top-level
# entries explicitly instead of archiving ".".
mapfile -t top < <(find "$root" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort)
# Pass 1: everything but home/user, owned by root.
tar -C "$root" -cf "$tarball" "${common[@]}" --owner=0 --group=0 \
    --anchored --exclude=home/user -- "${top[@]}"
# Pass 2: append home/user (and anything below it) owned by user 1000:1000.
tar -C "$root" -rf "$tarball" "${common[@]}" --owner=1000 --group=1000 -- home/user

if [ "$gzip_out" = 1 ]; then
    gzip -n -9 "$tarball"
    tarball="$tarball.gz"
fi
if [ "$out" = "-" ]; then
    cat "$tarball"
else
    cd "$orig_dir"
    # Write via a temp name in the target directory, then rename (no half-written files).
    tmp_out="$out.tmp.$$"
    cp "$tarball" "$tmp_out"
    chmod 0644 "$tmp_out"
    mv -f "$tmp_out" "$out"
fi
