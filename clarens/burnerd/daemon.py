"""Start-up and shutdown of the helper process.

1. read the configuration, set umask 077 (state files are the helper's alone);
2. take an exclusive lock next to the job database (one helper per database);
3. open the job database, mark jobs a dead predecessor left running ``interrupted``;
4. take the socket from systemd, or create it;
5. serve until SIGTERM or SIGINT, then stop accepting requests, kill running
   xorriso process groups (their jobs become ``interrupted``; queued jobs stay
   queued for the next start), and remove the socket if the helper created it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading

from clarens import log as clarens_log
from clarens.burnerd import config as burner_config
from clarens.burnerd.jobs import JobStore
from clarens.burnerd.server import BurnerHTTPServer
from clarens.burnerd.service import Burner
from clarens.burnerd.sockets import SocketError, create_socket, systemd_socket
from clarens.db import open_db


class StartupError(Exception):
    """The helper cannot start; the message says why."""


def _lock(db_path: str) -> int:
    """Hold an exclusive lock for the life of the process: a second helper on the same database refuses to start."""
    directory = os.path.dirname(db_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(db_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError("another helper is running with the database %s" % db_path) from None
    return fd


def run(config_path: str) -> int:
    """Run the helper in the foreground until SIGTERM/SIGINT; the exit status."""
    try:
        config = burner_config.load(config_path)
    except burner_config.ConfigError as e:
        print("clarens-burnerd: %s" % e, file=sys.stderr)
        return 2
    log = clarens_log.setup(config.log_level).getChild("burnerd")
    os.umask(0o077)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signo, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signo, frame: stop.set())
    try:
        _lock(config.db)
        store = JobStore(open_db(config.db), config.keep_jobs)
        sock = systemd_socket()
        owned = sock is None
        if sock is None:
            sock = create_socket(config.socket, config.socket_mode, config.socket_uid, config.socket_gid)
    except (StartupError, SocketError, OSError) as e:
        log.error("cannot start: %s", e)
        return 1
    burner = Burner(config, store, log)
    burner.start()
    server = BurnerHTTPServer(sock, burner, config.allowed_uids, log)
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    log.info("listening on %s (%s), drives %s, pid %d", sock.getsockname(), "own socket" if owned else "from systemd",
             ", ".join(sorted(config.drives)), os.getpid())
    stop.wait()
    log.info("shutting down")
    server.shutdown()
    server.server_close()
    burner.stop()
    if owned:
        try:
            os.unlink(config.socket)
        except FileNotFoundError:
            pass
    logging.shutdown()
    return 0
