# SPDX-License-Identifier: Apache-2.0
"""Access-control entries, groups, and the decision for one call.

An entry is keyed by a method (``burner.burn``), a module (``burner``) or the
root (``*``).  For a call, the most specific entry that exists *and is in force*
(inside its validity window, if it has one) decides; if none does, the call is
denied.  Within an entry, ``order`` has Apache's meaning:

``allow,deny``
    Allow rules are evaluated, then Deny rules; the default is deny.  The caller
    needs an Allow match and no Deny match.
``deny,allow``
    Deny rules first, then Allow; the default is allow.  The caller is refused
    only on a Deny match without an Allow match.

A pattern is ``anonymous`` (callers who did not authenticate), ``authenticated``
(everyone who did), a DN prefix ending in ``/`` (``/O=Home/`` matches every DN
under it, as in Clarens), or an exact identity (a DN or an Apache user name).
Groups are named lists of such patterns.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from clarens.identity import Identity

ORDERS = ("allow,deny", "deny,allow")
SPECIAL = ("anonymous", "authenticated")
TARGET_RE = re.compile(r"\*\Z|[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)?\Z")
GROUP_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")


# An entry's rules beside its order, by the kind of value each holds: its JSON form (tdb, acl.show,
# acl.set_entry) and the policy digest follow these.  The file format has its own table,
# clarens.acl.files.ACL_DIRECTIVES.
LISTS = ("allow", "deny", "allow_groups", "deny_groups")      # lists of strings
TIMES = ("not_before", "not_after")                          # seconds since the epoch, or None


class AclError(ValueError):
    """A policy that cannot be used; ``where`` says which file and line, if known."""

    def __init__(self, message: str, where: str | None = None):
        super().__init__("%s: %s" % (where, message) if where else message)
        self.where = where


# The ACL files take "#" at the start of a value or after whitespace as a comment: a pattern holding
# one could be stored live but not dumped to a file (clarens.acl.files).
_COMMENT_START = re.compile(r"(^|\s)#")
# Validity windows: what a date in the files can say (years 1-9999, UTC), to the microsecond.
EARLIEST, LATEST = -62135596800.0, 253402300799.0


def validate_pattern(pattern: str) -> str:
    """A pattern as stored: stripped; AclError if empty, with control characters, or with a ``#``
    the ACL files would read as a comment."""
    pattern = pattern.strip()
    if not pattern or any(ord(c) < 32 or c == "\x7f" for c in pattern):
        raise AclError("invalid identity pattern %r" % pattern)
    if _COMMENT_START.search(pattern):
        raise AclError("invalid identity pattern %r: a '#' at its start or after a space would begin a comment "
                       "in an ACL file" % pattern)
    return pattern


def validate_time(name: str, value: float | None) -> float | None:
    """A validity bound as stored (to the microsecond); AclError unless it is a time the ACL files can hold."""
    if value is None:
        return None
    if not math.isfinite(value) or not EARLIEST <= value <= LATEST:
        raise AclError("%s must be between years 1 and 9999 (seconds %d to %d since the epoch), not %r"
                       % (name, EARLIEST, LATEST, value))
    return round(float(value), 6)


class Matcher:
    """A compiled list of patterns (and groups) for fast matching."""

    __slots__ = ("anonymous", "authenticated", "exact", "prefixes", "groups")

    def __init__(self, patterns: Iterable[str], groups: Iterable[str] = ()):
        patterns = list(patterns)
        self.anonymous = "anonymous" in patterns
        self.authenticated = "authenticated" in patterns
        self.exact = frozenset(p for p in patterns if p not in SPECIAL and not p.endswith("/"))
        self.prefixes = tuple(p for p in patterns if p not in SPECIAL and p.endswith("/"))
        self.groups = frozenset(groups)

    def matches(self, identity: Identity) -> str | None:
        """What matched ``identity`` (for explanations), or None."""
        if identity.authenticated:
            if self.authenticated:
                return "authenticated"
            if identity.name in self.exact:
                return identity.name
            for prefix in self.prefixes:
                if identity.name.startswith(prefix):
                    return prefix
        elif self.anonymous:
            return "anonymous"
        for group in identity.groups:
            if group in self.groups:
                return "group " + group
        return None


@dataclass
class Entry:
    """One ACL entry."""
    target: str
    order: str = "allow,deny"
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    allow_groups: list[str] = field(default_factory=list)
    deny_groups: list[str] = field(default_factory=list)
    not_before: float | None = None    # seconds since the epoch, UTC
    not_after: float | None = None
    source: str = ""                   # "acl/default.acl:12", "acl.set_entry by ...": for explanations

    def __post_init__(self) -> None:
        if not TARGET_RE.match(self.target):
            raise AclError("invalid ACL target %r: use *, MODULE or MODULE.METHOD" % self.target)
        if self.order not in ORDERS:
            raise AclError("order must be allow,deny or deny,allow, not %r" % self.order)
        self.allow = [validate_pattern(p) for p in self.allow]
        self.deny = [validate_pattern(p) for p in self.deny]
        for g in self.allow_groups + self.deny_groups:
            if not GROUP_RE.match(g):
                raise AclError("invalid group name %r" % g)
        self.not_before = validate_time("not_before", self.not_before)
        self.not_after = validate_time("not_after", self.not_after)
        if self.not_before is not None and self.not_after is not None and self.not_before > self.not_after:
            raise AclError("not_before is after not_after")
        self._allow = Matcher(self.allow, self.allow_groups)
        self._deny = Matcher(self.deny, self.deny_groups)
        self.timeless = self.not_before is None and self.not_after is None

    def in_force(self, now: float) -> bool:
        return (self.not_before is None or now >= self.not_before) and (self.not_after is None or now <= self.not_after)

    def judge(self, identity: Identity) -> tuple[bool, str | None]:
        """Whether this entry alone lets ``identity`` call, and the pattern (or ``group NAME``) that
        decided it, None where the order's default did: the one evaluation of an entry, which both
        the per-call check (:meth:`Policy.allows`) and the explanations (:meth:`evaluate`) use."""
        if self.order == "allow,deny":      # a Deny match refuses; else an Allow match is needed
            denied = self._deny.matches(identity)
            if denied is not None:
                return False, denied
            allowed = self._allow.matches(identity)
            return allowed is not None, allowed
        allowed = self._allow.matches(identity)     # deny,allow: an Allow match admits; else a Deny refuses
        if allowed is not None:
            return True, allowed
        denied = self._deny.matches(identity)
        return denied is None, denied

    def evaluate(self, identity: Identity) -> tuple[bool, str]:
        """(allowed, why) for ``identity`` under this entry alone: :meth:`judge`, in words."""
        allowed, by = self.judge(identity)
        if by is not None:
            return allowed, ("allowed by %s" if allowed else "denied by %s") % by
        return allowed, ("no deny rule matches (order deny,allow)" if allowed
                         else "no allow rule matches (order allow,deny)")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in tdb and returned by acl.show."""
        out: dict[str, Any] = {"order": self.order, **{key: getattr(self, key) for key in LISTS}}
        out.update((key, getattr(self, key)) for key in TIMES if getattr(self, key) is not None)
        if self.source:
            out["source"] = self.source
        return out

    @classmethod
    def from_dict(cls, target: str, data: dict[str, Any]) -> "Entry":
        """Build from the JSON form (AclError on anything unexpected)."""
        if not isinstance(data, dict):
            raise AclError("an ACL entry must be a struct")
        unknown = set(data) - {"order", "source", *LISTS, *TIMES}
        if unknown:
            raise AclError("unknown ACL entry field(s): %s" % ", ".join(sorted(unknown)))
        rules: dict[str, Any] = {}
        for key in LISTS:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise AclError("%s must be an array of strings" % key)
            rules[key] = list(value)
        for key in TIMES:
            value = rules[key] = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise AclError("%s must be a number of seconds since the epoch" % key)
        return cls(target, data.get("order", "allow,deny"), source=str(data.get("source", "")), **rules)


