# SPDX-License-Identifier: Apache-2.0
"""Start-up and shutdown of the helper process.

1. read the configuration, set umask 077 (state files are the helper's alone);
2. take an exclusive lock next to the job database (one helper per database);
3. take the socket from systemd, or create it;
4. started as root (no systemd to do it): give the state and socket directories to
   the helper's user, lock and bind as that user, give the socket its group, and
   drop every privilege for good (:mod:`clarens.burnerd.privileges`);
5. open the job database, mark jobs a dead predecessor left running ``interrupted``;
6. tell its starter it is ready (systemd's notification protocol, which the init
   script's ``start-stop-daemon --notify-await`` speaks), serve until SIGTERM or
   SIGINT, then stop accepting requests, kill running xorriso process groups (their
   jobs become ``interrupted``; queued jobs stay queued for the next start), and
   remove the socket if the helper created it.

The process calls itself ``clarens-burnerd`` however it was started, so that the
package's scripts find it.  A start that fails says why and what to do (to its
starter too), and removes the socket it made.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import pwd
import signal
import socket
import stat
import sys
import threading

from clarens import log as clarens_log
from clarens.burnerd import config as burner_config
from clarens.burnerd import privileges
from clarens.burnerd.jobs import JobStore
from clarens.burnerd.server import BurnerHTTPServer
from clarens.burnerd.service import Burner
from clarens.burnerd.sockets import Notifier, SocketError, create_socket, systemd_socket
from clarens.db import Database, open_db

PROCESS_NAME = b"clarens-burnerd"
PR_SET_NAME = 15


class StartupError(Exception):
    """The helper cannot start; the message says why."""


def _lock(db_path: str) -> int:
    """Hold an exclusive lock for the life of the process: a second helper on the same database refuses to start."""
    directory = os.path.dirname(db_path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(db_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except PermissionError as e:
        raise StartupError("%s: %s as %s; start the helper as root (it sets up its directories and drops to "
                           "its user) or under systemd (clarens-burnerd.socket)"
                           % (e.filename, e.strerror, _me())) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError("another helper is running with the database %s" % db_path) from None
    return fd


def _me() -> str:
    try:
        return "user %s" % pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "uid %d" % os.geteuid()


def _own_socket(config: burner_config.BurnerConfig) -> socket.socket:
    """Create the socket as the current user (who must be able to give it its group)."""
    try:
        return create_socket(config.socket, config.socket_mode, config.socket_uid, config.socket_gid)
    except SocketError as e:
        if e.errno == errno.EPERM:
            raise SocketError("%s: %s cannot give it the socket_owner/socket_group set in %s; start the helper as root "
                              "(it drops to its user) or under systemd (clarens-burnerd.socket)"
                              % (e, _me(), config.path), e.errno) from None
        raise


def _start_as_root(config: burner_config.BurnerConfig, sock: socket.socket | None,
                   log: logging.Logger) -> socket.socket:
    """As root: set up the directories, lock and socket for the helper's user, then become that user for good.
    ``sock`` is systemd's socket, or None to create one; the socket to serve."""
    user = privileges.account(config.user)
    if user.pw_uid == 0:
        log.warning("running as root (burnerd.conf: user = %s): the helper should have a user of its own",
                    config.user)
        _lock(config.db)
        return sock if sock is not None else _own_socket(config)
    privileges.ensure_dir(os.path.dirname(config.db), user.pw_uid, user.pw_gid, 0o700)
    group = config.socket_gid if config.socket_gid != -1 else user.pw_gid
    if sock is None:
        # The socket's group (the web tier's) may traverse the directory; nobody else.
        privileges.ensure_dir(os.path.dirname(config.socket), user.pw_uid, group, 0o710)
    with privileges.acting_as(user):      # nothing in the user's directories is touched as root
        _lock(config.db)
        if sock is None:
            sock = create_socket(config.socket, 0o600)
            created = True
        else:
            created = False
    try:
        if created:
            owner = config.socket_uid if config.socket_uid != -1 else user.pw_uid
            privileges.give_socket(config.socket, user.pw_uid, owner, group, config.socket_mode)
        privileges.drop(user)
    except BaseException:
        if created:
            _remove_socket(config.socket, sock)
        raise
    log.info("started as root: running as %s (uid %d)", user.pw_name, user.pw_uid)
    return sock


def _open_jobs(path: str) -> Database:
    try:
        return open_db(path)
    except (OSError, RuntimeError) as e:
        raise StartupError("cannot open the job database %s: %s" % (path, e)) from None


def _remove_socket(path: str, sock: socket.socket) -> None:
    """Remove the socket this helper created (if it is still a socket: never anything else)."""
    sock.close()
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        logging.getLogger("clarens.burnerd").warning("cannot remove the socket %s: %s", path, e.strerror)


def _name_process() -> None:
    """Call this process clarens-burnerd (its name in ps, and what the package's scripts stop),
    however it was started (``python3 -m clarens.burnerd`` would be "python3")."""
    ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(PROCESS_NAME), 0, 0, 0)


def run(config_path: str) -> int:
    """Run the helper in the foreground until SIGTERM/SIGINT; the exit status."""
    _name_process()
    notifier = Notifier()
    try:
        config = burner_config.load(config_path)
    except burner_config.ConfigError as e:
        print("clarens-burnerd: %s" % e, file=sys.stderr)
        notifier.failed(str(e), errno.EINVAL)
        return 2
    log = clarens_log.setup(config.log_level).getChild("burnerd")
    os.umask(0o077)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signo, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signo, frame: stop.set())
    sock: socket.socket | None = None
    owned = False
    try:
        sock = systemd_socket()
        owned = sock is None
        if os.geteuid() == 0:
            sock = _start_as_root(config, sock, log)
        else:
            _lock(config.db)
            if sock is None:
                sock = _own_socket(config)
        store = JobStore(_open_jobs(config.db), config.keep_jobs)
    except (StartupError, SocketError, privileges.PrivilegeError, OSError, RuntimeError) as e:
        log.error("cannot start: %s", e)
        notifier.failed("cannot start: %s" % e, getattr(e, "errno", None) or errno.EIO)
        if owned and sock is not None:
            _remove_socket(config.socket, sock)
        return 1
    if not config.drives:
        log.warning("no drives configured: add a [drive:NAME] section to %s", config.path)
    burner = Burner(config, store, log)
    burner.start()
    server = BurnerHTTPServer(sock, burner, config.allowed_uids, log)
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    log.info("listening on %s (%s), drives %s, pid %d", sock.getsockname(), "own socket" if owned else "from systemd",
             ", ".join(sorted(config.drives)) or "none", os.getpid())
    notifier.ready("listening on %s" % sock.getsockname())
    stop.wait()
    log.info("shutting down")
    server.shutdown()
    server.server_close()
    burner.stop()
    if owned:
        _remove_socket(config.socket, sock)
    logging.shutdown()
    return 0
