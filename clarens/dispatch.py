# SPDX-License-Identifier: Apache-2.0
"""The dispatcher: decides what a call means and runs it.

Protocol-neutral: the XML-RPC and JSON-RPC adapters decode a request into a
method name and parameters, and encode whatever this returns or raises.  Every
call, including each sub-call of a multicall and each element of a JSON-RPC
batch, comes through :meth:`Dispatcher.call`, which

1. finds the method in the registry of exported methods (never by attribute
   lookup, so nothing unlisted in ``methods_list`` is reachable),
2. asks the authoriser whether the caller may call it,
3. checks the parameters against ``methods_sig``,
4. runs it, turning any exception other than :class:`Fault` into an
   application-error fault whose traceback goes to the log (and to the client
   only under ``PythonDebug On``).
"""

from __future__ import annotations

import logging
import re
import secrets
import traceback
from typing import Any, Callable

from clarens.context import CallContext
from clarens.faults import APPLICATION_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, Fault
from clarens.identity import Identity
from clarens.registry import Method, Methods

METHOD_NAME_RE = re.compile(r"[A-Za-z0-9_.]{1,200}\Z")
MULTICALL = "system.multicall"

Authoriser = Callable[[Identity, str], None]   # raises Fault(ACCESS_DENIED) to refuse


def allow_all(identity: Identity, method: str) -> None:
    """The authoriser used until an access-control policy is installed."""


def _short(name: Any) -> str:
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


class Dispatcher:
    """Runs calls against a fixed table of methods."""

    def __init__(self, methods: Methods, log: logging.Logger, authorise: Authoriser = allow_all):
        self.methods = methods
        self.log = log
        self.authorise = authorise

    def call(self, ctx: CallContext, name: str, params: list | dict) -> Any:
        """Run method ``name`` for the caller in ``ctx``.

        ``params`` is a list, or a dict of parameter names (JSON-RPC by-name calls).
        Each protocol has checked that ``name`` is a string.
        """
        try:
            method = self.methods.get(name)
            if method is None:
                raise self._unknown(name)
            self.authorise(ctx.identity, name)
            if isinstance(params, dict):
                params = self._positional(method, params)
            method.check(params, ctx.protocol == "jsonrpc")
            outer, ctx.method = ctx.method, name
            try:
                return method.func(*params)
            except Fault:
                raise
            except Exception as e:
                raise self._application_error(ctx, name, e) from None
            finally:
                ctx.method = outer
        except Fault as fault:
            self.note(ctx, _short(name), fault)
            raise

    def note(self, ctx: CallContext, name: str, fault: Fault) -> None:
        """Record a refused or failed call for the log: gathered per request when the handler
        collects them (one line per code, see clarens.faultlog), else a line at once."""
        if ctx.faults is not None:
            ctx.faults.append((name, fault))
        else:
            self.log.warning("%s %s: fault %d: %s", ctx.describe(), name, fault.code, fault.message.partition("\n")[0])

    @staticmethod
    def _positional(method: Method, params: dict) -> list:
        """Map by-name parameters onto the method's positional parameters."""
        names = method.param_names
        if names is None:
            raise Fault(INVALID_PARAMS, "%s does not accept parameters by name" % method.name)
        unknown = set(params) - set(names)
        if unknown:
            raise Fault(INVALID_PARAMS, "%s has no parameter(s) named %s" % (method.name, ", ".join(sorted(unknown))))
        count = max((names.index(k) + 1 for k in params), default=0)
        missing = [n for n in names[:count] if n not in params]
        if missing:
            raise Fault(INVALID_PARAMS, "%s: missing parameter(s) %s" % (method.name, ", ".join(missing)))
        return [params[n] for n in names[:count]]

    def multicall(self, ctx: CallContext, calls: list) -> list:
        """system.multicall: each sub-call runs independently; a fault is returned in its place."""
        results: list = []
        push = results.append
        for index, call in enumerate(calls):
            try:
                name, params = self._subcall(ctx, index, call)
                push([self.call(ctx, name, params)])
            except Fault as fault:
                push(fault.as_struct())
        return results

    def _subcall(self, ctx: CallContext, index: int, call: Any) -> tuple[str, list]:
        """(method, params) of a multicall element; a Fault, logged like every other, if it is malformed."""
        name = call.get("methodName") if isinstance(call, dict) else None
        if not isinstance(name, str):
            fault = Fault(INVALID_REQUEST, "multicall element %d is not a struct with a string methodName" % index)
        else:
            params = call.get("params", [])
            if not isinstance(params, list):
                fault = Fault(INVALID_PARAMS, "multicall element %d: params must be an array" % index)
            elif name == MULTICALL:
                fault = Fault(INVALID_REQUEST, "system.multicall may not be called recursively")
            else:
                return name, params
        self.note(ctx, MULTICALL, fault)
        raise fault

    def _unknown(self, name: str) -> Fault:
        if not METHOD_NAME_RE.match(name) or any(
                part.startswith("_") or not part for part in name.split(".")):
            return Fault(INVALID_REQUEST, "invalid method name %s: use module.method with letters, digits and _"
                         % _short(name))
        return Fault(METHOD_NOT_FOUND, "method %r not found" % name)

    def _application_error(self, ctx: CallContext, name: str, error: Exception) -> Fault:
        incident = secrets.token_hex(4)
        trace = traceback.format_exc().rstrip()
        self.log.error("%s %s raised %s (incident %s)\n%s", ctx.describe(), name, type(error).__name__, incident, trace)
        message = "%s failed: %s (incident %s, see the server log)" % (name, type(error).__name__, incident)
        if ctx.debug:
            message += "\ncaller: %s from %s\n%s" % (ctx.identity.name, ctx.client_address, trace)
        return Fault(APPLICATION_ERROR, message)
