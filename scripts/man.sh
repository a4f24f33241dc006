#!/bin/sh
# Builds skiff and writes what scripts/install.sh installs beside the binaries:
#   target/PROFILE/man/*.1 — one man page per command (skiff.1, skiff-run.1,
#     skiff-system-df.1, ...), generated from the CLI definition by `skiff __man DIR`;
#   target/PROFILE/completions/{skiff.bash,_skiff,skiff.fish} — `skiff completion SHELL`.
# Usage: scripts/man.sh [--release]   (PROFILE: debug, or release)
set -eu
cd "$(dirname "$0")/.."
profile=debug
if [ "${1:-}" = "--release" ]; then
    profile=release
    cargo build --release --bin skiff
else
    cargo build --bin skiff
fi
out=${CARGO_TARGET_DIR:-target}/$profile
skiff=$out/skiff
rm -rf "$out/man.tmp"
"$skiff" __man "$out/man.tmp" >/dev/null
rm -rf "$out/man"
mv "$out/man.tmp" "$out/man"
mkdir -p "$out/completions"
"$skiff" completion bash >"$out/completions/skiff.bash"
"$skiff" completion zsh >"$out/completions/_skiff"
"$skiff" completion fish >"$out/completions/skiff.fish"
echo "man pages in $out/man, completion scripts in $out/completions"
