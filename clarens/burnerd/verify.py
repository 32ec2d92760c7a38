# SPDX-License-Identifier: Apache-2.0
"""SHA-256 of an image and of what a drive reads back.

The disc is read back for exactly the image's size: a burn pads the written
area past the end of the image, so hashing the whole medium would never match.
A ``stdio:`` pseudo-disc is read directly; a real drive through xorriso's
``-check_media data_to=-`` (which also works on ``stdio:``, and is tested there).
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import IO, Callable

from clarens.burnerd import xorriso
from clarens.burnerd.processes import Process

CHUNK = 1024 * 1024
Progress = Callable[[int], None]    # called with the bytes read so far, after every chunk


class Aborted(Exception):
    """Reading stopped because ``should_stop`` said so (cancel or shutdown)."""


class VerifyError(Exception):
    """The medium could not be read back; the message says why."""


def hash_fd(fd: int, size: int, should_stop: Callable[[], bool] = lambda: False) -> str:
    """SHA-256 of the first ``size`` bytes of ``fd`` (read with pread: the file offset is untouched)."""
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        if should_stop():
            raise Aborted()
        data = os.pread(fd, min(CHUNK, size - offset), offset)
        if not data:
            raise VerifyError("image ended after %d of %d bytes" % (offset, size))
        digest.update(data)
        offset += len(data)
    return digest.hexdigest()


class BackgroundHash:
    """Hash an open image in a thread while xorriso burns it (there are cores to spare).

    ``should_stop`` ends the hashing early (a cancel need not wait for a large image's hash).
    """

    def __init__(self, fd: int, size: int, should_stop: Callable[[], bool] = lambda: False):
        self.result: str | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(fd, size, should_stop), name="image-sha256",
                                        daemon=True)
        self._thread.start()

    def _run(self, fd: int, size: int, should_stop: Callable[[], bool]) -> None:
        try:
            self.result = hash_fd(fd, size, should_stop)
        except (OSError, VerifyError, Aborted) as e:
            self.error = e

    def join(self) -> None:
        """Wait until the thread no longer uses the descriptor."""
        self._thread.join()

    def digest(self) -> str:
        """The image's SHA-256 (waits for it); VerifyError if the image could not be read, Aborted if stopped."""
        self.join()
        if isinstance(self.error, Aborted):
            raise Aborted()
        if self.error is not None:
            raise VerifyError("cannot hash the image: %s" % self.error)
        assert self.result is not None
        return self.result


def _hash_stream(stream: IO[bytes], size: int, progress: Progress | None, should_stop: Callable[[], bool]) -> str:
    digest = hashlib.sha256()
    done = 0
    while done < size:
        if should_stop():
            raise Aborted()
        data = stream.read(min(CHUNK, size - done))
        if not data:
            raise VerifyError("the medium ended after %d of %d bytes" % (done, size))
        digest.update(data)
        done += len(data)
        if progress is not None:
            progress(done)
    return digest.hexdigest()


def read_back_file(path: str, size: int, progress: Progress | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> str:
    """SHA-256 of the first ``size`` bytes of the pseudo-disc file at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise VerifyError("cannot open %s: %s" % (path, e.strerror)) from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        try:
            return _hash_stream(f, size, progress, should_stop)
        except OSError as e:
            raise VerifyError("reading %s failed: %s" % (path, e.strerror)) from None


def read_back_xorriso(proc: Process, size: int, progress: Progress | None = None,
                      should_stop: Callable[[], bool] = lambda: False, grace: float = 10) -> str:
    """SHA-256 of the first ``size`` bytes of the medium, read by ``proc``: xorriso started (with separate
    output, ``merge_output=False``) on :meth:`Commands.read_back <clarens.burnerd.xorriso.Commands.read_back>`.

    Its group is killed once ``size`` bytes have been read (``grace``: see
    :func:`~clarens.burnerd.processes.terminate_group`), or when reading stops.
    """
    stdout, stderr = proc.popen.stdout, proc.popen.stderr
    assert stdout is not None and stderr is not None     # Process pipes both (merge_output=False)
    # xorriso's messages go to stderr; drain it in a thread so it can never fill the pipe.
    messages: list[str] = []
    drain = threading.Thread(target=lambda pipe: messages.extend(
        line.decode("utf-8", "replace").rstrip() for line in pipe), args=(stderr,), daemon=True)
    drain.start()
    try:
        digest = _hash_stream(stdout, size, progress, should_stop)
    except VerifyError as e:
        proc.wait()
        drain.join()
        problems = [m for m in messages if xorriso.is_problem(m)]
        raise VerifyError("%s%s" % (e, ("; " + " | ".join(problems[-3:])) if problems else "")) from None
    except BaseException:
        proc.kill_group(grace)
        raise
    finally:
        stdout.close()
    proc.kill_group(grace)    # the rest of the last sector is not needed
    proc.wait()
    drain.join()
    return digest
