"""Running xorriso: the argument lists, its progress lines, and its process group.

Every command is an argv list run without a shell, in a clean environment with
the C locale (the progress format is parsed), in its own session so that a
cancel can kill xorriso and anything it started with one ``killpg``.

xorriso must never outlive its helper unnoticed: 1.5.4 ignores SIGPIPE from
about 2 ms after it starts, so with its output pipe closed it finishes a whole
burn, and libburn takes no lock on a ``stdio:`` target.  Hence:

* it runs under ``setpriv --pdeathsig SIGTERM``: the kernel signals it when the
  thread that started it dies (so only long-lived threads start xorriso);
* the helper passes a run token in its environment (:data:`RUN_VAR`), recorded
  durably *before* the start, so a restarted helper can find it by its
  environment even if its pid was never recorded (:func:`run_token`).

Measured with xorriso 1.5.4 on ``stdio:`` pseudo-drives (a file standing in for
the disc):

* libburn does emulate the write speed on ``stdio:`` (``speed=1`` is DVD 1x,
  about 1.3 MB/s), but only smoothly with ``stdio_sync=end``: with the default
  fsync every 16 MiB the pacing and the progress counter move in 16 MiB jumps
  and a small image is written at full speed.  ``stdio_sync=end`` also makes
  the pseudo-disc durable once the burn has reported success.
* The fifo size bounds stdio throughput: a 256 MiB image took 3.5 s with the
  default 4 MiB fifo, 0.66 s with 32 MiB, 0.47 s with 64 MiB (and 137 s with 64 KiB).
* xorriso checks whether the burn has ended only between two progress
  messages, once a second by default: ``-pacifier interval=0.1`` cut the
  average burn of that image from 0.94 s to 0.61 s (32 MiB fifo).
* Real drives get ``-ban_stdio_write`` first, so that a configuration mistake
  can never make xorriso overwrite a file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from typing import Callable, NamedTuple

from clarens import procfs
from clarens.burnerd.config import DriveConfig

CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
RUN_VAR = "CLARENS_BURNERD_RUN"    # the run token in the environment of every xorriso the helper starts
# SIGTERM, not SIGKILL: libburn catches it and stops a real drive cleanly (a drive left
# mid-write may stay unusable until reset); on stdio: xorriso exits about a second later.
# Should it not, the next helper finds it (token, drive lock) and kills it.
PDEATHSIG = ["/usr/bin/setpriv", "--pdeathsig", "SIGTERM", "--"]
MIB = 1024 * 1024
PACIFIER_INTERVAL = 0.1     # xorriso notices the end of a burn only when it next reports progress
SHORT_TIMEOUT = 120         # seconds for a command that is not a burn (a real drive may take long to load)
KILL_WAIT = 5               # seconds to wait for a SIGKILLed group to be gone
SECTOR = 2048

# "xorriso : UPDATE :   11 of   40 MB written (fifo 99%) [buf  50%]   6.0x."
# (xorriso's "MB" are sectors / 512, i.e. MiB; past the announced size it drops "of N")
_PROGRESS_RE = re.compile(r"UPDATE : +(\d+)(?: of +\d+)? MB written")
_PROBLEM_RE = re.compile(r"\b(?:SORRY|FAILURE|FATAL|ABORT)\b")


def _ban(drive: DriveConfig) -> list[str]:
    return ["-ban_stdio_write"] if drive.kind == "device" else []


def burn_argv(xorriso: str, drive: DriveConfig, image_path: str, speed: int | None) -> list[str]:
    """Write ``image_path`` to the drive as one closed session."""
    argv = [xorriso] + _ban(drive) + ["-pacifier", "interval=%g" % PACIFIER_INTERVAL,
                                      "-as", "cdrecord", "-v", "dev=" + drive.address, "fs=" + drive.fifo_size]
    if drive.kind == "stdio":
        argv.append("stdio_sync=end")
    if speed is not None:
        argv.append("speed=%d" % speed)
    argv.append(image_path)
    return argv


def readback_argv(xorriso: str, drive: DriveConfig, size: int) -> list[str]:
    """Copy the first ``size`` bytes (rounded up to whole sectors) of the medium to stdout."""
    last = max(0, (size + SECTOR - 1) // SECTOR - 1)
    return [xorriso] + _ban(drive) + ["-outdev", drive.address, "-check_media", "data_to=-", "use=outdev",
                                      "what=disc", "min_lba=0", "max_lba=%d" % last, "--"]


def media_argv(xorriso: str, drive: DriveConfig) -> list[str]:
    """Report the medium in the drive and the space left on it."""
    return [xorriso] + _ban(drive) + ["-outdev", drive.address, "-tell_media_space"]


def eject_argv(xorriso: str, drive: DriveConfig) -> list[str]:
    """Eject the medium (a no-op that succeeds on ``stdio:`` pseudo-drives)."""
    return [xorriso] + _ban(drive) + ["-outdev", drive.address, "-eject", "all"]


def parse_progress(line: str) -> int | None:
    """Bytes written according to one line of xorriso's output, or None if it is no progress line."""
    m = _PROGRESS_RE.search(line)
    return int(m.group(1)) * MIB if m else None


