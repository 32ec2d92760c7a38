# SPDX-License-Identifier: Apache-2.0
"""HTTP/1.1 with JSON bodies over the Unix socket (the standard library's http.server).

Every connection's peer credentials are read once (SO_PEERCRED); a uid not in
``allowed_uids`` gets ``403 forbidden`` for whatever it asks and the connection
is closed.  Responses always carry Content-Length, so connections are kept
alive between requests; an idle connection is closed after ``IDLE_TIMEOUT``.
The routes are listed in :data:`ROUTES` and documented in the package docstring.
"""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import clarens
from clarens.burnerd import DEADLINE_HEADER
from clarens.burnerd.errors import Refused
from clarens.burnerd.peercred import Peer, peer_credentials
from clarens.burnerd.service import Burner

MAX_BODY = 64 * 1024
DRAIN_BYTES = 1 << 20    # of a refused body, read and dropped after the answer at most ...
DRAIN_SECONDS = 1.0      # ... and for this long, so that the caller can read the answer (see finish)
IDLE_TIMEOUT = 60


def _status(b: Burner, h: "Handler", m: re.Match) -> tuple[int, Any]:
    return 200, b.status()


def _drives(b: Burner, h: "Handler", m: re.Match) -> tuple[int, Any]:
    return 200, {"drives": b.drives()}


def _drive(b: Burner, h: "Handler", m: re.Match) -> tuple[int, Any]:
    return 200, {"drive": b.drive(m["name"])}


def _eject(b: Burner, h: "Handler", m: re.Match) -> tuple[int, Any]:
    result = b.eject(m["name"], h.peer)
    return (200 if result["ejected"] else 202), result


def _jobs(b: Burner, h: "Handler", m: re.Match) -> tuple[int, Any]:
    query = h.query()
    return 200, {"jobs": b.jobs(identity=query.get("identity"), state=query.get("state"), drive=query.get("drive"))}


def _submit(b: Burner, h: "Handler", m: re.Match) -> tuple[int, Any]:
    return 201, {"job": b.submit(h.json_body(), h.peer)}


def _job(b: Burner, h: "Handler", m: re.Match) -> tuple[int, Any]:
    return 200, {"job": b.job(int(m["id"]))}


def _cancel(b: Burner, h: "Handler", m: re.Match) -> tuple[int, Any]:
    job, stopped = b.cancel(int(m["id"]), h.peer)
    return (200 if stopped else 202), {"job": job}


Route = Callable[[Burner, "Handler", re.Match], tuple[int, Any]]
_NAME = r"(?P<name>[^/]+)"
_ID = r"(?P<id>[0-9]{1,12})"
ROUTES: list[tuple[re.Pattern, dict[str, Route]]] = [
    (re.compile(r"/v1/status\Z"), {"GET": _status}),
    (re.compile(r"/v1/drives\Z"), {"GET": _drives}),
    (re.compile(r"/v1/drives/%s\Z" % _NAME), {"GET": _drive}),
    (re.compile(r"/v1/drives/%s/eject\Z" % _NAME), {"POST": _eject}),
    (re.compile(r"/v1/jobs\Z"), {"GET": _jobs, "POST": _submit}),
    (re.compile(r"/v1/jobs/%s\Z" % _ID), {"GET": _job}),
    (re.compile(r"/v1/jobs/%s/cancel\Z" % _ID), {"POST": _cancel}),
]


# The codes of the errors http.server finds itself, by the status it gives them.
_HTTP_ERRORS = {501: "not_implemented", 414: "uri_too_long", 431: "headers_too_large", 505: "bad_http_version"}


