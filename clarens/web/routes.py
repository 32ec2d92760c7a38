"""Web routes: plain-HTTP endpoints that service modules add under the host's URL.

A module exports ``web_routes = {"images": handle}`` to serve
``/clarens/images/...``; ``handle(web)`` receives a :class:`WebRequest` and
returns a :class:`WebResponse`.  The caller is identified exactly as for RPC,
and a route authorises itself against the same ACLs with
``web.authorise("module.action")`` before doing anything.  Faults become JSON
errors with a fitting HTTP status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from clarens import faults
from clarens.context import CallContext
from clarens.faults import Fault

_STATUS = {faults.ACCESS_DENIED: 403, faults.METHOD_NOT_FOUND: 404, faults.SERVICE_UNAVAILABLE: 503,
           faults.INTERNAL_ERROR: 500, faults.APPLICATION_ERROR: 500}   # anything else: 400


@dataclass
class WebResponse:
    """What a route answers: status, content type, body and extra headers."""
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> "WebResponse":
        return cls(status, json.dumps(value, separators=(",", ":"), default=str).encode("utf-8"))

    @classmethod
    def fault(cls, fault: Fault) -> "WebResponse":
        """A JSON error for a fault: {"error": {"code", "message"}}."""
        return cls.json({"error": {"code": fault.code, "message": fault.message}}, _STATUS.get(fault.code, 400))


class WebRequest:
    """One request to a route, adapted from mod_python."""

    def __init__(self, req: Any, ctx: CallContext, path: str):
        self._req = req
        self.ctx = ctx
        self.method: str = req.method
        self.path = path                     # what follows the route's name, e.g. "disc.iso"
        self.headers: Mapping[str, str] = req.headers_in

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body (b"" at its end)."""
        return self._req.read(size)

    def authorise(self, method: str) -> None:
        """Fault(ACCESS_DENIED) unless the policy lets the caller call ``method``."""
        try:
            self.ctx.host.dispatcher.authorise(self.ctx, method)
        except Fault as fault:
            self.ctx.host.log.warning("%s %s %s (as %s): fault %d: %s", self.ctx.describe(), self.method,
                                      self._req.uri, method, fault.code, fault.message)
            raise


Route = Callable[[WebRequest], WebResponse]


def collect(modules: Mapping[str, Any], log: Any) -> dict[str, Route]:
    """The routes exported by loaded modules (first module wins a name; clashes are logged)."""
    routes: dict[str, Route] = {}
    for record in modules.values():
        if record.status != "loaded":
            continue
        for name, route in (getattr(record.module, "web_routes", None) or {}).items():
            if name in routes or not callable(route) or not name.isidentifier():
                log.error("module %s: web route %r ignored (taken, invalid, or not callable)", record.name, name)
                continue
            routes[name] = route
    return routes
