# SPDX-License-Identifier: Apache-2.0
"""Which server a call goes to, and when a failed call may go to another.

Round-robin over the servers that are up.  A server that fails is marked down
for a while (1 s, doubling to a minute while it keeps failing), then takes its
turn in the rotation again, where a call probes it; nothing is dropped for good.
While it is down, a call tries it only after every other server has failed (the
one that comes back soonest first), so a pool of one is never shut out.

Within one call, the servers are tried in that order, round after round, until one
answers or the call's timeout runs out, with a pause between rounds
(:func:`retry_pauses`: 50 ms, doubling to 1 s, each drawn at random from its upper
half so that clients that failed together do not come back together).  A failure
that trying again cannot help (``transient`` false) takes its server out of the
rest of the call.

This is policy only: :class:`clarens.client.service.Service` asks :meth:`Pool.order`
where to send a call and reports back with :meth:`Pool.failed` and
:meth:`Pool.succeeded`.  The rule for trying again is in :func:`may_retry`.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from clarens.client.errors import TransportError

FIRST_BACKOFF = 1.0      # seconds a server stays down after a failure
MAX_BACKOFF = 60.0       # ... doubling while it keeps failing, up to this
FIRST_PAUSE = 0.05       # seconds between a call's first round over the servers and its second
MAX_PAUSE = 1.0          # ... doubling each round, up to this


@dataclass
class Server:
    """One server of a pool and what the pool knows of it."""
    url: str
    failures: int = 0                 # failures in a row (not counting those while it was down)
    down_until: float = 0.0           # until then (monotonic time), tried only when every other server failed
    last_error: str | None = None


class Pool:
    """Round-robin with backoff over ``urls``; safe to share between threads."""

    def __init__(self, urls: list[str], clock: Callable[[], float] = time.monotonic):
        if not urls:
            raise ValueError("a pool needs at least one URL")
        if len(set(urls)) != len(urls):
            raise ValueError("a URL appears twice in the pool: %s" % " ".join(urls))
        self.servers = [Server(url) for url in urls]
        self.clock = clock
        self._next = 0
        self._lock = threading.Lock()

    def order(self) -> list[Server]:
        """Every server, in the order to try them for one call: from the next in the rotation, those
        that are up or whose backoff has run out (a probe); then those still down, the one back
        soonest first."""
        with self._lock:
            now = self.clock()
            ready = [s for s in self.servers if not s.failures or s.down_until <= now]
            down = sorted((s for s in self.servers if s.failures and s.down_until > now), key=lambda s: s.down_until)
            # The rotation runs over the servers ready now, so that a server's downtime is shared
            # evenly by the others instead of falling on the one after it.
            start = self._next % len(ready) if ready else 0
            self._next += 1
            return ready[start:] + ready[:start] + down

    def failed(self, server: Server, error: TransportError) -> None:
        """``server`` failed a call: down for the next backoff.  A failure while it is down already
        (a call under way when another one failed, or a last resort) is no news: the backoff doubles
        only for failures once it has run out."""
        with self._lock:
            now = self.clock()
            server.last_error = str(error.cause)
            if server.failures and server.down_until > now:
                return
            server.failures += 1
            server.down_until = now + min(FIRST_BACKOFF * 2 ** (server.failures - 1), MAX_BACKOFF)

    def succeeded(self, server: Server) -> None:
        """``server`` answered: healthy again."""
        with self._lock:
            server.failures, server.down_until, server.last_error = 0, 0.0, None

    def status(self) -> list[dict]:
        """Each server: ``{url, up, failures, down_for, last_error}`` (for people and monitoring)."""
        with self._lock:
            now = self.clock()
            return [{"url": s.url, "up": not s.failures, "failures": s.failures,
                     "down_for": max(0.0, s.down_until - now), "last_error": s.last_error} for s in self.servers]


def retry_pauses() -> Iterator[float]:
    """The pauses between one call's rounds over the servers: growing, each drawn from its upper half."""
    pause = FIRST_PAUSE
    while True:
        yield random.uniform(pause / 2, pause)
        pause = min(2 * pause, MAX_PAUSE)


def may_retry(error: TransportError, idempotent: bool) -> bool:
    """Whether a call that failed with ``error`` may be sent again, to another server or the same one.

    Only if it provably never reached the server (``error.sent`` is False: connection
    refused, TLS handshake or SSH login failed, 503 from the front), or if running it
    twice does no harm (``idempotent``).  A call that may have executed is never sent
    again otherwise: a burn must not start twice because an answer was lost.
    """
    return idempotent or not error.sent
