# SPDX-License-Identifier: Apache-2.0
"""The burner's refusals as faults, the same for every way in.

The message keeps the refusal's name in front (``"job_not_found: there is no job 7
of yours"``), for people and for clients that read it.  The helper's refusals
arrive as :class:`~clarens.burnerd.client.RequestRefused` and become faults here too.
"""

from __future__ import annotations

from clarens.burnerd.client import RequestRefused
from clarens.faults import APPLICATION_ERROR, INVALID_PARAMS, Fault


def refused(code: str, message: str) -> Fault:
    """The fault for refusal ``code`` with ``message``."""
    return Fault(INVALID_PARAMS, "%s: %s" % (code, message))


def from_helper(e: RequestRefused) -> Fault:
    """The fault for a refusal of the helper's: invalid parameters if it says the request was
    (400, 404), else an application error."""
    return Fault(INVALID_PARAMS if e.status in (400, 404) else APPLICATION_ERROR, "%s: %s" % (e.code, e.message))
