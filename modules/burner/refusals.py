# SPDX-License-Identifier: Apache-2.0
"""The burner's refusals as faults: each its own code, the same for every way in.

The codes are :data:`clarens.burnerd.errors.FAULTS` (documented in
``docs/clients.md``); the message keeps the refusal's name in front, as it always
had (``"job_not_found: there is no job 7 of yours"``), for people and for clients
that read it.  The helper's refusals arrive as
:class:`~clarens.burnerd.client.RequestRefused` and become faults here too.
"""

from __future__ import annotations

from clarens.burnerd.client import RequestRefused
from clarens.burnerd.errors import FAULTS
from clarens.faults import APPLICATION_ERROR, SERVICE_UNAVAILABLE, Fault

# The helper cannot serve this host now: the caller can only wait (or tell the administrator).
_UNAVAILABLE = {"shutting_down", "forbidden"}


def refused(code: str, message: str) -> Fault:
    """The fault for refusal ``code`` (a key of FAULTS) with ``message``."""
    return Fault(FAULTS[code], "%s: %s" % (code, message))


def from_helper(e: RequestRefused) -> Fault:
    """The fault for a refusal of the helper's: its own code if a caller can act on it; -32002 if
    the helper cannot serve now; -32500 for any other (the web tier and its helper disagree)."""
    if e.code in FAULTS:
        return refused(e.code, e.message)
    if e.code in _UNAVAILABLE:
        return Fault(SERVICE_UNAVAILABLE, "burner unavailable: %s: %s" % (e.code, e.message))
    return Fault(APPLICATION_ERROR, "burner helper error: %s: %s" % (e.code, e.message))
