# SPDX-License-Identifier: Apache-2.0
"""The client library against servers that misbehave: slow, huge, endless, malformed, redirecting.

A small hostile server (one thread per connection, on loopback) reads each request and answers
as a test tells it to.  Whatever it does, a call ends within its timeout (plus a generous margin
for a loaded machine: the unbounded behaviour these tests catch takes minutes, or forever), with
memory that does not grow with what the server claims or sends, and raises nothing but
``TransportError`` or ``clarens.Fault``.  The memory of a call is measured in a process of its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client
from typing import Callable

import pytest

from clarens import Fault
from clarens.client import AllServersDown, TransportError, connect
from clarens.client.pool import MAX_PAUSE
from tests.helpers import ROOT, free_port

MARGIN = 8.0          # seconds a bounded call may overrun its timeout on a loaded machine (unbounded: minutes)
DRIP_FOR = 120.0      # seconds a dripping server keeps going if the client does not hang up


class Hostile:
    """A server on 127.0.0.1 that reads each request whole, then runs ``behave(conn)`` on its connection."""

    def __init__(self, behave: Callable[[socket.socket], None]):
        self.behave = behave
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d/clarens/" % self.sock.getsockname()[1]
        self.requests: list[bytes] = []          # each request's head
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head)
                self.behave(conn)
            except OSError:      # the client hung up: what these tests want
                pass

    def __enter__(self) -> "Hostile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def answer(body: bytes, status: str = "200 OK", kind: str = "text/xml", extra: str = "") -> Callable:
    """A behaviour: one whole answer, then close."""
    def behave(conn: socket.socket) -> None:
        conn.sendall(("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n"
                      % (status, kind, len(body), extra)).encode() + body)
    return behave


def drip(head: bytes, piece: bytes, every: float = 1.0) -> Callable:
    """A behaviour: ``head``, then ``piece`` again and again, one every ``every`` seconds."""
    def behave(conn: socket.socket) -> None:
        conn.sendall(head)
        end = time.monotonic() + DRIP_FOR
        while time.monotonic() < end:
            time.sleep(every)
            conn.sendall(piece)
    return behave


def endless_chunks(conn: socket.socket) -> None:
    """An XML answer in chunks that never end, as fast as the client takes them."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"A" * 0x10000 + b"\r\n"
    end = time.monotonic() + DRIP_FOR
    while time.monotonic() < end:
        conn.sendall(chunk)


def claims(length: int, kind: str = "text/xml") -> Callable:
    """An answer that claims ``length`` bytes and sends base64 text towards it, as fast as it is taken."""
    def behave(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                     b"<?xml version='1.0'?><methodResponse><params><param><value><base64>"
                     % (kind.encode(), length))
        piece = b"QUFB" * 16384
        end = time.monotonic() + DRIP_FOR
        while time.monotonic() < end:
            conn.sendall(piece)
    return behave


def timed_call(url: str, timeout: float, **kw) -> tuple[TransportError, float]:
    """Call echo.echo on ``url``; the TransportError it must raise and the seconds it took."""
    start = time.monotonic()
    with connect(url, timeout=timeout, **kw) as svc:
        with pytest.raises(TransportError) as caught:
            svc.echo.echo(1)
    return caught.value, time.monotonic() - start


# -- time: the timeout bounds the whole call ------------------------------------------------------------

