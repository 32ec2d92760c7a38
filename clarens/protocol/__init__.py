# SPDX-License-Identifier: Apache-2.0
"""Wire protocols: each decodes a request into calls for the dispatcher and encodes the answers.

Both codecs (:mod:`~clarens.protocol.xmlrpc`, :mod:`~clarens.protocol.jsonrpc`) have
the same shape: ``PROTOCOL``, ``CONTENT_TYPE``, ``respond(body, call, report, limits)``
and ``dumps_fault(fault)``.  What they share lives here: the types of ``call`` and
``report``, the limits on what one request may cost to decode, and how a multicall
keeps the results it can encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from clarens.faults import INTERNAL_ERROR, Fault


@dataclass(frozen=True)
class Limits:
    """What decoding one request may cost, whatever the body's size allows ([server] settings).

    A body of 9 MB can hold a struct of 180,000 members, which costs far more to
    decode than 9 MB of text: past these bounds a request is refused early.
    """
    depth: int = 64            # nesting of arrays/structs
    items: int = 10000         # members of one array or struct
    values: int = 100000       # values in the whole request
    base64: int = 10485760     # bytes of one base64 value, encoded


DEFAULT_LIMITS = Limits()

Call = Callable[[str, Any], Any]   # (method, params) -> result, raising Fault (and logging it)
Report = Callable[[Fault], None]   # told of each fault the dispatcher never saw


def salvage_multicall(results: list, encodable: Callable[[Any], bool], report: Report) -> list:
    """system.multicall's results, each one this protocol cannot encode replaced by its fault (reported):
    one such result fails that call alone, the others keep theirs."""
    out = []
    for index, result in enumerate(results):
        if encodable(result):
            out.append(result)
        else:
            fault = Fault(INTERNAL_ERROR, "the result of multicall element %d cannot be encoded" % index)
            report(fault)
            out.append(fault.as_struct())
    return out
