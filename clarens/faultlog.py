"""Logging the faults of a request in proportion to it, not to what an attacker sends.

Every refused or failed call is worth a line in the error log, but a request can
carry thousands of calls (a JSON-RPC batch, a multicall), and an anonymous client
can send thousands of requests: one line each would let anybody fill the disk
(2 MB of denied notifications once added 8.7 MB to the log).  So:

* a request's faults are gathered while it is served (:meth:`CallContext.note_fault
  <clarens.context.CallContext.note_fault>`) and written when it ends, one line per
  fault code: who, from where, how many calls, the first few methods and the first
  message (:func:`lines`);
* identical lines (same caller, address and code) are rate-limited per process
  (:class:`Budget`): past :data:`Budget.BURST` in a minute they are counted, and the
  next line let through says how many were left out.

Log lines are also cut to :data:`MAX_TEXT` characters of caller-controlled text.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from clarens.faults import Fault

MAX_TEXT = 200          # characters of a message or method name a line quotes
FIRST_FEW = 5           # methods named in a line for several calls


def _cut(text: str) -> str:
    text = text.partition("\n")[0]
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def lines(who: str, faults: Iterable[tuple[str, Fault]]) -> list[tuple[int, str]]:
    """(fault code, log line) for each code among a request's ``(method, fault)``, in order of first appearance."""
    by_code: dict[int, list[tuple[str, Fault]]] = {}
    for method, fault in faults:
        by_code.setdefault(fault.code, []).append((method, fault))
    out = []
    for code, items in by_code.items():
        method, first = items[0]
        if len(items) == 1:
            out.append((code, "%s %s: fault %d: %s" % (who, _cut(method), code, _cut(first.message))))
        else:
            names = ", ".join(_cut(m) for m, _ in items[:FIRST_FEW]) + (", ..." if len(items) > FIRST_FEW else "")
            out.append((code, "%s: %d calls got fault %d (%s): %s" % (who, len(items), code, names,
                                                                      _cut(first.message))))
    return out


class Budget:
    """At most BURST identical lines per key per WINDOW seconds in this process; the rest are counted."""

    BURST = 5
    WINDOW = 60.0
    KEYS = 10000              # keys remembered at most (they come from outside)

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._seen: dict[tuple, list] = {}    # key -> [window start, lines let through, lines left out]

    def allow(self, key: tuple) -> tuple[bool, int]:
        """Whether a line for ``key`` may be written now, and how many were left out before it."""
        now = self.clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.WINDOW:
            left_out = entry[2] if entry is not None else 0
            if len(self._seen) >= self.KEYS:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.WINDOW}
                if len(self._seen) >= self.KEYS:   # a flood of distinct keys: forget them all, stay bounded
                    self._seen.clear()
            self._seen[key] = [now, 1, 0]
            return True, left_out
        if entry[1] < self.BURST:
            entry[1] += 1
            return True, 0
        entry[2] += 1
        return False, 0
