# SPDX-License-Identifier: Apache-2.0
"""``clarens-admin``: the administrator's chores on a host where Clarens is installed as a package.

Password users live in the htpasswd file named by ``[server] htpasswd`` in
``clarens.conf`` (``/etc/clarens/htpasswd``), which the host checks passwords
against; Apache's children must read it and nobody else may: ``root:www-data
0640``, bcrypt hashes.  Editing it by hand with ``htpasswd`` is easy to get wrong
(``-c`` truncates, the password lands in the shell history with ``-b``, a new file
gets the umask's mode), hence ``user add|del|list``: the password is read from the
terminal (or one line of standard input) and handed to ``htpasswd -i`` on its
standard input, never on a command line.  Names are UTF-8 (``ädmin``, ``管理者``),
stored in Unicode normal form C, as the host compares them.

A new password or a deleted user ends every session of that user at once (the
session tokens carry a digest of the user's entry; the revocation is also published
to the other hosts of a cluster, which end them within the bound ``docs/scaling.md``
states, before the new file reaches them).  ``session list`` shows the
sessions this host has seen, ``session revoke`` ends one (by its id, or a prefix of
it) or every session of a user, on this host and, in a cluster, on the others within
the bound ``docs/scaling.md`` states; ``session new-key FILE`` writes a new key that
signs session tokens (``[server] session_key``; deploy the same to every host of a
cluster): once Apache has loaded it (``apachectl graceful``), every session signed
with the old key has ended.

``apache-conf`` writes the Apache settings that follow ``/etc/clarens/clarens.conf``
and the machine (body limits, process pool) to ``/etc/clarens/apache-generated.conf``,
which the package's include (a conffile, never to be overwritten) includes; then it
checks the configuration and applies it: a graceful restart, or a full one when
``ServerLimit`` changed or ``MaxRequestWorkers`` went down (a graceful restart
cannot do either cleanly), or, when that cannot be done, the command that would.
A configuration Apache rejects is not kept.

    clarens-admin user add NAME [--password-stdin]
    clarens-admin user passwd NAME [--password-stdin]
    clarens-admin user del NAME
    clarens-admin user list
    clarens-admin session list [--user NAME]
    clarens-admin session revoke ID | --user NAME
    clarens-admin session new-key FILE
    clarens-admin apache-conf [--config FILE] [--print | --no-restart]
    clarens-admin apache-instance [dedicated [--port PORT] | shared]

``apache-instance`` says whether Clarens runs in the system's Apache (``shared``, as
installed) or in an Apache instance of its own that the system's proxies to
(``dedicated``), and moves it from one to the other (:mod:`clarens.dedicated`).
"""

from __future__ import annotations

import argparse
import getpass
import grp
import os
import subprocess
import sys
import time

from clarens import apacheconf, apachectl, sessions
from clarens import config as config_mod
from clarens import dedicated as dedicated_mod
from clarens.db import open_db
from clarens.identity import normal_name, reserved

HTPASSWD = config_mod.SERVER_DEFAULTS["htpasswd"]
HTPASSWD_TOOL = "/usr/bin/htpasswd"
APACHE_GROUP = "www-data"
BCRYPT_COST = 10        # 2^10 rounds: about 50 ms of CPU for each password the host checks


class AdminError(Exception):
    """The command cannot be carried out; the message says why."""


def check_name(name: str) -> str:
    """``name`` in normal form C, if Clarens accepts it as a user name; else AdminError saying why."""
    name = normal_name(name)
    if not name or len(name.encode("utf-8")) > 255:
        raise AdminError("a user name has 1 to 255 bytes of UTF-8")
    if reserved(name):
        raise AdminError("%r could pass for another kind of identity (a certificate's DN, an OS user or a "
                         "special name); Clarens refuses it" % name)
    if ":" in name or any(c.isspace() or not c.isprintable() for c in name):
        raise AdminError("%r: a user name may not contain ':', spaces or control characters" % name)
    return name


def users(path: str = HTPASSWD) -> list[str]:
    """The user names in the htpasswd file at ``path`` (none if it does not exist), in normal form C."""
    try:
        with open(path, encoding="utf-8") as f:
            return [normal_name(line.split(":", 1)[0]) for line in f if ":" in line]
    except FileNotFoundError:
        return []


def _secure(path: str, group: str) -> None:
    """The file at ``path`` (created empty if missing) is root's, readable by ``group`` only."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise AdminError("no group %r (Apache's children must be able to read %s)" % (group, path)) from None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        os.fchown(fd, 0, gid)
        os.fchmod(fd, 0o640)
    except PermissionError:
        raise AdminError("cannot give %s to root:%s: run clarens-admin as root" % (path, group)) from None
    finally:
        os.close(fd)


def read_password(from_stdin: bool) -> str:
    """The new password: one line of standard input, or typed twice at the terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        raise AdminError("no terminal to ask for the password: use --password-stdin")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise AdminError("the passwords differ")
    if not password:
        raise AdminError("the password is empty")
    return password


