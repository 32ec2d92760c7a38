# SPDX-License-Identifier: Apache-2.0
"""Passwords, checked by the host against the htpasswd file ``clarens-admin`` keeps.

Apache's ``mod_auth_basic`` ran bcrypt (about 50 ms of CPU) for every request that
carried a password, before the host could throttle anything, and handed the user
name on decoded as Latin-1.  The host reads the same file itself instead
(``[server] htpasswd``, one ``NAME:HASH`` a line, UTF-8), so that:

* :mod:`clarens.throttle` decides before any check runs (the caller's business, see
  :mod:`clarens.credentials`);
* a name is UTF-8 end to end, and compared in Unicode normal form C (``ä`` typed as
  one character or as ``a`` and a combining mark is the same user);
* a client sending its password with every request (``xmlrpc.client`` with
  ``user:password@`` in the URL, curl) pays bcrypt once per host every
  :data:`REMEMBER` seconds, not at every request:

  - each process remembers, for the last :data:`REMEMBERED` users it checked, a keyed
    digest of the password that matched (HMAC-SHA256 under a key that never leaves the
    process's memory) with the hash it matched: microseconds;
  - and the host remembers it in ``db_dir/checked.tdb`` (mode 0600), as PBKDF2-SHA256
    of the password salted with the hash it matched (:data:`SHARED_ROUNDS` rounds,
    about 2 ms), so that a child that has not checked it yet does not run bcrypt
    again: remembered per process only, a burst of calls at a start, spread over a
    hundred children, queued a hundred bcrypts behind the host's one or two turns and
    was refused (503).  A check waiting for its turn looks again when it gets it, so
    calls arriving at once run bcrypt once.  Whoever reads that file (the server's
    user, who can read the htpasswd file too) can guess the passwords of users who
    signed in during the last :data:`REMEMBER` seconds about 25 times faster than
    from their bcrypt hashes: the price of not running bcrypt a hundred times;

  a changed password (a new hash) is checked again;
* at most :data:`CHECKS_AT_ONCE` checks run at once on the whole host (a ``flock`` on
  one of that many files), whatever the throttle lets through from many addresses:
  the rest wait for a turn, :data:`TURN_WAIT` seconds at most.

Only bcrypt hashes (``$2y$``, ``$2a$``, ``$2b$``: what ``clarens-admin`` and
``htpasswd -B`` write) are accepted; a user whose entry holds another kind is
refused, and the log says to set the password again.  An unknown user costs a check
against a dummy hash like a known one, so that timing does not tell which names exist.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator

import bcrypt

from clarens.db import Database
from clarens.identity import normal_name

BCRYPT_PREFIXES = (b"$2y$", b"$2a$", b"$2b$")
REMEMBER = 300.0         # seconds a process trusts a password it checked, without checking it again
REMEMBERED = 256         # users a process remembers at most
SHARED_ROUNDS = 5000     # PBKDF2-SHA256 rounds of a password the host remembers (about 2 ms, bcrypt's 50 ms)
DB_NAME = "checked"      # the table of passwords the host remembers
CHECKS_AT_ONCE = max(1, (os.cpu_count() or 2) // 2)   # bcrypt checks running at once on the whole host
TURN_WAIT = 5.0          # seconds a check waits for its turn before giving up (BusyError)
# What an unknown user's password is checked against (never accepted, whatever it is): a bcrypt hash at
# the cost clarens-admin uses, so that an unknown name costs what a known one does.
_DUMMY = b"$2b$10$nNVKDDpVug9tQjY41XNzpuWtwmojFRbJZf5bgjbLTH.w8tcR/jXBG"

RIGHT, WRONG, UNUSABLE = "right", "wrong", "unusable"   # the outcomes of a check


class BusyError(Exception):
    """Every turn stayed taken for as long as the taker would wait."""


class Htpasswd:
    """The entries of an htpasswd file, read again whenever the file changes (one ``stat`` a look)."""

    def __init__(self, path: str):
        self.path = path
        self._stamp: tuple | None = None
        self._entries: dict[str, bytes] = {}

    def entry(self, name: str) -> bytes | None:
        """The hash stored for user ``name`` (normal form C), or None if there is no such user."""
        try:
            st = os.stat(self.path)
        except OSError:
            self._stamp, self._entries = None, {}
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._entries = _parse(self.path)
            self._stamp = stamp
        return self._entries.get(name)


def _parse(path: str) -> dict[str, bytes]:
    entries = {}
    try:
        with open(path, "rb") as f:
            for line in f:
                name, sep, hashed = line.rstrip(b"\r\n").partition(b":")
                if sep and name:
                    try:
                        entries[normal_name(name.decode("utf-8"))] = hashed
                    except UnicodeDecodeError:
                        continue   # not a name anybody can send: clarens-admin writes UTF-8
    except OSError:
        pass
    return entries


class Turns:
    """At most ``count`` holders at once on the whole host: a ``flock`` on one of ``count`` files in
    ``directory`` (kept open by each process that uses them; the kernel drops a dead holder's)."""

    def __init__(self, directory: str, name: str, count: int, wait: float = 0.0):
        self.paths = [os.path.join(directory, "%s-%d.lock" % (name, n)) for n in range(count)]
        self.wait = wait
        self._fds: list[int] = []

    def take(self) -> int:
        """A turn, to :meth:`give_back`; BusyError if none came free within ``wait`` seconds."""
        if not self._fds:
            self._fds = [os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600) for p in self.paths]
        deadline = time.monotonic() + self.wait
        while True:
            for fd in self._fds:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    pass
            if time.monotonic() >= deadline:
                raise BusyError("all %d turns are taken: try again in a moment" % len(self._fds))
            time.sleep(0.01)

    @staticmethod
    def give_back(turn: int) -> None:
        fcntl.flock(turn, fcntl.LOCK_UN)


