# SPDX-License-Identifier: Apache-2.0
"""SHA-256 of the files in a directory that were not hashed on the way in, computed in the background.

Uploads are hashed as they arrive (:mod:`clarens.web.uploads`).  A file put into the
directory some other way (an administrator's copy of a 50 GB Blu-ray image) must
not be hashed inside the request that first lists it: that took 20 s for 5 GB.  So
a listing only reads what is known (:meth:`Digests.known`, O(1) per file) and asks
for the rest (:meth:`Digests.request`), which starts one background process,

    /usr/bin/python3 -m clarens.web.digests DB DIRECTORY PREFIX SERVER

unless one is running already (it holds an ``flock`` while it works).  That process
hashes every file the image listing shows (a regular file named as an image:
:func:`clarens.image_names.name_problem`, the one rule) whose digest is missing or stale, one after
another, writing its progress and then each digest into the tdb file ``DB``
(``PREFIX + name``: ``{size, ino, mtime_ns, sha256}``; the progress under
``PREFIX + PROGRESS``), and exits when none is left.  It outlives the Apache child
that started it (its own session, a child of init), and one that dies is simply started again by the
next listing.  Other files (``notes.txt``, names that are not printable UTF-8, hidden uploads in
progress) are never read.

It does not outlive the server.  ``SERVER`` is ``PID:START``: the process that started the Apache
child (Apache's parent, which lives from start to stop, through graceful restarts) and its kernel
start time, so that another process given the same pid later is not taken for it.  The hashing
process looks every :data:`REPORT_EVERY` seconds and between files; once that process is gone
(``apachectl stop``, ``./run stop``, a crash, with or without systemd's cgroup), it stops within a
second, leaving no progress record and no digest of the file it was reading.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import time

from clarens import procfs
from clarens.db import Database, open_db
from clarens.image_names import name_problem

PROGRESS = "~hashing"         # PREFIX + this: {name, bytes, size, pid, updated}, while a file is hashed
CHUNK = 4 << 20
REPORT_EVERY = 0.5            # seconds between two progress records
REQUEST_EVERY = 2.0           # seconds between two looks for a running process, per process
PYTHON = "/usr/bin/python3"
SETSID = "/usr/bin/setsid"      # util-linux: on every Debian system
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CLARENS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def current(record: dict | None, st: os.stat_result) -> bool:
    """Whether ``record`` is a digest of the file as ``st`` describes it now."""
    if not record or not record.get("sha256"):
        return False
    return (record["size"], record["ino"], record["mtime_ns"]) == (st.st_size, st.st_ino, st.st_mtime_ns)


class Digests:
    """The digests of the files in ``directory``, kept in ``db`` under ``prefix``."""

    def __init__(self, directory: str, db: Database, prefix: str):
        self.directory = directory
        self.db = db
        self.prefix = prefix
        self.lock_path = db.path + ".hashing"
        self._tried: set[str] = set()      # tried by this run (unreadable or changed meanwhile: not again)
        self._next_request = 0.0
        self.server: tuple[int, str] | None = None     # the background process: (pid, start time) it outlives not

    def known(self, name: str) -> dict | None:
        """The record kept for ``name`` (None if there is none)."""
        return self.db.get(self.prefix + name)

    def progress(self) -> dict | None:
        """What the background process is hashing now: ``{name, bytes, size, pid, updated}``, or None."""
        return self.db.get(self.prefix + PROGRESS)

    def request(self) -> bool:
        """Make sure a background process is hashing what lacks a digest (looking at most every
        REQUEST_EVERY seconds in this process); whether one was started."""
        if time.monotonic() < self._next_request:
            return False
        self._next_request = time.monotonic() + REQUEST_EVERY
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False           # one is at work
        finally:
            os.close(fd)           # (releases the lock: the process takes it itself)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": _CLARENS_ROOT}
        # The server the hashing must not outlive: Apache's parent, whose children serve; a process
        # orphaned already (its parent init) watches itself.
        server = os.getppid() if os.getppid() != 1 else os.getpid()
        # setsid -f forks and returns at once: the hashing process, in a session of its own, is init's
        # child, not this Apache child's (which would keep it a zombie after it ends, never waiting).
        subprocess.run([SETSID, "-f", PYTHON, "-m", "clarens.web.digests", self.db.path, self.directory,
                        self.prefix, "%d:%s" % (server, procfs.start_time(server))], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       close_fds=True, check=False, timeout=10)
        return True

    # -- the background process -------------------------------------------------------------------

    def run(self) -> int:
        """Hash every file lacking a digest until none is left (the background process's work); the
        number hashed.  Returns at once if another process holds the lock."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            hashed = 0
            self._tried.clear()
            try:
                while self._serving() and (name := self._next()) is not None:
                    if self._hash(name):
                        hashed += 1
            finally:      # (a SIGTERM too: see main)
                self.db.delete(self.prefix + PROGRESS)
            return hashed
        finally:
            os.close(fd)

    def _serving(self) -> bool:
        """Whether the server this process must not outlive (:attr:`server`) still runs (a zombie, which
        whatever started Apache has not waited for yet, has stopped)."""
        return self.server is None or (procfs.start_time(self.server[0]) == self.server[1]
                                       and procfs.alive(self.server[0]))

    def _next(self) -> str | None:
        """A file whose digest is missing or stale (None if none is)."""
        for name in sorted(os.listdir(self.directory)):
            if name_problem(name) is not None:      # not an image: the listing leaves it out
                continue
            try:
                st = os.lstat(os.path.join(self.directory, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and not current(self.known(name), st) and name not in self._tried:
                return name
        return None

    def _hash(self, name: str) -> bool:
        """Hash ``name`` and record its digest, reporting progress; False if it could not be read as
        the regular file it was (it changed, or went away, meanwhile: the next process tries again)."""
        self._tried.add(name)
        try:
            fd = os.open(os.path.join(self.directory, name), _OPEN_FLAGS)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return False
            digest = hashlib.sha256()
            offset, reported = 0, 0.0
            while data := os.pread(fd, CHUNK, offset):
                digest.update(data)
                offset += len(data)
                if time.monotonic() - reported >= REPORT_EVERY:
                    reported = time.monotonic()
                    if not self._still(name, st) or not self._serving():
                        return False        # deleted or replaced, or the server stopped: no use reading on
                    self.db.put(self.prefix + PROGRESS, {"name": name, "bytes": offset, "size": st.st_size,
                                                         "pid": os.getpid(), "updated": time.time()})
            if os.fstat(fd).st_mtime_ns != st.st_mtime_ns or offset != st.st_size:
                return False        # written to meanwhile: hashed again on the next round
            self.db.put(self.prefix + name, {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns,
                                             "sha256": digest.hexdigest()})
            return True
        finally:
            os.close(fd)


    def _still(self, name: str, st: os.stat_result) -> bool:
        """Whether ``name`` still names the file ``st`` describes."""
        try:
            return os.lstat(os.path.join(self.directory, name)).st_ino == st.st_ino
        except FileNotFoundError:
            return False


def main(argv: list[str]) -> int:
    if len(argv) != 4 or not re.fullmatch(r"[0-9]+:[0-9]+", argv[3]):
        print("usage: python3 -m clarens.web.digests DB DIRECTORY PREFIX SERVER_PID:START_TIME", file=sys.stderr)
        return 2
    db_path, directory, prefix, server = argv
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))     # stopped: its records cleaned up
    digests = Digests(directory, open_db(db_path), prefix)
    pid, start = server.split(":")
    digests.server = (int(pid), start)
    digests.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
