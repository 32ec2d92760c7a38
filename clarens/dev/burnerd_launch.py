# SPDX-License-Identifier: Apache-2.0
"""Start the helper as systemd would: the socket made with its configured owner, group and
mode by a privileged parent, the helper itself run as its own unprivileged user, and
restarted when it fails (:mod:`clarens.dev.burnerd_supervise`).

Used by the private instance (``./run serve``).  As root, the helper runs as
``user`` and never holds root; the socket belongs to that user and to the web
tier's group, which an unprivileged helper could not arrange for itself.
Without root, the helper simply runs as the caller.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time

from clarens.burnerd import config as burner_config
from clarens.burnerd.client import BurnerClient, HelperUnavailable, RequestRefused
from clarens.burnerd.sockets import create_socket

PYTHON = "/usr/bin/python3"
LOG_MODE = 0o640
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def launch(config_path: str, user: str | None, log_path: str, timeout: float = 20.0) -> subprocess.Popen:
    """Start the helper's supervisor for ``config_path`` (the helper as ``user`` if we are root)
    and wait until the helper answers; the supervisor's process."""
    cfg = burner_config.load(config_path)
    account = pwd.getpwnam(user) if user and os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    sock = create_socket(cfg.socket, cfg.socket_mode, uid=account.pw_uid, gid=cfg.socket_gid)
    argv = [PYTHON, "-m", "clarens.dev.burnerd_supervise", str(sock.fileno()), account.pw_name, config_path]
    # Its lines name callers and images: readable by its owner (and group) only, whatever the umask.
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_MODE)
    try:
        os.fchmod(log, LOG_MODE)
        proc = subprocess.Popen(argv, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(sock.fileno(),),
                                start_new_session=True)
    finally:
        os.close(log)
    sock.close()
    client = BurnerClient(cfg.socket, connect_timeout=1.0, timeout=2.0)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("the burner helper's supervisor exited with status %d; see %s"
                               % (proc.returncode, log_path))
        try:
            client.status()
            client.close()
            return proc
        except RequestRefused:   # it answered (we may simply not be an allowed uid)
            client.close()
            return proc
        except HelperUnavailable:
            client.close()
            if time.monotonic() > deadline:
                proc.terminate()
                proc.wait()
                raise RuntimeError("the burner helper did not answer within %.0fs; see %s"
                                   % (timeout, log_path)) from None
            time.sleep(0.1)
