# SPDX-License-Identifier: Apache-2.0
"""Space promised to the uploads being written, so that concurrent uploads cannot overrun the reserve.

Every upload checks, before it reads its body, that the filesystem has room for the
rest of it while keeping a reserve free.  Checked each on its own, two uploads of
100 MB on a disk with 120 MB free both passed, filled it, and failed at the end.  So
an upload's check counts what every other upload being written still has to write
(its declared total less what its partial file holds: :func:`pending`), and the
checks (with the taking of the partial file before them) happen one at a time,
under an ``flock`` on one file of the directory that every process shares
(:func:`one_at_a_time`).  An upload is being written while it holds the lock on its
partial file (:mod:`clarens.web.uploads`): one whose process died stops counting at once.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterable, Iterator

LOCK_NAME = ".uploads.lock"     # hidden: never listed as an image
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@contextmanager
def one_at_a_time(directory: str) -> Iterator[None]:
    """Hold the directory's upload lock: no other process takes, checks or sweeps meanwhile."""
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def writing(path: str) -> int | None:
    """The size of the partial file at ``path`` if an upload is writing it now (its writer holds its
    lock), else None.  Call it under :func:`one_at_a_time`, so that no writer is kept from its lock."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None                   # nobody holds it: an interrupted upload, waiting to be resumed
    except BlockingIOError:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def pending(partials: Iterable[tuple[str, int]], own: str) -> int:
    """Bytes the uploads being written to ``partials`` (path, declared total) have still to write,
    leaving out the one at ``own``."""
    owed = 0
    for path, total in partials:
        if path != own and (size := writing(path)) is not None:
            owed += max(0, total - size)
    return owed
