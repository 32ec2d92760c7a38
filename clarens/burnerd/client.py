# SPDX-License-Identifier: Apache-2.0
"""Client library for the burner helper (the web tier's ``burner`` module and the admin CLI).

Plain standard library: :mod:`http.client` over an AF_UNIX socket.  Two kinds of
failure are kept apart, because the web tier answers them differently:

* :class:`HelperUnavailable` - the helper is down or unreachable (socket
  missing, connection refused, permission denied, timeout, connection lost):
  a "service unavailable" for the user;
* :class:`RequestRefused` - the helper answered and refused (``code`` and
  ``message`` as documented in :mod:`clarens.burnerd`).

Any 2xx answer is a success: the helper answers within about 1.5 s and says 202
when a cancel or an eject is still under way (see :meth:`BurnerClient.cancel`
and :meth:`BurnerClient.eject`), so a short ``timeout`` (2 s) is enough.

Example::

    client = BurnerClient("/run/clarens-burner/burnerd.sock")
    job = client.submit("debian.iso", "dvd0", identity="/DC=org/CN=Alice", speed=4)
    while client.job(job["id"])["state"] in ("queued", "burning", "verifying"):
        time.sleep(1)

A client keeps its connection open between calls (HTTP keep-alive) and is
safe to use from one thread at a time; give each thread its own.
"""

from __future__ import annotations

import errno
import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import quote, urlencode

from clarens.burnerd import DEADLINE_HEADER
from clarens.keepalive import closed_by_peer

DEFAULT_SOCKET = "/run/clarens-burner/burnerd.sock"
REUSE_IDLE = 20.0        # reconnect after this long idle: the helper drops idle connections after 60 s
DEADLINE_SHARE = 0.75    # of the timeout: the helper's answer has the rest to arrive


class BurnerError(Exception):
    """Any failure talking to the helper."""


class HelperUnavailable(BurnerError):
    """The helper could not be reached; ``errno`` is set when the OS gave a reason, ``timed_out``
    when it was there but did not answer in time (hung, or far too busy).  ``reason`` is the
    message without the socket's path (for those who may not know the host's paths)."""

    def __init__(self, message: str, errno_: int | None = None, timed_out: bool = False, reason: str = ""):
        super().__init__(message)
        self.errno = errno_
        self.timed_out = timed_out
        self.reason = reason or message


