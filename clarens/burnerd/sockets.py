# SPDX-License-Identifier: Apache-2.0
"""The listening Unix socket: created by the helper, or handed over by systemd.

File permissions on the socket are the first barrier (only its owner and group
may connect); the peer-uid check in the server is the second.  The socket is
bound under umask 0177, so it is born 0600 and only widened to the configured
mode after its owner and group are set: it is never, even briefly, accessible
to anyone else.
"""

from __future__ import annotations

import os
import socket
import stat

SD_LISTEN_FDS_START = 3


class SocketError(Exception):
    """The socket could not be set up; the message says why (``errno``: the system's reason, if any)."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


def systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed (``LISTEN_PID``/``LISTEN_FDS``), or None.

    The variables are removed from the environment so that children never see them.
    """
    pid, fds = os.environ.pop("LISTEN_PID", None), os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid is None or fds is None or pid != str(os.getpid()):
        return None
    if fds != "1":
        raise SocketError("systemd passed %s sockets; the helper takes exactly one" % fds)
    try:
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    except OSError as e:
        raise SocketError("systemd's socket (fd %d) is unusable: %s" % (SD_LISTEN_FDS_START, e)) from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or \
            not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise SocketError("systemd's socket (fd %d) is not a listening Unix stream socket" % SD_LISTEN_FDS_START)
    sock.set_inheritable(False)
    return sock


def create_socket(path: str, mode: int, uid: int = -1, gid: int = -1, backlog: int = 64) -> socket.socket:
    """Bind and listen on ``path`` with owner ``uid``, group ``gid`` (-1: unchanged) and ``mode``."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory)
            os.chown(directory, -1, gid)
            # The socket's group must be able to reach it; nobody but the owner may list.
            os.chmod(directory, 0o710 if gid != -1 else 0o711)
        except OSError as e:
            raise SocketError("cannot create socket directory %s: %s" % (directory, e.strerror)) from None
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)              # left by a helper that died (we hold the state lock)
        else:
            raise SocketError("%s exists and is not a socket; not removing it" % path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
            bound = True
        finally:
            os.umask(old)
        if uid != -1 or gid != -1:
            os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        if bound:                        # never leave a socket nobody listens on
            os.unlink(path)
        raise SocketError("cannot set up socket %s: %s" % (path, e.strerror or e), e.errno) from None
    return sock


class Notifier:
    """Tells whoever started the helper that it is ready to serve, or why it could not start:
    systemd's notification protocol on ``$NOTIFY_SOCKET`` (``start-stop-daemon --notify-await``,
    which the init script uses, speaks it too), and nothing without that variable.

    It connects at once, while a helper started as root still is root: the starter's socket is
    root's (start-stop-daemon's sits in a directory only root may enter).
    """

    def __init__(self) -> None:
        path = os.environ.pop("NOTIFY_SOCKET", None)
        self._sock: socket.socket | None = None
        if path:
            address = "\0" + path[1:] if path.startswith("@") else path      # "@": an abstract socket
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(address)
                self._sock = sock
            except OSError:
                sock.close()

    def _send(self, message: str) -> None:
        if self._sock is not None:
            try:
                self._sock.send(message.encode("utf-8", "replace"))
            except OSError:
                pass                        # the starter gave up waiting: nothing to tell
            self._sock.close()
            self._sock = None

    def ready(self, status: str) -> None:
        """The helper serves: ``status`` is what it says about itself."""
        self._send("READY=1\nSTATUS=%s" % status)

    def failed(self, why: str, errno: int = 5) -> None:
        """The helper could not start, because of ``why`` (an errno value for the starter's message)."""
        self._send("STATUS=%s\nERRNO=%d" % (why.replace("\n", " "), errno))
