# SPDX-License-Identifier: Apache-2.0
"""The burner helpers this host burns with, as one set.

A helper is this host's own (host ``""``: plain drive names, integer job ids) or a
drive host's, reached through its Unix socket forwarded here by OpenSSH
(``HOST:DRIVE``, jobs ``"HOST:ID"``: :mod:`.references`).  A host with only its own
helper is a set of one: every listing asks each helper of the set, the same way.

With drive hosts, each helper answers for itself: one that does not answer does not
fail the listing; its drives are listed as last seen (``reachable: false``) and its
jobs in state ``unreachable`` (with ``last_state``), from what this host last saw of
them (its ``burner.tdb``, shared by its processes), until it answers again.  With
only its own helper there is nothing else to show, and its being down is the fault.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

from clarens.burnerd.client import BurnerClient, HelperUnavailable, RequestRefused
from clarens.burnerd.errors import FAULTS
from clarens.db import Database
from clarens.faults import SERVICE_UNAVAILABLE, Fault

from . import references
from .refusals import from_helper, refused

HELPER_TIMEOUT = 2.0     # seconds: a hung helper costs an Apache worker this long, not more
HUNG_PAUSE = 3.0         # seconds a process gives a helper that did not answer in time only...
PROBE_TIMEOUT = 0.25     # ...this long to answer
SEEN_JOBS_KEPT = 500     # a drive host's jobs remembered here (for showing them while it is unreachable)
UNREACHABLE = "unreachable"


class Helper:
    """One burner helper: its host's name (``""`` for this host's own) and its socket."""

    def __init__(self, host: str, socket: str):
        self.host = host
        self.socket = socket
        self.hung_until = 0.0     # until then (monotonic), it gets PROBE_TIMEOUT: it did not answer in time
        self._local = threading.local()   # one connection per thread (keep-alive)

    def __repr__(self) -> str:
        return "<burner helper %s at %s>" % (self.host or "(local)", self.socket)

    def name(self, local: str | int) -> str | int:
        """The name callers see for one of this helper's drives or jobs."""
        return references.qualified(self.host, local)

    def _client(self) -> BurnerClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = BurnerClient(self.socket, connect_timeout=1.0, timeout=HELPER_TIMEOUT)
        return client

    def call(self, call: Callable[[BurnerClient], Any], admin: bool) -> Any:
        """Run ``call(client)`` against this helper, turning its failures into faults (the socket's
        path shown to ``admin`` callers only: paths tell an attacker about the host).

        After it did not answer in time, this process gives it only PROBE_TIMEOUT for
        HUNG_PAUSE seconds: while it hangs, the calls of a batch (the page polls two at once)
        fail quickly instead of each holding the Apache worker for HELPER_TIMEOUT, and as soon
        as it answers again, so do the calls.  Each helper has its own pause: one drive host
        that hangs does not make the others' calls short.
        """
        client = self._client()
        client.timeout = PROBE_TIMEOUT if time.monotonic() < self.hung_until else HELPER_TIMEOUT
        self.hung_until = 0.0       # until it does not answer in time again
        try:
            return call(client)
        except HelperUnavailable as e:
            if e.timed_out:
                self.hung_until = time.monotonic() + HUNG_PAUSE
            where = "drive host %s: " % self.host if self.host else ""
            raise Fault(SERVICE_UNAVAILABLE, "burner unavailable: %s%s" % (where, e if admin else e.reason)) \
                from None
        except RequestRefused as e:
            raise from_helper(e) from None


