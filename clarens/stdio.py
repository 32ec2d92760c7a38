# SPDX-License-Identifier: Apache-2.0
"""The host in a one-shot process on standard input and output: calls over SSH with no server running.

    ssh alice@host /usr/bin/python3 -m clarens.stdio [--config PATH] [-o SECTION.KEY=VALUE ...]

OpenSSH authenticates the user and starts this process as that user; it boots
the same host as Apache's children do (the modules with their ``_startup_init``,
the tdb registry, the ACL files) and serves RPC messages framed as in
:mod:`clarens.framing` (JSON-RPC, or XML-RPC when a message says ``text/xml``),
one answer per message, until its input ends: then it exits.  Nothing listens on
the network and nothing runs between sessions.

The caller is the OS user this process runs as, ``unix:NAME`` (see
:mod:`clarens.identity`), calling from the address in ``SSH_CLIENT``.  The
operating system's permissions apply as they are: e.g. the burner helper's
socket group decides whether the user may burn.  The session's databases are
the user's own (``[server] session_db_dir``).  Log lines go to standard error,
which SSH shows on the client's.
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import sys
from typing import BinaryIO

import clarens
from clarens import config as config_mod
from clarens import framing, host, serving
from clarens.faults import INVALID_REQUEST, Fault
from clarens.identity import unix_user
from clarens.protocol import jsonrpc

USAGE_ERROR, CONFIG_ERROR, FRAMING_ERROR = 2, 3, 4
GREETING = "Clarens"        # the header of the server's first message: the host is up
MESSAGE_SECONDS = 60        # a message that has begun must arrive whole within this (between messages: no limit)


def options_from(pairs: list[str]) -> dict[str, str]:
    """``-o server.log_level=debug`` and the like as ``clarens.*`` options (ValueError if malformed)."""
    options = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or "." not in key:
            raise ValueError("-o %s: expected SECTION.KEY=VALUE (e.g. server.log_level=debug)" % pair)
        options[config_mod.OPTION_PREFIX + key.strip()] = value.strip()
    return options


def serve(h: host.Host, user: str, address: str, stdin, stdout, message_seconds: int = MESSAGE_SECONDS) -> int:
    """Answer every message on ``stdin`` until it ends; the exit status.  A message that has begun
    and is not whole within ``message_seconds`` ends the session (SIGALRM: call it in the main thread)."""
    caller = unix_user(user)

    def overdue(signum, frame):
        raise framing.FramingError("a message began but was not whole within %d s" % message_seconds)
    signal.signal(signal.SIGALRM, overdue)
    framing.write(stdout, b"", extra={GREETING: clarens.__version__})
    while True:
        try:
            message = framing.read(stdin, h.config.max_body, begun=lambda: signal.alarm(message_seconds))
        except framing.FramingError as e:
            h.log.warning("%s@%s: %s; closing the session", caller.name, address, e)
            return FRAMING_ERROR
        finally:
            signal.alarm(0)
        if message is None:
            return 0
        headers, body = message
        content_type = headers.get("content-type", framing.DEFAULT_TYPE)
        codec = serving.codec_for(content_type)
        if codec is None:
            fault = Fault(INVALID_REQUEST, "unsupported Content-Type %r: application/json or text/xml"
                          % content_type[:60])
            framing.write(stdout, jsonrpc.dumps_fault(fault), jsonrpc.CONTENT_TYPE)
            continue
        answer = serving.serve(h, caller, codec, body, address)
        framing.write(stdout, answer or b"", codec.CONTENT_TYPE)


def own_session_pipes() -> tuple[BinaryIO, BinaryIO]:
    """The session's input and output, kept for the framing alone; descriptors 0 and 1 become
    ``/dev/null`` and standard error.

    Otherwise a module's ``print`` (or a program it runs, which inherits 0 and 1) would write into
    the stream of frames and put it out of step, or read a request meant for the host.  The copies
    are not inherited by programs modules run, so none of them can hold the session open either.
    """
    stdin, stdout = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return stdin, stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m clarens.stdio", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("CLARENS_CONFIG", config_mod.DEFAULT_CONFIG),
                        help="the host's clarens.conf (default: $CLARENS_CONFIG, else the checkout's)")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a setting, as PythonOption clarens.SECTION.KEY does")
    parser.add_argument("--message-timeout", type=int, default=MESSAGE_SECONDS, metavar="SECONDS",
                        help="end the session when a message has begun but is not whole within this (default %d)"
                        % MESSAGE_SECONDS)
    args = parser.parse_args(argv)
    # A client that goes away closes our input: we see its end.  SIGPIPE would kill us mid-write
    # without a word; as an exception it ends the session the same way.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    stdin, stdout = own_session_pipes()
    try:
        h = host.boot(options_from(args.options), args.config, standalone=True)
    except (ValueError, config_mod.ConfigError) as e:
        print("clarens.stdio: %s" % e, file=sys.stderr)
        return USAGE_ERROR if isinstance(e, ValueError) else CONFIG_ERROR
    user = pwd.getpwuid(os.geteuid()).pw_name
    address = (os.environ.get("SSH_CLIENT") or "local").split()[0]
    try:
        return serve(h, user, address, stdin, stdout, args.message_timeout)
    except BrokenPipeError:
        return 0    # the client went away before its answer


if __name__ == "__main__":
    sys.exit(main())
