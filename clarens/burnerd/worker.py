# SPDX-License-Identifier: Apache-2.0
"""One worker thread per drive: everything that touches the drive happens in it, one thing at a time.

It runs the drive's queued jobs oldest first, ejects, and (when the drive's
backend cannot tell at once) looks at the medium when a request asked and the
last look is a few seconds old, so that requests never wait for the drive.  A
job goes ``queued`` -> ``burning`` -> ``verifying`` -> ``done`` (or ``failed``),
each step a transaction in the job store.  While burning, the image's SHA-256
is computed in a second thread from the same descriptor the burn reads, so
verification only has to read the disc back.

What each step does to the drive is its backend's (:mod:`~clarens.burnerd.backends`,
by the drive's kind); the worker keeps the queue, the lock, the records and the
states, and starts every process for the backend (:meth:`DriveWorker.started`).
This thread lives as long as the helper, and a process gets SIGTERM when the
thread that started it dies (see :mod:`~clarens.burnerd.processes`).  Each use
of the drive holds the drive's lock (:mod:`~clarens.burnerd.drivelock`), which
every process started for it inherits, and each process is recorded
(``run:DRIVE``, with its run token) before it starts, its pid after.

Cancel and shutdown both stop the running job by killing its process group,
with the backend's ``grace`` between SIGTERM and SIGKILL (none on ``stdio:``
drives, which have no hardware to stop cleanly; ``cancel_grace`` on real ones).
The job ends ``cancelled`` or ``interrupted``.  Queued jobs are left queued at
shutdown and run when the helper starts again.  A request waits at most
:data:`ANSWER_WITHIN` for a cancel or an eject to take effect.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from clarens import procfs
from clarens.burnerd import backends, verify
from clarens.burnerd.backends import Medium
from clarens.burnerd.config import BurnerConfig, DriveConfig
from clarens.burnerd.drivelock import DriveLock, lock_path
from clarens.burnerd.errors import Failed, Refused
from clarens.burnerd.images import open_image
from clarens.burnerd.jobs import (
    BURNING,
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    VERIFYING,
    JobStore,
    now,
)
from clarens.burnerd.processes import Process

ANSWER_WITHIN = 1.5      # seconds a request waits for a cancel or an eject (the web tier waits 2 s)
MEDIUM_MAX_AGE = 5.0     # seconds before a real drive's medium is looked at again (when a request asks)
UNKNOWN_MEDIUM: Medium = {"current": None, "status": None, "free_bytes": None, "ok": None, "checked": None}


def _failed(code: str, message: str) -> dict:
    return {"state": FAILED, "error_code": code, "error": message}


class _Eject:
    """An eject asked for by a request and carried out by the worker thread."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: Refused | None = None


