# SPDX-License-Identifier: Apache-2.0
"""``clarens``: call any method of a Clarens host from a shell or a script.

    python3 -m clarens call URL|SERVICE METHOD [ARG ...]      (and OPTIONS, anywhere)
    python3 -m clarens methods URL|SERVICE [METHOD ...]
    python3 -m clarens logout URL|SERVICE

URL is ``http(s)://HOST/clarens/``, ``local:[CONFIG]`` or
``ssh://[USER@]HOST[:PORT][/CONFIG]`` (several, space-separated in one argument,
make a failover pool); anything else names a service of the client configuration
(:mod:`clarens.client.config`).  Each ARG is JSON (``7``, ``"x"``, ``[1, 2]``,
``{"speed": 4}``); an ARG that is not JSON is passed as a string.  The result is
printed as JSON (binary values as base64 strings, dates in ISO 8601).

``methods`` lists the host's methods with their signatures (``system.listMethods``,
``methodSignature``), and with METHOD names, each one's help too.

With ``--user`` (or a configured ``user``), the first command signs in (the password
from ``CLARENS_PASSWORD``, else asked) and keeps the session's token in
``~/.cache/clarens/sessions`` (its owner's only): the next commands send the token, not
the password, until the session ends (then they sign in again).  ``logout`` ends it.

Exit status: 0 success; 1 a fault (``fault CODE: MESSAGE`` on standard error); 2
a usage or configuration error; 3 no answer (the transport error on standard error).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import sys
from typing import Any, Mapping

from clarens.client import ClientConfigError, Fault, Service, TransportError, connect, service, sessions

FAULT, USAGE, TRANSPORT = 1, 2, 3


def _argument(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise TypeError("%s cannot be shown as JSON" % type(value).__name__)


def _is_url(target: str) -> bool:
    return "://" in target or target.startswith("local:")


def open_service(target: str, args: argparse.Namespace) -> Service:
    """The service a command names: URLs with the command line's connection options, or a configured name."""
    settings: dict[str, Any] = {"protocol": args.protocol} if args.protocol else {}
    if args.timeout is not None:
        settings["timeout"] = args.timeout
    if args.idempotent:
        settings["idempotent"] = args.idempotent
    for key in ("max_answer", "remote", "ssh"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings["token_file"] = sessions.default_token_file()     # one sign-in serves the next commands too
    if not _is_url(target):
        return service(target, **settings)
    if args.user:
        settings["user"] = args.user
        settings["password"] = sessions.asked_password(args.user)
    for key in ("cert", "key", "ca"):
        if getattr(args, key):
            settings[key] = getattr(args, key)
    settings.setdefault("protocol", "xmlrpc")
    return connect(target.split(), **settings)


def _methods(svc: Service, names: list[str], out) -> None:
    listed = svc.call("system.listMethods")
    for name in names or listed:
        if names and name not in listed:
            raise Fault(-32601, "method %r not found" % name)
        signatures = svc.call("system.methodSignature", name)
        shown = ["%s %s(%s)" % (sig[0], name, ", ".join(sig[1:])) for sig in signatures] \
            if isinstance(signatures, list) and signatures else [name]
        out.write("\n".join(shown) + "\n")
        if names:
            text = svc.call("system.methodHelp", name)
            out.write("".join("    %s\n" % line for line in text.splitlines()) + "\n")


# The options that say how to reach and call a host (clarens, clarens-burn): how many values each takes.
CONNECTION_OPTIONS = {"--protocol": 1, "--user": 1, "--cert": 1, "--key": 1, "--ca": 1, "--timeout": 1,
                      "--idempotent": 1, "--max-answer": 1, "--remote": 1, "--ssh": 1}


def connection_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add :data:`CONNECTION_OPTIONS` to ``parser``."""
    parser.add_argument("--protocol", choices=("xmlrpc", "jsonrpc"), help="default: xmlrpc, or the configured one")
    parser.add_argument("--user", help="Basic authentication (password from CLARENS_PASSWORD or a prompt)")
    parser.add_argument("--cert", help="client certificate (PEM), with --key")
    parser.add_argument("--key")
    parser.add_argument("--ca", help="trust this CA bundle instead of the system's")
    parser.add_argument("--timeout", type=float, help="seconds a call may take, retries included (default 30)")
    parser.add_argument("--idempotent", action="append", metavar="PATTERN",
                        help="methods that may run twice, so are retried after a failure until the timeout")
    parser.add_argument("--max-answer", type=int, metavar="BYTES", help="refuse larger answers (default 64 MiB)")
    parser.add_argument("--remote", metavar="COMMAND", help="what ssh:// URLs run on the remote host, split into "
                        "words, no shell (default: /usr/bin/python3 -m clarens.stdio)")
    parser.add_argument("--ssh", metavar="COMMAND", help="the ssh command and its options (default: ssh)")
    return parser


def hoist(argv: list[str], options: Mapping[str, int]) -> list[str]:
    """``argv`` with ``options`` (name: how many values it takes) moved, with their values, before the
    rest, wherever they were: argparse takes a parser's options only before its subcommand, and a
    command is typed as ``clarens call --user demo URL ...`` too.  ``--`` ends the options."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        name = arg.split("=", 1)[0]
        taken = 1 + (options[name] if name in options and "=" not in arg else 0)
        (front if name in options else rest).extend(argv[i:i + taken])
        i += taken
    return front + rest


def main(argv: list[str] | None = None, out=sys.stdout, err=sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="clarens", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    connection_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    call = sub.add_parser("call", help="call METHOD with JSON arguments; print the result as JSON")
    call.add_argument("target", metavar="URL|SERVICE")
    call.add_argument("method")
    call.add_argument("args", nargs="*", type=_argument, metavar="ARG")
    methods = sub.add_parser("methods", help="list the methods, with signatures (and help for those named)")
    methods.add_argument("target", metavar="URL|SERVICE")
    methods.add_argument("names", nargs="*", metavar="METHOD")
    sub.add_parser("logout", help="end the session kept for URL|SERVICE (and its user)").add_argument(
        "target", metavar="URL|SERVICE")
    args = parser.parse_args(hoist(sys.argv[1:] if argv is None else argv, CONNECTION_OPTIONS))
    try:
        svc = open_service(args.target, args)
    except (ClientConfigError, ValueError, OSError) as e:
        err.write("clarens: %s\n" % e)
        return USAGE
    try:
        if args.command == "call":
            out.write(json.dumps(svc.call(args.method, *args.args), indent=2, ensure_ascii=False,
                                 default=_jsonable) + "\n")
        elif args.command == "logout":
            out.write("signed out\n" if svc.logout() else "no session to end\n")
        else:
            _methods(svc, args.names, out)
    except Fault as fault:
        err.write("fault %d: %s\n" % (fault.code, fault.message))
        return FAULT
    except TransportError as e:
        err.write("clarens: %s\n" % e)
        return TRANSPORT
    except (TypeError, ClientConfigError) as e:    # an argument or result JSON/XML-RPC cannot carry; no password
        err.write("clarens: %s\n" % e)
        return USAGE
    finally:
        svc.close()
    return 0
