# SPDX-License-Identifier: Apache-2.0
"""Reusing a kept-alive connection: whether the other side has closed it.

A client that keeps connections open between calls (the RPC client's HTTP
transport, the burner helper's client) must not send a request on one the
server has closed meanwhile (its idle timeout, a restart): the request would be
lost, and whether it ran could not be told.  An idle connection should hold
nothing to read; if it is readable, the server has closed it (an end of file)
or sent bytes nobody asked for, and either way it is unusable.
"""

from __future__ import annotations

import select
import socket


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the idle connection ``sock`` was closed by the other side, or holds unread bytes."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))
