"""The ACL file format: parse ``acl/*.acl`` into a Policy, and write a Policy back.

The syntax follows Apache's own configuration, one directive per line::

    # Groups: lists of identity patterns.  A group may be opened in several
    # blocks (and files); its members add up.
    <Group admins>
        Member /C=UK/O=Clarens Demo/CN=Demo Administrator
        Member admin
    </Group>

    # An entry for a method, a module, or * (every method).
    <Acl burner>
        Order allow,deny          # or deny,allow (Apache's meaning); default allow,deny
        Allow authenticated       # a pattern: anonymous, authenticated, a DN prefix ending
        Allow /O=Clarens Demo/    #   in "/", or an exact DN or user name (rest of the line)
        Deny /O=Clarens Demo/CN=Mallory
        AllowGroup users
        DenyGroup suspended
        NotBefore 2026-01-01              # optional validity window: ISO 8601, UTC unless
        NotAfter 2026-12-31T23:59:59Z     #   an offset is given; a date alone is midnight
    </Acl>

Directive names are case-insensitive.  ``#`` starts a comment only at the start
of a line or after whitespace (DNs may contain ``#``).  Files are read in name
order; a target may have only one entry across all files, and an entry may only
name groups that are defined.  Errors carry the file and line.
"""

from __future__ import annotations

import datetime
import glob
import os
import re

from clarens.acl.model import ORDERS, AclError, Entry, Policy, validate_pattern

_COMMENT = re.compile(r"(^|\s)#.*$")
_OPEN = re.compile(r"<(Group|Acl)\s+(\S+)\s*>\Z", re.I)
_CLOSE = re.compile(r"</(Group|Acl)\s*>\Z", re.I)
_ACL_DIRECTIVES = ("order", "allow", "deny", "allowgroup", "denygroup", "notbefore", "notafter")


def parse_time(text: str) -> float:
    """ISO 8601 date or date-time (UTC unless an offset is given) -> seconds since the epoch."""
    text = text.strip()
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AclError("invalid date/time %r (use ISO 8601, e.g. 2026-12-31T23:59:59Z)" % text) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


def format_time(seconds: float) -> str:
    """ISO 8601 in UTC, with microseconds when there are any: parse_time gives ``seconds`` back exactly
    for any time the model accepts (clarens.acl.model.validate_time)."""
    when = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return when.isoformat().replace("+00:00", "Z")


def parse_text(text: str, name: str, groups: dict[str, list[str]], entries: dict[str, Entry]) -> None:
    """Parse one file's text into ``groups`` and ``entries`` (AclError with ``name:line``)."""
    block: tuple[str, str, int] | None = None    # (kind, target, line) of the open block
    fields: dict = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        where = "%s:%d" % (name, lineno)
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        opened, closed = _OPEN.match(line), _CLOSE.match(line)
        if opened:
            if block:
                raise AclError("<%s> inside <%s %s> opened at line %d"
                               % (opened.group(1), block[0], block[1], block[2]),
                               where)
            kind = opened.group(1).capitalize()
            block = (kind, opened.group(2), lineno)
            if kind == "Group":
                groups.setdefault(block[1], [])
            fields = {"order": "allow,deny", "allow": [], "deny": [], "allow_groups": [], "deny_groups": [],
                      "not_before": None, "not_after": None}
            continue
        if closed:
            if not block or block[0].lower() != closed.group(1).lower():
                raise AclError("</%s> without a matching opening tag" % closed.group(1), where)
            if block[0] == "Acl":
                target = block[1]
                source = "%s:%d" % (name, block[2])
                if target in entries:
                    raise AclError("a second entry for %s (the first is at %s)" % (target, entries[target].source),
                                   source)
                try:
                    entries[target] = Entry(target, source=source, **fields)
                except AclError as e:
                    raise AclError(str(e), source) from None
            block = None
            continue
        if not block:
            raise AclError("%r outside a <Group> or <Acl> block" % line[:60], where)
        directive, _, value = line.partition(" ")
        directive, value = directive.lower(), value.strip()
        if not value:
            raise AclError("%s needs a value" % directive, where)
        try:
            if block[0] == "Group":
                if directive != "member":
                    raise AclError("unknown directive %r in <Group> (expected Member)" % directive)
                groups[block[1]].append(validate_pattern(value))
            elif directive not in _ACL_DIRECTIVES:
                raise AclError("unknown directive %r in <Acl> (expected %s)" % (directive, ", ".join(_ACL_DIRECTIVES)))
            elif directive == "order":
                if value.replace(" ", "").lower() not in ORDERS:
                    raise AclError("Order must be allow,deny or deny,allow")
                fields["order"] = value.replace(" ", "").lower()
            elif directive in ("allow", "deny"):
                fields[directive].append(validate_pattern(value))
            elif directive in ("allowgroup", "denygroup"):
                fields[directive[:-5] + "_groups"].append(value)
            else:
                fields["not_before" if directive == "notbefore" else "not_after"] = parse_time(value)
        except AclError as e:
            raise AclError(str(e), where) from None
    if block:
        raise AclError("<%s %s> is never closed" % (block[0], block[1]), "%s:%d" % (name, block[2]))


def load_dir(directory: str, exclude: tuple[str, ...] = ()) -> Policy:
    """Parse and validate every ``*.acl`` file in ``directory`` but the paths in ``exclude``
    (AclError on the first problem)."""
    skip = {os.path.realpath(p) for p in exclude}
    files = [p for p in sorted(glob.glob(os.path.join(directory, "*.acl"))) if os.path.realpath(p) not in skip]
    if not os.path.isdir(directory):
        raise AclError("ACL directory %s does not exist" % directory)
    groups: dict[str, list[str]] = {}
    entries: dict[str, Entry] = {}
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise AclError("cannot read %s: %s" % (path, e)) from None
        parse_text(text, os.path.abspath(path), groups, entries)
    policy = Policy(entries, groups)
    policy.validate()
    return policy


def format_policy(policy: Policy) -> str:
    """The policy in the file format (what ``python3 -m clarens.acl dump`` prints)."""
    out = ["# Clarens access-control policy, dumped from the live acl.tdb.\n"]
    for name in sorted(policy.groups):
        out.append("<Group %s>\n" % name)
        out.extend("    Member %s\n" % m for m in policy.groups[name])
        out.append("</Group>\n\n")
    for target in sorted(policy.entries, key=lambda t: (t != "*", t)):
        e = policy.entries[target]
        if e.source:
            out.append("# from %s\n" % e.source)
        out.append("<Acl %s>\n    Order %s\n" % (target, e.order))
        out.extend("    Allow %s\n" % p for p in e.allow)
        out.extend("    AllowGroup %s\n" % g for g in e.allow_groups)
        out.extend("    Deny %s\n" % p for p in e.deny)
        out.extend("    DenyGroup %s\n" % g for g in e.deny_groups)
        if e.not_before is not None:
            out.append("    NotBefore %s\n" % format_time(e.not_before))
        if e.not_after is not None:
            out.append("    NotAfter %s\n" % format_time(e.not_after))
        out.append("</Acl>\n\n")
    return "".join(out)