class Handler(BaseHTTPRequestHandler):
    """One connection: possibly many requests (keep-alive)."""

    protocol_version = "HTTP/1.1"
    # Until a request line is understood, http.server takes it for HTTP/0.9 and answers with a bare
    # body, no status line; nobody speaks 0.9 to the helper, so every answer has one.
    default_request_version = "HTTP/1.1"
    server_version = "clarens-burnerd/" + clarens.__version__
    timeout = IDLE_TIMEOUT
    server: "BurnerHTTPServer"
    peer: Peer

    def setup(self) -> None:
        super().setup()
        self.peer = peer_credentials(self.connection)
        self.allowed = self.peer.uid in self.server.allowed_uids
        self.unread = 0          # bytes of a refused body left unread

    def finish(self) -> None:
        """After the answer, a body left unread is read and dropped (up to DRAIN_BYTES, DRAIN_SECONDS):
        closed with unread data, a Unix socket resets its peer, whose pending send then fails (EPIPE)
        and whose read of the answer fails (ECONNRESET), so the caller never learnt why (413)."""
        super().finish()
        if self.unread:
            _drain(self.connection, min(self.unread, DRAIN_BYTES), DRAIN_SECONDS)

    # http.server wants an (host, port) client address; a Unix socket peer has none.
    def address_string(self) -> str:
        return self.peer.describe()

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.debug("%s: %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors http.server detects itself (bad request line, headers too long...): JSON too."""
        self.close_connection = True
        self._send(code, Refused(_HTTP_ERRORS.get(code, "bad_request"), message or "malformed request", code).as_json())

    # -- helpers for the routes -------------------------------------------------------

    def query(self) -> dict[str, str]:
        """The query string's parameters (the last value of each)."""
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def json_body(self) -> Any:
        """The request body decoded as JSON (an empty body is ``{}``)."""
        body = self._body
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError) as e:
            raise Refused("bad_request", "the body is not valid JSON: %s" % e) from None
        except RecursionError:
            raise Refused("bad_request", "the body is nested too deeply") from None

    # -- the request cycle ------------------------------------------------------------

    def _handle(self, method: str) -> None:
        try:
            self._body = self._read_body()
            if not self.allowed:
                self.close_connection = True
                raise Refused("forbidden", "uid %d may not use the burner helper" % self.peer.uid)
            if method not in ("GET", "HEAD") and self._caller_gave_up():
                self.close_connection = True
                self.server.log.info("%s: %s %s not carried out: the caller gave up waiting for it",
                                     self.peer.describe(), method, urlsplit(self.path).path[:200])
                return
            status, result = self._route(method)
        except Refused as e:
            self.server.log.warning("%s: %s %s refused: %s", self.peer.describe(), method,
                                    urlsplit(self.path).path[:200], e)
            status, result = e.status, e.as_json()
        except Exception:
            self.server.log.exception("%s: %s %s failed", self.peer.describe(), method, self.path[:200])
            self.close_connection = True
            status, result = 500, Refused("internal_error", "the helper failed; see its log").as_json()
        self._send(status, result, head=method == "HEAD")

    def _caller_gave_up(self) -> bool:
        """Whether the caller no longer waits for this change: its deadline (DEADLINE_HEADER) has
        passed, or it has closed the connection.  A helper that was stopped, or busy restarting, reads
        requests from its backlog late; carrying them out would turn the caller's "unavailable" into a lie."""
        try:
            deadline = float(self.headers.get(DEADLINE_HEADER, "inf"))
        except ValueError:
            raise Refused("bad_request", "%s is not a time" % DEADLINE_HEADER) from None
        if time.time() > deadline:
            return True
        poller = select.poll()
        poller.register(self.connection, select.POLLIN)
        if not poller.poll(0):
            return False     # open, nothing more sent: the caller waits
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""    # readable: an end of file, or a next request
        except OSError:
            return True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise Refused("bad_request", "send a Content-Length, not Transfer-Encoding")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise Refused("bad_request", "invalid Content-Length")
        if length > MAX_BODY:
            self.close_connection = True   # the body stays unread: dropped after the answer (finish)
            self.unread = length
            raise Refused("body_too_large", "the body exceeds %d bytes" % MAX_BODY)
        return self.rfile.read(length) if length else b""

    def _route(self, method: str) -> tuple[int, Any]:
        path = urlsplit(self.path).path
        for pattern, methods in ROUTES:
            m = pattern.match(path)
            if m:
                if method not in methods:
                    raise Refused("method_not_allowed", "%s takes %s" % (path, " or ".join(sorted(methods))))
                return methods[method](self.server.burner, self, m)
        raise Refused("not_found", "no endpoint %s" % path[:200])

    def _send(self, status: int, result: Any, head: bool = False) -> None:
        body = json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 201 and isinstance(result, dict) and "job" in result:
            self.send_header("Location", "/v1/jobs/%d" % result["job"]["id"])
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _drain(connection: socket.socket, limit: int, seconds: float) -> None:
    """Read and drop up to ``limit`` bytes from ``connection`` for at most ``seconds``, once this side
    has said all it will (its writing half shut)."""
    deadline = time.monotonic() + seconds
    try:
        connection.shutdown(socket.SHUT_WR)
        while limit > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            connection.settimeout(left)
            data = connection.recv(min(limit, 65536))
            if not data:
                return
            limit -= len(data)
    except OSError:            # the caller went away, or took longer than it was given
        pass


class BurnerHTTPServer(ThreadingHTTPServer):
    """The HTTP server on an already listening Unix socket."""

    address_family = socket.AF_UNIX
    daemon_threads = True

    def __init__(self, sock: socket.socket, burner: Burner, allowed_uids: frozenset[int], log: logging.Logger):
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.burner = burner
        self.allowed_uids = allowed_uids
        self.log = log

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            self.log.info("a caller went away before its answer was sent")
            return
        self.log.exception("error on a connection")
