# SPDX-License-Identifier: Apache-2.0
"""acl: inspect and change the access-control policy (admins only by default).

Changes take effect at once in every Apache child, and last until the next
server start reloads the ACL files; ``python3 -m clarens.acl dump`` writes the
live policy back in the file format.  Every change is audited (who, when, what).

In cluster mode (``[server] cluster = on``) the ACL files, deployed to every host,
are the only source of the policy, and changes through this module are refused:
a change made on one host would make it differ from the others.
"""

from clarens import context
from clarens.acl import store
from clarens.acl.model import GROUP_RE, AclError, Entry, validate_pattern
from clarens.faults import INVALID_PARAMS, READ_ONLY, Fault
from clarens.identity import ANONYMOUS, Identity

_db = None
_retention = store.AuditRetention()
_cluster = False
CLUSTER_REFUSAL = ("read-only: this host is one of a cluster ([server] cluster = on): its policy is the ACL "
                   "files, the same on every host, so live changes are refused; change the files and deploy them "
                   "to every host (see docs/scaling.md)")


def _startup_init(config, dbs, log):
    global _db, _retention, _cluster
    _db = dbs.open(store.DB_NAME)
    _retention = store.AuditRetention(config.get_int("acl_audit_keep"), config.get_int("acl_audit_days"))
    _cluster = config.get_bool("cluster")


def _policy():
    policy = context.current().policy()
    if policy is None:
        raise Fault(INVALID_PARAMS, "access control is off on this server (access_control = off)")
    return policy


def _writable():
    """Fault READ_ONLY unless live changes are allowed here (they are not in cluster mode)."""
    if _cluster:
        raise Fault(READ_ONLY, CLUSTER_REFUSAL)


def _change(what, edit):
    who = context.current().identity.name
    try:
        store.change(_db, who, what, edit, _retention)
    except AclError as e:
        raise Fault(INVALID_PARAMS, str(e)) from None
    return True


def show():
    """Return the live policy: {entries: {target: entry}, groups: {name: [members]}}.  An entry is
    {order, allow, deny, allow_groups, deny_groups, not_before?, not_after?, source}."""
    policy = _policy()
    return {"entries": {t: e.to_dict() for t, e in policy.entries.items()}, "groups": dict(policy.groups)}


def check(identity, method):
    """Explain whether IDENTITY (a DN, a user name, or "anonymous") may call METHOD now: returns
    {allowed, entry, reason, groups}, naming the entry that decided and why."""
    _policy()
    who = ANONYMOUS if identity == "anonymous" else Identity(identity, "acl.check")
    return context.current().explain(method, who)


def set_entry(target, entry):
    """Create or replace the entry for TARGET (*, MODULE or MODULE.METHOD).  ENTRY is a struct
    {order: "allow,deny"|"deny,allow", allow: [patterns], deny: [patterns], allow_groups: [names],
    deny_groups: [names], not_before: seconds, not_after: seconds}; every field is optional.
    Groups must exist.  Returns true.  Refused in cluster mode (the policy is the deployed files)."""
    _writable()
    try:
        new = Entry.from_dict(target, dict(entry, source="acl.set_entry by %s" % context.current().identity.name))
    except AclError as e:
        raise Fault(INVALID_PARAMS, str(e)) from None
    return _change({"action": "set_entry", "target": target, "entry": new.to_dict()},
                   lambda policy: policy.entries.__setitem__(target, new))


def delete_entry(target):
    """Delete the entry for TARGET.  Returns true; a fault if there is none.  Refused in cluster mode."""
    _writable()

    def edit(policy):
        if target not in policy.entries:
            raise AclError("there is no entry for %r" % target)
        del policy.entries[target]
    return _change({"action": "delete_entry", "target": target}, edit)


def set_group(name, members):
    """Set the members (identity patterns) of group NAME, creating it if needed.  An empty list
    deletes the group, which must then not be named by any entry.  Returns true.  Refused in cluster
    mode."""
    _writable()
    if not GROUP_RE.match(name):
        raise Fault(INVALID_PARAMS, "invalid group name %r" % name)
    if not all(isinstance(m, str) for m in members):
        raise Fault(INVALID_PARAMS, "members must be identity patterns (strings)")
    try:
        members = [validate_pattern(m) for m in members]
    except AclError as e:
        raise Fault(INVALID_PARAMS, str(e)) from None

    def edit(policy):
        if members:
            policy.groups[name] = members
        elif policy.groups.pop(name, None) is None:
            raise AclError("there is no group %r" % name)
    return _change({"action": "set_group", "group": name, "members": members}, edit)


def audit(limit):
    """Return the LIMIT most recent policy changes, oldest first: [{who, when, what}]."""
    return store.audit_log(_db, max(0, min(limit, 1000)))


methods_list = {"show": show, "check": check, "set_entry": set_entry, "delete_entry": delete_entry,
                "set_group": set_group, "audit": audit}
methods_sig = {
    "show": ["struct"],
    "check": ["struct,string,string"],
    "set_entry": ["boolean,string,struct"],
    "delete_entry": ["boolean,string"],
    "set_group": ["boolean,string,array"],
    "audit": ["array,int"],
}