def set_password(name: str, password: str, path: str = HTPASSWD, group: str = APACHE_GROUP) -> None:
    """Add user ``name``, or change its password, in the htpasswd file at ``path`` (bcrypt)."""
    _secure(path, group)
    out = subprocess.run([HTPASSWD_TOOL, "-i", "-B", "-C", str(BCRYPT_COST), path, check_name(name)],
                         input=password + "\n", capture_output=True, text=True)
    if out.returncode != 0:
        raise AdminError("htpasswd failed: %s" % (out.stderr.strip() or out.returncode))
    _secure(path, group)     # htpasswd rewrites the file in place; make sure of its mode all the same


def delete(name: str, path: str = HTPASSWD, group: str = APACHE_GROUP) -> None:
    """Remove user ``name`` from the htpasswd file at ``path``."""
    name = normal_name(name)
    if name not in users(path):
        raise AdminError("no user %r in %s" % (name, path))
    out = subprocess.run([HTPASSWD_TOOL, "-D", path, name], capture_output=True, text=True)
    if out.returncode != 0:
        raise AdminError("htpasswd failed: %s" % (out.stderr.strip() or out.returncode))
    _secure(path, group)


def htpasswd_path(config: str) -> str:
    """The htpasswd file the host at ``config`` checks passwords against (``[server] htpasswd``);
    AdminError if it takes none."""
    path = config_mod.load(config if os.path.exists(config) else None).htpasswd
    if path is None:
        raise AdminError("%s sets no htpasswd file: this host takes no passwords" % config)
    return path


def _sessions(config: str) -> sessions.Sessions:
    """The sessions of the host at ``config`` (list and revoke need no key); AdminError if it has none yet."""
    cfg = config_mod.load(config if os.path.exists(config) else None)
    path = os.path.join(cfg.db_dir, sessions.DB_NAME + ".tdb")
    if not os.path.exists(path):      # never create it: it is the Apache user's
        raise AdminError("no session has been opened on this host yet (%s does not exist)" % path)
    return sessions.Sessions(open_db(path), b"", cfg.session_idle, cfg.session_lifetime, lambda name: None,
                             cluster=bool(cfg.session_peers))


