# SPDX-License-Identifier: Apache-2.0
"""A remote (or local) Clarens host as a Python object: calls, batches, uploads, failover."""

from __future__ import annotations

import fnmatch
import os
import time
import urllib.parse
from typing import Any, Callable, Iterable, Sequence

from clarens import resumable
from clarens.client import pool as pool_mod
from clarens.client import sessions, transports, wire
from clarens.client.errors import AllServersDown, TransportError
from clarens.faults import Fault

# Set on a request the client may send twice: the front end (conf/haproxy/) may then retry it on
# another host after a failure that may have reached the first; it retries no other request so.
IDEMPOTENT_HEADER = "X-Clarens-Idempotent"
# Read-only by definition in every Clarens host: safe to run twice.
ALWAYS_IDEMPOTENT = ("system.listMethods", "system.methodHelp", "system.methodSignature", "system.listModules",
                     "system.serverInfo", "system.whoami")


class _Method:
    """``svc.echo.echo``: a method name being built, called like a function."""

    def __init__(self, service: "Service", name: str):
        self._service, self._name = service, name

    def __getattr__(self, name: str) -> "_Method":
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self._service, "%s.%s" % (self._name, name))

    def __call__(self, *params: Any) -> Any:
        return self._service.call(self._name, *params)

    def __repr__(self) -> str:
        return "<method %s of %s>" % (self._name, self._service)


