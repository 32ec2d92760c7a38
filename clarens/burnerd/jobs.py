# SPDX-License-Identifier: Apache-2.0
"""The job database: one JSON record per job in a tdb file (through :mod:`clarens.db`).

Every change is a tdb transaction, so a crash leaves each record as it was
before or after a change, never half-written.  Keys:

``job:0000000042``
    a job (zero-padded ids sort in submission order)
``meta:next_id``
    the next job id
``run:DRIVE``
    the process (xorriso) working on DRIVE: ``{"token", "job", "purpose", "pid",
    "start_time"}``.  Written *before* it starts (with a fresh random
    token, which it gets in its environment, and no pid yet), completed with
    its pid and kernel start time once it runs, deleted when it has ended; so a
    helper killed at any moment leaves a record that lets its successor find and
    kill what it started

A job record (what the API returns)::

    {"id": 42, "identity": "/DC=org/CN=Alice", "uid": 33,
     "image": "debian.iso", "image_size": 659554304, "image_sha256": null,
     "drive": "sim0", "speed": 4, "verify": true,
     "state": "burning", "progress": {"percent": 12.5, "bytes": 82444288},
     "submitted": 1700000000.123, "started": 1700000001.0, "finished": null,
     "verification": null, "error": null, "error_code": null}

``verification`` is ``{"image_sha256", "disc_sha256", "match"}`` once verified.
``progress`` is that of the current phase: bytes written while burning, bytes
read back while verifying.
"""

from __future__ import annotations

import builtins
import secrets
import time
from typing import Any, Iterable

from clarens.db import Database

QUEUED, BURNING, VERIFYING = "queued", "burning", "verifying"
DONE, FAILED, CANCELLED, INTERRUPTED = "done", "failed", "cancelled", "interrupted"
STATES = (QUEUED, BURNING, VERIFYING, DONE, FAILED, CANCELLED, INTERRUPTED)
RUNNING = frozenset({BURNING, VERIFYING})
FINISHED = frozenset({DONE, FAILED, CANCELLED, INTERRUPTED})

_NEXT_ID = "meta:next_id"


def _key(job_id: int) -> str:
    return "job:%010d" % job_id


def now() -> float:
    """A timestamp as stored in jobs: Unix seconds, millisecond precision."""
    return round(time.time(), 3)