def new_key(path: str, group: str = APACHE_GROUP) -> None:
    """Write a new session key to ``path`` (root:``group`` 0640, replacing any, atomically)."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise AdminError("no group %r (Apache's children must be able to read %s)" % (group, path)) from None
    try:
        sessions.write_key(path, replace=True, gid=gid)
    except PermissionError:
        raise AdminError("cannot give %s to root:%s: run clarens-admin as root" % (path, group)) from None


def _end_sessions(config: str, name: str) -> None:
    """Revoke user ``name``'s sessions in the host's own table too: the other hosts of a cluster fetch
    the revocation, so the sessions end there within the bound of docs/scaling.md, before the new
    htpasswd file is deployed to them.  (On this host the changed entry has ended them already.)"""
    try:
        _sessions(config).revoke_user(name)
    except AdminError:
        pass                # no session was ever opened here


def _user(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    host_file = args.file is None       # the host's own file (--file: another, for tests)
    args.file = args.file or htpasswd_path(args.config)
    if args.action == "list":
        if args.name:
            parser.error("user list takes no name")
        for name in users(args.file):
            print(name)
        return
    if not args.name:
        parser.error("user %s needs a NAME" % args.action)
    if args.action == "del":
        delete(args.name, args.file)
        if host_file:
            _end_sessions(args.config, normal_name(args.name))
        print("deleted %s (and ended every session of that user)" % args.name)
        return
    args.name = check_name(args.name)
    exists = args.name in users(args.file)
    if args.action == "add" and exists:
        raise AdminError("%s already exists (clarens-admin user passwd %s changes the password)"
                         % (args.name, args.name))
    if args.action == "passwd" and not exists:
        raise AdminError("no user %r in %s (clarens-admin user add %s)" % (args.name, args.file, args.name))
    set_password(args.name, read_password(args.password_stdin), args.file)
    if exists and host_file:
        _end_sessions(args.config, args.name)
    print("changed the password of %s (and ended every session of that user)" % args.name if exists
          else "added %s" % args.name)


def _session(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.action == "new-key":
        if not args.target:
            parser.error("session new-key needs a FILE")
        new_key(args.target)
        print("wrote a new session key to %s: restart Apache gracefully (on every host of a cluster, with the "
              "same key) and every session signed with the old one has ended" % args.target)
        return
    kept = _sessions(args.config)
    if args.action == "list":
        if args.target:
            parser.error("session list takes no ID (--user NAME shows one user's)")
        for s in kept.active(normal_name(args.user) if args.user else None):
            print("%s  %-30s %-11s since %s, seen %s, from %s  %s" % (
                s["id"], s["identity"], s["source"], _when(s["issued"]), _when(s["seen"]), s["address"], s["agent"]))
        return
    if bool(args.target) == bool(args.user):
        parser.error("session revoke takes an ID or --user NAME")
    if args.user:
        print("ended %d session(s) of %s on this host (and every other one of that user, where this host's "
              "revocations reach)" % (kept.revoke_user(normal_name(args.user)), args.user))
        return
    try:
        if not kept.revoke(args.target):
            raise AdminError("no session %r on this host (clarens-admin session list)" % args.target)
    except ValueError as e:
        raise AdminError(str(e)) from None
    print("ended session %s" % args.target)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def apache_conf(config: str, path: str = apacheconf.GENERATED_PATH, restart: bool = True, out=sys.stdout) -> None:
    """Write the settings generated from ``config`` to ``path`` and (``restart``) apply them to every
    Apache that includes them; AdminError if Apache rejects them (the old file is then kept)."""
    text = apacheconf.generated_file(config)
    try:
        with open(path, encoding="utf-8") as f:
            old: str | None = f.read()
    except FileNotFoundError:
        old = None
    if text == old:
        out.write("%s is up to date\n" % path)
        return
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    apaches = apachectl.serving()
    for apache in apaches:
        problem = apache.configtest()
        if problem:
            if old is None:
                os.unlink(path)
            else:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(old)
                os.replace(tmp, path)
            raise AdminError("%s rejects the new settings, so %s was not changed:\n%s" % (apache.name, path, problem))
    full = apacheconf.full_restart_needed(old, text)
    out.write("wrote %s%s\n" % (path, " (%s: a full restart applies it)" % full if full and old else ""))
    if not restart:
        return
    for apache in apaches:
        try:
            out.write(apache.apply("restart" if full else "reload") + "\n")
        except apachectl.ApacheError as e:
            raise AdminError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module's documentation); the exit status."""
    parser = argparse.ArgumentParser(prog="clarens-admin",
                                     description="Clarens administration: password users, sessions, and Apache "
                                                 "(its generated settings, a shared or a dedicated instance).",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__[__doc__.index("    clarens-admin user add"):
                                                    __doc__.index("\n\n``apache-instance``")])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    user = commands.add_parser("user", help="password users (the htpasswd file of clarens.conf, %s)" % HTPASSWD)
    user.add_argument("action", choices=("add", "passwd", "del", "list"))
    user.add_argument("name", nargs="?")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    user.add_argument("--file", help=argparse.SUPPRESS)     # for tests: this file, whatever the configuration says
    session = commands.add_parser("session", help="list and revoke sessions; a new session key")
    session.add_argument("action", choices=("list", "revoke", "new-key"))
    session.add_argument("target", nargs="?", metavar="ID|FILE")
    session.add_argument("--user", help="a user's sessions")
    for command in (user, session):
        command.add_argument("--config", default=config_mod.SYSTEM_CONFIG, help="default: %(default)s")
    conf = commands.add_parser("apache-conf", help="write the Apache settings that follow clarens.conf and this "
                                                   "machine (%s) and apply them" % apacheconf.GENERATED_PATH)
    conf.add_argument("--config", default=config_mod.SYSTEM_CONFIG, help="default: %(default)s")
    what = conf.add_mutually_exclusive_group()
    what.add_argument("--print", action="store_true", help="print them; change nothing")
    what.add_argument("--no-restart", action="store_true", help="write them; restart nothing")
    conf.add_argument("--file", default=apacheconf.GENERATED_PATH, help=argparse.SUPPRESS)     # for tests
    instance = commands.add_parser("apache-instance", help="Clarens in the system's Apache (shared) or in an "
                                                           "Apache of its own (dedicated)")
    instance.add_argument("mode", nargs="?", choices=("dedicated", "shared"))
    instance.add_argument("--port", type=int, default=dedicated_mod.DEFAULT_PORT,
                          help="dedicated: the instance's port on 127.0.0.1 (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.command == "apache-instance":
            if args.mode is None:
                print("dedicated: %s, which the main Apache proxies to" % dedicated_mod.INSTANCE.confdir
                      if dedicated_mod.dedicated() else "shared: in the system's Apache (%s)" % apachectl.MAIN.confdir)
                return 0
            done = dedicated_mod.make_dedicated(args.port) if args.mode == "dedicated" else dedicated_mod.make_shared()
            print("\n".join(done))
            return 0
        if args.command == "apache-conf":
            if args.print:
                sys.stdout.write(apacheconf.generated_file(args.config))
            else:
                apache_conf(args.config, args.file, restart=not args.no_restart)
        elif args.command == "session":
            _session(args, parser)
        else:
            _user(args, parser)
    except (AdminError, config_mod.ConfigError, dedicated_mod.InstanceError, OSError) as e:
        print("clarens-admin: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
