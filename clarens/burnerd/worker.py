"""One worker thread per drive: runs that drive's queued jobs one at a time, oldest first.

A job goes ``queued`` -> ``burning`` -> ``verifying`` -> ``done`` (or ``failed``),
each step a transaction in the job store.  While burning, the image's SHA-256
is computed in a second thread from the same descriptor xorriso reads, so
verification only has to read the disc back.

Cancel and shutdown both stop the running job by killing xorriso's process
group; the job ends ``cancelled`` or ``interrupted`` respectively.  Queued jobs
are left queued at shutdown and run when the helper starts again.
"""

from __future__ import annotations

import collections
import logging
import threading
from contextlib import contextmanager
from typing import Iterator

from clarens import procfs
from clarens.burnerd import verify, xorriso
from clarens.burnerd.config import BurnerConfig, DriveConfig
from clarens.burnerd.errors import Refused
from clarens.burnerd.images import Image, open_image
from clarens.burnerd.jobs import (BURNING, CANCELLED, DONE, FAILED, INTERRUPTED, QUEUED, RUNNING, VERIFYING,
                                  JobStore, now)


def _failed(code: str, message: str) -> dict:
    return {"state": FAILED, "error_code": code, "error": message}


class DriveWorker:
    """The queue and the worker thread of one drive."""

    def __init__(self, drive: DriveConfig, config: BurnerConfig, store: JobStore, log: logging.Logger):
        self.drive = drive
        self.config = config
        self.store = store
        self.log = log
        self._cond = threading.Condition()
        self._stopping = False
        self._current: int | None = None     # id of the running job
        self._abort: str | None = None       # why the running job must stop: "cancel" or "shutdown"
        self._proc: xorriso.Process | None = None
        self._in_use = threading.Lock()      # held by the running job or an eject
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
        return self._in_use.locked()

    def cancel(self, job_id: int) -> dict | None:
        """Cancel a queued or running job of this drive; its final record, or None if it had finished."""
        with self._cond:
            job = self.store.transition(job_id, {QUEUED}, state=CANCELLED, error_code="cancelled",
                                        error="cancelled before it started")
            if job is not None or self._current != job_id:
                return job
            self._abort = "cancel"
            proc = self._proc
        if proc is not None:
            proc.kill_group(self.config.cancel_grace)
        with self._cond:
            self._cond.wait_for(lambda: self._current != job_id, timeout=self.config.cancel_grace + 30)
        return self.store.get(job_id)

    def stop(self) -> None:
        """Shutdown: interrupt the running job, leave queued ones queued, end the thread."""
        with self._cond:
            self._stopping = True
            if self._current is not None:
                self._abort = "shutdown"
            proc = self._proc
            self._cond.notify_all()
        if proc is not None:
            proc.kill_group(self.config.cancel_grace)
        self._thread.join(self.config.cancel_grace + 30)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Use the drive outside a job (eject); Refused("drive_busy") if a job is using it."""
        if not self._in_use.acquire(blocking=False):
            raise Refused("drive_busy", "drive %r is busy with job %s" % (self.drive.name, self._current))
        try:
            yield
        finally:
            self._in_use.release()

    # -- the thread -----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                job = None
                while not self._stopping:
                    job = self.store.next_queued(self.drive.name)
                    if job is not None:
                        break
                    self._cond.wait()
                if self._stopping:
                    return
            with self._in_use:
                self._run(job["id"])
            self.store.prune()

    def _run(self, job_id: int) -> None:
        with self._cond:
            job = self.store.transition(job_id, {QUEUED}, state=BURNING, started=now())
            if job is None:          # cancelled meanwhile
                return
            self._current, self._abort = job_id, None
        self.log.info("job %d: burning %r on %s for %r", job_id, job["image"], self.drive.name, job["identity"])
        try:
            changes = self._execute(job)
        except verify.Aborted:
            changes = self._aborted()
        except Exception as e:       # a bug: fail this job, keep the drive's queue going
            self.log.exception("job %d: unexpected error", job_id)
            changes = _failed("internal_error", "internal error: %s: %s" % (type(e).__name__, e))
        with self._cond:
            if self._abort is not None and changes["state"] != DONE:
                changes = self._aborted()    # the failure was the kill (e.g. a read-back cut short)
            final = self.store.transition(job_id, RUNNING, **changes)
            self._current = self._abort = None
            self._cond.notify_all()
        if final is not None:
            self.log.info("job %d: %s%s", job_id, final["state"], ": " + final["error"] if final["error"] else "")

    def _aborted(self) -> dict:
        if self._abort == "cancel":
            return {"state": CANCELLED, "error_code": "cancelled", "error": "cancelled while running"}
        return {"state": INTERRUPTED, "error_code": "interrupted", "error": "the helper was shut down during the job"}

    def _check_abort(self) -> None:
        if self._abort is not None:
            raise verify.Aborted()

    def _spawn(self, argv: list[str], pass_fds: tuple[int, ...]) -> xorriso.Process:
        self._check_abort()
        proc = xorriso.Process(argv, pass_fds)
        self._adopt(proc)
        return proc

    def _adopt(self, proc: xorriso.Process) -> None:
        """Make ``proc`` the one cancel and shutdown kill, and record it for a successor helper."""
        with self._cond:
            self._proc = proc
            abort = self._abort is not None
        self.store.set_process(self.drive.name, self._current, proc.pid, procfs.start_time(proc.pid))
        if abort:                    # a cancel came between the check and now
            proc.kill_group(self.config.cancel_grace)

    def _reaped(self) -> None:
        with self._cond:
            self._proc = None
        self.store.clear_process(self.drive.name)

    def _execute(self, job: dict) -> dict:
        job_id = job["id"]
        try:
            image = open_image(self.config.images_dir, job["image"], self.drive.capacity)
        except Refused as e:
            return _failed(e.code, "image refused when the job started: %s" % e.message)
        with image:
            self.store.transition(job_id, RUNNING, image_size=image.size)
            if self.drive.kind == "device":
                problem = self._check_medium(image.size)
                if problem is not None:
                    return problem
            hasher = verify.BackgroundHash(image.fd, image.size)
            try:
                rc, problems = self._burn(job, image)
            finally:
                hasher.join()                # before the descriptor closes
        try:
            image_sha = hasher.digest()
        except verify.VerifyError as e:
            return _failed("image_unreadable", str(e))
        self.store.transition(job_id, RUNNING, image_sha256=image_sha)
        self._check_abort()
        if rc != 0:
            return _failed("burn_failed", "xorriso exited with status %d%s" % (
                rc, ": " + " | ".join(problems) if problems else ""))
        if not job["verify"]:
            return {"state": DONE}
        return self._verify(job_id, image.size, image_sha)

    def _check_medium(self, size: int) -> dict | None:
        rc, output = xorriso.run(xorriso.media_argv(self.config.xorriso, self.drive))
        info = xorriso.parse_media(output)
        if rc != 0 or not info.free_bytes:
            return _failed("no_medium", "no writable medium in drive %s (%s)" % (
                self.drive.name, info.current or info.status or "xorriso status %d" % rc))
        if size > info.free_bytes:
            return _failed("too_large", "image is %d bytes; the medium in %s has %d free" % (
                size, self.drive.name, info.free_bytes))
        return None

    def _burn(self, job: dict, image: Image) -> tuple[int, list[str]]:
        argv = xorriso.burn_argv(self.config.xorriso, self.drive, image.proc_path, job["speed"])
        proc = self._spawn(argv, pass_fds=(image.fd,))
        problems: collections.deque[str] = collections.deque(maxlen=4)
        record = self.store.recorder(job["id"], image.size)
        try:
            for raw in proc.popen.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                written = xorriso.parse_progress(line)
                if written is not None:
                    record(written)
                else:
                    self.log.debug("job %d: xorriso: %s", job["id"], line)
                    if xorriso.is_problem(line):
                        problems.append(line)
            rc = proc.wait()
        finally:
            if proc.popen.poll() is None:    # we are leaving on an exception: leave nothing behind
                proc.kill_group(self.config.cancel_grace)
            proc.popen.stdout.close()
            self._reaped()
        if rc == 0:
            record(image.size, force=True)
        return rc, list(problems)

    def _verify(self, job_id: int, size: int, image_sha: str) -> dict:
        self.store.transition(job_id, {BURNING}, state=VERIFYING, progress={"percent": 0.0, "bytes": 0})
        progress = self.store.recorder(job_id, size)
        try:
            if self.drive.kind == "stdio":
                disc_sha = verify.read_back_file(self.drive.path, size, progress,
                                                 lambda: self._abort is not None)
            else:
                try:
                    disc_sha = verify.read_back_xorriso(
                        self.config.xorriso, self.drive, size, progress, lambda: self._abort is not None,
                        started=self._adopt, grace=self.config.cancel_grace)
                finally:
                    self._reaped()
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
