# SPDX-License-Identifier: Apache-2.0
"""How many Apache processes this machine can hold: the pool's size from its memory and cores.

Under prefork every connection holds a whole process, and an idle process of the
host costs about 11-14 MB (PSS, measured: the pages children share are counted
once across them).  A pool sized for a 24 GB server swamps a 1 GB box, so
``workers`` and ``spare_workers`` default to ``auto``, worked out when Apache's
configuration is generated (``clarens-admin apache-conf``, the package's
postinst), from the memory and cores this process may use: a container's or
service's cgroup limits count, not only what the hardware has::

    workers        = min(512, memory / 2 / 14 MB)                 at least 8
    spare_workers  = min(48 x cores, memory / 5 / (2 x 14 MB))    at least 2, below workers
    idle at most   = min(2 x spare_workers, workers)              (MaxSpareServers)

Half the memory for processes at work, a fifth for idle ones even after a burst
(the most prefork keeps idle is twice spare_workers).  ``workers`` is bounded by
memory, not by cores: a slow client holds a process while costing no CPU, so the
pool is what a crowd of slow clients must exhaust before others wait (200 of them
took every process of a pool of 160).  On 1 GB and 1 core: 36 workers, 7 spare, at
most 14 idle (about 200 MB); on 2 cores and 24 GB: 512 and 96, 96 to 192 of them
idle.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

PROCESS_MB = 14              # what the budget counts per process (idle ones measured 11-14 MB PSS)
MAX_WORKERS = 512           # past this, a crowd is a front end's to hold (HAProxy, scaling.md)
SPARE_PER_CORE = 48
MIN_WORKERS, MIN_SPARE = 8, 2
UNLIMITED = 1 << 60          # a cgroup limit at least this large is no limit ("max", or v1's 2^63 rounded)


@dataclass(frozen=True)
class Machine:
    """What this process may use: memory in MB and whole cores."""
    memory_mb: int
    cores: int

    def __str__(self) -> str:
        return "%d core%s, %d MB" % (self.cores, "" if self.cores == 1 else "s", self.memory_mb)


@dataclass(frozen=True)
class Pool:
    """Apache's prefork pool: at most ``workers`` requests at once, ``spare`` idle processes kept ready."""
    workers: int
    spare: int

    @property
    def max_spare(self) -> int:
        """The most idle processes prefork keeps after a burst (MaxSpareServers)."""
        return min(2 * self.spare, self.workers)


def pool(workers: int | None, spare: int | None, machine: Machine | None = None) -> Pool:
    """The pool of ``workers`` and ``spare`` (None: auto) on ``machine`` (by default this one, read
    only for auto); ValueError if spare is not below workers."""
    def size() -> Machine:
        return machine or this_machine()
    chosen_workers = workers if workers is not None else auto_workers(size())
    chosen_spare = spare if spare is not None else auto_spare(size(), chosen_workers)
    if chosen_spare >= chosen_workers:
        auto = "" if workers is not None and spare is not None else " (auto on %s)" % size()
        raise ValueError("spare_workers = %d must be below workers = %d%s" % (chosen_spare, chosen_workers, auto))
    return Pool(chosen_workers, chosen_spare)


def auto_workers(machine: Machine) -> int:
    """``workers = auto`` on ``machine`` (the formula of this module's documentation)."""
    return max(MIN_WORKERS, min(MAX_WORKERS, machine.memory_mb // 2 // PROCESS_MB))


def auto_spare(machine: Machine, workers: int) -> int:
    """``spare_workers = auto`` on ``machine``, for a pool of ``workers``."""
    spare = min(SPARE_PER_CORE * machine.cores, machine.memory_mb // 5 // (2 * PROCESS_MB))
    return max(1, min(max(MIN_SPARE, spare), workers - 1))


def _cgroup_dirs() -> dict[str, str]:
    """This process's cgroup directory by controller ("memory", "cpu"; "" for the cgroup v2 hierarchy)."""
    mounts: dict[str, tuple[str, str]] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields, _, tail = line.partition(" - ")
                parts, fstype = fields.split(), tail.split()
                if not fstype:
                    continue
                if fstype[0] == "cgroup2":
                    mounts[""] = (parts[3], parts[4])
                elif fstype[0] == "cgroup":
                    for option in fstype[-1].split(","):
                        if option in ("memory", "cpu"):
                            mounts[option] = (parts[3], parts[4])
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    dirs = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            if controller in mounts:
                root, point = mounts[controller]
                relative = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
                dirs[controller] = os.path.normpath(os.path.join(point, relative))
    return dirs


def _ancestors(directory: str, top_levels: int = 64) -> list[str]:
    """``directory`` and the directories above it: a limit set on a parent cgroup holds for its children."""
    found: list[str] = []
    while directory not in found and len(found) < top_levels:
        found.append(directory)
        directory = os.path.dirname(directory)
    return found


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cgroup_memory(dirs: dict[str, str]) -> int | None:
    """The lowest memory limit over this process's cgroups, in bytes, or None."""
    limits = []
    for controller, name in (("", "memory.max"), ("memory", "memory.limit_in_bytes")):
        for directory in _ancestors(dirs[controller]) if controller in dirs else []:
            value = _read(os.path.join(directory, name))
            if value and value.isdigit() and int(value) < UNLIMITED:
                limits.append(int(value))
    return min(limits) if limits else None


def _cgroup_cores(dirs: dict[str, str]) -> int | None:
    """Whole cores this process's cgroups' CPU quota allows, or None without a quota."""
    quotas = []
    for directory in _ancestors(dirs[""]) if "" in dirs else []:
        fields = (_read(os.path.join(directory, "cpu.max")) or "").split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            quotas.append(int(fields[0]) / int(fields[1]))
    for directory in _ancestors(dirs["cpu"]) if "cpu" in dirs else []:
        quota, period = _read(os.path.join(directory, "cpu.cfs_quota_us")), \
            _read(os.path.join(directory, "cpu.cfs_period_us"))
        if quota and period and quota.isdigit() and period.isdigit() and int(period):
            quotas.append(int(quota) / int(period))
    return max(1, math.ceil(min(quotas))) if quotas else None


def this_machine() -> Machine:
    """The memory and cores this process may use: the hardware's, or less where a cgroup says so."""
    total = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    if total is None:
        raise OSError("no MemTotal in /proc/meminfo")
    dirs = _cgroup_dirs()
    limit = _cgroup_memory(dirs)
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cores(dirs)
    return Machine(memory_mb=min(total, limit or total) // (1 << 20), cores=min(cores, quota or cores))
