# SPDX-License-Identifier: Apache-2.0
"""echo: return what you send, for testing clients and the transport."""

from clarens import SIGNATURE_TYPES


def echo(value):
    """Return VALUE unchanged.  Any XML-RPC type: string, int, boolean, double,
    dateTime.iso8601, base64, array, struct or nil."""
    return value


methods_list = {"echo": echo}
methods_sig = {"echo": ["%s,%s" % (t, t) for t in SIGNATURE_TYPES]}
