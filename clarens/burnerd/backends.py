# SPDX-License-Identifier: Apache-2.0
"""Drive backends: what a drive of each ``kind`` does, behind the one interface the worker uses.

The worker (:mod:`~clarens.burnerd.worker`) keeps what every kind shares: the
queue, the drive's lock, the job records and their states, cancel and shutdown.
A backend (:class:`Backend`) does the drive's part of each step: look at the
medium, check there is room for an image, burn it, read it back, eject.  It
starts processes only through the :class:`Runner` its worker hands it, which
records each one before it starts, gives it the run token and the drive's lock,
kills its group on cancel and shutdown, and clears the record once it has ended;
so a backend keeps the crash-safety rules of ``clarens/burnerd/README.md``
without doing anything for them.

A drive's backend is chosen by its ``kind`` (:data:`BACKENDS`; the configuration
checks each kind's ``dev`` in :data:`clarens.burnerd.config.ADDRESSES`):

``device``
    a real writer, driven by xorriso.  Every command starts with
    ``-ban_stdio_write``, so that a configuration mistake cannot make xorriso
    overwrite a file; the medium is checked for room before a burn and read back
    through xorriso; its processes get ``cancel_grace`` seconds between SIGTERM
    and SIGKILL (libburn stops a drive cleanly on SIGTERM).
``stdio``
    an xorriso pseudo-drive, a regular file standing in for the disc (tests,
    demonstrations): burnt with ``stdio_sync=end`` (smooth speed emulation, a
    durable pseudo-disc), looked at and read back as a file; its processes are
    killed at once (no hardware to stop cleanly).

``docs/architecture.md`` ("Adding a burner backend") walks through adding one.
"""

from __future__ import annotations

import collections
import logging
import os
import stat
from typing import Callable, ContextManager, Protocol

from clarens.burnerd import verify, xorriso
from clarens.burnerd.config import BurnerConfig, DriveConfig
from clarens.burnerd.errors import Failed, Refused
from clarens.burnerd.images import Image
from clarens.burnerd.processes import Process, finish

Medium = dict[str, str | int | float | bool | None]     # what a drive's "medium" says (API: DRIVE)


class Runner(Protocol):
    """What a backend may ask of its worker during one use of the drive (a job, an eject, a look)."""

    @property
    def current(self) -> int | None:
        """The id of the job using the drive, if any (for log lines)."""

    def started(self, purpose: str, argv: list[str], pass_fds: tuple[int, ...] = (),
                merge_output: bool = True) -> ContextManager[Process]:
        """Start ``argv`` on the drive for ``purpose`` (``burn``, ``verify``, ``media``, ``eject``: kept
        in its record for the next helper's log), for the length of a ``with`` block.

        It is recorded before it starts, gets the run token and the drive's lock
        besides ``pass_fds``, and its output on a pipe (stderr on its own pipe
        unless ``merge_output``).  Cancel and shutdown kill its group; so does the
        end of the block if it is still running then.  Raises
        :class:`~clarens.burnerd.verify.Aborted` instead of starting it once the
        job is asked to stop."""

    def stopping(self) -> bool:
        """Whether a cancel or a shutdown wants the current job to stop: long loops ask it."""


class Backend(Protocol):
    """The drive's part of the helper's work, for one kind of drive.  The worker calls every method but
    :meth:`peek_medium` from the drive's own thread, holding the drive's lock, one at a time."""

    drive: DriveConfig
    grace: float     # seconds between SIGTERM and SIGKILL when the worker kills one of its processes

    def peek_medium(self) -> Medium | None:
        """The medium, if it can be told without using the drive, at once, from any thread (a pseudo-disc is
        a file); None if only :meth:`look_at_medium` can (the worker then answers from its last look)."""

    def look_at_medium(self, run: Runner) -> Medium:
        """Look at the medium: ``{current, status, free_bytes, ok}`` (the worker adds ``checked``)."""

    def check_room(self, run: Runner, size: int) -> None:
        """Before a burn: :class:`~clarens.burnerd.errors.Failed` (``no_medium``, ``too_large``) unless the
        medium can take ``size`` bytes.  (The image was already compared with the drive's ``capacity_mb``.)"""

    def burn(self, run: Runner, image: Image, speed: int | None, progress: verify.Progress) -> None:
        """Burn ``image`` (read it through ``image.fd`` or ``image.proc_path``: the checked inode) at ``speed``
        (None: the drive's best), calling ``progress`` with the bytes written so far;
        :class:`~clarens.burnerd.errors.Failed` (``burn_failed``) if it failed."""

    def read_back(self, run: Runner, size: int, progress: verify.Progress) -> str:
        """SHA-256 of the first ``size`` bytes of the medium, calling ``progress`` with the bytes read so far;
        :class:`~clarens.burnerd.verify.VerifyError` if they cannot be read,
        :class:`~clarens.burnerd.verify.Aborted` once ``run.stopping()``."""

    def eject(self, run: Runner) -> None:
        """Eject the medium; :class:`~clarens.burnerd.errors.Refused` (``eject_failed``) if it failed."""


