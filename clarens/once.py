# SPDX-License-Identifier: Apache-2.0
"""Run a block exactly once per server start, across all Apache children.

Every child calls :func:`once_per_server` from its ``_startup_init``; the first
to take the exclusive ``flock`` runs the block and records the server-start
token, the others wait for the lock, see the token and skip.  ``flock`` locks
are released by the kernel when their holder dies, so a child that crashes
inside the block blocks nobody: the block did not record success, and the next
child runs it again.

A *server start* is identified by the Apache parent process (pid and kernel
start time, so a reused pid is a new start) and the MPM generation, which Apache
increments on every graceful restart.  So ``apachectl graceful`` counts as a new
server start: edited ACL files are loaded again without a full stop.
"""

from __future__ import annotations

import fcntl
import os
from typing import Callable

from clarens import procfs

try:  # only inside Apache
    from mod_python import apache as _apache
except ImportError:  # command-line tools, tests
    _apache = None

_AP_MPMQ_GENERATION = 15


def server_start_token(standalone: bool = False) -> str:
    """A string that is equal in every child of one server start, and differs across starts.
    ``standalone``: this process is a whole server by itself, so each start of it is a server start."""
    if standalone:
        return "%d:%s:0" % (os.getpid(), procfs.start_time(os.getpid()))
    parent = os.getppid()
    generation = _apache.mpm_query(_AP_MPMQ_GENERATION) if _apache is not None else 0
    return "%d:%s:%d" % (parent, procfs.start_time(parent), generation)


def _covers(recorded: str, token: str) -> bool:
    """Whether a recorded stamp covers ``token``: the same server, at the same or a later generation.

    During a graceful restart a child of the old generation may still start after
    the new generation ran the block; it must neither run it again nor roll the
    stamp back.
    """
    recorded_server, _, recorded_gen = recorded.rpartition(":")
    server, _, gen = token.rpartition(":")
    return recorded_server == server and recorded_gen.isdigit() and int(recorded_gen) >= int(gen)


def once_per_server(name: str, block: Callable[[], object], directory: str, standalone: bool = False) -> bool:
    """Run ``block()`` (its result is ignored) if no process has completed it yet in this server start.

    ``name`` identifies the block (letters, digits, ``_-.``); ``directory`` (the
    host's ``db_dir``) holds its lock and stamp files; ``standalone`` as for
    :func:`server_start_token`.  Returns True in the one process that ran the block.
    If the block raises, nothing is recorded and the exception propagates; the next
    caller will try again.  Service modules call :func:`clarens.once_per_server`.
    """
    if not name or not all(c.isalnum() or c in "_-." for c in name) or name[0] == ".":
        raise ValueError("invalid once_per_server name %r" % name)
    once_dir = os.path.join(directory, "once")
    os.makedirs(once_dir, mode=0o700, exist_ok=True)
    stamp = os.path.join(once_dir, name + ".done")
    token = server_start_token(standalone)
    fd = os.open(os.path.join(once_dir, name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with open(stamp) as f:
                if _covers(f.read(), token):
                    return False
        except FileNotFoundError:
            pass
        block()
        tmp = "%s.%d.tmp" % (stamp, os.getpid())
        with open(tmp, "w") as f:
            f.write(token)
        os.replace(tmp, stamp)
        return True
    finally:
        os.close(fd)   # releases the lock
