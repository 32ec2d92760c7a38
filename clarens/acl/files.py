# SPDX-License-Identifier: Apache-2.0
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

Each directive of an ``<Acl>`` block is one row of :data:`ACL_DIRECTIVES`: the
entry field it sets, how its value is read and how it is written back (the
parser and ``dump`` both follow the table, so a new rule kind is one row here;
``docs/architecture.md``, "Adding an ACL rule kind", has the whole recipe).
"""

from __future__ import annotations

import datetime
import glob
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from clarens.acl.model import ORDERS, AclError, Entry, Policy, validate_pattern

_COMMENT = re.compile(r"(^|\s)#.*$")
_OPEN = re.compile(r"<(Group|Acl)\s+(\S+)\s*>\Z", re.I)
_CLOSE = re.compile(r"</(Group|Acl)\s*>\Z", re.I)


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


def parse_order(text: str) -> str:
    """``allow,deny`` or ``deny,allow``, in any case and spacing."""
    order = text.replace(" ", "").lower()
    if order not in ORDERS:
        raise AclError("Order must be allow,deny or deny,allow")
    return order


@dataclass(frozen=True)
class Directive:
    """One directive of an ``<Acl>`` block: the :class:`~clarens.acl.model.Entry` field it sets, how its
    value is read (AclError if it is invalid) and how it is written, so that ``parse(format(v)) == v``."""
    name: str                          # as written ("AllowGroup"); read in any case
    field: str                         # the Entry field
    parse: Callable[[str], Any]        # the rest of the line (stripped, not empty) -> the stored value
    format: Callable[[Any], str]       # a stored value -> the rest of the line
    repeats: bool = False              # each line adds a value to a list (else a single value, the last line's)


# In the order dump writes them.  Entry checks what a value may be (patterns, group names, windows)
# wherever it comes from; a parser here reads the text form.
ACL_DIRECTIVES = (
    Directive("Order", "order", parse_order, str),
    Directive("Allow", "allow", validate_pattern, str, repeats=True),
    Directive("AllowGroup", "allow_groups", str, str, repeats=True),
    Directive("Deny", "deny", validate_pattern, str, repeats=True),
    Directive("DenyGroup", "deny_groups", str, str, repeats=True),
    Directive("NotBefore", "not_before", parse_time, format_time),
    Directive("NotAfter", "not_after", parse_time, format_time),
)
_DIRECTIVE = {d.name.lower(): d for d in ACL_DIRECTIVES}


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
            fields = {d.field: [] for d in ACL_DIRECTIVES if d.repeats}     # the rest: Entry's defaults
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
        word, _, value = line.partition(" ")
        word, value = word.lower(), value.strip()
        if not value:
            raise AclError("%s needs a value" % word, where)
        try:
            if block[0] == "Group":
                if word != "member":
                    raise AclError("unknown directive %r in <Group> (expected Member)" % word)
                groups[block[1]].append(validate_pattern(value))
                continue
            directive = _DIRECTIVE.get(word)
            if directive is None:
                raise AclError("unknown directive %r in <Acl> (expected %s)"
                               % (word, ", ".join(d.name for d in ACL_DIRECTIVES)))
            if directive.repeats:
                fields[directive.field].append(directive.parse(value))
            else:
                fields[directive.field] = directive.parse(value)
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
        out.append("<Acl %s>\n" % target)
        for directive in ACL_DIRECTIVES:
            value = getattr(e, directive.field)
            values = value if directive.repeats else [] if value is None else [value]
            out.extend("    %s %s\n" % (directive.name, directive.format(v)) for v in values)
        out.append("</Acl>\n\n")
    return "".join(out)
