# SPDX-License-Identifier: Apache-2.0
"""Development tool: time and profile the request handlers in-process, without Apache.

    /usr/bin/python3 -m bench.profile                 # microseconds per request, each row
    /usr/bin/python3 -m bench.profile --cprofile xmlrpc_echo

Calls ``clarens.handler.handler`` and the reference handlers with a fake
mod_python request, so the numbers are the Python work of one request with hot
caches: inside an Apache child under load the same work takes 2-3 times longer
(see bench/README.md), but the ratios between versions of the code hold well
enough to compare optimisations, which the wrk table cannot resolve below ~5%.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import http
import importlib
import pstats
import sys
import tempfile
import timeit
import types
from typing import Any, Callable

from bench import servers, targets


def _stub_mod_python() -> None:
    """Outside Apache ``mod_python.apache`` cannot be imported: give the handlers what they use.
    clarens.log and clarens.once are imported first, so that they see no mod_python, as every tool
    outside Apache does."""
    importlib.import_module("clarens.log")
    importlib.import_module("clarens.once")
    try:
        from mod_python import apache  # noqa: F401
        return
    except ImportError:
        pass
    stub: Any = types.ModuleType("mod_python.apache")     # Any: a stand-in, given apache's attributes below
    stub.OK = 0
    stub.main_server = None
    for status in http.HTTPStatus:
        setattr(stub, "HTTP_" + status.name, int(status))
    sys.modules["mod_python.apache"] = stub
    import mod_python
    mod_python.apache = stub


class FakeRequest:
    """The part of mod_python's request object the handlers use."""

    def __init__(self, target: targets.Target, directory: str):
        self.method = target.method
        self.uri = target.path
        self.hlist = types.SimpleNamespace(directory=directory)
        self.headers_in = {"Content-Type": target.content_type, "Content-Length": str(len(target.body or b""))}
        self.headers_out: dict[str, str] = {}
        self.useragent_ip = "127.0.0.1"
        self.user = self.ap_auth_type = self.args = None     # anonymous, plain HTTP
        self.body = target.body or b""
        self.reset()

    def reset(self) -> None:
        self.status = 200
        self.content_type: str | None = None
        self.out: list[bytes] = []

    def read(self) -> bytes:
        return self.body

    def write(self, data: bytes, flush: int = 1) -> None:
        self.out.append(data)

    def set_content_length(self, length: int) -> None:
        pass

    def get_config(self) -> dict:
        return {}

    def ssl_var_lookup(self, name: str) -> None:
        return None

    def is_https(self) -> bool:
        return False

    def register_cleanup(self, callable: Callable[[Any], Any], data: Any = None) -> None:
        callable(data)


def handlers() -> dict[str, tuple[Callable[[Any], int], str]]:
    """Handler and ``<Location>`` of each path the Apache rows are served at."""
    import clarens.handler
    from bench.handlers import fixed, parse_marshal, read_fixed
    return {"/clarens/": (clarens.handler.handler, "/clarens"), "/bench/fixed": (fixed.handler, "/bench/fixed"),
            "/bench/read_fixed": (read_fixed.handler, "/bench/read_fixed"),
            "/bench/parse": (parse_marshal.handler, "/bench/parse")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--cprofile", metavar="ROW", help="profile this row instead of timing every row")
    p.add_argument("--number", type=int, default=20000, help="requests per timing (rows with 100 calls: /100)")
    args = p.parse_args(argv)
    _stub_mod_python()
    from clarens import host
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as db:
        host.boot({"clarens.server.db_dir": db, "clarens.server.acl_dir": servers.acl_dir(db)})
        table = handlers()
        rows = [t for t in targets.ROWS if t.path in table and t.method == "POST"]
        if args.cprofile:
            target = next(t for t in rows if t.key == args.cprofile)
            handler, directory = table[target.path]
            req = FakeRequest(target, directory)
            prof = cProfile.Profile()
            prof.runcall(lambda: [handler(req) for _ in range(args.number // target.calls)])
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return 0
        timings = {}
        for target in rows:
            handler, directory = table[target.path]
            req = FakeRequest(target, directory)
            handler(req)
            targets.verify(target, req.status, b"".join(req.out))
            n = max(args.number // (target.calls * 10 if target.calls > 1 or target.key == "validator" else 1), 100)
            timings[target.key] = min(timeit.repeat(functools.partial(handler, req), number=n, repeat=7)) / n * 1e6
        for key, us in timings.items():
            print("%-14s %9.2f us/request  %5.2fx parse" % (key, us, timings["parse"] / us))
    return 0


if __name__ == "__main__":
    sys.exit(main())