class RequestRefused(BurnerError):
    """The helper refused the request: ``status`` (HTTP), ``code`` (machine-readable), ``message``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__("%s: %s" % (code, message))
        self.status = status
        self.code = code
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, connect_timeout: float, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.timeout)
        self.sock = sock


class BurnerClient:
    """Calls to the helper listening on ``socket_path``."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, connect_timeout: float = 2.0, timeout: float = 60.0):
        """``timeout``: seconds each call may wait for its answer (it may be changed between calls)."""
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._conn: _UnixConnection | None = None
        self._last_used = 0.0

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "BurnerClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the API ----------------------------------------------------------------------

    def status(self) -> dict:
        """Helper status: version, pid, uptime, drives_busy, queued, per-drive state, job counts."""
        return self._call("GET", "/v1/status")

    def drives(self) -> list[dict]:
        """The configured drives with their queues and media."""
        return self._call("GET", "/v1/drives")["drives"]

    def drive(self, name: str) -> dict:
        """One drive."""
        return self._call("GET", "/v1/drives/" + quote(name, safe=""))["drive"]

    def eject(self, name: str) -> dict:
        """Eject the medium of an idle drive: ``{"drive", "ejected": True}``, or ``{"drive", "ejected": False,
        "ejecting": True}`` (HTTP 202) if it is still under way; the drive stays busy until it is done."""
        return self._call("POST", "/v1/drives/%s/eject" % quote(name, safe=""), {})

    def submit(self, image: str, drive: str, identity: str, speed: int | None = None, verify: bool = True) -> dict:
        """Queue a burn of ``image`` (relative to the helper's images directory) on ``drive`` for ``identity``."""
        body = {"image": image, "drive": drive, "identity": identity, "speed": speed, "verify": verify}
        return self._call("POST", "/v1/jobs", body)["job"]

    def job(self, job_id: int) -> dict:
        """One job's record."""
        return self._call("GET", "/v1/jobs/%d" % job_id)["job"]

    def jobs(self, identity: str | None = None, state: str | None = None, drive: str | None = None) -> list[dict]:
        """Jobs in submission order, optionally only those of ``identity`` / in ``state`` / on ``drive``."""
        query = {k: v for k, v in (("identity", identity), ("state", state), ("drive", drive)) if v is not None}
        return self._call("GET", "/v1/jobs" + ("?" + urlencode(query) if query else ""))["jobs"]

    def cancel(self, job_id: int) -> dict:
        """Cancel a queued or running job; its record: ``cancelled`` once it has stopped, or still ``burning``
        or ``verifying`` (HTTP 202) if it is still stopping; it ends ``cancelled`` shortly after."""
        return self._call("POST", "/v1/jobs/%d/cancel" % job_id, {})["job"]

    # -- transport --------------------------------------------------------------------

    def _connection(self) -> tuple[_UnixConnection, bool]:
        if self._conn is not None and (time.monotonic() - self._last_used > REUSE_IDLE
                                   or self._conn.sock is None or closed_by_peer(self._conn.sock)):
            self.close()
        reused = self._conn is not None
        if self._conn is None:
            self._conn = _UnixConnection(self.socket_path, self.connect_timeout, self.timeout)
            try:
                self._conn.connect()
            except OSError as e:
                self.close()
                raise self._unavailable(e) from None
        return self._conn, reused

    def _unavailable(self, e: OSError) -> HelperUnavailable:
        reasons = {errno.ENOENT: "its socket does not exist", errno.ECONNREFUSED: "nothing listens on its socket",
                   errno.EACCES: "permission denied on its socket"}
        if isinstance(e, TimeoutError):
            reason = "it did not answer in time"
        else:
            reason = reasons.get(e.errno, e.strerror or str(e))
        return HelperUnavailable("burner helper at %s unavailable: %s" % (self.socket_path, reason), e.errno,
                                 isinstance(e, TimeoutError), "burner helper unavailable: %s" % reason)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if method != "GET":
            # The helper drops a change that reaches it after this client has given up on it,
            # so that "unavailable" means "not done" (a stopped helper reads its backlog late).
            headers[DEADLINE_HEADER] = "%.3f" % (time.time() + self.timeout * DEADLINE_SHARE)
        while True:
            conn, reused = self._connection()
            conn.sock.settimeout(self.timeout)       # the timeout may have changed since it connected
            sent = False
            try:
                conn.request(method, path, body=data, headers=headers)
                sent = True
                response = conn.getresponse()
                raw = response.read()
            except (http.client.HTTPException, OSError) as e:
                self.close()
                # A kept-alive connection the helper closed just now: a request that could not
                # even be sent was not delivered (retry it); one that was sent may have been
                # carried out (retry reads only).
                if reused and not isinstance(e, TimeoutError) and (method == "GET" or not sent):
                    continue
                if isinstance(e, OSError):
                    raise self._unavailable(e) from None
                raise HelperUnavailable("burner helper at %s: connection lost: %s" % (self.socket_path, e),
                                        reason="burner helper: connection lost: %s" % e) from None
            break
        self._last_used = time.monotonic()
        if response.will_close:
            self.close()
        try:
            result = json.loads(raw)
        except ValueError:
            raise BurnerError("burner helper sent a non-JSON response (HTTP %d)" % response.status) from None
        if response.status >= 400:
            error = result.get("error", {}) if isinstance(result, dict) else {}
            raise RequestRefused(response.status, str(error.get("code", "http_%d" % response.status)),
                                 str(error.get("message", raw[:200].decode("utf-8", "replace"))))
        return result
