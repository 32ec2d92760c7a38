# SPDX-License-Identifier: Apache-2.0
"""Password guessing throttled before any password is checked, in one table every child shares.

A password check costs about 50 ms of CPU (bcrypt, cost 10), so an attacker who may
ask for as many as he likes takes the host down; a lockout per user would let
anybody lock anybody out.  So attempts are counted per client address and per user
name at an address, in ``db_dir/throttle.tdb`` (every Apache child, and a restarted
Apache, sees the same counts), and:

* an attempt is counted *before* its password is checked (under a lock, so that 32
  connections arriving at once are counted one by one), and a right password gives
  it back: people who sign in are never counted;
* past :data:`FREE_PER_USER` counted attempts for one user name at one address, or
  :data:`FREE_PER_ADDRESS` from one address whatever the names, the next attempt must
  wait :data:`FIRST_DELAY` seconds after the last, twice as long after each further
  one, up to :data:`MAX_DELAY`;
* an attempt that comes sooner is refused without checking anything and without
  being counted (one read of the table: the caller answers 429 with Retry-After);
* a count is forgotten :data:`FORGET` seconds after its last attempt.

The same user name from another address is counted apart, so a flood against one
name never locks its owner out elsewhere.  IPv6 addresses are counted per /64
network, the block one client usually holds.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Callable

from clarens.db import Database

DB_NAME = "throttle"
FREE_PER_USER = 5        # attempts for one user name at one address before the delays start
FREE_PER_ADDRESS = 20    # attempts from one address, whatever the names (a LAN behind one NAT)
FIRST_DELAY = 1.0        # seconds, doubling with each attempt past the free ones ...
MAX_DELAY = 300.0        # ... up to this
FORGET = 3600.0          # seconds after its last attempt that a count is forgotten
PRUNE_EVERY = 600.0      # seconds between two sweeps of forgotten counts


def client_key(address: str) -> str:
    """What one client is: its IPv4 address, or its IPv6 /64 network."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.ip_network(address + "/64", strict=False))
    except ValueError:
        return address


def delay(attempts: int, free: int) -> float:
    """Seconds an attempt must wait after the last of ``attempts`` counted ones."""
    if attempts < free:
        return 0.0
    return min(FIRST_DELAY * 2.0 ** (attempts - free), MAX_DELAY)


class Throttle:
    """The attempt counts of one server, in ``db`` (``db_dir/throttle.tdb``)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time):
        self.db = db
        self.clock = clock

    @staticmethod
    def _keys(address: str, name: str) -> tuple[tuple[str, int], tuple[str, int]]:
        client = client_key(address)
        return ("a:" + client, FREE_PER_ADDRESS), ("u:%s %s" % (client, name), FREE_PER_USER)

    def _wait(self, key: str, free: int, now: float) -> float:
        record = self.db.get(key)
        if record is None or now - record["t"] > FORGET:
            return 0.0
        pause = delay(record["n"], free)
        # No delay is no wait, even for an attempt another process counted after this one read its
        # clock (its time is then later than ``now``): that made a right password a 429.
        return max(0.0, record["t"] + pause - now) if pause else 0.0

    def wait(self, address: str, name: str) -> float:
        """Seconds before ``name`` may try a password from ``address`` (0: now).  Reads only."""
        now = self.clock()
        return max(self._wait(key, free, now) for key, free in self._keys(address, name))

    def attempt(self, address: str, name: str) -> float:
        """Count an attempt of ``name`` from ``address`` if one is allowed now, and return 0; else,
        counting nothing, the seconds to wait.  Call :meth:`succeeded` if the password was right."""
        with self.db.locked():
            now = self.clock()          # under the lock: no attempt counted meanwhile is later than it
            keys = self._keys(address, name)
            wait = max(self._wait(key, free, now) for key, free in keys)
            if wait > 0:
                return wait
            for key, _ in keys:
                record = self.db.get(key)
                fresh = record is None or now - record["t"] > FORGET
                self.db.put(key, {"n": 1 if fresh else record["n"] + 1, "t": now})
            self._prune(now)
        return 0.0

    def succeeded(self, address: str, name: str) -> None:
        """The attempt just counted had the right password: give it back."""
        (address_key, _), (user_key, _) = self._keys(address, name)
        with self.db.locked():
            self.db.delete(user_key)
            record = self.db.get(address_key)
            if record is not None:
                if record["n"] <= 1:
                    self.db.delete(address_key)
                else:
                    self.db.put(address_key, {"n": record["n"] - 1, "t": record["t"]})

    def _prune(self, now: float) -> None:
        """Forget the counts nobody added to for FORGET seconds, at most every PRUNE_EVERY seconds
        (the table grows with the addresses that tried, which come from outside)."""
        last = self.db.get("pruned")
        if last is not None and now - last < PRUNE_EVERY:
            return
        self.db.put("pruned", now)
        for key, record in self.db.items(("a:", "u:")):
            if now - record["t"] > FORGET:
                self.db.delete(key)
