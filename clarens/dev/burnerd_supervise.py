# SPDX-License-Identifier: Apache-2.0
"""Keep the burner helper running, as systemd does with ``Restart=on-failure``, where there is no systemd.

    python3 -m clarens.dev.burnerd_supervise SOCKET_FD USER CONFIG

Used by the private instance (``./run serve``/``start``, through
:mod:`clarens.dev.burnerd_launch`).  The supervisor holds the helper's listening socket
(made by its privileged parent) and runs the helper on it as ``USER``, exactly as
socket activation would (:mod:`clarens.dev.socket_activate`).  Because the socket
stays open while the helper is down, the web tier's connections wait in its
backlog and are served by the restarted helper instead of being refused.

A helper that exits with an error or is killed is started again after
:data:`RESTART_DELAY` seconds, doubling up to :data:`MAX_DELAY` while it keeps
failing within :data:`STABLE` seconds of starting.  A helper that exits cleanly
(status 0: it was asked to stop) ends the supervisor too.  SIGTERM or SIGINT
stops the helper (SIGTERM, SIGKILL after :data:`STOP_TIMEOUT`; its xorriso
processes die with it) and then the supervisor.  Messages go to stderr, which the
instance appends to the helper's log.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from typing import Any

PYTHON = "/usr/bin/python3"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESTART_DELAY = 1.0
MAX_DELAY = 10.0
STABLE = 30.0          # seconds up after which a crash counts as a first failure again
STOP_TIMEOUT = 40.0    # the helper's own shutdown may wait cancel_grace for each xorriso


def _say(message: str) -> None:
    print("%s clarens-burnerd supervisor[%d]: %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message),
          file=sys.stderr, flush=True)


def _start(fd: int, user: str, config: str) -> subprocess.Popen:
    account = pwd.getpwnam(user)
    as_user: dict[str, Any] = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} \
        if os.geteuid() == 0 else {}
    return subprocess.Popen([PYTHON, "-m", "clarens.dev.socket_activate", str(fd),
                             PYTHON, "-m", "clarens.burnerd", "--config", config],
                            cwd=ROOT, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, stdin=subprocess.DEVNULL,
                            pass_fds=(fd,), **as_user)


def _stop(helper: subprocess.Popen) -> None:
    if helper.poll() is None:
        helper.send_signal(signal.SIGTERM)
        try:
            helper.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _say("helper %d did not stop within %.0f s; killing it" % (helper.pid, STOP_TIMEOUT))
            helper.kill()
            helper.wait()


def supervise(fd: int, user: str, config: str) -> int:
    """Run the helper until asked to stop or until it stops cleanly; the exit status."""
    stop = threading.Event()
    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, lambda *_: stop.set())
    failures = 0     # in a row, each within STABLE seconds of its start
    while not stop.is_set():
        started = time.monotonic()
        helper = _start(fd, user, config)
        while helper.poll() is None and not stop.wait(0.2):
            pass
        if stop.is_set():
            _stop(helper)
            break
        status = helper.returncode
        if status == 0:
            _say("helper %d stopped cleanly; not restarting it" % helper.pid)
            return 0
        failures = failures + 1 if time.monotonic() - started < STABLE else 1
        delay = min(RESTART_DELAY * 2 ** (failures - 1), MAX_DELAY)
        _say("helper %d %s; restarting it in %.0f s" % (
            helper.pid, "was killed by signal %d" % -status if status < 0 else "exited with status %d" % status,
            delay))
        stop.wait(delay)
    return 0


if __name__ == "__main__":
    sys.exit(supervise(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
