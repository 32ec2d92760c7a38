"""Administer the access-control policy on the server host.

    python3 -m clarens.acl validate            check the ACL files (file:line of the first problem)
    python3 -m clarens.acl reload              make the ACL files the live policy, at once, in every child
    python3 -m clarens.acl show                the live policy, briefly
    python3 -m clarens.acl dump                the live policy in the file format (e.g. > acl/live.acl)
    python3 -m clarens.acl check IDENTITY METHOD   who decides, and why
    python3 -m clarens.acl audit [N]           the N most recent changes

The database and ACL directory come from the server configuration (``--config``,
default ``conf/clarens.conf``) unless ``--db-dir`` / ``--acl-dir`` say otherwise.
``./run acl ...`` points it at the private instance's state.
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
from clarens.acl.files import format_policy, load_dir
from clarens.acl.model import AclError
from clarens.db import open_db
from clarens.identity import ANONYMOUS, Identity


def _open(db_dir: str):
    path = os.path.join(db_dir, store.DB_NAME + ".tdb")
    existed = os.path.exists(path)
    db = open_db(path)
    if not existed and os.geteuid() == 0:   # leave it to the Apache user who owns db_dir
        st = os.stat(db_dir)
        os.chown(path, st.st_uid, st.st_gid)
    return db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m clarens.acl", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", default=config_mod.DEFAULT_CONFIG)
    parser.add_argument("--db-dir")
    parser.add_argument("--acl-dir")
    parser.add_argument("command", choices=["validate", "reload", "show", "dump", "check", "audit"])
    parser.add_argument("args", nargs="*")
    args = parser.parse_args(argv)
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
        db = _open(db_dir)
        if args.command == "reload":
            policy = store.load_files(db, acl_dir, "%s (command line)" % getpass.getuser(),
                                      store.AuditRetention(cfg.acl_audit_keep, cfg.acl_audit_days))
            print("loaded %d entries and %d groups from %s" % (len(policy.entries), len(policy.groups), acl_dir))
        elif args.command == "dump":
            sys.stdout.write(format_policy(store.read_policy(db)))
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