@pytest.mark.parametrize("idempotent", [False, True])
@pytest.mark.parametrize("behave", [
    drip(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 100\r\n\r\n", b"<"),   # the body, 1 B/s
    drip(b"HTTP/1.1 200 OK\r\n", b"X-Drip: 1\r\n"),                       # the headers, a line a second
    drip(b"", b"H", 0.5),                                                 # the status line, a byte at a time
    drip(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n"),   # interim answers forever
    lambda conn: threading.Event().wait(DRIP_FOR),                         # nothing at all
], ids=["body", "headers", "status-line", "interim", "silent"])
def test_a_slow_server_is_cut_off_at_the_timeout(behave, idempotent):
    with Hostile(behave) as server:
        error, took = timed_call(server.url, 2, idempotent=["echo.*"] if idempotent else [])
    assert error.sent is True and "timed out" in str(error), error
    assert took < 2 + MARGIN, took
    assert len(server.requests) == 1      # the whole timeout went on the first try: nothing left to retry


def test_a_per_call_timeout_bounds_that_call():
    with Hostile(drip(b"HTTP/1.1 200 OK\r\n", b"X-Drip: 1\r\n")) as server:
        with connect(server.url, timeout=60) as svc:
            start = time.monotonic()
            with pytest.raises(TransportError, match="timed out"):
                svc.call("echo.echo", 1, timeout=1.5)
            assert time.monotonic() - start < 1.5 + MARGIN


def test_a_refused_connection_is_a_transport_error_never_sent():
    url = "http://127.0.0.1:%d/clarens/" % free_port()
    error, took = timed_call(url, 1.5)
    assert error.sent is False and error.url == url and "refused" in str(error)
    assert not isinstance(error, AllServersDown)        # one server: its own error
    # A host may be restarting: tried again until the timeout, less at most the one pause (up to
    # MAX_PAUSE) that would have ended past it (the pool's rule; took >= 1.0 failed at 0.88 s).
    assert took >= 1.5 - MAX_PAUSE


# -- size: answers over the limit are refused at once, with flat memory ---------------------------------

CALL_IN_A_PROCESS = """
import json, sys
from clarens.client import TransportError, connect
try:
    connect(sys.argv[1], timeout=float(sys.argv[2]), protocol=sys.argv[3]).echo.echo(1)
    outcome = "answered"
except TransportError as e:
    outcome = "TransportError: %s" % e
# This process's own peak (VmHWM): ru_maxrss would report the pytest process's, inherited across execve.
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"outcome": outcome, "maxrss_mb": peak_kb // 1024}))
"""


def call_in_a_process(url: str, timeout: float = 30, protocol: str = "xmlrpc") -> dict:
    """A call in a Python process of its own (default settings): what it raised, and its peak memory."""
    out = subprocess.run([sys.executable, "-c", CALL_IN_A_PROCESS, url, str(timeout), protocol], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("behave, says", [
    (claims(3_000_000_000), "an answer of 3000000000 bytes, over the limit of 67108864 (max_answer)"),
    (claims(200 << 20), "an answer of 209715200 bytes, over the limit"),       # 200 MB of base64
    (endless_chunks, "an answer of more than 67108864 bytes, over the limit"),
], ids=["3GB-claimed", "200MB-base64", "endless-chunks"])
def test_an_answer_over_the_limit_is_refused_with_flat_memory(behave, says):
    with Hostile(behave) as server:
        found = call_in_a_process(server.url)
    assert says in found["outcome"], found
    # A Python process with the client costs ~25 MB, the default limit 64 MiB: the answers above,
    # read whole, would cost gigabytes.
    assert found["maxrss_mb"] < 64 + 25 + 100, found


def test_max_answer_is_a_setting():
    small = xmlrpc.client.dumps(("x" * 1000,), methodresponse=True).encode()
    with Hostile(answer(small)) as server:
        with connect(server.url, max_answer=len(small)) as svc:
            assert svc.echo.echo(1) == "x" * 1000
        with connect(server.url, max_answer=len(small) - 1) as svc:
            with pytest.raises(TransportError, match="over the limit of %d" % (len(small) - 1)) as caught:
                svc.echo.echo(1)
    assert caught.value.transient is False and caught.value.sent is True


# -- malformed answers: TransportError or Fault, nothing else ---------------------------------------------

def fault_xml(code: str, message: str = "<string>m</string>") -> bytes:
    return ("<?xml version='1.0'?><methodResponse><fault><value><struct><member><name>faultCode</name>"
            "<value>%s</value></member><member><name>faultString</name><value>%s</value></member></struct>"
            "</value></fault></methodResponse>" % (code, message)).encode()


def params_xml(*values: str) -> bytes:
    return ("<?xml version='1.0'?><methodResponse><params>%s</params></methodResponse>"
            % "".join("<param><value>%s</value></param>" % v for v in values)).encode()


LAUGHS = (b"<?xml version='1.0'?><!DOCTYPE r [<!ENTITY a 'aaaaaaaaaa'>"
          + b"".join(b"<!ENTITY %c '%s'>" % (ord("b") + i, b"&%c;" % (ord("a") + i) * 10) for i in range(8))
          + b"]><methodResponse><params><param><value><string>&i;</string></value></param></params></methodResponse>")

MALFORMED_XML = {
    "string-fault-code": fault_xml("<string>abc</string>"),
    "double-fault-code": fault_xml("<double>1.5</double>"),
    "fault-without-string": fault_xml("<int>4</int>", "<array><data/></array>"),
    "fault-struct-empty": b"<methodResponse><fault><value><struct/></value></fault></methodResponse>",
    "two-values": params_xml("<int>1</int>", "<int>2</int>"),
    "no-values": params_xml(),
    "not-xml": b"<oops",
    "not-utf8": b"<methodResponse>\xff\xfe</methodResponse>",
    "billion-laughs": LAUGHS,
    "bad-int": params_xml("<int>twelve</int>"),
    "bad-date": params_xml("<dateTime.iso8601>yesterday</dateTime.iso8601>"),
    "bad-base64": params_xml("<base64>QQ</base64>"),
    "html": b"<html><body>proxy error</body></html>",
}

DEEP = 200_000
MALFORMED_JSON = {
    "deep": b"[" * DEEP + b"]" * DEEP,
    "deep-in-result": b'{"jsonrpc": "2.0", "id": 0, "result": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "deep-in-message": (b'{"jsonrpc": "2.0", "id": 0, "error": {"code": 1, "message": ' + b"[" * DEEP
                        + b"]" * DEEP + b"}}"),
    "string-code": b'{"jsonrpc": "2.0", "id": 0, "error": {"code": "1", "message": "m"}}',
    "bool-code": b'{"jsonrpc": "2.0", "id": 0, "error": {"code": true, "message": "m"}}',
    "list-message": b'{"jsonrpc": "2.0", "id": 0, "error": {"code": 1, "message": [1]}}',
    "error-string": b'{"jsonrpc": "2.0", "id": 0, "error": "boom"}',
    "no-result": b'{"jsonrpc": "2.0", "id": 0}',
    "not-2.0": b'{"jsonrpc": "1.0", "id": 0, "result": 1}',
    "a-list": b"[]",
    "nan": b'{"jsonrpc": "2.0", "id": 0, "result": NaN}',
    "huge-number": b'{"jsonrpc": "2.0", "id": 0, "result": ' + b"9" * 5000 + b"}",
    "not-utf8": b'{"jsonrpc": "2.0", "id": 0, "result": "\xff"}',
    "truncated": b'{"jsonrpc": "2.0", "id": 0, "res',
}


def malformed_cases():
    for name, body in MALFORMED_XML.items():
        yield pytest.param("xmlrpc", "text/xml", body, id="xml-" + name)
    for name, body in MALFORMED_JSON.items():
        yield pytest.param("jsonrpc", "application/json", body, id="json-" + name)


@pytest.mark.parametrize("protocol, kind, body", list(malformed_cases()))
def test_a_malformed_answer_is_a_transport_error_that_may_have_run(protocol, kind, body):
    with Hostile(answer(body, kind=kind)) as server:
        with connect(server.url, protocol=protocol, timeout=10, idempotent=["echo.*"]) as svc:
            with pytest.raises(TransportError) as caught:
                svc.echo.echo(1)
    # The call may have run; another try would get the same answer.
    assert caught.value.sent is True and caught.value.transient is False, caught.value
    assert len(str(caught.value)) < 1000, str(caught.value)[:2000]
    assert len(server.requests) == 1          # idempotent, but another try would get the same answer


@pytest.mark.parametrize("protocol, body", [
    ("xmlrpc", params_xml("<array><data><value><struct><member><name>faultCode</name><value><string>x</string>"
                          "</value></member><member><name>faultString</name><value><string>m</string></value>"
                          "</member></struct></value></data></array>")),
    ("xmlrpc", params_xml("<array><data><value><int>1</int></value></data></array>")),
    ("jsonrpc", b'[{"jsonrpc": "2.0", "id": [0], "result": 1}, {"jsonrpc": "2.0", "id": 1, "result": 2}]'),
    ("jsonrpc", b'[{"jsonrpc": "2.0", "id": 0, "error": {"code": "x", "message": "m"}}]'),
    ("jsonrpc", b'{"jsonrpc": "2.0", "id": null, "result": 1}'),
    ("jsonrpc", b"[1, 2]"),
], ids=["multicall-string-code", "multicall-short", "batch-unhashable-id", "batch-string-code", "batch-as-one",
        "batch-of-numbers"])
def test_a_malformed_batch_answer_is_a_transport_error(protocol, body):
    kind = "text/xml" if protocol == "xmlrpc" else "application/json"
    with Hostile(answer(body, kind=kind)) as server:
        with connect(server.url, protocol=protocol, timeout=10) as svc:
            with pytest.raises(TransportError) as caught:
                svc.batch([("echo.echo", [1]), ("echo.echo", [2])])
    assert caught.value.sent is True


def test_a_well_formed_fault_is_a_fault():
    with Hostile(answer(fault_xml("<int>4</int>", "<string>too many parameters</string>"))) as server:
        with connect(server.url, timeout=10) as svc:
            with pytest.raises(Fault) as caught:
                svc.echo.echo(1)
    assert (caught.value.code, caught.value.message) == (4, "too many parameters")


# -- HTTP that is not an answer --------------------------------------------------------------------------

RPC_ANSWER = xmlrpc.client.dumps((1,), methodresponse=True).encode()


@pytest.mark.parametrize("behave, sent, transient, status, says", [
    (answer(RPC_ANSWER, "302 Found", extra="Location: http://elsewhere/\r\n"), True, False, 302,
     "HTTP 302 Found (a redirect to http://elsewhere/: not followed)"),
    (answer(RPC_ANSWER, "301 Moved Permanently"), True, False, 301, "not followed"),
    (answer(b"busy", "503 Service Unavailable", "text/html"), False, True, 503, "HTTP 503"),  # it ran nowhere
    (answer(b"<h1>x</h1>", "502 Bad Gateway", "text/html"), True, True, 502, "HTTP 502"),   # it may have run
    (answer(b"<h1>x</h1>", "504 Gateway Timeout", "text/html"), True, True, 504, "HTTP 504"),
    (answer(b"no", "401 Unauthorized", "text/plain"), True, False, 401, "HTTP 401 Unauthorized: no"),
    (answer(b"<h1>x</h1>", "500 Internal Server Error", "text/html"), True, False, 500, "HTTP 500"),
    (answer(RPC_ANSWER, "101 Switching Protocols"), True, False, 101, "HTTP 101"),
    (answer(RPC_ANSWER, kind="text/plain"), True, False, 200, "HTTP 200 OK"),
], ids=["302", "301", "503", "502", "504", "401", "500-html", "101", "200-plain"])
def test_an_http_answer_that_is_not_an_rpc_answer(behave, sent, transient, status, says):
    with Hostile(behave) as server:
        error, _ = timed_call(server.url, 0.5)
    assert (error.sent, error.transient, error.status) == (sent, transient, status), error
    assert says in str(error), error


@pytest.mark.parametrize("raw, transient", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", False),                                              # not HTTP at all
    (b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n", False),               # too many headers
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", False),              # a header line too long
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 50\r\n\r\n<short", True),   # cut short
    # (http.client reads a chunk size that is not a number as a body cut short)
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", True),
    (b"", True),                                                                       # closed at once
], ids=["not-http", "too-many-headers", "long-header", "cut-short", "bad-chunk", "closed"])
def test_broken_http_is_a_transport_error(raw, transient):
    with Hostile(lambda conn: conn.sendall(raw)) as server:
        error, _ = timed_call(server.url, 0.5)
    assert error.sent is True and error.transient is transient, error


def test_a_kept_alive_connection_is_reused_and_a_fresh_one_follows_a_drop():
    """Two answers on one connection, then the server drops it mid-answer: an idempotent call is
    tried again on a fresh connection (its request arrives on a new one) and answered."""
    connections = []
    count = [0]

    def behave(conn):
        connections.append(conn)
        count[0] += 1
        if count[0] == 2:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 500\r\n\r\n<met")
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(RPC_ANSWER), RPC_ANSWER))
        conn.settimeout(5)
        data = conn.recv(65536)           # the next request on this connection, if any
        if data:
            connections.append(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(RPC_ANSWER), RPC_ANSWER))
    with Hostile(behave) as server:
        with connect(server.url, timeout=20, idempotent=["echo.*"]) as svc:
            assert svc.echo.echo(1) == 1            # connection 1
            assert svc.echo.echo(1) == 1            # connection 1 again, kept alive
            assert svc.echo.echo(1) == 1            # connection 2 drops mid-answer; connection 3 answers
    assert len({id(c) for c in connections}) == 3 and count[0] == 3, connections


def test_the_front_end_is_told_which_calls_it_may_retry():
    with Hostile(answer(RPC_ANSWER)) as server:
        with connect(server.url, timeout=10, idempotent=["echo.*"]) as svc:
            svc.echo.echo(1)
            svc.counter.bump("x")
    assert [b"X-Clarens-Idempotent: 1" in head for head in server.requests] == [True, False]


# -- SSH: the same bounds over a session's pipes ------------------------------------------------------------

GREET = ('import sys, time\nout = sys.stdout.buffer\n'
         'out.write(b"Content-Length: 0\\r\\nClarens: test\\r\\n\\r\\n"); out.flush()\n')
SSH_CASES = {
    "claims-3GB": GREET + ('sys.stdin.buffer.readline()\n'
                           'out.write(b"Content-Length: 3000000000\\r\\n\\r\\n" + b"A" * 65536); out.flush()\n'
                           'time.sleep(60)\n'),
    "drips": GREET + ('sys.stdin.buffer.readline()\n'
                      'out.write(b"Content-Length: 100\\r\\n\\r\\n"); out.flush()\n'
                      'for _ in range(100):\n    time.sleep(1); out.write(b"x"); out.flush()\n'),
    "no-greeting": 'import time\ntime.sleep(60)\n',
    "not-clarens": 'import sys\nsys.stdout.buffer.write(b"Content-Length: 0\\r\\n\\r\\n"); sys.stdout.flush()\n'
                   'import time\ntime.sleep(60)\n',
    "no-clarens-module": 'import sys\nsys.stderr.write("No module named \'clarens\'\\n"); sys.exit(1)\n',
}


@pytest.mark.parametrize("case, says, sent, transient", [
    ("claims-3GB", "a message of 3000000000 bytes, over the limit of 67108864", True, False),
    ("drips", "timed out", True, True),
    ("no-greeting", "timed out", False, True),
    ("not-clarens", "the remote command is not clarens.stdio", False, False),
    ("no-clarens-module", "env PYTHONPATH=/path/to/checkout", False, False),
])
def test_a_misbehaving_ssh_session(case, says, sent, transient):
    start = time.monotonic()
    with connect("ssh://nobody@127.0.0.1/", protocol="jsonrpc", timeout=2,
                 ssh=[sys.executable, "-c", SSH_CASES[case]]) as svc:
        with pytest.raises(TransportError) as caught:
            svc.echo.echo(1)
    assert says in str(caught.value) and (caught.value.sent, caught.value.transient) == (sent, transient), caught.value
    assert time.monotonic() - start < 2 + MARGIN
