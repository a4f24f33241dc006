#!/usr/bin/env python3
# bench/oci-layout.py LAYOUT MB BUSYBOX: an OCI image layout of about MB megabytes
# (busybox and incompressible files), for the pull and push benchmarks.
import gzip, hashlib, io, json, os, platform, sys, tarfile
out, mb, busybox = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(out + "/blobs/sha256", exist_ok=True)
def blob(data, media):
    d = hashlib.sha256(data).hexdigest()
    with open(out + "/blobs/sha256/" + d, "wb") as f:
        f.write(data)
    return {"mediaType": media, "digest": "sha256:" + d, "size": len(data)}
def layer(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data, mode in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, 1700000000
            t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, compresslevel=1, mtime=0)
with open(busybox, "rb") as f:
    bb = f.read()
layers = [layer([("bin/busybox", bb, 0o755)])]
per = max(1, (mb * 1024 * 1024 - len(bb)) // 3)
for i in range(3):
    layers.append(layer([("data/part%d.bin" % i, os.urandom(per), 0o644)]))
config = {"architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()), "os": "linux",
          "config": {"Cmd": ["/bin/busybox", "true"]},
          "rootfs": {"type": "layers",
                     "diff_ids": ["sha256:" + hashlib.sha256(r).hexdigest() for r, _ in layers]}}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
            "layers": [blob(g, "application/vnd.oci.image.layer.v1.tar+gzip") for _, g in layers]}
m = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
m["annotations"] = {"org.opencontainers.image.ref.name": "big"}
with open(out + "/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [m]}, f)
with open(out + "/oci-layout", "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