@dataclass
class Decision:
    """The outcome of an access check, with its explanation."""
    allowed: bool
    entry: str | None     # the target of the deciding entry, None if none covered the method
    reason: str

    def describe(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "entry": self.entry or "", "reason": self.reason}


class Policy:
    """Entries and groups, compiled for fast decisions."""

    def __init__(self, entries: dict[str, Entry], groups: dict[str, list[str]]):
        self.entries = entries
        self.groups = groups
        self._members = {name: Matcher(members) for name, members in groups.items()}
        # Memos, per policy version (a change makes a new Policy).  Measured in-process on the
        # echo call with the ACL check (bench.profile, 4.6 us per request), they save 0.7 us
        # (groups) and 0.4 us (decisions); inside an Apache child such savings are 3-5x larger.
        self._groups_of: dict[tuple[str, bool], tuple[str, ...]] = {}
        self._allowed: dict[tuple[str, str, str], bool] = {}   # decisions that do not depend on the time
        self._digest: str | None = None

    def canonical(self) -> dict[str, Any]:
        """What decides calls, and nothing else: every entry's rules and every group's members, as
        sets (their order and repeats decide nothing), without where an entry came from."""
        def rules(entry: Entry) -> dict[str, Any]:
            return {"order": entry.order, **{key: sorted(set(getattr(entry, key))) for key in LISTS},
                    **{key: getattr(entry, key) for key in TIMES}}
        return {"entries": {target: rules(e) for target, e in self.entries.items()},
                "groups": {name: sorted(set(members)) for name, members in self.groups.items()}}

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`canonical`: equal on two hosts exactly when their policies decide
        alike, so a host whose policy differs from the others' shows (system.serverInfo, the health
        check).  Computed once per policy version."""
        if self._digest is None:
            text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            self._digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self._digest

    def validate(self) -> None:
        """AclError if an entry names a group that does not exist."""
        for entry in self.entries.values():
            for group in entry.allow_groups + entry.deny_groups:
                if group not in self.groups:
                    raise AclError("entry %s names undefined group %r" % (entry.target, group), entry.source or None)

    def groups_of(self, name: str, authenticated: bool) -> tuple[str, ...]:
        """The groups an identity belongs to (memoised per policy)."""
        key = (name, authenticated)
        groups = self._groups_of.get(key)
        if groups is None:
            probe = Identity(name, "acl" if authenticated else "anonymous")
            groups = tuple(sorted(g for g, m in self._members.items() if m.matches(probe)))
            if len(self._groups_of) < 10000:   # bounded: identities come from outside
                self._groups_of[key] = groups
        return groups

    def _deciding(self, method: str, clock: Callable[[], float]) -> tuple[Entry | None, bool]:
        """The entry that decides for ``method`` now: the most specific of ``method``, its module and
        ``*`` that is in force (the clock is read only for windowed entries), or None; and whether
        the answer holds at any time (no entry looked at has a validity window)."""
        entries = self.entries
        timeless = True
        for key in (method, method.partition(".")[0], "*"):
            entry = entries.get(key)
            if entry is not None:
                timeless = timeless and entry.timeless
                if entry.timeless or entry.in_force(clock()):
                    return entry, timeless
        return None, timeless

    def allows(self, identity: Identity, method: str, clock: Callable[[], float]) -> bool:
        """Whether ``identity`` may call ``method`` now: :meth:`decide` without the explanation (the
        per-call check).  Memoised per identity and method unless an entry with a validity window
        took part."""
        key = (identity.name, identity.source, method)
        known = self._allowed.get(key)
        if known is not None:
            return known
        entry, timeless = self._deciding(method, clock)
        allowed = entry is not None and entry.judge(identity)[0]
        if timeless and len(self._allowed) < 10000:   # bounded: identities come from outside
            self._allowed[key] = allowed
        return allowed

    def decide(self, identity: Identity, method: str, now: float) -> Decision:
        """Whether ``identity`` may call ``method`` at time ``now``, and why."""
        entry, _ = self._deciding(method, lambda: now)
        if entry is None:
            return Decision(False, None, "no ACL entry in force covers %s" % method)
        allowed, why = entry.evaluate(identity)
        return Decision(allowed, entry.target, "%s (entry %s%s)" % (
            why, entry.target, ", " + entry.source if entry.source else ""))
