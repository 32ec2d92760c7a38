# SPDX-License-Identifier: Apache-2.0
"""The processes the helper starts on a drive: each in its own session, with a run token, never outliving us unnoticed.

Every command is an argv list run without a shell, in a clean environment with
the C locale (output is parsed), in its own session so that a cancel can kill
the process and anything it started with one ``killpg``.

A process working on a drive must never outlive its helper unnoticed: xorriso
1.5.4 ignores SIGPIPE from about 2 ms after it starts, so with its output pipe
closed it finishes a whole burn, and libburn takes no lock on a ``stdio:``
target.  Hence:

* it runs under ``setpriv --pdeathsig SIGTERM``: the kernel signals it when the
  thread that started it dies (so only long-lived threads start processes);
* the helper passes a run token in its environment (:data:`RUN_VAR`), recorded
  durably *before* the start, so a restarted helper can find it by its
  environment even if its pid was never recorded (:func:`run_token`).

Only the drive workers start these processes (:meth:`DriveWorker.started
<clarens.burnerd.worker.DriveWorker.started>`), which also record them and pass
them the drive's lock; a backend asks its worker (:mod:`clarens.burnerd.backends`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable

from clarens import procfs

CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
RUN_VAR = "CLARENS_BURNERD_RUN"    # the run token in the environment of every process the helper starts on a drive
# SIGTERM, not SIGKILL: libburn catches it and stops a real drive cleanly (a drive left
# mid-write may stay unusable until reset); on stdio: xorriso exits about a second later.
# Should it not, the next helper finds it (token, drive lock) and kills it.
PDEATHSIG = ["/usr/bin/setpriv", "--pdeathsig", "SIGTERM", "--"]
SHORT_TIMEOUT = 120         # seconds for a command that is not a burn (a real drive may take long to load)
KILL_WAIT = 5               # seconds to wait for a SIGKILLed group to be gone


class Process:
    """A running process in its own process group, signalled (SIGTERM) if the thread that started it dies.

    ``token`` goes into its environment as :data:`RUN_VAR`.
    """

    def __init__(self, argv: list[str], pass_fds: tuple[int, ...] = (), merge_output: bool = True,
                 token: str | None = None):
        env = CLEAN_ENV if token is None else {**CLEAN_ENV, RUN_VAR: token}
        self.popen = subprocess.Popen(
            PDEATHSIG + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            pass_fds=pass_fds, env=env, close_fds=True, start_new_session=True)
        self.pid = self.popen.pid    # also the process group id (new session); setpriv execs the command in place

    def kill_group(self, grace: float) -> None:
        """End the process and everything in its group (see :func:`terminate_group`)."""
        terminate_group(self.pid, grace, self.popen.poll)

    def wait(self) -> int:
        """Wait for the process itself; its exit status."""
        return self.popen.wait()


def finish(proc: Process, timeout: float = SHORT_TIMEOUT) -> tuple[int, str]:
    """Wait for a short command (started with merged output) to end: (exit status, its output).

    Past ``timeout`` its group is killed and the status is -1.
    """
    try:
        out, _ = proc.popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill_group(0)
        out, _ = proc.popen.communicate()
        return -1, out.decode("utf-8", "replace") + "\n(timed out after %g s)" % timeout
    return proc.popen.returncode, out.decode("utf-8", "replace")


def run_token(pid: int) -> str | None:
    """The run token in the environment of process ``pid``: None if it was not started by a helper."""
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
