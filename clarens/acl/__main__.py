# SPDX-License-Identifier: Apache-2.0
"""Administer the access-control policy on the server host.

    python3 -m clarens.acl validate            check the ACL files (file:line of the first problem)
    python3 -m clarens.acl reload              make the ACL files the live policy, at once, in every child
    python3 -m clarens.acl show                the live policy, briefly
    python3 -m clarens.acl dump [--output FILE]   the live changes the ACL files do not hold, as a file
                                               that validates beside them (e.g. acl/90-live.acl)
    python3 -m clarens.acl dump --all          the whole live policy, for reading
    python3 -m clarens.acl check IDENTITY METHOD   who decides, and why (in the live policy)
    python3 -m clarens.acl audit [N]           the N most recent changes

The database and ACL directory come from the server configuration (``--config``,
default ``conf/clarens.conf``, or ``/etc/clarens/clarens.conf`` where Clarens is
installed as a package) unless ``--db-dir`` / ``--acl-dir`` say otherwise.
``./run acl ...`` points it at the private instance's state.

Live changes (the ``acl`` module) last until the next server start reloads the
files.  ``dump`` keeps them: it writes what the live policy holds beyond the
files (new entries, new groups, members added to groups) in a file that, put
beside them, makes the next start load the same policy, and checks that it does
before writing it.  A live change to an entry or group the files define (changed,
deleted, members removed) cannot be said by an extra file (a target has one entry
across all files): ``dump`` then writes nothing and names the file and line to
edit, with the live form to paste.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import logging
import os
import sys

from clarens import config as config_mod
from clarens.acl import store
from clarens.acl.files import format_policy, load_dir, parse_text
from clarens.acl.model import AclError, Entry, Policy
from clarens.db import open_db
from clarens.identity import ANONYMOUS, Identity


def _open(db_dir: str, create: bool):
    """The live policy's database in ``db_dir`` (created only if ``create``); AclError if there is none."""
    path = os.path.join(db_dir, store.DB_NAME + ".tdb")
    existed = os.path.exists(path)
    if create and not os.path.isdir(db_dir):
        raise AclError("db_dir %s does not exist" % db_dir)
    if not existed and not create:
        raise AclError("there is no live policy at %s: the server has not started with this db_dir yet, or "
                       "--db-dir (or the configuration's db_dir) names another directory" % path)
    try:
        db = open_db(path)
    except OSError as e:
        raise AclError("cannot open %s: %s" % (path, e.strerror or e)) from None
    if not existed and os.geteuid() == 0:   # leave it to the Apache user who owns db_dir
        st = os.stat(db_dir)
        os.chown(path, st.st_uid, st.st_gid)
    return db


def _entry_key(entry: Entry) -> dict:
    return {k: v for k, v in entry.to_dict().items() if k != "source"}


def _same(a: Policy, b: Policy) -> bool:
    """Whether two policies decide alike: the same entries (wherever they came from) and groups."""
    return ({t: _entry_key(e) for t, e in a.entries.items()} == {t: _entry_key(e) for t, e in b.entries.items()}
            and {g: set(m) for g, m in a.groups.items()} == {g: set(m) for g, m in b.groups.items()})


def live_differences(base: Policy, live: Policy, acl_dir: str) -> tuple[Policy, list[str]]:
    """What ``live`` holds beyond the files' policy ``base``, as a policy a file beside them can hold
    (groups there add up; a target has one entry), and what it holds that no such file can say."""
    entries: dict[str, Entry] = {}
    groups: dict[str, list[str]] = {}
    problems = []
    for target, entry in sorted(live.entries.items()):
        known = base.entries.get(target)
        if known is None:
            entries[target] = entry
        elif _entry_key(known) != _entry_key(entry):
            problems.append("entry %s was changed live; it is defined at %s: change it there. Its live form:\n%s"
                            % (target, known.source, format_policy(Policy({target: entry}, {})).split("\n", 1)[1]))
    for target, known in sorted(base.entries.items()):
        if target not in live.entries:
            problems.append("entry %s was deleted live; it is defined at %s: delete it there" % (target, known.source))
    for name, members in sorted(live.groups.items()):
        if name not in base.groups:
            groups[name] = list(members)
            continue
        added = [m for m in members if m not in base.groups[name]]
        removed = [m for m in base.groups[name] if m not in members]
        if added:
            groups[name] = added
        if removed:
            problems.append("group %s: %s removed live; remove them from its <Group %s> blocks in %s"
                            % (name, ", ".join(removed), name, acl_dir))
    for name in sorted(set(base.groups) - set(live.groups)):
        problems.append("group %s was deleted live; delete its <Group %s> blocks in %s" % (name, name, acl_dir))
    return Policy(entries, groups), problems


