# SPDX-License-Identifier: Apache-2.0
"""Names of drives and jobs across the helpers: ``HOST:DRIVE`` and ``"HOST:ID"``.

This host's own helper (host ``""``) keeps plain drive names and integer job ids;
a drive host's drives are ``HOST:DRIVE`` and its jobs the strings ``"HOST:ID"``.
Pure functions: which helper a name belongs to is :class:`.helpers.Helpers`'s to say.
"""

from __future__ import annotations

import re

from .refusals import refused

HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")   # a drive host's name in drive_hosts
MAX_JOB = 2 ** 62


def qualified(host: str, local: str | int) -> str | int:
    """The name callers see for drive or job ``local`` of ``host``'s helper."""
    return "%s:%s" % (host, local) if host else local


def drive_ref(name: str) -> tuple[str, str, bool]:
    """(host, the drive's name there, whether the name had a host part) of drive ``name``."""
    host, sep, local = name.rpartition(":")
    return host, local, bool(sep)


def job_ref(job_id: int | str) -> tuple[str, int]:
    """(host, the job's number there) of job ``job_id``: an integer, or ``"HOST:ID"``;
    the fault job_not_found if it is neither."""
    host, number = "", job_id
    if isinstance(job_id, str):
        host, _, number = job_id.rpartition(":")
    if not (str(number).isascii() and str(number).isdigit()) or int(number) > MAX_JOB:
        raise refused("job_not_found", "there is no job %s of yours" % ascii(job_id))
    return host, int(number)
