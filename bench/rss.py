# SPDX-License-Identifier: Apache-2.0
"""The resident memory of an Apache instance's children over a run, and whether it stayed flat.

A leak in the host shows as children that keep growing while they serve.  Prefork
replaces children (MaxSpareServers, crashes), and pids are reused, so a child is
known by its pid *and* its kernel start time; only children that lived from one
sample to the other, and were old enough at the first to have finished starting,
are compared; the others are counted, not ignored.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass

from clarens import procfs

Key = tuple[int, str]   # (pid, kernel start time): one process, even if its pid is reused


@dataclass(frozen=True)
class Child:
    """One child at one moment."""
    pid: int
    rss_kb: int        # VmRSS: what "resident" means to ps and top
    anon_kb: int       # RssAnon: the part a leak in the interpreter's heap grows
    cpu_s: float       # user + system CPU so far: tells busy children from idle ones
    age_s: float       # seconds since it was forked: a young child may still be running PythonImport


@dataclass(frozen=True)
class Criterion:
    """What "flat" means, from the baseline to the end: the median growth of the busy survivors is
    under ``median_mb``, and no survivor grows by ``max_mb`` or more.  The busy ones are the ``busy``
    survivors that used the most CPU in between (a load generator's kept-alive connection holds one
    child for the whole run), and at least ``min_busy_cpu_s``: those others may have served a few
    requests, and every child grows a few MB once, at its first request (Apache's own allocations)."""
    median_mb: float = 2.0
    max_mb: float = 8.0
    busy: int = 16
    min_busy_cpu_s: float = 0.1
    min_age_s: float = 5.0     # younger at the first sample: still starting (PythonImport), not compared


def _status_kb(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status ({} if the process is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in f) if v.endswith("kB\n")}
    except OSError:
        return {}


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def children(parent: int) -> dict[Key, Child]:
    """The live children of ``parent`` now."""
    found, now, hz = {}, _uptime(), os.sysconf("SC_CLK_TCK")   # /proc counts time in clock ticks
    for pid in procfs.pids():
        st = procfs.stat(pid)
        if st is None or st[1][1] != str(parent) or st[1][0] in ("Z", "X"):
            continue
        kb = _status_kb(pid)
        if "VmRSS" in kb:
            found[(pid, st[1][19])] = Child(pid, kb["VmRSS"], kb.get("RssAnon", 0),
                                            (int(st[1][11]) + int(st[1][12])) / hz, now - int(st[1][19]) / hz)
    return found


def _mb(kb: float) -> float:
    return round(kb / 1024, 2)


def compare(before: dict[Key, Child], after: dict[Key, Child], criterion: Criterion) -> dict:
    """How the children of ``before`` grew by ``after``: counts, growth in MB, and the verdict."""
    lived = set(before) & set(after)
    survivors = sorted(k for k in lived if before[k].age_s >= criterion.min_age_s)
    rows = [{"pid": key[0], "before_mb": _mb(before[key].rss_kb), "after_mb": _mb(after[key].rss_kb),
             "growth_mb": _mb(after[key].rss_kb - before[key].rss_kb),
             "anon_growth_mb": _mb(after[key].anon_kb - before[key].anon_kb),
             "cpu_s": round(after[key].cpu_s - before[key].cpu_s, 2)} for key in survivors]
    rows.sort(key=lambda r: -r["cpu_s"])
    for i, r in enumerate(rows):
        r["busy"] = i < criterion.busy and r["cpu_s"] >= criterion.min_busy_cpu_s
    busy = [r["growth_mb"] for r in rows if r["busy"]]
    every = [r["growth_mb"] for r in rows]
    median = statistics.median(busy) if busy else None
    largest = max(every) if every else None
    flat = median is not None and largest is not None and median < criterion.median_mb and largest < criterion.max_mb
    return {"children_before": len(before), "children_after": len(after), "survivors": len(survivors),
            "busy_survivors": len(busy), "young": len(lived) - len(survivors), "started": len(set(after) - set(before)),
            "exited": len(set(before) - set(after)), "median_growth_mb": median, "max_growth_mb": largest,
            "criterion": asdict(criterion),
            "flat": flat, "children": rows}