class JobStore:
    """Jobs in one tdb file; safe to share between threads (clarens.db serialises access)."""

    def __init__(self, db: Database, keep_finished: int):
        self.db = db
        self.keep_finished = keep_finished

    def create(self, *, identity: str, uid: int, image: str, image_size: int, drive: str,
               speed: int | None, verify: bool) -> dict:
        """Queue a new job; returns its record."""
        with self.db.transaction():
            job_id = self.db.get(_NEXT_ID, 1)
            self.db.put(_NEXT_ID, job_id + 1)
            job = {"id": job_id, "identity": identity, "uid": uid,
                   "image": image, "image_size": image_size, "image_sha256": None,
                   "drive": drive, "speed": speed, "verify": verify,
                   "state": QUEUED, "progress": {"percent": 0.0, "bytes": 0},
                   "submitted": now(), "started": None, "finished": None,
                   "verification": None, "error": None, "error_code": None}
            self.db.put(_key(job_id), job)
        return job

    def get(self, job_id: int) -> dict | None:
        """The record of job ``job_id``, or None."""
        return self.db.get(_key(job_id))

    def list(self, identity: str | None = None, state: str | None = None, drive: str | None = None) -> list[dict]:
        """Jobs in submission order, optionally only those matching every given field."""
        return [job for _, job in self.db.items("job:")
                if (identity is None or job["identity"] == identity)
                and (state is None or job["state"] == state)
                and (drive is None or job["drive"] == drive)]

    def next_queued(self, drive: str) -> dict | None:
        """The oldest queued job for ``drive``."""
        return next(iter(self.list(state=QUEUED, drive=drive)), None)

    def transition(self, job_id: int, from_states: Iterable[str], **changes: Any) -> dict | None:
        """Apply ``changes`` if the job is in one of ``from_states``; the new record, or None if it was not."""
        with self.db.transaction():
            job = self.db.get(_key(job_id))
            if job is None or job["state"] not in from_states:
                return None
            job.update(changes)
            if job["state"] in FINISHED and job["finished"] is None:
                job["finished"] = now()
            self.db.put(_key(job_id), job)
        return job

    def progress(self, job_id: int, done: int, total: int) -> None:
        """Record ``done`` of ``total`` bytes for the current phase of a running job."""
        percent = round(100.0 * done / total, 1) if total else 100.0
        self.transition(job_id, RUNNING, progress={"percent": percent, "bytes": done})

    def recorder(self, job_id: int, total: int) -> "ProgressRecorder":
        """A callable that records progress of ``job_id`` without writing more than twice a second."""
        return ProgressRecorder(self, job_id, total)

    def begin_run(self, drive: str, job_id: int | None, purpose: str) -> str:
        """Durably record that an xorriso is about to start on ``drive``; its fresh run token.

        Call it before starting the process, and give the process the token.
        """
        token = secrets.token_hex(16)
        with self.db.transaction():
            self.db.put("run:" + drive, {"token": token, "job": job_id, "purpose": purpose,
                                         "pid": None, "start_time": None})
        return token

    def set_process(self, drive: str, pid: int, start_time: str) -> None:
        """Add the pid and kernel start time of the xorriso started on ``drive`` to its record."""
        with self.db.transaction():
            run = self.db.get("run:" + drive)
            if run is not None:
                run.update(pid=pid, start_time=start_time)
                self.db.put("run:" + drive, run)

    def clear_process(self, drive: str) -> None:
        """Forget the xorriso of ``drive`` (it has ended, or never started)."""
        with self.db.transaction():
            self.db.delete("run:" + drive)

    def leftover_processes(self) -> dict[str, dict]:
        """The ``run:`` records a previous helper did not clear, by drive."""
        return {key[len("run:"):]: value for key, value in self.db.items("run:")}

    def interrupt_running(self, reason: str) -> builtins.list[int]:     # in here, plain "list" is JobStore.list
        """Mark every burning or verifying job ``interrupted`` (at start-up: its helper died); their ids."""
        ids = []
        with self.db.transaction():
            for key, job in self.db.items("job:"):
                if job["state"] in RUNNING:
                    job.update(state=INTERRUPTED, finished=now(), error=reason, error_code="interrupted")
                    self.db.put(key, job)
                    ids.append(job["id"])
            for key in self.db.keys("run:"):
                self.db.delete(key)
        return ids

    def prune(self) -> int:
        """Delete the oldest finished jobs beyond ``keep_finished``; how many were deleted."""
        finished = [job["id"] for job in self.list() if job["state"] in FINISHED]
        excess = finished[:max(0, len(finished) - self.keep_finished)]
        if excess:
            with self.db.transaction():
                for job_id in excess:
                    self.db.delete(_key(job_id))
        return len(excess)

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        counts = dict.fromkeys(STATES, 0)
        for job in self.list():
            counts[job["state"]] += 1
        return counts


class ProgressRecorder:
    """Records a running job's progress: at most every ``PROGRESS_EVERY`` seconds, unless forced."""

    PROGRESS_EVERY = 0.5

    def __init__(self, store: JobStore, job_id: int, total: int):
        self.store = store
        self.job_id = job_id
        self.total = total
        self._stored = -1
        self._when = 0.0

    def __call__(self, done: int, force: bool = False) -> None:
        done = min(done, self.total)
        now_ = time.monotonic()
        if done != self._stored and (force or now_ - self._when >= self.PROGRESS_EVERY):
            self.store.progress(self.job_id, done, self.total)
            self._stored, self._when = done, now_
