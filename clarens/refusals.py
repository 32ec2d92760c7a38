# SPDX-License-Identifier: Apache-2.0
"""Refused requests, logged in proportion to the server, not to what attackers send.

Every refusal (a denied call, credentials refused, a request line that is not
UTF-8, an upload refused...) is worth a line in the error log, but anybody can
send thousands a second, from one address or from hundreds, to any of Apache's
children: a budget per process and per address let 400 addresses write a line
each in every child.  So refusals are counted in one table shared by all the
processes of a server (:class:`RefusalLog`, a small file in ``db_dir`` mapped in
memory, under an ``flock``), by *class* (what was refused: ``credentials``,
``fault -32001``...) and by wall-clock interval (:data:`INTERVAL` seconds, the same
for every process):

* in an interval, a class writes at most ``lines`` lines (``[server] log_lines``,
  :data:`LINES` by default), and one *key* of it (by default the client's address)
  a quarter of that;
* an authenticated caller (the key then names it) is accountable and has a budget
  of its own, beside the class's: a flood of anonymous refusals does not hide its
  lines (up to :data:`OWN_KEYS` such callers an interval; more share the class's);
* the rest are only counted, with the addresses that sent the most (a bounded
  table, :data:`TOP` entries: the heavy hitters are exact enough, the rest lumped
  together);
* once the interval is over, a class that had more refusals than lines gets one
  summary line: how many, how many were logged, and from where.

A class is any short name a caller chooses; the table holds :data:`CLASSES` of
them, and any beyond fold into ``other``.  A process that cannot open the shared
file (another user's ``db_dir``) keeps the same table in its own memory, and says so once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import mmap
import os
import struct
import threading
import time
from typing import Callable

FILE_NAME = "refusals.counters"   # in db_dir
INTERVAL = 60           # seconds: budgets and summaries are per interval of the wall clock ([server] log_interval)
LINES = 20              # lines a class may write per interval, over all processes ([server] log_lines)
OWN_KEYS = 64           # authenticated callers with a budget of their own, per class and interval
KEYS = 100              # other keys whose lines are counted, per class and interval
TOP = 16                # addresses counted per class and interval
CLASSES = 64            # classes the table holds; more fold into OTHER
OTHER = "other"
TICK = 5.0              # seconds between two looks for summaries due, per process
NAME_BYTES = 48
MAX_NAME = 40           # characters of a class name kept
MAX_ADDRESS = 64        # characters of an address kept

_MAGIC = b"clarens refusal counters 1\n"
_SLOT = 8192                                   # bytes per class: name, interval, length, JSON state
_HEAD = struct.Struct("=%dsqI" % NAME_BYTES)   # name, interval number, length of the JSON after it
_SIZE = _SLOT * (CLASSES + 1)                  # slot 0 is the header


class RefusalLog:
    """Refusals of every process of one server, counted in the file at ``path`` (None: this process only)."""

    def __init__(self, path: str | None, log: logging.Logger, interval: int = INTERVAL, lines: int = LINES,
                 clock: Callable[[], float] = time.time):
        self.path = path
        self.log = log
        self.interval = interval
        self.class_lines = lines                   # per class and interval
        self.key_lines = max(1, lines // 4)        # per key (an address, an authenticated caller)
        self.clock = clock
        self._lock = threading.Lock()        # flock does not exclude threads of one process
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._pid = 0
        self._slots: dict[str, int] = {}     # class -> slot, as found in the table
        self._next_tick = 0.0

    # -- the public API ---------------------------------------------------------------------------

    def refuse(self, cls: str, address: str, line: str, key: str | None = None, caller: str | None = None,
               level: int = logging.WARNING) -> bool:
        """Count a refusal of class ``cls`` from ``address`` and write ``line`` if it is within the
        budgets: ``caller``'s own, for an authenticated caller; else the class's and ``key``'s
        (default: the address).  Whether it was written.  Nothing is counted at a level the log
        leaves out."""
        if not self.log.isEnabledFor(level):
            return False
        now = self.clock()
        with self._locked() as table:
            index = self._slot(table, cls)
            due = self._roll(table, index, now)
            state = _read(table, index)
            written = self._count(state, address, _digest(caller if caller is not None else key or address),
                                  caller is not None)
            _write(table, index, state)
        self._summarise(due)
        if written:
            self.log.log(level, "%s", line)
        return written

    def tick(self) -> None:
        """Write the summaries whose interval is over, if a look at the shared table is due
        (:meth:`due`)."""
        if self.due():
            self.flush()

    def due(self) -> bool:
        """Whether this process should look at the shared table for summaries now: once every
        :data:`TICK` seconds (a look said due is counted as taken; :meth:`flush` takes it).  Ask
        after every request: it reads only the clock."""
        now = time.monotonic()
        if now < self._next_tick:
            return False
        self._next_tick = now + TICK
        return True

    def flush(self) -> None:
        """Write every summary whose interval is over, now."""
        now = self.clock()
        due = []
        with self._locked() as table:
            for index in range(1, CLASSES + 1):
                due += self._roll(table, index, now)
        self._summarise(due)

    def counts(self) -> dict[str, dict]:
        """Each class's counts in its current interval: ``{class: {refused, logged, top}}``."""
        out = {}
        with self._locked() as table:
            for index in range(1, CLASSES + 1):
                name, _, length = _HEAD.unpack_from(table, index * _SLOT)
                if length:
                    state = _read(table, index)
                    out[_name(name)] = {"refused": state["n"], "logged": state["l"],
                                        "top": {a: n for a, (n, _) in state["a"].items()}}
        return out

    # -- the shared table ---------------------------------------------------------------------------

    def _locked(self):
        return _Held(self)

    def _open(self) -> mmap.mmap:
        """The table of this process (opened again after a fork: flock is per open file)."""
        if self._map is not None and self._pid == os.getpid():
            return self._map
        self._close()
        self._pid = os.getpid()
        if self.path is not None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if os.fstat(fd).st_size != _SIZE:
                        os.ftruncate(fd, 0)
                        os.ftruncate(fd, _SIZE)
                    table = mmap.mmap(fd, _SIZE)
                    if table[:len(_MAGIC)] != _MAGIC:     # new, or another layout: start afresh
                        table[:] = bytes(_SIZE)
                        table[:len(_MAGIC)] = _MAGIC
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd, self._map = fd, table
                return table
            except OSError as e:
                self.log.warning("refusal counters are this process's own: %s: %s", self.path, e.strerror)
                self.path = None
        self._map = mmap.mmap(-1, _SIZE)
        return self._map

    def _close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._fd >= 0:
            os.close(self._fd)
        self._map, self._fd, self._slots = None, -1, {}

    def _slot(self, table: mmap.mmap, cls: str) -> int:
        """The slot of class ``cls``, claimed if it has none (OTHER's when the table is full)."""
        name = cls[:MAX_NAME].encode("utf-8", "replace")[:NAME_BYTES]
        index = self._slots.get(cls)
        if index is not None and table[index * _SLOT:index * _SLOT + NAME_BYTES].rstrip(b"\0") == name:
            return index
        free = None
        for index in range(1, CLASSES + 1):
            held = table[index * _SLOT:index * _SLOT + NAME_BYTES].rstrip(b"\0")
            if held == name:
                if len(self._slots) < CLASSES:
                    self._slots[cls] = index
                return index
            if not held and free is None:
                free = index
        if free is None or (free == CLASSES and cls != OTHER):   # the last slot is kept for OTHER
            return self._slot(table, OTHER)
        _HEAD.pack_into(table, free * _SLOT, name, 0, 0)
        return free

    def _roll(self, table: mmap.mmap, index: int, now: float) -> list[tuple[str, int, dict]]:
        """Start slot ``index`` on the current interval if its own is over; the summary due, if any."""
        name, interval, length = _HEAD.unpack_from(table, index * _SLOT)
        current = int(now // self.interval)
        if interval == current:
            return []
        state = _read(table, index) if length else None
        _HEAD.pack_into(table, index * _SLOT, name, current, 0)
        if state is None or state["n"] <= state["l"]:
            return []
        return [(_name(name), interval, state)]

    def _summarise(self, due: list[tuple[str, int, dict]]) -> None:
        for cls, interval, state in due:
            # What each address surely sent (its count less what it inherited), if more than once.
            sure = sorted(((a, n - e) for a, (n, e) in state["a"].items() if n - e > 1), key=lambda kv: -kv[1])[:5]
            others = state["n"] - sum(n for _, n in sure)
            began = time.strftime("%H:%M:%S", time.gmtime(interval * self.interval))
            self.log.warning("refused (%s): %d in the %d s from %s UTC, %d logged; %s", cls, state["n"],
                             self.interval, began, state["l"],
                             "most from %s, others %d" % (", ".join("%s (%d)" % kv for kv in sure), others)
                             if sure else "from many addresses, none more than once")


    def _count(self, state: dict, address: str, key: str, own: bool) -> bool:
        """Count one refusal in ``state``; whether its line may be written (``own``: the key has a
        budget of its own, if there is room for it)."""
        state["n"] += 1
        addresses = state["a"]          # address -> [count, how much of it was inherited]
        address = address[:MAX_ADDRESS]
        if address in addresses:
            addresses[address][0] += 1
        elif len(addresses) < TOP:
            addresses[address] = [1, 0]
        else:   # "space saving": the least counted makes room, and the newcomer inherits its count
            least = min(addresses, key=lambda a: addresses[a][0])
            inherited = addresses.pop(least)[0]
            addresses[address] = [inherited + 1, inherited]
        owners = state["o"]
        if own and (key in owners or len(owners) < OWN_KEYS):
            if owners.get(key, 0) >= self.key_lines:
                return False
            owners[key] = owners.get(key, 0) + 1
        else:
            keys = state["k"]
            if state["c"] >= self.class_lines or keys.get(key, 0) >= self.key_lines:
                return False
            if key in keys or len(keys) < KEYS:      # only keys that wrote a line, KEYS at most
                keys[key] = keys.get(key, 0) + 1
            state["c"] += 1
        state["l"] += 1
        return True


class _Held:
    """The table, exclusively: this process's threads and every other process wait."""

    def __init__(self, owner: RefusalLog):
        self.owner = owner

    def __enter__(self) -> mmap.mmap:
        self.owner._lock.acquire()
        try:
            table = self.owner._open()
            if self.owner._fd >= 0:
                fcntl.flock(self.owner._fd, fcntl.LOCK_EX)
        except BaseException:
            self.owner._lock.release()
            raise
        return table

    def __exit__(self, *exc) -> None:
        try:
            if self.owner._fd >= 0:
                fcntl.flock(self.owner._fd, fcntl.LOCK_UN)
        finally:
            self.owner._lock.release()


def _name(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def _digest(key: str) -> str:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _read(table: mmap.mmap, index: int) -> dict:
    """A slot's state for its interval: refused ``n``, logged ``l`` (``c`` of them in the class's budget),
    lines per key ``k`` and per authenticated caller ``o``, top addresses ``a``.
    A slot a process left half-written when it died reads as empty."""
    _, _, length = _HEAD.unpack_from(table, index * _SLOT)
    if length:
        start = index * _SLOT + _HEAD.size
        try:
            state = json.loads(table[start:start + length])
            if isinstance(state, dict) and {"n", "l", "c", "k", "o", "a"} <= state.keys():
                return state
        except ValueError:
            pass
    return {"n": 0, "l": 0, "c": 0, "k": {}, "o": {}, "a": {}}


def _write(table: mmap.mmap, index: int, state: dict) -> None:
    data = json.dumps(state, separators=(",", ":")).encode("utf-8")
    if len(data) > _SLOT - _HEAD.size:     # cannot happen within the bounds above; never overflow anyway
        state["a"] = {}
        data = json.dumps(state, separators=(",", ":")).encode("utf-8")
    start = index * _SLOT + _HEAD.size
    table[start:start + len(data)] = data
    name, interval, _ = _HEAD.unpack_from(table, index * _SLOT)
    _HEAD.pack_into(table, index * _SLOT, name, interval, len(data))
