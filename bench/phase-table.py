#!/usr/bin/env python3
"""bench/phase-table.py ROUNDS LOG NAME TITLE [STEPS_TSV]: the table of start-phases.sh
and build-phases.sh. ROUNDS has one "t0 t1" line (µs, the CLI's exec and exit) per round;
LOG is skiffd's log at `skiff::phase=debug` (its helpers' and the monitors' lines tagged
`[tag ...]`). Prints, per phase mark, the median time from the CLI's exec and the step
from the row above; STEPS_TSV (mark<TAB>what the step was) labels the steps."""
import re
import statistics
import sys

rounds_file, log, name, title = sys.argv[1:5]
what = {}
if len(sys.argv) > 5:
    for line in open(sys.argv[5]):
        if "\t" in line:
            k, v = line.rstrip("\n").split("\t", 1)
            what[k] = v

rounds = [tuple(map(int, l.split())) for l in open(rounds_file) if l.strip()]
mark = re.compile(r'^(?:\[(?P<tag>[^\]]*)\] )?.*skiff::phase: phase="?(?P<phase>[^" ]+)"?'
                  r'(?: what="?(?P<what>[^" ]*)"?)? t_us=(?P<t>\d+)')
marks = []
for line in open(log, errors="replace"):
    m = mark.search(re.sub(r'\x1b\[[0-9;]*m', '', line))
    if m:
        # skiffd's own lines are untagged; a container's (its monitor's) are tagged
        # "container ..."; a helper's by its name.
        tag = (m.group("tag") or "").split(" ")[0]
        who = {"": "skiffd", "container": "monitor"}.get(tag, tag)
        label = m.group("phase") + ("/" + m.group("what") if m.group("what") else "")
        marks.append((int(m.group("t")), label, who))
marks.sort()
if not marks:
    sys.exit("%s: no phase marks in the log (is skiffd new enough?)" % name)

offsets = {}  # label -> [ms from cli-exec], one per round
whos = {}
totals = []
for t0, t1 in rounds:
    seen = {}
    totals.append((t1 - t0) / 1000)
    for t, label, who in marks:
        if t0 <= t <= t1:
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = "%s#%d" % (label, seen[label])
            offsets.setdefault(label, []).append((t - t0) / 1000)
            whos[label] = who

n = len(rounds)
rows = sorted(((statistics.median(v), k, len(v)) for k, v in offsets.items()), key=lambda r: r[0])
print("== %s, %d rounds (median ms from cli-exec; step = from the row above)" % (title, n))
print("   %-34s %-8s %9s %9s %6s  %s" % ("mark", "process", "at", "step", "rounds", "what the step was"))
prev = 0.0
print("   %-34s %-8s %9.2f %9s %6d" % ("cli-exec", "skiff", 0.0, "", n))
for med, label, k in rows:
    print("   %-34s %-8s %9.2f %9.2f %6d  %s" % (label, whos[label], med, med - prev, k, what.get(label, "")))
    prev = med
total = statistics.median(totals)
print("   %-34s %-8s %9.2f %9.2f %6d  %s" % ("cli-exit", "skiff", total, total - prev, n, "the CLI exits"))
print("total (median wall time of the CLI): %.2f ms" % total)
