# SPDX-License-Identifier: Apache-2.0
"""session: the administrators' view of the sessions this host knows (system.auth opens them).

Each session is known by its id (a digest of the token's secret part, never the token
itself).  Revoking ends a session at once on this host, and on the others of a cluster
within the bound docs/scaling.md states.  The shipped policy lets the admin group
alone call these (``<Acl *>``).
"""

from clarens import context
from clarens.faults import INVALID_PARAMS, Fault


def list_sessions(user=""):
    """Return the sessions this host has seen and that have not ended, oldest first, each
    {id, identity, source, issued, expires, seen, address, agent}; only USER's, if given."""
    return context.current().sessions().active(user or None)


def revoke(id):
    """End the session whose id starts with ID (at least 8 characters, naming one session only).
    Returns true if this host knew it (one it does not know is refused: see session.list)."""
    try:
        if not context.current().sessions().revoke(id):
            raise Fault(INVALID_PARAMS, "no session %r on this host (session.list shows them)" % id[:100])
    except ValueError as e:
        raise Fault(INVALID_PARAMS, str(e)) from None
    return True


def revoke_user(user):
    """End every session of identity USER opened until now, on every host.  Returns how many
    of them this host knew of."""
    return context.current().sessions().revoke_user(user)


methods_list = {"list": list_sessions, "revoke": revoke, "revoke_user": revoke_user}
methods_sig = {"list": ["array", "array,string"], "revoke": ["boolean,string"], "revoke_user": ["int,string"]}
