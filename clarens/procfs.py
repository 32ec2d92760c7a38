# SPDX-License-Identifier: Apache-2.0
"""Facts about processes, from Linux's /proc."""

from __future__ import annotations

import os


def stat(pid: int) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) from /proc/PID/stat, or None if there is no such process.

    In the fields, [0] is the state, [1] the parent pid, [2] the process group,
    [11] and [12] user and system CPU ticks, [19] the start time.
    """
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    head, _, rest = text.rpartition(")")   # the command name may itself hold ")"
    return head.partition("(")[2], rest.split()


def cmdline(pid: int) -> list[bytes]:
    """The arguments ``pid`` was started with ([] if there is no such process)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def pids() -> list[int]:
    """Every process's pid."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is neither a zombie nor dead (an unreaped orphan's zombie can
    linger where PID 1 is slow to reap, as in containers)."""
    st = stat(pid)
    return st is not None and st[1][0] not in ("Z", "X")


def start_time(pid: int) -> str:
    """The kernel start time of ``pid`` (ticks since boot), or '' if there is no such process."""
    st = stat(pid)
    return st[1][19] if st else ""


def pgid(pid: int) -> int | None:
    """The process group of ``pid``, or None if there is no such process."""
    st = stat(pid)
    return int(st[1][2]) if st else None


def environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with ({} if there is no such process, it is not ours to
    read, or it is in the middle of an exec).

    Undecodable bytes become surrogate escapes, as in :data:`os.environ`.
    """
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (os.fsdecode(entry).partition("=") for entry in raw.split(b"\0") if entry)
    return {name: value for name, _, value in pairs}


def holders(path: str) -> list[int]:
    """Pids of the processes with a descriptor open on the file at ``path`` (same device and inode).

    Only processes whose descriptors we may read are seen (our own user's; all of them as root).
    """
    target = os.stat(path)
    found = []
    for pid in pids():
        fd_dir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:      # closed meanwhile, or the process has gone
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                found.append(pid)
                break
    return found