class DriveWorker:
    """The queue and the worker thread of one drive; the :class:`~clarens.burnerd.backends.Runner` of its
    backend."""

    def __init__(self, drive: DriveConfig, config: BurnerConfig, store: JobStore, log: logging.Logger):
        self.drive = drive
        self.config = config
        self.store = store
        self.log = log
        self.backend = backends.for_drive(drive, config, log)
        self.grace = self.backend.grace      # seconds from SIGTERM to SIGKILL for this drive's processes
        self._drive_lock = DriveLock(drive.name, lock_path(config.db, drive.name), self.grace, log)
        self._cond = threading.Condition()
        self._stopping = False
        self._current: int | None = None     # id of the job the thread is on
        self._abort: str | None = None       # why the current job must stop: "cancel" or "shutdown"
        self._proc: Process | None = None
        self._lock_fd: int | None = None     # the drive's lock while the thread holds it
        self._eject: _Eject | None = None    # an eject waiting for the thread or under way
        self._medium = dict(UNKNOWN_MEDIUM)  # the medium, as last seen (when the backend cannot peek)
        self._medium_at: float | None = None  # when (time.monotonic) it was seen
        self._medium_wanted = False
        self._thread = threading.Thread(target=self._loop, name="drive-" + drive.name, daemon=True)

    # -- the API used by the service ------------------------------------------------

    def start(self) -> None:
        """Start working through the queue."""
        self._thread.start()

    def wake(self) -> None:
        """A job was queued."""
        with self._cond:
            self._cond.notify_all()

    @property
    def current(self) -> int | None:
        """The id of the job running now, if any."""
        return self._current

    @property
    def busy(self) -> bool:
        """Whether a job or an eject is using the drive."""
        return self._current is not None or self._eject is not None

    def medium(self) -> dict:
        """The medium in the drive, ``{"busy": true}`` while in use (the job's progress is the truth then);
        never waits for the drive.

        What the backend can tell at once (a pseudo-disc's file), else the last look: one older than
        MEDIUM_MAX_AGE asks the thread for a fresh look.
        """
        if not self.busy:
            medium = self.backend.peek_medium()
            if medium is not None:
                return medium
        with self._cond:
            if self.busy:
                return {"busy": True}
            if self._medium_at is None or time.monotonic() - self._medium_at >= MEDIUM_MAX_AGE:
                self._medium_wanted = True
                self._cond.notify_all()
            return dict(self._medium)

    def cancel(self, job_id: int) -> tuple[dict, bool] | None:
        """Cancel a queued or running job of this drive: (its record, whether it has stopped), or None if it
        had finished.  Waits at most ANSWER_WITHIN for a running job to stop (it stops soon after anyway)."""
        with self._cond:
            job = self.store.transition(job_id, {QUEUED}, state=CANCELLED, error_code="cancelled",
                                        error="cancelled before it started")
            if job is not None:
                return job, True
            if self._current != job_id:
                return None
            self._abort = "cancel"
            proc = self._proc
        if proc is not None:     # in its own thread: on a real drive this may take cancel_grace
            threading.Thread(target=proc.kill_group, args=(self.grace,), name="kill-" + self.drive.name,
                             daemon=True).start()
        with self._cond:
            stopped = self._cond.wait_for(lambda: self._current != job_id, timeout=ANSWER_WITHIN)
        job = self.store.get(job_id)
        if job is None:          # it ended and was pruned at once (keep_jobs = 0): as if it had finished
            return None
        return job, stopped

    def eject(self) -> bool:
        """Eject the medium: True once done, False if still under way after ANSWER_WITHIN (it goes on in the
        thread and the drive is busy meanwhile).  Refused: drive_busy, eject_failed."""
        with self._cond:
            if self.busy:
                raise Refused("drive_busy", "drive %r is busy with %s" % (
                    self.drive.name, "an eject" if self._current is None else "job %d" % self._current))
            request = self._eject = _Eject()
            self._cond.notify_all()
        if not request.done.wait(ANSWER_WITHIN):
            return False
        if request.error is not None:
            raise request.error
        return True

    def stop(self) -> None:
        """Shutdown: interrupt the running job, leave queued ones queued, end the thread."""
        with self._cond:
            self._stopping = True
            if self._current is not None:
                self._abort = "shutdown"
            proc = self._proc
            self._cond.notify_all()
        if proc is not None:
            proc.kill_group(self.grace)
        self._thread.join(self.config.cancel_grace + 30)

    # -- the thread -----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    if self._eject is not None:
                        task = self._do_eject
                        break
                    job = self.store.next_queued(self.drive.name)
                    if job is not None:
                        self._current = job["id"]
                        task = functools.partial(self._run, job["id"])
                        break
                    if self._medium_wanted:
                        task = self._look_at_medium
                        break
                    self._cond.wait()
            task()

    @contextmanager
    def _drive_held(self) -> Iterator[None]:
        with self._drive_lock.held() as fd:
            self._lock_fd = fd
            try:
                yield
            finally:
                self._lock_fd = None

    def _done_with_drive(self) -> None:
        """After a job or an eject (call with _cond held): the drive is free, its medium unknown."""
        self._medium, self._medium_at = dict(UNKNOWN_MEDIUM), None
        self._cond.notify_all()

    # -- the Runner of the backend ---------------------------------------------------

    def stopping(self) -> bool:
        """Whether a cancel or a shutdown wants the current job to stop."""
        return self._abort is not None

    @contextmanager
    def started(self, purpose: str, argv: list[str], pass_fds: tuple[int, ...] = (),
                merge_output: bool = True) -> Iterator[Process]:
        """Start ``argv`` on the drive for the backend, for the length of the block: recorded first, then
        started with the run token and the drive's lock, then its pid recorded; cancel and shutdown kill
        it.  When the block ends its group is killed if it still runs, and its record cleared."""
        try:
            proc = self._spawn(purpose, argv, pass_fds, merge_output)
            try:
                yield proc
            finally:
                if proc.popen.poll() is None:    # the backend is leaving on an exception: leave nothing behind
                    proc.kill_group(self.grace)
        finally:
            self._reaped()

    def _spawn(self, purpose: str, argv: list[str], pass_fds: tuple[int, ...], merge_output: bool) -> Process:
        self._check_abort()
        assert self._lock_fd is not None     # only ever called inside _drive_held
        token = self.store.begin_run(self.drive.name, self._current, purpose)
        proc = Process(argv, pass_fds + (self._lock_fd,), merge_output, token)
        with self._cond:
            self._proc = proc
            abort = self._abort is not None
        self.store.set_process(self.drive.name, proc.pid, procfs.start_time(proc.pid))
        if abort:                    # a cancel came between the check and now
            proc.kill_group(self.grace)
        return proc

    def _reaped(self) -> None:
        with self._cond:
            self._proc = None
        self.store.clear_process(self.drive.name)

    # -- the work -------------------------------------------------------------------

    def _do_eject(self) -> None:
        request = self._eject
        assert request is not None           # _loop runs this only for a pending eject
        try:
            with self._drive_held():
                self.backend.eject(self)
            self.log.info("%s: ejected", self.drive.name)
        except Refused as e:
            request.error = e
            self.log.warning("%s: eject failed: %s", self.drive.name, e)
        except Exception:            # a bug: answer, keep the thread
            self.log.exception("%s: eject failed", self.drive.name)
            request.error = Refused("internal_error", "the eject failed; see the helper's log")
        finally:
            with self._cond:
                self._eject = None
                self._done_with_drive()
            request.done.set()

    def _look_at_medium(self) -> None:
        medium: Medium = {"current": None, "status": None, "free_bytes": None, "ok": False}
        try:
            with self._drive_held():
                medium = self.backend.look_at_medium(self)
        except Refused as e:         # another program holds the drive
            medium["status"] = e.message
        except Exception:            # a bug: keep the thread
            self.log.exception("%s: looking at the medium failed", self.drive.name)
        finally:
            with self._cond:
                self._medium = dict(medium, checked=now())
                self._medium_at, self._medium_wanted = time.monotonic(), False

    def _run(self, job_id: int) -> None:
        """Run job ``job_id`` (made current by the loop): take the drive, burn, verify, record the outcome."""
        try:
            with self._drive_held():
                changes = self._execute(job_id)
        except verify.Aborted:
            changes = self._aborted()
        except (Refused, Failed) as e:   # the drive's lock (another program is using the drive), the backend
            changes = _failed(e.code, e.message)
        except Exception as e:       # a bug: fail this job, keep the drive's queue going
            self.log.exception("job %d: unexpected error", job_id)
            changes = _failed("internal_error", "internal error: %s: %s" % (type(e).__name__, e))
        with self._cond:
            if changes is not None and self._abort is not None and changes["state"] != DONE:
                changes = self._aborted()    # the failure was the kill (e.g. a read-back cut short)
            final = None if changes is None else self.store.transition(job_id, {QUEUED} | RUNNING, **changes)
            self._current = self._abort = None
            self._done_with_drive()
        if final is not None:
            self.log.info("job %d: %s%s", job_id, final["state"], ": " + final["error"] if final["error"] else "")
        self.store.prune()

    def _aborted(self) -> dict:
        if self._abort == "cancel":
            return {"state": CANCELLED, "error_code": "cancelled", "error": "cancelled while running"}
        return {"state": INTERRUPTED, "error_code": "interrupted", "error": "the helper was shut down during the job"}

    def _check_abort(self) -> None:
        if self.stopping():
            raise verify.Aborted()

    def _execute(self, job_id: int) -> dict | None:
        """The job's outcome (changes to its record), or None if it did not start (cancelled, shutdown)."""
        with self._cond:
            if self._stopping:       # shut down while taking the drive: the job stays queued
                return None
            job = self.store.transition(job_id, {QUEUED}, state=BURNING, started=now())
        if job is None:              # cancelled meanwhile
            return None
        self.log.info("job %d: burning %r on %s for %r", job_id, job["image"], self.drive.name, job["identity"])
        try:
            image = open_image(self.config.images_dir, job["image"], self.drive.capacity)
        except Refused as e:
            return _failed(e.code, "image refused when the job started: %s" % e.message)
        with image:
            self.store.transition(job_id, RUNNING, image_size=image.size)
            self.backend.check_room(self, image.size)
            hasher = verify.BackgroundHash(image.fd, image.size, self.stopping)
            progress = self.store.recorder(job_id, image.size)
            burn_failed: Failed | None = None
            try:
                self.backend.burn(self, image, job["speed"], progress)
                progress(image.size, force=True)
            except Failed as e:              # reported below, once the image's hash is on record
                burn_failed = e
            finally:
                hasher.join()                # before the descriptor closes
        try:
            image_sha = hasher.digest()      # verify.Aborted if it was stopped by a cancel
        except verify.VerifyError as e:
            return _failed("image_unreadable", str(e))
        self.store.transition(job_id, RUNNING, image_sha256=image_sha)
        self._check_abort()
        if burn_failed is not None:
            return _failed(burn_failed.code, burn_failed.message)
        if not job["verify"]:
            return {"state": DONE}
        return self._verify(job_id, image.size, image_sha)

    def _verify(self, job_id: int, size: int, image_sha: str) -> dict:
        self.store.transition(job_id, {BURNING}, state=VERIFYING, progress={"percent": 0.0, "bytes": 0})
        progress = self.store.recorder(job_id, size)
        try:
            disc_sha = self.backend.read_back(self, size, progress)
        except verify.VerifyError as e:
            return _failed("verify_failed", "reading the disc back failed: %s" % e)
        progress(size, force=True)
        verification = {"image_sha256": image_sha, "disc_sha256": disc_sha, "match": disc_sha == image_sha}
        if verification["match"]:
            return {"state": DONE, "verification": verification}
        failed = _failed("verify_mismatch", "verification failed: the disc's SHA-256 %s differs from the image's %s"
                         % (disc_sha, image_sha))
        failed["verification"] = verification
        return failed
