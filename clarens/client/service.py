"""A remote (or local) Clarens host as a Python object: calls, batches, uploads, failover."""

from __future__ import annotations

import fnmatch
import os
import urllib.parse
from typing import Any, Callable, Iterable, Sequence

from clarens import resumable
from clarens.client import pool as pool_mod
from clarens.client import transports, wire
from clarens.client.errors import AllServersDown, TransportError
from clarens.faults import Fault

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
    (``burner.status``, ``echo.*``) that may run twice, so may be retried on another
    server after a failure that may have reached the first.  ``transport``: the
    settings of :func:`clarens.client.transports.for_url` (``ca``, ``cert``, ``key``,
    ``user``, ``password``, ``timeout``, ``remote``, ``ssh``).

    Safe to share between threads: each call in flight has its own connection (one
    SSH session serves calls in turn).
    """

    def __init__(self, urls: str | Sequence[str], protocol: str = "xmlrpc", idempotent: Iterable[str] = (),
                 timeout: float = 30.0, clock: Callable[[], float] | None = None, **transport: Any):
        urls = [urls] if isinstance(urls, str) else list(urls)
        if protocol not in wire.WIRES:
            raise ValueError("protocol must be xmlrpc or jsonrpc, not %r" % protocol)
        self.wire = wire.WIRES[protocol]
        self.idempotent = tuple(idempotent)
        self.timeout = timeout
        self.pool = pool_mod.Pool(urls, clock) if clock else pool_mod.Pool(urls)
        self.transports = {url: transports.for_url(url, timeout=timeout, **transport) for url in urls}

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
        """Send ``body`` to the pool's servers in turn until one answers, within the retry rule."""
        failures: list[TransportError] = []
        servers = self.pool.order()
        for attempt, server in enumerate(servers):
            transport = self.transports[server.url]
            try:
                answer = transport.exchange(body, self.wire.CONTENT_TYPE, timeout)
                try:
                    result = decode(answer)
                except wire.ProtocolError as e:
                    raise TransportError(server.url, e) from None
            except TransportError as e:
                self.pool.failed(server, e)
                failures.append(e)
                if not pool_mod.may_retry(e, idempotent):
                    raise
                # An idempotent call whose first connection dropped after sending (a kept-alive
                # connection the server closed at that moment, a host that crashed behind a front
                # end) gets one more try on a fresh connection, after every other server.
                if idempotent and e.sent and attempt == 0:
                    servers.append(server)
                continue
            except Fault:               # an answer all the same: the server is up
                self.pool.succeeded(server)
                raise
            self.pool.succeeded(server)
            return result
        if len({f.url for f in failures}) == 1:
            raise failures[-1]
        raise AllServersDown(failures)

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
        server = next((s for s in self.pool.order() if isinstance(self.transports[s.url], transports.Http)), None)
        if server is None:
            raise ValueError("uploads need an http(s) URL; this service has %s" % " ".join(self.transports))
        http = self.transports[server.url]
        assert isinstance(http, transports.Http)
        base = server.url if server.url.endswith("/") else server.url + "/"
        url = base + "images/" + urllib.parse.quote(name or os.path.basename(path), safe="")
        headers = {k: v for k, v in http.headers.items() if k == "Authorization"}
        target = resumable.Target(url, headers, http.context, timeout=max(self.timeout, 60.0))
        return resumable.upload(target, path, progress)["image"]

    def close(self) -> None:
        """Close every connection and session."""
        for transport in self.transports.values():
            transport.close()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(urls: str | Sequence[str], protocol: str = "xmlrpc", **settings: Any) -> Service:
    """A :class:`Service` for ``urls`` (one URL, or several for a failover pool)."""
    return Service(urls, protocol, **settings)
