#!/usr/bin/env bash
# scripts/install.sh: install skiff: binaries, the systemd user unit, the D-Bus
# activation file, and whatever else the build made (generator, completions, man pages).
#
# Usage: scripts/install.sh [--user | --prefix DIR] [--bin-dir DIR]
#
#   (default)      --prefix /usr/local (as root: for every user)
#   --user         for yourself only: ~/.local/bin, ~/.config/systemd/user,
#                  ~/.local/share/dbus-1/services, ... (the generator beside the binaries:
#                  systemd reads user generators only from system directories; the
#                  one root command that links it in is printed)
#   --prefix DIR   DIR/bin, DIR/lib/systemd/user, DIR/lib/systemd/user-generators,
#                  DIR/share/dbus-1/services, DIR/share/{man,doc/skiff,bash-completion,...}
#   --bin-dir DIR  take skiff and skiffd from DIR (default: $SKIFF_BIN_DIR, else the
#                  newer of target/release and target/debug)
#
# Installed, with the installed paths written into them:
#   skiff, skiffd, skiff-monitor        -> BIN
#   systemd/skiffd.service              -> UNITS/skiffd.service (ExecStart=BIN/skiffd)
#   systemd/org.skiff.skiff1.service    -> DBUS/org.skiff.skiff1.service (Exec=BIN/skiffd)
#   README.md, systemd/README.md, docs/configuration.md -> DOC (Documentation= names them)
# and, when they are there beside the binaries (DIR/...) or in target/*/:
#   skiff-systemd-generator             -> GENERATORS/ (the user generator directory)
#   man/*.[1-8]                         -> MAN/manN/
#   completions/skiff.bash or skiff     -> bash-completion/completions/skiff
#   completions/_skiff                  -> zsh/site-functions/_skiff
#   completions/skiff.fish              -> fish/vendor_completions.d/skiff.fish
# It prints every file it installs, and what to run next.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
mode=prefix
prefix=/usr/local
bin_src=${SKIFF_BIN_DIR:-}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}
while [ $# -gt 0 ]; do
    case "$1" in
        --user) mode=user ;;
        --prefix)
            [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
            prefix=$2
            shift
            ;;
        --prefix=*) prefix=${1#--prefix=} ;;
        --bin-dir)
            [ $# -ge 2 ] || { echo "install.sh: --bin-dir needs a directory" >&2; exit 2; }
            bin_src=$2
            shift
            ;;
        --bin-dir=*) bin_src=${1#--bin-dir=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

die() {
    echo "install.sh: $*" >&2
    exit 1
}

if [ "$mode" = user ]; then
    [ "$(id -u)" != 0 ] || die "--user installs for the user running it, not root: run it as that user"
    : "${HOME:?install.sh --user: HOME is not set}"
    cfg=${XDG_CONFIG_HOME:-$HOME/.config}
    data=${XDG_DATA_HOME:-$HOME/.local/share}
    BIN=$HOME/.local/bin
    UNITS=$cfg/systemd/user
    # systemd reads user generators from system directories only (systemd.generator(7)):
    # the generator goes beside the binaries, and linking it in takes root (said below).
    GENERATORS=$BIN
    DBUS=$data/dbus-1/services
    SHARE=$data
else
    case "$prefix" in
        /*) ;;
        *) die "--prefix must be an absolute path (the units name files under it): $prefix" ;;
    esac
    BIN=$prefix/bin
    UNITS=$prefix/lib/systemd/user
    GENERATORS=$prefix/lib/systemd/user-generators
    DBUS=$prefix/share/dbus-1/services
    SHARE=$prefix/share
fi
DOC=$SHARE/doc/skiff
MAN=$SHARE/man

# Where the binaries come from.
if [ -z "$bin_src" ]; then
    for d in "$REPO/target/release" "$REPO/target/debug"; do
        if [ -x "$d/skiffd" ] && [ -x "$d/skiff" ] &&
            { [ -z "$bin_src" ] || [ "$d/skiffd" -nt "$bin_src/skiffd" ]; }; then
            bin_src=$d
        fi
    done
fi
if [ -z "$bin_src" ] || [ ! -x "$bin_src/skiff" ] || [ ! -x "$bin_src/skiffd" ]; then
    die "no skiff and skiffd binaries${bin_src:+ in $bin_src}: build them first (cargo build --release), or name their directory with --bin-dir DIR"
fi

put() { # put MODE SRC DEST
    install -D -m "$1" "$2" "$3"
    echo "installed $3"
}
# put_edited SRC DEST SED-SCRIPT: a copy with the installed paths written in.
put_edited() {
    local tmp
    tmp=$(mktemp)
    sed "$3" "$1" >"$tmp"
    install -D -m 0644 "$tmp" "$2"
    rm -f "$tmp"
    echo "installed $2"
}

put 0755 "$bin_src/skiff" "$BIN/skiff"
put 0755 "$bin_src/skiffd" "$BIN/skiffd"
# The small per-container monitor skiffd runs from its own directory (without it
# skiffd runs itself as the monitor, which works but takes more memory per container).
if [ -x "$bin_src/skiff-monitor" ]; then
    put 0755 "$bin_src/skiff-monitor" "$BIN/skiff-monitor"
else
    echo "warning: no skiff-monitor in $bin_src (cargo build --release builds it): skiffd will run itself as each container's monitor" >&2
fi
put 0644 "$REPO/README.md" "$DOC/README.md"
put 0644 "$REPO/systemd/README.md" "$DOC/systemd.md"
put 0644 "$REPO/docs/configuration.md" "$DOC/configuration.md"
put_edited "$REPO/systemd/skiffd.service" "$UNITS/skiffd.service" \
    "s|^ExecStart=.*|ExecStart=$BIN/skiffd|; s|^Documentation=.*|Documentation=file://$DOC/README.md file://$DOC/systemd.md file://$DOC/configuration.md|; s|^# ExecStart assumes.*|# Installed by scripts/install.sh: ExecStart names the installed skiffd.|"
put_edited "$REPO/systemd/org.skiff.skiff1.service" "$DBUS/org.skiff.skiff1.service" \
    "s|^Exec=.*|Exec=$BIN/skiffd|"

# What other parts of the build may have made: beside the binaries, then target/*/.
extras=("$bin_src")
for d in "$REPO"/target/*/; do
    [ -d "$d" ] && extras+=("${d%/}")
done
found() { # found RELATIVE-PATH: the first that exists
    local d
    for d in "${extras[@]}"; do
        if [ -e "$d/$1" ]; then
            echo "$d/$1"
            return 0
        fi
    done
    return 1
}
if gen=$(found skiff-systemd-generator); then
    put 0755 "$gen" "$GENERATORS/skiff-systemd-generator"
fi
mandir=""
for d in "${extras[@]}"; do
    if compgen -G "$d/man/*.[1-8]" >/dev/null; then
        mandir=$d/man
        break
    fi
done
if [ -n "$mandir" ]; then
    for page in "$mandir"/*.[1-8]; do
        put 0644 "$page" "$MAN/man${page##*.}/$(basename "$page")"
    done
fi
if c=$(found completions/skiff.bash) || c=$(found completions/skiff); then
    put 0644 "$c" "$SHARE/bash-completion/completions/skiff"
fi
if c=$(found completions/_skiff); then
    put 0644 "$c" "$SHARE/zsh/site-functions/_skiff"
fi
if c=$(found completions/skiff.fish); then
    put 0644 "$c" "$SHARE/fish/vendor_completions.d/skiff.fish"
fi

echo
echo "skiffd's configuration (optional): \${XDG_CONFIG_HOME:-~/.config}/skiff/skiffd.toml, see $DOC/configuration.md"
case ":$PATH:" in
    *":$BIN:"*) ;;
    *) echo "add $BIN to your PATH" ;;
esac
if [ "$mode" = user ]; then
    if [ -x "$GENERATORS/skiff-systemd-generator" ]; then
        echo "for ~/.config/skiff/units/*.container (systemd reads user generators only from system directories), once, as root:"
        echo "  ln -s $GENERATORS/skiff-systemd-generator /etc/systemd/user-generators/skiff-systemd-generator"
    fi
    echo "then: systemctl --user daemon-reload && systemctl --user enable --now skiffd"
else
    echo "then, as each user: systemctl --user daemon-reload && systemctl --user enable --now skiffd"
fi
