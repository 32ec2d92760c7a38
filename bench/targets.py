# SPDX-License-Identifier: Apache-2.0
"""What is measured: one :class:`Target` per table row, and how to check it answers correctly.

Every row is one HTTP request sent over and over by wrk.  Adding a row is one
line in :data:`ROWS` (plus, if it needs one, a ``<Location>`` in
:mod:`bench.servers`).  Measurements that are not a request under load (the
first request after a start; later, a burn) are probes: see :mod:`bench.probes`.
"""

from __future__ import annotations

import http.client
import json
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

# groups, in table order
REFERENCE = "reference"
PRODUCT = "product"
ALTERNATIVE = "alternative"

# servers a target can be served by (see bench.servers)
APACHE = "apache"            # the product as shipped: access control on
APACHE_OPEN = "apache_open"  # the same with access_control = off
STDLIB = "stdlib"

STATIC_FILE = "static200.txt"
STATIC_SIZE = 200
STRINGS_150 = ["item %03d" % i for i in range(150)]


@dataclass(frozen=True)
class Target:
    """One request, who serves it, and what a correct answer decodes to."""
    key: str
    label: str
    group: str
    server: str
    path: str
    method: str = "GET"
    content_type: str | None = None
    body: bytes | None = None
    protocol: str = "raw"          # how to decode the answer: "raw", "xmlrpc" or "jsonrpc"
    expect: Any = None             # the decoded result ("raw": the body length)
    calls: int = 1                 # RPC calls carried by one request (multicall, batch)
    single: str | None = None      # for several calls: the row of one such call alone, which a call is compared with


def static(key: str, label: str, path: str, size: int) -> Target:
    return Target(key, label, REFERENCE, APACHE, path, expect=size)


def xmlrpc_call(key: str, label: str, group: str, path: str, method: str, params: list, expect: Any,
                server: str = APACHE, calls: int = 1, single: str | None = None) -> Target:
    body = xmlrpc.client.dumps(tuple(params), method, allow_none=True).encode("utf-8")
    return Target(key, label, group, server, path, "POST", "text/xml", body, "xmlrpc", expect, calls, single)


def jsonrpc_call(key: str, label: str, group: str, path: str, method: str, params: list, expect: Any) -> Target:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode("utf-8")
    return Target(key, label, group, APACHE, path, "POST", "application/json", body, "jsonrpc", expect)


def jsonrpc_batch(key: str, label: str, group: str, path: str, method: str, params: list, count: int,
                  expect: Any, single: str) -> Target:
    """A JSON-RPC batch of ``count`` calls of ``method``, ids 1 to ``count``; ``expect``: each one's result."""
    body = json.dumps([{"jsonrpc": "2.0", "method": method, "params": params, "id": i}
                       for i in range(1, count + 1)]).encode("utf-8")
    return Target(key, label, group, APACHE, path, "POST", "application/json", body, "jsonrpc", [expect] * count,
                  count, single)


_MULTICALL = [{"methodName": "echo.echo", "params": ["hi"]}] * 100

ROWS: list[Target] = [
    static("static", "static file, 200 B", "/" + STATIC_FILE, STATIC_SIZE),
    xmlrpc_call("fixed", "bare handler, fixed response", REFERENCE, "/bench/fixed", "echo.echo", ["hi"], "hi"),
    xmlrpc_call("read_fixed", "bare handler, reads the body, fixed response", REFERENCE, "/bench/read_fixed",
                "echo.echo", ["hi"], "hi"),
    xmlrpc_call("parse", "bare handler, stdlib parse+marshal", REFERENCE, "/bench/parse", "echo.echo", ["hi"], "hi"),
    xmlrpc_call("xmlrpc_echo", "echo.echo, XML-RPC, access control off", PRODUCT, "/clarens/", "echo.echo",
                ["hi"], "hi", server=APACHE_OPEN),
    xmlrpc_call("xmlrpc_echo_acl", "echo.echo, XML-RPC, with ACL check", PRODUCT, "/clarens/", "echo.echo",
                ["hi"], "hi"),
    jsonrpc_call("jsonrpc_echo", "echo.echo, JSON-RPC", PRODUCT, "/clarens/", "echo.echo", ["hi"], "hi"),
    xmlrpc_call("multicall", "system.multicall, 100 x echo", PRODUCT, "/clarens/", "system.multicall",
                [_MULTICALL], [["hi"]] * 100, calls=100, single="xmlrpc_echo_acl"),
    jsonrpc_batch("jsonrpc_batch", "JSON-RPC batch, 100 x echo", PRODUCT, "/clarens/", "echo.echo", ["hi"], 100,
                  "hi", single="jsonrpc_echo"),
    xmlrpc_call("validator", "validator1.moderateSizeArrayCheck, 150 strings", PRODUCT, "/clarens/",
                "validator1.moderateSizeArrayCheck", [STRINGS_150], STRINGS_150[0] + STRINGS_150[-1]),
    xmlrpc_call("stdlib_server", "stdlib SimpleXMLRPCServer, threaded", ALTERNATIVE, "/RPC2", "echo.echo",
                ["hi"], "hi", server=STDLIB),
]


def request(target: Target, host: str, port: int, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send the target's request once on a new connection: (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Content-Type": target.content_type} if target.content_type else {}
        conn.request(target.method, target.path, body=target.body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check(target: Target, host: str, port: int) -> None:
    """Raise AssertionError unless the target answers its request correctly."""
    verify(target, *request(target, host, port))


def verify(target: Target, status: int, body: bytes) -> None:
    """Raise AssertionError unless (status, body) is the correct answer to the target's request."""
    if status != 200:
        raise AssertionError("%s: HTTP %d: %r" % (target.key, status, body[:200]))
    if target.protocol == "xmlrpc":
        try:
            # typeshed says str, but loads feeds expat, which takes the bytes as sent (in their declared encoding)
            got = xmlrpc.client.loads(body)[0][0]  # type: ignore[arg-type]
        except xmlrpc.client.Fault as fault:
            raise AssertionError("%s: fault %s" % (target.key, fault)) from None
    elif target.protocol == "jsonrpc":
        reply = json.loads(body)
        replies = reply if isinstance(reply, list) else [reply]      # a batch's, in the order of its ids
        errors = [r["error"] for r in replies if "error" in r]
        if errors:
            raise AssertionError("%s: error %s" % (target.key, errors[0]))
        if isinstance(reply, list):
            got = [r["result"] for r in sorted(replies, key=lambda r: r["id"])]
        else:
            got = reply["result"]
    else:
        got = len(body)
    if got != target.expect:
        raise AssertionError("%s: expected %r, got %r" % (target.key, target.expect, got))
