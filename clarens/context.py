"""The call context: what service code may know about the call it is serving.

Inside a service method::

    from clarens import context
    ctx = context.current()
    ctx.identity.name      # "/C=UK/O=Home/CN=Alice", "alice" or "anonymous"
    ctx.client_address     # "192.0.2.7"
    ctx.method             # "burner.burn"
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from clarens.identity import ANONYMOUS, Identity

if TYPE_CHECKING:
    from clarens.host import Host

_current: contextvars.ContextVar["CallContext"] = contextvars.ContextVar("clarens_call_context")


class CallContext:
    """One request's context, shared by every call it carries (e.g. multicall sub-calls)."""

    __slots__ = ("host", "request", "identity", "protocol", "method", "_debug")

    def __init__(self, host: "Host", request: Any = None, identity: Identity = ANONYMOUS,
                 protocol: str = "xmlrpc", debug: bool | None = None):
        self.host = host
        self.request = request                # the mod_python request, or None outside Apache
        self.identity = identity
        self.protocol = protocol              # "xmlrpc", "jsonrpc", or "http" (web routes)
        self.method: str | None = None        # the method being called, set by the dispatcher
        self._debug = debug

    @property
    def client_address(self) -> str:
        """The client's IP address (read from the request only when someone asks)."""
        return self.request.useragent_ip if self.request is not None else "-"

    @property
    def debug(self) -> bool:
        """True when ``PythonDebug On`` applies to this request: faults then carry tracebacks."""
        if self._debug is None:
            self._debug = self.request is not None and self.request.get_config().get("PythonDebug") == "1"
        return self._debug

    def describe(self) -> str:
        """``identity@address`` for log lines."""
        return "%s@%s" % (self.identity.name, self.client_address)


def current() -> CallContext:
    """The context of the call being served (LookupError outside a call)."""
    return _current.get()


def activate(ctx: CallContext) -> contextvars.Token:
    """Make ``ctx`` current; pass the token to :func:`deactivate` when the request ends."""
    return _current.set(ctx)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)