class Checker:
    """Checks passwords against an :class:`Htpasswd`, remembering recent right ones in the process and,
    given a ``shared`` table, on the whole host (see the module).  ``clock`` measures the process's
    memory, ``wall`` the host's (a table outlives processes and restarts)."""

    def __init__(self, htpasswd: Htpasswd, turns: Turns, clock: Callable[[], float] = time.monotonic,
                 shared: Database | None = None, wall: Callable[[], float] = time.time):
        self.htpasswd = htpasswd
        self.turns = turns
        self.clock = clock
        self.shared = shared
        self.wall = wall
        self._key = secrets.token_bytes(32)                 # this process's, never stored
        self._remembered: OrderedDict[str, tuple[bytes, bytes, float]] = OrderedDict()
        self._derivation: tuple[bytes, bytes] = (b"", b"")  # (local digest, PBKDF2) of the last password derived
        self.checks = 0                                      # bcrypt runs in this process (for tests)

    def _digest(self, hashed: bytes, password: bytes) -> bytes:
        return hmac.new(self._key, hashed + b"\0" + password, hashlib.sha256).digest()

    def _derived(self, hashed: bytes, password: bytes) -> bytes:
        """The PBKDF2 digest the host remembers ``password`` by, salted with the ``hashed`` it matched;
        derived once for the password a request carries, however often it is asked for."""
        digest = self._digest(hashed, password)
        if not hmac.compare_digest(self._derivation[0], digest):
            self._derivation = (digest, hashlib.pbkdf2_hmac("sha256", password, hashed, SHARED_ROUNDS))
        return self._derivation[1]

    def remembered(self, name: str, password: bytes) -> bool:
        """Whether ``password`` is one found right for ``name`` lately, against the user's current entry:
        by this process (microseconds), or by another of the host's (one PBKDF2, only if the host
        remembers a password for ``name``); no bcrypt."""
        known = self._remembered.get(name)
        if known is not None:
            hashed, digest, until = known
            if self.clock() <= until and self.htpasswd.entry(name) == hashed:
                return hmac.compare_digest(digest, self._digest(hashed, password))
            del self._remembered[name]
        return self._recalled(name, password)

    def _recalled(self, name: str, password: bytes) -> bool:
        """Whether the host remembers ``password`` as right for ``name``; if so, so does this process."""
        if self.shared is None:
            return False
        try:
            derived, until = self.shared.get(name)
            derived, left = bytes.fromhex(derived), float(until) - self.wall()
        except (TypeError, ValueError):    # none, or not an entry this module wrote
            return False
        hashed = self.htpasswd.entry(name)
        if left <= 0 or hashed is None or not hmac.compare_digest(derived, self._derived(hashed, password)):
            return False
        self._remember(name, hashed, password, self.clock() + min(left, REMEMBER))
        return True

    def _remember(self, name: str, hashed: bytes, password: bytes, until: float) -> None:
        self._remembered[name] = (hashed, self._digest(hashed, password), until)
        self._remembered.move_to_end(name)
        while len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)

    def _share(self, name: str, hashed: bytes, password: bytes) -> None:
        """Remember ``password`` as right for ``name`` on the whole host, forgetting the expired ones
        (the table holds one entry per user at most)."""
        if self.shared is None:
            return
        now = self.wall()
        with self.shared.transaction() as table:
            for other, entry in table.items():
                if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], (int, float)) \
                        or entry[1] <= now:
                    table.delete(other)
            table.put(name, [self._derived(hashed, password).hex(), now + REMEMBER])

    @contextmanager
    def turn(self) -> Iterator[None]:
        """One of the host's few turns to run bcrypt in, for the block (BusyError if none came)."""
        turn = self.turns.take()
        try:
            yield
        finally:
            self.turns.give_back(turn)

    def check(self, name: str, password: bytes) -> str:
        """:meth:`verify`, in a turn of its own."""
        with self.turn():
            return self.verify(name, password)

    def verify(self, name: str, password: bytes) -> str:
        """RIGHT, WRONG (or no such user) or UNUSABLE (the entry is not a bcrypt hash), by bcrypt.
        Call it in a :meth:`turn`."""
        hashed = self.htpasswd.entry(name)
        usable = hashed is not None and hashed.startswith(BCRYPT_PREFIXES)
        if b"\0" in password:
            return WRONG              # bcrypt refuses it, and no htpasswd entry can hold one
        self.checks += 1
        try:
            right = bcrypt.checkpw(password, hashed if usable and hashed else _DUMMY) and usable
        except ValueError:            # a malformed bcrypt hash
            right, usable = False, False
        if hashed is not None and not usable:
            return UNUSABLE
        if not right:
            return WRONG
        assert hashed is not None
        self._remember(name, hashed, password, self.clock() + REMEMBER)
        self._share(name, hashed, password)
        return RIGHT
