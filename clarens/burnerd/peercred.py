# SPDX-License-Identifier: Apache-2.0
"""Who is at the other end of a Unix socket connection (SO_PEERCRED).

The kernel records the credentials of the process that called ``connect()``;
they cannot be forged by the client, unlike anything it sends.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

_UCRED = struct.Struct("3i")   # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


class Peer(NamedTuple):
    pid: int
    uid: int
    gid: int

    def describe(self) -> str:
        """For log lines: ``uid=33 pid=1234``."""
        return "uid=%d pid=%d" % (self.uid, self.pid)


def peer_credentials(sock: socket.socket) -> Peer:
    """The pid, uid and gid of the process that connected ``sock`` (an AF_UNIX stream socket)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return Peer(*_UCRED.unpack(raw))