class Service:
    """Calls to one host, or to a pool of hosts that serve the same thing.

    ``urls``: ``http(s)://HOST/clarens/``, ``local:[CONFIG]`` or ``ssh://[USER@]HOST[:PORT][/CONFIG]``;
    with several, calls go round-robin and fail over (:mod:`clarens.client.pool`).
    ``protocol``: ``xmlrpc`` or ``jsonrpc``.  ``idempotent``: method patterns
    (``burner.status``, ``echo.*``) that may run twice, so may be tried again, here or on
    another server, after a failure that may have reached the first.  ``timeout``: seconds
    a call may take in all, its retries included; ``max_answer``: the largest answer
    accepted, in bytes.  ``user`` and ``password`` (a string, or a function asked for it
    when it is first needed): over http(s), calls go in a session opened with them on the
    first call and opened again once if the host ends it (:mod:`clarens.client.sessions`);
    ``token_file``: keep the session tokens there, for the next process.  ``transport``: the
    other settings of :func:`clarens.client.transports.for_url` (``ca``, ``cert``, ``key``,
    ``remote``, ``ssh``).  ``clock`` and ``sleep`` are the time the pool and the retries go by
    (tests pass their own).

    Safe to share between threads: each call in flight has its own connection (one
    SSH session serves calls in turn).
    """

    def __init__(self, urls: str | Sequence[str], protocol: str = "xmlrpc", idempotent: Iterable[str] = (),
                 timeout: float = transports.DEFAULT_TIMEOUT, max_answer: int = transports.DEFAULT_MAX_ANSWER,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 user: str | None = None, password: str | Callable[[], str] = "", token_file: str | None = None,
                 **transport: Any):
        urls = [urls] if isinstance(urls, str) else list(urls)
        if protocol not in wire.WIRES:
            raise ValueError("protocol must be xmlrpc or jsonrpc, not %r" % protocol)
        self.wire = wire.WIRES[protocol]
        self.idempotent = tuple(idempotent)
        self.timeout = timeout
        self.clock, self.sleep = clock, sleep
        self.pool = pool_mod.Pool(urls, clock)
        tokens = sessions.TokenFile(token_file) if token_file else None
        self.transports: dict[str, Any] = {}
        for url in urls:
            found = transports.for_url(url, timeout=timeout, max_answer=max_answer, **transport)
            self.transports[url] = sessions.SessionTransport(found, self.wire, user, password, tokens) \
                if isinstance(found, transports.Http) and user is not None else found

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def __repr__(self) -> str:
        return "<clarens service %s>" % " ".join(self.transports)

    def is_idempotent(self, method: str) -> bool:
        """Whether ``method`` may run twice: always-safe introspection, or a configured pattern."""
        return method in ALWAYS_IDEMPOTENT or any(fnmatch.fnmatchcase(method, p) for p in self.idempotent)

    def call(self, method: str, *params: Any, idempotent: bool | None = None, timeout: float | None = None) -> Any:
        """Call ``method`` with positional ``params``; its result.  Raises :class:`clarens.Fault` for a
        fault and :class:`TransportError` when no server answered."""
        safe = self.is_idempotent(method) if idempotent is None else idempotent
        return self._exchange(self.wire.call(method, params), safe, timeout, self.wire.result)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], idempotent: bool | None = None,
              timeout: float | None = None) -> list[Any]:
        """Several calls in one request (a JSON-RPC batch, an XML-RPC ``system.multicall``): each
        call's result, or the :class:`clarens.Fault` it ended with, in order."""
        calls = [(m, list(p)) for m, p in calls]
        safe = all(self.is_idempotent(m) for m, _ in calls) if idempotent is None else idempotent
        return self._exchange(self.wire.batch(calls), safe, timeout, lambda body: self.wire.results(body, len(calls)))

    def multicall(self, calls: Sequence[tuple[str, Sequence[Any]]], idempotent: bool | None = None,
                  timeout: float | None = None) -> list[Any]:
        """``system.multicall`` in either protocol: each call's result or Fault, in order."""
        calls = [(m, list(p)) for m, p in calls]
        safe = all(self.is_idempotent(m) for m, _ in calls) if idempotent is None else idempotent
        body = self.wire.call("system.multicall", [[{"methodName": m, "params": p} for m, p in calls]])
        return self._exchange(body, safe, timeout,
                              lambda answer: wire._from_multicall(self.wire.result(answer), len(calls)))

    def _exchange(self, body: bytes, idempotent: bool, timeout: float | None, decode: Callable[[bytes], Any]) -> Any:
        """Send ``body`` to the pool's servers until one answers, within the retry rule and the call's
        timeout: round after round over the servers, with a short pause that grows between rounds,
        while a failure may pass (a host restarting, a front end between hosts), until the deadline."""
        deadline = self.clock() + (self.timeout if timeout is None else timeout)
        last: dict[str, TransportError] = {}      # each server's latest failure, the latest last
        pauses = pool_mod.retry_pauses()
        while True:
            for server in self.pool.order():
                failed = last.get(server.url)
                if failed is not None and not failed.transient:
                    continue                       # trying it again cannot help
                left = deadline - self.clock()
                if left <= 0 and last:
                    break
                try:
                    result = self._attempt(server, body, left, decode, idempotent)
                except TransportError as e:
                    self.pool.failed(server, e)
                    last.pop(server.url, None)
                    last[server.url] = e
                    if not pool_mod.may_retry(e, idempotent):
                        raise
                    continue
                except Fault:               # an answer all the same: the server is up
                    self.pool.succeeded(server)
                    raise
                self.pool.succeeded(server)
                return result
            pause = next(pauses)
            if not any(e.transient for e in last.values()) or deadline - self.clock() <= pause:
                break
            self.sleep(pause)
        failures = list(last.values())
        if len(failures) == 1:
            raise failures[0]
        raise AllServersDown(failures)

    def _attempt(self, server: pool_mod.Server, body: bytes, timeout: float, decode: Callable[[bytes], Any],
                 idempotent: bool) -> Any:
        """One try of a call on ``server``: its result, or the Fault it answered."""
        answer = self.transports[server.url].exchange(body, self.wire.CONTENT_TYPE, timeout,
                                                      {IDEMPOTENT_HEADER: "1"} if idempotent else None)
        try:
            return decode(answer.body)
        except Fault:
            raise
        except wire.ProtocolError as e:
            raise TransportError(server.url, e, transient=False) from None
        except Exception as e:   # whatever else a malformed answer makes a decoder raise: no answer either
            raise TransportError(server.url, "a malformed answer (%s: %s)" % (type(e).__name__, str(e)[:200]),
                                 transient=False) from None

    def upload(self, path: str, name: str | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict:
        """Upload the file at ``path`` as image ``name`` (its base name by default) to
        ``/clarens/images/``, resuming after dropped connections and where an earlier upload
        stopped; ``progress(done, size)`` is called as it goes.  The server's record of the image.

        Over HTTP(S) only, to the first healthy server of the pool (an image lives on one host).
        Raises :class:`clarens.resumable.UploadRefused` when the server refuses it (with the HTTP status
        and the server's message), and :class:`clarens.resumable.UploadFailed`, a :class:`TransportError`,
        when the connection kept failing.
        """
        server = next((s for s in self.pool.order()
                       if isinstance(self.transports[s.url], (transports.Http, sessions.SessionTransport))), None)
        if server is None:
            raise ValueError("uploads need an http(s) URL; this service has %s" % " ".join(self.transports))
        http = self.transports[server.url]
        base = server.url if server.url.endswith("/") else server.url + "/"
        url = base + "images/" + urllib.parse.quote(name or os.path.basename(path), safe="")
        if isinstance(http, sessions.SessionTransport):     # the session's token (one opened if need be)
            headers = {"Authorization": http.authorization(time.monotonic() + self.timeout)}
            http = http.inner
        else:
            headers = {k: v for k, v in http.headers.items() if k == "Authorization"}
        target = resumable.Target(url, headers, http.context, timeout=max(self.timeout, 60.0))
        return resumable.upload(target, path, progress)["image"]

    def logout(self) -> bool:
        """End the sessions this service signed in with (``system.logout``); whether there was any."""
        return any([t.logout(self.timeout) for t in self.transports.values()
                    if isinstance(t, sessions.SessionTransport)])

    def close(self) -> None:
        """Close every connection and SSH session (a password session stays open until it ends: :meth:`logout`)."""
        for transport in self.transports.values():
            transport.close()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(urls: str | Sequence[str], protocol: str = "xmlrpc", **settings: Any) -> Service:
    """A :class:`Service` for ``urls`` (one URL, or several for a failover pool)."""
    return Service(urls, protocol, **settings)
