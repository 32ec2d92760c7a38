# SPDX-License-Identifier: Apache-2.0
"""What the helper does, independent of HTTP: drives, jobs, cancel, eject, status.

Every method either returns JSON-ready data or raises
:class:`~clarens.burnerd.errors.Refused`.  Requests are checked here (the web
tier is trusted to authenticate users, not to send sane values).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import clarens
from clarens import procfs, text
from clarens.burnerd import processes
from clarens.burnerd.config import BurnerConfig, DriveConfig
from clarens.burnerd.errors import Refused
from clarens.burnerd.images import open_image
from clarens.burnerd.jobs import FAILED, FINISHED, QUEUED, STATES, JobStore
from clarens.burnerd.peercred import Peer
from clarens.burnerd.worker import DriveWorker

SUBMIT_FIELDS = {"image", "drive", "identity", "speed", "verify"}
MAX_IDENTITY = 1024


class Burner:
    """The helper's state: configuration, job store, one worker per drive."""

    def __init__(self, config: BurnerConfig, store: JobStore, log: logging.Logger):
        self.config = config
        self.store = store
        self.log = log
        self.workers = {name: DriveWorker(drive, config, store, log) for name, drive in config.drives.items()}
        self.started = time.time()
        self._started_mono = time.monotonic()

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Recover from a previous run, then start the drive workers."""
        for drive, run in self.store.leftover_processes().items():
            self._kill_leftover(drive, run)
        for job_id in self.store.interrupt_running("the helper stopped while the job was running"):
            self.log.warning("job %d: interrupted (the helper stopped while it was running)", job_id)
        for job in self.store.list(state=QUEUED):
            if job["drive"] not in self.workers:
                self.store.transition(job["id"], {QUEUED}, state=FAILED, error_code="unknown_drive",
                                      error="drive %r is no longer configured" % job["drive"])
        self.store.prune()
        for worker in self.workers.values():
            worker.start()

    def _kill_leftover(self, drive: str, run: dict) -> None:
        """Kill what a previous helper started on ``drive`` (its leftover ``run`` record), whether or not
        the pid was recorded.

        xorriso ignores SIGPIPE: an orphan finishes its burn, beside the next job, unless its group
        is killed.  pdeathsig has normally sent it SIGTERM already, but it may still be stopping, be
        frozen, or have been started too late for pdeathsig.  It carries the record's token; the
        recorded pid (the start time tells it from a process that reused the pid) also covers
        records written before run tokens existed.
        """
        token = run.get("token")
        pids = [pid for pid in procfs.pids() if processes.run_token(pid) == token] if token else []
        if run.get("pid") and procfs.start_time(run["pid"]) == run["start_time"]:
            pids.append(run["pid"])
        worker = self.workers.get(drive)
        grace = worker.grace if worker is not None else self.config.cancel_grace
        pgids = {pgid for pgid in map(procfs.pgid, pids) if pgid is not None}     # None: the process has gone
        for pgid in sorted(pgids):
            self.log.warning("killing xorriso process group %d left by the previous helper (drive %s, job %s, %s)",
                             pgid, drive, run.get("job"), run.get("purpose", "burn"))
            processes.terminate_group(pgid, grace)

    def stop(self) -> None:
        """Interrupt running jobs (killing xorriso) and stop the workers; queued jobs stay queued."""
        stopping = [threading.Thread(target=w.stop, name="stop-" + name) for name, w in self.workers.items()]
        for thread in stopping:       # in parallel: each may wait cancel_grace for its xorriso
            thread.start()
        for thread in stopping:
            thread.join()

    # -- drives ---------------------------------------------------------------------

    def _worker(self, name: Any, status: int = 400) -> DriveWorker:
        worker = self.workers.get(name) if isinstance(name, str) else None
        if worker is None:
            raise Refused("unknown_drive", "no drive named %r (configured: %s)"
                          % (name, ", ".join(sorted(self.workers))), status)
        return worker

    def _drive_view(self, worker: DriveWorker, queued: int) -> dict:
        drive: DriveConfig = worker.drive
        return {"name": drive.name, "kind": drive.kind, "dev": drive.address, "capacity": drive.capacity,
                "max_speed": drive.max_speed, "busy": worker.busy, "current_job": worker.current,
                "queued": queued, "medium": worker.medium()}

    def _queued(self) -> dict[str, int]:
        queued = dict.fromkeys(self.workers, 0)
        for job in self.store.list(state=QUEUED):
            if job["drive"] in queued:
                queued[job["drive"]] += 1
        return queued

    def drives(self) -> list[dict]:
        """Every configured drive, its queue and the medium in it."""
        queued = self._queued()
        return [self._drive_view(w, queued[name]) for name, w in sorted(self.workers.items())]

    def drive(self, name: str) -> dict:
        """One drive (see :meth:`drives`)."""
        return self._drive_view(self._worker(name, 404), self._queued()[name])

    def eject(self, name: str, peer: Peer) -> dict:
        """Eject the medium of an idle drive: ``{"drive", "ejected": true}``, or ``{"drive", "ejected": false,
        "ejecting": true}`` if it is still under way after ANSWER_WITHIN (it goes on; the drive is busy)."""
        worker = self._worker(name, 404)
        if worker.eject():
            self.log.info("%s: ejected %s", peer.describe(), name)
            return {"drive": name, "ejected": True}
        self.log.info("%s: ejecting %s (still under way; it goes on in the background)", peer.describe(), name)
        return {"drive": name, "ejected": False, "ejecting": True}

    # -- jobs -----------------------------------------------------------------------

    def submit(self, body: Any, peer: Peer) -> dict:
        """Check a burn request and queue it; the new job."""
        if not isinstance(body, dict):
            raise Refused("bad_request", "the request body must be a JSON object")
        unknown = set(body) - SUBMIT_FIELDS
        if unknown:
            raise Refused("bad_request", "unknown field(s) %s" % ", ".join(sorted(unknown)))
        worker = self._worker(body.get("drive"))
        drive = worker.drive
        speed = body.get("speed")
        if speed is not None and (type(speed) is not int or not 1 <= speed <= drive.max_speed):
            raise Refused("bad_speed", "speed must be an integer from 1 to %d (or null for the drive's best)"
                          % drive.max_speed)
        verify = body.get("verify", True)
        if not isinstance(verify, bool):
            raise Refused("bad_request", "verify must be true or false")
        identity = body.get("identity")
        if not isinstance(identity, str) or not 0 < len(identity) <= MAX_IDENTITY or not text.printable(identity):
            raise Refused("bad_identity", "identity must be 1-%d printable characters" % MAX_IDENTITY)
        with open_image(self.config.images_dir, body.get("image"), drive.capacity) as image:
            size = image.size
        job = self.store.create(identity=identity, uid=peer.uid, image=image.name, image_size=size,
                                drive=drive.name, speed=speed, verify=verify)
        self.log.info("%s: job %d queued: %r on %s for %r", peer.describe(), job["id"], image.name,
                      drive.name, identity)
        worker.wake()
        return job

    def job(self, job_id: int) -> dict:
        """One job's record."""
        job = self.store.get(job_id)
        if job is None:
            raise Refused("job_not_found", "no job %d" % job_id)
        return job

    def jobs(self, identity: str | None = None, state: str | None = None, drive: str | None = None) -> list[dict]:
        """Jobs in submission order, optionally filtered."""
        if state is not None and state not in STATES:
            raise Refused("bad_request", "state must be one of %s" % ", ".join(STATES))
        return self.store.list(identity=identity, state=state, drive=drive)

    def cancel(self, job_id: int, peer: Peer) -> tuple[dict, bool]:
        """Cancel a queued or running job: (its record, whether it has stopped).

        Waits at most ANSWER_WITHIN for a running job to stop; if it has not, the record is
        still ``burning`` or ``verifying`` and the job ends ``cancelled`` shortly after.
        """
        job = self.job(job_id)
        worker = self.workers.get(job["drive"])
        result = worker.cancel(job_id) if worker is not None and job["state"] not in FINISHED else None
        if result is None:
            raise Refused("not_cancellable", "job %d has already finished (%s)" % (job_id, self.job(job_id)["state"]))
        job, stopped = result
        self.log.info("%s: job %d cancel requested; now %s", peer.describe(), job_id, job["state"])
        return job, stopped

    # -- admin ----------------------------------------------------------------------

    def status(self) -> dict:
        """Version, uptime, drives busy, queue lengths and job counts."""
        queued = self._queued()
        drives = {name: {"busy": w.busy, "current_job": w.current, "queued": queued[name]}
                  for name, w in sorted(self.workers.items())}
        return {"version": clarens.__version__, "pid": os.getpid(), "started": round(self.started, 3),
                "uptime": round(time.monotonic() - self._started_mono, 3),
                "drives_busy": sum(1 for d in drives.values() if d["busy"]),
                "queued": sum(queued.values()), "drives": drives, "jobs": self.store.counts()}