def is_problem(line: str) -> bool:
    """True for xorriso's SORRY/FAILURE/FATAL lines: the reason a run failed."""
    return _PROBLEM_RE.search(line) is not None


class MediaInfo(NamedTuple):
    current: str       # "DVD-R sequential recording", "stdio file, overwriteable", "is not present"...
    status: str        # "is blank", "is written , is appendable"...
    free_bytes: int | None


def parse_media(output: str) -> MediaInfo:
    """The ``Media current``, ``Media status`` and ``Media space`` lines of ``-tell_media_space``."""
    fields = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    space = re.match(r"(\d+)s\Z", fields.get("Media space", ""))
    return MediaInfo(current=fields.get("Media current", ""), status=fields.get("Media status", ""),
                     free_bytes=int(space.group(1)) * SECTOR if space else None)


class Process:
    """A running xorriso in its own process group, signalled (SIGTERM) if the thread that started it dies.

    ``token`` goes into its environment as :data:`RUN_VAR`.
    """

    def __init__(self, argv: list[str], pass_fds: tuple[int, ...] = (), merge_output: bool = True,
                 token: str | None = None):
        env = CLEAN_ENV if token is None else {**CLEAN_ENV, RUN_VAR: token}
        self.popen = subprocess.Popen(
            PDEATHSIG + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            pass_fds=pass_fds, env=env, close_fds=True, start_new_session=True)
        self.pid = self.popen.pid    # also the process group id (new session); setpriv execs xorriso in place

    def kill_group(self, grace: float) -> None:
        """End xorriso and everything in its group (see :func:`terminate_group`)."""
        terminate_group(self.pid, grace, self.popen.poll)

    def wait(self) -> int:
        """Wait for xorriso itself; its exit status."""
        return self.popen.wait()


Spawn = Callable[..., Process]      # Process, or a caller's wrapper around it (same arguments)


def run_token(pid: int) -> str | None:
    """The run token in the environment of process ``pid``: None if it is not an xorriso of a helper."""
    return procfs.environ(pid).get(RUN_VAR)


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def terminate_group(pgid: int, grace: float, reap: Callable[[], object] = lambda: None) -> None:
    """SIGTERM process group ``pgid``, SIGKILL whatever is still running in it after ``grace`` seconds,
    and return once the group has gone (or after KILL_WAIT more seconds, for a process stuck in the kernel).

    SIGTERM first because libburn catches it and stops a real drive cleanly; with
    ``grace`` 0 (``stdio:`` drives: no hardware to stop) SIGKILL at once.
    ``reap`` collects our own child, whose zombie would otherwise keep the group alive.
    """
    if grace > 0 and kill_group(pgid, signal.SIGTERM) and _gone(pgid, grace, reap):
        return
    if kill_group(pgid, signal.SIGKILL):
        _gone(pgid, KILL_WAIT, reap)


def _gone(pgid: int, within: float, reap: Callable[[], object]) -> bool:
    deadline = time.monotonic() + within
    while True:
        reap()
        if not group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a member that is not a zombie.

    ``killpg(pgid, 0)`` also counts zombies, and an orphan's zombie lingers
    where PID 1 is slow to reap (containers).
    """
    group = str(pgid)
    for pid in procfs.pids():
        st = procfs.stat(pid)
        if st is not None and st[1][2] == group and st[1][0] not in ("Z", "X"):
            return True
    return False


def run(argv: list[str], timeout: float = SHORT_TIMEOUT, spawn: Spawn = Process) -> tuple[int, str]:
    """Run a short xorriso command to completion: (exit status, combined output)."""
    proc = spawn(argv)
    try:
        out, _ = proc.popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill_group(0)
        out, _ = proc.popen.communicate()
        return -1, out.decode("utf-8", "replace") + "\n(timed out after %g s)" % timeout
    return proc.popen.returncode, out.decode("utf-8", "replace")