class _Xorriso:
    """What both shipped backends do alike: burn, eject and look at the medium with xorriso."""

    first: tuple[str, ...] = ()            # options every xorriso command starts with
    burn_options: tuple[str, ...] = ()     # more cdrecord options for a burn

    def __init__(self, drive: DriveConfig, config: BurnerConfig, log: logging.Logger):
        self.drive = drive
        self.grace: float = config.cancel_grace
        self.log = log
        self.commands = xorriso.Commands(config.xorriso, drive.address, drive.fifo_size, self.first, self.burn_options)

    def _media(self, run: Runner) -> tuple[int, xorriso.MediaInfo]:
        with run.started("media", self.commands.media()) as proc:
            rc, output = finish(proc)
        return rc, xorriso.parse_media(output)

    def look_at_medium(self, run: Runner) -> Medium:
        rc, info = self._media(run)
        return {"current": info.current, "status": info.status, "free_bytes": info.free_bytes, "ok": rc == 0}

    def burn(self, run: Runner, image: Image, speed: int | None, progress: verify.Progress) -> None:
        problems: collections.deque[str] = collections.deque(maxlen=4)
        with run.started("burn", self.commands.burn(image.proc_path, speed), (image.fd,)) as proc:
            stdout = proc.popen.stdout
            assert stdout is not None            # started() pipes it
            try:
                for raw in stdout:
                    line = raw.decode("utf-8", "replace").rstrip()
                    written = xorriso.parse_progress(line)
                    if written is not None:
                        progress(written)
                    else:
                        self.log.debug("job %s: xorriso: %s", run.current, line)
                        if xorriso.is_problem(line):
                            problems.append(line)
                rc = proc.wait()
            finally:
                stdout.close()
        if rc != 0:
            raise Failed("burn_failed", "xorriso exited with status %d%s" % (
                rc, ": " + " | ".join(problems) if problems else ""))

    def eject(self, run: Runner) -> None:
        with run.started("eject", self.commands.eject()) as proc:
            rc, output = finish(proc)
        if rc != 0:
            problems = [line for line in output.splitlines() if xorriso.is_problem(line)]
            raise Refused("eject_failed", "xorriso could not eject %s: %s" % (
                self.drive.name, " | ".join(problems) or "exit status %d" % rc))


class DeviceBackend(_Xorriso):
    """A real writer (``kind = device``, ``dev = /dev/sr0``)."""

    first = ("-ban_stdio_write",)

    def peek_medium(self) -> Medium | None:
        return None      # only xorriso can tell, and it needs the drive: the worker's last look answers

    def check_room(self, run: Runner, size: int) -> None:
        rc, info = self._media(run)
        if rc != 0 or not info.free_bytes:
            raise Failed("no_medium", "no writable medium in drive %s (%s)" % (
                self.drive.name, info.current or info.status or "xorriso status %d" % rc))
        if size > info.free_bytes:
            raise Failed("too_large", "image is %d bytes; the medium in %s has %d free" % (
                size, self.drive.name, info.free_bytes))

    def read_back(self, run: Runner, size: int, progress: verify.Progress) -> str:
        with run.started("verify", self.commands.read_back(size), merge_output=False) as proc:
            return verify.read_back_xorriso(proc, size, progress, run.stopping, self.grace)


class StdioBackend(_Xorriso):
    """An xorriso pseudo-drive (``kind = stdio``, ``dev = stdio:PATH``): the file at PATH is the disc."""

    burn_options = ("stdio_sync=end",)

    def __init__(self, drive: DriveConfig, config: BurnerConfig, log: logging.Logger):
        super().__init__(drive, config, log)
        self.grace = 0       # no hardware to stop cleanly: SIGKILL at once

    def peek_medium(self) -> Medium | None:
        try:
            st = os.stat(self.drive.path)
        except FileNotFoundError:
            return {"present": False, "size": 0}
        return {"present": True, "size": st.st_size if stat.S_ISREG(st.st_mode) else 0}

    def check_room(self, run: Runner, size: int) -> None:
        pass             # a file has no medium to run out of: the drive's capacity_mb is the limit

    def read_back(self, run: Runner, size: int, progress: verify.Progress) -> str:
        return verify.read_back_file(self.drive.path, size, progress, run.stopping)


# kind -> backend(drive, the helper's configuration, log)
BACKENDS: dict[str, Callable[[DriveConfig, BurnerConfig, logging.Logger], Backend]] = {
    "device": DeviceBackend,
    "stdio": StdioBackend,
}


def for_drive(drive: DriveConfig, config: BurnerConfig, log: logging.Logger) -> Backend:
    """The backend of ``drive``, by its kind."""
    return BACKENDS[drive.kind](drive, config, log)
