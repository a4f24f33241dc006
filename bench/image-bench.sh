#!/usr/bin/env bash
# bench/image-bench.sh: `skiff load` vs `podman load` of a ~100 MB multi-layer
# docker-archive (made once by this script: LAYERS layers of LAYER_MB MiB of
# incompressible files each, plain tar layers as `docker save` writes them), in one run,
# interleaved RUNS times; each load starts from an empty store (the image is removed
# after every load, so every layer is extracted every time). Prints medians (ms) and the
# skiff/podman ratio.
#
# Usage: bench/image-bench.sh [--runs N] [--bin-dir DIR]   (as root it re-runs itself as
# the test user; without --bin-dir it builds release binaries)
set -euo pipefail

BENCH=image-bench
RUNS=5
LAYERS=${LAYERS:-4}
LAYER_MB=${LAYER_MB:-25}
BIN_DIR=${SKIFF_BIN_DIR:-}

usage() {
    echo "usage: $0 [--runs N] [--bin-dir DIR]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) [ $# -ge 2 ] || usage; RUNS=$2; shift ;;
        --bin-dir) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift ;;
        *) usage ;;
    esac
    shift
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: --runs needs a positive integer" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_reexec_as_user --runs "$RUNS"
bench_setup

ARCHIVE=$T/multi.tar
echo "== making a $LAYERS x $LAYER_MB MiB docker-archive"
python3 - "$ARCHIVE" "$LAYERS" "$LAYER_MB" <<'EOF'
import hashlib, io, json, os, sys, tarfile
out, layers, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
diff_ids, names, blobs = [], [], []
for i in range(layers):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        d = tarfile.TarInfo(f"layer{i}")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        t.addfile(d)
        for j in range(mb):
            data = os.urandom(1 << 20)
            f = tarfile.TarInfo(f"layer{i}/file{j}")
            f.size = len(data)
            f.mode = 0o644
            t.addfile(f, io.BytesIO(data))
    blob = buf.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(blob).hexdigest())
    names.append(f"{i}/layer.tar")
    blobs.append(blob)
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
}).encode()
manifest = json.dumps([{"Config": "config.json", "RepoTags": ["localhost/bench/multi:1"],
                        "Layers": names}]).encode()
with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
    for name, data in [("config.json", config), ("manifest.json", manifest)] + list(zip(names, blobs)):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
EOF
echo "   $(du -m "$ARCHIVE" | cut -f1) MB"

for _ in $(seq "$RUNS"); do
    timed skiff "${SKIFF_CLI[@]}" load -q -i "$ARCHIVE"
    "${SKIFF_CLI[@]}" rmi localhost/bench/multi:1 >/dev/null
    timed podman "${PODMAN[@]}" load -q -i "$ARCHIVE"
    "${PODMAN[@]}" rmi localhost/bench/multi:1 >/dev/null
done

read -r s_med s_p90 < <(stats "$T/skiff.times")
read -r p_med p_p90 < <(stats "$T/podman.times")
echo "== load of a $LAYERS-layer $((LAYERS * LAYER_MB)) MiB docker-archive, $RUNS runs (podman storage: $PODMAN_DRIVER)"
printf '   skiff load   median %8s ms  p90 %8s ms\n' "$s_med" "$s_p90"
printf '   podman load  median %8s ms  p90 %8s ms\n' "$p_med" "$p_p90"
echo "   ratio skiff/podman (median): $(ratio "$s_med" "$p_med")"
