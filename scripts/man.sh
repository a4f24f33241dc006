#!/bin/sh
# Writes skiff's man pages (one per command: skiff.1, skiff-run.1, skiff-system-df.1, ...)
# into DIR (default target/man), generated from the CLI definition by `skiff __man`.
# An install step copies DIR/*.1 into share/man/man1.
set -eu
cd "$(dirname "$0")/.."
dir=${1:-target/man}
cargo build --bin skiff
target=${CARGO_TARGET_DIR:-target}
rm -rf "$dir.tmp"
"$target/debug/skiff" __man "$dir.tmp" >/dev/null
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "man pages in $dir"
