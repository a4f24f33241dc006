#!/usr/bin/env python3
"""bench/smaps-breakdown.py PID...: where an idle process's memory is, from /proc/PID/smaps.

For each PID, the mappings grouped by what they are, with Rss, Pss and Private_Dirty
(KiB; Private_Dirty is what the process alone pays, whatever else shares its files):

  exe text / exe rodata / exe relro+data / exe bss   the program's own file mappings
                                                     (r-x, r--, rw-, and the anonymous
                                                     rw- right after its last one)
  libs                          shared libraries (libc, ld.so, ...)
  [heap]                        brk heap (the main arena of malloc)
  [stack]                       the main thread's stack
  thread stacks                 anonymous rw- mappings right after a small ---p guard
  malloc arenas                 anonymous rw- mappings followed by a ---p reserve inside
                                one 64 MiB-aligned region (glibc's per-thread arenas)
  anon other                    any other anonymous mapping (mmap'd buffers, ...)
  kernel                        [vdso], [vvar], [vsyscall]

Used by bench/memory-bench.sh --breakdown; can be run by hand on any pid of one's own.
"""
import os
import re
import sys

HDR = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$")
FIELDS = ("Rss", "Pss", "Private_Dirty")


def mappings(pid):
    maps = []
    cur = None
    with open("/proc/%s/smaps" % pid) as f:
        for line in f:
            m = HDR.match(line)
            if m:
                cur = {
                    "start": int(m.group(1), 16),
                    "end": int(m.group(2), 16),
                    "perms": m.group(3),
                    "name": m.group(4).strip(),
                }
                for k in FIELDS:
                    cur[k] = 0
                maps.append(cur)
                continue
            k, _, v = line.partition(":")
            if cur is not None and k in FIELDS:
                cur[k] = int(v.split()[0])
    return maps


def classify(pid, maps):
    exe = os.readlink("/proc/%s/exe" % pid)
    out = []
    last_exe = -1
    for i, m in enumerate(maps):
        if m["name"] == exe:
            last_exe = i
    for i, m in enumerate(maps):
        name, perms = m["name"], m["perms"]
        size = m["end"] - m["start"]
        prev = maps[i - 1] if i > 0 else None
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        if name == exe:
            kind = {"r-xp": "exe text", "r--p": "exe rodata", "rw-p": "exe relro+data"}.get(
                perms, "exe " + perms
            )
            if perms == "r--p" and i > 0 and maps[i - 1]["perms"] == "r-xp":
                kind = "exe relro+data"  # after the text: .data.rel.ro (made read-only)
        elif i == last_exe + 1 and not name and perms == "rw-p":
            kind = "exe bss"
        elif name in ("[heap]", "[stack]"):
            kind = name
        elif name in ("[vdso]", "[vvar]", "[vsyscall]", "[vvar_vclock]"):
            kind = "kernel"
        elif name.startswith("/"):
            kind = "libs"
        elif perms == "---p":
            kind = None  # guards and reserves: never resident
        elif (
            perms == "rw-p"
            and prev is not None
            and prev["perms"] == "---p"
            and not prev["name"]
            and prev["end"] == m["start"]
            and prev["end"] - prev["start"] <= 64 * 1024
        ):
            kind = "thread stacks"
        elif (
            perms == "rw-p"
            and nxt is not None
            and nxt["perms"] == "---p"
            and m["start"] % (64 << 20) == 0
            and nxt["end"] - m["start"] <= 64 << 20
        ):
            kind = "malloc arenas"
        else:
            kind = "anon other"
        if kind:
            out.append((kind, size // 1024, m))
    return out


def main():
    for pid in sys.argv[1:]:
        try:
            comm = open("/proc/%s/comm" % pid).read().strip()
            maps = mappings(pid)
            threads = len(os.listdir("/proc/%s/task" % pid))
            rows = classify(pid, maps)
        except OSError as e:
            print("pid %s: %s" % (pid, e))
            continue
        groups = {}
        for kind, size, m in rows:
            g = groups.setdefault(kind, {"n": 0, "Size": 0, **{k: 0 for k in FIELDS}})
            g["n"] += 1
            g["Size"] += size
            for k in FIELDS:
                g[k] += m[k]
        print("   %s (pid %s, %d threads):" % (comm, pid, threads))
        print("      %-16s %5s %9s %7s %7s %7s" % ("mapping", "count", "size", "Rss", "Pss", "PrivDirty"))
        tot = {k: 0 for k in FIELDS}
        for kind in sorted(groups, key=lambda k: -groups[k]["Pss"]):
            g = groups[kind]
            print(
                "      %-16s %5d %9d %7d %7d %7d"
                % (kind, g["n"], g["Size"], g["Rss"], g["Pss"], g["Private_Dirty"])
            )
            for k in FIELDS:
                tot[k] += g[k]
        print("      %-16s %5s %9s %7d %7d %7d" % ("total", "", "", tot["Rss"], tot["Pss"], tot["Private_Dirty"]))


if __name__ == "__main__":
    main()
