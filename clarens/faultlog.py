# SPDX-License-Identifier: Apache-2.0
"""Logging the faults of a request in proportion to it, not to what an attacker sends.

Every refused or failed call is worth a line in the error log, but a request can
carry thousands of calls (a JSON-RPC batch, a multicall), and an anonymous client
can send thousands of requests: one line each would let anybody fill the disk
(2 MB of denied notifications once added 8.7 MB to the log).  So:

* a request's faults are gathered while it is served (:meth:`CallContext.note_fault
  <clarens.context.CallContext.note_fault>`) and written when it ends, one line per
  fault code: who, from where, how many calls, the first few methods and the first
  message (:func:`lines`);
* each line is a refusal of class ``fault CODE``, rate-limited per caller and per
  class across every process of the server, and summarised (:mod:`clarens.refusals`).

Log lines are also cut to :data:`MAX_TEXT` characters of caller-controlled text.
"""

from __future__ import annotations

from typing import Iterable

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