def _dump(db, acl_dir: str, show_all: bool, output: str | None, prog: str) -> int:
    """``dump``: the live differences (or, ``show_all``, the whole live policy) to stdout or ``output``."""
    live = store.read_policy(db)
    if show_all:
        text = ("# The whole live policy, for reading.  It repeats what the files in %s hold, so it\n"
                "# does not validate beside them: '%s dump' writes what does.\n" % (acl_dir, prog)
                + format_policy(live))
    else:
        output = os.path.abspath(output) if output else None
        if output and os.path.dirname(output) == os.path.abspath(acl_dir) and not output.endswith(".acl"):
            raise AclError("%s would not be loaded: files in %s must end in .acl" % (output, acl_dir))
        base = load_dir(acl_dir, exclude=(output,) if output else ())
        extra, problems = live_differences(base, live, acl_dir)
        if problems:
            for problem in problems:
                print("error: %s" % problem, file=sys.stderr)
            print("nothing written: the ACL files and the live policy differ in ways an added file cannot "
                  "hold; after editing the files, '%s dump' writes the rest" % prog, file=sys.stderr)
            return 1
        text = ("# Clarens access-control policy: the live changes (the acl module) that the files in\n"
                "# %s do not hold, dumped on %s.  Beside those files it makes the next\n"
                "# server start load the live policy again:\n"
                "#     %s dump --output %s/90-live.acl && %s validate && apachectl graceful\n"
                % (acl_dir, datetime.datetime.now().isoformat(" ", "seconds"), prog, acl_dir, prog)
                + format_policy(extra).split("\n", 1)[1])
        # The proof: the files with this one beside them are the live policy.
        groups = {name: list(members) for name, members in base.groups.items()}
        entries = dict(base.entries)
        parse_text(text, output or "(dump)", groups, entries)
        combined = Policy(entries, groups)
        combined.validate()
        if not _same(combined, live):
            raise AclError("internal error: the dump would not load the live policy; nothing written")
    if not output:
        sys.stdout.write(text)
        return 0
    tmp = "%s.tmp.%d" % (output, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)   # Apache's user reads the ACL files
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, output)
    print("wrote %s" % output, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, prog: str = "python3 -m clarens.acl") -> int:
    """The command line; ``prog`` is the name it goes by (``clarens-acl`` when installed)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", default=config_mod.DEFAULT_CONFIG)
    parser.add_argument("--db-dir")
    parser.add_argument("--acl-dir")
    parser.add_argument("command", nargs="?", choices=["validate", "reload", "show", "dump", "check", "audit"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--all", action="store_true", help="dump: the whole live policy, for reading")
    parser.add_argument("--output", metavar="FILE", help="dump: write FILE (in the ACL directory: FILE.acl)")
    args = parser.parse_args(argv)
    if args.command is None:         # no command: what there is to do, not just a usage error
        parser.print_help(sys.stderr)
        return 2
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    db_dir, acl_dir = args.db_dir or cfg.db_dir, args.acl_dir or cfg.acl_dir
    try:
        if args.command == "validate":
            policy = load_dir(acl_dir)
            print("%s: OK, %d entries, %d groups" % (acl_dir, len(policy.entries), len(policy.groups)))
            return 0
        db = _open(db_dir, create=args.command == "reload")
        if args.command == "reload":
            policy = store.load_files(db, acl_dir, "%s (command line)" % getpass.getuser(),
                                      store.AuditRetention(cfg.acl_audit_keep, cfg.acl_audit_days))
            print("loaded %d entries and %d groups from %s" % (len(policy.entries), len(policy.groups), acl_dir))
        elif args.command == "dump":
            return _dump(db, acl_dir, args.all, args.output, parser.prog)
        elif args.command == "show":
            policy = store.read_policy(db)
            for name, members in sorted(policy.groups.items()):
                print("group %-12s %s" % (name, ", ".join(members) or "(no members)"))
            for target, entry in sorted(policy.entries.items()):
                print("acl   %-24s %s allow=%s deny=%s%s" % (
                    target, entry.order, entry.allow + ["group " + g for g in entry.allow_groups],
                    entry.deny + ["group " + g for g in entry.deny_groups],
                    "  [%s]" % entry.source if entry.source else ""))
        elif args.command == "check":
            if len(args.args) != 2:
                parser.error("check needs IDENTITY METHOD")
            name, method = args.args
            guard = store.Guard(db, logging.getLogger("clarens.acl"))
            who = guard.identify(ANONYMOUS if name == "anonymous" else Identity(name, "command line"))
            decision = guard.decide(who, method)
            print("%s: %s may %scall %s\n  groups: %s\n  %s" % (
                "ALLOW" if decision.allowed else "DENY", name, "" if decision.allowed else "not ", method,
                ", ".join(who.groups) or "(none)", decision.reason))
            if not _same(load_dir(acl_dir), store.read_policy(db)):
                print("note: this is the live policy, which differs from the files in %s (changed since they "
                      "were loaded, or changed live): '%s reload' makes the files the live policy now"
                      % (acl_dir, parser.prog), file=sys.stderr)
            return 0 if decision.allowed else 1
        elif args.command == "audit":
            limit = int(args.args[0]) if args.args else 20
            for record in store.audit_log(db, limit):
                when = datetime.datetime.fromtimestamp(record["when"]).isoformat(" ", "seconds")
                print("%s  %-40s %s" % (when, record["who"], json.dumps(record["what"], sort_keys=True)))
    except AclError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