class Helpers:
    """Every helper this host burns with, by host name; ``db`` keeps what drive hosts last said."""

    def __init__(self, helpers: Iterable[Helper], db: Database):
        self.by_host = {helper.host: helper for helper in helpers}
        self.db = db
        # Drive hosts answer for themselves: what they said is kept, and shown while they do not answer.
        self.remembers = any(helper.host for helper in self.by_host.values())

    def for_drive(self, name: str) -> tuple[Helper, str]:
        """The helper serving drive ``name``, and the drive's name there."""
        host, local, qualified = references.drive_ref(name)
        helper = self.by_host.get(host)
        if helper is None:
            if qualified:
                raise refused("unknown_drive", "there is no drive host %s (see burner.drives)" % ascii(host))
            raise refused("unknown_drive", "drives are named HOST:DRIVE here (see burner.drives)")
        return helper, local

    def for_job(self, job_id: int | str) -> tuple[Helper, int]:
        """The helper holding job ``job_id``, and the job's number there."""
        host, number = references.job_ref(job_id)
        helper = self.by_host.get(host)
        if helper is None:
            raise refused("job_not_found", "there is no job %s of yours" % ascii(job_id))
        return helper, number

    def _ask(self, call: Callable[[BurnerClient], Any], admin: bool) -> Iterable[tuple[Helper, Any]]:
        """(helper, its answer) from each helper in turn; the answer of one that does not answer
        is its fault, if the set remembers what it last said (else the fault is raised)."""
        for helper in self.by_host.values():
            try:
                yield helper, helper.call(call, admin)
            except Fault as fault:
                if fault.code != SERVICE_UNAVAILABLE or not self.remembers:
                    raise
                yield helper, fault

    # -- drives -------------------------------------------------------------------------------

    def drives(self, admin: bool) -> list[dict]:
        """Every drive of every helper (``dev`` left out); with drive hosts, each also with its
        ``host`` and whether it is ``reachable``."""
        listed = []
        for helper, found in self._ask(lambda c: c.drives(), admin):
            seen = "seen-drives:%s" % helper.host
            if isinstance(found, Fault):
                listed += [{"name": helper.name(n), "host": helper.host, "reachable": False, "error": found.message,
                            "kind": None, "capacity": None, "busy": None, "current_job": None, "queued": None,
                            "medium": None} for n in self.db.get(seen) or [""]]
                continue
            if self.remembers and self.db.get(seen) != [d["name"] for d in found]:
                self.db.put(seen, [d["name"] for d in found])
            for d in found:
                drive = {k: v for k, v in d.items() if k != "dev"}
                if self.remembers:
                    drive.update(name=helper.name(d["name"]), host=helper.host, reachable=True)
                    if drive.get("current_job") is not None:
                        drive["current_job"] = helper.name(drive["current_job"])
                listed.append(drive)
        return listed

    def eject(self, drive: str, admin: bool) -> bool:
        """Eject the disc in ``drive``: whether it is out already (else it is still ejecting)."""
        helper, local = self.for_drive(drive)
        return bool(helper.call(lambda c: c.eject(local), admin).get("ejected"))

    # -- jobs ---------------------------------------------------------------------------------

    def submit(self, image: str, drive: str, who: str, speed: int | None, verify: bool, admin: bool) -> int | str:
        """Queue a burn of ``image`` on ``drive`` for ``who``; the new job's id."""
        helper, local = self.for_drive(drive)
        job = helper.call(lambda c: c.submit(image, local, identity=who, speed=speed, verify=verify), admin)
        self._remember(helper, [job])
        return helper.name(job["id"])

    def jobs(self, who: str, admin: bool) -> list[dict]:
        """``who``'s jobs (everyone's for ``admin``), by helper, then in submission order."""
        out = []
        for helper, found in self._ask(lambda c: c.jobs() if admin else c.jobs(identity=who), admin):
            if isinstance(found, Fault):
                out += [self._unreachable(helper, job, job["id"], found.message) for job in self._seen_jobs(helper)
                        if admin or job["identity"] == who]
                continue
            self._remember(helper, found)
            out += [self._present(helper, job) for job in found]
        return out

    def job(self, job_id: int | str, who: str, admin: bool) -> dict:
        """Job ``job_id``, if ``who`` may see it (the same fault as for a job that does not exist
        otherwise).  A drive host's job while that host does not answer: its last record seen,
        state ``unreachable``."""
        helper, number = self.for_job(job_id)
        try:
            job = helper.call(lambda c: c.job(number), admin)
        except Fault as fault:
            if fault.code == SERVICE_UNAVAILABLE and self.remembers:
                seen = self.db.get("seen-job:%s:%d" % (helper.host, number))
                if seen is None or admin or seen["identity"] == who:
                    return self._unreachable(helper, seen, number, fault.message)
                job = None
            elif fault.code == FAULTS["job_not_found"]:
                job = None
            else:
                raise
        if job is None or (not admin and job["identity"] != who):
            raise refused("job_not_found", "there is no job %s of yours" % ascii(job_id))
        self._remember(helper, [job])
        return self._present(helper, job)

    def cancel(self, job_id: int | str, admin: bool) -> dict:
        """Cancel job ``job_id`` (the caller's right to was checked with :meth:`job`); the job."""
        helper, number = self.for_job(job_id)
        return self._present(helper, helper.call(lambda c: c.cancel(number), admin))

    # -- what drive hosts last said, for while they do not answer -----------------------------

    def _present(self, helper: Helper, job: dict) -> dict:
        """A helper's job record as callers see it: the name callers use for it and its drive, and its host."""
        if not helper.host:
            return job
        return dict(job, id=helper.name(job["id"]), host=helper.host,
                    drive=helper.name(job["drive"]) if job.get("drive") is not None else None)

    def _remember(self, helper: Helper, jobs: list[dict]) -> None:
        """Keep the last record seen of each of a drive host's jobs, writing only what changed."""
        if not self.remembers:
            return
        for job in jobs:
            key = "seen-job:%s:%d" % (helper.host, job["id"])
            if self.db.get(key) != job:
                self.db.put(key, job)
        keys = self.db.keys("seen-job:%s:" % helper.host)
        if len(keys) > SEEN_JOBS_KEPT:
            for key in sorted(keys, key=lambda k: int(k.rpartition(":")[2]))[:len(keys) - SEEN_JOBS_KEPT]:
                self.db.delete(key)

    def _seen_jobs(self, helper: Helper) -> list[dict]:
        return [job for _, job in self.db.items("seen-job:%s:" % helper.host)]

    def _unreachable(self, helper: Helper, job: dict | None, number: int, why: str) -> dict:
        """A job of a drive host that does not answer: its last record seen here (None: never seen
        here), in state ``unreachable``, with the state it was last seen in."""
        seen = dict(job) if job is not None else {"id": number, "identity": None, "image": None, "drive": None,
                                                   "progress": None, "verification": None}
        seen.update(last_state=seen.get("state"), state=UNREACHABLE, error=why)
        return self._present(helper, seen)
