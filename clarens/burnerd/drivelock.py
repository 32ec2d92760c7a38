# SPDX-License-Identifier: Apache-2.0
"""One writer per drive: an exclusive ``flock`` on a lock file per drive, held by every xorriso that touches it.

libburn takes no lock on a ``stdio:`` target (two xorriso processes writing one
pseudo-disc interleave silently), and an xorriso can outlive the helper that
started it.  So the worker opens its drive's lock file afresh for each use of
the drive (a job, an eject, a look at the medium), takes an exclusive flock on
that open file, and passes the descriptor to every xorriso it starts meanwhile.
A flock belongs to the open file and lasts until its last descriptor is closed:
an orphaned xorriso keeps its drive locked, and nothing else starts beside it.

When the lock is held, its holders are found in /proc
(:func:`clarens.procfs.holders`).  Holders carrying the run token variable
(:data:`~clarens.burnerd.processes.RUN_VAR`) are processes (xorriso) of an earlier
helper: their process groups are killed and the lock is taken.  Anyone else is
left alone, and the drive is busy.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from typing import Iterator

from clarens import procfs
from clarens.burnerd import processes
from clarens.burnerd.errors import Refused

# How long a lock may stay held by others before the drive counts as busy: holders that
# are on their way out (a process exiting, a child of ours between fork and exec holding
# copies of our descriptors) let go within milliseconds.
SETTLE = 0.5


def lock_path(db: str, drive: str) -> str:
    """The lock file of ``drive``: next to the job database, in the helper's own directory."""
    return "%s.drive-%s.lock" % (db, drive)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _describe(pid: int) -> str:
    st = procfs.stat(pid)
    return "%d (%s)" % (pid, st[0]) if st else str(pid)


class DriveLock:
    """The lock of one drive; ``grace``: how our own leftover processes are killed (processes.terminate_group)."""

    def __init__(self, drive: str, path: str, grace: float, log: logging.Logger):
        self.drive = drive
        self.path = path
        self.grace = grace
        self.log = log

    @contextmanager
    def held(self) -> Iterator[int]:
        """Hold the drive: yields the descriptor holding the lock, to pass to every xorriso started meanwhile.

        Refused("drive_busy") if another process holds it.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            self._take(fd)
            yield fd
        finally:
            os.close(fd)     # not LOCK_UN: an xorriso that is somehow still running keeps the drive locked

    def _take(self, fd: int) -> None:
        killed: set[int] = set()
        deadline = time.monotonic() + SETTLE
        while not _try_lock(fd):
            holders = [pid for pid in procfs.holders(self.path) if pid != os.getpid()]
            pgids = {procfs.pgid(pid) for pid in holders if processes.run_token(pid) is not None}
            ours = {pgid for pgid in pgids if pgid is not None} - killed     # None: the process has gone
            for pgid in sorted(ours):
                self.log.warning("%s: killing xorriso process group %d: it holds the drive's lock, left by an "
                                 "earlier helper", self.drive, pgid)
                processes.terminate_group(pgid, self.grace)
                killed.add(pgid)
                deadline = time.monotonic() + SETTLE
            if time.monotonic() > deadline:
                who = "process " + ", ".join(map(_describe, holders)) if holders else "a process the helper cannot see"
                raise Refused("drive_busy", "drive %s is in use by another program: %s holds its lock %s"
                              % (self.drive, who, self.path))
            time.sleep(0.02)
