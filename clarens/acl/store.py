# SPDX-License-Identifier: Apache-2.0
"""The live policy in ``acl.tdb``, and the per-process guard the dispatcher consults.

Records (JSON values, readable with ``tdbdump``):

``entry:TARGET``   an entry (see :meth:`Entry.to_dict`)
``group:NAME``     ``{"members": [...]}``
``meta``           where and when the policy was loaded
``audit:TIME:PID`` one change: ``{"who", "when", "what"}``; the oldest are pruned
                   past a count and an age (:class:`AuditRetention`), in the same transaction

At server start, under the once-per-server lock, the ACL files replace every
entry and group in one transaction.  Live changes (the ``acl`` module, the
command line) are transactions too, each with its audit record.  Every process
keeps the compiled policy and reloads it when the file's sequence number moves,
so a change is enforced by every child at its next call.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from clarens.acl.files import load_dir
from clarens.acl.model import AclError, Decision, Entry, Policy
from clarens.db import Database
from clarens.faults import ACCESS_DENIED, Fault
from clarens.identity import ANONYMOUS, Identity

DB_NAME = "acl"
ENTRY, GROUP, AUDIT, META = "entry:", "group:", "audit:", "meta"


def read_policy(db: Database) -> Policy:
    """The policy as stored (the audit trail beside it is not decoded: every process reads this
    after every change)."""
    entries, groups = {}, {}
    for key, value in db.items((ENTRY, GROUP)):
        if key.startswith(ENTRY):
            entries[key[len(ENTRY):]] = Entry.from_dict(key[len(ENTRY):], value)
        elif key.startswith(GROUP):
            groups[key[len(GROUP):]] = list(value["members"])
    return Policy(entries, groups)


@dataclass(frozen=True)
class AuditRetention:
    """How much of the audit trail is kept: at most ``keep`` records, none older than ``days``
    (``[server] acl_audit_keep`` and ``acl_audit_days``)."""
    keep: int = 1000
    days: int = 365


def _audit(db: Database, who: str, what: dict[str, Any], retention: AuditRetention) -> None:
    """Record a change, and prune what the retention no longer covers (call inside the change's transaction)."""
    now = time.time()
    db.put("%s%017.6f:%d" % (AUDIT, now, os.getpid()), {"who": who, "when": now, "what": what})
    keys = db.keys(AUDIT)           # oldest first: the key starts with the time
    oldest = "%s%017.6f" % (AUDIT, now - retention.days * 86400)
    for key in keys[:max(0, len(keys) - retention.keep)] + [k for k in keys[-retention.keep:] if k < oldest]:
        db.delete(key)


def replace_policy(db: Database, policy: Policy, who: str, origin: str,
                   retention: AuditRetention = AuditRetention()) -> None:
    """Replace every entry and group with ``policy``, in one audited transaction."""
    policy.validate()
    with db.transaction():
        for key in db.keys():
            if key.startswith((ENTRY, GROUP)):
                db.delete(key)
        for target, entry in policy.entries.items():
            db.put(ENTRY + target, entry.to_dict())
        for name, members in policy.groups.items():
            db.put(GROUP + name, {"members": members})
        db.put(META, {"loaded_from": origin, "loaded_at": time.time(), "by": who})
        _audit(db, who, {"action": "load", "from": origin, "entries": len(policy.entries),
                         "groups": len(policy.groups)}, retention)


def load_files(db: Database, acl_dir: str, who: str, retention: AuditRetention = AuditRetention()) -> Policy:
    """Parse and validate the files in ``acl_dir`` and make them the live policy (AclError if broken)."""
    policy = load_dir(acl_dir)
    replace_policy(db, policy, who, os.path.abspath(acl_dir), retention)
    return policy


def change(db: Database, who: str, what: dict[str, Any], edit: Callable[[Policy], None],
           retention: AuditRetention = AuditRetention()) -> None:
    """Apply ``edit`` to the live policy and store the result, in one audited transaction.

    ``edit`` mutates the Policy's ``entries``/``groups``; the result must validate.
    """
    with db.transaction():
        policy = read_policy(db)
        before_entries, before_groups = set(policy.entries), set(policy.groups)
        edit(policy)
        Policy(policy.entries, policy.groups).validate()
        for target in before_entries - set(policy.entries):
            db.delete(ENTRY + target)
        for name in before_groups - set(policy.groups):
            db.delete(GROUP + name)
        for target, entry in policy.entries.items():
            db.put(ENTRY + target, entry.to_dict())
        for name, members in policy.groups.items():
            db.put(GROUP + name, {"members": members})
        _audit(db, who, what, retention)


def audit_log(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    """The most recent audit records, newest last."""
    return [value for _, value in db.items(AUDIT)[-limit:]]


class Guard:
    """This process's view of the policy: identifies groups and authorises calls."""

    def __init__(self, db: Database | None, log: logging.Logger, clock: Callable[[], float] = time.time):
        self.db = db
        self.log = log
        self.clock = clock
        self.broken: str | None = None   # set when the policy could not be loaded: refuse everything
        self._seqnum = -1
        self._policy = Policy({}, {})
        self._identified: dict[int, tuple[Identity, Policy, Identity]] = {}

    def refresh(self) -> Policy:
        """Reload the policy if any process changed it since the last look; the current policy.

        The host calls this once per request, so that a change is enforced from
        every child's next request on; within a request the policy stays put.
        """
        if self.db is None:
            return self._policy
        seqnum = self.db.seqnum
        if seqnum != self._seqnum:
            try:
                self._policy = read_policy(self.db)
            except (AclError, KeyError, TypeError) as e:
                self.log.critical("acl.tdb holds an unusable policy (%s): refusing every call", e)
                self._policy = Policy({}, {})
            # The counter is read without a lock: one seen mid-commit may be rolled back (its
            # committer killed), and a later change may count up to it again.  So it is kept
            # only if it held while the policy was read; otherwise the next look reads again.
            self._seqnum = seqnum if self.db.seqnum == seqnum else -1
        return self._policy

    def identify(self, identity: Identity) -> Identity:
        """At the start of a request: reload the policy if it changed (:meth:`refresh`), then
        ``identity`` with the groups the policy puts it in.  The anonymous caller and a session's
        identity (one object for all its requests: clarens.credentials) are remembered with their
        groups under each policy."""
        policy = self.refresh()
        known = self._identified.get(id(identity))
        if known is not None and known[0] is identity and known[1] is policy:
            return known[2]
        groups = policy.groups_of(identity.name, identity.authenticated)
        grouped = identity if groups == identity.groups else Identity(identity.name, identity.source, groups,
                                                                      identity.session)
        if identity.session is not None or identity is ANONYMOUS:
            if len(self._identified) >= 4096:
                self._identified.clear()
            self._identified[id(identity)] = (identity, policy, grouped)    # (holding it: its id stays its own)
        return grouped

    def decide(self, identity: Identity, method: str) -> Decision:
        """Whether ``identity`` may call ``method``, and why (for explanations: acl.check, the CLI)."""
        if self.broken:
            return Decision(False, None, "the access-control policy failed to load: " + self.broken)
        return self.refresh().decide(identity, method, self.clock())

    def allows(self, identity: Identity, method: str) -> bool:
        """Whether the policy in force lets ``identity`` call ``method`` (the enforcing check, memoised:
        what :meth:`authorise` asks, without building an explanation)."""
        return not self.broken and self._policy.allows(identity, method, self.clock)

    def authorise(self, identity: Identity, method: str) -> None:
        """The dispatcher's authoriser: Fault(ACCESS_DENIED) unless the policy allows the call."""
        if self.broken:
            raise Fault(ACCESS_DENIED, "access denied: the server's access-control policy failed to load "
                                       "(see the server log)")
        if not self._policy.allows(identity, method, self.clock):
            raise Fault(ACCESS_DENIED, "access denied: %s may not call %s" % (identity.name, method))
